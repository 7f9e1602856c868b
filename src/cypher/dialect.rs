//! The dialect front: accepts the seed's `RETURN ... GROUP BY ... HAVING ...` and rewrites it
//! to standard openCypher before parsing.
//!
//! openCypher groups implicitly by the non-aggregated RETURN items, so:
//! - `RETURN items GROUP BY keys` becomes `RETURN items`, after checking that `keys` names
//!   exactly the non-aggregated items (by expression or by alias, in any order);
//! - `RETURN items GROUP BY keys HAVING cond ORDER BY ...` becomes
//!   `WITH items AS names WHERE cond' RETURN names AS columns ORDER BY ...'`, where `cond'` and
//!   the ORDER BY refer to the items by their names, and aggregates used only in HAVING or
//!   ORDER BY become hidden WITH items. Column names stay what the user wrote.
//!
//! The rewrite works on open-cypher's lossless token stream, so strings and comments are
//! never mistaken for keywords. It keeps an [`OffsetMap`] from the rewritten text back to the
//! user's, so every later error still points into what the user typed. Queries without
//! `GROUP BY`/`HAVING` pass through unchanged (and unallocated beyond one copy).

use open_cypher::{Keyword, TokenKind};

use super::error::CypherError;

/// One stretch of the rewritten text and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    /// Start in the rewritten text.
    new_start: usize,
    /// Length in the rewritten text.
    len: usize,
    /// Start in the original text (for synthesized text: the offset it stands for).
    orig_start: usize,
    /// Copied verbatim (offsets inside map 1:1) or synthesized (all map to `orig_start`).
    copied: bool,
}

/// Maps byte offsets in the rewritten query back to the user's original query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetMap {
    segments: Vec<Segment>,
    orig_len: usize,
}

impl OffsetMap {
    /// The identity map for a text of `len` bytes.
    fn identity(len: usize) -> Self {
        OffsetMap {
            segments: vec![Segment {
                new_start: 0,
                len,
                orig_start: 0,
                copied: true,
            }],
            orig_len: len,
        }
    }

    /// The original offset of rewritten offset `offset`.
    pub fn to_original(&self, offset: usize) -> usize {
        let i = self
            .segments
            .partition_point(|s| s.new_start <= offset)
            .saturating_sub(1);
        match self.segments.get(i) {
            Some(s) if s.copied => {
                let inside = offset.saturating_sub(s.new_start).min(s.len);
                (s.orig_start + inside).min(self.orig_len)
            }
            Some(s) => s.orig_start.min(self.orig_len),
            None => offset.min(self.orig_len),
        }
    }
}

/// A query after the dialect rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// Standard openCypher text.
    pub text: String,
    /// Rewritten offsets -> original offsets.
    pub map: OffsetMap,
    /// Whether anything was rewritten.
    pub changed: bool,
}

/// A significant (non-trivia) token with its text.
#[derive(Debug, Clone, Copy)]
struct Tok<'q> {
    kind: TokenKind,
    start: usize,
    end: usize,
    text: &'q str,
    /// Bracket depth before this token.
    depth: u32,
}

impl Tok<'_> {
    fn is_kw(&self, kw: Keyword) -> bool {
        self.kind == TokenKind::Keyword(kw)
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.kind, TokenKind::Keyword(_) | TokenKind::Identifier)
            && self.text.eq_ignore_ascii_case(word)
    }
}

/// Most significant tokens a query may have.
pub const MAX_TOKENS: usize = 8192;

const AGGREGATES: [&str; 6] = ["count", "sum", "avg", "min", "max", "collect"];

/// Builds the rewritten text segment by segment.
struct Out {
    text: String,
    segments: Vec<Segment>,
}

impl Out {
    fn copy(&mut self, src: &str, start: usize, end: usize) {
        if start >= end {
            return;
        }
        self.segments.push(Segment {
            new_start: self.text.len(),
            len: end - start,
            orig_start: start,
            copied: true,
        });
        self.text.push_str(&src[start..end]);
    }

