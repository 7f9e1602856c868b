//! Adapter questions answered from the graph: an adapter with its feedback counters, its
//! ancestors up to the root (DERIVED_FROM), and its descendants.

use serde::Serialize;

use super::training::adapter_family;
use super::{Service, ServiceError, Stats, StatsQuery};
use crate::model::Adapter;

/// An adapter with its feedback counters.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AdapterSummary {
    /// The adapter.
    #[serde(flatten)]
    pub adapter: Adapter,
    /// Counters over the feedback linked to it.
    pub feedback: Stats,
    /// Direct children (adapters derived from it).
    pub children: Vec<String>,
}

/// One adapter in a lineage or descendant list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LineageEntry {
    /// Adapter id.
    pub id: String,
    /// Steps from the adapter asked about (1 = parent or child).
    pub depth: usize,
    /// Its version label.
    pub version: Option<String>,
}

impl Service {
    /// An adapter with the counters of the feedback linked to it and its children.
    pub fn adapter_summary(&self, org: &str, id: &str) -> Result<AdapterSummary, ServiceError> {
        let adapter = self.get_adapter(org, id)?;
        let feedback = self.stats(
            org,
            &StatsQuery {
                adapter: Some(id.to_owned()),
                ..Default::default()
            },
        )?;
        let mut children: Vec<String> = match self.graph.org(org) {
            None => Vec::new(),
            Some(g) => match g.adapter_row(id) {
                None => Vec::new(),
                Some(row) => g
                    .children(row)
                    .map(|c| g.strings().resolve(g.adapters()[c as usize].id).to_owned())
                    .collect(),
            },
        };
        children.sort();
        Ok(AdapterSummary {
            adapter,
            feedback,
            children,
        })
    }

    /// The ancestors of an adapter, parent first, ending at its root.
    pub fn lineage(&self, org: &str, id: &str) -> Result<Vec<LineageEntry>, ServiceError> {
        let not_found = || ServiceError::NotFound {
            kind: "adapter",
            id: id.to_owned(),
        };
        let g = self.graph.org(org).ok_or_else(not_found)?;
        let mut row = g.adapter_row(id).ok_or_else(not_found)?;
        let mut out = Vec::new();
        // DERIVED_FROM is acyclic (checked on every write); the bound is a safety net.
        while let Some(parent) = g.adapters()[row as usize].parent {
            if out.len() > g.adapters().len() {
                return Err(ServiceError::Conflict(format!(
                    "the lineage of '{id}' does not end; the graph is inconsistent"
                )));
            }
            let a = &g.adapters()[parent as usize];
            out.push(LineageEntry {
                id: g.strings().resolve(a.id).to_owned(),
                depth: out.len() + 1,
                version: g.text(a.version).map(str::to_owned),
            });
            row = parent;
        }
        Ok(out)
    }

    /// Every adapter derived from this one, directly or not, breadth first.
    pub fn descendants(&self, org: &str, id: &str) -> Result<Vec<LineageEntry>, ServiceError> {
        let not_found = || ServiceError::NotFound {
            kind: "adapter",
            id: id.to_owned(),
        };
        let g = self.graph.org(org).ok_or_else(not_found)?;
        let root = g.adapter_row(id).ok_or_else(not_found)?;
        let family = adapter_family(&g, root, true);
        let mut depth = std::collections::HashMap::from([(root, 0usize)]);
        let mut out = Vec::with_capacity(family.len().saturating_sub(1));
        for row in family.into_iter().skip(1) {
            let a = &g.adapters()[row as usize];
            let d = a
                .parent
                .and_then(|p| depth.get(&p).copied())
                .map_or(1, |d| d + 1);
            depth.insert(row, d);
            out.push(LineageEntry {
                id: g.strings().resolve(a.id).to_owned(),
                depth: d,
                version: g.text(a.version).map(str::to_owned),
            });
        }
        Ok(out)
    }
}
