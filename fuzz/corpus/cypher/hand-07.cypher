MATCH (a:Adapter)-[:DERIVED_FROM*]->(b:Adapter), (f:Feedback)-[:FEEDBACK_FOR]->(b) WITH a, b, count(f) AS n WHERE n > 0 RETURN a.id, b.id, n ORDER BY a.id, b.id
