"""End-to-end tests of coffer's KMS API through boto3, against a real `coffer server`.

Expected behaviour is AWS KMS's as documented (API reference and the botocore service model);
where this suite and the server disagree, the server is what has to change.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import time
import uuid

import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from concurrent.futures import ThreadPoolExecutor

from conftest import (
    alias_arn,
    start_coffer,
    assert_error_response,
    assert_ok,
    key_arn,
    kms_error,
    new_symmetric_key,
    unique,
)

RSA_SIGNING_ALGORITHMS = {
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
}
RSA_ENCRYPTION_ALGORITHMS = {"RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"}
RSA_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
CURVES = {"ECC_NIST_P256": ec.SECP256R1, "ECC_NIST_P384": ec.SECP384R1}
OAEP_SHA256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
OAEP_SHA1 = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


# --------------------------------------------------------------------------------------------
# Module fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sym_key(kms) -> str:
    return new_symmetric_key(kms, "e2e: symmetric")


@pytest.fixture(scope="module")
def other_sym_key(kms) -> str:
    return new_symmetric_key(kms, "e2e: second symmetric")


@pytest.fixture(scope="module")
def asym_key(kms):
    """Creates each asymmetric (KeySpec, KeyUsage) once for the module; returns its KeyMetadata.

    RSA 4096 exists only as ENCRYPT_DECRYPT: it is the slowest key to generate."""
    cache: dict[tuple[str, str], dict] = {}

    def get(spec: str, usage: str) -> dict:
        if (spec, usage) not in cache:
            response = assert_ok(
                kms.create_key(KeySpec=spec, KeyUsage=usage, Description=f"e2e: {spec} {usage}")
            )
            cache[(spec, usage)] = response["KeyMetadata"]
        return cache[(spec, usage)]

    return get


@pytest.fixture(scope="module")
def admin_principal(coffer, kms, account_id) -> str:
    """The admin key's principal ARN, as the server's audit log names it."""
    request_id = kms.list_keys(Limit=1)["ResponseMetadata"]["RequestId"]
    line = wait_for_audit_line(coffer.audit_log, request_id)
    principal = line["principal"]
    assert principal.startswith(f"arn:aws:iam::{account_id}:"), principal
    return principal


def complete_audit_lines(path) -> list[str]:
    """The audit log's lines that are complete (a line still being written has no newline)."""
    if not path.exists():
        return []
    return [line for line in path.read_text().split("\n")[:-1] if line.strip()]


def wait_for_audit_line(path, request_id: str, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for line in complete_audit_lines(path):
            if request_id in line:
                return json.loads(line)
        if time.monotonic() > deadline:
            raise AssertionError(f"no audit line for request {request_id} in {path}")
        time.sleep(0.2)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def assert_recent(value, seconds: float = 300) -> None:
    assert isinstance(value, dt.datetime), f"{value!r} is not a datetime"
    assert value.tzinfo is not None
    assert abs((now() - value).total_seconds()) < seconds, value


def assert_days_ahead(value, days: int, slack_hours: float = 26) -> None:
    assert isinstance(value, dt.datetime), f"{value!r} is not a datetime"
    expected = now() + dt.timedelta(days=days)
    assert abs((value - expected).total_seconds()) < slack_hours * 3600, (value, expected)


def flip(blob: bytes, index: int) -> bytes:
    changed = bytearray(blob)
    changed[index] ^= 0x01
    return bytes(changed)


def local_verify(public_der: bytes, algorithm: str, message: bytes, message_type: str, signature: bytes) -> None:
    """Verifies a KMS signature with `cryptography`; raises InvalidSignature when wrong."""
    public = serialization.load_der_public_key(public_der)
    bits = algorithm.rsplit("_", 1)[1]
    digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[bits]
    hashed = Prehashed(digest) if message_type == "DIGEST" else digest
    if algorithm.startswith("ECDSA"):
        public.verify(signature, message, ec.ECDSA(hashed))
    elif algorithm.startswith("RSASSA_PSS"):
        # KMS uses MGF1 with the same hash and a salt as long as the digest.
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        public.verify(signature, message, pss, hashed)
    else:
        public.verify(signature, message, padding.PKCS1v15(), hashed)


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def test_create_symmetric_key_defaults(kms, account_id):
    response = assert_ok(kms.create_key(Description="e2e: defaults"))
    md = response["KeyMetadata"]
    key_id = md["KeyId"]
    uuid.UUID(key_id)
    assert md["Arn"] == key_arn(account_id, key_id)
    assert md["AWSAccountId"] == account_id
    assert md["KeyState"] == "Enabled"
    assert md["Enabled"] is True
    assert md["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert md["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert md["Origin"] == "AWS_KMS"
    assert md["KeyManager"] == "CUSTOMER"
    assert md["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert "SigningAlgorithms" not in md
    assert md["Description"] == "e2e: defaults"
    assert md.get("MultiRegion", False) is False
    assert "DeletionDate" not in md
    assert_recent(md["CreationDate"])


def test_describe_key_full_metadata(kms, sym_key, account_id):
    response = assert_ok(kms.describe_key(KeyId=sym_key))
    md = response["KeyMetadata"]
    assert md["KeyId"] == sym_key
    assert md["Arn"] == key_arn(account_id, sym_key)
    assert md["AWSAccountId"] == account_id
    assert md["KeyState"] == "Enabled"
    assert md["Enabled"] is True
    assert md["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert md.get("CustomerMasterKeySpec", "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"
    assert md["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert md["Origin"] == "AWS_KMS"
    assert md["KeyManager"] == "CUSTOMER"
    assert md["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert md["Description"] == "e2e: symmetric"
    assert_recent(md["CreationDate"], seconds=900)


def test_create_key_with_tags(kms):
    tags = [{"TagKey": "team", "TagValue": "blue"}, {"TagKey": "env", "TagValue": "e2e"}]
    key_id = kms.create_key(Description="e2e: tagged", Tags=tags)["KeyMetadata"]["KeyId"]
    listed = assert_ok(kms.list_resource_tags(KeyId=key_id))
    assert {t["TagKey"]: t["TagValue"] for t in listed["Tags"]} == {"team": "blue", "env": "e2e"}
    assert listed.get("Truncated", False) is False


ASYMMETRIC_SPECS = [
    ("RSA_2048", "ENCRYPT_DECRYPT"),
    ("RSA_2048", "SIGN_VERIFY"),
    ("RSA_3072", "ENCRYPT_DECRYPT"),
    ("RSA_3072", "SIGN_VERIFY"),
    ("RSA_4096", "ENCRYPT_DECRYPT"),
    ("ECC_NIST_P256", "SIGN_VERIFY"),
    ("ECC_NIST_P384", "SIGN_VERIFY"),
]


@pytest.mark.parametrize("spec,usage", ASYMMETRIC_SPECS)
def test_create_asymmetric_key_and_get_public_key(kms, asym_key, account_id, spec, usage):
    md = asym_key(spec, usage)
    assert md["KeySpec"] == spec
    assert md.get("CustomerMasterKeySpec", spec) == spec
    assert md["KeyUsage"] == usage
    assert md["KeyState"] == "Enabled"
    assert md["Origin"] == "AWS_KMS"
    assert md["Arn"] == key_arn(account_id, md["KeyId"])
    if usage == "ENCRYPT_DECRYPT":
        assert set(md["EncryptionAlgorithms"]) == RSA_ENCRYPTION_ALGORITHMS
        assert "SigningAlgorithms" not in md
    elif spec.startswith("RSA"):
        assert set(md["SigningAlgorithms"]) == RSA_SIGNING_ALGORITHMS
        assert "EncryptionAlgorithms" not in md
    else:
        expected = {"ECC_NIST_P256": ["ECDSA_SHA_256"], "ECC_NIST_P384": ["ECDSA_SHA_384"]}[spec]
        assert md["SigningAlgorithms"] == expected
        assert "EncryptionAlgorithms" not in md

    described = kms.describe_key(KeyId=md["KeyId"])["KeyMetadata"]
    assert described["KeySpec"] == spec and described["KeyUsage"] == usage

    response = assert_ok(kms.get_public_key(KeyId=md["KeyId"]))
    assert response["KeyId"] == md["Arn"]
    assert response["KeySpec"] == spec
    assert response["KeyUsage"] == usage
    public = serialization.load_der_public_key(response["PublicKey"])
    if spec.startswith("RSA"):
        assert isinstance(public, rsa.RSAPublicKey)
        assert public.key_size == RSA_BITS[spec]
        if usage == "ENCRYPT_DECRYPT":
            assert set(response["EncryptionAlgorithms"]) == RSA_ENCRYPTION_ALGORITHMS
        else:
            assert set(response["SigningAlgorithms"]) == RSA_SIGNING_ALGORITHMS
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert isinstance(public.curve, CURVES[spec])
        assert response["SigningAlgorithms"] == md["SigningAlgorithms"]
    # The DER is a SubjectPublicKeyInfo: re-encoding it gives the same bytes.
    assert public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == response["PublicKey"]


def test_create_key_rejects_bad_combinations(kms):
    with kms_error("ValidationException"):
        kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="ENCRYPT_DECRYPT")
    with kms_error("ValidationException"):
        kms.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="SIGN_VERIFY")


def test_list_keys_paging(kms, account_id):
    created = {new_symmetric_key(kms, f"e2e: paging {i}") for i in range(4)}
    seen: list[str] = []
    marker = None
    pages = 0
    while True:
        kwargs = {"Limit": 2}
        if marker:
            kwargs["Marker"] = marker
        page = assert_ok(kms.list_keys(**kwargs))
        pages += 1
        assert len(page["Keys"]) <= 2
        for entry in page["Keys"]:
            assert entry["KeyArn"] == key_arn(account_id, entry["KeyId"])
            seen.append(entry["KeyId"])
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        assert len(page["Keys"]) == 2
        marker = page["NextMarker"]
        assert marker
        assert pages < 1000
    assert pages >= 3
    assert len(seen) == len(set(seen)), "a key was listed twice"
    assert created <= set(seen)

    # botocore's paginator walks the same markers.
    paginated = [
        entry["KeyId"]
        for page in kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 3})
        for entry in page["Keys"]
    ]
    assert sorted(paginated) == sorted(seen)


def test_list_keys_rejects_bad_marker_and_limit(kms, kms_unvalidated):
    with kms_error("InvalidMarkerException"):
        kms.list_keys(Limit=1, Marker="not-a-marker-" + uuid.uuid4().hex)
    with kms_error("ValidationException"):
        kms_unvalidated.list_keys(Limit=0)
    with kms_error("ValidationException"):
        kms_unvalidated.list_keys(Limit=1001)


def test_enable_disable_key(kms):
    key_id = new_symmetric_key(kms, "e2e: enable/disable")
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"before disable")["CiphertextBlob"]
    assert_ok(kms.disable_key(KeyId=key_id))
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "Disabled" and md["Enabled"] is False
    with kms_error("DisabledException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    with kms_error("DisabledException"):
        kms.decrypt(CiphertextBlob=blob)
    with kms_error("DisabledException"):
        kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert_ok(kms.enable_key(KeyId=key_id))
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "Enabled" and md["Enabled"] is True
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before disable"


def test_update_key_description(kms):
    key_id = new_symmetric_key(kms, "e2e: old description")
    assert_ok(kms.update_key_description(KeyId=key_id, Description="e2e: new description"))
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "e2e: new description"
    kms.update_key_description(KeyId=key_id, Description="")
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == ""


def test_tag_untag_list_resource_tags(kms, account_id):
    key_id = new_symmetric_key(kms, "e2e: tags")
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == []
    assert_ok(
        kms.tag_resource(
            KeyId=key_id,
            Tags=[
                {"TagKey": "a", "TagValue": "1"},
                {"TagKey": "b", "TagValue": "2"},
                {"TagKey": "c", "TagValue": ""},
            ],
        )
    )
    # Tagging an existing key replaces its value; tags are addressed by key ARN too.
    kms.tag_resource(KeyId=key_arn(account_id, key_id), Tags=[{"TagKey": "a", "TagValue": "one"}])
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key_id)["Tags"]}
    assert tags == {"a": "one", "b": "2", "c": ""}
    assert_ok(kms.untag_resource(KeyId=key_id, TagKeys=["b", "c"]))
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key_id)["Tags"]}
    assert tags == {"a": "one"}
    # Removing a tag that is not there is not an error.
    kms.untag_resource(KeyId=key_id, TagKeys=["missing"])
    with kms_error("TagException"):
        kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "aws:reserved", "TagValue": "x"}])


