//! The operator's TOML as toml_edit holds it: a new `[[peer]]` goes right after the last one
//! (or at the end), a removed one takes its own comments with it, and every other byte stays as
//! written. Each edit is checked to be exactly one insertion or one deletion of the original
//! text; an insertion that toml_edit would have spread wider is appended to the end instead.

use crate::config::{ConfigError, ConfigProblem, ProblemKind};
use crate::keys::PublicKey;
use ip_network::IpNetwork;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, Value};

/// The new peer's table, as written to the file and to the fragment.
pub struct NewPeer<'a> {
    pub name: &'a str,
    pub public_key: PublicKey,
    pub allowed_ips: &'a [IpNetwork],
    pub reach: &'a [IpNetwork],
}

/// A parsed config document and where its `[[peer]]` tables start.
pub struct Peers<'t> {
    original: &'t str,
    doc: DocumentMut,
    /// The 1-based line of each `[[peer]]` (its `name`, else its header), in file order.
    lines: Vec<Option<usize>>,
}

impl<'t> Peers<'t> {
    /// Parses `text`, which `config::parse` has accepted (toml reads TOML 1.1, toml_edit 1.0: a
    /// file only the former reads is refused here, with toml_edit's reason).
    pub fn parse(text: &'t str, origin: &str) -> Result<Peers<'t>, ConfigError> {
        let parsed = toml_edit::Document::parse(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ConfigError {
                origin: origin.into(),
                parts: Vec::new(),
                problems: vec![ConfigProblem {
                    kind: ProblemKind::Syntax,
                    line,
                    field: "file".into(),
                    message: format!(
                        "cannot be edited (TOML 1.0 syntax expected): {}; edit the file by hand",
                        e.message()
                    ),
                }],
            }
        })?;
        let lines = match parsed.as_table().get("peer") {
            Some(Item::ArrayOfTables(aot)) => aot
                .iter()
                .map(|t| t.get("name").and_then(Item::span).or_else(|| t.span()).map(|s| line_of(text, s.start)))
                .collect(),
            Some(item) => {
                let line = item.span().map(|s| line_of(text, s.start));
                return Err(ConfigError {
                    origin: origin.into(),
                    parts: Vec::new(),
                    problems: vec![ConfigProblem {
                        kind: ProblemKind::WrongFormat,
                        line,
                        field: "peer".into(),
                        message: "the peers are written as an inline array (peer = [...]); expected \
                                  [[peer]] tables, which this command edits"
                            .into(),
                    }],
                });
            }
            None => Vec::new(),
        };
        Ok(Peers { original: text, doc: parsed.into_mut(), lines })
    }

    pub fn line_of_peer(&self, index: usize) -> Option<usize> {
        self.lines.get(index).copied().flatten()
    }

    /// The text with `peer` added after the last `[[peer]]`.
    pub fn with_peer(&self, peer: &NewPeer) -> String {
        let mut doc = self.doc.clone();
        let root = doc.as_table_mut();
        match root.get_mut("peer") {
            Some(Item::ArrayOfTables(aot)) => aot.push(table(peer)),
            _ => {
                let mut aot = ArrayOfTables::new();
                aot.push(table(peer));
                root.insert("peer", Item::ArrayOfTables(aot));
            }
        }
        let edited = doc.to_string();
        if is_one_insertion(self.original, &edited) {
            return edited;
        }
        let mut appended = self.original.to_string();
        if !appended.is_empty() && !appended.ends_with('\n') {
            appended.push('\n');
        }
        appended.push('\n');
        appended.push_str(&fragment(peer));
        appended
    }

    /// The text without the `index`th `[[peer]]` (and the comments just above it).
    pub fn without_peer(&self, index: usize) -> Result<String, String> {
        let mut doc = self.doc.clone();
        let root = doc.as_table_mut();
        let Some(Item::ArrayOfTables(aot)) = root.get_mut("peer") else {
            return Err("expected [[peer]] tables".into());
        };
        if index >= aot.len() {
            return Err("the peer is not a [[peer]] table of this file".into());
        }
        aot.remove(index);
        if aot.is_empty() {
            root.remove("peer");
        }
        Ok(doc.to_string())
    }
}

/// The new `[[peer]]` alone: a TOML fragment such as `[source] ssm_path` reads.
pub fn fragment(peer: &NewPeer) -> String {
    let mut doc = DocumentMut::new();
    let mut aot = ArrayOfTables::new();
    aot.push(table(peer));
    doc.as_table_mut().insert("peer", Item::ArrayOfTables(aot));
    doc.to_string()
}

/// The fragment is TOML and holds exactly one `[[peer]]` with nothing else.
pub fn check_fragment(fragment: &str, origin: &str) -> Result<(), ConfigError> {
    let ok = fragment
        .parse::<toml::Table>()
        .ok()
        .is_some_and(|t| t.len() == 1 && t.get("peer").and_then(|p| p.as_array()).is_some_and(|a| a.len() == 1));
    if ok {
        return Ok(());
    }
    Err(ConfigError {
        origin: origin.into(),
        parts: Vec::new(),
        problems: vec![ConfigProblem {
            kind: ProblemKind::Syntax,
            line: None,
            field: "peer".into(),
            message: "does not read back as one [[peer]] table".into(),
        }],
    })
}

fn table(peer: &NewPeer) -> Table {
    let list = |nets: &[IpNetwork]| {
        let mut array = Array::new();
        for net in nets {
            array.push(net.to_string());
        }
        Item::Value(Value::Array(array))
    };
    let mut t = Table::new();
    t.insert("name", toml_edit::value(peer.name));
    t.insert("public_key", toml_edit::value(peer.public_key.to_base64()));
    t.insert("allowed_ips", list(peer.allowed_ips));
    if !peer.reach.is_empty() {
        t.insert("reach", list(peer.reach));
    }
    t
}

/// Whether `edited` is `original` with one run of text inserted somewhere.
fn is_one_insertion(original: &str, edited: &str) -> bool {
    let (a, b) = (original.as_bytes(), edited.as_bytes());
    if b.len() < a.len() {
        return false;
    }
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..].iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count();
    prefix + suffix == a.len()
}

/// Whether `edited` is `original` with one run of text taken out.
#[cfg(test)]
pub fn is_one_deletion(original: &str, edited: &str) -> bool {
    is_one_insertion(edited, original)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}
