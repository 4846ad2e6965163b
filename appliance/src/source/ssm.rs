//! The config's parts in SSM Parameter Store (placeholder until the SSM reader lands).

use super::{LoadError, Loaded};
use crate::config::Config;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("SSM: {0}")]
    Unsupported(String),
}

/// Whether `config` names SSM parameters.
pub fn needed(config: &Config) -> bool {
    config.source.ssm_path.is_some() || config.interface.private_key().is_none()
}

pub struct SsmSource {
    refresh: Duration,
}

impl SsmSource {
    pub fn new(config: &Config) -> Result<SsmSource, FetchError> {
        let _ = config;
        Err(FetchError::Unsupported("reading SSM parameters is not built yet".into()))
    }

    pub fn serves(&self, _config: &Config) -> bool {
        false
    }

    pub fn refresh_interval(&self) -> Duration {
        self.refresh
    }

    pub fn load(&mut self, _origin: &str, _text: &str, _base_dir: Option<&Path>) -> Result<Loaded, LoadError> {
        Err(LoadError::Fetch(FetchError::Unsupported("not built yet".into())))
    }
}
