#!/usr/bin/env python3
"""What cfn-lint does not check in deploy/bastion.yaml, checked here against the appliance's own
defaults: target-group attribute keys valid for a UDP target group of a Network Load Balancer
(a misspelt key is accepted by cfn-lint and refused by AWS at deploy time), an HTTP health
check on the appliance's health port and path at the fastest interval and thresholds an NLB
allows, the listener, target group and accelerator on the appliance's WireGuard port, the
bastions reachable only from the NLB, IMDSv2 only; a short deregistration delay (a dead
bastion's stock clients wait that long after a survivor took it out), a termination hook that
holds a leaving bastion for the appliance's drain, and, with [siblings] in the user-data, the
permissions it needs on this target group and this Auto Scaling group. CloudWatch: every
user-data branch, with a config before it, is valid TOML whose [log] cloudwatch_group names the
stack's log group; the instance role may call logs:CreateLogStream and logs:PutLogEvents on that
group and its streams and nothing else of logs; the four alarms (no healthy bastion, a bastion
unhealthy, config source failing, restart pending) watch the right metric with the right
statistic, threshold and periods, and notify AlarmTopicArn only when it is set; the dashboard's
body is JSON once substituted and shows the appliance's metrics for the stack's group.

  check_template.py TEMPLATE --listen-port 51820 --health-port 8080 --drain-seconds 30

Prints {"problems": [...], "facts": {...}} and exits 1 when there are problems."""

import argparse
import json
import re
import sys
import tomllib

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

# The appliance's CloudWatch output ([log] cloudwatch_group): the calls it makes on its group,
# and the metrics it publishes every 60 s (Embedded Metric Format, namespace Bastion, dimensions
# LogGroup and LogGroup + InstanceId).
LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}
FLEET_METRICS = ("Healthy", "LiveSessions", "Handshakes", "FailoverHandshakes", "DroppedDatagrams", "AuditEventsDropped")
# The alarms, by (namespace, metric): what each means, and how it must be set.
ALARMS = {
    ("AWS/NetworkELB", "HealthyHostCount"): ("no healthy bastion", {
        "Statistic": "Minimum", "ComparisonOperator": "LessThanThreshold", "Threshold": 1,
        "Period": 60, "EvaluationPeriods": 1, "TreatMissingData": "breaching"}),
    ("Bastion", "Healthy"): ("a bastion unhealthy more than a minute", {
        "Statistic": "Minimum", "ComparisonOperator": "LessThanThreshold", "Threshold": 1,
        "Period": 60, "EvaluationPeriods": 2, "TreatMissingData": "notBreaching"}),
    ("Bastion", "ConfigSourceFailing"): ("config source failing", {
        "Statistic": "Maximum", "ComparisonOperator": "GreaterThanOrEqualToThreshold", "Threshold": 1,
        "Period": 60, "EvaluationPeriods": 3}),
    ("Bastion", "RestartPending"): ("restart pending", {
        "Statistic": "Maximum", "ComparisonOperator": "GreaterThanOrEqualToThreshold", "Threshold": 1,
        "Period": 60, "EvaluationPeriods": 5}),
}
# What stands for what only a deployment knows, when a value is rendered.
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012",
          "AWS::StackName": "bastion", "AWS::URLSuffix": "amazonaws.com"}
# An operator's config without a final newline: what the stack appends must bring its own.
DUMMY_CONFIG = '[interface]\nprivate_key_ssm = "/bastion/key"\naddress = ["10.100.0.1/24"]'


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
    problems += check_siblings(resources, groups, parameters, listen_port)
    problems += check_cloudwatch(template, facts)
    facts["resources"] = sorted({r.get("Type") for r in resources.values()})
    return problems, facts


def statements(policy):
    return policy.get("PolicyDocument", {}).get("Statement", [])


