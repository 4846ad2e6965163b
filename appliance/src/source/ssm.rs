//! The config's parts in SSM Parameter Store, so that user-data says only where they are:
//!
//! - `[interface] private_key_ssm = "NAME"`: the key, a SecureString, read once with
//!   `GetParameter` (rotating it is a fleet event: an instance refresh).
//! - `[source] ssm_path = "/bastion/prod/peers"`: every parameter under the path (recursively,
//!   decrypted, in name order) is a TOML fragment appended to the user-data text — one
//!   `[[peer]]` per parameter, or many. Read again every `refresh_seconds`: 1,000 peers in 50
//!   standard parameters of 20 peers are 5 calls per refresh (10 per page), so 4 bastions at the
//!   default 60 s make 0.33 calls/s against SSM's default 40/s.
//!
//! A parameter under the path holds `[[peer]]` tables and nothing else: what the file lacks
//! (`[nat] reach`, `[health] drain_seconds`, `[selftest] probes`) is the file's to say, not the
//! peer store's. [`accept_fragments`] takes each fragment in name order and refuses, naming the
//! parameter, one that holds anything else, a bare key, invalid TOML, or peers that do not fit
//! with the file and the fragments before it; the rest is the config. So one bad fragment costs
//! its own peers only: it never stops a start, nor a reload that adds or removes others.
//!
//! [`assemble`] puts the texts together and knows where each begins, so a problem is shown as
//! `ssm:/bastion/prod/peers/alice (version 3):2: peer[1].allowed_ips: ...`; it does no I/O.
//! Values are never logged: errors name the parameter and its version only.

use super::{version_of, LoadError, Loaded};
use crate::config::{self, Config, ConfigError, ConfigProblem, InterfaceKey, ProblemKind, TextPart};
use crate::keys::PrivateKey;
use bastion_aws::ssm::Parameter;
use bastion_aws::{AwsError, Client, Environment};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("SSM: no region: set [aws] region or AWS_REGION (the instance metadata service: {0})")]
    NoRegion(String),
    #[error("SSM parameter {parameter}: {source}")]
    Aws { parameter: String, source: Box<AwsError> },
    /// The key parameter holds no WireGuard key, or not as a SecureString (never its value).
    #[error("SSM parameter {parameter} (version {version}): {why}")]
    BadKey { parameter: String, version: u64, why: String },
}

/// Whether `config` names SSM parameters.
pub fn needed(config: &Config) -> bool {
    config.source.ssm_path.is_some() || matches!(config.interface.key, InterfaceKey::Ssm { .. })
}

/// What of a config decides how SSM is read: a change of any of it means a new client.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    ssm_path: Option<String>,
    key_parameter: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
}

impl Settings {
    fn of(config: &Config) -> Settings {
        Settings {
            ssm_path: config.source.ssm_path.clone(),
            key_parameter: match &config.interface.key {
                InterfaceKey::Ssm { parameter } => Some(parameter.clone()),
                InterfaceKey::Given(_) => None,
            },
            region: config.aws.region.clone(),
            endpoint_url: config.aws.endpoint_url.clone(),
        }
    }
}

/// The key as read: the parameter's name and version (part of the config's version), the key.
struct FetchedKey {
    parameter: String,
    version: u64,
    key: PrivateKey,
}

pub struct SsmSource {
    client: Client,
    settings: Settings,
    refresh: Duration,
    key: Option<FetchedKey>,
}

impl SsmSource {
    /// A client for the config's SSM settings: the region from `[aws] region`, the environment,
    /// then the instance metadata service; credentials through the standard chain (on EC2: the
    /// instance role, from IMDSv2, refreshed before they expire).
    pub fn new(config: &Config) -> Result<SsmSource, FetchError> {
        let settings = Settings::of(config);
        let env = Environment::from_process().with_endpoint(settings.endpoint_url.as_deref(), &["ssm"]);
        let region = bastion_aws::imds::resolve_region(settings.region.as_deref(), &env)
            .map_err(|e| FetchError::NoRegion(e.to_string()))?;
        Ok(SsmSource {
            client: Client::new(env, region),
            settings,
            refresh: Duration::from_secs(config.source.refresh_seconds),
            key: None,
        })
    }

    /// Whether this client reads what `config` names.
    pub fn serves(&self, config: &Config) -> bool {
        self.settings == Settings::of(config)
    }

    pub fn refresh_interval(&self) -> Duration {
        self.refresh
    }

