#!/usr/bin/env python3
"""The deployed stack, end to end: infra/template.yaml through the emulator's CloudFormation
(with the SAM transform), the one `bootstrap` package uploaded to its S3, a scenario put with
the CLI, one plain PutEvents, and both emails of a scenario with a one-minute delay read back:
through the deployed functions, the bus rule, their event source mappings and the
`rate(1 minute)` tick, never `relance dev run`; the functions' embedded metric format lines
read back from their CloudWatch Logs. Then four unused functions invoked cold and warm.

Run by scripts/deploy-test, which builds the package and starts the emulator; exits non-zero
on any failure, printing what the stack or the functions said.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
import zipfile

import boto3

BUCKET = "relance-deploy"
STACK = "relance"
PREFIX = "relance-"
SENDER = "news@example.com"
# FunctionConcurrency, deployed at a value other than its default.
CONCURRENCY = 20

SCENARIO = """\
id: deployed-welcome
name: Welcome, then a minute later
launch: {type: trigger, event: contact.created}
messages:
  hello: {channel: email, subject: "Welcome {{ contact.first_name }}", text: "Hello"}
  later: {channel: email, subject: "A minute later, {{ contact.first_name }}", text: "Still here"}
steps:
  - {id: hello, send: hello, next: pause}
  - {id: pause, delay: {after: PT1M}, next: later}
  - {id: later, send: later, next: done}
  - {id: done, end: success}
