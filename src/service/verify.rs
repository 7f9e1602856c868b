//! `feedgraph check`: the store's invariants, record by record, and the graph index
//! compared with one rebuilt from the store.

use super::*;

impl Service {
    /// Checks the store's invariants (every record decodes; its history has exactly the
    /// versions 1..=version; its edges point at stored adapters; its lease at a stored
    /// batch; every adapter's parent exists and lineage ends) and that the graph index
    /// equals one rebuilt from the store now. Returns the first problem found, or `None`.
    pub fn verify(&self) -> Result<Option<String>, ServiceError> {
        let mut problem: Option<String> = None;
        self.store.for_each_record(&mut |org, r| {
            if problem.is_none() {
                problem = self.verify_record(org, &r)?;
            }
            Ok(())
        })?;
        if problem.is_some() {
            return Ok(problem);
        }
        let mut adapters: Vec<Adapter> = Vec::new();
        self.store.for_each_adapter(&mut |a| {
            adapters.push(a);
            Ok(())
        })?;
        for a in &adapters {
            let mut cursor = a.derived_from.clone();
            let mut steps = 0;
            while let Some(p) = cursor {
                steps += 1;
                if steps > adapters.len() {
                    return Ok(Some(format!(
                        "the lineage of adapter '{}' has a cycle",
                        a.id
                    )));
                }
                match self.store.get_adapter(&a.org_id, &p)? {
                    Some(parent) => cursor = parent.derived_from,
                    None => {
                        return Ok(Some(format!(
                            "adapter '{}' derives from missing adapter '{p}'",
                            a.id
                        )));
                    }
                }
            }
        }
        let fresh = GraphIndex::build_for(self.store.as_ref(), &|org| self.placement.serves(org))?
            .canonical();
        let live = self.graph.canonical();
        if fresh == live {
            return Ok(None);
        }
        for (org, g) in &fresh {
            let Some(l) = live.get(org) else {
                return Ok(Some(format!(
                    "org '{org}' is in the store but not in the graph"
                )));
            };
            if let Some((k, v)) = g.nodes.iter().find(|(k, v)| l.nodes.get(*k) != Some(v)) {
                return Ok(Some(format!(
                    "org '{org}': node {k} is {v:?} in the store but {:?} in the graph",
                    l.nodes.get(k)
                )));
            }
            if let Some(e) = g.edges.symmetric_difference(&l.edges).next() {
                return Ok(Some(format!("org '{org}': edge {e:?} differs")));
            }
            if g.nodes.len() != l.nodes.len() {
                return Ok(Some(format!("org '{org}': the graph has extra nodes")));
            }
        }
        Ok(Some("the graph has orgs the store does not".into()))
    }

    /// The first broken invariant of one stored record, if any (see [`Service::verify`]).
    fn verify_record(
        &self,
        org: &str,
        r: &crate::store::FeedbackRecord,
    ) -> Result<Option<String>, StoreError> {
        let f = &r.feedback;
        if f.org_id != org {
            return Ok(Some(format!(
                "feedback '{}' is stored under org '{org}' but its record names org '{}'",
                f.id, f.org_id
            )));
        }
        let versions = self
            .store
            .feedback_history_versions(&f.org_id, &f.id, f.version)?;
        if versions != (1..=f.version).collect::<Vec<_>>() {
            return Ok(Some(format!(
                "feedback '{}' of '{}' is at version {} but its history has {versions:?}",
                f.id, f.org_id, f.version
            )));
        }
        for l in &r.links {
            if self.store.get_adapter(&f.org_id, &l.adapter_id)?.is_none() {
                return Ok(Some(format!(
                    "feedback '{}' links to missing adapter '{}'",
                    f.id, l.adapter_id
                )));
            }
        }
        if let Some(lease) = r.lease
            && self.store.get_batch(&f.org_id, lease.batch_id)?.is_none()
        {
            return Ok(Some(format!(
                "feedback '{}' is leased to missing batch {}",
                f.id, lease.batch_id
            )));
        }
        Ok(None)
    }
}