def test_list_resource_tags_paging(kms):
    key_id = new_symmetric_key(kms, "e2e: tag paging")
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": f"k{i}", "TagValue": str(i)} for i in range(5)])
    seen = []
    marker = None
    while True:
        kwargs = {"KeyId": key_id, "Limit": 2}
        if marker:
            kwargs["Marker"] = marker
        page = kms.list_resource_tags(**kwargs)
        assert len(page["Tags"]) <= 2
        seen += [t["TagKey"] for t in page["Tags"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert sorted(seen) == [f"k{i}" for i in range(5)]


# --------------------------------------------------------------------------------------------
# Aliases
# --------------------------------------------------------------------------------------------


def aliases_of(kms, **kwargs) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for page in kms.get_paginator("list_aliases").paginate(**kwargs):
        assert_ok(page)
        for entry in page["Aliases"]:
            assert entry["AliasName"] not in found
            found[entry["AliasName"]] = entry
    return found


def test_alias_lifecycle(kms, account_id):
    first = new_symmetric_key(kms, "e2e: alias first")
    second = new_symmetric_key(kms, "e2e: alias second")
    name = "alias/" + unique("e2e")
    extra = "alias/" + unique("e2e-extra")

    assert_ok(kms.create_alias(AliasName=name, TargetKeyId=first))
    kms.create_alias(AliasName=extra, TargetKeyId=key_arn(account_id, first))

    everything = aliases_of(kms)
    assert name in everything and extra in everything
    entry = everything[name]
    assert entry["AliasArn"] == alias_arn(account_id, name)
    assert entry["TargetKeyId"] == first
    assert_recent(entry["CreationDate"])
    if "LastUpdatedDate" in entry:
        assert_recent(entry["LastUpdatedDate"])

    by_key = aliases_of(kms, KeyId=first)
    assert set(by_key) == {name, extra}
    assert set(aliases_of(kms, KeyId=key_arn(account_id, first))) == {name, extra}
    assert aliases_of(kms, KeyId=second) == {}

    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == first

    with kms_error("AlreadyExistsException"):
        kms.create_alias(AliasName=name, TargetKeyId=second)

    assert_ok(kms.update_alias(AliasName=name, TargetKeyId=second))
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == second
    assert set(aliases_of(kms, KeyId=first)) == {extra}
    assert set(aliases_of(kms, KeyId=second)) == {name}

    assert_ok(kms.delete_alias(AliasName=name))
    with kms_error("NotFoundException"):
        kms.describe_key(KeyId=name)
    assert name not in aliases_of(kms)
    with kms_error("NotFoundException"):
        kms.delete_alias(AliasName=name)
    with kms_error("NotFoundException"):
        kms.update_alias(AliasName=name, TargetKeyId=first)
    # The key itself is untouched by deleting its alias.
    assert kms.describe_key(KeyId=second)["KeyMetadata"]["KeyState"] == "Enabled"
    kms.delete_alias(AliasName=extra)


def test_alias_validation(kms, sym_key):
    with kms_error("ValidationException"):
        kms.create_alias(AliasName=unique("no-prefix"), TargetKeyId=sym_key)
    with kms_error("NotFoundException"):
        kms.create_alias(AliasName="alias/" + unique("e2e"), TargetKeyId=str(uuid.uuid4()))


def test_alias_targets(kms, sym_key, asym_key):
    """An alias points at a key (not at another alias), and moves only between keys of the same
    type and usage."""
    name = "alias/" + unique("e2e-target")
    kms.create_alias(AliasName=name, TargetKeyId=sym_key)
    with pytest.raises(ClientError):
        kms.create_alias(AliasName="alias/" + unique("e2e-chained"), TargetKeyId=name)
    with pytest.raises(ClientError):
        kms.update_alias(AliasName=name, TargetKeyId=asym_key("ECC_NIST_P256", "SIGN_VERIFY")["KeyId"])
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == sym_key
    kms.delete_alias(AliasName=name)


def test_list_aliases_paging(kms):
    key_id = new_symmetric_key(kms, "e2e: alias paging")
    names = {"alias/" + unique(f"e2e-page{i}") for i in range(3)}
    for name in names:
        kms.create_alias(AliasName=name, TargetKeyId=key_id)
    page = kms.list_aliases(KeyId=key_id, Limit=1)
    assert len(page["Aliases"]) == 1
    assert page["Truncated"] is True and page["NextMarker"]
    assert set(aliases_of(kms, KeyId=key_id, PaginationConfig={"PageSize": 2})) == names


KEY_FORMS = ["key-id", "key-arn", "alias-name", "alias-arn"]


@pytest.fixture(scope="module")
def aliased_key(kms, account_id):
    key_id = new_symmetric_key(kms, "e2e: key id forms")
    name = "alias/" + unique("e2e-forms")
    kms.create_alias(AliasName=name, TargetKeyId=key_id)
    return {
        "key-id": key_id,
        "key-arn": key_arn(account_id, key_id),
        "alias-name": name,
        "alias-arn": alias_arn(account_id, name),
    }


@pytest.mark.parametrize("form", KEY_FORMS)
def test_key_id_forms_symmetric(kms, aliased_key, other_sym_key, account_id, form):
    key_id = aliased_key["key-id"]
    ref = aliased_key[form]
    arn = key_arn(account_id, key_id)

    assert kms.describe_key(KeyId=ref)["KeyMetadata"]["KeyId"] == key_id

    encrypted = kms.encrypt(KeyId=ref, Plaintext=b"forms")
    assert encrypted["KeyId"] == arn
    decrypted = kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], KeyId=ref)
    assert decrypted["Plaintext"] == b"forms" and decrypted["KeyId"] == arn

    data_key = kms.generate_data_key(KeyId=ref, KeySpec="AES_256")
    assert data_key["KeyId"] == arn
    assert kms.generate_data_key_without_plaintext(KeyId=ref, NumberOfBytes=16)["KeyId"] == arn

    other = kms.encrypt(KeyId=other_sym_key, Plaintext=b"forms")["CiphertextBlob"]
    moved = kms.re_encrypt(CiphertextBlob=other, DestinationKeyId=ref)
    assert moved["KeyId"] == arn
    back = kms.re_encrypt(CiphertextBlob=moved["CiphertextBlob"], SourceKeyId=ref, DestinationKeyId=other_sym_key)
    assert back["SourceKeyId"] == arn


