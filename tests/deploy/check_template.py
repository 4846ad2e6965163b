#!/usr/bin/env python3
"""What cfn-lint does not check in deploy/bastion.yaml, checked here against the appliance's own
defaults: target-group attribute keys valid for a UDP target group of a Network Load Balancer
(a misspelt key is accepted by cfn-lint and refused by AWS at deploy time), an HTTP health
check on the appliance's health port and path at the fastest interval and thresholds an NLB
allows, the listener, target group and accelerator on the appliance's WireGuard port, the
bastions reachable only from the NLB, IMDSv2 only; a short deregistration delay (a dead
bastion's stock clients wait that long after a survivor took it out), a termination hook that
holds a leaving bastion for the appliance's drain, and, with [siblings] in the user-data, the
permissions it needs on this target group and this Auto Scaling group.

  check_template.py TEMPLATE --listen-port 51820 --health-port 8080 --drain-seconds 30

Prints {"problems": [...], "facts": {...}} and exits 1 when there are problems."""

import argparse
import json
import sys

from cfnlint.decode import decode

# From the Elastic Load Balancing API reference (TargetGroupAttribute): all load balancers,
# ALB and NLB, NLB only.
NLB_ATTRIBUTES = {
    "deregistration_delay.timeout_seconds", "stickiness.enabled", "stickiness.type",
    "load_balancing.cross_zone.enabled",
    "target_group_health.dns_failover.minimum_healthy_targets.count",
    "target_group_health.dns_failover.minimum_healthy_targets.percentage",
    "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count",
    "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage",
    "deregistration_delay.connection_termination.enabled", "preserve_client_ip.enabled",
    "proxy_protocol_v2.enabled", "target_health_state.unhealthy.connection_termination.enabled",
    "target_health_state.unhealthy.draining_interval_seconds",
}
# What a UDP target group refuses.
UDP_REFUSED = {
    "target_health_state.unhealthy.connection_termination.enabled": "true",
    "preserve_client_ip.enabled": "false",
    "proxy_protocol_v2.enabled": "true",
}


def of_type(resources, kind):
    return {name: r.get("Properties", {}) for name, r in resources.items() if r.get("Type") == kind}


