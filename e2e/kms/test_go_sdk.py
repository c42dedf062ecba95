"""End-to-end tests of coffer's KMS, Secrets Manager and SSM Parameter Store APIs through the AWS
SDK for Go v2, unchanged.

e2e/goclient is a small Go program that uses the SDK the way an application would (static
credentials, a region, `BaseEndpoint`) and prints one JSON line per step. It is built once into
the e2e cache, outside the work tree, in a folder named after a hash of its sources, so later runs
reuse the binary and a change to any of them builds again. The server requires the signature to
cover X-Amz-Target and to be scoped to its region; a scenario that passes shows the Go SDK's
signer meets both without being told anything."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REGION, clean_environment, kms_error, parse_profiles

SOURCE_DIR = Path(__file__).resolve().parents[1] / "goclient"
# Bump when `build_goclient` changes how the binary is made, so cached ones are made again.
BUILD_RECIPE = "1"
BUILD_TIMEOUT_SECONDS = 900
RUN_TIMEOUT_SECONDS = 180

SCENARIO_STEPS = [
    "CreateKey",
    "DescribeKey",
    "Encrypt",
    "Decrypt",
    "DecryptWrongContext",
    "GenerateDataKey",
    "ListKeys",
    "DecryptTampered",
    "DescribeKeyUnknown",
    "done",
]
OTHER_REGION = "eu-west-1"
SECRETS_STEPS = [
    "CreateSecret",
    "GetSecretValueByName",
    "GetSecretValueByArn",
    "GetSecretValueByPartialArn",
    "PutSecretValue",
    "GetSecretValueCurrent",
    "GetSecretValuePrevious",
    "PutSecretValueRetried",
    "PutSecretValueTokenReused",
    "PutSecretValuePending",
    "UpdateSecretVersionStageWithoutRemove",
    "UpdateSecretVersionStage",
    "DescribeSecret",
    "CreateSecretBinary",
    "GetSecretValueBinary",
    "ListSecrets",
    "ListSecretVersionIds",
    "BatchGetSecretValue",
    "GetRandomPassword",
    "TagResource",
    "UntagResource",
    "DeleteSecret",
    "GetSecretValueDeleted",
    "RestoreSecret",
    "DeleteSecretForce",
    "DescribeSecretPurged",
    "done",
]
SSM_STEPS = [
    "PutParameterSecureString",
    "PutParameterStrings",
    "GetParameterWithDecryption",
    "GetParameterWithoutDecryption",
    "PutParameterOverwrite",
    "PutParameterExists",
    "LabelParameterVersion",
    "GetParameterByLabel",
    "GetParameterByVersion",
    "GetParameterMissingVersion",
    "GetParametersByPath",
    "GetParameters",
    "GetParameterHistory",
    "DescribeParameters",
    "DeleteParameter",
    "GetParameterDeleted",
    "DeleteParameters",
    "done",
]
# The Go client's String parameters under config/, beside db/user and db/password.
SSM_CONFIG_COUNT = 12


def cache_root() -> Path:
    """The e2e cache, as e2e/python.sh and e2e/controlplane pick it."""
    base = os.environ.get("COFFER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "coffer"
    )
    return Path(base)


def source_files() -> list[str]:
    """What the binary is built from: the module files and every Go file of the package."""
    return ["go.mod", "go.sum", *sorted(path.name for path in SOURCE_DIR.glob("*.go"))]


def source_hash() -> str:
    digest = hashlib.sha256(BUILD_RECIPE.encode())
    for name in source_files():
        # The name goes in too, so bytes moving from one file to another still change the key.
        digest.update(name.encode() + b"\0")
        digest.update((SOURCE_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def build_goclient() -> tuple[Path, float | None]:
    """The cached binary, built first when absent; returns it and the build's seconds (None when
    it was already there)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip(
            "SKIPPED LOUDLY: no `go` on PATH, so the AWS SDK for Go v2 client (e2e/goclient) "
            "cannot be built and the Go SDK is NOT tested against coffer; install Go 1.26+"
        )
    root = cache_root()
    target_dir = root / f"goclient-{source_hash()}"
    binary = target_dir / "goclient"
    if os.access(binary, os.X_OK):
        return binary, None
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "goclient.lock", "w") as lock:
        # One builder at a time; a run that waited finds the binary the other one made.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.access(binary, os.X_OK):
            return binary, None
        target_dir.mkdir(parents=True, exist_ok=True)
        # Built under another name and renamed, so a build cut short never leaves a binary
        # that looks complete.
        fd, staging = tempfile.mkstemp(prefix=".goclient-", dir=target_dir)
        os.close(fd)
        started = time.monotonic()
        try:
            result = subprocess.run(
                [go, "build", "-trimpath", "-o", staging, "."],
                cwd=SOURCE_DIR,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_SECONDS,
                env={
                    **os.environ,
                    "CGO_ENABLED": "0",
                    # go.sum must already name every module: the build never edits the sources.
                    "GOFLAGS": f"{os.environ.get('GOFLAGS', '')} -mod=readonly".strip(),
                    "GOWORK": "off",
                },
            )
            if result.returncode != 0:
                pytest.fail(f"go build of e2e/goclient failed:\n{result.stderr}", pytrace=False)
            os.chmod(staging, 0o755)
            os.replace(staging, binary)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)
        return binary, time.monotonic() - started


