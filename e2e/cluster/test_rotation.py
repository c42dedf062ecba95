"""Rotation of Secret resources on the real control plane: `spec.rotation` reaches the engine
(DescribeSecret), a rotation shows in status, in the Rotation condition and in Events, a failing
step leaves AWSCURRENT alone and says why, and removing `spec.rotation` turns rotation off."""

from __future__ import annotations

import datetime as dt
import json
import socket
import uuid

from botocore.exceptions import ClientError

from cluster_helpers import (
    condition,
    get_coffer_secret,
    kubectl,
    kubectl_json,
    secrets_client,
    secret_manifest,
    wait_for_coffer_secret,
    wait_for_secret_ready,
    wait_until,
)
from test_secrets import apply, assert_no_value_in, read_value, wait_for_secret_event


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_declared_rotation_is_scheduled_and_an_api_rotation_shows_in_status(secrets_ns, plaintexts):
    name = unique("rot")
    apply(secret_manifest(
        name, secrets_ns.name,
        generate={"length": 20, "excludePunctuation": True},
        rotation={"schedule": "rate(1 days)", "duration": "2h"},
    ))
    obj = wait_for_coffer_secret(
        secrets_ns.name, name, "a next rotation date in status",
        lambda obj: bool(((obj.get("status") or {}).get("rotation") or {}).get("nextRotationDate")),
    )
    assert obj["status"]["rotation"]["state"] == "Idle", obj["status"]
    client = secrets_ns.client()
    described = client.describe_secret(SecretId=name)
    assert described["RotationEnabled"] is True
    assert described["RotationRules"] == {"ScheduleExpression": "rate(1 days)", "Duration": "2h"}
    assert "NextRotationDate" in described
    first = read_value(client, name, plaintexts)["SecretString"]

    token = client.rotate_secret(SecretId=name)["VersionId"]
    obj = wait_for_coffer_secret(
        secrets_ns.name, name, "the rotated version as current in status",
        lambda obj: (obj.get("status") or {}).get("currentVersion") == token
        and bool(obj["status"].get("rotation", {}).get("lastRotatedDate")),
    )
    rotation = condition(obj, "Rotation")
    assert rotation and rotation["status"] == "True", obj["status"]
    value = read_value(client, name, plaintexts)["SecretString"]
    assert value != first and len(value) == 20 and value.isalnum()
    assert client.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")["SecretString"] == first
    wait_for_secret_event(secrets_ns.name, name, "Rotated")
    assert_no_value_in(get_coffer_secret(secrets_ns.name, name), value)

    # Removing spec.rotation turns scheduled rotation off.
    apply(secret_manifest(name, secrets_ns.name, generate={"length": 20, "excludePunctuation": True}))
    wait_until(
        f"rotation of {name} turned off",
        lambda: client.describe_secret(SecretId=name),
        lambda described: described["RotationEnabled"] is False,
    )


def test_a_failing_step_keeps_current_and_is_reported(secrets_ns, plaintexts):
    name = unique("rot-fail")
    port = closed_port()
    template = json.dumps({
        "engine": "postgres", "host": "127.0.0.1", "port": port, "username": "nobody", "dbname": "postgres",
    })
    apply(secret_manifest(
        name, secrets_ns.name,
        generate={"template": template, "generateStringKey": "password"},
        rotation={"schedule": "rate(30 days)", "strategy": "postgres",
                  "postgres": {"variant": "singleUser", "tls": "disable"}},
    ))
    wait_for_secret_ready(secrets_ns.name, name)
    client = secrets_ns.client()
    before = read_value(client, name, plaintexts)
    token = client.rotate_secret(SecretId=name)["VersionId"]
    obj = wait_for_coffer_secret(
        secrets_ns.name, name, "a failed rotation step in status",
        lambda obj: ((obj.get("status") or {}).get("rotation") or {}).get("state") == "Failed",
    )
    rotation = obj["status"]["rotation"]
    assert rotation["pendingVersionId"] == token
    assert "setSecret failed" in rotation["lastError"] and str(port) in rotation["lastError"], rotation
    failed = condition(obj, "Rotation")
    assert failed["status"] == "False" and failed["reason"] == "RotationFailed", failed
    assert obj["status"]["currentVersion"] == before["VersionId"]
    wait_for_secret_event(secrets_ns.name, name, "RotationFailed")
    assert client.get_secret_value(SecretId=name)["VersionId"] == before["VersionId"]
    pending = read_value(client, name, plaintexts, VersionStage="AWSPENDING")["SecretString"]
    assert json.loads(pending)["username"] == "nobody"
    assert_no_value_in(obj, json.loads(pending)["password"])


# --------------------------------------------------------------------------------------------
# The job strategy, end to end through the controller. No kubelet runs Jobs here: the test plays
# each Job, as its pod would (PutSecretValue of the pending value with the Job's own
# ServiceAccount), and as the Job controller would (its status).
# --------------------------------------------------------------------------------------------

MANAGED_BY = "coffer.dev/e2e-test"
STEPS = ["createSecret", "setSecret", "testSecret", "finishSecret"]


