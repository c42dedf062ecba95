"""Rotation of Secret resources on the real control plane: `spec.rotation` reaches the engine
(DescribeSecret), a rotation shows in status, in the Rotation condition and in Events, a failing
step leaves AWSCURRENT alone and says why, and removing `spec.rotation` turns rotation off."""

from __future__ import annotations

import json
import socket
import uuid

from cluster_helpers import (
    condition,
    get_coffer_secret,
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
