"""Secrets Manager through boto3 and the AWS CLI against a real `coffer server`: the calls, their
shapes, and their error codes."""

from __future__ import annotations

import json
import uuid

import pytest

from conftest import kms_error, unique


@pytest.fixture(scope="session")
def sm(coffer):
    """boto3 Secrets Manager client with the admin profile."""
    return coffer.client(service="secretsmanager")


@pytest.fixture(scope="session")
def app_sm(coffer):
    """boto3 Secrets Manager client for the non-admin user `app`."""
    return coffer.client("app", service="secretsmanager")


def test_create_get_put_and_stages(sm):
    name = unique("e2e/db")
    created = sm.create_secret(Name=name, SecretString='{"password":"one"}', Description="db")
    assert created["Name"] == name
    assert created["ARN"].startswith("arn:aws:secretsmanager:us-east-1:") and f":secret:{name}-" in created["ARN"]
    assert len(created["ARN"].rsplit("-", 1)[1]) == 6
    got = sm.get_secret_value(SecretId=name)
    assert got["SecretString"] == '{"password":"one"}'
    assert got["VersionStages"] == ["AWSCURRENT"]
    assert got["VersionId"] == created["VersionId"]

    put = sm.put_secret_value(SecretId=created["ARN"], SecretString="two")
    assert put["VersionStages"] == ["AWSCURRENT"]
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "two"
    previous = sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")
    assert previous["SecretString"] == '{"password":"one"}'
    assert previous["VersionId"] == created["VersionId"]
    # A partial ARN (without the random suffix) names the secret too.
    partial = created["ARN"].rsplit("-", 1)[0]
    assert sm.get_secret_value(SecretId=partial)["SecretString"] == "two"

    described = sm.describe_secret(SecretId=name)
    assert described["Description"] == "db"
    assert described["VersionIdsToStages"] == {
        created["VersionId"]: ["AWSPREVIOUS"],
        put["VersionId"]: ["AWSCURRENT"],
    }
    assert described["CreatedDate"] and described["LastChangedDate"]


def test_binary_values_and_limits(sm):
    name = unique("e2e/bin")
    blob = bytes(range(256)) * 4
    sm.create_secret(Name=name, SecretBinary=blob)
    got = sm.get_secret_value(SecretId=name)
    assert got["SecretBinary"] == blob and "SecretString" not in got
    with kms_error("InvalidParameterException"):
        sm.put_secret_value(SecretId=name, SecretString="x" * 65_537)
    assert sm.put_secret_value(SecretId=name, SecretString="y" * 65_536)["VersionId"]


def test_client_request_tokens_are_idempotent(sm):
    name = unique("e2e/token")
    sm.create_secret(Name=name, SecretString="first")
    token = str(uuid.uuid4())
    one = sm.put_secret_value(SecretId=name, SecretString="second", ClientRequestToken=token)
    again = sm.put_secret_value(SecretId=name, SecretString="second", ClientRequestToken=token)
    assert one["VersionId"] == again["VersionId"] == token
    versions = sm.list_secret_version_ids(SecretId=name)["Versions"]
    assert len(versions) == 2
    with kms_error("ResourceExistsException"):
        sm.put_secret_value(SecretId=name, SecretString="different", ClientRequestToken=token)


def test_update_secret_version_stage(sm):
    name = unique("e2e/stage")
    first = sm.create_secret(Name=name, SecretString="one")["VersionId"]
    pending = sm.put_secret_value(SecretId=name, SecretString="two", VersionStages=["AWSPENDING"])["VersionId"]
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "one"
    with kms_error("InvalidParameterException"):
        sm.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=pending)
    sm.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=pending,
                                   RemoveFromVersionId=first)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "two"
    stages = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
    assert stages[first] == ["AWSPREVIOUS"]
    assert sorted(stages[pending]) == ["AWSCURRENT", "AWSPENDING"]


