//! What a search query is, and where a hit matched: the engine-neutral half of [`super::Store::search`].
//!
//! A query is a list of words, every one of which a message must have (in any order, anywhere in it).
//! The engines never see the query as typed: FTS5 gets each word as a quoted phrase and PostgreSQL the
//! words as plain text for `plainto_tsquery`, so nothing a person types is read as query syntax (`OR`,
//! `NEAR(…)`, `*`, `"`, `-`, column filters). The engines split words and compare them their own way
//! (both ignore case; FTS5 also ignores diacritics), so `foo-bar` finds `foo-bar` and `foo bar` on
//! SQLite, and `foo-bar` on PostgreSQL.
//!
//! Hits come back with their text and the same text with each match between [`MATCH_START`] and
//! [`MATCH_END`] (FTS5's `highlight()`, PostgreSQL's `ts_headline`); [`match_ranges`] turns that into
//! byte ranges of the text, the one format the API gives whatever the engine.

use crate::api::{SearchHit, MAX_MATCHES_PER_HIT, MAX_SEARCH_QUERY_BYTES};

/// Put before each match by the engines' highlighting. Never in a stored text: messages with control
/// characters are refused (`bad_text`).
pub(super) const MATCH_START: char = '\u{2}';

/// Put after each match.
pub(super) const MATCH_END: char = '\u{3}';

/// A query ready for either engine: at least one word, no syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchQuery {
    /// The parts of the query between whitespace and control characters that have a letter or digit,
    /// as typed.
    terms: Vec<String>,
}

/// Why a query cannot be searched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadQuery {
    #[error("a search query has at most {MAX_SEARCH_QUERY_BYTES} bytes")]
    TooLong,
    #[error("a search query needs at least one word (letters or digits)")]
    NoWords,
}

impl SearchQuery {
    /// The words of `query`: its parts between whitespace and control characters (which no stored text
    /// has, and PostgreSQL refuses in text if NUL) that have a letter or a digit (a part of symbols only,
    /// such as `*` or `"`, would match nothing or everything, and is left out).
    pub fn parse(query: &str) -> Result<SearchQuery, BadQuery> {
        if query.len() > MAX_SEARCH_QUERY_BYTES {
            return Err(BadQuery::TooLong);
        }
        let terms: Vec<String> = query
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|term| term.chars().any(char::is_alphanumeric))
            .map(str::to_owned)
            .collect();
        if terms.is_empty() {
            return Err(BadQuery::NoWords);
        }
        Ok(SearchQuery { terms })
    }

    /// An FTS5 query: each term a quoted phrase (its `"` doubled, the only character special inside
    /// one), all of them required.
    pub(super) fn fts5(&self) -> String {
        let phrases: Vec<String> = self
            .terms
            .iter()
            .map(|term| format!("\"{}\"", term.replace('"', "\"\"")))
            .collect();
        phrases.join(" ")
    }

    /// Text for PostgreSQL's `plainto_tsquery`, which reads no operators: the terms, space-separated.
    pub(super) fn plain(&self) -> String {
        self.terms.join(" ")
    }
}

/// A hit as both engines' queries return it: room, seq, author, text, ts, the text with its matches
/// marked, and how many rows the query fetched before the byte budget (see `Store::search`).
pub(super) type FoundRow = (String, i64, String, String, i64, Option<String>, i64);

pub(super) fn hit(row: FoundRow) -> SearchHit {
    let (room, seq, from, text, ts, marked, _) = row;
    let matches = marked
        .as_deref()
        .map(|marked| match_ranges(&text, marked))
        .unwrap_or_default();
    SearchHit {
        room,
        seq: seq as u64,
        from,
        text,
        ts: ts as u64,
        matches,
    }
}

/// The byte ranges of `text` that `marked` (`text` with [`MATCH_START`] and [`MATCH_END`] around
/// each match) marks, at most [`MAX_MATCHES_PER_HIT`]. None at all if `marked` is not exactly `text`
/// with well-nested marks added: a range is never a guess.
pub(super) fn match_ranges(text: &str, marked: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut plain = String::with_capacity(text.len());
    let mut open: Option<usize> = None;
    for c in marked.chars() {
        match (c, open) {
            (MATCH_START, None) => open = Some(plain.len()),
            (MATCH_END, Some(start)) => {
                if start < plain.len() && ranges.len() < MAX_MATCHES_PER_HIT {
                    ranges.push((start, plain.len()));
                }
                open = None;
            }
            (MATCH_START | MATCH_END, _) => return Vec::new(),
            (c, _) => plain.push(c),
        }
    }
    if open.is_some() || plain != text {
        return Vec::new();
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_its_words_and_never_syntax() {
        let fts5 = |q: &str| SearchQuery::parse(q).map(|q| q.fts5());
        assert_eq!(fts5("Hello  world"), Ok(r#""Hello" "world""#.into()));
        assert_eq!(
            fts5(r#"say "hi" NEAR(a b) OR x* -y col:z"#),
            Ok(r#""say" """hi""" "NEAR(a" "b)" "OR" "x*" "-y" "col:z""#.into())
        );
        assert_eq!(
            SearchQuery::parse("'; DROP TABLE messages; --").map(|q| q.plain()),
            Ok("DROP TABLE messages;".into())
        );
        for nothing in ["", "   ", "*", "\" \"", "\"", "* - ( ) : ^ ''"] {
            assert_eq!(
                SearchQuery::parse(nothing),
                Err(BadQuery::NoWords),
                "{nothing:?}"
            );
        }
        assert_eq!(
            SearchQuery::parse("a\u{0}b\u{2}c\u{3}").map(|q| q.fts5()),
            Ok(r#""a" "b" "c""#.into())
        );
        assert!(SearchQuery::parse(&"é".repeat(100)).is_ok());
        assert_eq!(
            SearchQuery::parse(&"é".repeat(101)),
            Err(BadQuery::TooLong),
            "bytes, not characters"
        );
    }

    #[test]
    fn marks_become_byte_ranges_of_the_text() {
        let text = "Grüße, hello\nhello!";
        let marked = "\u{2}Grüße\u{3}, \u{2}hello\u{3}\nhello!";
        assert_eq!(match_ranges(text, marked), [(0, 7), (9, 14)]);
        assert_eq!(&text[0..7], "Grüße");
        // Anything but exactly the text with well-nested marks gives no ranges.
        for wrong in [
            "\u{2}Grüße, hello\nhello!",
            "\u{3}Grüße\u{2}, hello\nhello!",
            "\u{2}\u{2}Grüße\u{3}\u{3}, hello\nhello!",
            "\u{2}Grüße\u{3} hello hello!",
        ] {
            assert!(match_ranges(text, wrong).is_empty(), "{wrong:?}");
        }
        // At most MAX_MATCHES_PER_HIT, the first ones.
        let many = "a ".repeat(100);
        let marked = "\u{2}a\u{3} ".repeat(100);
        let ranges = match_ranges(&many, &marked);
        assert_eq!(ranges.len(), MAX_MATCHES_PER_HIT);
        assert_eq!(ranges.first(), Some(&(0, 1)));
    }
}
