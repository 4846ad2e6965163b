//! The EC2 calls the image publisher makes (Query API, version 2016-11-15): images, snapshots,
//! tags, copies and sharing; and the bastion's own, moving a secondary private address between
//! network interfaces (`[siblings]` address takeover). Each answer is parsed by a plain function
//! of its XML.

use crate::client::{Call, Client};
use crate::error::AwsError;
use crate::xml::{child_text, children, find};

const VERSION: &str = "2016-11-15";

/// An AMI as DescribeImages shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: String,
    /// `pending`, `available`, `failed`...
    pub state: String,
    pub snapshot_ids: Vec<String>,
}

/// A snapshot as DescribeSnapshots shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    /// `pending`, `completed`, `error`...
    pub state: String,
    pub progress: String,
    pub tags: Vec<(String, String)>,
    pub state_message: String,
}

/// What RegisterImage is given.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub description: String,
    /// `arm64` or `x86_64`.
    pub architecture: String,
    pub snapshot_id: String,
    pub tags: Vec<(String, String)>,
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn document<'i>(action: &str, text: &'i str) -> Result<roxmltree::Document<'i>, AwsError> {
    roxmltree::Document::parse(text)
        .map_err(|e| AwsError::BadAnswer { action: action.into(), why: format!("not XML: {e}") })
}

/// An attached network interface as DescribeNetworkInterfaces shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedInterface {
    pub instance: String,
    /// Its private IPv4 addresses, primary and secondary.
    pub addresses: Vec<String>,
    /// Its primary private IPv4 address.
    pub primary: Option<String>,
}

/// The attached interfaces of a DescribeNetworkInterfaces answer.
pub fn parse_attached_interfaces(text: &str) -> Result<Vec<AttachedInterface>, AwsError> {
    let doc = document("ec2:DescribeNetworkInterfaces", text)?;
    let Some(set) = find(doc.root(), "networkInterfaceSet") else { return Ok(Vec::new()) };
    Ok(children(set, "item")
        .filter_map(|item| {
            let instance = find(item, "attachment").and_then(|a| child_text(a, "instanceId"))?;
            let set = find(item, "privateIpAddressesSet");
            let items = || set.into_iter().flat_map(|set| children(set, "item"));
            let addresses = items().filter_map(|a| child_text(a, "privateIpAddress")).collect();
            let primary = items()
                .find(|a| child_text(*a, "primary").as_deref() == Some("true"))
                .and_then(|a| child_text(a, "privateIpAddress"));
            Some(AttachedInterface { instance, addresses, primary })
        })
        .filter(|i| !i.instance.is_empty())
        .collect())
}

/// The addresses an AssignPrivateIpAddresses answer says were assigned.
pub fn parse_assigned_addresses(text: &str) -> Result<Vec<String>, AwsError> {
    let doc = document("ec2:AssignPrivateIpAddresses", text)?;
    let Some(set) = find(doc.root(), "assignedPrivateIpAddressesSet") else { return Ok(Vec::new()) };
    Ok(children(set, "item")
        .filter_map(|item| child_text(item, "privateIpAddress"))
        .filter(|a| !a.is_empty())
        .collect())
}

/// The `imagesSet` of a DescribeImages answer.
pub fn parse_images(text: &str) -> Result<Vec<Image>, AwsError> {
    let doc = document("ec2:DescribeImages", text)?;
    let Some(set) = find(doc.root(), "imagesSet") else { return Ok(Vec::new()) };
    Ok(children(set, "item")
        .map(|item| Image {
            id: child_text(item, "imageId").unwrap_or_default(),
            name: child_text(item, "name").unwrap_or_default(),
            state: child_text(item, "imageState").unwrap_or_default(),
            snapshot_ids: find(item, "blockDeviceMapping")
                .map(|m| {
                    children(m, "item").filter_map(|d| find(d, "snapshotId")?.text().map(str::to_string)).collect()
                })
                .unwrap_or_default(),
        })
        .filter(|i| !i.id.is_empty())
        .collect())
}

