CREATE (n:Feedback {id: 'x'}) RETURN n
