"""End-to-end tests of coffer's KMS API through the AWS CLI (v1), unchanged, given only
--endpoint-url and a credentials file."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import clean_environment, key_arn, unique


def ok(result):
    assert result.code == 0, f"exit {result.code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.data


def b64(text: str) -> bytes:
    return base64.b64decode(text)


@pytest.fixture(scope="module")
def cli_key(coffer):
    """A symmetric key made with `aws kms create-key`."""
    data = ok(coffer.cli("kms", "create-key", "--description", "e2e cli: main"))
    return data["KeyMetadata"]["KeyId"]


def test_cli_with_the_server_written_files(coffer):
    """The data directory's own credentials and config files work as they are."""
    env = clean_environment()
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(coffer.data_dir / "credentials")
    env["AWS_CONFIG_FILE"] = str(coffer.data_dir / "config")
    env["AWS_PROFILE"] = "coffer"
    result = subprocess.run(
        [shutil.which("aws"), "kms", "list-keys", "--endpoint-url", coffer.endpoint],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert '"Keys"' in result.stdout


def test_cli_create_describe_list_key(coffer, account_id):
    created = ok(
        coffer.cli(
            "kms",
            "create-key",
            "--description",
            "e2e cli: tagged",
            "--tags",
            "TagKey=team,TagValue=blue",
        )
    )
    md = created["KeyMetadata"]
    key_id = md["KeyId"]
    assert md["KeyState"] == "Enabled"
    assert md["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert md["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert md["Arn"] == key_arn(account_id, key_id)

    described = ok(coffer.cli("kms", "describe-key", "--key-id", key_id))["KeyMetadata"]
    assert described["KeyId"] == key_id
    assert described["Description"] == "e2e cli: tagged"
    assert described["AWSAccountId"] == account_id
    assert isinstance(described["CreationDate"], (str, int, float))

    # The CLI pages through every key by itself.
    listed = ok(coffer.cli("kms", "list-keys", "--page-size", "2"))
    assert key_id in {k["KeyId"] for k in listed["Keys"]}

    tags = ok(coffer.cli("kms", "list-resource-tags", "--key-id", key_id))["Tags"]
    assert tags == [{"TagKey": "team", "TagValue": "blue"}]


def test_cli_encrypt_decrypt_files(coffer, cli_key, tmp_path):
    plaintext = b"cli plaintext \x00\x01\xff " + os.urandom(64)
    (tmp_path / "plain.bin").write_bytes(plaintext)
    encrypted = ok(
        coffer.cli(
            "kms",
            "encrypt",
            "--key-id",
            cli_key,
            "--plaintext",
            f"fileb://{tmp_path / 'plain.bin'}",
            "--encryption-context",
            "team=blue",
        )
    )
    assert encrypted["KeyId"].endswith(cli_key)
    (tmp_path / "cipher.bin").write_bytes(b64(encrypted["CiphertextBlob"]))

    # The documented shell idiom: --query Plaintext --output text | base64 -d
    result = coffer.shell(
        f'aws kms decrypt --ciphertext-blob "fileb://{tmp_path / "cipher.bin"}" '
        '--encryption-context team=blue --endpoint-url "$ENDPOINT" '
        "--query Plaintext --output text | base64 -d"
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == plaintext

    # Without the context it does not decrypt.
    failed = coffer.cli("kms", "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'cipher.bin'}")
    assert failed.code in (254, 255), failed.stderr
    assert "InvalidCiphertextException" in failed.stderr


def test_cli_aliases(coffer, cli_key, account_id):
    name = "alias/" + unique("e2e-cli")
    ok(coffer.cli("kms", "create-alias", "--alias-name", name, "--target-key-id", cli_key))
    listed = ok(coffer.cli("kms", "list-aliases", "--key-id", cli_key))["Aliases"]
    assert [a["AliasName"] for a in listed] == [name]
    assert listed[0]["TargetKeyId"] == cli_key
    everything = ok(coffer.cli("kms", "list-aliases"))["Aliases"]
    assert name in {a["AliasName"] for a in everything}
    described = ok(coffer.cli("kms", "describe-key", "--key-id", name))["KeyMetadata"]
    assert described["KeyId"] == cli_key
    described = ok(
        coffer.cli("kms", "describe-key", "--key-id", f"arn:aws:kms:us-east-1:{account_id}:{name}")
    )["KeyMetadata"]
    assert described["KeyId"] == cli_key

    other = ok(coffer.cli("kms", "create-key", "--description", "e2e cli: alias target"))["KeyMetadata"]["KeyId"]
    ok(coffer.cli("kms", "update-alias", "--alias-name", name, "--target-key-id", other))
    assert ok(coffer.cli("kms", "describe-key", "--key-id", name))["KeyMetadata"]["KeyId"] == other
    ok(coffer.cli("kms", "delete-alias", "--alias-name", name))
    assert ok(coffer.cli("kms", "list-aliases", "--key-id", other))["Aliases"] == []


def test_cli_schedule_and_cancel_deletion(coffer):
    key_id = ok(coffer.cli("kms", "create-key", "--description", "e2e cli: deletion"))["KeyMetadata"]["KeyId"]
    scheduled = ok(coffer.cli("kms", "schedule-key-deletion", "--key-id", key_id, "--pending-window-in-days", "7"))
    assert scheduled["KeyState"] == "PendingDeletion"
    assert scheduled["PendingWindowInDays"] == 7
    assert ok(coffer.cli("kms", "describe-key", "--key-id", key_id))["KeyMetadata"]["KeyState"] == "PendingDeletion"
    cancelled = ok(coffer.cli("kms", "cancel-key-deletion", "--key-id", key_id))
    assert cancelled["KeyId"].endswith(key_id)
    assert ok(coffer.cli("kms", "describe-key", "--key-id", key_id))["KeyMetadata"]["KeyState"] == "Disabled"
    ok(coffer.cli("kms", "enable-key", "--key-id", key_id))
    assert ok(coffer.cli("kms", "describe-key", "--key-id", key_id))["KeyMetadata"]["KeyState"] == "Enabled"


def test_cli_rotation(coffer, tmp_path):
    key_id = ok(coffer.cli("kms", "create-key", "--description", "e2e cli: rotation"))["KeyMetadata"]["KeyId"]
    (tmp_path / "plain.bin").write_bytes(b"rotated through the cli")
    before = ok(coffer.cli("kms", "encrypt", "--key-id", key_id, "--plaintext", f"fileb://{tmp_path / 'plain.bin'}"))

    ok(coffer.cli("kms", "enable-key-rotation", "--key-id", key_id, "--rotation-period-in-days", "90"))
    status = ok(coffer.cli("kms", "get-key-rotation-status", "--key-id", key_id))
    assert status["KeyRotationEnabled"] is True
    assert status["RotationPeriodInDays"] == 90
    assert status["NextRotationDate"]

    rotated = ok(coffer.cli("kms", "rotate-key-on-demand", "--key-id", key_id))
    assert rotated["KeyId"].endswith(key_id)
    rotations = ok(coffer.cli("kms", "list-key-rotations", "--key-id", key_id))["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND"]

    (tmp_path / "cipher.bin").write_bytes(b64(before["CiphertextBlob"]))
    decrypted = ok(coffer.cli("kms", "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'cipher.bin'}"))
    assert b64(decrypted["Plaintext"]) == b"rotated through the cli"

    ok(coffer.cli("kms", "disable-key-rotation", "--key-id", key_id))
    assert ok(coffer.cli("kms", "get-key-rotation-status", "--key-id", key_id))["KeyRotationEnabled"] is False


def test_cli_sign_verify_and_public_key(coffer, tmp_path):
    created = ok(
        coffer.cli(
            "kms",
            "create-key",
            "--key-spec",
            "ECC_NIST_P256",
            "--key-usage",
            "SIGN_VERIFY",
            "--description",
            "e2e cli: signing",
        )
    )
    key_id = created["KeyMetadata"]["KeyId"]
    assert created["KeyMetadata"]["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    message = b"signed through the cli " + uuid.uuid4().bytes
    (tmp_path / "message.bin").write_bytes(message)
    signed = ok(
        coffer.cli(
            "kms",
            "sign",
            "--key-id",
            key_id,
            "--message",
            f"fileb://{tmp_path / 'message.bin'}",
            "--message-type",
            "RAW",
            "--signing-algorithm",
            "ECDSA_SHA_256",
        )
    )
    signature = b64(signed["Signature"])
    (tmp_path / "signature.bin").write_bytes(signature)
    verified = ok(
        coffer.cli(
            "kms",
            "verify",
            "--key-id",
            key_id,
            "--message",
            f"fileb://{tmp_path / 'message.bin'}",
            "--message-type",
            "RAW",
            "--signature",
            f"fileb://{tmp_path / 'signature.bin'}",
            "--signing-algorithm",
            "ECDSA_SHA_256",
        )
    )
    assert verified["SignatureValid"] is True

    public = ok(coffer.cli("kms", "get-public-key", "--key-id", key_id))
    assert public["KeySpec"] == "ECC_NIST_P256"
    key = serialization.load_der_public_key(b64(public["PublicKey"]))
    key.verify(signature, message, ec.ECDSA(hashes.SHA256()))

    (tmp_path / "bad.bin").write_bytes(signature[:-1] + bytes([signature[-1] ^ 1]))
    failed = coffer.cli(
        "kms",
        "verify",
        "--key-id",
        key_id,
        "--message",
        f"fileb://{tmp_path / 'message.bin'}",
        "--signature",
        f"fileb://{tmp_path / 'bad.bin'}",
        "--signing-algorithm",
        "ECDSA_SHA_256",
    )
    assert failed.code in (254, 255), failed.stderr
    assert "KMSInvalidSignatureException" in failed.stderr


def test_cli_generate_data_key(coffer, cli_key, tmp_path):
    generated = ok(coffer.cli("kms", "generate-data-key", "--key-id", cli_key, "--key-spec", "AES_256"))
    plaintext = b64(generated["Plaintext"])
    assert len(plaintext) == 32
    (tmp_path / "wrapped.bin").write_bytes(b64(generated["CiphertextBlob"]))
    decrypted = ok(coffer.cli("kms", "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'wrapped.bin'}"))
    assert b64(decrypted["Plaintext"]) == plaintext


def test_cli_generate_random(coffer):
    generated = ok(coffer.cli("kms", "generate-random", "--number-of-bytes", "32"))
    assert len(b64(generated["Plaintext"])) == 32


def test_cli_error_paths(coffer, cli_key, tmp_path):
    missing = coffer.cli("kms", "describe-key", "--key-id", str(uuid.uuid4()))
    assert missing.code in (254, 255), missing.stderr
    assert "NotFoundException" in missing.stderr
    assert "DescribeKey" in missing.stderr

    # The non-admin user is denied under the default key policy.
    (tmp_path / "plain.bin").write_bytes(b"denied")
    denied = coffer.cli(
        "kms", "encrypt", "--key-id", cli_key, "--plaintext", f"fileb://{tmp_path / 'plain.bin'}", profile="app"
    )
    assert denied.code in (254, 255), denied.stderr
    assert "AccessDeniedException" in denied.stderr

    bad = coffer.cli("kms", "list-keys", profile="coffer-bad-secret")
    assert bad.code in (254, 255), bad.stderr
    assert "InvalidSignatureException" in bad.stderr
