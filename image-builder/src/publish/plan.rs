//! What `publish` will do, decided before any call: the AMI's name, description and tags, the
//! snapshot's size, and the checks of what the operator typed (names, regions, account ids).
//! Plain values; the steps in `mod.rs` carry it out.

use super::inspect::{ami_architecture, ImageFacts};

/// The tag every snapshot and AMI of a publish carries: how a later run finds what an
/// interrupted one left behind.
pub const IMAGE_TAG: &str = "bastion:image";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub description: String,
    pub architecture: &'static str,
    pub version: String,
    pub volume_gib: u64,
    pub blocks: u64,
    pub tags: Vec<(String, String)>,
    pub home_region: String,
    pub copy_to: Vec<String>,
    pub share_with: Vec<String>,
}

impl Plan {
    pub fn new(
        facts: &ImageFacts,
        name: Option<&str>,
        home_region: &str,
        copy_to: &[String],
        share_with: &[String],
    ) -> Result<Plan, String> {
        let architecture = ami_architecture(facts.arch);
        let name = name.map(str::to_string).unwrap_or_else(|| format!("bastion-{}-{architecture}", facts.version));
        check_ami_name(&name)?;
        check_region(home_region)?;
        let mut copies = Vec::new();
        for region in copy_to {
            check_region(region)?;
            if region != home_region && !copies.contains(region) {
                copies.push(region.clone());
            }
        }
        let mut shares = Vec::new();
        for account in share_with {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("--share-with {account:?}: expected a 12-digit AWS account id"));
            }
            if !shares.contains(account) {
                shares.push(account.clone());
            }
        }
        let description = format!("bastion appliance {} ({architecture}), published by bastion-image", facts.version);
        let tags = vec![
            ("Name".to_string(), name.clone()),
            (IMAGE_TAG.to_string(), name.clone()),
            ("bastion:version".to_string(), facts.version.clone()),
            ("bastion:architecture".to_string(), architecture.to_string()),
        ];
        Ok(Plan {
            name,
            description,
            architecture,
            version: facts.version.clone(),
            volume_gib: facts.volume_gib(),
            blocks: facts.nonzero_blocks.len() as u64,
            tags,
            home_region: home_region.to_string(),
            copy_to: copies,
            share_with: shares,
        })
    }

    /// The plan as `--dry-run` prints it.
    pub fn describe(&self) -> String {
        let mut lines = vec![
            format!("name         {}", self.name),
            format!("description  {}", self.description),
            format!("architecture {} (boot mode uefi, hvm, ENA, IMDSv2 only)", self.architecture),
            format!(
                "snapshot     {} GiB volume, {} blocks of 512 KiB with data ({:.1} MiB to upload)",
                self.volume_gib,
                self.blocks,
                self.blocks as f64 / 2.0
            ),
            format!("root device  /dev/xvda, gp3, deleted on termination"),
            format!("region       {}", self.home_region),
        ];
        if !self.copy_to.is_empty() {
            lines.push(format!("copy to      {}", self.copy_to.join(", ")));
        }
        if !self.share_with.is_empty() {
            lines.push(format!(
                "share with   {} (launch permission and snapshot create-volume permission)",
                self.share_with.join(", ")
            ));
        }
        lines.push(format!(
            "tags         {}",
            self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
        ));
        lines.join("\n")
    }
}

/// AMI names: 3–128 characters of letters, digits and `( ) [ ] space . / - ' @ _`.
fn check_ami_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c);
    if !(3..=128).contains(&name.len()) || !name.chars().all(allowed) {
        return Err(format!(
            "AMI name {name:?}: expected 3–128 characters of letters, digits and ( ) [ ] space . / - ' @ _"
        ));
    }
    Ok(())
}

/// Region names such as `eu-west-1`, `us-gov-west-1`, `ap-southeast-5`.
pub fn check_region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = parts.len() >= 3
        && region.len() <= 32
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(format!("region {region:?}: expected a region name such as eu-west-1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;

    fn facts() -> ImageFacts {
        ImageFacts { arch: Arch::Aarch64, version: "0.1.0-abc".into(), size: 1 << 30, nonzero_blocks: vec![0, 1, 5] }
    }

    #[test]
    fn names_tags_and_size_come_from_the_image() {
        let plan =
            Plan::new(&facts(), None, "eu-west-1", &["us-east-1".into(), "eu-west-1".into(), "us-east-1".into()], &[])
                .unwrap();
        assert_eq!(plan.name, "bastion-0.1.0-abc-arm64");
        assert_eq!(plan.architecture, "arm64");
        assert_eq!((plan.volume_gib, plan.blocks), (1, 3));
        assert_eq!(plan.copy_to, vec!["us-east-1".to_string()], "the home region and repeats are dropped");
        assert!(plan.tags.contains(&(IMAGE_TAG.to_string(), plan.name.clone())));
        assert!(plan.describe().contains("3 blocks of 512 KiB with data (1.5 MiB to upload)"), "{}", plan.describe());
    }

    #[test]
    fn what_the_operator_typed_is_checked() {
        let bad: [(Option<&str>, &str, &[&str], &str); 4] = [
            (Some("x"), "eu-west-1", &[], "AMI name"),
            (Some("bad*name"), "eu-west-1", &[], "AMI name"),
            (None, "EU-WEST-1", &[], "region"),
            (None, "eu-west-1", &["1234"], "12-digit"),
        ];
        for (name, region, shares, expected) in bad {
            let shares: Vec<String> = shares.iter().map(|s| s.to_string()).collect();
            let e = Plan::new(&facts(), name, region, &[], &shares).unwrap_err();
            assert!(e.contains(expected), "{e}");
        }
        for ok in ["eu-west-1", "us-gov-west-1", "ap-southeast-5", "cn-north-1"] {
            check_region(ok).unwrap();
        }
        for bad in ["", "eu", "eu-west", "eu-west-x", "eu--1", "eu_west_1"] {
            assert!(check_region(bad).is_err(), "{bad}");
        }
    }
}
