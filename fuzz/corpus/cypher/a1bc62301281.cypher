MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter),
(f:Feedback)-[:FEEDBACK_FOR]->(a2:Adapter)
WHERE a1.id <> a2.id
RETURN a1.id, a2.id, COUNT(f) AS shared_feedback_count
GROUP BY a1.id, a2.id
HAVING shared_feedback_count > 10
ORDER BY shared_feedback_count DESC