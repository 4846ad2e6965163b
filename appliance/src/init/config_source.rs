//! Where the service's config comes from at boot, and when to give up waiting for it (never).
//!
//! 1. EC2 user-data over IMDSv2 (`super::imds`). When present, it *is* the config: if it is
//!    invalid, that is reported and fetched again — it never silently falls back.
//! 2. The file baked into the image (`/etc/bastion/bastion.toml`) when the instance has no
//!    user-data (404), or when IMDS has not answered at all after three attempts (IMDS disabled
//!    for the instance, or no IMDS as under a plain QEMU).
//! 3. Otherwise: a clear reason on the console and in health (503), and another attempt after a
//!    backoff (1 s doubling to 30 s), for as long as the instance runs.
//!
//! An accepted user-data config is written to `<run dir>/bastion.toml` (mode 0600: it holds the
//! private key) for the service to read; a baked file is given to the service where it is, so a
//! relative `private_key_file` in it still resolves.

use super::backoff::Backoff;
use super::imds::{self, Endpoint, UserDataError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `[health] listen` points when the config does not say (or cannot be read).
pub const DEFAULT_HEALTH_LISTEN: &str = "0.0.0.0:8080";
/// IMDS attempts that must fail to connect before a baked config is used instead.
const UNREACHABLE_ATTEMPTS_BEFORE_BAKED: u32 = 3;

pub struct Sources {
    pub imds: Endpoint,
    /// The config baked into the image (used only when it exists).
    pub baked: PathBuf,
    /// Where an accepted user-data config is written (`/run/bastion`).
    pub run_dir: PathBuf,
}

/// A config that passed validation, ready for `bastion run --config path`.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub path: PathBuf,
    /// `user-data` or the baked file's path.
    pub origin: String,
    pub health_listen: SocketAddr,
    pub drain_seconds: u64,
}

/// Why there is no config yet.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// For the console: what, where, which field (one line per problem).
    pub reason: String,
    /// For the health body, which the whole VPC can read: the reason when it holds nothing the
    /// operator wrote, else only that the config was rejected (see the console for why).
    pub health: String,
    /// `[health] listen` when the rejected text still says it, so 503 is served where the load
    /// balancer looks.
    pub health_listen: Option<SocketAddr>,
}

/// What to do with one attempt's answers.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    Validate { text: String, origin: String },
    UseBaked { note: Option<String> },
    Retry(String),
}

fn choose(fetched: Result<String, UserDataError>, baked_exists: bool, baked: &Path, unreachable_so_far: u32) -> Choice {
    match fetched {
        Ok(text) => Choice::Validate { text, origin: "user-data".into() },
        Err(e @ UserDataError::NoUserData { .. }) => {
            if baked_exists {
                Choice::UseBaked { note: Some(format!("{e}; using {}", baked.display())) }
            } else {
                Choice::Retry(format!("IMDS: {e}, and the image has no {}", baked.display()))
            }
        }
        Err(e @ UserDataError::Unreachable { .. }) => {
            if baked_exists && unreachable_so_far >= UNREACHABLE_ATTEMPTS_BEFORE_BAKED {
                Choice::UseBaked {
                    note: Some(format!("IMDS unreachable {unreachable_so_far} times ({e}); using {}", baked.display())),
                }
            } else {
                Choice::Retry(format!("IMDS: {e}"))
            }
        }
        Err(e @ UserDataError::BadAnswer { .. }) => Choice::Retry(format!("IMDS: {e}")),
    }
}