def plain(value, parameters):
    """A literal, or a Ref to a parameter's default."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
        return parameters[value["Ref"]].get("Default")
    return value


def check(template, listen_port, health_port, drain_seconds):
    problems, facts = [], {}
    resources = template.get("Resources", {})
    parameters = template.get("Parameters", {})
    groups = of_type(resources, "AWS::ElasticLoadBalancingV2::TargetGroup")
    if len(groups) != 1:
        problems.append(f"expected one target group, found {len(groups)}")
    for name, tg in groups.items():
        if tg.get("Protocol") != "UDP" or str(tg.get("Port")) != str(listen_port):
            problems.append(f"{name}: Protocol {tg.get('Protocol')} Port {tg.get('Port')}, expected UDP {listen_port}")
        if tg.get("HealthCheckProtocol") != "HTTP":
            problems.append(f"{name}: HealthCheckProtocol {tg.get('HealthCheckProtocol')!r}, expected HTTP (the appliance answers plain HTTP)")
        if str(tg.get("HealthCheckPort")) != str(health_port):
            problems.append(f"{name}: HealthCheckPort {tg.get('HealthCheckPort')!r}, expected {health_port} (the appliance's health port)")
        if tg.get("HealthCheckPath") != "/":
            problems.append(f"{name}: HealthCheckPath {tg.get('HealthCheckPath')!r}, expected /")
        if str(tg.get("Matcher", {}).get("HttpCode")) != "200":
            problems.append(f"{name}: Matcher {tg.get('Matcher')}, expected HttpCode 200 (503 means out of service)")
        fastest = {"HealthCheckIntervalSeconds": 5, "HealthyThresholdCount": 2, "UnhealthyThresholdCount": 2}
        for key, value in fastest.items():
            if tg.get(key) != value:
                problems.append(f"{name}: {key} {tg.get(key)}, expected {value} (the fastest an NLB allows)")
        timeout = tg.get("HealthCheckTimeoutSeconds")
        if not isinstance(timeout, int) or not 2 <= timeout <= 120 or timeout > tg.get("HealthCheckIntervalSeconds", 0):
            problems.append(f"{name}: HealthCheckTimeoutSeconds {timeout}, expected 2-120 and at most the interval")
        attributes = {a.get("Key"): a.get("Value") for a in tg.get("TargetGroupAttributes", [])}
        facts["target_group_attributes"] = sorted(attributes)
        for key, value in attributes.items():
            if key not in NLB_ATTRIBUTES:
                problems.append(f"{name}: attribute {key!r} does not exist for a Network Load Balancer target group")
            elif str(plain(value, parameters)).lower() == UDP_REFUSED.get(key):
                problems.append(f"{name}: attribute {key} = {value} is refused for a UDP target group")
        delay = attributes.get("deregistration_delay.timeout_seconds")
        try:
            delay_seconds = int(str(plain(delay, parameters)))
        except ValueError:
            delay_seconds = None
        if delay_seconds is None or delay_seconds > 10:
            problems.append(f"{name}: deregistration delay {delay!r} (default {plain(delay, parameters)}), expected at most 10 s: a dead bastion's stock clients wait that long after a survivor took it out")
        if str(attributes.get("deregistration_delay.connection_termination.enabled")).lower() != "true":
            problems.append(f"{name}: deregistration_delay.connection_termination.enabled should be true")
    for name, listener in of_type(resources, "AWS::ElasticLoadBalancingV2::Listener").items():
        if listener.get("Protocol") != "UDP" or str(listener.get("Port")) != str(listen_port):
            problems.append(f"{name}: listener {listener.get('Protocol')} {listener.get('Port')}, expected UDP {listen_port}")
    for name, lb in of_type(resources, "AWS::ElasticLoadBalancingV2::LoadBalancer").items():
        if lb.get("Type") != "network" or not lb.get("SecurityGroups"):
            problems.append(f"{name}: expected a network load balancer with a security group (the accelerator keeps client IPs only then)")
    for name, gal in of_type(resources, "AWS::GlobalAccelerator::Listener").items():
        ranges = gal.get("PortRanges", [])
        if gal.get("Protocol") != "UDP" or not any(r.get("FromPort") <= listen_port <= r.get("ToPort") for r in ranges):
            problems.append(f"{name}: accelerator listener {gal.get('Protocol')} {ranges}, expected UDP {listen_port}")
    for name, sg in of_type(resources, "AWS::EC2::SecurityGroup").items():
        if name != "InstanceSecurityGroup":
            continue
        rules = {(r.get("IpProtocol"), r.get("FromPort")): r for r in sg.get("SecurityGroupIngress", [])}
        for proto, port in (("udp", listen_port), ("tcp", health_port)):
            rule = rules.get((proto, port))
            if not rule or "SourceSecurityGroupId" not in rule:
                problems.append(f"{name}: expected {proto} {port} from the NLB's security group only")
        if len(rules) != 2:
            problems.append(f"{name}: expected exactly two ingress rules, found {len(rules)}")
    for name, lt in of_type(resources, "AWS::EC2::LaunchTemplate").items():
        data = lt.get("LaunchTemplateData", {})
        meta = data.get("MetadataOptions", {})
        if meta.get("HttpTokens") != "required" or meta.get("HttpPutResponseHopLimit") != 1:
            problems.append(f"{name}: expected IMDSv2 only (HttpTokens required, hop limit 1), found {meta}")
        if "KeyName" in data:
            problems.append(f"{name}: a key pair is set; the appliance has no SSH")
    hooks = {n: h for n, h in of_type(resources, "AWS::AutoScaling::LifecycleHook").items()
             if h.get("LifecycleTransition") == "autoscaling:EC2_INSTANCE_TERMINATING"}
    if len(hooks) != 1:
        problems.append(f"expected one termination lifecycle hook (it holds a leaving bastion while it asks its peers to move), found {len(hooks)}")
    for name, hook in hooks.items():
        if str(plain(hook.get("HeartbeatTimeout"), parameters)) != str(drain_seconds):
            problems.append(f"{name}: HeartbeatTimeout {hook.get('HeartbeatTimeout')!r}, expected the appliance's drain_seconds default {drain_seconds} (a leaving bastion asks its peers to move that long)")
        if hook.get("DefaultResult") != "CONTINUE":
            problems.append(f"{name}: DefaultResult {hook.get('DefaultResult')!r}, expected CONTINUE (nothing completes the action)")
    problems += check_siblings(resources, groups)
    facts["resources"] = sorted({r.get("Type") for r in resources.values()})
    return problems, facts


def statements(policy):
    return policy.get("PolicyDocument", {}).get("Statement", [])


def check_siblings(resources, groups):
    """With [siblings] appended to the user-data: the three actions it calls are allowed, the
    deregistration on this stack's target group only."""
    text = json.dumps({n: r for n, r in resources.items() if r.get("Type") == "AWS::EC2::LaunchTemplate"})
    if "[siblings]" not in text:
        return []
    problems = []
    if not any(g in text for g in groups):
        problems.append("LaunchTemplate: [siblings] in the user-data does not name the stack's target group")
    allowed = {}
    for name, policy in of_type(resources, "AWS::IAM::Policy").items():
        for st in statements(policy):
            actions = st.get("Action")
            for action in actions if isinstance(actions, list) else [actions]:
                allowed[action] = st.get("Resource")
    for name, role in of_type(resources, "AWS::IAM::Role").items():
        for policy in role.get("Policies", []):
            for st in statements(policy):
                actions = st.get("Action")
                for action in actions if isinstance(actions, list) else [actions]:
                    allowed.setdefault(action, st.get("Resource"))
    for action in ("elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DeregisterTargets", "autoscaling:SetInstanceHealth"):
        if action not in allowed:
            problems.append(f"[siblings] is in the user-data but the bastions may not call {action}")
    deregister = allowed.get("elasticloadbalancing:DeregisterTargets")
    if deregister is not None and not (isinstance(deregister, dict) and deregister.get("Ref") in groups):
        problems.append(f"elasticloadbalancing:DeregisterTargets is allowed on {deregister!r}, expected this stack's target group only")
    return problems


def main():
    p = argparse.ArgumentParser()
    p.add_argument("template")
    p.add_argument("--listen-port", type=int, required=True)
    p.add_argument("--health-port", type=int, required=True)
    p.add_argument("--drain-seconds", type=int, required=True)
    a = p.parse_args()
    template, matches = decode(a.template)
    if template is None:
        print(json.dumps({"problems": [f"cannot read {a.template}: {[str(m) for m in matches]}"], "facts": {}}))
        sys.exit(1)
    problems, facts = check(template, a.listen_port, a.health_port, a.drain_seconds)
    print(json.dumps({"problems": problems, "facts": facts}, indent=1))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
