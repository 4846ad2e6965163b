#!/usr/bin/env python3
"""What the AWS API emulator holds, read with boto3 (an independent client): the test never
checks our client with itself. Prints one JSON object.

  readback SNAPSHOT IMAGE   every block of the snapshot against the image file
  image NAME                the AMI of that name (id, state, snapshots)
  permissions AMI           who may launch the AMI, who may create volumes of its snapshots
  snapshots-tagged NAME     snapshots carrying bastion:image=NAME
  recording FILE IMAGE      what the client sent, from moto's recorder: the actions in order,
                            RegisterImage's and StartSnapshot's parameters, and whether every
                            block's checksum and the whole snapshot's are right
  leftover NAME             start (and leave pending) a snapshot tagged as an interrupted run would
  iam-user ACTION...        an IAM user allowed only ACTIONs (on a moto with authentication);
                            prints its key id and secret
  put-parameter NAME TYPE FILE   write an SSM parameter (String or SecureString) with FILE's
                            text (a file, so a key is never on a command line); its version
  delete-parameter NAME     delete an SSM parameter
"""

import base64
import hashlib
import json
import urllib.parse
import os
import sys

import boto3

BLOCK = 512 * 1024


def client(service, region):
    return boto3.client(service, endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=region,
                        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
                        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"))


def readback(region, snapshot, image):
    ebs = client("ebs", region)
    blocks, token = [], None
    while True:
        kw = {"SnapshotId": snapshot}
        if token:
            kw["NextToken"] = token
        page = ebs.list_snapshot_blocks(**kw)
        blocks += page["Blocks"]
        token = page.get("NextToken")
        if not token:
            break
    size = os.path.getsize(image)
    expected = []
    mismatched = []
    with open(image, "rb") as f:
        for i in range((size + BLOCK - 1) // BLOCK):
            f.seek(i * BLOCK)
            data = f.read(BLOCK).ljust(BLOCK, b"\0")
            if data.strip(b"\0"):
                expected.append(i)
        for b in blocks:
            got = ebs.get_snapshot_block(SnapshotId=snapshot, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"])
            data = got["BlockData"].read()
            f.seek(b["BlockIndex"] * BLOCK)
            want = f.read(BLOCK).ljust(BLOCK, b"\0")
            if data != want:
                mismatched.append(b["BlockIndex"])
    return {"blocks": sorted(b["BlockIndex"] for b in blocks), "expected": expected, "mismatched": mismatched,
            "sha256": hashlib.sha256(open(image, "rb").read()).hexdigest()}


def image(region, name):
    ec2 = client("ec2", region)
    found = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
    return [{"id": i["ImageId"], "state": i["State"], "name": i["Name"],
             "snapshots": [m["Ebs"]["SnapshotId"] for m in i.get("BlockDeviceMappings", []) if "Ebs" in m]} for i in found]


def permissions(region, ami):
    ec2 = client("ec2", region)
    launch = ec2.describe_image_attribute(ImageId=ami, Attribute="launchPermission")["LaunchPermissions"]
    images = ec2.describe_images(ImageIds=[ami])["Images"]
    volumes = {}
    for m in images[0].get("BlockDeviceMappings", []):
        if "Ebs" in m:
            snap = m["Ebs"]["SnapshotId"]
            attr = ec2.describe_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission")
            volumes[snap] = [p.get("UserId") for p in attr.get("CreateVolumePermissions", [])]
    return {"launch": [p.get("UserId") for p in launch], "create_volume": volumes}


def snapshots_tagged(region, name):
    ec2 = client("ec2", region)
    found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:bastion:image", "Values": [name]}])["Snapshots"]
    return [{"id": s["SnapshotId"], "state": s["State"]} for s in found]


def action_of(r):
    body = base64.b64decode(r["body"]) if r.get("body_encoded") else (r.get("body") or "").encode()
    auth = r["headers"].get("Authorization", "")
    service = auth.split("Credential=", 1)[-1].split("/")[3] if "Credential=" in auth else "?"
    if service == "ec2" or service == "sts":
        form = dict(urllib.parse.parse_qsl(body.decode()))
        return f"{service}:{form.get('Action')}", form, body
    path = urllib.parse.urlparse(r["url"]).path
    m = r["method"]
    if m == "POST" and path == "/snapshots":
        name = "StartSnapshot"
    elif m == "PUT" and "/blocks/" in path:
        name = "PutSnapshotBlock"
    elif m == "POST" and path.startswith("/snapshots/completion/"):
        name = "CompleteSnapshot"
    elif m == "GET" and path.endswith("/blocks"):
        name = "ListSnapshotBlocks"
    elif m == "GET" and "/blocks/" in path:
        name = "GetSnapshotBlock"
    else:
        name = f"{m} {path}"
    return f"{service}:{name}", None, body


def records(path):
    """The recorder's objects; concurrent requests can share a line, so decode object by object."""
    text, decoder, at = open(path).read(), json.JSONDecoder(), 0
    while True:
        while at < len(text) and text[at] in " \n\r\t":
            at += 1
        if at >= len(text):
            return
        obj, at = decoder.raw_decode(text, at)
        yield obj


def recording(region, path, image):
    actions, register, start, complete = [], None, None, None
    puts, bad_checksums = 0, []
    digests = {}
    with open(image, "rb") as f:
        for r in records(path):
            if "/moto-api/" in r["url"]:
                continue
            action, form, body = action_of(r)
            actions.append(action)
            h = {k.lower(): v for k, v in r["headers"].items()}
            if action == "ec2:RegisterImage":
                register = form
            elif action == "ebs:StartSnapshot":
                start = json.loads(body)
            elif action == "ebs:PutSnapshotBlock":
                puts += 1
                index = int(r["url"].rsplit("/", 1)[1].split("?")[0])
                f.seek(index * BLOCK)
                want = hashlib.sha256(f.read(BLOCK).ljust(BLOCK, b"\0")).digest()
                digests[index] = want
                if h.get("x-amz-checksum") != base64.b64encode(want).decode() or hashlib.sha256(body).digest() != want:
                    bad_checksums.append(index)
            elif action == "ebs:CompleteSnapshot":
                complete = h
    linear = base64.b64encode(hashlib.sha256(b"".join(digests[i] for i in sorted(digests))).digest()).decode()
    return {"actions": actions, "register": register, "start": start, "puts": puts, "bad_checksums": bad_checksums,
            "complete": {"changed_blocks": complete.get("x-amz-changedblockscount"), "checksum_ok": complete.get("x-amz-checksum") == linear,
                         "algorithm": complete.get("x-amz-checksum-algorithm"), "aggregation": complete.get("x-amz-checksum-aggregation-method")} if complete else None}


def leftover(region, name):
    ebs = client("ebs", region)
    s = ebs.start_snapshot(VolumeSize=1, Tags=[{"Key": "bastion:image", "Value": name}], Description="interrupted")
    return {"id": s["SnapshotId"]}


def iam_user(region, *actions):
    iam = client("iam", "us-east-1")
    iam.create_user(UserName="publisher")
    key = iam.create_access_key(UserName="publisher")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}]}
    iam.put_user_policy(UserName="publisher", PolicyName="only", PolicyDocument=json.dumps(policy))
    return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


