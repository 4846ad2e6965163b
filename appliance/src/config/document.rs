//! The TOML document as the operator wrote it: toml's spanned parse tree, turned into typed
//! reads that record a problem (line, dotted field, message) instead of stopping at the first.
//!
//! serde's derived `Deserialize` stops at the first error, and `check-config` must list every
//! problem, so the schema walks toml's own spanned tree (`toml::de::DeTable`, the tree toml's
//! serde deserializer reads) here. This module knows TOML types and lines; what the fields mean
//! lives in `schema`.

use super::values::shown;
use super::{ConfigProblem, ProblemKind};
use std::ops::{Range, RangeInclusive};
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

/// Past this many, further problems are counted, not listed: a wrong file (a binary, a log)
/// would otherwise print thousands of lines.
const MAX_PROBLEMS: usize = 200;

/// Collects problems and turns byte offsets into 1-based lines.
pub struct Report {
    line_starts: Vec<usize>,
    problems: Vec<ConfigProblem>,
    /// Things that are allowed but probably not meant; they do not fail validation.
    warnings: Vec<ConfigProblem>,
    dropped: usize,
}

impl Report {
    pub fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Report { line_starts, problems: Vec::new(), warnings: Vec::new(), dropped: 0 }
    }

    pub fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset).max(1)
    }

    pub fn at(&mut self, kind: ProblemKind, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let line = self.line_of(span.start);
        self.push(kind, Some(line), field.into(), message.into());
    }

    pub fn at_line(
        &mut self,
        kind: ProblemKind,
        line: Option<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(kind, line, field.into(), message.into());
    }

    fn push(&mut self, kind: ProblemKind, line: Option<usize>, field: String, message: String) {
        if self.problems.len() >= MAX_PROBLEMS {
            self.dropped += 1;
        } else {
            self.problems.push(ConfigProblem { kind, line, field, message });
        }
    }

    /// A warning at `span`: the config stays valid.
    pub fn warn_at(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let line = self.line_of(span.start);
        if self.warnings.len() < MAX_PROBLEMS {
            self.warnings.push(ConfigProblem {
                kind: ProblemKind::Warning,
                line: Some(line),
                field: field.into(),
                message: message.into(),
            });
        }
    }

    /// The warnings in file order.
    pub fn take_warnings(&mut self) -> Vec<ConfigProblem> {
        let mut warnings = std::mem::take(&mut self.warnings);
        warnings.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        warnings
    }

    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems in file order (those without a line last).
    pub fn finish(mut self) -> Vec<ConfigProblem> {
        self.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        if self.dropped > 0 {
            self.problems.push(ConfigProblem {
                kind: ProblemKind::TooMany,
                line: None,
                field: "file".into(),
                message: format!("{} more problems not listed; fix the ones above first", self.dropped),
            });
        }
        self.problems
    }
}

/// Parses the text; a syntax error becomes a problem with the line and toml's description.
/// Returns `None` when the document has syntax errors: validating a tree the parser had to
/// guess at would add problems that are not there.
pub fn parse<'i>(text: &'i str, report: &mut Report) -> Option<DeTable<'i>> {
    let (table, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        return Some(table.into_inner());
    }
    // After one error toml's recovery often trips over the same line again (an unclosed array
    // swallows the next lines): one problem per line keeps the first, most telling one.
    let mut errors: Vec<(Option<usize>, &toml::de::Error)> =
        errors.iter().map(|e| (e.span().map(|s| s.start), e)).collect();
    errors.sort_by_key(|(start, _)| start.unwrap_or(usize::MAX));
    let mut seen_lines = std::collections::HashSet::new();
    for (start, error) in errors {
        // `message()` is toml's description only; its Display would quote the source line,
        // which may hold a key.
        let message = format!("TOML syntax: {}", error.message());
        match start {
            Some(start) => {
                if seen_lines.insert(report.line_of(start)) {
                    report.at(ProblemKind::Syntax, start..start, "file", message);
                }
            }
            None => report.at_line(ProblemKind::Syntax, None, "file", message),
        }
    }
    None
}

