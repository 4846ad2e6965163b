//! What the environment says about AWS: variables, the shared files, the region and the
//! endpoints, as the AWS SDKs read them. Built from the process (`Environment::from_process`) or
//! from a map in tests.

use crate::profile::{self, Profile};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: HashMap<String, String>,
}

impl Environment {
    pub fn from_process() -> Environment {
        Environment { vars: std::env::vars().collect() }
    }

    pub fn from_vars<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Environment {
        Environment { vars: vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// The same, with `url` (when given) as the endpoint of each of `services` (what
    /// `AWS_ENDPOINT_URL_<SERVICE>` says; a VPC endpoint's DNS name or an emulator).
    pub fn with_endpoint(mut self, url: Option<&str>, services: &[&str]) -> Environment {
        if let Some(url) = url {
            for service in services {
                self.vars.insert(endpoint_var(service), url.to_string());
            }
        }
        self
    }

    /// A variable, when set and not empty.
    pub fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).filter(|v| !v.is_empty()).cloned()
    }

    pub fn profile_name(&self) -> String {
        self.var("AWS_PROFILE").or_else(|| self.var("AWS_DEFAULT_PROFILE")).unwrap_or_else(|| "default".into())
    }

    fn home(&self) -> Option<PathBuf> {
        self.var("HOME").map(PathBuf::from)
    }

    pub fn profile_files(&self) -> ProfileFiles {
        let file = |var: &str, name: &str| {
            self.var(var).map(PathBuf::from).or_else(|| self.home().map(|h| h.join(".aws").join(name)))
        };
        ProfileFiles::read(file("AWS_CONFIG_FILE", "config"), file("AWS_SHARED_CREDENTIALS_FILE", "credentials"))
    }

    /// The region: `AWS_REGION`, `AWS_DEFAULT_REGION`, then the profile's `region`.
    pub fn region(&self) -> Option<String> {
        self.var("AWS_REGION")
            .or_else(|| self.var("AWS_DEFAULT_REGION"))
            .or_else(|| self.profile_files().profile(&self.profile_name())?.get("region").cloned())
    }

    /// Where to say the region can be set, for the "no region" error.
    pub fn region_hint(&self) -> String {
        format!(
            "pass --region, or set AWS_REGION, or region in profile {:?} of {}",
            self.profile_name(),
            self.profile_files().describe()
        )
    }

    /// The base URL for `service` in `region`: `AWS_ENDPOINT_URL_<SERVICE>`, else
    /// `AWS_ENDPOINT_URL`, else AWS's own (`https://ec2.eu-west-1.amazonaws.com`).
    pub fn endpoint(&self, service: &str, region: &str) -> String {
        if let Some(url) = self.var(&endpoint_var(service)).or_else(|| self.var("AWS_ENDPOINT_URL")) {
            return url.trim_end_matches('/').to_string();
        }
        let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
        format!("https://{service}.{region}.{suffix}")
    }

    /// The instance metadata service: `AWS_EC2_METADATA_SERVICE_ENDPOINT` or the EC2 address.
    pub fn imds_endpoint(&self) -> String {
        self.var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| "http://169.254.169.254".into())
    }
}

/// The texts of the shared config and credentials files (when they exist).
#[derive(Debug, Clone)]
pub struct ProfileFiles {
    config: (Option<PathBuf>, Option<String>),
    credentials: (Option<PathBuf>, Option<String>),
}

impl ProfileFiles {
    fn read(config: Option<PathBuf>, credentials: Option<PathBuf>) -> ProfileFiles {
        let text = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
        ProfileFiles { config: (config.clone(), text(&config)), credentials: (credentials.clone(), text(&credentials)) }
    }

    pub fn profile(&self, name: &str) -> Option<Profile> {
        profile::merged(self.config.1.as_deref(), self.credentials.1.as_deref(), name)
    }

    /// `~/.aws/credentials (no such file), ~/.aws/config`, for messages.
    pub fn describe(&self) -> String {
        let one = |(path, text): &(Option<PathBuf>, Option<String>)| match (path, text) {
            (Some(p), Some(_)) => p.display().to_string(),
            (Some(p), None) => format!("{} (not there)", p.display()),
            (None, _) => "(no HOME)".to_string(),
        };
        format!("{}, {}", one(&self.credentials), one(&self.config))
    }
}

/// `AWS_ENDPOINT_URL_<SERVICE>`, as the SDKs name it.
fn endpoint_var(service: &str) -> String {
    format!("AWS_ENDPOINT_URL_{}", service.to_ascii_uppercase().replace('-', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_as_the_sdks_choose_them() {
        let env = Environment::from_vars([
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/"),
            ("AWS_ENDPOINT_URL_EBS", "http://127.0.0.1:6000"),
        ]);
        assert_eq!(env.endpoint("ec2", "eu-west-1"), "http://127.0.0.1:5000");
        assert_eq!(env.endpoint("ebs", "eu-west-1"), "http://127.0.0.1:6000");
        let none = Environment::default();
        assert_eq!(none.endpoint("ec2", "eu-west-1"), "https://ec2.eu-west-1.amazonaws.com");
        assert_eq!(none.endpoint("ssm", "cn-north-1"), "https://ssm.cn-north-1.amazonaws.com.cn");
        let one = Environment::default().with_endpoint(Some("http://10.0.0.1:4566"), &["elasticloadbalancing", "ec2"]);
        assert_eq!(one.endpoint("elasticloadbalancing", "eu-west-1"), "http://10.0.0.1:4566");
        assert_eq!(one.endpoint("ec2", "eu-west-1"), "http://10.0.0.1:4566");
        assert_eq!(one.endpoint("ssm", "eu-west-1"), "https://ssm.eu-west-1.amazonaws.com");
        assert_eq!(env.with_endpoint(None, &["ebs"]).endpoint("ebs", "x"), "http://127.0.0.1:6000");
    }

    #[test]
    fn region_from_the_variables_then_the_profile() {
        let dir = std::env::temp_dir().join(format!("bastion-aws-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config"), "[profile p]\nregion = ap-south-1\n").unwrap();
        let config = dir.join("config").display().to_string();
        let env = Environment::from_vars([
            ("AWS_CONFIG_FILE", config.as_str()),
            ("AWS_PROFILE", "p"),
            ("HOME", "/nonexistent"),
        ]);
        assert_eq!(env.region().as_deref(), Some("ap-south-1"));
        let env = Environment::from_vars([
            ("AWS_CONFIG_FILE", config.as_str()),
            ("AWS_PROFILE", "p"),
            ("AWS_REGION", "eu-west-3"),
        ]);
        assert_eq!(env.region().as_deref(), Some("eu-west-3"));
        assert_eq!(Environment::from_vars([("HOME", "/nonexistent")]).region(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