/// The `snapshotSet` of a DescribeSnapshots answer.
pub fn parse_snapshots(text: &str) -> Result<Vec<Snapshot>, AwsError> {
    let doc = document("ec2:DescribeSnapshots", text)?;
    let Some(set) = find(doc.root(), "snapshotSet") else { return Ok(Vec::new()) };
    Ok(children(set, "item")
        .map(|item| Snapshot {
            id: child_text(item, "snapshotId").unwrap_or_default(),
            state: child_text(item, "status").unwrap_or_default(),
            progress: child_text(item, "progress").unwrap_or_default(),
            state_message: child_text(item, "statusMessage").unwrap_or_default(),
            tags: find(item, "tagSet")
                .map(|t| {
                    children(t, "item")
                        .map(|tag| {
                            (child_text(tag, "key").unwrap_or_default(), child_text(tag, "value").unwrap_or_default())
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .filter(|s| !s.id.is_empty())
        .collect())
}

/// The text of the first `name` element of an answer (`imageId` of RegisterImage...).
fn the(action: &str, text: &str, name: &str) -> Result<String, AwsError> {
    let doc = document(action, text)?;
    find(doc.root(), name)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AwsError::BadAnswer { action: action.into(), why: format!("no {name} in the answer") })
}

impl Client {
    fn ec2(
        &self,
        operation: &str,
        params: &[(String, String)],
        retry_codes: &'static [&'static str],
    ) -> Result<String, AwsError> {
        let mut call = Call::query("ec2", operation, VERSION, params);
        call.retry_codes = retry_codes;
        Ok(self.call(&call)?.text())
    }

    /// Moves the private IPv4 `address` to the network interface `eni` from whichever interface
    /// of the subnet holds it (`AllowReassignment`): the VPC delivers its packets to `eni` from
    /// then on.
    pub fn assign_private_ip(&self, eni: &str, address: &str) -> Result<(), AwsError> {
        let p = params(&[("NetworkInterfaceId", eni), ("PrivateIpAddress.1", address), ("AllowReassignment", "true")]);
        self.ec2("AssignPrivateIpAddresses", &p, &[]).map(drop)
    }

    /// Has EC2 pick a free private IPv4 address of the subnet and assign it to `eni` as a
    /// secondary address (`SecondaryPrivateIpAddressCount` 1); the address it picked.
    pub fn assign_fresh_private_ip(&self, eni: &str) -> Result<String, AwsError> {
        let p = params(&[("NetworkInterfaceId", eni), ("SecondaryPrivateIpAddressCount", "1")]);
        let text = self.ec2("AssignPrivateIpAddresses", &p, &[])?;
        parse_assigned_addresses(&text)?.into_iter().next().ok_or_else(|| AwsError::BadAnswer {
            action: "ec2:AssignPrivateIpAddresses".into(),
            why: "no address in assignedPrivateIpAddressesSet".into(),
        })
    }

    /// The attached network interface that holds the private IPv4 `address`, if any: its
    /// instance and all its addresses.
    pub fn interface_with_address(&self, address: &str) -> Result<Option<AttachedInterface>, AwsError> {
        let p = params(&[("Filter.1.Name", "addresses.private-ip-address"), ("Filter.1.Value.1", address)]);
        Ok(parse_attached_interfaces(&self.ec2("DescribeNetworkInterfaces", &p, &[])?)?.into_iter().next())
    }

    /// The primary private IPv4 address of `instance`'s primary network interface (device 0):
    /// where a load balancer sends an instance target's traffic. `None` when EC2 lists none
    /// (terminated).
    pub fn primary_address_of_instance(&self, instance: &str) -> Result<Option<String>, AwsError> {
        let p = params(&[
            ("Filter.1.Name", "attachment.instance-id"),
            ("Filter.1.Value.1", instance),
            ("Filter.2.Name", "attachment.device-index"),
            ("Filter.2.Value.1", "0"),
        ]);
        let interfaces = parse_attached_interfaces(&self.ec2("DescribeNetworkInterfaces", &p, &[])?)?;
        Ok(interfaces.into_iter().find(|i| i.instance == instance).and_then(|i| i.primary))
    }

    /// Gives the secondary private IPv4 `address` of `eni` back to the subnet.
    pub fn unassign_private_ip(&self, eni: &str, address: &str) -> Result<(), AwsError> {
        let p = params(&[("NetworkInterfaceId", eni), ("PrivateIpAddress.1", address)]);
        self.ec2("UnassignPrivateIpAddresses", &p, &[]).map(drop)
    }

    /// Our own images named `name` (at most one in practice: names are unique per region).
    pub fn images_named(&self, name: &str) -> Result<Vec<Image>, AwsError> {
        let text = self.ec2(
            "DescribeImages",
            &params(&[("Owner.1", "self"), ("Filter.1.Name", "name"), ("Filter.1.Value.1", name)]),
            &[],
        )?;
        parse_images(&text)
    }

    /// One image by id; `None` while it is not visible yet (eventual consistency).
    pub fn image(&self, id: &str) -> Result<Option<Image>, AwsError> {
        match self.ec2("DescribeImages", &params(&[("ImageId.1", id)]), &[]) {
            Ok(text) => Ok(parse_images(&text)?.into_iter().next()),
            Err(e) if e.code() == Some("InvalidAMIID.NotFound") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn register_image(&self, r: &Registration) -> Result<String, AwsError> {
        let mut p = params(&[
            ("Name", &r.name),
            ("Description", &r.description),
            ("Architecture", &r.architecture),
            ("BootMode", "uefi"),
            ("VirtualizationType", "hvm"),
            ("EnaSupport", "true"),
            ("ImdsSupport", "v2.0"),
            ("RootDeviceName", "/dev/xvda"),
            ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
            ("BlockDeviceMapping.1.Ebs.SnapshotId", &r.snapshot_id),
            ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
            ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
        ]);
        if !r.tags.is_empty() {
            p.push(("TagSpecification.1.ResourceType".into(), "image".into()));
            for (i, (k, v)) in r.tags.iter().enumerate() {
                p.push((format!("TagSpecification.1.Tag.{}.Key", i + 1), k.clone()));
                p.push((format!("TagSpecification.1.Tag.{}.Value", i + 1), v.clone()));
            }
        }
        // A snapshot that has only just completed may not be visible to EC2 yet.
        let text = self.ec2("RegisterImage", &p, &["InvalidSnapshot.NotFound", "IncorrectState"])?;
        the("ec2:RegisterImage", &text, "imageId")
    }

    pub fn deregister_image(&self, id: &str) -> Result<(), AwsError> {
        self.ec2("DeregisterImage", &params(&[("ImageId", id)]), &[]).map(drop)
    }

    /// Our snapshots carrying tag `key` = `value`.
    pub fn snapshots_tagged(&self, key: &str, value: &str) -> Result<Vec<Snapshot>, AwsError> {
        let text = self.ec2(
            "DescribeSnapshots",
            &params(&[("Owner.1", "self"), ("Filter.1.Name", &format!("tag:{key}")), ("Filter.1.Value.1", value)]),
            &[],
        )?;
        parse_snapshots(&text)
    }

    /// One snapshot by id; `None` while it is not visible yet.
    pub fn snapshot(&self, id: &str) -> Result<Option<Snapshot>, AwsError> {
        match self.ec2("DescribeSnapshots", &params(&[("SnapshotId.1", id)]), &[]) {
            Ok(text) => Ok(parse_snapshots(&text)?.into_iter().next()),
            Err(e) if e.code() == Some("InvalidSnapshot.NotFound") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<(), AwsError> {
        match self.ec2("DeleteSnapshot", &params(&[("SnapshotId", id)]), &[]) {
            Err(e) if e.code() == Some("InvalidSnapshot.NotFound") => Ok(()),
            other => other.map(drop),
        }
    }

    pub fn create_tags(&self, resource: &str, tags: &[(String, String)]) -> Result<(), AwsError> {
        let mut p = params(&[("ResourceId.1", resource)]);
        for (i, (k, v)) in tags.iter().enumerate() {
            p.push((format!("Tag.{}.Key", i + 1), k.clone()));
            p.push((format!("Tag.{}.Value", i + 1), v.clone()));
        }
        self.ec2("CreateTags", &p, &["InvalidSnapshot.NotFound", "InvalidAMIID.NotFound"]).map(drop)
    }

    /// CopyImage into this client's region; the new image's id.
    pub fn copy_image(
        &self,
        source_region: &str,
        source_id: &str,
        name: &str,
        description: &str,
    ) -> Result<String, AwsError> {
        let text = self.ec2(
            "CopyImage",
            &params(&[
                ("SourceRegion", source_region),
                ("SourceImageId", source_id),
                ("Name", name),
                ("Description", description),
            ]),
            &[],
        )?;
        the("ec2:CopyImage", &text, "imageId")
    }

    /// Lets `accounts` launch the image.
    pub fn share_image(&self, id: &str, accounts: &[String]) -> Result<(), AwsError> {
        let mut p = params(&[("ImageId", id)]);
        for (i, a) in accounts.iter().enumerate() {
            p.push((format!("LaunchPermission.Add.{}.UserId", i + 1), a.clone()));
        }
        self.ec2("ModifyImageAttribute", &p, &["InvalidAMIID.NotFound"]).map(drop)
    }

    /// Lets `accounts` create volumes from the snapshot (needed to launch a shared AMI).
    pub fn share_snapshot(&self, id: &str, accounts: &[String]) -> Result<(), AwsError> {
        let mut p = params(&[("SnapshotId", id), ("Attribute", "createVolumePermission"), ("OperationType", "add")]);
        for (i, a) in accounts.iter().enumerate() {
            p.push((format!("UserId.{}", i + 1), a.clone()));
        }
        self.ec2("ModifySnapshotAttribute", &p, &["InvalidSnapshot.NotFound"]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attached_instances_from_their_xml() {
        let answer = r#"<DescribeNetworkInterfacesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
          <requestId>r</requestId><networkInterfaceSet><item><networkInterfaceId>eni-0a1</networkInterfaceId>
          <attachment><attachmentId>eni-attach-1</attachmentId><instanceId>i-0abc</instanceId></attachment>
          <privateIpAddressesSet><item><privateIpAddress>10.0.1.5</privateIpAddress><primary>true</primary></item>
          <item><privateIpAddress>10.0.1.21</privateIpAddress><primary>false</primary></item></privateIpAddressesSet>
          </item><item><networkInterfaceId>eni-0b2</networkInterfaceId></item></networkInterfaceSet>
          </DescribeNetworkInterfacesResponse>"#;
        assert_eq!(
            parse_attached_interfaces(answer).unwrap(),
            vec![AttachedInterface {
                instance: "i-0abc".into(),
                addresses: vec!["10.0.1.5".into(), "10.0.1.21".into()],
                primary: Some("10.0.1.5".into())
            }]
        );
        let none = r#"<DescribeNetworkInterfacesResponse><networkInterfaceSet/></DescribeNetworkInterfacesResponse>"#;
        assert!(parse_attached_interfaces(none).unwrap().is_empty());
        assert!(parse_attached_interfaces("<not xml").is_err());
    }

    #[test]
    fn assigned_addresses_from_their_xml() {
        let answer = r#"<AssignPrivateIpAddressesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
          <requestId>r</requestId><networkInterfaceId>eni-0a1</networkInterfaceId><assignedPrivateIpAddressesSet>
          <item><privateIpAddress>10.0.1.77</privateIpAddress></item></assignedPrivateIpAddressesSet>
          <return>true</return></AssignPrivateIpAddressesResponse>"#;
        assert_eq!(parse_assigned_addresses(answer).unwrap(), vec!["10.0.1.77".to_string()]);
        let none = "<AssignPrivateIpAddressesResponse><return>true</return></AssignPrivateIpAddressesResponse>";
        assert!(parse_assigned_addresses(none).unwrap().is_empty());
        assert!(parse_assigned_addresses("<half").is_err());
    }

    #[test]
    fn images_and_snapshots_from_their_xml() {
        let images = r#"<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
          <requestId>r</requestId><imagesSet><item><imageId>ami-1</imageId><imageState>available</imageState>
          <name>bastion-0.1.0-arm64</name><blockDeviceMapping><item><deviceName>/dev/xvda</deviceName>
          <ebs><snapshotId>snap-1</snapshotId><volumeSize>1</volumeSize></ebs></item></blockDeviceMapping></item>
          </imagesSet></DescribeImagesResponse>"#;
        assert_eq!(
            parse_images(images).unwrap(),
            vec![Image {
                id: "ami-1".into(),
                name: "bastion-0.1.0-arm64".into(),
                state: "available".into(),
                snapshot_ids: vec!["snap-1".into()]
            }]
        );
        assert_eq!(parse_images("<DescribeImagesResponse><imagesSet/></DescribeImagesResponse>").unwrap(), vec![]);
        let snapshots = r#"<DescribeSnapshotsResponse><snapshotSet><item><snapshotId>snap-2</snapshotId>
          <status>error</status><statusMessage>boom</statusMessage><progress>40%</progress>
          <tagSet><item><key>bastion:image</key><value>n</value></item></tagSet></item></snapshotSet></DescribeSnapshotsResponse>"#;
        let s = &parse_snapshots(snapshots).unwrap()[0];
        assert_eq!((s.id.as_str(), s.state.as_str(), s.state_message.as_str()), ("snap-2", "error", "boom"));
        assert_eq!(s.tags, vec![("bastion:image".into(), "n".into())]);
        assert!(parse_images("not xml").is_err());
        assert!(the("ec2:RegisterImage", "<RegisterImageResponse/>", "imageId").is_err());
    }
}
