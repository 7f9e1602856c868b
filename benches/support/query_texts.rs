// The benchmark query texts, shared by `benches/queries.rs` and `examples/query_loop.rs`
// (included with `include!`, so both always measure the same texts).

/// A benchmark query (see BENCHMARKS.md).
#[allow(dead_code)]
const Q1: &str = "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter {id: $adapter}) WHERE f.validation_status = 'approved' AND f.used_for_training = false RETURN f.id LIMIT 100";
/// A benchmark query (see BENCHMARKS.md).
#[allow(dead_code)]
const Q2: &str = "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id AS adapter_id, count(f) AS total_feedback, sum(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END) AS positive_count, sum(CASE WHEN f.type = 'negative' THEN 1 ELSE 0 END) AS negative_count, avg(CASE WHEN f.type = 'positive' THEN 1.0 ELSE 0.0 END) AS positive_ratio";
/// A benchmark query (see BENCHMARKS.md).
#[allow(dead_code)]
const Q3: &str = "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*1..30]->(a2:Adapter) WHERE a2.id = 'base_model' RETURN f.id, a1.id";
/// A benchmark query (see BENCHMARKS.md).
#[allow(dead_code)]
const Q3_COUNT: &str = "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*1..30]->(a2:Adapter) WHERE a2.id = 'base_model' RETURN count(*)";
/// A benchmark query (see BENCHMARKS.md).
#[allow(dead_code)]
const Q4: &str = "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter), (f)-[:FEEDBACK_FOR]->(a2:Adapter) WHERE a1.id <> a2.id WITH a1.id AS x, a2.id AS y, count(f) AS shared WHERE shared > 10 RETURN x, y, shared ORDER BY shared DESC";
/// A benchmark query (see BENCHMARKS.md).
#[allow(dead_code)]
const SEED_BY_ADAPTER: &str = "MATCH (f:Feedback)-[r:FEEDBACK_FOR]->(a:Adapter {id: $adapter}) WHERE f.validation_status = 'approved' AND f.used_for_training = false RETURN f LIMIT 100";
/// A benchmark query (see BENCHMARKS.md).
#[allow(dead_code)]
const SEED_STATS: &str = "MATCH (f:Feedback)-[r:FEEDBACK_FOR]->(a:Adapter) RETURN a.id AS adapter_id, COUNT(f) AS total_feedback, SUM(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END) AS positive_count, SUM(CASE WHEN f.type = 'negative' THEN 1 ELSE 0 END) AS negative_count, AVG(CASE WHEN f.type = 'positive' THEN 1.0 ELSE 0.0 END) AS positive_ratio GROUP BY a.id";
/// A benchmark query (see BENCHMARKS.md).
#[allow(dead_code)]
const SEED_LINEAGE: &str = "MATCH path = (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*]->(a2:Adapter) WHERE a2.id = 'base_model' RETURN path, f.id, a1.id";
/// A benchmark query (see BENCHMARKS.md).
#[allow(dead_code)]
const SEED_SHARED: &str = "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter), (f:Feedback)-[:FEEDBACK_FOR]->(a2:Adapter) WHERE a1.id <> a2.id RETURN a1.id, a2.id, COUNT(f) AS shared_feedback_count GROUP BY a1.id, a2.id HAVING shared_feedback_count > 10 ORDER BY shared_feedback_count DESC";