def test_delete_restore_and_force(sm):
    name = unique("e2e/delete")
    arn = sm.create_secret(Name=name, SecretString="keep me")["ARN"]
    with kms_error("InvalidParameterException"):
        sm.delete_secret(SecretId=name, RecoveryWindowInDays=6)
    deleted = sm.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    assert deleted["ARN"] == arn and deleted["DeletionDate"]
    with kms_error("InvalidRequestException"):
        sm.get_secret_value(SecretId=name)
    with kms_error("InvalidRequestException"):
        sm.put_secret_value(SecretId=name, SecretString="no")
    assert sm.describe_secret(SecretId=name)["DeletedDate"]
    listed = [s["Name"] for s in sm.list_secrets(Filters=[{"Key": "name", "Values": [name]}])["SecretList"]]
    assert listed == []
    planned = sm.list_secrets(IncludePlannedDeletion=True, Filters=[{"Key": "name", "Values": [name]}])
    assert [s["Name"] for s in planned["SecretList"]] == [name]
    sm.restore_secret(SecretId=name)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "keep me"
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    with kms_error("ResourceNotFoundException"):
        sm.describe_secret(SecretId=name)
    # The old ARN does not reach a secret re-created under the same name.
    sm.create_secret(Name=name, SecretString="new")
    with kms_error("ResourceNotFoundException"):
        sm.get_secret_value(SecretId=arn)


def test_list_filters_paging_and_tags(sm):
    prefix = unique("e2e/list")
    for i in range(3):
        sm.create_secret(Name=f"{prefix}/{i}", SecretString=str(i), Tags=[{"Key": "team", "Value": f"t{i}"}])
    by_name = sm.list_secrets(Filters=[{"Key": "name", "Values": [prefix]}], SortOrder="asc")
    assert [s["Name"] for s in by_name["SecretList"]] == [f"{prefix}/{i}" for i in range(3)]
    entry = by_name["SecretList"][0]
    assert entry["Tags"] == [{"Key": "team", "Value": "t0"}]
    assert list(entry["SecretVersionsToStages"].values()) == [["AWSCURRENT"]]
    page = sm.list_secrets(Filters=[{"Key": "name", "Values": [prefix]}], MaxResults=2)
    rest = sm.list_secrets(Filters=[{"Key": "name", "Values": [prefix]}], MaxResults=2, NextToken=page["NextToken"])
    assert len(page["SecretList"]) == 2 and len(rest["SecretList"]) == 1 and "NextToken" not in rest
    tagged = sm.list_secrets(Filters=[{"Key": "name", "Values": [prefix]}, {"Key": "tag-value", "Values": ["t1"]}])
    assert [s["Name"] for s in tagged["SecretList"]] == [f"{prefix}/1"]
    sm.tag_resource(SecretId=f"{prefix}/2", Tags=[{"Key": "env", "Value": "prod"}])
    sm.untag_resource(SecretId=f"{prefix}/2", TagKeys=["team"])
    assert sm.describe_secret(SecretId=f"{prefix}/2")["Tags"] == [{"Key": "env", "Value": "prod"}]
    with kms_error("InvalidNextTokenException"):
        sm.list_secrets(NextToken="not a token!")


def test_batch_get_secret_value(sm):
    prefix = unique("e2e/batch")
    for i in range(2):
        sm.create_secret(Name=f"{prefix}/{i}", SecretString=f"value {i}")
    batch = sm.batch_get_secret_value(SecretIdList=[f"{prefix}/0", f"{prefix}/1", f"{prefix}/missing"])
    assert sorted(v["SecretString"] for v in batch["SecretValues"]) == ["value 0", "value 1"]
    assert [(e["SecretId"], e["ErrorCode"]) for e in batch["Errors"]] == [
        (f"{prefix}/missing", "ResourceNotFoundException")
    ]
    filtered = sm.batch_get_secret_value(Filters=[{"Key": "name", "Values": [prefix]}])
    assert sorted(v["Name"] for v in filtered["SecretValues"]) == [f"{prefix}/0", f"{prefix}/1"]