    fn synth(&mut self, s: &str, anchor: usize) {
        if s.is_empty() {
            return;
        }
        self.segments.push(Segment {
            new_start: self.text.len(),
            len: s.len(),
            orig_start: anchor,
            copied: false,
        });
        self.text.push_str(s);
    }
}

/// Normalized spelling of a token run, for comparing expressions written twice: keywords
/// upper-cased, function names lower-cased, everything else as written.
fn normalize(toks: &[Tok<'_>]) -> String {
    let wordy = |k: TokenKind| {
        !matches!(
            k,
            TokenKind::LeftParen
                | TokenKind::RightParen
                | TokenKind::LeftBracket
                | TokenKind::RightBracket
                | TokenKind::LeftBrace
                | TokenKind::RightBrace
                | TokenKind::Comma
                | TokenKind::Dot
                | TokenKind::Colon
        )
    };
    let mut out = String::new();
    for (i, t) in toks.iter().enumerate() {
        if i > 0 && wordy(toks[i - 1].kind) && wordy(t.kind) {
            out.push(' ');
        }
        let next_is_paren = toks
            .get(i + 1)
            .is_some_and(|n| n.kind == TokenKind::LeftParen);
        match t.kind {
            TokenKind::Keyword(_) | TokenKind::Identifier if next_is_paren => {
                out.push_str(&t.text.to_ascii_lowercase())
            }
            TokenKind::Keyword(k) => out.push_str(k.as_str()),
            _ => out.push_str(t.text),
        }
    }
    out
}

/// Is `toks[i]` the name of an aggregate call (`count(`, not `x.count(`)?
fn is_aggregate_at(toks: &[Tok<'_>], i: usize) -> bool {
    let t = &toks[i];
    matches!(t.kind, TokenKind::Keyword(_) | TokenKind::Identifier)
        && AGGREGATES.iter().any(|a| t.text.eq_ignore_ascii_case(a))
        && toks
            .get(i + 1)
            .is_some_and(|n| n.kind == TokenKind::LeftParen)
        && (i == 0 || toks[i - 1].kind != TokenKind::Dot)
}

/// Index just past the bracket group that opens at `open` (which must be an opening bracket).
fn close_of(toks: &[Tok<'_>], open: usize) -> usize {
    let d = toks[open].depth;
    let mut j = open + 1;
    while j < toks.len() && toks[j].depth > d {
        j += 1;
    }
    // toks[j] is the closing bracket (depth back to d) or the end.
    (j + 1).min(toks.len())
}

/// Splits `toks` at commas on the run's own bracket depth.
fn split_commas<'a, 'q>(toks: &'a [Tok<'q>]) -> Vec<&'a [Tok<'q>]> {
    let Some(first) = toks.first() else {
        return Vec::new();
    };
    let d = first.depth;
    toks.split(|t| t.kind == TokenKind::Comma && t.depth == d)
        .collect()
}

/// One RETURN item.
struct Item<'a, 'q> {
    expr: &'a [Tok<'q>],
    alias: Option<Tok<'q>>,
    aggregated: bool,
    norm: String,
}

fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

fn syntax(message: impl Into<String>, offset: usize) -> CypherError {
    CypherError::Syntax {
        message: message.into(),
        line: 0,
        column: 0,
        offset,
    }
}

