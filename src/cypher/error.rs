//! Errors of the Cypher engine.
//!
//! Every error that can be traced to a place in the query carries a [`Position`] in the
//! user's original text (after the dialect rewrite has been mapped back), so a client can
//! underline it. Limits name the limit that was hit, so the HTTP layer can say which one.

use std::fmt;

use serde::Serialize;

/// A place in the user's query: byte offset plus 1-based line and column (columns count
/// Unicode scalar values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    /// Byte offset into the query text.
    pub offset: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Position {
    /// A position known only by its byte offset; [`Position::locate`] fills line and column.
    pub(crate) fn at(offset: usize) -> Self {
        Position {
            offset,
            line: 0,
            column: 0,
        }
    }

    /// The position of byte `offset` in `text` (clamped to the text, snapped back to a char
    /// boundary).
    pub fn locate(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = text[line_start..offset].chars().count() + 1;
        Position {
            offset,
            line,
            column,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// The error type inside the executor: boxed, so results stay small (a `Result<Flow, Fail>`
/// fits in two registers).
pub(crate) type Fail = Box<CypherError>;

/// Which query limit was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Wall-clock time (`QueryLimits::timeout`).
    Timeout,
    /// Rows returned (`QueryLimits::max_rows`).
    MaxRows,
    /// Traversal work: nodes scanned plus edges examined (`QueryLimits::max_work`).
    MaxWork,
    /// Variable-length traversal depth (`QueryLimits::max_depth`).
    MaxDepth,
    /// Memory the query holds: built values, held state and the result
    /// (`QueryLimits::max_memory`, configured as `query.max_memory_bytes`).
    MaxMemory,
    /// Queries of one org running at once (`query.max_concurrent_per_org`); the caller
    /// should retry shortly.
    MaxConcurrent,
    /// Queries of all orgs running at once (`query.max_concurrent_total`); the caller
    /// should retry shortly.
    MaxConcurrentTotal,
    /// Memory every running query holds together (`query.max_memory_total_bytes`); the
    /// caller should retry shortly.
    MaxMemoryTotal,
}

impl Limit {
    /// The name of the limit as in `QueryLimits`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Timeout => "timeout",
            Limit::MaxRows => "max_rows",
            Limit::MaxWork => "max_work",
            Limit::MaxDepth => "max_depth",
            Limit::MaxMemory => "max_memory",
            Limit::MaxConcurrent => "max_concurrent_per_org",
            Limit::MaxConcurrentTotal => "max_concurrent_total",
            Limit::MaxMemoryTotal => "max_memory_total",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn at(p: &Option<Position>) -> String {
    match p {
        Some(p) => format!(" (at {p})"),
        None => String::new(),
    }
}

/// Everything that can go wrong with a query. All variants are the client's doing (a 4xx),
/// except none: the engine has no internal failure mode that is not reported as one of these.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CypherError {
    /// The text is not valid (dialect) openCypher.
    #[error("syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// What is wrong.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Byte offset.
        offset: usize,
    },
    /// Valid openCypher that this engine does not implement.
    #[error("unsupported: {feature}{}", at(.position))]
    Unsupported {
        /// The feature.
        feature: String,
        /// Where it is used.
        position: Option<Position>,
    },
    /// CREATE, MERGE, SET, DELETE, REMOVE and friends: queries are read-only.
    #[error("write clause {clause} is not allowed: graph queries are read-only{}", at(.position))]
    WriteClause {
        /// The clause keyword.
        clause: String,
        /// Where it starts.
        position: Option<Position>,
    },
    /// A function name the engine does not know.
    #[error("unknown function '{name}'{}", at(.position))]
    UnknownFunction {
        /// The name as written.
        name: String,
        /// Where it is called.
        position: Option<Position>,
    },
    /// A value of the wrong type for an operator or function.
    #[error("type error: {message}{}", at(.position))]
    Type {
        /// What was expected and what was found.
        message: String,
        /// The offending expression.
        position: Option<Position>,
    },
    /// `$name` is used but not given.
    #[error("missing parameter ${name}{}", at(.position))]
    MissingParameter {
        /// Parameter name without `$`.
        name: String,
        /// Where it is used.
        position: Option<Position>,
    },
    /// A well-formed query that makes no sense: an undefined variable, a GROUP BY that does
    /// not match the returned items, an aggregate where none is allowed, ...
    #[error("invalid query: {message}{}", at(.position))]
    Semantic {
        /// What is wrong.
        message: String,
        /// Where.
        position: Option<Position>,
    },
    /// A query limit was exceeded; the query was stopped.
    #[error("query limit {limit} exceeded: {detail}")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// The limit's value and what was being done.
        detail: String,
    },
    /// The query was stopped because its caller went away (the client hung up).
    #[error("the query was cancelled: its client went away")]
    Cancelled,
}

