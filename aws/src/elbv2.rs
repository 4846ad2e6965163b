//! The Elastic Load Balancing (v2) calls a bastion makes about its siblings (Query API,
//! version 2015-12-01): the target group's health as the load balancer sees it, and taking a
//! target out. Each answer is parsed by a plain function of its XML.

use crate::client::{Call, Client};
use crate::error::AwsError;
use crate::xml::{child_text, children, find};

const VERSION: &str = "2015-12-01";

/// One target and its health, as DescribeTargetHealth reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    /// An instance id (`i-...`) or an IP address, as the target group registers them.
    pub id: String,
    pub port: Option<u16>,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`...
    pub state: String,
    /// `Target.FailedHealthChecks`, `Elb.RegistrationInProgress`... (empty when healthy).
    pub reason: String,
}

/// The `TargetHealthDescriptions` of a DescribeTargetHealth answer; a member without a target
/// id is an error (it could not be acted on, and it means the answer is not what we think).
pub fn parse_target_health(text: &str) -> Result<Vec<TargetHealth>, AwsError> {
    let action = "elasticloadbalancing:DescribeTargetHealth";
    let bad = |why: String| AwsError::BadAnswer { action: action.into(), why };
    let doc = roxmltree::Document::parse(text).map_err(|e| bad(format!("not XML: {e}")))?;
    let Some(list) = find(doc.root(), "TargetHealthDescriptions") else {
        return Err(bad("no TargetHealthDescriptions in the answer".into()));
    };
    children(list, "member")
        .map(|member| {
            let target = find(member, "Target").ok_or_else(|| bad("a member without a Target".into()))?;
            let id = child_text(target, "Id")
                .filter(|id| !id.is_empty())
                .ok_or_else(|| bad("a target without an Id".into()))?;
            let port = match child_text(target, "Port") {
                None => None,
                Some(p) => Some(p.parse::<u16>().map_err(|_| bad(format!("target {id}: port {p:?} is not a port")))?),
            };
            let health = find(member, "TargetHealth");
            Ok(TargetHealth {
                id,
                port,
                state: health.and_then(|h| child_text(h, "State")).unwrap_or_default(),
                reason: health.and_then(|h| child_text(h, "Reason")).unwrap_or_default(),
            })
        })
        .collect()
}

fn target_params(target_group_arn: &str, id: &str, port: Option<u16>) -> Vec<(String, String)> {
    let mut params = vec![
        ("TargetGroupArn".to_string(), target_group_arn.to_string()),
        ("Targets.member.1.Id".to_string(), id.to_string()),
    ];
    if let Some(port) = port {
        params.push(("Targets.member.1.Port".to_string(), port.to_string()));
    }
    params
}

impl Client {
    /// Every registered target of the group and its health.
    pub fn describe_target_health(&self, target_group_arn: &str) -> Result<Vec<TargetHealth>, AwsError> {
        let params = [("TargetGroupArn".to_string(), target_group_arn.to_string())];
        let call = Call::query("elasticloadbalancing", "DescribeTargetHealth", VERSION, &params);
        parse_target_health(&self.call(&call)?.text())
    }

    /// Takes one target out of the group (it drains for the group's deregistration delay).
    /// Deregistering a target that is already out is not an error.
    pub fn deregister_target(&self, target_group_arn: &str, id: &str, port: Option<u16>) -> Result<(), AwsError> {
        let call = Call::query(
            "elasticloadbalancing",
            "DeregisterTargets",
            VERSION,
            &target_params(target_group_arn, id, port),
        );
        self.call(&call).map(drop)
    }

    /// Puts one target (back) into the group.
    pub fn register_target(&self, target_group_arn: &str, id: &str, port: Option<u16>) -> Result<(), AwsError> {
        let call =
            Call::query("elasticloadbalancing", "RegisterTargets", VERSION, &target_params(target_group_arn, id, port));
        self.call(&call).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_health_as_aws_writes_it() {
        // The shape of AWS's API reference example, with an unhealthy member added.
        let text = r#"<DescribeTargetHealthResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">
  <DescribeTargetHealthResult>
    <TargetHealthDescriptions>
      <member>
        <HealthCheckPort>8080</HealthCheckPort>
        <TargetHealth><State>healthy</State></TargetHealth>
        <Target><Port>51820</Port><Id>i-0376fadf</Id></Target>
      </member>
      <member>
        <HealthCheckPort>8080</HealthCheckPort>
        <TargetHealth>
          <Reason>Target.FailedHealthChecks</Reason>
          <Description>Health checks failed</Description>
          <State>unhealthy</State>
        </TargetHealth>
        <Target><Id>10.0.1.12</Id><Port>51820</Port></Target>
      </member>
    </TargetHealthDescriptions>
  </DescribeTargetHealthResult>
  <ResponseMetadata><RequestId>c534f810</RequestId></ResponseMetadata>
</DescribeTargetHealthResponse>"#;
        assert_eq!(
            parse_target_health(text).unwrap(),
            vec![
                TargetHealth {
                    id: "i-0376fadf".into(),
                    port: Some(51820),
                    state: "healthy".into(),
                    reason: String::new()
                },
                TargetHealth {
                    id: "10.0.1.12".into(),
                    port: Some(51820),
                    state: "unhealthy".into(),
                    reason: "Target.FailedHealthChecks".into()
                },
            ]
        );
        let empty = "<DescribeTargetHealthResponse><DescribeTargetHealthResult><TargetHealthDescriptions/>\
                     </DescribeTargetHealthResult></DescribeTargetHealthResponse>";
        assert_eq!(parse_target_health(empty).unwrap(), vec![]);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for text in [
            "",
            "<",
            "<DescribeTargetHealthResponse/>",
            "<TargetHealthDescriptions><member><TargetHealth><State>healthy</State></TargetHealth></member></TargetHealthDescriptions>",
            "<TargetHealthDescriptions><member><Target><Id>i-1</Id><Port>70000</Port></Target></member></TargetHealthDescriptions>",
            "<TargetHealthDescriptions><member><Target><Id></Id></Target></member></TargetHealthDescriptions>",
        ] {
            assert!(parse_target_health(text).is_err(), "{text}");
        }
    }

    #[test]
    fn one_target_per_call_with_its_port() {
        assert_eq!(
            target_params("arn:tg", "i-1", Some(51820)),
            vec![
                ("TargetGroupArn".to_string(), "arn:tg".to_string()),
                ("Targets.member.1.Id".to_string(), "i-1".to_string()),
                ("Targets.member.1.Port".to_string(), "51820".to_string()),
            ]
        );
        assert_eq!(target_params("arn:tg", "10.0.1.12", None).len(), 2);
    }
}