@dataclass
class Run:
    code: int
    steps: dict[str, dict]
    order: list[str]
    stdout: str
    stderr: str

    def step(self, name: str) -> dict:
        assert name in self.steps, f"no {name} step in the output:\n{self.stdout}\n{self.stderr}"
        return self.steps[name]


@pytest.fixture(scope="module")
def goclient() -> Path:
    binary, seconds = build_goclient()
    if seconds is not None:
        print(f"\ne2e: built {binary} in {seconds:.1f}s")
    return binary


def run_goclient(binary: Path, coffer, profile: str, *args: str) -> Run:
    """Runs the client against the suite's server with `profile`'s key. The secret goes through
    the environment, not the command line; the AWS config and credentials files are pointed at
    an empty file so nothing on the machine configures the SDK behind the test's back."""
    creds = parse_profiles(coffer.credentials_file.read_text())[profile]
    env = clean_environment()
    env.update(
        {
            "COFFER_ACCESS_KEY_ID": creds["aws_access_key_id"],
            "COFFER_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    result = subprocess.run(
        [str(binary), "-endpoint", coffer.endpoint, "-region", REGION, *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        env=env,
    )
    steps: dict[str, dict] = {}
    order: list[str] = []
    for line in result.stdout.splitlines():
        entry = json.loads(line)
        order.append(entry["step"])
        steps[entry["step"]] = entry
    return Run(result.returncode, steps, order, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def scenario(goclient, coffer, kms) -> Run:
    # A few more keys than one page of the client's Limit=2 holds, so ListKeys must page.
    for index in range(3):
        kms.create_key(Description=f"e2e go sdk: filler {index}")
    return run_goclient(goclient, coffer, coffer.admin_profile, "-mode", "scenario")


def test_go_sdk_scenario_runs_every_step_and_exits_zero(scenario):
    failed = [entry for entry in scenario.steps.values() if not entry["ok"]]
    assert scenario.order == SCENARIO_STEPS, scenario.stdout + scenario.stderr
    assert not failed, json.dumps(failed, indent=1) + "\n" + scenario.stderr
    assert scenario.code == 0, scenario.stderr
    assert scenario.step("done")["detail"] == {"mode": "scenario", "failures": 0}


def test_go_sdk_created_key_is_described_alike_by_go_and_boto3(scenario, kms):
    created = scenario.step("CreateKey")["detail"]
    described = scenario.step("DescribeKey")["detail"]
    assert described["keyId"] == created["keyId"] and described["arn"] == created["arn"]
    assert created["arn"] == f"arn:aws:kms:{REGION}:{described['account']}:key/{created['keyId']}"
    assert (described["keySpec"], described["keyUsage"], described["keyState"]) == (
        "SYMMETRIC_DEFAULT",
        "ENCRYPT_DECRYPT",
        "Enabled",
    )
    # The key made through Go is the one boto3 sees, with the Go client's description and tag.
    metadata = kms.describe_key(KeyId=created["keyId"])["KeyMetadata"]
    assert metadata["Arn"] == created["arn"]
    assert metadata["Description"] == "e2e: aws-sdk-go-v2" == described["description"]
    tags = kms.list_resource_tags(KeyId=created["keyId"])["Tags"]
    assert {"TagKey": "client", "TagValue": "aws-sdk-go-v2"} in tags


def test_go_sdk_encrypt_decrypt_round_trip_with_context(scenario):
    arn = scenario.step("CreateKey")["detail"]["arn"]
    encrypt = scenario.step("Encrypt")
    decrypt = scenario.step("Decrypt")
    assert encrypt["ok"] and decrypt["ok"], (encrypt, decrypt)
    assert encrypt["detail"]["keyId"] == arn
    assert encrypt["detail"]["algorithm"] == "SYMMETRIC_DEFAULT"
    assert encrypt["detail"]["ciphertextBytes"] > 300
    assert decrypt["detail"] == {"keyId": arn, "roundTrip": True}


def test_go_sdk_generated_data_key_unwraps_to_its_plaintext(scenario):
    step = scenario.step("GenerateDataKey")
    assert step["ok"], step
    assert step["detail"] == {
        "keyId": scenario.step("CreateKey")["detail"]["arn"],
        "plaintextBytes": 32,
        "unwraps": True,
    }


def test_go_sdk_list_keys_paginator_pages_to_the_new_key(scenario):
    step = scenario.step("ListKeys")
    assert step["ok"], step
    detail = step["detail"]
    assert detail["found"] is True
    # Three filler keys and the Go client's own: at least two pages of two.
    assert detail["keys"] >= 4 and detail["pages"] >= 2, detail
    assert detail["pages"] == -(-detail["keys"] // 2), detail


@pytest.mark.parametrize(
    "name,code",
    [
        ("DecryptWrongContext", "InvalidCiphertextException"),
        ("DecryptTampered", "InvalidCiphertextException"),
        ("DescribeKeyUnknown", "NotFoundException"),
    ],
)
def test_go_sdk_gets_the_modelled_exception(scenario, name, code):
    step = scenario.step(name)
    assert step["ok"], step
    assert step["expectError"] == step["errorCode"] == code
    assert step["httpStatus"] == 400
    assert step["requestId"], step
    # The SDK turned the error into the KMS model's own exception type, not a generic one.
    assert step["detail"] == {"typed": True}


def test_go_sdk_signed_for_another_region_is_refused(goclient, coffer):
    run = run_goclient(goclient, coffer, coffer.admin_profile, "-mode", "wrong-region", "-wrong-region", OTHER_REGION)
    assert run.order == ["ListKeysRightRegion", "ListKeysWrongRegion", "done"], run.stdout + run.stderr
    # The same key works when signed for the server's region ...
    assert run.step("ListKeysRightRegion")["ok"], run.stdout
    # ... and a valid signature scoped to another region is refused.
    refused = run.step("ListKeysWrongRegion")
    assert refused["ok"], refused
    assert refused["errorCode"] == "InvalidSignatureException"
    assert refused["httpStatus"] == 400
    assert refused["requestId"], refused
    assert OTHER_REGION in refused["errorMessage"], refused
    assert run.code == 0, run.stderr


def test_go_sdk_client_fails_loudly_when_a_step_goes_wrong(goclient, coffer):
    """The client's exit status is what the tests above lean on, so it must be non-zero when a
    step does not turn out as expected: here every call is signed with a wrong secret."""
    run = run_goclient(goclient, coffer, "coffer-bad-secret", "-mode", "scenario")
    assert run.code == 1, run.stdout + run.stderr
    created = run.step("CreateKey")
    assert created["ok"] is False and created["problem"] == "call failed"
    assert created["errorCode"] == "InvalidSignatureException"
    assert run.step("done")["ok"] is False


# --------------------------------------------------------------------------------------------
# Secrets Manager (`-mode secrets`, e2e/goclient/secrets.go)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secrets(goclient, coffer) -> Run:
    return run_goclient(goclient, coffer, coffer.admin_profile, "-mode", "secrets")


@pytest.fixture(scope="module")
def go_sm(coffer):
    """boto3 Secrets Manager client with the admin profile, to look at what the Go client made."""
    return coffer.client(service="secretsmanager")


def test_go_sdk_secrets_runs_every_step_and_exits_zero(secrets):
    failed = [entry for entry in secrets.steps.values() if not entry["ok"]]
    assert secrets.order == SECRETS_STEPS, secrets.stdout + secrets.stderr
    assert not failed, json.dumps(failed, indent=1) + "\n" + secrets.stderr
    assert secrets.code == 0, secrets.stderr
    assert secrets.step("done")["detail"] == {"mode": "secrets", "failures": 0}


def test_go_sdk_secret_is_created_under_its_arn_and_token(secrets, account_id):
    created = secrets.step("CreateSecret")["detail"]
    name = created["name"]
    assert name == created["prefix"] + "main" and name.startswith("e2e/go-sdk-")
    assert re.fullmatch(
        re.escape(f"arn:aws:secretsmanager:{REGION}:{account_id}:secret:{name}-") + "[A-Za-z0-9]{6}",
        created["arn"],
    ), created
    # The version id is the ClientRequestToken the client sent.
    assert created["versionId"] == created["token"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", created["token"])


def test_go_sdk_secret_is_reached_by_name_arn_and_partial_arn(secrets):
    created = secrets.step("CreateSecret")["detail"]
    ids = []
    for name in ("GetSecretValueByName", "GetSecretValueByArn", "GetSecretValueByPartialArn"):
        detail = dict(secrets.step(name)["detail"])
        ids.append(detail.pop("secretId"))
        assert detail == {
            "name": created["name"],
            "arn": created["arn"],
            "versionId": created["versionId"],
            "versionStages": ["AWSCURRENT"],
            "secretString": '{"user":"go","password":"one"}',
        }, name
    assert ids == [created["name"], created["arn"], created["arn"].rsplit("-", 1)[0]]


def test_go_sdk_put_secret_value_moves_the_stages(secrets):
    first = secrets.step("CreateSecret")["detail"]["versionId"]
    put = secrets.step("PutSecretValue")["detail"]
    second = put["versionId"]
    assert second != first
    assert put["versionStages"] == ["AWSCURRENT"]
    current = secrets.step("GetSecretValueCurrent")["detail"]
    previous = secrets.step("GetSecretValuePrevious")["detail"]
    # A non-ASCII value comes back as it went in.
    assert (current["versionId"], current["secretString"]) == (second, "zwei – ünïcødé ✓")
    assert current["versionStages"] == ["AWSCURRENT"]
    assert (previous["versionId"], previous["secretString"]) == (first, '{"user":"go","password":"one"}')
    assert previous["versionStages"] == ["AWSPREVIOUS"]


def test_go_sdk_client_request_token_is_idempotent(secrets):
    second = secrets.step("PutSecretValue")["detail"]["versionId"]
    retried = secrets.step("PutSecretValueRetried")
    assert retried["ok"], retried
    # Same version back, and still only the two versions.
    assert retried["detail"] == {"versionId": second, "versionStages": ["AWSCURRENT"], "versions": 2}
    reused = secrets.step("PutSecretValueTokenReused")
    assert reused["ok"] and reused["errorCode"] == "ResourceExistsException", reused


def test_go_sdk_update_secret_version_stage(secrets):
    first = secrets.step("CreateSecret")["detail"]["versionId"]
    second = secrets.step("PutSecretValue")["detail"]["versionId"]
    pending = secrets.step("PutSecretValuePending")["detail"]
    third = pending["versionId"]
    assert pending["versionStages"] == ["AWSPENDING"]
    # Staged AWSPENDING only: AWSCURRENT stayed where it was.
    assert pending["currentVersionId"] == second
    refused = secrets.step("UpdateSecretVersionStageWithoutRemove")
    assert refused["ok"] and refused["errorCode"] == "InvalidParameterException", refused
    moved = secrets.step("UpdateSecretVersionStage")
    assert moved["ok"], moved
    assert moved["detail"]["currentVersionId"] == third
    # The first version lost its last label: DescribeSecret and ListSecretVersionIds leave it
    # out unless asked for deprecated versions.
    stages = {second: ["AWSPREVIOUS"], third: ["AWSCURRENT", "AWSPENDING"]}
    described = secrets.step("DescribeSecret")["detail"]
    assert described["versionIdsToStages"] == stages
    assert described["tags"] == {"client": "aws-sdk-go-v2"}
    assert described["description"] == "e2e: aws-sdk-go-v2"
    versions = secrets.step("ListSecretVersionIds")["detail"]
    assert versions["versions"] == stages
    assert versions["withDeprecated"] == {**stages, first: []}


def test_go_sdk_list_secrets_paginator_pages_through_the_name_filter(secrets):
    created = secrets.step("CreateSecret")["detail"]
    step = secrets.step("ListSecrets")
    assert step["ok"], step
    # MaxResults=1 and the run's two secrets: two pages, the second without a NextToken.
    assert step["detail"] == {
        "names": sorted([created["name"], created["prefix"] + "binary"]),
        "pages": 2,
    }


def test_go_sdk_binary_secret_round_trips_and_boto3_reads_the_same_bytes(secrets, go_sm):
    created = secrets.step("CreateSecretBinary")["detail"]
    got = secrets.step("GetSecretValueBinary")["detail"]
    assert got["roundTrip"] is True and got["secretBinaryBytes"] == 1024
    assert "secretString" not in got
    assert got["versionId"] == created["versionId"] and got["versionStages"] == ["AWSCURRENT"]
    value = go_sm.get_secret_value(SecretId=created["arn"])
    assert hashlib.sha256(value["SecretBinary"]).hexdigest() == created["sha256"]
    assert "SecretString" not in value


def test_go_sdk_batch_get_secret_value_reports_the_missing_one(secrets):
    created = secrets.step("CreateSecret")["detail"]
    step = secrets.step("BatchGetSecretValue")
    assert step["ok"], step
    assert step["detail"] == {
        "names": sorted([created["name"], created["prefix"] + "binary"]),
        "errors": [{"secretId": created["prefix"] + "missing", "errorCode": "ResourceNotFoundException"}],
    }


def test_go_sdk_get_random_password(secrets):
    step = secrets.step("GetRandomPassword")
    assert step["ok"], step
    assert step["detail"] == {
        "length": 40,
        "classes": {"upper": True, "lower": True, "digit": True, "other": False},
    }


def test_go_sdk_tag_and_untag_secret(secrets):
    assert secrets.step("TagResource")["detail"] == {"tags": {"client": "aws-sdk-go-v2", "env": "e2e"}}
    assert secrets.step("UntagResource")["detail"] == {"tags": {"env": "e2e"}}


def test_go_sdk_delete_restore_and_force_delete(secrets, go_sm):
    created = secrets.step("CreateSecret")["detail"]
    deleted = secrets.step("DeleteSecret")
    assert deleted["ok"], deleted
    assert (deleted["detail"]["arn"], deleted["detail"]["name"]) == (created["arn"], created["name"])
    assert abs(deleted["detail"]["deletionInDays"] - 7) < 0.01, deleted
    restored = secrets.step("RestoreSecret")
    assert restored["ok"], restored
    assert restored["detail"] == {"arn": created["arn"], "name": created["name"], "secretString": "three"}
    forced = secrets.step("DeleteSecretForce")
    assert forced["ok"] and forced["detail"] == {"arn": created["arn"], "name": created["name"]}, forced
    # Gone for boto3 too.
    with kms_error("ResourceNotFoundException"):
        go_sm.describe_secret(SecretId=created["name"])


@pytest.mark.parametrize(
    "name,code",
    [
        ("PutSecretValueTokenReused", "ResourceExistsException"),
        ("UpdateSecretVersionStageWithoutRemove", "InvalidParameterException"),
        ("GetSecretValueDeleted", "InvalidRequestException"),
        ("DescribeSecretPurged", "ResourceNotFoundException"),
    ],
)
def test_go_sdk_secrets_gets_the_modelled_exception(secrets, name, code):
    step = secrets.step(name)
    assert step["ok"], step
    assert step["expectError"] == step["errorCode"] == code
    assert step["httpStatus"] == 400
    assert step["requestId"], step
    # The SDK turned the error into the Secrets Manager model's own exception type.
    assert step["detail"] == {"typed": True}


def test_go_sdk_secrets_fails_loudly_when_a_step_goes_wrong(goclient, coffer):
    run = run_goclient(goclient, coffer, "coffer-bad-secret", "-mode", "secrets")
    assert run.code == 1, run.stdout + run.stderr
    assert run.order == ["CreateSecret", "done"], run.stdout
    created = run.step("CreateSecret")
    assert created["ok"] is False and created["problem"] == "call failed"
    assert created["errorCode"] == "InvalidSignatureException"
    assert run.step("done")["ok"] is False


# --------------------------------------------------------------------------------------------
# SSM Parameter Store (`-mode ssm`, e2e/goclient/ssm.go)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parameters(goclient, coffer) -> Run:
    return run_goclient(goclient, coffer, coffer.admin_profile, "-mode", "ssm")


@pytest.fixture(scope="module")
def go_ssm(coffer):
    """boto3 SSM client with the admin profile, to look at what the Go client left behind."""
    return coffer.client(service="ssm")


GO_SECRET_ONE = "go-sdk pässwörd ✓ one"
GO_SECRET_TWO = "go-sdk password two"


def test_go_sdk_ssm_runs_every_step_and_exits_zero(parameters):
    failed = [entry for entry in parameters.steps.values() if not entry["ok"]]
    assert parameters.order == SSM_STEPS, parameters.stdout + parameters.stderr
    assert not failed, json.dumps(failed, indent=1) + "\n" + parameters.stderr
    assert parameters.code == 0, parameters.stderr
    assert parameters.step("done")["detail"] == {"mode": "ssm", "failures": 0}


def test_go_sdk_secure_string_put_and_read_with_and_without_decryption(parameters, account_id):
    put = parameters.step("PutParameterSecureString")["detail"]
    name = put["name"]
    assert name == put["prefix"] + "/db/password" and name.startswith("/e2e/go-sdk-")
    assert (put["version"], put["tier"]) == (1, "Standard")
    assert parameters.step("GetParameterWithDecryption")["detail"] == {
        "name": name,
        "type": "SecureString",
        "version": 1,
        "arn": f"arn:aws:ssm:{REGION}:{account_id}:parameter{name}",
        "dataType": "text",
        "value": GO_SECRET_ONE,
    }
    hidden = parameters.step("GetParameterWithoutDecryption")["detail"]
    assert (hidden["valueIsPlaintext"], hidden["valueContainsPlaintext"], hidden["valueEmpty"]) == (False, False, False)
    assert (hidden["name"], hidden["type"], hidden["version"]) == (name, "SecureString", 1)


def test_go_sdk_overwrite_label_and_selectors(parameters):
    assert parameters.step("PutParameterOverwrite")["detail"] == {"version": 2, "tier": "Standard"}
    assert parameters.step("LabelParameterVersion")["detail"] == {"parameterVersion": 1, "invalidLabels": []}
    by_label = parameters.step("GetParameterByLabel")["detail"]
    assert (by_label["selector"], by_label["version"], by_label["value"]) == (":golden", 1, GO_SECRET_ONE)
    by_version = parameters.step("GetParameterByVersion")["detail"]
    assert (by_version["selector"], by_version["version"], by_version["value"]) == (":2", 2, GO_SECRET_TWO)
    # The selector is not part of the name that comes back.
    name = parameters.step("PutParameterSecureString")["detail"]["name"]
    assert by_label["name"] == by_version["name"] == name


def test_go_sdk_get_parameters_by_path_paginator(parameters):
    step = parameters.step("GetParametersByPath")
    assert step["ok"], step
    detail = step["detail"]
    # Twelve under config/, db/user and db/password, ten at most to a page, none twice.
    assert detail["count"] == SSM_CONFIG_COUNT + 2
    assert detail["repeated"] == [] and detail["passwordDecrypted"] is True
    assert len(detail["pageSizes"]) >= 2 and all(size <= 10 for size in detail["pageSizes"])
    assert sum(detail["pageSizes"]) == SSM_CONFIG_COUNT + 2


def test_go_sdk_get_parameters_and_history(parameters):
    prefix = parameters.step("PutParameterSecureString")["detail"]["prefix"]
    many = parameters.step("GetParameters")["detail"]
    assert many["values"] == {f"{prefix}/db/password": GO_SECRET_TWO, f"{prefix}/db/user": f"value of {prefix}/db/user"}
    assert many["invalidParameters"] == [f"{prefix}/db/missing"]
    history = parameters.step("GetParameterHistory")["detail"]
    assert history["versions"] == [
        {"version": 1, "value": GO_SECRET_ONE, "labels": ["golden"], "type": "SecureString", "keyId": "alias/aws/ssm"},
        {"version": 2, "value": GO_SECRET_TWO, "labels": [], "type": "SecureString", "keyId": "alias/aws/ssm"},
    ]
    # MaxResults 1: the paginator needed a page per version.
    assert history["pages"] >= 2
    described = parameters.step("DescribeParameters")["detail"]
    assert described == {"name": f"{prefix}/db/password", "type": "SecureString", "keyId": "alias/aws/ssm",
                         "version": 2, "tier": "Standard", "description": "e2e: aws-sdk-go-v2"}


def test_go_sdk_deleted_parameters_are_gone_for_boto3_too(parameters, go_ssm):
    prefix = parameters.step("PutParameterSecureString")["detail"]["prefix"]
    assert parameters.step("DeleteParameters")["detail"] == {
        "deleted": SSM_CONFIG_COUNT + 1, "invalid": [f"{prefix}/db/password"]}
    assert go_ssm.get_parameters_by_path(Path=prefix, Recursive=True)["Parameters"] == []
    with kms_error("ParameterNotFound"):
        go_ssm.get_parameter(Name=f"{prefix}/db/password")


@pytest.mark.parametrize(
    "name,code",
    [
        ("PutParameterExists", "ParameterAlreadyExists"),
        ("GetParameterMissingVersion", "ParameterVersionNotFound"),
        ("GetParameterDeleted", "ParameterNotFound"),
    ],
)
def test_go_sdk_ssm_gets_the_modelled_exception(parameters, name, code):
    step = parameters.step(name)
    assert step["ok"], step
    assert step["expectError"] == step["errorCode"] == code
    assert step["httpStatus"] == 400
    assert step["requestId"], step
    # The SDK turned the error into the SSM model's own exception type.
    assert step["detail"] == {"typed": True}


def test_go_sdk_ssm_fails_loudly_when_a_step_goes_wrong(goclient, coffer):
    run = run_goclient(goclient, coffer, "coffer-bad-secret", "-mode", "ssm")
    assert run.code == 1, run.stdout + run.stderr
    assert run.order == ["PutParameterSecureString", "done"], run.stdout
    put = run.step("PutParameterSecureString")
    assert put["ok"] is False and put["problem"] == "call failed"
    assert put["errorCode"] == "InvalidSignatureException"
    assert run.step("done")["ok"] is False
