//! The Auto Scaling call a bastion makes about a dead sibling (Query API, version 2011-01-01):
//! marking its instance unhealthy, so that the group replaces it now rather than when its own
//! checks notice.

use crate::client::{Call, Client};
use crate::error::AwsError;

const VERSION: &str = "2011-01-01";

fn unhealthy_params(instance_id: &str) -> Vec<(String, String)> {
    vec![
        ("InstanceId".to_string(), instance_id.to_string()),
        ("HealthStatus".to_string(), "Unhealthy".to_string()),
        // A dead instance in its grace period is still dead: replace it now.
        ("ShouldRespectGracePeriod".to_string(), "false".to_string()),
    ]
}

impl Client {
    /// `SetInstanceHealth` to Unhealthy: the group terminates and replaces the instance.
    pub fn set_instance_unhealthy(&self, instance_id: &str) -> Result<(), AwsError> {
        let call = Call::query("autoscaling", "SetInstanceHealth", VERSION, &unhealthy_params(instance_id));
        self.call(&call).map(drop)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unhealthy_now_whatever_the_grace_period() {
        let params = super::unhealthy_params("i-0abc");
        assert!(params.contains(&("HealthStatus".into(), "Unhealthy".into())));
        assert!(params.contains(&("ShouldRespectGracePeriod".into(), "false".into())));
        assert!(params.contains(&("InstanceId".into(), "i-0abc".into())));
    }
}