def check_siblings(resources, groups, parameters, listen_port):
    """With [siblings] appended to the user-data: the actions it calls are allowed, the
    deregistration on this stack's target group only, and the bastions reach each other on the
    WireGuard port (the sibling relay at scale-in)."""
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
    for action in ("elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DeregisterTargets",
                   "autoscaling:SetInstanceHealth", "ec2:DescribeNetworkInterfaces"):
        if action not in allowed:
            problems.append(f"[siblings] is in the user-data but the bastions may not call {action}")
    deregister = allowed.get("elasticloadbalancing:DeregisterTargets")
    if deregister is not None and not (isinstance(deregister, dict) and deregister.get("Ref") in groups):
        problems.append(f"elasticloadbalancing:DeregisterTargets is allowed on {deregister!r}, expected this stack's target group only")
    if not any(admits_siblings(rule, listen_port) for rule in of_type(resources, "AWS::EC2::SecurityGroupIngress").values()):
        problems.append(f"[siblings] is in the user-data but the bastions cannot reach each other on the WireGuard port "
                        f"(the sibling relay): expected an ingress of udp {listen_port} to their security group from itself")
    if "register_self = true" in text:
        problems += check_ip_targets(resources, groups, parameters)
    return problems


def admits_siblings(rule, listen_port):
    """Whether a SecurityGroupIngress resource admits UDP on the WireGuard port to a group from
    that same group."""
    group, source = rule.get("GroupId"), rule.get("SourceSecurityGroupId")
    return (rule.get("IpProtocol") == "udp" and rule.get("FromPort", 0) <= listen_port <= rule.get("ToPort", -1)
            and isinstance(group, dict) and group == source)


def conditional_statements(resources):
    """Every policy statement, those inside an Fn::If too (both branches)."""
    found = []
    for policy in of_type(resources, "AWS::IAM::Policy").values():
        for st in statements(policy):
            for branch in branches(st):
                if isinstance(branch, dict) and "Action" in branch:
                    found.append(branch)
    return found


def possible_values(value, parameters):
    """What value can be: each Fn::If branch, a parameter's allowed values."""
    out = []
    for b in branches(value):
        if isinstance(b, dict) and set(b) == {"Ref"} and b["Ref"] in parameters:
            parameter = parameters[b["Ref"]]
            out += [str(v) for v in parameter.get("AllowedValues", [parameter.get("Default")])]
        else:
            out.append(b)
    return out


def check_ip_targets(resources, groups, parameters):
    """ip targets (register_self and take_over_addresses in the user-data): the target group
    can be of type ip, the bastions get a secondary address, and they may register their own
    address in this target group and move addresses only in the stack's subnets."""
    problems = []
    for name, tg in groups.items():
        if "ip" not in possible_values(tg.get("TargetType"), parameters):
            problems.append(f"{name}: TargetType {tg.get('TargetType')!r} never ip, but the user-data makes the bastions ip targets")
    allowed = {}
    for st in conditional_statements(resources):
        actions = st.get("Action")
        for action in actions if isinstance(actions, list) else [actions]:
            allowed[action] = st
    register = allowed.get("elasticloadbalancing:RegisterTargets")
    if register is None:
        problems.append("ip targets: the bastions may not call elasticloadbalancing:RegisterTargets (they register themselves)")
    elif not (isinstance(register.get("Resource"), dict) and register["Resource"].get("Ref") in groups):
        problems.append(f"elasticloadbalancing:RegisterTargets is allowed on {register.get('Resource')!r}, expected this stack's target group only")
    if "ec2:DescribeNetworkInterfaces" not in allowed:
        problems.append("ip targets: the bastions may not call ec2:DescribeNetworkInterfaces (finding a dead target's instance)")
    for action in ("ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"):
        st = allowed.get(action)
        if st is None:
            problems.append(f"ip targets: the bastions may not call {action} (taking over a dead sibling's address)")
        elif not any("ec2:Subnet" in (st.get("Condition") or {}).get(op, {}) for op in ("ArnEquals", "StringEquals")):
            problems.append(f"{action} is allowed without an ec2:Subnet condition (ArnEquals), expected only in the stack's subnets")
    interfaces = json.dumps([lt.get("LaunchTemplateData", {}).get("NetworkInterfaces")
                             for lt in of_type(resources, "AWS::EC2::LaunchTemplate").values()])
    if not re.search(r'"SecondaryPrivateIpAddressCount": [1-9]', interfaces):
        problems.append("LaunchTemplate: ip targets but no SecondaryPrivateIpAddressCount >= 1: the bastions have no movable address")
    return problems


