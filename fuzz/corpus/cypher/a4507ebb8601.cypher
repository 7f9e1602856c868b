MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter),
(f:Feedback)-[:FEEDBACK_FOR]->(a2:Adapter)
WHERE a1.id <> a2.id
WITH a1.id AS a1_id, a2.id AS a2_id, COUNT(f) AS shared_feedback_count
WHERE shared_feedback_count > 5
RETURN a1_id AS `a1.id`, a2_id AS `a2.id`, shared_feedback_count
ORDER BY shared_feedback_count DESC