    /// Reads the parameters, puts the config together with `text` (the file's, named `origin`)
    /// and validates it.
    pub fn load(&mut self, origin: &str, text: &str, base_dir: Option<&Path>) -> Result<Loaded, LoadError> {
        let key = self.key()?.map(|k| (format!("{}#{}", k.parameter, k.version), k.key.clone()));
        let fragments = match &self.settings.ssm_path {
            None => Vec::new(),
            Some(path) => {
                let (all, _calls) = self
                    .client
                    .get_parameters_by_path(path)
                    .map_err(|source| FetchError::Aws { parameter: path.clone(), source: Box::new(source) })?;
                // The key may live under the same path: it is no fragment.
                all.into_iter().filter(|p| Some(&p.name) != self.settings.key_parameter.as_ref()).collect()
            }
        };
        // The file alone must be valid: its problems are the file's (and stop a start).
        config::parse(text, origin, base_dir).map_err(LoadError::Invalid)?;
        let Accepted { fragments, config: mut loaded_config, refused } =
            accept_fragments(text, origin, base_dir, fragments).map_err(LoadError::Invalid)?;
        let mut versioned: Vec<Vec<u8>> = vec![text.as_bytes().to_vec()];
        if let Some((name_and_version, key)) = key {
            versioned.push(name_and_version.into_bytes());
            loaded_config.interface.key = InterfaceKey::Given(key);
        }
        for p in &fragments {
            versioned.push(format!("{}#{}", p.name, p.version).into_bytes());
            versioned.push(p.value.as_bytes().to_vec());
        }
        let refs: Vec<&[u8]> = versioned.iter().map(|v| v.as_slice()).collect();
        let mut described = origin.to_string();
        if let Some(path) = &self.settings.ssm_path {
            described.push_str(&format!(" + ssm:{path} ({} parameters)", fragments.len()));
        }
        if let Some(key) = &self.key {
            described.push_str(&format!(" + key ssm:{} (version {})", key.parameter, key.version));
        }
        Ok(Loaded { config: loaded_config, version: version_of(&refs), origin: described, refused })
    }

    /// The key, read on first use.
    fn key(&mut self) -> Result<Option<&FetchedKey>, FetchError> {
        let Some(parameter) = self.settings.key_parameter.clone() else { return Ok(None) };
        if self.key.is_none() {
            let read = self
                .client
                .get_parameter(&parameter)
                .map_err(|source| FetchError::Aws { parameter: parameter.clone(), source: Box::new(source) })?;
            self.key = Some(key_of(&read)?);
        }
        Ok(self.key.as_ref())
    }
}

/// The WireGuard key in a parameter: a SecureString of one base64 key.
fn key_of(p: &Parameter) -> Result<FetchedKey, FetchError> {
    let bad = |why: String| FetchError::BadKey { parameter: p.name.clone(), version: p.version, why };
    if p.kind != "SecureString" {
        return Err(bad(format!(
            "is a {}; the private key must be a SecureString (aws ssm put-parameter --type SecureString)",
            p.kind
        )));
    }
    let key = PrivateKey::parse(p.value.trim()).map_err(|e| bad(e.to_string()))?;
    Ok(FetchedKey { parameter: p.name.clone(), version: p.version, key })
}

/// What [`accept_fragments`] kept.
pub struct Accepted {
    /// The fragments that make a valid config with the file, in order.
    pub fragments: Vec<Parameter>,
    /// That config, parsed.
    pub config: Config,
    /// One line per refused fragment (its problems, each naming the parameter).
    pub refused: Vec<String>,
}

/// Takes the fragments that make a valid config with `base`, in order, and refuses the others.
/// An error only when `base` alone is not valid. No I/O.
pub fn accept_fragments(
    base: &str,
    origin: &str,
    base_dir: Option<&Path>,
    fragments: Vec<Parameter>,
) -> Result<Accepted, ConfigError> {
    let fits = |accepted: &[Parameter]| {
        let assembled = assemble(base, origin, accepted);
        config::parse(&assembled.text, origin, base_dir)
            .and_then(|config| header_problems(&assembled, origin).map(|()| config))
            .map_err(|e| ConfigError { parts: assembled.parts.clone(), ..e })
    };
    let (shaped, mut refused): (Vec<Parameter>, Vec<String>) = {
        let mut shaped = Vec::new();
        let mut refused = Vec::new();
        for p in fragments {
            match shape_problem(&p.value) {
                None => shaped.push(p),
                Some(why) => refused.push(format!("{}: refused: {why}", part_name(&p))),
            }
        }
        (shaped, refused)
    };
    // The usual case: everything fits at once (one parse).
    if let Ok(config) = fits(&shaped) {
        return Ok(Accepted { fragments: shaped, config, refused });
    }
    let mut config = fits(&[])?;
    let mut accepted: Vec<Parameter> = Vec::new();
    for p in shaped {
        accepted.push(p);
        match fits(&accepted) {
            Ok(fitting) => config = fitting,
            Err(e) => {
                let p = accepted.pop().expect("just pushed");
                let problems: Vec<String> = e.to_string().lines().map(str::to_string).collect();
                refused.push(format!("{}: refused: {}", part_name(&p), problems.join("; ")));
            }
        }
    }
    Ok(Accepted { fragments: accepted, config, refused })
}

