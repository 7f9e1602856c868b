//! Graph queries: runs openCypher on the caller's org graph with the configured limits,
//! loading long text fields from the store only for the items a query reads or returns.

use crate::cypher::{self, CypherError, NamedQuery, QueryLimits, QueryResult, TextSource};
use crate::store::Store;

use super::{Service, ServiceError};

/// Reads feedback texts from the store for the executor.
struct StoreText<'a> {
    store: &'a Store,
    org: &'a str,
}

impl TextSource for StoreText<'_> {
    fn feedback_text(&self, id: &str, field: &str) -> Option<String> {
        self.feedback_texts(id, &[field]).pop().flatten()
    }

    fn feedback_texts(&self, id: &str, fields: &[&str]) -> Vec<Option<String>> {
        // One read per item; a record that cannot be read yields nulls (the query is
        // read-only and the graph holds every other property). Only durable texts are
        // shown: a record newer than the graph's (an update not yet synced) waits here.
        let f = self
            .store
            .durable_read(|s| s.get_feedback(self.org, id))
            .ok()
            .flatten();
        fields
            .iter()
            .map(|field| {
                let f = f.as_ref()?;
                match *field {
                    "question" => Some(f.question.clone()),
                    "answer" => Some(f.answer.clone()),
                    "correction" => f.correction.clone(),
                    "comment" => f.comment.clone(),
                    _ => None,
                }
            })
            .collect()
    }
}

impl Service {
    /// The configured query limits.
    pub fn query_limits(&self) -> &QueryLimits {
        &self.query_limits
    }

    /// Runs a read-only query on `org`'s graph. An org without data answers every query
    /// as if its graph were empty.
    pub fn query(
        &self,
        org: &str,
        text: &str,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<QueryResult, ServiceError> {
        super::check_org(org)?;
        let source = StoreText {
            store: &self.store,
            org,
        };
        let result = match self.graph.org(org) {
            Some(g) => {
                let g = g.read();
                cypher::execute(&g, &source, text, params, &self.query_limits)
            }
            None => {
                let empty = crate::graph::OrgGraph::default();
                cypher::execute(&empty, &source, text, params, &self.query_limits)
            }
        };
        result.map_err(ServiceError::Query)
    }

    /// Runs one of the named queries of `queries/`.
    pub fn named_query(
        &self,
        org: &str,
        name: &str,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<QueryResult, ServiceError> {
        let q = cypher::named_queries()
            .into_iter()
            .find(|q| q.name == name)
            .ok_or_else(|| ServiceError::NotFound {
                kind: "named query",
                id: name.to_owned(),
            })?;
        if let Some(missing) = q.params.iter().find(|p| !params.contains_key(**p)) {
            return Err(ServiceError::Query(CypherError::MissingParameter {
                name: (*missing).to_owned(),
                position: None,
            }));
        }
        self.query(org, q.query, params)
    }

    /// The named queries shipped in `queries/`.
    pub fn named_queries(&self) -> Vec<NamedQuery> {
        cypher::named_queries()
    }
}