@pytest.mark.parametrize("form", KEY_FORMS)
def test_key_id_forms_asymmetric(kms, asym_key, account_id, form):
    md = asym_key("ECC_NIST_P256", "SIGN_VERIFY")
    name = f"alias/e2e-sign-{form}-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=name, TargetKeyId=md["KeyId"])
    ref = {
        "key-id": md["KeyId"],
        "key-arn": md["Arn"],
        "alias-name": name,
        "alias-arn": alias_arn(account_id, name),
    }[form]
    assert kms.get_public_key(KeyId=ref)["KeyId"] == md["Arn"]
    signed = kms.sign(KeyId=ref, Message=b"forms", MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")
    assert signed["KeyId"] == md["Arn"]
    verified = kms.verify(
        KeyId=ref,
        Message=b"forms",
        MessageType="RAW",
        Signature=signed["Signature"],
        SigningAlgorithm="ECDSA_SHA_256",
    )
    assert verified["SignatureValid"] is True and verified["KeyId"] == md["Arn"]
    kms.delete_alias(AliasName=name)


@pytest.mark.parametrize("form", ["key-id", "key-arn"])
def test_key_id_forms_for_key_only_operations(kms, aliased_key, form):
    """Operations documented to take a key id or key ARN (not an alias)."""
    ref = aliased_key[form]
    kms.update_key_description(KeyId=ref, Description="e2e: key id forms")
    kms.tag_resource(KeyId=ref, Tags=[{"TagKey": "form", "TagValue": form}])
    assert {"TagKey": "form", "TagValue": form} in kms.list_resource_tags(KeyId=ref)["Tags"]
    assert kms.get_key_rotation_status(KeyId=ref)["KeyRotationEnabled"] in (True, False)
    assert json.loads(kms.get_key_policy(KeyId=ref, PolicyName="default")["Policy"])
    assert kms.list_key_policies(KeyId=ref)["PolicyNames"] == ["default"]
    kms.disable_key(KeyId=ref)
    kms.enable_key(KeyId=ref)
    assert kms.describe_key(KeyId=ref)["KeyMetadata"]["KeyState"] == "Enabled"


# --------------------------------------------------------------------------------------------
# Symmetric crypto
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 31, 1000, 4096])
def test_encrypt_decrypt_sizes(kms, sym_key, account_id, size):
    plaintext = os.urandom(size)
    encrypted = assert_ok(kms.encrypt(KeyId=sym_key, Plaintext=plaintext))
    assert encrypted["KeyId"] == key_arn(account_id, sym_key)
    assert encrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert plaintext not in encrypted["CiphertextBlob"] or size < 4
    decrypted = assert_ok(kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"]))
    assert decrypted["Plaintext"] == plaintext
    assert decrypted["KeyId"] == key_arn(account_id, sym_key)
    assert decrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"


def test_encrypt_is_randomized(kms, sym_key):
    one = kms.encrypt(KeyId=sym_key, Plaintext=b"same")["CiphertextBlob"]
    two = kms.encrypt(KeyId=sym_key, Plaintext=b"same")["CiphertextBlob"]
    assert one != two


def test_encrypt_empty_plaintext_fails(kms, kms_unvalidated, sym_key):
    # botocore may refuse it before sending; if it sends it, the server must refuse it.
    with pytest.raises((ParamValidationError, ClientError)) as info:
        kms.encrypt(KeyId=sym_key, Plaintext=b"")
    if isinstance(info.value, ClientError):
        assert_error_response(info.value.response, "ValidationException")
    with kms_error("ValidationException"):
        kms_unvalidated.encrypt(KeyId=sym_key, Plaintext=b"")


def test_encrypt_oversized_plaintext_fails(kms, sym_key):
    with kms_error("ValidationException"):
        kms.encrypt(KeyId=sym_key, Plaintext=os.urandom(4097))


def test_decrypt_with_right_and_wrong_key_id(kms, sym_key, other_sym_key, account_id):
    blob = kms.encrypt(KeyId=sym_key, Plaintext=b"which key")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, KeyId=sym_key)["Plaintext"] == b"which key"
    assert kms.decrypt(CiphertextBlob=blob, KeyId=key_arn(account_id, sym_key))["Plaintext"] == b"which key"
    with kms_error("IncorrectKeyException"):
        kms.decrypt(CiphertextBlob=blob, KeyId=other_sym_key)


def test_encryption_context_binding(kms, sym_key):
    context = {"purpose": "e2e", "team": "blue"}
    blob = kms.encrypt(KeyId=sym_key, Plaintext=b"bound", EncryptionContext=context)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"bound"
    reordered = {"team": "blue", "purpose": "e2e"}
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=reordered)["Plaintext"] == b"bound"
    for wrong in ({"purpose": "e2e", "team": "red"}, {"purpose": "e2e"}, {**context, "x": "y"}):
        with kms_error("InvalidCiphertextException"):
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=wrong)
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob)

    # Keys and values are compared exactly: case matters, any Unicode works.
    unicode_context = {"名前": "値", "Team": "Blue"}
    blob = kms.encrypt(KeyId=sym_key, Plaintext=b"unicode", EncryptionContext=unicode_context)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=unicode_context)["Plaintext"] == b"unicode"
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"名前": "値", "team": "Blue"})
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"名前": "値", "Team": "blue"})


@pytest.mark.parametrize("where", ["middle", "end"])
def test_tampered_ciphertext(kms, sym_key, where):
    blob = kms.encrypt(KeyId=sym_key, Plaintext=b"do not touch")["CiphertextBlob"]
    index = len(blob) // 2 if where == "middle" else len(blob) - 1
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=flip(blob, index))
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=flip(blob, index), KeyId=sym_key)


def test_every_single_bit_flip_is_detected(kms, sym_key):
    """No byte of a ciphertext blob (header, key reference, nonce, body, tag) can change unnoticed."""
    context = {"bits": "flipped"}
    blob = kms.encrypt(KeyId=sym_key, Plaintext=b"every byte", EncryptionContext=context)["CiphertextBlob"]
    codes = set()
    for index in range(len(blob)):
        with pytest.raises(ClientError) as info:
            kms.decrypt(CiphertextBlob=flip(blob, index), EncryptionContext=context)
        codes.add(info.value.response["Error"]["Code"])
    assert codes == {"InvalidCiphertextException"}


def test_garbage_and_truncated_ciphertext(kms, sym_key):
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=os.urandom(120))
    blob = kms.encrypt(KeyId=sym_key, Plaintext=b"short")["CiphertextBlob"]
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob[:-10])


def test_reencrypt_to_another_key_and_context(kms, sym_key, other_sym_key, account_id):
    source_context = {"stage": "one"}
    destination_context = {"stage": "two"}
    blob = kms.encrypt(KeyId=sym_key, Plaintext=b"moving", EncryptionContext=source_context)["CiphertextBlob"]
    moved = assert_ok(
        kms.re_encrypt(
            CiphertextBlob=blob,
            SourceEncryptionContext=source_context,
            DestinationKeyId=other_sym_key,
            DestinationEncryptionContext=destination_context,
        )
    )
    assert moved["SourceKeyId"] == key_arn(account_id, sym_key)
    assert moved["KeyId"] == key_arn(account_id, other_sym_key)
    assert moved["SourceEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert moved["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    decrypted = kms.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext=destination_context)
    assert decrypted["Plaintext"] == b"moving"
    assert decrypted["KeyId"] == key_arn(account_id, other_sym_key)
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext=source_context)
    with kms_error("InvalidCiphertextException"):
        kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=other_sym_key)


def test_reencrypt_same_key_new_context(kms, sym_key):
    blob = kms.encrypt(KeyId=sym_key, Plaintext=b"recontext")["CiphertextBlob"]
    moved = kms.re_encrypt(
        CiphertextBlob=blob, DestinationKeyId=sym_key, DestinationEncryptionContext={"new": "context"}
    )["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=moved, EncryptionContext={"new": "context"})["Plaintext"] == b"recontext"
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=moved)


