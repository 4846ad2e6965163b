//! Where the running config comes from, and reading it again: a file (`bastion run --config
//! FILE`, re-read on SIGHUP or `bastion reload`), or a file that names SSM Parameter Store
//! parameters (`[source] ssm_path`, `[interface] private_key_ssm`: see `ssm`), read again every
//! `refresh_seconds`.
//!
//! Each load gives a whole, validated [`Config`] and a version: the first 12 hex digits of the
//! SHA-256 of the text it was built from, so every bastion that reads the same parameters
//! shows the same version, and a reload that changes nothing says so.

pub mod ssm;

use crate::config::{self, Config, ConfigError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config as loaded: what it says, its version, and where it came from (for logs and status).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub version: String,
    /// `/etc/bastion/bastion.toml`, or `user-data + ssm:/bastion/prod (3 parameters)`.
    pub origin: String,
    /// One line per SSM fragment left out (it names the parameter and why): the config runs
    /// without it.
    pub refused: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The text is there but is not a valid config (every problem listed).
    #[error("{0}")]
    Invalid(ConfigError),
    /// The text could not be fetched (SSM unreachable, access denied, a parameter missing).
    #[error("{0}")]
    Fetch(#[from] ssm::FetchError),
}

impl LoadError {
    /// One line for the status report and the log's first line.
    pub fn summary(&self) -> String {
        match self {
            LoadError::Invalid(e) => {
                let n = e.problems.len();
                format!("{} rejected ({n} problem{})", e.origin, if n == 1 { "" } else { "s" })
            }
            LoadError::Fetch(e) => e.to_string(),
        }
    }
}

/// The config source of one `bastion run`.
pub struct ConfigSource {
    path: PathBuf,
    /// The client that reads SSM, once the file names SSM parameters.
    ssm: Option<ssm::SsmSource>,
    /// `[health] listen` of the file as last read (for the 503 while SSM cannot be read yet).
    health_listen: Option<std::net::SocketAddr>,
}

impl ConfigSource {
    pub fn file(path: &Path) -> ConfigSource {
        ConfigSource { path: path.to_path_buf(), ssm: None, health_listen: None }
    }

    /// The health port of the file as last read, valid or not yet complete.
    pub fn health_listen(&self) -> Option<std::net::SocketAddr> {
        self.health_listen
    }

    /// How often to read the source again by itself (SSM only; a file waits for SIGHUP).
    pub fn refresh_interval(&self) -> Option<Duration> {
        self.ssm.as_ref().map(|s| s.refresh_interval())
    }

    /// Reads the file (and, when it names them, the SSM parameters) and validates the result.
    pub fn load(&mut self) -> Result<Loaded, LoadError> {
        let origin = self.path.display().to_string();
        let text = config::read_config_file(&self.path).map_err(LoadError::Invalid)?;
        let base = config::parse(&text, &origin, self.path.parent()).map_err(LoadError::Invalid)?;
        self.health_listen = Some(base.health.listen);
        if !ssm::needed(&base) {
            self.ssm = None;
            return Ok(Loaded { version: version_of(&[text.as_bytes()]), origin, config: base, refused: Vec::new() });
        }
        let ssm = match &mut self.ssm {
            Some(existing) if existing.serves(&base) => existing,
            slot => slot.insert(ssm::SsmSource::new(&base)?),
        };
        ssm.load(&origin, &text, self.path.parent())
    }
}

/// The version of a config built from these texts.
pub fn version_of(texts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for text in texts {
        ctx.update(&(text.len() as u64).to_le_bytes());
        ctx.update(text);
    }
    ctx.finish().as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_change_with_the_text_and_not_with_the_split() {
        let a = version_of(&[b"abc"]);
        assert_eq!(a.len(), 12);
        assert_eq!(a, version_of(&[b"abc"]));
        assert_ne!(a, version_of(&[b"abd"]));
        assert_ne!(version_of(&[b"ab", b"c"]), version_of(&[b"a", b"bc"]), "parts are delimited");
    }
}
