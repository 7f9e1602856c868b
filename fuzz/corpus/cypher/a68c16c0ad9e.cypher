// Feedback lineage: feedback on every adapter derived, directly or not, from a root adapter, with the path.
// params: $root
MATCH path = (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*]->(a2:Adapter)
WHERE a2.id = $root
RETURN path, f.id, a1.id