def test_reencrypt_between_rsa_and_symmetric(kms, asym_key, sym_key, account_id):
    md = asym_key("RSA_2048", "ENCRYPT_DECRYPT")
    rsa_blob = kms.encrypt(KeyId=md["KeyId"], Plaintext=b"asymmetric source", EncryptionAlgorithm="RSAES_OAEP_SHA_256")[
        "CiphertextBlob"
    ]
    moved = kms.re_encrypt(
        CiphertextBlob=rsa_blob,
        SourceKeyId=md["KeyId"],
        SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256",
        DestinationKeyId=sym_key,
    )
    assert moved["SourceKeyId"] == md["Arn"]
    assert moved["SourceEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert moved["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert kms.decrypt(CiphertextBlob=moved["CiphertextBlob"])["Plaintext"] == b"asymmetric source"

    sym_blob = kms.encrypt(KeyId=sym_key, Plaintext=b"symmetric source")["CiphertextBlob"]
    moved = kms.re_encrypt(
        CiphertextBlob=sym_blob, DestinationKeyId=md["KeyId"], DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_1"
    )
    assert moved["KeyId"] == md["Arn"]
    assert moved["DestinationEncryptionAlgorithm"] == "RSAES_OAEP_SHA_1"
    decrypted = kms.decrypt(
        CiphertextBlob=moved["CiphertextBlob"], KeyId=md["KeyId"], EncryptionAlgorithm="RSAES_OAEP_SHA_1"
    )
    assert decrypted["Plaintext"] == b"symmetric source"


@pytest.mark.parametrize(
    "kwargs,length",
    [({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16), ({"NumberOfBytes": 64}, 64), ({"NumberOfBytes": 1}, 1)],
)
def test_generate_data_key(kms, sym_key, account_id, kwargs, length):
    context = {"purpose": "data-key"}
    response = assert_ok(kms.generate_data_key(KeyId=sym_key, EncryptionContext=context, **kwargs))
    assert len(response["Plaintext"]) == length
    assert response["KeyId"] == key_arn(account_id, sym_key)
    decrypted = kms.decrypt(CiphertextBlob=response["CiphertextBlob"], EncryptionContext=context)
    assert decrypted["Plaintext"] == response["Plaintext"]
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=response["CiphertextBlob"])


def test_generate_data_key_size_validation(kms, kms_unvalidated, sym_key):
    with kms_error("ValidationException"):
        kms.generate_data_key(KeyId=sym_key)
    with kms_error("ValidationException"):
        kms.generate_data_key(KeyId=sym_key, KeySpec="AES_256", NumberOfBytes=32)
    with kms_error("ValidationException"):
        kms_unvalidated.generate_data_key(KeyId=sym_key, NumberOfBytes=1025)
    with kms_error("ValidationException"):
        kms_unvalidated.generate_data_key(KeyId=sym_key, NumberOfBytes=0)


def test_generate_data_key_without_plaintext(kms, sym_key, account_id):
    response = assert_ok(kms.generate_data_key_without_plaintext(KeyId=sym_key, KeySpec="AES_256"))
    assert "Plaintext" not in response
    assert response["KeyId"] == key_arn(account_id, sym_key)
    assert len(kms.decrypt(CiphertextBlob=response["CiphertextBlob"])["Plaintext"]) == 32
    response = kms.generate_data_key_without_plaintext(KeyId=sym_key, NumberOfBytes=48)
    assert len(kms.decrypt(CiphertextBlob=response["CiphertextBlob"])["Plaintext"]) == 48


def assert_key_pair(spec: str, public_der: bytes, private_der: bytes) -> None:
    public = serialization.load_der_public_key(public_der)
    private = serialization.load_der_private_key(private_der, password=None)
    if spec.startswith("RSA"):
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == RSA_BITS[spec]
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, CURVES[spec])
    assert private.public_key().public_numbers() == public.public_numbers()


@pytest.mark.parametrize("spec", ["RSA_2048", "ECC_NIST_P256"])
def test_generate_data_key_pair(kms, sym_key, account_id, spec):
    context = {"pair": spec}
    response = assert_ok(kms.generate_data_key_pair(KeyId=sym_key, KeyPairSpec=spec, EncryptionContext=context))
    assert response["KeyId"] == key_arn(account_id, sym_key)
    assert response["KeyPairSpec"] == spec
    decrypted = kms.decrypt(CiphertextBlob=response["PrivateKeyCiphertextBlob"], EncryptionContext=context)
    assert decrypted["Plaintext"] == response["PrivateKeyPlaintext"]
    assert_key_pair(spec, response["PublicKey"], response["PrivateKeyPlaintext"])


@pytest.mark.parametrize("spec", ["ECC_NIST_P256", "ECC_NIST_P384", "RSA_2048"])
def test_generate_data_key_pair_without_plaintext(kms, sym_key, account_id, spec):
    response = assert_ok(kms.generate_data_key_pair_without_plaintext(KeyId=sym_key, KeyPairSpec=spec))
    assert "PrivateKeyPlaintext" not in response
    assert response["KeyId"] == key_arn(account_id, sym_key)
    assert response["KeyPairSpec"] == spec
    private = kms.decrypt(CiphertextBlob=response["PrivateKeyCiphertextBlob"])["Plaintext"]
    assert_key_pair(spec, response["PublicKey"], private)


def test_data_key_operations_need_a_symmetric_key(kms, asym_key):
    md = asym_key("RSA_2048", "ENCRYPT_DECRYPT")
    with kms_error("InvalidKeyUsageException"):
        kms.generate_data_key(KeyId=md["KeyId"], KeySpec="AES_256")


@pytest.mark.parametrize("size", [1, 32, 1024])
def test_generate_random(kms, size):
    response = assert_ok(kms.generate_random(NumberOfBytes=size))
    assert len(response["Plaintext"]) == size


def test_generate_random_is_random_and_bounded(kms, kms_unvalidated):
    assert kms.generate_random(NumberOfBytes=64)["Plaintext"] != kms.generate_random(NumberOfBytes=64)["Plaintext"]
    with kms_error("ValidationException"):
        kms.generate_random(NumberOfBytes=1025)
    with kms_error("ValidationException"):
        kms_unvalidated.generate_random(NumberOfBytes=0)


# --------------------------------------------------------------------------------------------
# Asymmetric keys
# --------------------------------------------------------------------------------------------

SIGNING_CASES = [
    ("RSA_2048", "RSASSA_PSS_SHA_256"),
    ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256"),
    ("RSA_3072", "RSASSA_PSS_SHA_384"),
    ("ECC_NIST_P256", "ECDSA_SHA_256"),
    ("ECC_NIST_P384", "ECDSA_SHA_384"),
]
DIGESTS = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