/// Rewrites the GROUP BY / HAVING dialect to standard openCypher; any other query is
/// returned unchanged.
pub fn rewrite(query: &str) -> Result<Rewritten, CypherError> {
    let unchanged = || Rewritten {
        text: query.to_owned(),
        map: OffsetMap::identity(query.len()),
        changed: false,
    };
    let lexed = open_cypher::lex(query);
    // Bound the input before the parser sees it: its recursion (and ours) grows with
    // nesting, and nesting grows with length. Long literal lists belong in parameters.
    if let Some(t) = lexed
        .tokens
        .iter()
        .filter(|t| !t.is_trivia())
        .nth(MAX_TOKENS)
    {
        return Err(CypherError::unsupported(
            format!("queries longer than {MAX_TOKENS} tokens (pass long lists as parameters)"),
            t.span.start,
        ));
    }
    if !lexed.diagnostics.is_empty() {
        // Let the parser report lexical errors with its own messages.
        return Ok(unchanged());
    }
    let mut toks = Vec::new();
    let mut depth: u32 = 0;
    for t in lexed.tokens.iter().filter(|t| !t.is_trivia()) {
        let closing = matches!(
            t.kind,
            TokenKind::RightParen | TokenKind::RightBracket | TokenKind::RightBrace
        );
        if closing {
            depth = depth.saturating_sub(1);
        }
        toks.push(Tok {
            kind: t.kind,
            start: t.span.start,
            end: t.span.end,
            text: t.text(query).unwrap_or(""),
            depth,
        });
        if matches!(
            t.kind,
            TokenKind::LeftParen | TokenKind::LeftBracket | TokenKind::LeftBrace
        ) {
            depth += 1;
        }
    }
    let top =
        |i: usize, t: &Tok<'_>| t.depth == 0 && (i == 0 || toks[i - 1].kind != TokenKind::Dot);
    let group = toks.iter().enumerate().position(|(i, t)| {
        top(i, t)
            && t.is_kw(Keyword::Group)
            && toks.get(i + 1).is_some_and(|n| n.is_kw(Keyword::By))
    });
    let having = toks
        .iter()
        .enumerate()
        .position(|(i, t)| top(i, t) && t.kind == TokenKind::Identifier && t.is_word("HAVING"));
    let Some(first) = group.or(having) else {
        return Ok(unchanged());
    };
    if let (Some(g), Some(h)) = (group, having)
        && h < g
    {
        return Err(syntax("HAVING must come after GROUP BY", toks[h].start));
    }
    // The projection it belongs to: the last RETURN or WITH before it.
    let proj = toks[..first]
        .iter()
        .rposition(|t| t.depth == 0 && (t.is_kw(Keyword::Return) || t.is_kw(Keyword::With)));
    let Some(ret) = proj else {
        return Err(syntax(
            "GROUP BY / HAVING must follow the RETURN items",
            toks[first].start,
        ));
    };
    if toks[ret].is_kw(Keyword::With) {
        return Err(CypherError::unsupported(
            "GROUP BY / HAVING after WITH (WITH groups implicitly by its non-aggregated items; filter with WITH ... WHERE)",
            toks[first].start,
        ));
    }
    let mut items_start = ret + 1;
    let distinct = toks
        .get(items_start)
        .is_some_and(|t| t.is_kw(Keyword::Distinct));
    if distinct {
        items_start += 1;
    }
    let is_tail = |t: &Tok<'_>| {
        t.depth == 0
            && (t.is_kw(Keyword::Order)
                || t.is_kw(Keyword::Skip)
                || t.is_kw(Keyword::Limit)
                || t.is_kw(Keyword::Offset)
                || t.kind == TokenKind::Semicolon)
    };
    let items_toks = &toks[items_start..first];
    if items_toks.is_empty() {
        return Err(syntax("expected RETURN items", toks[first].start));
    }
    let mut items = Vec::new();
    for part in split_commas(items_toks) {
        let Some(head) = part.first() else {
            return Err(syntax("empty RETURN item", toks[first].start));
        };
        if part.len() == 1 && head.kind == TokenKind::Star {
            return Err(CypherError::unsupported(
                "GROUP BY with RETURN * (list the items)",
                head.start,
            ));
        }
        let n = part.len();
        let (expr, alias) =
            if n >= 3 && part[n - 2].is_kw(Keyword::As) && part[n - 2].depth == head.depth {
                (&part[..n - 2], Some(part[n - 1]))
            } else {
                (part, None)
            };
        let aggregated = (0..expr.len()).any(|i| is_aggregate_at(expr, i));
        items.push(Item {
            expr,
            alias,
            aggregated,
            norm: normalize(expr),
        });
    }

    // GROUP BY keys: exactly the non-aggregated items.
    let mut cursor = first;
    if let Some(g) = group {
        let keys_start = g + 2;
        let keys_end = toks[keys_start..]
            .iter()
            .position(|t| {
                is_tail(t)
                    || (t.depth == 0 && t.is_word("HAVING") && t.kind == TokenKind::Identifier)
            })
            .map_or(toks.len(), |p| keys_start + p);
        if keys_start >= keys_end {
            return Err(syntax(
                "expected grouping keys after GROUP BY",
                toks[g + 1].end,
            ));
        }
        let mut covered = vec![false; items.len()];
        for key in split_commas(&toks[keys_start..keys_end]) {
            let Some(k0) = key.first() else {
                return Err(syntax("empty GROUP BY key", toks[g].start));
            };
            let norm = normalize(key);
            let hit = items.iter().position(|it| {
                it.norm == norm || (key.len() == 1 && it.alias.is_some_and(|a| a.text == k0.text))
            });
            match hit {
                Some(i) if items[i].aggregated => {
                    return Err(CypherError::semantic(
                        format!(
                            "GROUP BY key `{norm}` is an aggregate; GROUP BY must name exactly the non-aggregated RETURN items"
                        ),
                        k0.start,
                    ));
                }
                Some(i) => covered[i] = true,
                None => {
                    return Err(CypherError::semantic(
                        format!(
                            "GROUP BY key `{norm}` is not a RETURN item; GROUP BY must name exactly the non-aggregated RETURN items"
                        ),
                        k0.start,
                    ));
                }
            }
        }
        if let Some(i) = (0..items.len()).find(|&i| !items[i].aggregated && !covered[i]) {
            return Err(CypherError::semantic(
                format!(
                    "RETURN item `{}` is neither aggregated nor listed in GROUP BY; GROUP BY must name exactly the non-aggregated RETURN items",
                    items[i].norm
                ),
                toks[g].start,
            ));
        }
        cursor = keys_end;
    }

    let mut out = Out {
        text: String::with_capacity(query.len() + 64),
        segments: Vec::new(),
    };
    let Some(h) = having.filter(|&h| h >= cursor) else {
        // GROUP BY only: drop it, keep everything else verbatim.
        let drop_start = toks[first].start;
        let drop_end = toks[cursor - 1].end;
        out.copy(query, 0, drop_start);
        out.synth(" ", drop_start);
        out.copy(query, drop_end, query.len());
        return Ok(Rewritten {
            text: out.text,
            map: OffsetMap {
                segments: out.segments,
                orig_len: query.len(),
            },
            changed: true,
        });
    };

    // HAVING: WITH items AS names WHERE cond' RETURN names AS columns tail'.
    let cond_start = h + 1;
    let cond_end = toks[cond_start..]
        .iter()
        .position(is_tail)
        .map_or(toks.len(), |p| cond_start + p);
    if cond_start >= cond_end {
        return Err(syntax("expected a condition after HAVING", toks[h].end));
    }
    let names: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, it)| match it.alias {
            Some(a) => a.text.to_owned(),
            None => format!("`__fg_item{i}`"),
        })
        .collect();
    // Aggregates used only in HAVING / ORDER BY: (orig start, orig end, normalized, name).
    let mut hidden: Vec<(usize, usize, String, String)> = Vec::new();
    // Token replacement plan for HAVING and ORDER BY: runs copied, or replaced by a name.
    enum Piece {
        Copy(usize, usize),
        Name(String, usize),
    }
    let substitute = |range: std::ops::Range<usize>,
                      hidden: &mut Vec<(usize, usize, String, String)>|
     -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut i = range.start;
        while i < range.end {
            // Longest item expression starting here.
            let mut best: Option<(usize, usize)> = None;
            for (k, it) in items.iter().enumerate() {
                let n = it.expr.len();
                if i + n <= range.end
                    && best.is_none_or(|(_, bn)| n > bn)
                    && normalize(&toks[i..i + n]) == it.norm
                {
                    best = Some((k, n));
                }
            }
            if let Some((k, n)) = best {
                pieces.push(Piece::Name(names[k].clone(), toks[i].start));
                i += n;
                continue;
            }
            if is_aggregate_at(&toks, i) {
                let end = close_of(&toks, i + 1).min(range.end);
                let (s, e) = (toks[i].start, toks[end - 1].end);
                let norm = normalize(&toks[i..end]);
                let name = match hidden.iter().find(|h| h.2 == norm) {
                    Some(h) => h.3.clone(),
                    None => {
                        let n = format!("`__fg_hidden{}`", hidden.len());
                        hidden.push((s, e, norm, n.clone()));
                        n
                    }
                };
                pieces.push(Piece::Name(name, s));
                i = end;
                continue;
            }
            pieces.push(Piece::Copy(toks[i].start, toks[i].end));
            i += 1;
        }
        pieces
    };
    let cond = substitute(cond_start..cond_end, &mut hidden);
    let order = toks[cond_end..]
        .iter()
        .position(|t| t.depth == 0 && t.is_kw(Keyword::Order))
        .map(|p| cond_end + p);
    let (order_pieces, rest_start) = match order {
        Some(o) => {
            let by = o + 2; // ORDER BY
            let end = toks[by.min(toks.len())..]
                .iter()
                .position(|t| {
                    t.depth == 0
                        && (t.is_kw(Keyword::Skip)
                            || t.is_kw(Keyword::Limit)
                            || t.is_kw(Keyword::Offset)
                            || t.kind == TokenKind::Semicolon)
                })
                .map_or(toks.len(), |p| by + p);
            (substitute(by.min(end)..end, &mut hidden), Some((o, end)))
        }
        None => (Vec::new(), None),
    };

    let ret_at = toks[ret].start;
    out.copy(query, 0, ret_at);
    out.synth("WITH ", ret_at);
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.synth(", ", it.expr[0].start);
        }
        let (s, e) = (it.expr[0].start, it.expr[it.expr.len() - 1].end);
        out.copy(query, s, e);
        out.synth(&format!(" AS {}", names[i]), s);
    }
    for (s, e, _, name) in &hidden {
        out.synth(", ", *s);
        out.copy(query, *s, *e);
        out.synth(&format!(" AS {name}"), *s);
    }
    let emit = |out: &mut Out, pieces: &[Piece]| {
        for p in pieces {
            out.synth(
                " ",
                match p {
                    Piece::Copy(s, _) | Piece::Name(_, s) => *s,
                },
            );
            match p {
                Piece::Copy(s, e) => out.copy(query, *s, *e),
                Piece::Name(n, s) => out.synth(n, *s),
            }
        }
    };
    out.synth(" WHERE", toks[h].start);
    emit(&mut out, &cond);
    out.synth(" RETURN ", ret_at);
    if distinct {
        out.synth("DISTINCT ", ret_at);
    }
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.synth(", ", it.expr[0].start);
        }
        match it.alias {
            Some(a) => out.synth(a.text, a.start),
            None => {
                let (s, e) = (it.expr[0].start, it.expr[it.expr.len() - 1].end);
                out.synth(&format!("{} AS {}", names[i], quote_ident(&query[s..e])), s);
            }
        }
    }
    let mut tail_from = toks[cond_end - 1].end;
    if let Some((o, end)) = rest_start {
        out.synth(" ", toks[o].start);
        out.copy(query, toks[o].start, toks[(o + 1).min(toks.len() - 1)].end);
        emit(&mut out, &order_pieces);
        tail_from = toks[end - 1].end;
    }
    out.copy(query, tail_from, query.len());
    Ok(Rewritten {
        text: out.text,
        map: OffsetMap {
            segments: out.segments,
            orig_len: query.len(),
        },
        changed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squash(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn plain_queries_pass_through() {
        let q = "MATCH (n) WHERE n.group = 'GROUP BY x' RETURN n";
        let r = rewrite(q).unwrap();
        assert!(!r.changed);
        assert_eq!(r.text, q);
        assert_eq!(r.map.to_original(7), 7);
    }

    #[test]
    fn group_by_is_dropped_after_checking() {
        let q = "MATCH (f)-->(a) RETURN a.id AS adapter_id, COUNT(f) AS n GROUP BY a.id";
        let r = rewrite(q).unwrap();
        assert_eq!(
            squash(&r.text),
            "MATCH (f)-->(a) RETURN a.id AS adapter_id, COUNT(f) AS n"
        );
        // By alias and in another order works too.
        let q2 = "MATCH (f)-->(a) RETURN a.id AS k, f.type, count(*) GROUP BY f.type, k ORDER BY k";
        let r2 = rewrite(q2).unwrap();
        assert_eq!(
            squash(&r2.text),
            "MATCH (f)-->(a) RETURN a.id AS k, f.type, count(*) ORDER BY k"
        );
        // Offsets after the removed part map back into the original.
        let at = r2.text.find("ORDER").unwrap();
        assert_eq!(r2.map.to_original(at), q2.find("ORDER").unwrap());
    }

    #[test]
    fn group_by_mismatch_is_explained() {
        let q = "MATCH (f)-->(a) RETURN a.id, f.type, count(f) GROUP BY a.id";
        match rewrite(q).unwrap_err() {
            CypherError::Semantic { message, position } => {
                assert!(message.contains("f.type"), "{message}");
                assert!(
                    message.contains("neither aggregated nor listed"),
                    "{message}"
                );
                assert_eq!(position.unwrap().offset, q.find("GROUP").unwrap());
            }
            e => panic!("{e:?}"),
        }
        let q = "MATCH (f)-->(a) RETURN a.id, count(f) GROUP BY a.id, f.type";
        match rewrite(q).unwrap_err() {
            CypherError::Semantic { message, position } => {
                assert!(message.contains("not a RETURN item"), "{message}");
                assert_eq!(position.unwrap().offset, q.rfind("f.type").unwrap());
            }
            e => panic!("{e:?}"),
        }
        let q = "MATCH (f)-->(a) RETURN a.id, count(f) GROUP BY a.id, count(f)";
        assert!(matches!(rewrite(q), Err(CypherError::Semantic { .. })));
    }

    #[test]
    fn having_becomes_with_where() {
        let q = "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter),\n(f:Feedback)-[:FEEDBACK_FOR]->(a2:Adapter)\nWHERE a1.id <> a2.id\nRETURN a1.id, a2.id, COUNT(f) AS shared_feedback_count\nGROUP BY a1.id, a2.id\nHAVING shared_feedback_count > 10\nORDER BY shared_feedback_count DESC";
        let r = rewrite(q).unwrap();
        assert_eq!(
            squash(&r.text),
            "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter), (f:Feedback)-[:FEEDBACK_FOR]->(a2:Adapter) WHERE a1.id <> a2.id \
             WITH a1.id AS `__fg_item0`, a2.id AS `__fg_item1`, COUNT(f) AS shared_feedback_count \
             WHERE shared_feedback_count > 10 \
             RETURN `__fg_item0` AS `a1.id`, `__fg_item1` AS `a2.id`, shared_feedback_count \
             ORDER BY shared_feedback_count DESC"
        );
        // The HAVING threshold maps back to where the user wrote it.
        let at = r.text.find("> 10").unwrap();
        assert_eq!(r.map.to_original(at), q.find("> 10").unwrap());
    }

    #[test]
    fn having_on_expressions_and_hidden_aggregates() {
        let q = "MATCH (f)-->(a) RETURN a.id, count(f) GROUP BY a.id HAVING count(f) > 1 AND max(f.score) < 3 ORDER BY count(f) DESC, a.id LIMIT 5";
        let r = rewrite(q).unwrap();
        assert_eq!(
            squash(&r.text),
            "MATCH (f)-->(a) WITH a.id AS `__fg_item0`, count(f) AS `__fg_item1`, max(f.score) AS `__fg_hidden0` \
             WHERE `__fg_item1` > 1 AND `__fg_hidden0` < 3 \
             RETURN `__fg_item0` AS `a.id`, `__fg_item1` AS `count(f)` \
             ORDER BY `__fg_item1` DESC , `__fg_item0` LIMIT 5"
        );
    }

    #[test]
    fn misplaced_group_by_is_an_error() {
        let q = "MATCH (n) WITH n.x AS x, count(*) AS c GROUP BY x RETURN x";
        assert!(matches!(rewrite(q), Err(CypherError::Unsupported { .. })));
        let q = "MATCH (n) RETURN * GROUP BY n";
        assert!(matches!(rewrite(q), Err(CypherError::Unsupported { .. })));
    }
}
