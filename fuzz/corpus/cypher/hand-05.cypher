MATCH (f:Feedback) WHERE f.session_id STARTS WITH 'session' AND f.question CONTAINS '2' OR f.id IN ['feedback-5', $x] AND NOT f.used_for_training RETURN DISTINCT f.model_version, f.comment IS NULL
