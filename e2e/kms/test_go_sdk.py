"""End-to-end tests of coffer's KMS API through the AWS SDK for Go v2, unchanged.

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
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REGION, clean_environment, parse_profiles

SOURCE_DIR = Path(__file__).resolve().parents[1] / "goclient"
SOURCES = ("go.mod", "go.sum", "main.go")
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


def cache_root() -> Path:
    """The e2e cache, as e2e/python.sh and e2e/controlplane pick it."""
    base = os.environ.get("COFFER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "coffer"
    )
    return Path(base)


def source_hash() -> str:
    digest = hashlib.sha256(BUILD_RECIPE.encode())
    for name in SOURCES:
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