/// One table of the document (a section, or one `[[peer]]`), read field by field. Keys that no
/// read asked for are reported as unknown by `finish`.
pub struct Table<'a, 'i> {
    table: &'a DeTable<'i>,
    /// Dotted path of this table, e.g. `interface` or `peer[1]`.
    path: String,
    /// How the section is written, e.g. `[interface]` or `[[peer]]`, for messages.
    header: String,
    line: Option<usize>,
    known: &'static [&'static str],
}

impl<'a, 'i> Table<'a, 'i> {
    /// The integer field `key` within `range` (see [`integer`]); `None` when absent or wrong
    /// (the problem is reported).
    pub fn integer(&self, report: &mut Report, key: &str, range: RangeInclusive<i128>, expected: &str) -> Option<i128> {
        self.get(key).and_then(|v| integer(report, &self.field(key), v, range, expected))
    }

    pub fn new(
        table: &'a DeTable<'i>,
        path: impl Into<String>,
        header: impl Into<String>,
        line: Option<usize>,
        known: &'static [&'static str],
    ) -> Self {
        Table { table, path: path.into(), header: header.into(), line, known }
    }

    /// The line of the table's header, where a missing field is reported.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    pub fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        debug_assert!(self.known.contains(&key), "{key} missing from the known list");
        self.table.get(key)
    }

    pub fn missing(&self, report: &mut Report, key: &str, expected: &str) {
        report.at_line(ProblemKind::Missing, self.line, self.field(key), format!("missing; expected {expected}"));
    }

    /// Reports every key this table does not know, naming the ones it does.
    pub fn finish(&self, report: &mut Report) {
        self.finish_with_hint(report, |_| None)
    }

    /// Like `finish`; `hint` may add a suggestion for an unknown key (e.g. which section it
    /// belongs in).
    pub fn finish_with_hint(&self, report: &mut Report, hint: impl Fn(&str) -> Option<String>) {
        for (key, value) in self.table.iter() {
            let name: &str = key.get_ref();
            if self.known.contains(&name) {
                continue;
            }
            let mut message = if self.path.is_empty() {
                let known: Vec<String> = self
                    .known
                    .iter()
                    .map(|k| if *k == "peer" { "[[peer]]".to_string() } else { format!("[{k}]") })
                    .collect();
                let what = if value.get_ref().is_table() || value.get_ref().is_array() {
                    format!("unknown section [{name}]")
                } else {
                    format!("unknown top-level key {}", shown(name))
                };
                format!("{what}; known sections: {}", known.join(", "))
            } else {
                format!("unknown field {} in {}; known fields: {}", shown(name), self.header, self.known.join(", "))
            };
            if let Some(h) = hint(name).or_else(|| suggestion(name, self.known).map(str::to_string)) {
                message.push_str(&format!(" (did you mean {h}?)"));
            }
            report.at(ProblemKind::UnknownField, key.span(), self.field(name), message);
        }
    }
}

/// A known name that `unknown` is probably meant to be: the same letters once case, `_` and `-`
/// are ignored (`PrivateKey` → `private_key`, `AllowedIPs` → `allowed_ips`).
pub fn suggestion(unknown: &str, known: &[&'static str]) -> Option<&'static str> {
    let wanted = fold(unknown);
    known.iter().copied().find(|k| fold(k) == wanted)
}

fn fold(name: &str) -> String {
    name.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

fn kind(value: &DeValue) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn wrong_type(report: &mut Report, field: &str, value: &Spanned<DeValue>, expected: &str) {
    report.at(
        ProblemKind::WrongType,
        value.span(),
        field,
        format!("found {}, expected {expected}", kind(value.get_ref())),
    );
}

pub fn string<'a>(report: &mut Report, field: &str, value: &'a Spanned<DeValue>, expected: &str) -> Option<&'a str> {
    match value.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        _ => {
            wrong_type(report, field, value, expected);
            None
        }
    }
}