def test_get_random_password(sm):
    password = sm.get_random_password(PasswordLength=40, ExcludePunctuation=True)["RandomPassword"]
    assert len(password) == 40 and password.isalnum()
    with kms_error("InvalidParameterException"):
        sm.get_random_password(PasswordLength=3)


def test_resource_policies_grant_and_deny(sm, app_sm):
    name = unique("e2e/shared")
    arn = sm.create_secret(Name=name, SecretString="for the app")["ARN"]
    with kms_error("AccessDeniedException"):
        app_sm.get_secret_value(SecretId=name)
    app_arn = f"arn:aws:iam::{arn.split(':')[4]}:user/app"
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": app_arn},
                       "Action": "secretsmanager:GetSecretValue", "Resource": "*"}],
    }
    sm.put_resource_policy(SecretId=name, ResourcePolicy=json.dumps(policy), BlockPublicPolicy=True)
    assert json.loads(sm.get_resource_policy(SecretId=name)["ResourcePolicy"]) == policy
    assert app_sm.get_secret_value(SecretId=name)["SecretString"] == "for the app"
    with kms_error("AccessDeniedException"):
        app_sm.put_secret_value(SecretId=name, SecretString="not allowed")
    public = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:*", "Resource": "*"}]}
    with kms_error("PublicPolicyException"):
        sm.put_resource_policy(SecretId=name, ResourcePolicy=json.dumps(public), BlockPublicPolicy=True)
    checked = sm.validate_resource_policy(ResourcePolicy=json.dumps(public))
    assert checked["PolicyValidationPassed"] is False and checked["ValidationErrors"]
    with kms_error("MalformedPolicyDocumentException"):
        sm.put_resource_policy(SecretId=name, ResourcePolicy="{not json")
    sm.delete_resource_policy(SecretId=name)
    with kms_error("AccessDeniedException"):
        app_sm.get_secret_value(SecretId=name)


def test_customer_key_and_its_state(sm, kms):
    key_id = kms.create_key(Description="e2e: secrets cmk")["KeyMetadata"]["KeyId"]
    name = unique("e2e/cmk")
    sm.create_secret(Name=name, SecretString="under a cmk", KmsKeyId=key_id)
    assert sm.describe_secret(SecretId=name)["KmsKeyId"] == key_id
    kms.disable_key(KeyId=key_id)
    try:
        with kms_error("DecryptionFailure"):
            sm.get_secret_value(SecretId=name)
        with kms_error("EncryptionFailure"):
            sm.put_secret_value(SecretId=name, SecretString="no")
    finally:
        kms.enable_key(KeyId=key_id)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "under a cmk"
    # The account's managed key was made on first use, under its reserved alias.
    aliases = [a["AliasName"] for a in kms.list_aliases()["Aliases"]]
    assert "alias/aws/secretsmanager" in aliases


def test_errors_for_what_is_not_there(sm):
    with kms_error("ResourceNotFoundException"):
        sm.get_secret_value(SecretId=unique("e2e/none"))
    name = unique("e2e/errors")
    sm.create_secret(Name=name, SecretString="x")
    with kms_error("ResourceExistsException"):
        sm.create_secret(Name=name, SecretString="y")
    with kms_error("ResourceNotFoundException"):
        sm.get_secret_value(SecretId=name, VersionStage="NOSUCHSTAGE")
    with kms_error("ValidationException"):
        sm.create_secret(Name="bad name with spaces", SecretString="x")


def test_aws_cli_round_trip(coffer):
    name = unique("e2e/cli")
    created = coffer.cli("secretsmanager", "create-secret", "--name", name, "--secret-string", "from cli")
    assert created.code == 0, created.stderr
    got = coffer.cli("secretsmanager", "get-secret-value", "--secret-id", created.data["ARN"])
    assert got.code == 0, got.stderr
    assert got.data["SecretString"] == "from cli" and got.data["Name"] == name
    missing = coffer.cli("secretsmanager", "get-secret-value", "--secret-id", unique("e2e/cli-none"))
    assert missing.code != 0 and "ResourceNotFoundException" in missing.stderr
