//! The openCypher engine over the graph index (being built; see issue 5).
