MATCH (f:Feedback)-[r:FEEDBACK_FOR]->(a:Adapter)
RETURN a.id, SUM(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END) AS pos, AVG(f.score) AS s, collect(DISTINCT f.user_id)
GROUP BY a.id
HAVING pos >= 1
ORDER BY s DESC