@pytest.mark.parametrize("message_type", ["RAW", "DIGEST"])
@pytest.mark.parametrize("spec,algorithm", SIGNING_CASES)
def test_sign_verify(kms, asym_key, spec, algorithm, message_type):
    md = asym_key(spec, "SIGN_VERIFY")
    raw = b"coffer e2e message " + os.urandom(8)
    digest = DIGESTS[algorithm.rsplit("_", 1)[1]](raw).digest()
    message = digest if message_type == "DIGEST" else raw

    signed = assert_ok(
        kms.sign(KeyId=md["KeyId"], Message=message, MessageType=message_type, SigningAlgorithm=algorithm)
    )
    assert signed["KeyId"] == md["Arn"]
    assert signed["SigningAlgorithm"] == algorithm
    signature = signed["Signature"]

    verified = assert_ok(
        kms.verify(
            KeyId=md["KeyId"],
            Message=message,
            MessageType=message_type,
            Signature=signature,
            SigningAlgorithm=algorithm,
        )
    )
    assert verified["SignatureValid"] is True
    assert verified["KeyId"] == md["Arn"]
    assert verified["SigningAlgorithm"] == algorithm

    # A RAW signature is a signature over the digest, and the other way round.
    other_type, other_message = ("DIGEST", digest) if message_type == "RAW" else ("RAW", raw)
    assert kms.verify(
        KeyId=md["KeyId"], Message=other_message, MessageType=other_type, Signature=signature, SigningAlgorithm=algorithm
    )["SignatureValid"] is True

    # Checked locally with the public key.
    public_der = kms.get_public_key(KeyId=md["KeyId"])["PublicKey"]
    local_verify(public_der, algorithm, message, message_type, signature)

    with kms_error("KMSInvalidSignatureException"):
        kms.verify(
            KeyId=md["KeyId"],
            Message=message,
            MessageType=message_type,
            Signature=flip(signature, len(signature) // 2),
            SigningAlgorithm=algorithm,
        )
    wrong_message = DIGESTS[algorithm.rsplit("_", 1)[1]](b"other").digest() if message_type == "DIGEST" else b"other"
    with kms_error("KMSInvalidSignatureException"):
        kms.verify(
            KeyId=md["KeyId"],
            Message=wrong_message,
            MessageType=message_type,
            Signature=signature,
            SigningAlgorithm=algorithm,
        )


def test_sign_default_message_type_is_raw(kms, asym_key):
    md = asym_key("ECC_NIST_P256", "SIGN_VERIFY")
    signature = kms.sign(KeyId=md["KeyId"], Message=b"implicit raw", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    public_der = kms.get_public_key(KeyId=md["KeyId"])["PublicKey"]
    local_verify(public_der, "ECDSA_SHA_256", b"implicit raw", "RAW", signature)


def test_sign_rejections(kms, asym_key, sym_key):
    sign_key = asym_key("ECC_NIST_P256", "SIGN_VERIFY")["KeyId"]
    encrypt_key = asym_key("RSA_2048", "ENCRYPT_DECRYPT")["KeyId"]
    with kms_error("InvalidKeyUsageException"):
        kms.sign(KeyId=encrypt_key, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")
    with kms_error("InvalidKeyUsageException"):
        kms.sign(KeyId=sym_key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    with kms_error("InvalidKeyUsageException"):
        kms.encrypt(KeyId=sign_key, Plaintext=b"m")
    # An algorithm the key does not support.
    with kms_error("InvalidKeyUsageException"):
        kms.sign(KeyId=sign_key, Message=b"m", SigningAlgorithm="ECDSA_SHA_384")
    # A DIGEST message must be exactly as long as the algorithm's digest.
    with kms_error("ValidationException"):
        kms.sign(KeyId=sign_key, Message=b"short", MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    # A RAW message is at most 4096 bytes.
    with kms_error("ValidationException"):
        kms.sign(KeyId=sign_key, Message=os.urandom(4097), MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")


def test_get_public_key_of_symmetric_key_fails(kms, sym_key):
    with pytest.raises(ClientError) as info:
        kms.get_public_key(KeyId=sym_key)
    code = info.value.response["Error"]["Code"]
    assert code in ("UnsupportedOperationException", "InvalidKeyUsageException"), code
    assert_error_response(info.value.response, code)


@pytest.mark.parametrize("spec", ["RSA_2048", "RSA_4096"])
def test_rsa_local_encrypt_kms_decrypt(kms, asym_key, spec):
    md = asym_key(spec, "ENCRYPT_DECRYPT")
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=md["KeyId"])["PublicKey"])
    plaintext = os.urandom(100)
    ciphertext = public.encrypt(
        plaintext, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    decrypted = assert_ok(
        kms.decrypt(CiphertextBlob=ciphertext, KeyId=md["KeyId"], EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    )
    assert decrypted["Plaintext"] == plaintext
    assert decrypted["KeyId"] == md["Arn"]
    assert decrypted["EncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    # An asymmetric ciphertext has no key reference in it: it must be decrypted with its key.
    with pytest.raises(ClientError):
        kms.decrypt(CiphertextBlob=ciphertext, EncryptionAlgorithm="RSAES_OAEP_SHA_256")


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
def test_rsa_kms_encrypt_kms_decrypt(kms, asym_key, algorithm):
    md = asym_key("RSA_2048", "ENCRYPT_DECRYPT")
    encrypted = assert_ok(kms.encrypt(KeyId=md["KeyId"], Plaintext=b"rsa via kms", EncryptionAlgorithm=algorithm))
    assert encrypted["EncryptionAlgorithm"] == algorithm
    assert encrypted["KeyId"] == md["Arn"]
    assert len(encrypted["CiphertextBlob"]) == 256
    decrypted = kms.decrypt(
        CiphertextBlob=encrypted["CiphertextBlob"], KeyId=md["KeyId"], EncryptionAlgorithm=algorithm
    )
    assert decrypted["Plaintext"] == b"rsa via kms"
    assert decrypted["EncryptionAlgorithm"] == algorithm


@pytest.mark.parametrize("algorithm,limit", [("RSAES_OAEP_SHA_1", 214), ("RSAES_OAEP_SHA_256", 190)])
def test_rsa_plaintext_limits(kms, asym_key, algorithm, limit):
    """RSA_2048 takes at most 214 (OAEP SHA-1) or 190 (OAEP SHA-256) bytes of plaintext."""
    md = asym_key("RSA_2048", "ENCRYPT_DECRYPT")
    plaintext = os.urandom(limit)
    blob = kms.encrypt(KeyId=md["KeyId"], Plaintext=plaintext, EncryptionAlgorithm=algorithm)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, KeyId=md["KeyId"], EncryptionAlgorithm=algorithm)["Plaintext"] == plaintext
    with kms_error("ValidationException"):
        kms.encrypt(KeyId=md["KeyId"], Plaintext=os.urandom(limit + 1), EncryptionAlgorithm=algorithm)


def test_rsa_encrypt_needs_an_rsa_algorithm(kms, asym_key, sym_key):
    md = asym_key("RSA_2048", "ENCRYPT_DECRYPT")
    # SYMMETRIC_DEFAULT (the default) is not valid for an RSA key, nor an RSA algorithm for a
    # symmetric key.
    with kms_error("InvalidKeyUsageException"):
        kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x", EncryptionAlgorithm="SYMMETRIC_DEFAULT")
    with kms_error("InvalidKeyUsageException"):
        kms.encrypt(KeyId=sym_key, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")


# --------------------------------------------------------------------------------------------
# Rotation
# --------------------------------------------------------------------------------------------


def rotate_on_demand(kms, key_id: str) -> None:
    """RotateKeyOnDemand; AWS may answer ConflictException while a rotation is in progress."""
    deadline = time.monotonic() + 20
    while True:
        try:
            response = assert_ok(kms.rotate_key_on_demand(KeyId=key_id))
            assert response["KeyId"] in (key_id,) or response["KeyId"].endswith(key_id)
            return
        except ClientError as err:
            if err.response["Error"]["Code"] != "ConflictException" or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_key_rotation_status_lifecycle(kms, kms_unvalidated):
    key_id = new_symmetric_key(kms, "e2e: rotation status")
    status = assert_ok(kms.get_key_rotation_status(KeyId=key_id))
    assert status["KeyRotationEnabled"] is False
    assert "NextRotationDate" not in status

    with kms_error("ValidationException"):
        kms_unvalidated.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=89)
    with kms_error("ValidationException"):
        kms_unvalidated.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=2561)

    assert_ok(kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90))
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True
    assert status["RotationPeriodInDays"] == 90
    assert_days_ahead(status["NextRotationDate"], 90)
    if "KeyId" in status:
        assert status["KeyId"].endswith(key_id)

    assert_ok(kms.disable_key_rotation(KeyId=key_id))
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is False
    assert "NextRotationDate" not in status


def test_key_rotation_default_period(kms):
    key_id = new_symmetric_key(kms, "e2e: rotation default period")
    # Without a period, AWS uses 365 days.
    kms.enable_key_rotation(KeyId=key_id)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True
    assert status["RotationPeriodInDays"] == 365
    assert_days_ahead(status["NextRotationDate"], 365)


def test_rotation_on_demand_keeps_old_ciphertexts(kms, account_id):
    key_id = new_symmetric_key(kms, "e2e: rotation on demand")
    assert kms.list_key_rotations(KeyId=key_id)["Rotations"] == []

    before = kms.encrypt(KeyId=key_id, Plaintext=b"before rotations")["CiphertextBlob"]
    rotate_on_demand(kms, key_id)
    between = kms.encrypt(KeyId=key_id, Plaintext=b"between rotations")["CiphertextBlob"]
    rotate_on_demand(kms, key_id)
    after = kms.encrypt(KeyId=key_id, Plaintext=b"after rotations")["CiphertextBlob"]

    rotations = assert_ok(kms.list_key_rotations(KeyId=key_id))
    entries = rotations["Rotations"]
    assert len(entries) == 2, entries
    for entry in entries:
        assert entry["RotationType"] == "ON_DEMAND"
        assert entry["KeyId"] in (key_id, key_arn(account_id, key_id))
        assert_recent(entry["RotationDate"])
    assert rotations.get("Truncated", False) is False

    # The acceptance point: every ciphertext still decrypts, whichever key material made it.
    assert kms.decrypt(CiphertextBlob=before)["Plaintext"] == b"before rotations"
    assert kms.decrypt(CiphertextBlob=between)["Plaintext"] == b"between rotations"
    assert kms.decrypt(CiphertextBlob=after)["Plaintext"] == b"after rotations"
    assert kms.decrypt(CiphertextBlob=before, KeyId=key_id)["Plaintext"] == b"before rotations"
    # ReEncrypt moves an old ciphertext onto the current material.
    fresh = kms.re_encrypt(CiphertextBlob=before, DestinationKeyId=key_id)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=fresh)["Plaintext"] == b"before rotations"

    # On-demand rotation does not turn on automatic rotation.
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False

    page = kms.list_key_rotations(KeyId=key_id, Limit=1)
    assert len(page["Rotations"]) == 1 and page["Truncated"] is True and page["NextMarker"]
    rest = kms.list_key_rotations(KeyId=key_id, Limit=1, Marker=page["NextMarker"])
    assert len(rest["Rotations"]) == 1
    assert rest.get("Truncated", False) is False


def test_rotation_needs_a_symmetric_key(kms, asym_key):
    md = asym_key("ECC_NIST_P256", "SIGN_VERIFY")
    with kms_error("UnsupportedOperationException"):
        kms.enable_key_rotation(KeyId=md["KeyId"])
    with kms_error("UnsupportedOperationException"):
        kms.rotate_key_on_demand(KeyId=md["KeyId"])
    with kms_error("UnsupportedOperationException"):
        kms.get_key_rotation_status(KeyId=md["KeyId"])


def test_rotation_of_disabled_key_fails(kms):
    key_id = new_symmetric_key(kms, "e2e: rotation disabled")
    kms.disable_key(KeyId=key_id)
    with kms_error("DisabledException"):
        kms.rotate_key_on_demand(KeyId=key_id)


# --------------------------------------------------------------------------------------------
# Deletion
# --------------------------------------------------------------------------------------------


def test_schedule_and_cancel_deletion(kms, kms_unvalidated, account_id):
    key_id = new_symmetric_key(kms, "e2e: deletion")
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"survives cancel")["CiphertextBlob"]

    with kms_error("ValidationException"):
        kms_unvalidated.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=6)
    with kms_error("ValidationException"):
        kms_unvalidated.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=31)
    with kms_error("KMSInvalidStateException"):
        kms.cancel_key_deletion(KeyId=key_id)

    scheduled = assert_ok(kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7))
    assert scheduled["KeyId"] == key_arn(account_id, key_id)
    assert scheduled["KeyState"] == "PendingDeletion"
    assert scheduled["PendingWindowInDays"] == 7
    assert_days_ahead(scheduled["DeletionDate"], 7)

    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "PendingDeletion"
    assert md["Enabled"] is False
    assert_days_ahead(md["DeletionDate"], 7)

    with kms_error("KMSInvalidStateException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    with kms_error("KMSInvalidStateException"):
        kms.decrypt(CiphertextBlob=blob)
    with kms_error("KMSInvalidStateException"):
        kms.enable_key(KeyId=key_id)
    with kms_error("KMSInvalidStateException"):
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)

    cancelled = assert_ok(kms.cancel_key_deletion(KeyId=key_id))
    assert cancelled["KeyId"] == key_arn(account_id, key_id)
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "Disabled"
    assert "DeletionDate" not in md

    with kms_error("DisabledException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    kms.enable_key(KeyId=key_id)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"survives cancel"
    assert kms.encrypt(KeyId=key_id, Plaintext=b"again")["CiphertextBlob"]


def test_schedule_deletion_default_window(kms):
    key_id = new_symmetric_key(kms, "e2e: deletion default window")
    scheduled = kms.schedule_key_deletion(KeyId=key_id)
    assert scheduled["PendingWindowInDays"] == 30
    assert_days_ahead(scheduled["DeletionDate"], 30)
    assert_days_ahead(kms.describe_key(KeyId=key_id)["KeyMetadata"]["DeletionDate"], 30)
    kms.cancel_key_deletion(KeyId=key_id)


# --------------------------------------------------------------------------------------------
# Imported key material
# --------------------------------------------------------------------------------------------


def wrap_for_import(kms, key_id: str, material: bytes, algorithm: str = "RSAES_OAEP_SHA_256") -> tuple[bytes, bytes]:
    params = assert_ok(
        kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_2048")
    )
    assert params["KeyId"].endswith(key_id)
    assert_days_ahead(params["ParametersValidTo"], 1, slack_hours=2)
    public = serialization.load_der_public_key(params["PublicKey"])
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    wrapped = public.encrypt(material, OAEP_SHA256 if algorithm == "RSAES_OAEP_SHA_256" else OAEP_SHA1)
    return params["ImportToken"], wrapped


def test_import_key_material_lifecycle(kms, account_id):
    md = assert_ok(kms.create_key(Origin="EXTERNAL", Description="e2e: imported"))["KeyMetadata"]
    key_id = md["KeyId"]
    assert md["Origin"] == "EXTERNAL"
    assert md["KeyState"] == "PendingImport"
    assert md["Enabled"] is False
    with kms_error("KMSInvalidStateException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")

    material = os.urandom(32)
    token, wrapped = wrap_for_import(kms, key_id, material)
    assert_ok(
        kms.import_key_material(
            KeyId=key_id,
            ImportToken=token,
            EncryptedKeyMaterial=wrapped,
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
    )
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "Enabled"
    assert md["Enabled"] is True
    assert md["Origin"] == "EXTERNAL"
    assert md["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"

    blob = kms.encrypt(KeyId=key_id, Plaintext=b"imported material")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"imported material"

    assert_ok(kms.delete_imported_key_material(KeyId=key_id))
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "PendingImport"
    with kms_error("KMSInvalidStateException"):
        kms.decrypt(CiphertextBlob=blob)
    with kms_error("KMSInvalidStateException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")

    # The same material again, under fresh parameters: the old ciphertext decrypts again.
    token, wrapped = wrap_for_import(kms, key_id, material)
    kms.import_key_material(
        KeyId=key_id, ImportToken=token, EncryptedKeyMaterial=wrapped, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE"
    )
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"imported material"

    # Different material is refused.
    token, wrapped = wrap_for_import(kms, key_id, os.urandom(32))
    with kms_error("IncorrectKeyMaterialException"):
        kms.import_key_material(
            KeyId=key_id,
            ImportToken=token,
            EncryptedKeyMaterial=wrapped,
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"imported material"


def test_import_expiring_material_with_oaep_sha1(kms):
    key_id = kms.create_key(Origin="EXTERNAL", Description="e2e: expiring import")["KeyMetadata"]["KeyId"]
    token, wrapped = wrap_for_import(kms, key_id, os.urandom(32), algorithm="RSAES_OAEP_SHA_1")
    valid_to = now() + dt.timedelta(days=3)
    kms.import_key_material(
        KeyId=key_id,
        ImportToken=token,
        EncryptedKeyMaterial=wrapped,
        ExpirationModel="KEY_MATERIAL_EXPIRES",
        ValidTo=valid_to,
    )
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "Enabled"
    assert md["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs((md["ValidTo"] - valid_to).total_seconds()) < 2
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"expiring")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"expiring"


def test_import_rejects_bad_tokens(kms):
    key_id = kms.create_key(Origin="EXTERNAL", Description="e2e: bad token")["KeyMetadata"]["KeyId"]
    other = kms.create_key(Origin="EXTERNAL", Description="e2e: other token")["KeyMetadata"]["KeyId"]
    material = os.urandom(32)
    _, wrapped = wrap_for_import(kms, key_id, material)
    with kms_error("InvalidImportTokenException"):
        kms.import_key_material(
            KeyId=key_id,
            ImportToken=os.urandom(200),
            EncryptedKeyMaterial=wrapped,
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
    # A genuine token of another key does not fit this one.
    other_token, other_wrapped = wrap_for_import(kms, other, material)
    with kms_error("InvalidImportTokenException"):
        kms.import_key_material(
            KeyId=key_id,
            ImportToken=other_token,
            EncryptedKeyMaterial=other_wrapped,
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"


def test_import_operations_need_an_external_key(kms, sym_key):
    with kms_error("UnsupportedOperationException"):
        kms.get_parameters_for_import(KeyId=sym_key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")
    with kms_error("UnsupportedOperationException"):
        kms.delete_imported_key_material(KeyId=sym_key)


# --------------------------------------------------------------------------------------------
# Key policies
# --------------------------------------------------------------------------------------------


def root_statement(account: str) -> dict:
    return {
        "Sid": "Enable IAM User Permissions",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }


def app_statement(account: str, condition: dict | None = None) -> dict:
    statement = {
        "Sid": "AllowAppCrypto",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account}:user/app"},
        "Action": ["kms:Encrypt", "kms:Decrypt"],
        "Resource": "*",
    }
    if condition:
        statement["Condition"] = condition
    return statement


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def principals_of(statement: dict) -> list[str]:
    principal = statement.get("Principal", {})
    value = principal.get("AWS", []) if isinstance(principal, dict) else principal
    return [value] if isinstance(value, str) else list(value)


def test_default_key_policy(kms, account_id):
    key_id = new_symmetric_key(kms, "e2e: default policy")
    response = assert_ok(kms.get_key_policy(KeyId=key_id, PolicyName="default"))
    document = json.loads(response["Policy"])
    statements = document["Statement"]
    statements = [statements] if isinstance(statements, dict) else statements
    root = f"arn:aws:iam::{account_id}:root"
    assert any(
        s["Effect"] == "Allow" and root in principals_of(s) and s["Action"] in ("kms:*", ["kms:*"])
        for s in statements
    ), document
    if "PolicyName" in response:
        assert response["PolicyName"] == "default"
    # PolicyName is optional and defaults to "default".
    assert json.loads(kms.get_key_policy(KeyId=key_id)["Policy"]) == document

    listed = assert_ok(kms.list_key_policies(KeyId=key_id))
    assert listed["PolicyNames"] == ["default"]
    assert listed.get("Truncated", False) is False

    with kms_error("NotFoundException"):
        kms.get_key_policy(KeyId=key_id, PolicyName="other")


def test_app_user_and_key_policy(kms, app_kms, account_id):
    key_id = new_symmetric_key(kms, "e2e: app policy")
    admin_blob = kms.encrypt(KeyId=key_id, Plaintext=b"admin wrote this")["CiphertextBlob"]

    # The default policy names only the account root: a plain user gets nothing.
    with kms_error("AccessDeniedException"):
        app_kms.encrypt(KeyId=key_id, Plaintext=b"app")
    with kms_error("AccessDeniedException"):
        app_kms.decrypt(CiphertextBlob=admin_blob)

    document = policy(root_statement(account_id), app_statement(account_id))
    assert_ok(kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=document))
    assert json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]) == json.loads(document)

    app_blob = assert_ok(app_kms.encrypt(KeyId=key_id, Plaintext=b"app wrote this"))["CiphertextBlob"]
    assert app_kms.decrypt(CiphertextBlob=app_blob)["Plaintext"] == b"app wrote this"
    assert app_kms.decrypt(CiphertextBlob=admin_blob)["Plaintext"] == b"admin wrote this"
    assert kms.decrypt(CiphertextBlob=app_blob)["Plaintext"] == b"app wrote this"
    # Only what is granted.
    with kms_error("AccessDeniedException"):
        app_kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    with kms_error("AccessDeniedException"):
        app_kms.describe_key(KeyId=key_id)
    with kms_error("AccessDeniedException"):
        app_kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy(root_statement(account_id)))
    # ...and only on this key.
    other = new_symmetric_key(kms, "e2e: app not granted")
    with kms_error("AccessDeniedException"):
        app_kms.encrypt(KeyId=other, Plaintext=b"app")


def test_key_policy_encryption_context_condition(kms, app_kms, account_id):
    key_id = new_symmetric_key(kms, "e2e: policy condition")
    condition = {"StringEquals": {"kms:EncryptionContext:team": "blue"}}
    kms.put_key_policy(
        KeyId=key_id, PolicyName="default", Policy=policy(root_statement(account_id), app_statement(account_id, condition))
    )
    blue = {"team": "blue"}
    blob = app_kms.encrypt(KeyId=key_id, Plaintext=b"blue team", EncryptionContext=blue)["CiphertextBlob"]
    assert app_kms.decrypt(CiphertextBlob=blob, EncryptionContext=blue)["Plaintext"] == b"blue team"
    with kms_error("AccessDeniedException"):
        app_kms.encrypt(KeyId=key_id, Plaintext=b"red team", EncryptionContext={"team": "red"})
    with kms_error("AccessDeniedException"):
        app_kms.encrypt(KeyId=key_id, Plaintext=b"no team")
    red_blob = kms.encrypt(KeyId=key_id, Plaintext=b"red", EncryptionContext={"team": "red"})["CiphertextBlob"]
    with kms_error("AccessDeniedException"):
        app_kms.decrypt(CiphertextBlob=red_blob, EncryptionContext={"team": "red"})


def test_key_policy_wildcards_and_string_like(kms, app_kms, account_id):
    key_id = new_symmetric_key(kms, "e2e: policy wildcards")
    generate_only = {
        "Effect": "Allow",
        "Principal": {"AWS": [f"arn:aws:iam::{account_id}:user/app"]},
        "Action": "kms:Generate*",
        "Resource": "*",
    }
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy(root_statement(account_id), generate_only))
    assert len(app_kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")["Plaintext"]) == 32
    with kms_error("AccessDeniedException"):
        app_kms.encrypt(KeyId=key_id, Plaintext=b"x")

    like = app_statement(account_id, {"StringLike": {"kms:EncryptionContext:team": "bl*"}})
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy(root_statement(account_id), like))
    assert app_kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionContext={"team": "blue"})["CiphertextBlob"]
    with kms_error("AccessDeniedException"):
        app_kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionContext={"team": "red"})


