// Feedback statistics per adapter: total, positive and negative counts, positive ratio.
// params: none
MATCH (f:Feedback)-[r:FEEDBACK_FOR]->(a:Adapter)
RETURN a.id AS adapter_id,
COUNT(f) AS total_feedback,
SUM(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END) AS positive_count,
SUM(CASE WHEN f.type = 'negative' THEN 1 ELSE 0 END) AS negative_count,
AVG(CASE WHEN f.type = 'positive' THEN 1.0 ELSE 0.0 END) AS positive_ratio
GROUP BY a.id