def put_parameter(region, name, kind, path):
    with open(path) as f:
        value = f.read()
    answer = client("ssm", region).put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)
    return {"version": answer["Version"]}


def delete_parameter(region, name):
    client("ssm", region).delete_parameter(Name=name)
    return {}


def create_log_group(region, name):
    client("logs", region).create_log_group(logGroupName=name)
    return {}


def log_events(region, group, stream):
    """Every event of the stream, oldest first, as CloudWatch Logs holds them."""
    logs = client("logs", region)
    events, token = [], None
    while True:
        kwargs = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        try:
            page = logs.get_log_events(**kwargs)
        except logs.exceptions.ResourceNotFoundException:
            return {"events": []}  # no stream yet: nothing shipped
        events.extend({"timestamp": e["timestamp"], "message": e["message"]} for e in page["events"])
        if not page["events"] or page.get("nextForwardToken") == token:
            break
        token = page.get("nextForwardToken")
    return {"events": events}


def main():
    region = os.environ.get("AWS_REGION", "eu-west-1")
    what, args = sys.argv[1], sys.argv[2:]
    commands = {"readback": readback, "image": image, "permissions": permissions, "snapshots-tagged": snapshots_tagged,
                "recording": recording, "leftover": leftover, "iam-user": iam_user,
                "put-parameter": put_parameter, "delete-parameter": delete_parameter,
                "create-log-group": create_log_group, "log-events": log_events}
    result = commands[what](region, *args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