def test_explicit_deny_wins_for_admin(kms, account_id, admin_principal):
    key_id = new_symmetric_key(kms, "e2e: explicit deny")
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"denied")["CiphertextBlob"]
    deny = {
        "Sid": "DenyAdminDecrypt",
        "Effect": "Deny",
        "Principal": {"AWS": admin_principal},
        "Action": "kms:Decrypt",
        "Resource": "*",
    }
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy(root_statement(account_id), deny))
    with kms_error("AccessDeniedException"):
        kms.decrypt(CiphertextBlob=blob)
    # Everything the deny does not name still works.
    assert kms.encrypt(KeyId=key_id, Plaintext=b"still allowed")["CiphertextBlob"]
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy(root_statement(account_id)))
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"denied"


def test_policy_lockout_safety_check(kms, app_kms, account_id):
    key_id = new_symmetric_key(kms, "e2e: lockout")
    only_app = policy(app_statement(account_id))
    with kms_error("MalformedPolicyDocumentException"):
        kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=only_app)
    # Nothing changed.
    assert json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]) != json.loads(only_app)
    assert_ok(
        kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=only_app, BypassPolicyLockoutSafetyCheck=True)
    )
    blob = app_kms.encrypt(KeyId=key_id, Plaintext=b"locked")["CiphertextBlob"]
    assert app_kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"locked"