"""


def log(message):
    print(f"[deploy-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def emulator_read(endpoint, path):
    with urllib.request.urlopen(endpoint + path, timeout=10) as r:
        return json.load(r)


def emails_to(endpoint, address):
    messages = emulator_read(endpoint, "/_ministack/ses/messages")["messages"]
    found = []
    for per_identity in messages.values():
        for m in per_identity:
            if address in (m.get("To") or []):
                found.append(m)
    return found


def emf_totals(logs, scenario):
    """The CloudWatch embedded metric format documents the deployed functions printed, read
    where Lambda puts a function's output (CloudWatch Logs, `/aws/lambda/<name>`): per metric
    name and dimension set, the sum of the values of the documents whose `scenario` dimension
    is `scenario`."""
    totals = {}
    groups = logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{PREFIX}")["logGroups"]
    for group in groups:
        kwargs = {"logGroupName": group["logGroupName"]}
        while True:
            page = logs.filter_log_events(**kwargs)
            for event in page["events"]:
                message = event["message"]
                if not message.startswith('{"_aws"'):
                    continue
                doc = json.loads(message)
                for directive in doc["_aws"]["CloudWatchMetrics"]:
                    if directive["Namespace"] != "Relance" or doc.get("scenario") != scenario:
                        continue
                    dims = tuple(sorted((d, doc[d]) for dset in directive["Dimensions"] for d in dset))
                    for metric in directive["Metrics"]:
                        value = doc[metric["Name"]]
                        value = sum(value) if isinstance(value, list) else value
                        key = (metric["Name"], dims)
                        totals[key] = totals.get(key, 0) + value
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
    return totals


def package(bootstrap, out):
    """The Lambda package: one zip holding the executable `bootstrap`."""
    info = zipfile.ZipInfo("bootstrap", date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = 0o755 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(bootstrap, "rb") as f, zipfile.ZipFile(out, "w") as z:
        z.writestr(info, f.read(), compresslevel=9)
    return os.path.getsize(out)


def deploy(clients, template_path, zip_path):
    s3, cfn = clients["s3"], clients["cloudformation"]
    s3.create_bucket(Bucket=BUCKET)
    with open(zip_path, "rb") as f:
        s3.put_object(Bucket=BUCKET, Key="bootstrap.zip", Body=f)
    with open(template_path) as f:
        template = f.read()
    uses = template.count("CodeUri: ../")
    if uses == 0:
        raise SystemExit("infra/template.yaml: no `CodeUri: ../` to point at the package")
    template = template.replace("CodeUri: ../", f"CodeUri: s3://{BUCKET}/bootstrap.zip")
    # From S3, as `sam deploy` does: a TemplateBody is limited to 51,200 bytes, a template in
    # S3 to 1 MB.
    s3.put_object(Bucket=BUCKET, Key="template.yaml", Body=template.encode())
    start = time.monotonic()
    cfn.create_stack(
        StackName=STACK,
        TemplateURL=f"https://s3.amazonaws.com/{BUCKET}/template.yaml",
        Parameters=[
            {"ParameterKey": "EmailIdentity", "ParameterValue": SENDER},
            # Not the default, to see it reach every function that does the work.
            {"ParameterKey": "FunctionConcurrency", "ParameterValue": str(CONCURRENCY)},
        ],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    deadline = start + 600
    while True:
        stack = cfn.describe_stacks(StackName=STACK)["Stacks"][0]
        status = stack["StackStatus"]
        if status == "CREATE_COMPLETE":
            break
        if status.endswith("FAILED") or "ROLLBACK" in status or time.monotonic() > deadline:
            for e in cfn.describe_stack_events(StackName=STACK)["StackEvents"]:
                if "FAILED" in e.get("ResourceStatus", ""):
                    print(f"  {e['LogicalResourceId']}: {e.get('ResourceStatusReason')}")
            raise SystemExit(f"stack {STACK}: {status} ({stack.get('StackStatusReason')})")
        time.sleep(2)
    resources = cfn.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    functions = sorted(
        r["PhysicalResourceId"] for r in resources if r["ResourceType"] == "AWS::Lambda::Function"
    )
    return time.monotonic() - start, len(resources), uses, functions


def check_concurrency(lam):
    """FunctionConcurrency is each queue-fed worker's pollers' maximum (and its reserved
    concurrency, which the emulator's CloudFormation does not apply: checked where it does)."""
    for name in ["step-executor", "email-sender", "engagement"]:
        mappings = lam.list_event_source_mappings(FunctionName=PREFIX + name)["EventSourceMappings"]
        pollers = [m.get("ScalingConfig", {}).get("MaximumConcurrency") for m in mappings]
        if pollers != [CONCURRENCY]:
            raise SystemExit(f"{PREFIX}{name}'s queue pollers: {pollers}, expected [{CONCURRENCY}]")
        reserved = lam.get_function_concurrency(FunctionName=PREFIX + name).get(
            "ReservedConcurrentExecutions"
        )
        if reserved not in (None, CONCURRENCY):
            raise SystemExit(f"{PREFIX}{name}: reserved concurrency {reserved}, expected {CONCURRENCY}")
    log(f"queue pollers at most {CONCURRENCY} (FunctionConcurrency)")


def relance(binary, endpoint, *args):
    out = subprocess.run(
        [binary, *args, "--endpoint", endpoint, "--prefix", PREFIX],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"relance {' '.join(args)}: exit {out.returncode}\n{out.stderr}")
    return out.stdout


def invoke_seconds(lam, name, payload):
    start = time.monotonic()
    out = lam.invoke(FunctionName=name, Payload=json.dumps(payload).encode())
    elapsed = time.monotonic() - start
    body = out["Payload"].read().decode()
    if out.get("FunctionError"):
        raise SystemExit(f"{name}: {out['FunctionError']}: {body}")
    return elapsed, body


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True, help="the bootstrap executable")
    parser.add_argument("--relance", required=True, help="the relance CLI")
    parser.add_argument("--template", default="infra/template.yaml")
    parser.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL"))
    parser.add_argument("--workdir", default="target/deploy")
    parser.add_argument("--report", help="write the figures as JSON here")
    args = parser.parse_args()
    if not args.endpoint:
        raise SystemExit("--endpoint or AWS_ENDPOINT_URL: not set")
    os.makedirs(args.workdir, exist_ok=True)
    endpoint = args.endpoint.rstrip("/")
    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    clients = {
        name: session.client(name, endpoint_url=endpoint)
        for name in ["s3", "cloudformation", "sesv2", "events", "lambda", "logs", "dynamodb"]
    }
    figures = {}

    zip_path = os.path.join(args.workdir, "bootstrap.zip")
    figures["package_bytes"] = package(args.bootstrap, zip_path)
    figures["bootstrap_bytes"] = os.path.getsize(args.bootstrap)
    log(f"package {zip_path}: {figures['package_bytes'] / 1e6:.1f} MB zipped")

    seconds, count, uses, functions = deploy(clients, args.template, zip_path)
    figures["create_stack_seconds"] = round(seconds, 1)
    log(f"stack {STACK}: CREATE_COMPLETE in {seconds:.0f} s, {count} resources, {len(functions)} functions from one package ({uses} CodeUri)")
    # Every function but the web push sender, which the template creates only with a VAPID key.
    expected = sorted(
        PREFIX + name
        for name in ["trigger", "tick", "step-executor", "launch", "engagement", "email-sender",
                     "sms-sender", "push-sender", "webhook-sender", "unsubscribe"]
    )
    if functions != expected:
        raise SystemExit(f"deployed functions {functions}, expected {expected}")
    check_concurrency(clients["lambda"])

    # SESv2 refuses unverified senders, as the AWS sandbox does.
    clients["sesv2"].create_email_identity(EmailIdentity=SENDER)
    scenario = os.path.join(args.workdir, "deployed-welcome.yaml")
    with open(scenario, "w") as f:
        f.write(SCENARIO)
    relance(args.relance, endpoint, "scenario", "put", scenario)
    relance(args.relance, endpoint, "scenario", "activate", "deployed-welcome")

    # The application's side: one plain PutEvents, as any SDK sends it.
    address = f"ana-{os.getpid()}@example.com"
    sent_at = time.monotonic()
    out = clients["events"].put_events(
        Entries=[
            {
                "EventBusName": f"{PREFIX}bus",
                "Source": "com.example.shop",
                "DetailType": "relance.contact",
                "Detail": json.dumps(
                    {"contact": {"id": f"ana-{os.getpid()}", "email": address, "first_name": "Ana"}}
                ),
            }
        ]
    )
    if out["FailedEntryCount"] != 0:
        raise SystemExit(f"PutEvents: {out}")
    log(f"PutEvents relance.contact for {address}")

    seen = {}
    deadline = sent_at + 300
    while time.monotonic() < deadline and len(seen) < 2:
        for m in emails_to(endpoint, address):
            subject = m.get("Subject") or ""
            seen.setdefault(subject, time.monotonic() - sent_at)
        time.sleep(1)
    log(f"emails to {address}: " + ", ".join(f"{s!r} after {t:.0f} s" for s, t in seen.items()))
    first, later = "Welcome Ana", "A minute later, Ana"
    if first not in seen:
        raise SystemExit(f"no welcome email to {address} within 300 s (the trigger and the email sender); seen {seen}")
    if later not in seen:
        raise SystemExit(f"no second email to {address} within 300 s (the tick, the step executor); seen {seen}")
    if len(seen) != 2:
        raise SystemExit(f"expected exactly the two emails, seen {seen}")
    gap = seen[later] - seen[first]
    # The delay is one minute: the second email cannot come sooner (seen one poll late at most).
    if gap < 59:
        raise SystemExit(f"the second email came {gap:.0f} s after the first, before its one-minute delay")
    figures["first_email_seconds"] = round(seen[first], 1)
    figures["second_email_seconds"] = round(seen[later], 1)
    journal = json.loads(relance(args.relance, endpoint, "journal", "deployed-welcome", "--json"))
    if journal.get("ends", {}).get("success") != 1:
        raise SystemExit(f"the journal does not show one success: {journal}")
    log("journal: one entry ended success")

    # The deployed tick beat the heartbeat of the stored layouts (on these new tables, made by
    # CloudFormation, the first need of a layout or the first beat set its hour's delay).
    for layout in ["entry_enrollments", "journal_parts", "timer_parts"]:
        item = clients["dynamodb"].get_item(
            TableName=PREFIX + "state",
            Key={"pk": {"S": "settings"}, "sk": {"S": layout}},
            ConsistentRead=True,
        ).get("Item", {})
        if "alive" not in item or "from" not in item:
            raise SystemExit(f"settings/{layout}: no heartbeat from the deployed tick: {item}")
        ahead = int(item["from"]["N"]) - int(item["alive"]["N"])
        if not 0 < ahead <= 3600:
            raise SystemExit(f"settings/{layout}: from {ahead} s after the heartbeat, not within the hour")
    log("layouts: the deployed tick's heartbeat is in the three settings")

    # The deployed tick's check of who reads the bus: the stack's own rule (other sources'
    # events) receives neither informational event, so both are found unheard.
    item = clients["dynamodb"].get_item(
        TableName=PREFIX + "state",
        Key={"pk": {"S": "settings"}, "sk": {"S": "heard_events"}},
        ConsistentRead=True,
    ).get("Item", {})
    unheard = sorted(v["S"] for v in item.get("unheard", {}).get("L", []))
    if "checked" not in item or unheard != ["relance.enrollment.ended", "relance.goal.reached"]:
        raise SystemExit(f"settings/heard_events: not the deployed tick's finding (both unheard): {item}")
    log("listeners: the deployed tick found nothing on the bus receives the informational events")

    # The functions' metrics: EMF lines on stdout, which Lambda puts in CloudWatch Logs;
    # namespace Relance, labels as dimensions; every function that counted (the trigger for the
    # entry and the first email, the step executor for the second) flushed after its invocation.
    want = {
        ("relance_entries_total", (("result", "entered"), ("scenario", "deployed-welcome"))): 1,
        ("relance_sends_total", (("channel", "email"), ("result", "sent"),
                                 ("scenario", "deployed-welcome"), ("step", "hello"))): 1,
        ("relance_sends_total", (("channel", "email"), ("result", "sent"),
                                 ("scenario", "deployed-welcome"), ("step", "later"))): 1,
    }
    deadline = time.monotonic() + 20
    while True:
        totals = emf_totals(clients["logs"], "deployed-welcome")
        if all(totals.get(k) == v for k, v in want.items()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    missing = {k: (v, totals.get(k)) for k, v in want.items() if totals.get(k) != v}
    if missing:
        raise SystemExit(f"the functions' EMF metrics (expected, counted): {missing}; all counted: {totals}")
    log(f"EMF metrics from the deployed functions: {len(totals)} series of deployed-welcome, entries and both sends counted once")

    # Cold start: functions the scenario did not use (their queues are empty), each invoked
    # with an empty batch, once cold (the emulator starts the process) then warm. The
    # emulator's own handling of an invoke (about 100 ms here, warm or cold) hides an init
    # shorter than that: tests/deploy/cold_start.py times the bootstrap alone.
    lam = clients["lambda"]
    invokes = {}
    for name in ["launch", "sms-sender", "push-sender", "webhook-sender"]:
        cold, body = invoke_seconds(lam, PREFIX + name, {"Records": []})
        if json.loads(body) != {"batchItemFailures": []}:
            raise SystemExit(f"{name}: an empty batch answered {body}")
        warm = min(invoke_seconds(lam, PREFIX + name, {"Records": []})[0] for _ in range(3))
        invokes[name] = {"cold_ms": round(cold * 1000, 1), "warm_ms": round(warm * 1000, 1)}
        log(f"{name}: cold invoke {cold * 1000:.0f} ms, warm {warm * 1000:.0f} ms (through the emulator)")
    figures["invoke"] = invokes

    if args.report:
        with open(args.report, "w") as f:
            json.dump(figures, f, indent=2)
    log("passed: " + json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
