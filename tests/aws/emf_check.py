#!/usr/bin/env python3
"""Reads one Embedded Metric Format record (the appliance's, from a CloudWatch Logs stream) and
checks it with AWS's own EMF library (`aws-embedded-metrics`): the namespace, every dimension
set, every metric name, value and unit and the timestamp go through the library's validators,
then the library writes the same figures as its own record, which must say what ours says
(directive and values). Prints {"ok": true, ...} or exits 1 saying what differs."""

import datetime
import json
import sys

from aws_embedded_metrics.logger.metrics_context import MetricsContext
from aws_embedded_metrics.serializers.log_serializer import LogSerializer


def main():
    ours = json.loads(open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read())
    meta = ours["_aws"]
    directives = meta["CloudWatchMetrics"]
    if len(directives) != 1:
        raise SystemExit(f"expected one metric directive, found {len(directives)}")
    directive = directives[0]
    context = MetricsContext.empty()
    context.namespace = directive["Namespace"]
    context.set_dimensions([{name: ours[name] for name in names} for names in directive["Dimensions"]])
    for metric in directive["Metrics"]:
        context.put_metric(metric["Name"], ours[metric["Name"]], metric.get("Unit", "None"))
    context.set_timestamp(datetime.datetime.fromtimestamp(meta["Timestamp"] / 1000, tz=datetime.timezone.utc))
    [theirs_text] = LogSerializer.serialize(context)
    theirs = json.loads(theirs_text)
    problems = []
    mine, lib = directive, theirs["_aws"]["CloudWatchMetrics"][0]
    if mine["Namespace"] != lib["Namespace"]:
        problems.append(f"namespace {mine['Namespace']!r} vs {lib['Namespace']!r}")
    if sorted(map(sorted, mine["Dimensions"])) != sorted(map(sorted, lib["Dimensions"])):
        problems.append(f"dimensions {mine['Dimensions']} vs {lib['Dimensions']}")
    if sorted(mine["Metrics"], key=lambda m: m["Name"]) != sorted(lib["Metrics"], key=lambda m: m["Name"]):
        problems.append(f"metrics {mine['Metrics']} vs {lib['Metrics']}")
    if meta["Timestamp"] != theirs["_aws"]["Timestamp"]:
        problems.append(f"timestamp {meta['Timestamp']} vs {theirs['_aws']['Timestamp']}")
    for key, value in theirs.items():
        if key != "_aws" and ours.get(key) != value:
            problems.append(f"{key}: {ours.get(key)!r} vs the library's {value!r}")
    if problems:
        print(json.dumps({"ok": False, "problems": problems}))
        sys.exit(1)
    print(json.dumps({"ok": True, "metrics": len(lib["Metrics"]), "dimension_sets": len(lib["Dimensions"])}))


if __name__ == "__main__":
    main()