def test_malformed_policies(kms, account_id):
    key_id = new_symmetric_key(kms, "e2e: malformed")
    with kms_error("MalformedPolicyDocumentException"):
        kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy="{not json")
    with kms_error("MalformedPolicyDocumentException"):
        kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps({"Version": "2012-10-17"}))
    with kms_error("MalformedPolicyDocumentException"):
        kms.create_key(Policy="[]")


def test_unknown_condition_keys_are_refused(kms, account_id):
    key_id = new_symmetric_key(kms, "e2e: unknown condition key")
    misspelt = {
        "Sid": "DenyPlainHttp",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:*",
        "Resource": "*",
        "Condition": {"Bool": {"aws:SecureTransprot": "false"}},
    }
    with kms_error("MalformedPolicyDocumentException"):
        kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy(root_statement(account_id), misspelt))
    with kms_error("MalformedPolicyDocumentException"):
        kms.create_key(Policy=policy(root_statement(account_id), misspelt))


def test_a_deny_on_plain_http_applies_to_plain_http(kms, account_id):
    key_id = new_symmetric_key(kms, "e2e: secure transport")
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"over http")["CiphertextBlob"]
    deny_plain_decrypt = {
        "Sid": "DenyPlainHttpDecrypt",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    kms.put_key_policy(
        KeyId=key_id, PolicyName="default", Policy=policy(root_statement(account_id), deny_plain_decrypt)
    )
    # This suite speaks plain HTTP, so the Deny applies.
    with kms_error("AccessDeniedException"):
        kms.decrypt(CiphertextBlob=blob)
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy(root_statement(account_id)))
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"over http"


def test_create_key_with_policy(kms, app_kms, account_id):
    document = policy(root_statement(account_id), app_statement(account_id))
    key_id = kms.create_key(Description="e2e: created with policy", Policy=document)["KeyMetadata"]["KeyId"]
    assert json.loads(kms.get_key_policy(KeyId=key_id)["Policy"]) == json.loads(document)
    blob = app_kms.encrypt(KeyId=key_id, Plaintext=b"from the start")["CiphertextBlob"]
    assert app_kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"from the start"


def test_app_user_cannot_do_account_operations(app_kms):
    # Creating keys needs an IAM permission, which only admin keys have.
    with kms_error("AccessDeniedException"):
        app_kms.create_key(Description="e2e: app may not")
    with kms_error("AccessDeniedException"):
        app_kms.list_keys()
    with kms_error("AccessDeniedException"):
        app_kms.list_aliases()


# --------------------------------------------------------------------------------------------
# Authentication, errors, headers, throttling, audit
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "profile,code", [("coffer-bad-secret", "InvalidSignatureException"), ("coffer-unknown-key", "UnrecognizedClientException")]
)
def test_bad_credentials(coffer, sym_key, profile, code):
    client = coffer.client(profile)
    with kms_error(code):
        client.list_keys()
    with kms_error(code):
        client.encrypt(KeyId=sym_key, Plaintext=b"x")
    with kms_error(code):
        client.describe_key(KeyId=sym_key)


def test_unsigned_request(coffer):
    client = coffer.client(config=Config(signature_version=UNSIGNED))
    with pytest.raises(ClientError) as info:
        client.list_keys()
    response = info.value.response
    # AWS documents MissingAuthenticationToken as a 403 among the common errors; KMS's JSON
    # endpoints answer 400. Either is accepted; the code and headers are not negotiable.
    status = response["ResponseMetadata"]["HTTPStatusCode"]
    assert status in (400, 403), status
    assert_error_response(response, "MissingAuthenticationTokenException", status)


def test_raw_unknown_target(coffer):
    for target in ("TrentService.NoSuchOperation", "NoSuchService.ListKeys", "ListKeys"):
        response = coffer.signed_post(target, {})
        assert response.status_code == 400, (target, response.status_code, response.text)
        assert response.json()["__type"].split("#")[-1] == "UnknownOperationException", response.text
        assert response.headers.get("x-amzn-RequestId")
        assert response.headers.get("x-amzn-ErrorType", "").split(":")[0] == "UnknownOperationException"


def test_raw_signed_request(coffer):
    response = coffer.signed_post("TrentService.ListKeys", {"Limit": 1})
    assert response.status_code == 200, response.text
    assert response.headers.get("x-amzn-RequestId")
    assert "x-amzn-ErrorType" not in response.headers
    assert response.headers["Content-Type"].startswith("application/x-amz-json-1.1")
    assert "Keys" in response.json()


def test_raw_body_changed_after_signing(coffer):
    """Send a body other than the one that was signed: the signature no longer matches."""
    response = coffer.signed_post("TrentService.ListKeys", {"Limit": 1}, send_body=b'{"Limit": 2}')
    assert response.status_code == 400, response.text
    assert response.json()["__type"].split("#")[-1] == "InvalidSignatureException"
    assert response.headers.get("x-amzn-RequestId")
    assert response.headers.get("x-amzn-ErrorType", "").split(":")[0] == "InvalidSignatureException"


def test_raw_malformed_json(coffer):
    response = coffer.signed_post("TrentService.ListKeys", raw_body=b"{not json")
    assert response.status_code == 400, response.text
    assert response.json()["__type"].split("#")[-1] == "SerializationException"
    assert response.headers.get("x-amzn-ErrorType", "").split(":")[0] == "SerializationException"


@pytest.mark.parametrize("minutes", [-20, 20])
def test_signature_outside_the_time_window(coffer, minutes):
    """AWS accepts a signing time at most 15 minutes away from its own clock."""
    signed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(minutes=minutes)
    response = coffer.signed_post("TrentService.ListKeys", {}, signed_at=signed_at)
    assert response.status_code == 400, response.text
    assert response.json()["__type"].split("#")[-1] == "InvalidSignatureException"
    # Four minutes off is within the window.
    signed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(minutes=4 if minutes > 0 else -4)
    assert coffer.signed_post("TrentService.ListKeys", {}, signed_at=signed_at).status_code == 200


