OPTIONAL MATCH (a:Adapter {id: 'nope'})<-[:FEEDBACK_FOR]-(f) RETURN a, f, count(f), min(f.created_at), max(f.score)