def rotation_jobs(namespace: str, token: str) -> dict[str, dict]:
    """The rotation Jobs of `token` in `namespace`, by step (read from their environment)."""
    listed = kubectl_json("get", "jobs", "-n", namespace, "-l", "coffer.dev/rotation-step")
    found = {}
    for job in listed.get("items", []):
        containers = job["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item.get("value") for item in containers[0].get("env", [])}
        if env.get("COFFER_CLIENT_REQUEST_TOKEN") == token:
            found[env["COFFER_ROTATION_STEP"]] = job
    return found


def wait_for_job(namespace: str, token: str, step: str) -> dict:
    return wait_until(
        f"the {step} Job of rotation {token}",
        lambda: rotation_jobs(namespace, token).get(step),
        lambda job: job is not None,
    )


def finish_job(namespace: str, job: str, succeeded: bool) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    stamp = lambda at: at.isoformat().replace("+00:00", "Z")  # noqa: E731
    condition = lambda kind, reason: {  # noqa: E731
        "type": kind, "status": "True", "reason": reason, "message": "e2e",
        "lastProbeTime": stamp(now), "lastTransitionTime": stamp(now),
    }
    common = {"startTime": stamp(now - dt.timedelta(seconds=5)), "active": 0, "ready": 0, "terminating": 0}
    if succeeded:
        status = {**common, "completionTime": stamp(now), "succeeded": 1,
                  "conditions": [condition("SuccessCriteriaMet", "CompletionsReached"),
                                 condition("Complete", "CompletionsReached")]}
    else:
        status = {**common, "failed": 1,
                  "conditions": [condition("FailureTarget", "BackoffLimitExceeded"),
                                 condition("Failed", "BackoffLimitExceeded")]}
    kubectl("patch", "job", job, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))


def test_the_job_strategy_runs_a_job_per_step_and_their_status_drives_the_rotation(secrets_ns, plaintexts):
    name = unique("rot-job")
    template = {
        "metadata": {"labels": {"team": "payments"}},
        "spec": {
            "managedBy": MANAGED_BY,
            "template": {"spec": {"containers": [{"name": "rotate", "image": "example.invalid/rotate:1"}]}},
        },
    }
    apply(secret_manifest(
        name, secrets_ns.name, generate={},
        rotation={"schedule": "rate(30 days)", "strategy": "job", "job": {"template": template}},
    ))
    obj = wait_for_secret_ready(secrets_ns.name, name)
    arn = obj["status"]["arn"]
    client = secrets_ns.client()
    before = read_value(client, name, plaintexts)
    token = client.rotate_secret(SecretId=name)["VersionId"]

    job = wait_for_job(secrets_ns.name, token, "createSecret")
    spec = job["spec"]["template"]["spec"]
    env = {item["name"]: item.get("value") for item in spec["containers"][0]["env"]}
    assert env["COFFER_SECRET_ID"] == arn and env["COFFER_ROTATION_STEP"] == "createSecret", env
    account = spec["serviceAccountName"]
    assert account.startswith("coffer-rotation-"), account
    assert job["metadata"]["labels"]["team"] == "payments"
    owners = job["metadata"].get("ownerReferences") or []
    assert [(owner["kind"], owner["name"]) for owner in owners] == [("Secret", name)], owners

    # The Job's pod puts the pending value with the Job's own ServiceAccount; that account may
    # do nothing else with the secret.
    job_client = secrets_client(secrets_ns.endpoint, secrets_ns.name, account)
    pending = plaintexts.new()
    job_client.put_secret_value(SecretId=name, ClientRequestToken=token, SecretString=pending,
                                VersionStages=["AWSPENDING"])
    for refused in (
        lambda: job_client.put_secret_value(SecretId=name, SecretString="x" * 8),
        lambda: job_client.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT",
                                                       MoveToVersionId=token,
                                                       RemoveFromVersionId=before["VersionId"]),
        lambda: job_client.delete_secret(SecretId=name),
    ):
        try:
            refused()
        except ClientError as err:
            assert err.response["Error"]["Code"] == "AccessDeniedException", err.response
        else:
            raise AssertionError("a rotation Job's account did more than put the pending version")

    for step in STEPS:
        job = wait_for_job(secrets_ns.name, token, step)
        assert client.get_secret_value(SecretId=name)["VersionId"] == before["VersionId"], \
            f"AWSCURRENT moved before {step} finished"
        finish_job(secrets_ns.name, job["metadata"]["name"], succeeded=True)
    wait_until(
        f"the Job-made version of {name} is current",
        lambda: client.get_secret_value(SecretId=name),
        lambda value: value["VersionId"] == token,
    )
    assert client.get_secret_value(SecretId=name)["SecretString"] == pending
    wait_for_secret_event(secrets_ns.name, name, "Rotated")

    # A Job that fails fails the step: AWSCURRENT stays, and status says which Job.
    second = client.rotate_secret(SecretId=name)["VersionId"]
    job = wait_for_job(secrets_ns.name, second, "createSecret")
    finish_job(secrets_ns.name, job["metadata"]["name"], succeeded=False)
    obj = wait_for_coffer_secret(
        secrets_ns.name, name, "the failed Job in status",
        lambda obj: ((obj.get("status") or {}).get("rotation") or {}).get("state") == "Failed",
    )
    assert job["metadata"]["name"] in obj["status"]["rotation"]["lastError"], obj["status"]["rotation"]
    assert client.get_secret_value(SecretId=name)["VersionId"] == token