def test_raw_wrong_field_type(coffer):
    response = coffer.signed_post("TrentService.ListKeys", {"Limit": "many"})
    assert response.status_code == 400, response.text
    assert response.json()["__type"].split("#")[-1] == "SerializationException"


def test_missing_required_member(kms_unvalidated):
    """A required member left out is a ValidationException ("1 validation error detected: Value
    null at 'keyId' failed to satisfy constraint: Member must not be null")."""
    with kms_error("ValidationException"):
        kms_unvalidated.encrypt(Plaintext=b"no key id")
    with kms_error("ValidationException"):
        kms_unvalidated.describe_key()


def test_empty_key_id(kms_unvalidated):
    """KeyId has a minimum length of 1: an empty one is a ValidationException ("Value '' at
    'keyId' failed to satisfy constraint: Member must have length greater than or equal to 1")."""
    with kms_error("ValidationException"):
        kms_unvalidated.describe_key(KeyId="")
    with kms_error("ValidationException"):
        kms_unvalidated.encrypt(KeyId="", Plaintext=b"x")


def test_signed_for_another_service(coffer):
    response = coffer.signed_post("TrentService.ListKeys", {}, service="s3")
    assert response.status_code == 400, response.text
    assert response.json()["__type"].split("#")[-1] == "InvalidSignatureException"


def test_not_found(kms, account_id):
    missing = str(uuid.uuid4())
    with kms_error("NotFoundException"):
        kms.describe_key(KeyId=missing)
    with kms_error("NotFoundException"):
        kms.describe_key(KeyId=key_arn(account_id, missing))
    with kms_error("NotFoundException"):
        kms.encrypt(KeyId="alias/" + unique("missing"), Plaintext=b"x")
    with kms_error("NotFoundException"):
        kms.encrypt(KeyId=missing, Plaintext=b"x")
    with kms_error("NotFoundException"):
        kms.describe_key(KeyId="not-a-key-id")
    with kms_error("NotFoundException"):
        kms.enable_key(KeyId=missing)
    with kms_error("NotFoundException"):
        kms.list_resource_tags(KeyId=missing)


def test_disabled_key(kms):
    key_id = new_symmetric_key(kms, "e2e: disabled")
    kms.disable_key(KeyId=key_id)
    with kms_error("DisabledException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    with kms_error("DisabledException"):
        kms.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_256")
    with kms_error("DisabledException"):
        kms.generate_data_key_pair(KeyId=key_id, KeyPairSpec="ECC_NIST_P256")
    # Metadata operations still work on a disabled key.
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    kms.update_key_description(KeyId=key_id, Description="e2e: still editable")


def test_concurrent_calls(kms):
    """Parallel writers to one key all land; parallel crypto calls all round-trip; of parallel
    CreateAlias calls for one name exactly one wins."""
    key_id = new_symmetric_key(kms, "e2e: concurrency")

    def tag(i: int) -> None:
        kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": f"t{i}", "TagValue": str(i)}])

    def round_trip(i: int) -> bool:
        blob = kms.encrypt(KeyId=key_id, Plaintext=str(i).encode())["CiphertextBlob"]
        return kms.decrypt(CiphertextBlob=blob)["Plaintext"] == str(i).encode()

    name = "alias/" + unique("e2e-race")

    def create_alias(_: int) -> str:
        try:
            kms.create_alias(AliasName=name, TargetKeyId=key_id)
            return "created"
        except ClientError as err:
            return err.response["Error"]["Code"]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(tag, range(16)))
        assert all(pool.map(round_trip, range(24)))
        outcomes = list(pool.map(create_alias, range(8)))
    assert len(kms.list_resource_tags(KeyId=key_id)["Tags"]) == 16
    assert sorted(outcomes) == ["AlreadyExistsException"] * 7 + ["created"]


def test_request_id_on_every_response(kms, sym_key):
    responses = [
        kms.list_keys(Limit=1),
        kms.describe_key(KeyId=sym_key),
        kms.encrypt(KeyId=sym_key, Plaintext=b"hdr"),
        kms.generate_random(NumberOfBytes=8),
        kms.list_aliases(Limit=1),
    ]
    ids = [assert_ok(r)["ResponseMetadata"]["RequestId"] for r in responses]
    assert len(set(ids)) == len(ids), "request ids must be unique"


def test_throttling(throttled_coffer):
    client = throttled_coffer.client()
    throttled = []
    succeeded = 0
    for _ in range(10):
        try:
            client.list_keys(Limit=1)
            succeeded += 1
        except ClientError as err:
            throttled.append(err.response)
    assert succeeded >= 1
    assert throttled, "10 quick calls against --throttle-rps 2 --throttle-burst 2 were all served"
    for response in throttled:
        assert_error_response(response, "ThrottlingException", 400)
    # The bucket refills.
    time.sleep(1.6)
    assert_ok(client.list_keys(Limit=1))


def test_audit_log_one_line_per_call(coffer, kms, sym_key):
    fence = kms.list_keys(Limit=1)["ResponseMetadata"]["RequestId"]
    wait_for_audit_line(coffer.audit_log, fence)
    ids = [
        kms.describe_key(KeyId=sym_key)["ResponseMetadata"]["RequestId"],
        kms.encrypt(KeyId=sym_key, Plaintext=b"count me")["ResponseMetadata"]["RequestId"],
        kms.generate_random(NumberOfBytes=4)["ResponseMetadata"]["RequestId"],
    ]
    with pytest.raises(ClientError) as info:
        kms.describe_key(KeyId=str(uuid.uuid4()))
    ids.append(info.value.response["ResponseMetadata"]["RequestId"])
    ids.append(kms.list_aliases(Limit=1)["ResponseMetadata"]["RequestId"])
    wait_for_audit_line(coffer.audit_log, ids[-1])
    lines = [json.loads(line) for line in complete_audit_lines(coffer.audit_log)]
    position = [entry.get("requestId") for entry in lines].index(fence)
    assert [entry.get("requestId") for entry in lines[position + 1 :]] == ids


def test_audit_log(coffer, kms, sym_key):
    marker = "coffer-e2e-plaintext-" + uuid.uuid4().hex
    encoded = base64.b64encode(marker.encode()).decode()
    encrypted = kms.encrypt(KeyId=sym_key, Plaintext=marker.encode())
    decrypted = kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"])
    assert decrypted["Plaintext"] == marker.encode()
    data_key = kms.generate_data_key(KeyId=sym_key, KeySpec="AES_256")
    with pytest.raises(ClientError) as info:
        kms.describe_key(KeyId=str(uuid.uuid4()))
    calls = {
        encrypted["ResponseMetadata"]["RequestId"]: ("Encrypt", "success", None),
        decrypted["ResponseMetadata"]["RequestId"]: ("Decrypt", "success", None),
        data_key["ResponseMetadata"]["RequestId"]: ("GenerateDataKey", "success", None),
        info.value.response["ResponseMetadata"]["RequestId"]: ("DescribeKey", "error", "NotFoundException"),
    }
    for request_id in calls:
        wait_for_audit_line(coffer.audit_log, request_id)

    text = coffer.audit_log.read_text()
    entries = [json.loads(line) for line in complete_audit_lines(coffer.audit_log)]
    for request_id, (operation, outcome, error_code) in calls.items():
        matching = [e for e in entries if e.get("requestId") == request_id]
        assert len(matching) == 1, f"{len(matching)} audit lines for {request_id}"
        entry = matching[0]
        assert entry["operation"].split(".")[-1] == operation
        assert entry["outcome"] == outcome
        assert entry.get("errorCode") == error_code
        assert entry["principal"].startswith("arn:aws:iam::")
    assert any(e.get("resource") for e in entries if e.get("requestId") in calls)
    for secret in (
        marker,
        encoded,
        base64.b64encode(data_key["Plaintext"]).decode(),
        base64.b64encode(encrypted["CiphertextBlob"]).decode(),
    ):
        assert secret not in text, "the audit log contains a value"


def test_state_survives_restart(tmp_path):
    """Keys, aliases, rotations, states and the admin key outlive a restart of the server."""
    instance = start_coffer(tmp_path)
    try:
        kms = instance.client()
        key_id = new_symmetric_key(kms, "e2e: restart")
        before = kms.encrypt(KeyId=key_id, Plaintext=b"before restart")["CiphertextBlob"]
        rotate_on_demand(kms, key_id)
        kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=180)
        name = "alias/" + unique("e2e-restart")
        kms.create_alias(AliasName=name, TargetKeyId=key_id)
        disabled = new_symmetric_key(kms, "e2e: restart disabled")
        kms.disable_key(KeyId=disabled)
        signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        public = kms.get_public_key(KeyId=signer)["PublicKey"]

        instance.restart()
        kms = instance.client()

        assert kms.decrypt(CiphertextBlob=before)["Plaintext"] == b"before restart"
        assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == key_id
        status = kms.get_key_rotation_status(KeyId=key_id)
        assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 180
        assert len(kms.list_key_rotations(KeyId=key_id)["Rotations"]) == 1
        assert kms.describe_key(KeyId=disabled)["KeyMetadata"]["KeyState"] == "Disabled"
        assert kms.get_public_key(KeyId=signer)["PublicKey"] == public
        signature = kms.sign(KeyId=signer, Message=b"after restart", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
        local_verify(public, "ECDSA_SHA_256", b"after restart", "RAW", signature)
    finally:
        instance.server.stop()