pub fn boolean(report: &mut Report, field: &str, value: &Spanned<DeValue>) -> Option<bool> {
    match value.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        _ => {
            wrong_type(report, field, value, "true or false");
            None
        }
    }
}

/// An integer within `range`; `expected` describes it with its range (e.g. "a UDP port
/// 1–65535").
pub fn integer(
    report: &mut Report,
    field: &str,
    value: &Spanned<DeValue>,
    range: RangeInclusive<i128>,
    expected: &str,
) -> Option<i128> {
    let DeValue::Integer(int) = value.get_ref() else {
        wrong_type(report, field, value, &format!("an integer: {expected}"));
        return None;
    };
    let digits: String = int.as_str().chars().filter(|c| *c != '_').collect();
    match i128::from_str_radix(&digits, int.radix()) {
        Ok(n) if range.contains(&n) => Some(n),
        Ok(n) => {
            report.at(ProblemKind::OutOfRange, value.span(), field, format!("found {n}, expected {expected}"));
            None
        }
        Err(_) => {
            report.at(
                ProblemKind::OutOfRange,
                value.span(),
                field,
                format!("found an integer out of range, expected {expected}"),
            );
            None
        }
    }
}

pub fn array<'a, 'i>(
    report: &mut Report,
    field: &str,
    value: &'a Spanned<DeValue<'i>>,
    expected: &str,
) -> Option<&'a DeArray<'i>> {
    match value.get_ref() {
        DeValue::Array(a) => Some(a),
        _ => {
            wrong_type(report, field, value, expected);
            None
        }
    }
}

/// A list of strings, each parsed by `parse`; problems name the element (`field[2]`). Returns
/// the parsed elements with their index and span.
pub fn string_list<T>(
    report: &mut Report,
    field: &str,
    value: &Spanned<DeValue>,
    expected: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Vec<Item<T>> {
    let Some(items) = array(report, field, value, &format!("a list of {expected}")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_field = format!("{field}[{index}]");
        let Some(text) = string(report, &item_field, item, &format!("a string: {expected}")) else {
            continue;
        };
        match parse(text) {
            Ok(parsed) => out.push(Item { value: parsed, index, span: item.span() }),
            Err(message) => report.at(ProblemKind::Invalid, item.span(), item_field, message),
        }
    }
    out
}

/// One parsed element of a list, with where it was written.
#[derive(Debug, Clone)]
pub struct Item<T> {
    pub value: T,
    pub index: usize,
    pub span: Range<usize>,
}

/// The tables of an array of tables (`[[peer]]`), with their spans.
pub fn tables<'a, 'i>(
    report: &mut Report,
    field: &str,
    value: &'a Spanned<DeValue<'i>>,
    header: &str,
) -> Vec<(&'a DeTable<'i>, Range<usize>)> {
    let expected = format!("{header} tables (an array of tables)");
    let Some(items) = array(report, field, value, &expected) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match item.get_ref() {
            DeValue::Table(t) => out.push((t, item.span())),
            _ => wrong_type(report, &format!("{field}[{index}]"), item, "a table"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        let report = Report::new("a\nbc\n\nd");
        assert_eq!(report.line_of(0), 1);
        assert_eq!(report.line_of(2), 2);
        assert_eq!(report.line_of(5), 3);
        assert_eq!(report.line_of(6), 4);
    }

    #[test]
    fn suggestions_fold_case_and_underscores() {
        assert_eq!(suggestion("PrivateKey", &["private_key", "address"]), Some("private_key"));
        assert_eq!(suggestion("AllowedIPs", &["allowed_ips"]), Some("allowed_ips"));
        assert_eq!(suggestion("colour", &["color"]), None);
    }

    #[test]
    fn problems_beyond_the_cap_are_counted() {
        let mut report = Report::new("");
        for i in 0..(MAX_PROBLEMS + 5) {
            report.at_line(ProblemKind::Invalid, Some(i + 1), "x", "bad");
        }
        let problems = report.finish();
        assert_eq!(problems.len(), MAX_PROBLEMS + 1);
        assert!(problems.last().unwrap().message.starts_with("5 more problems"));
    }
}
