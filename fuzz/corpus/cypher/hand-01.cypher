MATCH p = (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter)-[:DERIVED_FROM*0..3]->(r:Adapter {id: $root})
RETURN nodes(p), length(p), id(f), labels(a), type(relationships(p)[0]) ORDER BY id(f) SKIP 1 LIMIT $n