/// Why a fragment's text is not `[[peer]]` tables only (never quoting it).
fn shape_problem(value: &str) -> Option<String> {
    if crate::keys::PrivateKey::parse(value.trim()).is_ok() {
        return Some("holds a WireGuard key, not [[peer]] tables (keep the key outside ssm_path)".into());
    }
    let table = match value.parse::<toml::Table>() {
        Ok(table) => table,
        Err(e) => {
            let line = e.span().map(|span| value[..span.start.min(value.len())].lines().count().max(1));
            return Some(format!(
                "is not valid TOML{}; a parameter under ssm_path holds [[peer]] tables only",
                line.map(|l| format!(" (line {l})")).unwrap_or_default()
            ));
        }
    };
    let others: Vec<&str> = table
        .iter()
        .filter(|(key, value)| {
            !(key.as_str() == "peer" && value.as_array().is_some_and(|a| a.iter().all(|item| item.is_table())))
        })
        .map(|(key, _)| key.as_str())
        .collect();
    if others.is_empty() {
        return None;
    }
    let shown: Vec<String> = others.iter().map(|k| crate::config::values::shown(k)).collect();
    Some(format!("holds {}; a parameter under ssm_path holds [[peer]] tables only", shown.join(", ")))
}

/// The user-data text with every fragment after it, and where each begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    pub text: String,
    pub parts: Vec<TextPart>,
}

/// Appends each fragment on a line of its own after `base` (named `origin`).
pub fn assemble(base: &str, origin: &str, fragments: &[Parameter]) -> Assembled {
    let mut text = base.to_string();
    let mut parts = vec![TextPart { first_line: 1, origin: origin.to_string() }];
    for p in fragments {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        parts.push(TextPart { first_line: text.lines().count() + 1, origin: part_name(p) });
        text.push_str(&p.value);
    }
    Assembled { text, parts }
}

fn part_name(p: &Parameter) -> String {
    format!("ssm:{} (version {})", p.name, p.version)
}

