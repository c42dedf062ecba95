"""Secrets Manager rotation through boto3 and the AWS CLI against a real `coffer server`:
RotateSecret, CancelRotateSecret, what DescribeSecret reports, and the refusals."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
import uuid

import pytest

from conftest import kms_error, unique

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:"


@pytest.fixture(scope="session")
def sm(coffer):
    return coffer.client(service="secretsmanager")


@pytest.fixture(scope="session")
def sm_unvalidated(coffer):
    return coffer.client(service="secretsmanager", validate=False)


@pytest.fixture(scope="session")
def app_sm(coffer):
    return coffer.client("app", service="secretsmanager")


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_rotate_immediately_with_generate_moves_current_and_previous(sm):
    name = unique("e2e/rotate")
    created = sm.create_secret(Name=name, SecretString="first")
    rotated = sm.rotate_secret(SecretId=name)
    token = rotated["VersionId"]
    assert rotated["ARN"] == created["ARN"] and rotated["Name"] == name
    wait_for(lambda: sm.get_secret_value(SecretId=name)["VersionId"] == token, what="the new CURRENT")
    current = sm.get_secret_value(SecretId=name)
    assert current["SecretString"] != "first" and len(current["SecretString"]) == 32
    assert current["VersionStages"] == ["AWSCURRENT"]
    previous = sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")
    assert previous["SecretString"] == "first" and previous["VersionId"] == created["VersionId"]
    with kms_error("ResourceNotFoundException"):
        sm.get_secret_value(SecretId=name, VersionStage="AWSPENDING")
    described = sm.describe_secret(SecretId=name)
    assert described["RotationEnabled"] is True
    assert isinstance(described["LastRotatedDate"], dt.datetime)
    assert described["VersionIdsToStages"][token] == ["AWSCURRENT"]
    assert "NextRotationDate" not in described, "no rules: no next rotation"


def test_a_client_request_token_names_the_new_version(sm):
    name = unique("e2e/rotate-token")
    sm.create_secret(Name=name, SecretString='{"username":"app","password":"x"}')
    token = str(uuid.uuid4())
    rotated = sm.rotate_secret(
        SecretId=name, ClientRequestToken=token, RotationLambdaARN=FUNCTION + "coffer-generate"
    )
    assert rotated["VersionId"] == token
    wait_for(lambda: sm.get_secret_value(SecretId=name)["VersionId"] == token, what="the new CURRENT")
    assert sm.describe_secret(SecretId=name)["RotationLambdaARN"] == FUNCTION + "coffer-generate"


def test_rules_are_reported_and_the_next_rotation_falls_in_the_window(sm, coffer):
    name = unique("e2e/rotate-rules")
    sm.create_secret(Name=name, SecretString="v1")
    # The third Friday of the month, a 3-hour window from 10:00 UTC.
    expression = "cron(0 10 ? * 6#3 *)"
    sm.rotate_secret(
        SecretId=name,
        RotationRules={"ScheduleExpression": expression, "Duration": "3h"},
        RotateImmediately=False,
    )
    described = sm.describe_secret(SecretId=name)
    assert described["RotationEnabled"] is True
    assert described["RotationRules"] == {"ScheduleExpression": expression, "Duration": "3h"}
    at = described["NextRotationDate"].astimezone(dt.timezone.utc)
    assert at.weekday() == 4 and 15 <= at.day <= 21, at
    assert 10 <= at.hour < 13, at
    assert "LastRotatedDate" not in described
    # Nothing rotated: the value is the same.
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "v1"

    # The CLI sees the same, and sets rules the same way.
    other = unique("e2e/rotate-cli")
    sm.create_secret(Name=other, SecretString="v1")
    result = coffer.cli(
        "secretsmanager",
        "rotate-secret",
        "--secret-id",
        other,
        "--rotation-rules",
        '{"AutomaticallyAfterDays": 7}',
        "--no-rotate-immediately",
        profile=None,
    )
    assert result.code == 0, result.stderr
    assert "VersionId" not in result.data
    described = coffer.cli("secretsmanager", "describe-secret", "--secret-id", other).data
    assert described["RotationRules"] == {"AutomaticallyAfterDays": 7}
    assert described["RotationEnabled"] is True
    next_date = dt.datetime.fromtimestamp(float(described["NextRotationDate"]), dt.timezone.utc)
    today = dt.datetime.now(dt.timezone.utc).date()
    assert next_date.date() == today + dt.timedelta(days=7), next_date


def test_cancel_turns_rotation_off(sm, coffer):
    name = unique("e2e/rotate-cancel")
    sm.create_secret(Name=name, SecretString="v1")
    sm.rotate_secret(
        SecretId=name, RotationRules={"ScheduleExpression": "rate(4 hours)"}, RotateImmediately=False
    )
    result = coffer.cli("secretsmanager", "cancel-rotate-secret", "--secret-id", name)
    assert result.code == 0, result.stderr
    described = sm.describe_secret(SecretId=name)
    assert described["RotationEnabled"] is False
    assert "NextRotationDate" not in described
    # The rules are kept, so a later RotateSecret without rules takes them up again.
    assert described["RotationRules"] == {"ScheduleExpression": "rate(4 hours)"}
    sm.rotate_secret(SecretId=name, RotateImmediately=False)
    assert "NextRotationDate" in sm.describe_secret(SecretId=name)


@pytest.mark.parametrize(
    "rules",
    [
        {"AutomaticallyAfterDays": 0},
        {"AutomaticallyAfterDays": 1001},
        {"AutomaticallyAfterDays": 3, "ScheduleExpression": "rate(3 days)"},
        {"ScheduleExpression": "cron(0 10 * * ? )"},
        {"ScheduleExpression": "cron(0 10 * * * *)"},
        {"ScheduleExpression": "rate(0 days)"},
        {"ScheduleExpression": "every day"},
        {"ScheduleExpression": "cron(0 22 * * ? *)", "Duration": "4h"},
        {"ScheduleExpression": "rate(1 days)", "Duration": "25h"},
    ],
)
def test_bad_rules_are_refused(sm_unvalidated, rules):
    name = unique("e2e/rotate-bad")
    sm_unvalidated.create_secret(Name=name, SecretString="v1")
    with kms_error("InvalidParameterException"):
        sm_unvalidated.rotate_secret(SecretId=name, RotationRules=rules, RotateImmediately=False)
    assert sm_unvalidated.describe_secret(SecretId=name)["RotationEnabled"] is False


def test_unknown_functions_and_callers_without_rights_are_refused(sm, app_sm):
    name = unique("e2e/rotate-refused")
    sm.create_secret(Name=name, SecretString="v1")
    with kms_error("InvalidParameterException"):
        sm.rotate_secret(SecretId=name, RotationLambdaARN=FUNCTION + "my-own-rotation")
    with kms_error("AccessDeniedException"):
        app_sm.rotate_secret(SecretId=name)
    with kms_error("AccessDeniedException"):
        app_sm.cancel_rotate_secret(SecretId=name)
    with kms_error("ResourceNotFoundException"):
        sm.rotate_secret(SecretId=unique("e2e/nobody"))


def test_a_failing_rotation_keeps_current_reports_why_and_blocks_another(sm, coffer):
    name = unique("e2e/rotate-failing")
    port = closed_port()
    value = json.dumps(
        {
            "engine": "postgres",
            "host": "127.0.0.1",
            "port": port,
            "username": "nobody",
            "password": "original-password",
            "dbname": "postgres",
        }
    )
    created = sm.create_secret(Name=name, SecretString=value)
    rotated = sm.rotate_secret(SecretId=name, RotationLambdaARN=FUNCTION + "coffer-postgres-single-user")

    def failed():
        response = coffer.signed_post(
            "secretsmanager.DescribeSecret", {"SecretId": name}, service="secretsmanager"
        )
        assert response.status_code == 200, response.text
        status = response.json().get("CofferRotationStatus", {})
        return status if "LastError" in status else None

    status = wait_for(failed, what="the failed step in DescribeSecret")
    assert status["Step"] == "setSecret" and status["VersionId"] == rotated["VersionId"]
    assert "setSecret failed" in status["LastError"] and str(port) in status["LastError"]
    assert "original-password" not in status["LastError"]
    current = sm.get_secret_value(SecretId=name)
    assert current["VersionId"] == created["VersionId"] and current["SecretString"] == value
    # The pending version exists, and holds new credentials for the same user.
    pending = json.loads(sm.get_secret_value(SecretId=name, VersionStage="AWSPENDING")["SecretString"])
    assert pending["username"] == "nobody" and pending["password"] != "original-password"
    with kms_error("InvalidRequestException"):
        sm.rotate_secret(SecretId=name)
    # Past createSecret the database may hold the new password: cancel turns the schedule off
    # but lets the rotation finish.
    cancelled = sm.cancel_rotate_secret(SecretId=name)
    assert cancelled["VersionId"] == rotated["VersionId"]
    assert sm.describe_secret(SecretId=name)["RotationEnabled"] is False
    assert coffer.server.log_text().count("original-password") == 0