/// Fetches and validates until a config is accepted. `rejected` is called after each failed
/// attempt (the caller shows it in health); returns the accepted config.
pub fn wait_for_config(sources: &Sources, mut rejected: impl FnMut(&Rejected)) -> Accepted {
    let mut backoff = Backoff::config_retry();
    let mut unreachable = 0;
    let mut attempt = 0u32;
    crate::log!("config: fetching user-data from {} (IMDSv2)", sources.imds.url());
    loop {
        attempt += 1;
        let fetched = imds::fetch_user_data(&sources.imds);
        if matches!(fetched, Err(UserDataError::Unreachable { .. })) {
            unreachable += 1;
        }
        let choice = choose(fetched, sources.baked.exists(), &sources.baked, unreachable);
        let outcome = match choice {
            Choice::Validate { text, origin } => validate_user_data(&text, &origin, &sources.run_dir),
            Choice::UseBaked { note } => {
                if let Some(note) = note {
                    crate::log!("config: {note}");
                }
                validate_baked(&sources.baked)
            }
            Choice::Retry(reason) => Err(Rejected::plain(format!("config: {reason}"), None)),
        };
        match outcome {
            Ok(accepted) => {
                crate::log!(
                    "config: accepted {} ({} bytes at {})",
                    accepted.origin,
                    file_len(&accepted.path),
                    accepted.path.display()
                );
                return accepted;
            }
            Err(r) => {
                let delay = backoff.after_failure(Duration::ZERO);
                // One console line per problem; the health body keeps the "config: " prefix.
                let text = r.reason.strip_prefix("config: ").unwrap_or(&r.reason);
                for line in text.lines() {
                    crate::log!("config: ERROR {line}");
                }
                crate::log!("config: attempt {attempt} failed; trying again in {} s", delay.as_secs());
                rejected(&r);
                std::thread::sleep(delay);
            }
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

impl Rejected {
    /// A reason that may be shown in health as it is.
    fn plain(reason: String, health_listen: Option<SocketAddr>) -> Rejected {
        Rejected { health: reason.clone(), reason, health_listen }
    }

    /// The config text failed validation: the problems go to the console only.
    fn invalid(error: &crate::config::ConfigError, text: &str) -> Rejected {
        let n = error.problems.len();
        Rejected {
            reason: format!("config: {error}"),
            health: format!(
                "config: {} rejected ({n} problem{}), see the serial console",
                error.origin,
                if n == 1 { "" } else { "s" }
            ),
            health_listen: health_listen_of(text),
        }
    }
}

fn validate_user_data(text: &str, origin: &str, run_dir: &Path) -> Result<Accepted, Rejected> {
    let config = crate::config::parse(text, origin, None).map_err(|e| Rejected::invalid(&e, text))?;
    let path = run_dir.join("bastion.toml");
    write_private(&path, text).map_err(|e| {
        Rejected::plain(format!("config: cannot write {}: {e}", path.display()), Some(config.health.listen))
    })?;
    Ok(Accepted {
        path,
        origin: origin.to_string(),
        health_listen: config.health.listen,
        drain_seconds: config.health.drain_seconds,
    })
}

fn validate_baked(path: &Path) -> Result<Accepted, Rejected> {
    let text = std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| Rejected::plain(format!("config: cannot read {}: {e}", path.display()), None))?;
    let origin = path.display().to_string();
    let config = crate::config::parse(&text, &origin, path.parent()).map_err(|e| Rejected::invalid(&e, &text))?;
    Ok(Accepted {
        path: path.to_path_buf(),
        origin,
        health_listen: config.health.listen,
        drain_seconds: config.health.drain_seconds,
    })
}

/// `[health] listen` of config text that may be invalid elsewhere.
pub fn health_listen_of(text: &str) -> Option<SocketAddr> {
    let table: toml::Table = toml::from_str(text).ok()?;
    table.get("health")?.get("listen")?.as_str()?.parse().ok()
}

/// Writes `text` to `path` readable by root only, replacing it atomically.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let tmp = path.with_extension("toml.new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> Result<String, UserDataError> {
        Err(UserDataError::Unreachable("PUT http://169.254.169.254/latest/api/token: timed out".into()))
    }

    #[test]
    fn user_data_wins_over_the_baked_file() {
        let c = choose(Ok("x".into()), true, Path::new("/etc/bastion/bastion.toml"), 0);
        assert_eq!(c, Choice::Validate { text: "x".into(), origin: "user-data".into() });
    }

    #[test]
    fn no_user_data_uses_the_baked_file_or_says_both_are_missing() {
        let baked = Path::new("/etc/bastion/bastion.toml");
        let none = || Err(UserDataError::NoUserData { url: "http://169.254.169.254/latest/user-data".into() });
        assert!(matches!(choose(none(), true, baked, 0), Choice::UseBaked { .. }));
        match choose(none(), false, baked, 0) {
            Choice::Retry(reason) => {
                assert!(reason.contains("no user-data"), "{reason}");
                assert!(reason.contains("/etc/bastion/bastion.toml"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreachable_imds_falls_back_only_after_three_attempts() {
        let baked = Path::new("/b.toml");
        assert!(matches!(choose(unreachable(), true, baked, 1), Choice::Retry(_)));
        assert!(matches!(choose(unreachable(), true, baked, 2), Choice::Retry(_)));
        assert!(matches!(choose(unreachable(), true, baked, 3), Choice::UseBaked { .. }));
        assert!(matches!(choose(unreachable(), false, baked, 9), Choice::Retry(_)));
    }

    #[test]
    fn a_bad_answer_never_falls_back() {
        let bad = Err(UserDataError::BadAnswer("GET u: response body larger than 65536 bytes".into()));
        match choose(bad, true, Path::new("/b.toml"), 5) {
            Choice::Retry(reason) => assert!(reason.contains("larger than 65536"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn health_listen_is_read_from_otherwise_invalid_text() {
        let text = "[interface]\nprivate_key = 5\n[health]\nlisten = \"127.0.0.1:9090\"\n";
        assert_eq!(health_listen_of(text), Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(health_listen_of("[[[ not toml"), None);
        assert_eq!(health_listen_of("[health]\nlisten = 8080\n"), None);
    }

    #[test]
    fn a_rejected_config_is_explained_on_the_console_only() {
        let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let text = format!("[interface]\nprivate_key = \"{key}\"\naddress = [\"10.100.0.1/24\"]\n{key} = 1\n");
        let dir = std::env::temp_dir().join(format!("bastion-rejected-{}", std::process::id()));
        let r = validate_user_data(&text, "user-data", &dir).unwrap_err();
        assert!(r.reason.contains("user-data:4:"), "{}", r.reason);
        assert_eq!(r.health, "config: user-data rejected (1 problem), see the serial console");
        assert!(!r.reason.contains(&key[..16]) && !r.health.contains(&key[..16]), "{}", r.reason);
        assert!(!dir.exists(), "nothing written for a rejected config");
    }

    #[test]
    fn accepted_config_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("bastion-config-source-{}", std::process::id()));
        let path = dir.join("run/bastion.toml");
        write_private(&path, "a = 1\n").unwrap();
        write_private(&path, "a = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 2\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