def render(value, template, given=None):
    """The string CloudFormation would make of value (Ref, Fn::GetAtt, Fn::Join, Fn::Sub,
    Fn::Base64 before encoding), with stand-ins for what only a deployment knows: PSEUDO, a
    parameter's given value or default, `dummy-NAME` for a resource's name and
    `dummy-NAME-ATTRIBUTE` for its attributes (a log group's Arn as CloudFormation gives it).
    Raises KeyError for a name that is not in the template, ValueError for anything else."""
    given = given or {}
    resources = template.get("Resources", {})
    parameters = template.get("Parameters", {})

    def ref(name):
        if name in given:
            return given[name]
        if name in PSEUDO:
            return PSEUDO[name]
        if name in parameters:
            default = parameters[name].get("Default")
            return f"dummy-{name}" if default in (None, "") else str(default)
        if name in resources:
            return f"dummy-{name}"
        raise KeyError(name)

    def getatt(name, attribute):
        if name not in resources:
            raise KeyError(name)
        if resources[name].get("Type") == "AWS::Logs::LogGroup" and attribute == "Arn":
            return f"arn:{PSEUDO['AWS::Partition']}:logs:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:log-group:{ref(name)}:*"
        return f"dummy-{name}-{attribute}"

    def go(v):
        if isinstance(v, str):
            return str(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
        if isinstance(v, dict) and len(v) == 1:
            ((fn, arg),) = v.items()
            if fn == "Ref":
                return ref(arg)
            if fn == "Fn::GetAtt":
                return getatt(*(arg.split(".", 1) if isinstance(arg, str) else arg))
            if fn == "Fn::Join":
                return go(arg[0]).join(go(x) for x in arg[1])
            if fn == "Fn::Base64":
                return go(arg)
            if fn == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg

                def one(m):
                    key = m.group(1)
                    if key.startswith("!"):
                        return "${" + key[1:] + "}"
                    if key in variables:
                        return go(variables[key])
                    if "." in key and key.split(".", 1)[0] in resources:
                        return getatt(*key.split(".", 1))
                    return ref(key)

                return re.sub(r"\$\{([^}]*)\}", one, text)
        raise ValueError(f"cannot render {v!r}")

    return go(value)


def branches(value):
    """Every value value can come to, one per way through its Fn::If (nested ones too)."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"} and len(value["Fn::If"]) == 3:
            return branches(value["Fn::If"][1]) + branches(value["Fn::If"][2])
        out = [{}]
        for key, v in value.items():
            out = [{**o, key: b} for o in out for b in branches(v)]
        return out
    if isinstance(value, list):
        out = [[]]
        for v in value:
            out = [o + [b] for o in out for b in branches(v)]
        return out
    return [value]


def listed(value):
    return value if isinstance(value, list) else [value]


def getatt_of(value):
    """(resource, attribute) of an Fn::GetAtt, else None."""
    if isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
        arg = value["Fn::GetAtt"]
        return tuple(arg.split(".", 1) if isinstance(arg, str) else arg)
    return None


def check_cloudwatch(template, facts):
    """[log] cloudwatch_group in the user-data, the role's logs permissions, the alarms and the
    dashboard, against the stack's one log group."""
    resources = template.get("Resources", {})
    groups = of_type(resources, "AWS::Logs::LogGroup")
    if len(groups) != 1:
        return [f"expected one log group (what every bastion's [log] cloudwatch_group names), found {len(groups)}"]
    group = next(iter(groups))
    facts["log_group"] = group
    return (check_log_section(template, group) + check_log_permissions(template, group)
            + check_alarms(template, group, facts) + check_dashboard(template, group, facts))


def check_log_section(template, group):
    """Every way the user-data can come out, appended to an operator's config, is valid TOML and
    names the stack's log group in [log] cloudwatch_group."""
    problems = []
    name = render({"Ref": group}, template)
    for lt_name, lt in of_type(template.get("Resources", {}), "AWS::EC2::LaunchTemplate").items():
        for i, branch in enumerate(branches(lt.get("LaunchTemplateData", {}).get("UserData")), 1):
            try:
                text = render(branch, template, {"BastionConfig": DUMMY_CONFIG})
            except (KeyError, ValueError) as e:
                problems.append(f"{lt_name}: user-data branch {i} cannot be read: {e}")
                continue
            try:
                config = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                problems.append(f"{lt_name}: user-data branch {i} is not valid TOML after a config ({e}): {text!r}")
                continue
            if config.get("log", {}).get("cloudwatch_group") != name:
                problems.append(f"{lt_name}: user-data branch {i} has no [log] cloudwatch_group naming the stack's log group {group} (its [log]: {config.get('log')})")
    return problems


def check_log_permissions(template, group):
    """logs:CreateLogStream on the group, logs:PutLogEvents on its streams, and no other logs
    action or resource, in any policy of the template."""
    problems = []
    resources = template.get("Resources", {})
    arn = render({"Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:${%s}" % group}, template)
    on_group, on_streams = {arn, arn + ":*"}, {arn + ":*", arn + ":log-stream:*"}
    documents = [(f"{n}/{p.get('PolicyName')}", p) for n, role in of_type(resources, "AWS::IAM::Role").items() for p in role.get("Policies", [])]
    documents += list(of_type(resources, "AWS::IAM::Policy").items()) + list(of_type(resources, "AWS::IAM::ManagedPolicy").items())
    allowed = {}
    for name, policy in documents:
        for st in statements(policy):
            if st.get("Effect") != "Allow":
                continue
            if "NotAction" in st or "NotResource" in st:
                problems.append(f"{name}: an Allow with NotAction or NotResource grants logs actions beyond logs:CreateLogStream and logs:PutLogEvents")
                continue
            actions = [a for a in listed(st.get("Action")) if isinstance(a, str) and (a == "*" or a.lower().startswith("logs:"))]
            if not actions:
                continue
            for action in actions:
                if action not in LOG_ACTIONS:
                    problems.append(f"{name}: the bastions may call {action}, expected exactly logs:CreateLogStream and logs:PutLogEvents")
            where = []
            for r in listed(st.get("Resource")):
                try:
                    where.append(render(r, template))
                except (KeyError, ValueError):
                    where.append(repr(r))
            wrong = [r for r in where if r not in on_group | on_streams]
            if wrong:
                problems.append(f"{name}: {', '.join(actions)} allowed on {wrong}, expected only on the stack's log group {group} and its streams")
            for action in actions:
                allowed.setdefault(action, set()).update(where)
    if not allowed.get("logs:CreateLogStream", set()) & on_group:
        problems.append(f"the bastions may not call logs:CreateLogStream on the stack's log group {group}")
    if not allowed.get("logs:PutLogEvents", set()) & on_streams:
        problems.append(f"the bastions may not call logs:PutLogEvents on the streams of the stack's log group {group}")
    return problems


def check_alarms(template, group, facts):
    """The four alarms, each on its metric as ALARMS says, and each notifying AlarmTopicArn
    under a condition that it is set (no action without it)."""
    problems = []
    resources = template.get("Resources", {})
    topic = "AlarmTopicArn"
    if template.get("Parameters", {}).get(topic, {}).get("Default") != "":
        problems.append(f"expected an optional parameter {topic} (default empty) for the alarms' actions")
    is_set = {n for n, c in template.get("Conditions", {}).items()
              if c in ({"Fn::Not": [{"Fn::Equals": [{"Ref": topic}, ""]}]}, {"Fn::Not": [{"Fn::Equals": ["", {"Ref": topic}]}]})}
    alarms = of_type(resources, "AWS::CloudWatch::Alarm")
    facts["alarms"] = sorted(alarms)
    for (namespace, metric), (what, expected) in ALARMS.items():
        found = {n: a for n, a in alarms.items() if a.get("Namespace") == namespace and a.get("MetricName") == metric}
        if len(found) != 1:
            problems.append(f"expected one alarm on {namespace} {metric} ({what}), found {len(found)}")
            continue
        ((name, alarm),) = found.items()
        for key, value in expected.items():
            got = alarm.get(key)
            try:
                same = float(str(got)) == float(value) if isinstance(value, int) else got == value
            except ValueError:
                same = False
            if not same:
                problems.append(f"{name}: {key} {got!r}, expected {value!r} ({what})")
        points = alarm.get("DatapointsToAlarm", alarm.get("EvaluationPeriods"))
        if str(points) != str(expected["EvaluationPeriods"]):
            problems.append(f"{name}: DatapointsToAlarm {points!r}, expected every one of the {expected['EvaluationPeriods']} periods ({what})")
        dimensions = {d.get("Name"): d.get("Value") for d in alarm.get("Dimensions", [])}
        if namespace == "Bastion":
            if dimensions != {"LogGroup": {"Ref": group}}:
                problems.append(f"{name}: dimensions {dimensions}, expected LogGroup = the stack's log group {group} only (the fleet's series)")
        else:
            lb, tg = getatt_of(dimensions.get("LoadBalancer")), getatt_of(dimensions.get("TargetGroup"))
            if (not lb or lb[1] != "LoadBalancerFullName" or resources.get(lb[0], {}).get("Type") != "AWS::ElasticLoadBalancingV2::LoadBalancer"
                    or not tg or tg[1] != "TargetGroupFullName" or resources.get(tg[0], {}).get("Type") != "AWS::ElasticLoadBalancingV2::TargetGroup"
                    or set(dimensions) - {"LoadBalancer", "TargetGroup", "AvailabilityZone"}):
                problems.append(f"{name}: dimensions {dimensions}, expected LoadBalancer = the NLB's LoadBalancerFullName and TargetGroup = the target group's TargetGroupFullName")
        for key in ("AlarmActions", "OKActions"):
            actions = alarm.get(key)
            choice = actions.get("Fn::If") if isinstance(actions, dict) and set(actions) == {"Fn::If"} else None
            if not (choice and len(choice) == 3 and choice[0] in is_set and choice[1] == [{"Ref": topic}]
                    and choice[2] == {"Ref": "AWS::NoValue"}):
                problems.append(f"{name}: {key} {actions!r}, expected [{topic}] when a condition says it is set, else AWS::NoValue")
    return problems


def check_dashboard(template, group, facts):
    """The dashboard's body is JSON once substituted, and its metric widgets show the fleet's
    metrics (the stack's log group) and the NLB's host counts."""
    dashboards = of_type(template.get("Resources", {}), "AWS::CloudWatch::Dashboard")
    if len(dashboards) != 1:
        return [f"expected one dashboard, found {len(dashboards)}"]
    ((name, dashboard),) = dashboards.items()
    try:
        body = json.loads(render(dashboard.get("DashboardBody"), template))
    except (KeyError, ValueError) as e:
        return [f"{name}: DashboardBody is not JSON once substituted: {e}"]
    shown = set()
    for widget in body.get("widgets", []) if isinstance(body, dict) else []:
        properties = widget.get("properties", {})
        if widget.get("type") != "metric":
            continue
        previous = []
        for entry in properties.get("metrics", []):
            options = next((x for x in entry if isinstance(x, dict)), {})
            parts = [x for x in entry if not isinstance(x, dict)]
            parts = [previous[i] if x == "." and i < len(previous) else x for i, x in enumerate(parts)]
            if "expression" in options or len(parts) < 2:
                continue
            previous = parts
            dimensions = dict(zip(parts[2::2], parts[3::2]))
            shown.add((parts[0], parts[1], options.get("stat", properties.get("stat", "Average")), dimensions.get("LogGroup")))
    facts["dashboard_metrics"] = sorted(f"{n}/{m} {s}" for n, m, s, _ in shown)
    problems = []
    group_name = render({"Ref": group}, template)
    for metric in FLEET_METRICS:
        if not any(n == "Bastion" and m == metric and g == group_name for n, m, _, g in shown):
            problems.append(f"{name}: no widget shows Bastion {metric} of the stack's log group {group}")
    for stat in ("Minimum", "Sum"):
        if ("Bastion", "Healthy", stat, group_name) not in shown:
            problems.append(f"{name}: no widget shows Bastion Healthy {stat} (the lowest, and how many are healthy)")
    for metric in ("HealthyHostCount", "UnHealthyHostCount"):
        if not any(n == "AWS/NetworkELB" and m == metric for n, m, _, _ in shown):
            problems.append(f"{name}: no widget shows the NLB's {metric}")
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
