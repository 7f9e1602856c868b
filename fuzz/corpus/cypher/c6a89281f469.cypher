// Approved feedback of one adapter that no training batch has used yet (at most 100 items).
// params: $adapter_id
MATCH (f:Feedback)-[r:FEEDBACK_FOR]->(a:Adapter {id: $adapter_id})
WHERE f.validation_status = 'approved'
AND f.used_for_training = false
RETURN f
LIMIT 100
