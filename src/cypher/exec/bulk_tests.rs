//! The bulk output of node-id rows (`BulkIn`, `RowOut::bulk`) against the walk a row at a
//! time: the same rows in the same order, the same batches, work, memory and errors.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::{BULK_RUNS, NO_BULK};
use crate::cypher::{
    CypherError, NoText, PlanCache, QueryLimits, RowSink, Rows, StreamOptions, execute_cached,
    execute_streaming,
};
use crate::graph::OrgGraph;
use crate::model::{Adapter, Feedback, FeedbackLink, LinkSource, Metadata};

/// Adapters `root` <- `a`, `b`; `a` <- `c`; `b` <- `lone` (no feedback), and 6,000
/// feedback items: 4,500 on `c` (more than one bulk run), the rest spread over the others,
/// every tenth also linked to `b`.
fn graph() -> Arc<OrgGraph> {
    let mut g = OrgGraph::default();
    for (id, parent) in [
        ("root", None),
        ("a", Some("root")),
        ("b", Some("root")),
        ("c", Some("a")),
        ("lone", Some("b")),
    ] {
        g.upsert_adapter(&Adapter {
            id: id.into(),
            org_id: "t".into(),
            version: None,
            base_model: None,
            derived_from: parent.map(str::to_owned),
            metadata: Metadata::default(),
            created_at: 1,
            source: LinkSource::Manual,
            record_version: 1,
        });
    }
    let link = |g: &mut OrgGraph, f: &str, a: &str| {
        g.add_link(&FeedbackLink {
            feedback_id: f.into(),
            adapter_id: a.into(),
            created_at: 1,
            source: LinkSource::Auto,
            metadata: Metadata::default(),
        });
    };
    for i in 0..6000 {
        let id = format!("fb-{i:05}");
        g.upsert_feedback(&Feedback::sample(&id, "t"));
        let a = if i < 4500 {
            "c"
        } else {
            ["root", "a", "b", "c"][i % 4]
        };
        link(&mut g, &id, a);
        if i % 10 == 0 && a != "b" {
            link(&mut g, &id, "b");
        }
    }
    Arc::new(g)
}

/// Keeps every batch a streamed query hands over, as JSON rows.
struct Collect {
    opts: StreamOptions,
    batches: Vec<Vec<Vec<serde_json::Value>>>,
}

impl RowSink for Collect {
    fn begin(&mut self, _: &[String]) -> Result<(), CypherError> {
        Ok(())
    }

    fn batch(&mut self, rows: Rows) -> Result<(), CypherError> {
        self.batches.push(rows.to_json());
        Ok(())
    }

    fn options(&self) -> StreamOptions {
        self.opts
    }
}

/// What a run shows: the batches (one batch, the collected rows, without a sink) and its
/// stats (rows, work, memory) or its error; and how many bulk runs it made.
type Seen = (
    Vec<Vec<Vec<serde_json::Value>>>,
    Result<(usize, u64, u64), String>,
);

fn run(
    g: &Arc<OrgGraph>,
    q: &str,
    limits: &QueryLimits,
    stream: Option<StreamOptions>,
    bulk: bool,
) -> (Seen, u64) {
    NO_BULK.with(|c| c.set(!bulk));
    let runs = BULK_RUNS.with(std::cell::Cell::get);
    let none = serde_json::Map::new();
    let cancel = AtomicBool::new(false);
    let cache = PlanCache::new(0);
    let seen = match stream {
        Some(opts) => {
            let mut sink = Collect {
                opts,
                batches: Vec::new(),
            };
            let (r, _) = execute_streaming(
                g, &NoText, q, &none, limits, &cancel, &mut sink, &cache, "t",
            );
            (
                sink.batches,
                r.map(|s| (s.rows, s.work, s.memory_bytes))
                    .map_err(|e| e.to_string()),
            )
        }
        None => {
            let (r, _) = execute_cached(g, &NoText, q, &none, limits, &cancel, &cache, "t");
            match r {
                Ok(r) => (
                    vec![r.rows.to_json()],
                    Ok((r.stats.rows, r.stats.work, r.stats.memory_bytes)),
                ),
                Err(e) => (Vec::new(), Err(e.to_string())),
            }
        }
    };
    NO_BULK.with(|c| c.set(false));
    (seen, BULK_RUNS.with(std::cell::Cell::get) - runs)
}