/// A fragment must start with a table header (`[[peer]]`): a bare key would silently join the
/// table the text before it ended in.
fn header_problems(assembled: &Assembled, origin: &str) -> Result<(), ConfigError> {
    let lines: Vec<&str> = assembled.text.lines().collect();
    let mut problems = Vec::new();
    for (i, part) in assembled.parts.iter().enumerate().skip(1) {
        let end = assembled.parts.get(i + 1).map(|n| n.first_line - 1).unwrap_or(lines.len());
        let first = (part.first_line..=end).find(|&n| {
            let line = lines.get(n - 1).map(|l| l.trim()).unwrap_or("");
            !line.is_empty() && !line.starts_with('#')
        });
        if let Some(n) = first {
            if !lines[n - 1].trim_start().starts_with('[') {
                problems.push(ConfigProblem {
                    kind: ProblemKind::Syntax,
                    line: Some(n),
                    field: "fragment".into(),
                    message: "expected a table header first (`[[peer]]`): a parameter under ssm_path holds \
                              whole tables"
                        .into(),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { origin: origin.to_string(), problems, parts: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(name: &str, version: u64, value: &str) -> Parameter {
        Parameter { name: name.into(), version, kind: "SecureString".into(), value: value.into() }
    }

    const BASE: &str = "[interface]\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\n\
                        address = [\"10.100.0.1/24\"]\n";
    const ALICE: &str = "[[peer]]\nname = \"alice\"\npublic_key = \"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\"\n\
                         allowed_ips = [\"10.100.0.2/32\"]\n";

    #[test]
    fn fragments_follow_the_base_and_problems_name_their_parameter_and_line() {
        let bad = "# bob\n[[peer]]\nname = \"bob\"\npublic_key = \"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\"\n\
                   allowed_ips = [\"10.100.0.2/32\"]";
        let a =
            assemble(BASE.trim_end(), "user-data", &[fragment("/b/p/alice", 3, ALICE), fragment("/b/p/bob", 7, bad)]);
        assert_eq!(a.parts[1], TextPart { first_line: 4, origin: "ssm:/b/p/alice (version 3)".into() });
        assert_eq!(a.parts[2].first_line, 8);
        let e = config::parse(&a.text, "user-data", None).unwrap_err();
        let e = ConfigError { parts: a.parts.clone(), ..e };
        let text = e.to_string();
        assert!(text.contains("ssm:/b/p/bob (version 7):5: peer[1].allowed_ips"), "{text}");
        // Valid fragments make a valid config with both peers.
        let good = assemble(BASE, "user-data", &[fragment("/b/p/alice", 3, ALICE)]);
        let config = config::parse(&good.text, "user-data", None).unwrap();
        assert_eq!(config.peers[0].name, "alice");
    }

    #[test]
    fn fragments_hold_peers_only_and_a_bad_one_costs_only_its_own_peers() {
        let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let twin = ALICE
            .replace("alice", "alice-twin")
            .replace("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "CLndk2VC55qYMfcevou7V13nrfd+WBrBBWozMazUKH8=");
        let fragments = vec![
            fragment("/b/p/alice", 1, ALICE),
            fragment("/b/p/nat", 2, "[nat]\nreach = [\"0.0.0.0/0\"]\n"),
            fragment("/b/p/drain", 1, "[health]\ndrain_seconds = 0\n"),
            fragment("/b/p/probes", 1, "[[peer]]\nname = \"x\"\n[selftest]\nprobes = [\"10.0.0.1:22\"]\n"),
            fragment("/b/p/key", 4, &format!("{key}\n")),
            fragment("/b/p/syntax", 1, "[[peer]\nname = \"y\"\n"),
            fragment("/b/p/twin", 1, &twin), // alice's address again: conflicts with the one before
        ];
        let Accepted { fragments: accepted, config, refused } =
            accept_fragments(BASE, "user-data", None, fragments).unwrap();
        let names: Vec<&str> = accepted.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            config.peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["alice"],
            "the config parsed is the kept one"
        );
        assert_eq!(names, ["/b/p/alice"]);
        let expected = [
            "ssm:/b/p/nat (version 2): refused: holds \"nat\"; a parameter under ssm_path holds [[peer]] tables only",
            "ssm:/b/p/drain (version 1): refused: holds \"health\"",
            "ssm:/b/p/probes (version 1): refused: holds \"selftest\"",
            "ssm:/b/p/key (version 4): refused: holds a WireGuard key",
            "ssm:/b/p/syntax (version 1): refused: is not valid TOML (line 1)",
            "ssm:/b/p/twin (version 1): refused: ssm:/b/p/twin (version 1):4: peer[1].allowed_ips",
        ];
        assert_eq!(refused.len(), expected.len(), "{refused:#?}");
        for (line, want) in refused.iter().zip(expected) {
            assert!(line.starts_with(want), "{line}\nexpected to start with {want}");
            assert!(!line.contains(key), "{line}");
        }
        // All good: one parse, nothing refused.
        let kept = accept_fragments(BASE, "user-data", None, vec![fragment("/b/p/alice", 1, ALICE)]).unwrap();
        assert_eq!((kept.fragments.len(), kept.refused.len()), (1, 0));
    }

    #[test]
    fn a_fragment_must_start_with_a_header() {
        let a = assemble(BASE, "user-data", &[fragment("/b/p/x", 1, "# note\n\nname = \"x\"\n")]);
        let e = header_problems(&a, "user-data").unwrap_err();
        let e = ConfigError { parts: a.parts.clone(), ..e };
        assert!(e.to_string().starts_with("ssm:/b/p/x (version 1):3: fragment: expected a table header"), "{e}");
        let fine = assemble(BASE, "user-data", &[fragment("/b/p/a", 1, ALICE), fragment("/b/p/empty", 1, "")]);
        assert!(header_problems(&fine, "user-data").is_ok());
    }

    #[test]
    fn the_key_must_be_a_secure_string_holding_a_key_and_errors_never_show_it() {
        let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        assert!(key_of(&fragment("/b/key", 2, &format!("{key}\n"))).is_ok());
        let plain = Parameter { kind: "String".into(), ..fragment("/b/key", 2, key) };
        let e = key_of(&plain).err().unwrap().to_string();
        assert!(e.contains("/b/key (version 2)") && e.contains("SecureString") && !e.contains(key), "{e}");
        let e = key_of(&fragment("/b/key", 2, &key[..40])).err().unwrap().to_string();
        assert!(e.contains("44 characters") && !e.contains(&key[..40]), "{e}");
    }
}