impl CypherError {
    /// A short, stable name of the error kind (for error bodies and metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            CypherError::Syntax { .. } => "syntax",
            CypherError::Unsupported { .. } => "unsupported",
            CypherError::WriteClause { .. } => "write_clause",
            CypherError::UnknownFunction { .. } => "unknown_function",
            CypherError::Type { .. } => "type",
            CypherError::MissingParameter { .. } => "missing_parameter",
            CypherError::Semantic { .. } => "semantic",
            CypherError::LimitExceeded { .. } => "limit_exceeded",
            CypherError::Cancelled => "cancelled",
        }
    }

    /// Where in the query the error is, if it can be placed.
    pub fn position(&self) -> Option<Position> {
        match self {
            CypherError::Syntax {
                line,
                column,
                offset,
                ..
            } => Some(Position {
                offset: *offset,
                line: *line,
                column: *column,
            }),
            CypherError::Unsupported { position, .. }
            | CypherError::WriteClause { position, .. }
            | CypherError::UnknownFunction { position, .. }
            | CypherError::Type { position, .. }
            | CypherError::MissingParameter { position, .. }
            | CypherError::Semantic { position, .. } => *position,
            CypherError::LimitExceeded { .. } | CypherError::Cancelled => None,
        }
    }

    /// Fills in line and column of the position from the user's text.
    pub(crate) fn locate(mut self, text: &str) -> Self {
        match &mut self {
            CypherError::Syntax {
                line,
                column,
                offset,
                ..
            } => {
                let p = Position::locate(text, *offset);
                (*line, *column, *offset) = (p.line, p.column, p.offset);
            }
            CypherError::Unsupported { position, .. }
            | CypherError::WriteClause { position, .. }
            | CypherError::UnknownFunction { position, .. }
            | CypherError::Type { position, .. }
            | CypherError::MissingParameter { position, .. }
            | CypherError::Semantic { position, .. } => {
                if let Some(p) = position {
                    *p = Position::locate(text, p.offset);
                }
            }
            CypherError::LimitExceeded { .. } | CypherError::Cancelled => {}
        }
        self
    }

    pub(crate) fn unsupported(feature: impl Into<String>, offset: usize) -> Self {
        CypherError::Unsupported {
            feature: feature.into(),
            position: Some(Position::at(offset)),
        }
    }

    pub(crate) fn semantic(message: impl Into<String>, offset: usize) -> Self {
        CypherError::Semantic {
            message: message.into(),
            position: Some(Position::at(offset)),
        }
    }

    pub(crate) fn type_error(message: impl Into<String>, offset: usize) -> Self {
        CypherError::Type {
            message: message.into(),
            position: Some(Position::at(offset)),
        }
    }

    pub(crate) fn limit(limit: Limit, detail: impl Into<String>) -> Self {
        CypherError::LimitExceeded {
            limit,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_counts_lines_and_chars() {
        let text = "MATCH (n)\nWHERE é = 1";
        let p = Position::locate(text, text.find('=').unwrap());
        assert_eq!((p.line, p.column), (2, 9));
        assert_eq!(Position::locate(text, 0).column, 1);
        // Past the end is clamped, inside a char snaps back.
        assert_eq!(Position::locate(text, 999).offset, text.len());
        let inside = text.find('é').unwrap() + 1;
        assert_eq!(Position::locate(text, inside).offset, inside - 1);
    }
}