const LINEAGE: &str = "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*1..30]->(a2:Adapter) WHERE a2.id = 'root' RETURN f.id, a1.id";

#[test]
fn bulk_rows_equal_the_walk_a_row_at_a_time() {
    let g = graph();
    let queries = [
        // (query, takes the bulk path)
        (LINEAGE, true),
        (
            "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*0..30]->(a2:Adapter) WHERE a2.id = 'root' RETURN a1.id AS x, f.id, a2.id, f.id AS again",
            true,
        ),
        (
            "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN f.id, a.id",
            true,
        ),
        ("MATCH (a:Adapter)<-[:FEEDBACK_FOR]-(f) RETURN f.id", true),
        (
            "MATCH (c:Adapter)-[:DERIVED_FROM]->(p:Adapter) RETURN c.id, p.id",
            false,
        ),
        // Not only ids: a row at a time.
        (
            "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN f.id, a.id, 1 AS one",
            false,
        ),
        (
            "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN f.id, a.id LIMIT 4600",
            false,
        ),
    ];
    let default = QueryLimits::default();
    let limited = |f: &dyn Fn(&mut QueryLimits)| {
        let mut l = QueryLimits {
            timeout: Duration::from_secs(600),
            ..QueryLimits::default()
        };
        f(&mut l);
        l
    };
    let limits = [
        default.clone(),
        limited(&|l| l.max_rows = 10),
        limited(&|l| l.max_rows = 4100),
        limited(&|l| l.max_rows = 5001),
        limited(&|l| l.max_rows = 6600),
        limited(&|l| l.max_memory = 200_000),
        limited(&|l| l.max_memory = 900_000),
        limited(&|l| l.max_work = 5000),
        limited(&|l| l.max_work = 6200),
    ];
    let streams = [
        None,
        Some(StreamOptions::default()),
        Some(StreamOptions {
            batch_rows: 1,
            batch_bytes: u64::MAX,
        }),
        Some(StreamOptions {
            batch_rows: 3,
            batch_bytes: u64::MAX,
        }),
        Some(StreamOptions {
            batch_rows: 5000,
            batch_bytes: 100_000,
        }),
        Some(StreamOptions {
            batch_rows: 1000,
            batch_bytes: 0,
        }),
        Some(StreamOptions {
            batch_rows: 100_000,
            batch_bytes: 1_000_000,
        }),
    ];
    let mut errors = 0;
    for (q, bulk) in queries {
        for l in &limits {
            for s in streams {
                let (want, none) = run(&g, q, l, s, false);
                assert_eq!(none, 0, "{q}");
                let (got, runs) = run(&g, q, l, s, true);
                assert_eq!(got, want, "{q}\n{l:?}\n{s:?}");
                if bulk && l.max_rows > 10 && l.max_work > 5000 && l.max_memory > 200_000 {
                    assert!(runs > 0, "{q}: no bulk run\n{l:?}\n{s:?}");
                }
                if !bulk {
                    assert_eq!(runs, 0, "{q}");
                }
                errors += usize::from(want.1.is_err());
            }
        }
    }
    // The limits did cut some of the runs.
    assert!(errors > 50, "{errors}");
    // The lineage's rows: every item on a descendant of root once per link.
    let (seen, _) = run(&g, LINEAGE, &default, None, true);
    let rows = &seen.0[0];
    assert_eq!(rows.len(), 6000 - 375 + 450 + 75);
    assert_eq!(seen.1.as_ref().map(|s| s.0), Ok(rows.len()));
}
