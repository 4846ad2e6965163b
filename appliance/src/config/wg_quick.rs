//! Converts wg-quick files (`[Interface]`/`[Peer]`) into our TOML schema, losslessly, and reports
//! what our own sections replace (iptables lines in PostUp/PostDown become `[nat]`).

use std::path::Path;

/// The result of a conversion: the TOML text, and notes for the operator about lines that our
/// schema replaces rather than copies (e.g. iptables PostUp lines).
pub struct Conversion {
    pub toml: String,
    pub notes: Vec<String>,
}

pub fn convert_file(path: &Path) -> Result<Conversion, super::ConfigError> {
    let _ = path;
    todo!("wg-quick conversion")
}
