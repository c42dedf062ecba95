"""SSM Parameter Store through boto3 against a real `coffer server`: the calls, their shapes and
their error codes, as the Systems Manager API reference and botocore's service model
(`botocore/data/ssm/2014-11-06/service-2.json`) describe them.

Every test works under a hierarchy of its own (`/e2e/ssm-XXXX/...`), so tests never see each
other's parameters and the suite can run against a server that already holds some."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from botocore.exceptions import ClientError

from conftest import REGION, assert_ok, key_arn, kms_error, unique

# A hierarchy may be fifteen levels deep (PutParameter's Name, HierarchyLevelLimitExceededException).
MAX_LEVELS = 15
# Parameter Store keeps the 100 newest versions of a parameter.
MAX_VERSIONS = 100
# A parameter version can have at most ten labels (LabelParameterVersion).
MAX_LABELS_PER_VERSION = 10
# Standard parameters hold 4 KB, advanced ones 8 KB (PutParameter's Value and Tier).
STANDARD_VALUE_LIMIT = 4096
ADVANCED_VALUE_LIMIT = 8192


@pytest.fixture(scope="session")
def ssm(coffer):
    """boto3 SSM client with the admin profile."""
    return coffer.client(service="ssm")


@pytest.fixture(scope="session")
def ssm_unvalidated(coffer):
    """Admin SSM client that sends out-of-range parameters (11 names, MaxResults 11) unchecked."""
    return coffer.client(validate=False, service="ssm")


@pytest.fixture(scope="session")
def app_ssm(coffer):
    """boto3 SSM client for the non-admin user `app`."""
    return coffer.client("app", service="ssm")


def base_path(label: str = "p") -> str:
    """A hierarchy of the test's own: `/e2e/ssm-<label>-<random>`."""
    return "/e2e/" + unique(f"ssm-{label}")


def parameter_arn(account: str, name: str) -> str:
    """A parameter's ARN: `parameter` then the name, with one `/` between them."""
    return f"arn:aws:ssm:{REGION}:{account}:parameter/{name.lstrip('/')}"


def walk_by_path(ssm, path: str, page_size: int, **kwargs) -> tuple[list[dict], list[int]]:
    """Every parameter GetParametersByPath returns for `path`, following NextToken; also the size
    of each page. A page may hold fewer than MaxResults (the API reference says so), never more."""
    parameters: list[dict] = []
    sizes: list[int] = []
    token = None
    while True:
        request = {"Path": path, "MaxResults": page_size, **kwargs}
        if token is not None:
            request["NextToken"] = token
        page = assert_ok(ssm.get_parameters_by_path(**request))
        assert len(page["Parameters"]) <= page_size, page
        parameters.extend(page["Parameters"])
        sizes.append(len(page["Parameters"]))
        token = page.get("NextToken")
        if not token:
            return parameters, sizes
        assert len(sizes) < 1000, "GetParametersByPath never stopped handing out a NextToken"


def walk_describe(ssm, page_size: int, **kwargs) -> tuple[list[dict], list[int]]:
    """Every ParameterMetadata DescribeParameters returns, following NextToken."""
    parameters: list[dict] = []
    sizes: list[int] = []
    token = None
    while True:
        request = {"MaxResults": page_size, **kwargs}
        if token is not None:
            request["NextToken"] = token
        page = assert_ok(ssm.describe_parameters(**request))
        assert len(page["Parameters"]) <= page_size, page
        parameters.extend(page["Parameters"])
        sizes.append(len(page["Parameters"]))
        token = page.get("NextToken")
        if not token:
            return parameters, sizes
        assert len(sizes) < 1000, "DescribeParameters never stopped handing out a NextToken"


def described(ssm, name: str) -> dict:
    """The one ParameterMetadata DescribeParameters gives for exactly `name`."""
    found, _ = walk_describe(ssm, 50, ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}])
    assert [p["Name"] for p in found] == [name], found
    return found[0]


def history(ssm, name: str, **kwargs) -> list[dict]:
    """Every version GetParameterHistory gives for `name`, following NextToken."""
    versions: list[dict] = []
    token = None
    while True:
        request = {"Name": name, "MaxResults": 50, **kwargs}
        if token is not None:
            request["NextToken"] = token
        page = assert_ok(ssm.get_parameter_history(**request))
        versions.extend(page["Parameters"])
        token = page.get("NextToken")
        if not token:
            return versions


def names_of(parameters: list[dict]) -> list[str]:
    return sorted(p["Name"] for p in parameters)


# --------------------------------------------------------------------------------------------
# PutParameter and GetParameter
# --------------------------------------------------------------------------------------------


def test_put_and_get_a_string(ssm, account_id):
    name = base_path("string") + "/db/host"
    put = assert_ok(ssm.put_parameter(Name=name, Value="db.internal", Type="String", Description="the host"))
    assert (put["Version"], put["Tier"]) == (1, "Standard")

    got = assert_ok(ssm.get_parameter(Name=name))["Parameter"]
    assert got["Name"] == name
    assert got["Type"] == "String"
    assert got["Value"] == "db.internal"
    assert got["Version"] == 1
    assert got["ARN"] == parameter_arn(account_id, name)
    assert got["DataType"] == "text"
    assert isinstance(got["LastModifiedDate"], dt.datetime)
    assert abs(got["LastModifiedDate"] - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
    # WithDecryption changes nothing for a String.
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "db.internal"

    metadata = described(ssm, name)
    assert metadata["Description"] == "the host"
    assert metadata["ARN"] == parameter_arn(account_id, name)
    assert (metadata["Type"], metadata["Version"], metadata["Tier"], metadata["DataType"]) == (
        "String", 1, "Standard", "text")
    assert "Value" not in metadata and "KeyId" not in metadata
    # The admin access key's principal changed it last.
    assert metadata["LastModifiedUser"].startswith(f"arn:aws:iam::{account_id}:"), metadata


def test_a_name_without_a_hierarchy_and_its_arn(ssm, account_id):
    name = unique("e2e-ssm-flat")
    assert ssm.put_parameter(Name=name, Value="flat", Type="String")["Version"] == 1
    got = ssm.get_parameter(Name=name)["Parameter"]
    assert got["ARN"] == f"arn:aws:ssm:{REGION}:{account_id}:parameter/{name}"
    # Names are case sensitive: another case is another parameter.
    with kms_error("ParameterNotFound"):
        ssm.get_parameter(Name=name.upper())


def test_string_list(ssm):
    name = base_path("list") + "/regions"
    assert ssm.put_parameter(Name=name, Value="us-east-1,eu-west-1,ap-south-1", Type="StringList")["Version"] == 1
    got = ssm.get_parameter(Name=name)["Parameter"]
    assert (got["Type"], got["Value"]) == ("StringList", "us-east-1,eu-west-1,ap-south-1")


def test_secure_string_under_the_default_key(ssm, kms):
    name = base_path("secure") + "/db/password"
    plaintext = "s3cr3t-pa55w0rd ünïcødé"
    put = ssm.put_parameter(Name=name, Value=plaintext, Type="SecureString")
    assert (put["Version"], put["Tier"]) == (1, "Standard")

    decrypted = assert_ok(ssm.get_parameter(Name=name, WithDecryption=True))["Parameter"]
    assert (decrypted["Type"], decrypted["Value"], decrypted["Version"]) == ("SecureString", plaintext, 1)
    # Without decryption the value is not the plaintext, nor does it contain it.
    hidden = ssm.get_parameter(Name=name)["Parameter"]
    assert hidden["Type"] == "SecureString"
    assert hidden["Value"] and hidden["Value"] != plaintext and plaintext not in hidden["Value"]
    assert ssm.get_parameter(Name=name, WithDecryption=False)["Parameter"]["Value"] != plaintext

    # Without a KeyId the account's AWS managed key for Parameter Store encrypts it, made on
    # first use under its reserved alias.
    assert described(ssm, name)["KeyId"] == "alias/aws/ssm"
    aliases = [a["AliasName"] for page in kms.get_paginator("list_aliases").paginate() for a in page["Aliases"]]
    assert "alias/aws/ssm" in aliases


def test_secure_string_under_a_customer_key(ssm, kms, account_id):
    key_id = kms.create_key(Description="e2e: ssm cmk")["KeyMetadata"]["KeyId"]
    name = base_path("cmk") + "/api-token"
    ssm.put_parameter(Name=name, Value="under a cmk", Type="SecureString", KeyId=key_id)
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "under a cmk"
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] != "under a cmk"
    assert described(ssm, name)["KeyId"] in (key_id, key_arn(account_id, key_id))
    [version] = history(ssm, name)
    assert version["KeyId"] in (key_id, key_arn(account_id, key_id))

    # The key is really the one in use: disabled, it neither decrypts nor encrypts.
    kms.disable_key(KeyId=key_id)
    try:
        with kms_error("InvalidKeyId"):
            ssm.get_parameter(Name=name, WithDecryption=True)
        with kms_error("InvalidKeyId"):
            ssm.put_parameter(Name=name, Value="not while disabled", Type="SecureString", KeyId=key_id,
                              Overwrite=True)
        # Reading without decryption needs no key.
        assert ssm.get_parameter(Name=name)["Parameter"]["Version"] == 1
    finally:
        kms.enable_key(KeyId=key_id)
    again = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
    assert (again["Value"], again["Version"]) == ("under a cmk", 1)

    # An alias names the key too.
    alias = "alias/" + unique("e2e-ssm")
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    by_alias = base_path("cmk-alias") + "/token"
    ssm.put_parameter(Name=by_alias, Value="via the alias", Type="SecureString", KeyId=alias)
    assert ssm.get_parameter(Name=by_alias, WithDecryption=True)["Parameter"]["Value"] == "via the alias"

    # A key that does not exist encrypts nothing, and nothing is created.
    missing = base_path("cmk-missing") + "/token"
    with kms_error("InvalidKeyId"):
        ssm.put_parameter(Name=missing, Value="x", Type="SecureString",
                          KeyId="11111111-2222-3333-4444-555555555555")
    with kms_error("ParameterNotFound"):
        ssm.get_parameter(Name=missing)


def test_overwrite_makes_versions(ssm):
    name = base_path("overwrite") + "/setting"
    ssm.put_parameter(Name=name, Value="one", Type="String")
    with kms_error("ParameterAlreadyExists"):
        ssm.put_parameter(Name=name, Value="two", Type="String")
    assert ssm.get_parameter(Name=name)["Parameter"]["Version"] == 1
    with kms_error("ParameterAlreadyExists"):
        ssm.put_parameter(Name=name, Value="two", Type="String", Overwrite=False)

    put = ssm.put_parameter(Name=name, Value="two", Type="String", Overwrite=True)
    assert (put["Version"], put["Tier"]) == (2, "Standard")
    # The type may be left out when updating.
    assert ssm.put_parameter(Name=name, Value="three", Overwrite=True)["Version"] == 3
    got = ssm.get_parameter(Name=name)["Parameter"]
    assert (got["Type"], got["Value"], got["Version"]) == ("String", "three", 3)
    # ... but not when creating.
    with kms_error("ValidationException"):
        ssm.put_parameter(Name=name + "-new", Value="x")
    # Tags only on creation: with Overwrite they are refused.
    with kms_error("ValidationException"):
        ssm.put_parameter(Name=name, Value="four", Type="String", Overwrite=True,
                          Tags=[{"Key": "k", "Value": "v"}])
    assert ssm.get_parameter(Name=name)["Parameter"]["Version"] == 3


def test_allowed_pattern(ssm):
    name = base_path("pattern") + "/port"
    with kms_error("ParameterPatternMismatchException"):
        ssm.put_parameter(Name=name, Value="eighty", Type="String", AllowedPattern=r"^\d+$")
    with kms_error("ParameterNotFound"):
        ssm.get_parameter(Name=name)
    assert ssm.put_parameter(Name=name, Value="8080", Type="String", AllowedPattern=r"^\d+$")["Version"] == 1
    assert described(ssm, name)["AllowedPattern"] == r"^\d+$"
    with kms_error("ParameterPatternMismatchException"):
        ssm.put_parameter(Name=name, Value="80a", Type="String", AllowedPattern=r"^\d+$", Overwrite=True)
    got = ssm.get_parameter(Name=name)["Parameter"]
    assert (got["Value"], got["Version"]) == ("8080", 1)
    assert ssm.put_parameter(Name=name, Value="443", Type="String", AllowedPattern=r"^\d+$",
                             Overwrite=True)["Version"] == 2
    assert history(ssm, name)[-1]["AllowedPattern"] == r"^\d+$"


def test_tiers(ssm):
    base = base_path("tier")
    # Standard holds 4 KB, Advanced 8 KB; one character more is refused.
    assert ssm.put_parameter(Name=f"{base}/std", Value="s" * STANDARD_VALUE_LIMIT, Type="String",
                             Tier="Standard")["Tier"] == "Standard"
    with kms_error("ValidationException"):
        ssm.put_parameter(Name=f"{base}/std-big", Value="s" * (STANDARD_VALUE_LIMIT + 1), Type="String",
                          Tier="Standard")
    # Without a tier the default tier, Standard, applies, with its limit.
    with kms_error("ValidationException"):
        ssm.put_parameter(Name=f"{base}/default-big", Value="s" * (STANDARD_VALUE_LIMIT + 1), Type="String")
    assert ssm.put_parameter(Name=f"{base}/adv", Value="a" * ADVANCED_VALUE_LIMIT, Type="SecureString",
                             Tier="Advanced")["Tier"] == "Advanced"
    assert ssm.get_parameter(Name=f"{base}/adv", WithDecryption=True)["Parameter"]["Value"] == "a" * ADVANCED_VALUE_LIMIT
    with kms_error("ValidationException"):
        ssm.put_parameter(Name=f"{base}/adv-big", Value="a" * (ADVANCED_VALUE_LIMIT + 1), Type="String",
                          Tier="Advanced")

    # Intelligent-Tiering picks Standard unless the request needs Advanced (here: over 4 KB).
    small = ssm.put_parameter(Name=f"{base}/it-small", Value="small", Type="String", Tier="Intelligent-Tiering")
    big = ssm.put_parameter(Name=f"{base}/it-big", Value="b" * 5000, Type="String", Tier="Intelligent-Tiering")
    assert (small["Tier"], big["Tier"]) == ("Standard", "Advanced")
    assert ssm.get_parameter(Name=f"{base}/it-big")["Parameter"]["Value"] == "b" * 5000
    tiers = {p["Name"]: p["Tier"] for p in walk_describe(
        ssm, 50, ParameterFilters=[{"Key": "Path", "Option": "OneLevel", "Values": [base]}])[0]}
    assert tiers == {f"{base}/std": "Standard", f"{base}/adv": "Advanced",
                     f"{base}/it-small": "Standard", f"{base}/it-big": "Advanced"}

    # A standard parameter can be made advanced at any time.
    upgraded = ssm.put_parameter(Name=f"{base}/std", Value="now advanced", Type="String", Tier="Advanced",
                                 Overwrite=True)
    assert (upgraded["Version"], upgraded["Tier"]) == (2, "Advanced")
    assert described(ssm, f"{base}/std")["Tier"] == "Advanced"


EXPIRATION = {"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": "2099-12-02T21:34:33.000Z"}}
EXPIRATION_NOTIFICATION = {"Type": "ExpirationNotification", "Version": "1.0",
                           "Attributes": {"Before": "15", "Unit": "Days"}}
NO_CHANGE_NOTIFICATION = {"Type": "NoChangeNotification", "Version": "1.0",
                          "Attributes": {"After": "20", "Unit": "Days"}}


def test_policies(ssm):
    base = base_path("policy")
    policies = [EXPIRATION, EXPIRATION_NOTIFICATION, NO_CHANGE_NOTIFICATION]
    put = ssm.put_parameter(Name=f"{base}/expiring", Value="v", Type="String", Tier="Advanced",
                            Policies=json.dumps(policies))
    assert put["Tier"] == "Advanced"
    attached = described(ssm, f"{base}/expiring")["Policies"]
    assert sorted(p["PolicyType"] for p in attached) == ["Expiration", "ExpirationNotification",
                                                         "NoChangeNotification"]
    by_type = {p["PolicyType"]: json.loads(p["PolicyText"]) for p in attached}
    assert by_type == {p["Type"]: p for p in policies}
    # None has been enforced yet: the expiration is decades away.
    assert {p["PolicyStatus"] for p in attached} == {"Pending"}
    assert sorted(p["PolicyType"] for p in history(ssm, f"{base}/expiring")[0]["Policies"]) == sorted(by_type)

    # A policy needs an advanced parameter: Intelligent-Tiering chooses Advanced for it.
    tiered = ssm.put_parameter(Name=f"{base}/tiered", Value="v", Type="String", Tier="Intelligent-Tiering",
                               Policies=json.dumps([NO_CHANGE_NOTIFICATION]))
    assert tiered["Tier"] == "Advanced"

    # Unknown policy types and two Expiration policies are refused; nothing is created.
    with kms_error("InvalidPolicyTypeException"):
        ssm.put_parameter(Name=f"{base}/bad-type", Value="v", Type="String", Tier="Advanced",
                          Policies=json.dumps([{"Type": "SelfDestruct", "Version": "1.0", "Attributes": {}}]))
    with kms_error("IncompatiblePolicyException"):
        ssm.put_parameter(Name=f"{base}/two-expirations", Value="v", Type="String", Tier="Advanced",
                          Policies=json.dumps([EXPIRATION, EXPIRATION]))
    assert names_of(walk_by_path(ssm, base, 10)[0]) == [f"{base}/expiring", f"{base}/tiered"]


def test_tags(ssm):
    name = base_path("tags") + "/tagged"
    ssm.put_parameter(Name=name, Value="v", Type="String",
                      Tags=[{"Key": "team", "Value": "blue"}, {"Key": "env", "Value": "dev"}])
    tags = assert_ok(ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name))["TagList"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("env", "dev"), ("team", "blue")]
    assert_ok(ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=name,
                                       Tags=[{"Key": "env", "Value": "prod"}, {"Key": "owner", "Value": "ops"}]))
    assert_ok(ssm.remove_tags_from_resource(ResourceType="Parameter", ResourceId=name, TagKeys=["team"]))
    tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("env", "prod"), ("owner", "ops")]
    with kms_error("InvalidResourceId"):
        ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name + "-missing")


# --------------------------------------------------------------------------------------------
# Versions, labels and history
# --------------------------------------------------------------------------------------------


def test_get_by_version_and_by_label(ssm):
    name = base_path("selector") + "/feature"
    for value in ("one", "two", "three"):
        ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
    labelled = assert_ok(ssm.label_parameter_version(Name=name, ParameterVersion=2, Labels=["prod"]))
    assert (labelled["InvalidLabels"], labelled["ParameterVersion"]) == ([], 2)

    by_version = ssm.get_parameter(Name=f"{name}:1")["Parameter"]
    assert (by_version["Name"], by_version["Value"], by_version["Version"]) == (name, "one", 1)
    assert by_version["Selector"] == ":1"
    by_label = ssm.get_parameter(Name=f"{name}:prod")["Parameter"]
    assert (by_label["Name"], by_label["Value"], by_label["Version"]) == (name, "two", 2)
    assert by_label["Selector"] == ":prod"
    latest = ssm.get_parameter(Name=name)["Parameter"]
    assert (latest["Value"], latest["Version"]) == ("three", 3)
    assert "Selector" not in latest

    with kms_error("ParameterVersionNotFound"):
        ssm.get_parameter(Name=f"{name}:4")
    # A label no version carries: the API reference does not say which of the two.
    with pytest.raises(ClientError) as missing_label:
        ssm.get_parameter(Name=f"{name}:staging")
    assert missing_label.value.response["Error"]["Code"] in ("ParameterVersionNotFound", "ParameterNotFound")
    assert missing_label.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    # GetParameters takes selectors too.
    got = ssm.get_parameters(Names=[f"{name}:1", f"{name}:prod"])
    assert sorted((p["Version"], p["Value"]) for p in got["Parameters"]) == [(1, "one"), (2, "two")]
    assert got["InvalidParameters"] == []


def test_labels_move_and_are_removed(ssm):
    name = base_path("labels") + "/flag"
    for value in ("a", "b", "c"):
        ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
    assert ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["blue", "green"])["ParameterVersion"] == 1
    # Without a version, the latest one is labelled.
    assert ssm.label_parameter_version(Name=name, Labels=["latest-ok"])["ParameterVersion"] == 3
    # A label is on one version at a time: labelling version 2 moves it there.
    assert ssm.label_parameter_version(Name=name, ParameterVersion=2, Labels=["blue"])["InvalidLabels"] == []
    assert ssm.get_parameter(Name=f"{name}:blue")["Parameter"]["Value"] == "b"
    labels = {v["Version"]: sorted(v["Labels"]) for v in history(ssm, name)}
    assert labels == {1: ["green"], 2: ["blue"], 3: ["latest-ok"]}

    # Labels that begin with a number, "aws" or "ssm" (any case), or hold other characters, are
    # handed back as invalid and attached to nothing.
    bad = ["1st", "awsLabel", "SSM-label", "has space", "semi;colon"]
    answer = ssm.label_parameter_version(Name=name, ParameterVersion=3, Labels=[*bad, "fine_label.v-1"])
    assert sorted(answer["InvalidLabels"]) == sorted(bad)
    assert sorted(history(ssm, name)[2]["Labels"]) == ["fine_label.v-1", "latest-ok"]

    removed = assert_ok(ssm.unlabel_parameter_version(Name=name, ParameterVersion=2, Labels=["blue", "green"]))
    # "green" is on version 1, not 2.
    assert (removed["RemovedLabels"], removed["InvalidLabels"]) == (["blue"], ["green"])
    assert sorted(history(ssm, name)[1].get("Labels", [])) == []

    with kms_error("ParameterVersionNotFound"):
        ssm.label_parameter_version(Name=name, ParameterVersion=9, Labels=["x"])
    with kms_error("ParameterVersionNotFound"):
        ssm.unlabel_parameter_version(Name=name, ParameterVersion=9, Labels=["x"])
    with kms_error("ParameterNotFound"):
        ssm.label_parameter_version(Name=name + "-missing", Labels=["x"])


def test_ten_labels_per_version(ssm):
    name = base_path("label-limit") + "/flag"
    ssm.put_parameter(Name=name, Value="v", Type="String")
    labels = [f"label{i}" for i in range(MAX_LABELS_PER_VERSION)]
    assert ssm.label_parameter_version(Name=name, Labels=labels)["InvalidLabels"] == []
    with kms_error("ParameterVersionLabelLimitExceeded"):
        ssm.label_parameter_version(Name=name, Labels=["one-too-many"])
    assert sorted(history(ssm, name)[0]["Labels"]) == sorted(labels)
    # Labelling again with labels it already has is no change, and within the limit.
    assert ssm.label_parameter_version(Name=name, Labels=labels[:3])["InvalidLabels"] == []


def test_history(ssm, account_id):
    name = base_path("history") + "/secret"
    ssm.put_parameter(Name=name, Value="first", Type="String", Description="v1")
    ssm.put_parameter(Name=name, Value="second", Type="SecureString", Description="v2", Overwrite=True)
    ssm.put_parameter(Name=name, Value="third", Type="SecureString", Overwrite=True)
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["original"])

    versions = history(ssm, name, WithDecryption=True)
    assert [v["Version"] for v in versions] == [1, 2, 3]
    assert [v["Value"] for v in versions] == ["first", "second", "third"]
    assert [v["Type"] for v in versions] == ["String", "SecureString", "SecureString"]
    assert [v.get("Description") for v in versions[:2]] == ["v1", "v2"]
    assert versions[0]["Labels"] == ["original"]
    assert all(v["Name"] == name for v in versions)
    assert all(v["LastModifiedUser"].startswith(f"arn:aws:iam::{account_id}:") for v in versions)
    assert versions[0]["LastModifiedDate"] <= versions[1]["LastModifiedDate"] <= versions[2]["LastModifiedDate"]
    # Without decryption the SecureString versions do not show their values.
    hidden = history(ssm, name)
    assert hidden[0]["Value"] == "first"
    assert hidden[1]["Value"] != "second" and hidden[2]["Value"] != "third"

    # Paged, two at a time.
    first = ssm.get_parameter_history(Name=name, MaxResults=2)
    assert [v["Version"] for v in first["Parameters"]] == [1, 2]
    rest = ssm.get_parameter_history(Name=name, MaxResults=2, NextToken=first["NextToken"])
    assert [v["Version"] for v in rest["Parameters"]] == [3] and not rest.get("NextToken")

    with kms_error("ParameterNotFound"):
        ssm.get_parameter_history(Name=name + "-missing")


def test_hundred_versions_and_labelled_oldest(ssm):
    """Parameter Store keeps 100 versions: a new one drops the oldest version without a label,
    and when every old version is labelled PutParameter fails with
    ParameterMaxVersionLimitExceeded."""
    name = base_path("max-versions") + "/churn"
    for version in range(1, MAX_VERSIONS + 1):
        assert ssm.put_parameter(Name=name, Value=f"value {version}", Type="String",
                                 Overwrite=True)["Version"] == version
    for version in range(1, MAX_VERSIONS + 1):
        ssm.label_parameter_version(Name=name, ParameterVersion=version, Labels=[f"v{version}"])

    with kms_error("ParameterMaxVersionLimitExceeded"):
        ssm.put_parameter(Name=name, Value="value 101", Type="String", Overwrite=True)
    latest = ssm.get_parameter(Name=name)["Parameter"]
    assert (latest["Version"], latest["Value"]) == (MAX_VERSIONS, f"value {MAX_VERSIONS}")
    assert len(history(ssm, name)) == MAX_VERSIONS

    # With one version's label gone, the 101st version pushes out the oldest version without a
    # label (not the oldest version): labelled versions are never dropped.
    ssm.unlabel_parameter_version(Name=name, ParameterVersion=50, Labels=["v50"])
    assert ssm.put_parameter(Name=name, Value="value 101", Type="String", Overwrite=True)["Version"] == 101
    versions = history(ssm, name)
    assert [v["Version"] for v in versions] == [v for v in range(1, 102) if v != 50]
    with kms_error("ParameterVersionNotFound"):
        ssm.get_parameter(Name=f"{name}:50")
    assert ssm.get_parameter(Name=f"{name}:v1")["Parameter"]["Value"] == "value 1"
    # Every kept version labelled again: no room.
    ssm.label_parameter_version(Name=name, ParameterVersion=101, Labels=["v101"])
    with kms_error("ParameterMaxVersionLimitExceeded"):
        ssm.put_parameter(Name=name, Value="value 102", Type="String", Overwrite=True)


# --------------------------------------------------------------------------------------------
# Reading many: GetParameters, GetParametersByPath, DescribeParameters
# --------------------------------------------------------------------------------------------


def test_get_parameters_reports_the_invalid_ones(ssm, ssm_unvalidated):
    base = base_path("many")
    ssm.put_parameter(Name=f"{base}/a", Value="A", Type="String")
    ssm.put_parameter(Name=f"{base}/b", Value="B1,B2", Type="StringList")
    ssm.put_parameter(Name=f"{base}/c", Value="C secret", Type="SecureString")
    asked = [f"{base}/a", f"{base}/missing-1", f"{base}/b", f"{base}/c", f"{base}/missing-2"]
    got = assert_ok(ssm.get_parameters(Names=asked, WithDecryption=True))
    assert {p["Name"]: p["Value"] for p in got["Parameters"]} == {
        f"{base}/a": "A", f"{base}/b": "B1,B2", f"{base}/c": "C secret"}
    assert sorted(got["InvalidParameters"]) == [f"{base}/missing-1", f"{base}/missing-2"]
    hidden = ssm.get_parameters(Names=[f"{base}/c"])["Parameters"]
    assert len(hidden) == 1 and hidden[0]["Value"] != "C secret"
    # At most ten names.
    with kms_error("ValidationException"):
        ssm_unvalidated.get_parameters(Names=[f"{base}/n{i}" for i in range(11)])


def test_get_parameters_by_path(ssm):
    base = base_path("path")
    values = {
        f"{base}/a": ("String", "A"),
        f"{base}/b": ("StringList", "B1,B2"),
        f"{base}/secret": ("SecureString", "the secret"),
        f"{base}/sub/c": ("String", "C"),
        f"{base}/sub/deep/d": ("SecureString", "D secret"),
    }
    for name, (kind, value) in values.items():
        ssm.put_parameter(Name=name, Value=value, Type=kind)
    # A sibling hierarchy whose name starts the same is not under the path.
    ssm.put_parameter(Name=f"{base}x/outside", Value="no", Type="String")

    one_level, _ = walk_by_path(ssm, base, 10)
    assert names_of(one_level) == [f"{base}/a", f"{base}/b", f"{base}/secret"]
    # The trailing slash, as in the documentation's `--path /myapp/`, changes nothing.
    assert names_of(walk_by_path(ssm, base + "/", 10)[0]) == names_of(one_level)
    everything, _ = walk_by_path(ssm, base, 10, Recursive=True, WithDecryption=True)
    assert {p["Name"]: (p["Type"], p["Value"]) for p in everything} == values
    assert all(p["Version"] == 1 and p["ARN"].endswith(":parameter" + p["Name"]) for p in everything)
    hidden, _ = walk_by_path(ssm, base, 10, Recursive=True)
    secure = {p["Name"]: p["Value"] for p in hidden if p["Type"] == "SecureString"}
    assert sorted(secure) == [f"{base}/secret", f"{base}/sub/deep/d"]
    assert secure[f"{base}/secret"] != "the secret" and secure[f"{base}/sub/deep/d"] != "D secret"
    assert names_of(walk_by_path(ssm, f"{base}/sub", 10, Recursive=True)[0]) == [f"{base}/sub/c",
                                                                                f"{base}/sub/deep/d"]
    assert walk_by_path(ssm, f"{base}/nothing-here", 10, Recursive=True)[0] == []

    # Filters: Type, KeyId and Label.
    secure_only, _ = walk_by_path(ssm, base, 10, Recursive=True,
                                  ParameterFilters=[{"Key": "Type", "Option": "Equals", "Values": ["SecureString"]}])
    assert names_of(secure_only) == [f"{base}/secret", f"{base}/sub/deep/d"]
    default_key, _ = walk_by_path(ssm, base, 10, Recursive=True,
                                  ParameterFilters=[{"Key": "KeyId", "Values": ["alias/aws/ssm"]}])
    assert names_of(default_key) == [f"{base}/secret", f"{base}/sub/deep/d"]
    ssm.label_parameter_version(Name=f"{base}/sub/c", Labels=["golden"])
    golden, _ = walk_by_path(ssm, base, 10, Recursive=True,
                             ParameterFilters=[{"Key": "Label", "Option": "Equals", "Values": ["golden"]}])
    assert names_of(golden) == [f"{base}/sub/c"]
    # Name, Path and Tier filters belong to DescribeParameters, not here.
    with kms_error("InvalidFilterKey"):
        ssm.get_parameters_by_path(Path=base, ParameterFilters=[{"Key": "Name", "Values": [f"{base}/a"]}])


def test_get_parameters_by_path_pages_of_ten(ssm, ssm_unvalidated):
    base = base_path("paging")
    names = sorted(f"{base}/p{i:02}" for i in range(25))
    for name in names:
        ssm.put_parameter(Name=name, Value=name[-3:], Type="String")
    found, sizes = walk_by_path(ssm, base, 10)
    assert sorted(p["Name"] for p in found) == names, "a parameter was lost or repeated across pages"
    assert len(sizes) >= 3 and sum(sizes) == 25, sizes
    # boto3's paginator follows NextToken the same way.
    pages = list(ssm.get_paginator("get_parameters_by_path").paginate(Path=base, PaginationConfig={"PageSize": 10}))
    assert sorted(p["Name"] for page in pages for p in page["Parameters"]) == names
    assert all(len(page["Parameters"]) <= 10 for page in pages) and len(pages) >= 3
    with kms_error("ValidationException"):
        ssm_unvalidated.get_parameters_by_path(Path=base, MaxResults=11)


def test_describe_parameters_filters_and_paging(ssm, ssm_unvalidated):
    base = base_path("describe")
    ssm.put_parameter(Name=f"{base}/app/url", Value="u", Type="String", Tags=[{"Key": "team", "Value": "web"}])
    ssm.put_parameter(Name=f"{base}/app/hosts", Value="h1,h2", Type="StringList")
    ssm.put_parameter(Name=f"{base}/app/password", Value="p", Type="SecureString",
                      Tags=[{"Key": "team", "Value": "db"}])
    ssm.put_parameter(Name=f"{base}/app/deep/big", Value="b", Type="String", Tier="Advanced")
    for i in range(8):
        ssm.put_parameter(Name=f"{base}/bulk/item{i}", Value=str(i), Type="String")
    everything = [f"{base}/app/url", f"{base}/app/hosts", f"{base}/app/password", f"{base}/app/deep/big",
                  *(f"{base}/bulk/item{i}" for i in range(8))]

    def find(*filters, page_size=50):
        return names_of(walk_describe(ssm, page_size, ParameterFilters=list(filters))[0])

    recursive = {"Key": "Path", "Option": "Recursive", "Values": [base]}
    assert find(recursive) == sorted(everything)
    assert find({"Key": "Path", "Option": "OneLevel", "Values": [f"{base}/app"]}) == sorted(
        [f"{base}/app/url", f"{base}/app/hosts", f"{base}/app/password"])
    assert find({"Key": "Name", "Option": "BeginsWith", "Values": [f"{base}/bulk/"]}) == sorted(everything[4:])
    assert find({"Key": "Name", "Option": "Equals", "Values": [f"{base}/app/url"]}) == [f"{base}/app/url"]
    assert find(recursive, {"Key": "Type", "Option": "Equals", "Values": ["StringList"]}) == [f"{base}/app/hosts"]
    assert find(recursive, {"Key": "Tier", "Option": "Equals", "Values": ["Advanced"]}) == [f"{base}/app/deep/big"]
    assert find(recursive, {"Key": "KeyId", "Option": "Equals", "Values": ["alias/aws/ssm"]}) == [
        f"{base}/app/password"]
    assert find(recursive, {"Key": "tag:team", "Values": ["db"]}) == [f"{base}/app/password"]
    assert find(recursive, {"Key": "tag:team"}) == sorted([f"{base}/app/url", f"{base}/app/password"])

    # Paged five at a time: every parameter once.
    found, sizes = walk_describe(ssm, 5, ParameterFilters=[recursive])
    assert sorted(p["Name"] for p in found) == sorted(everything), "lost or repeated across pages"
    assert len(sizes) >= 3, sizes
    pages = list(ssm.get_paginator("describe_parameters").paginate(
        ParameterFilters=[recursive], PaginationConfig={"PageSize": 5}))
    assert sorted(p["Name"] for page in pages for p in page["Parameters"]) == sorted(everything)
    # Metadata never carries a value.
    assert all("Value" not in p for p in found)

    # Label is GetParametersByPath's filter, not this one's.
    with kms_error("InvalidFilterKey"):
        ssm.describe_parameters(ParameterFilters=[{"Key": "Label", "Values": ["x"]}])
    with kms_error("ValidationException"):
        ssm_unvalidated.describe_parameters(MaxResults=51)


@pytest.mark.parametrize("operation", ["get_parameters_by_path", "describe_parameters", "get_parameter_history"])
def test_invalid_next_token(ssm, operation):
    name = base_path("token") + "/x"
    ssm.put_parameter(Name=name, Value="x", Type="String")
    request = {
        "get_parameters_by_path": {"Path": name.rsplit("/", 1)[0]},
        "describe_parameters": {},
        "get_parameter_history": {"Name": name},
    }[operation]
    with kms_error("InvalidNextToken"):
        getattr(ssm, operation)(NextToken="not a token!", **request)


# --------------------------------------------------------------------------------------------
# Deleting
# --------------------------------------------------------------------------------------------


def test_delete_parameter_and_parameters(ssm):
    base = base_path("delete")
    for leaf in ("a", "b", "c"):
        ssm.put_parameter(Name=f"{base}/{leaf}", Value=leaf, Type="String", Tags=[{"Key": "leaf", "Value": leaf}])
    ssm.put_parameter(Name=f"{base}/a", Value="a2", Type="String", Overwrite=True)
    ssm.label_parameter_version(Name=f"{base}/a", Labels=["keep"])

    assert_ok(ssm.delete_parameter(Name=f"{base}/a"))
    with kms_error("ParameterNotFound"):
        ssm.get_parameter(Name=f"{base}/a")
    with kms_error("ParameterNotFound"):
        ssm.get_parameter_history(Name=f"{base}/a")
    with kms_error("ParameterNotFound"):
        ssm.delete_parameter(Name=f"{base}/a")

    deleted = assert_ok(ssm.delete_parameters(Names=[f"{base}/b", f"{base}/missing", f"{base}/c"]))
    assert sorted(deleted["DeletedParameters"]) == [f"{base}/b", f"{base}/c"]
    assert deleted["InvalidParameters"] == [f"{base}/missing"]
    assert walk_by_path(ssm, base, 10, Recursive=True)[0] == []

    # A parameter made again under a deleted name is new: version 1, no labels, no old tags.
    assert ssm.put_parameter(Name=f"{base}/a", Value="again", Type="String")["Version"] == 1
    [version] = history(ssm, f"{base}/a")
    assert (version["Value"], version.get("Labels", [])) == ("again", [])
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=f"{base}/a")["TagList"] == []


# --------------------------------------------------------------------------------------------
# Names and errors
# --------------------------------------------------------------------------------------------


def test_hierarchy_of_fifteen_levels_and_no_more(ssm):
    root = "/" + unique("e2e-levels")
    fifteen = root + "".join(f"/l{i}" for i in range(2, MAX_LEVELS + 1))
    assert fifteen.count("/") == MAX_LEVELS
    assert ssm.put_parameter(Name=fifteen, Value="deep", Type="String")["Version"] == 1
    assert ssm.get_parameter(Name=fifteen)["Parameter"]["Value"] == "deep"
    sixteen = fifteen + "/l16"
    with kms_error("HierarchyLevelLimitExceededException"):
        ssm.put_parameter(Name=sixteen, Value="too deep", Type="String")
    # Nothing was made: the whole hierarchy holds the fifteen-level parameter only.
    assert names_of(walk_by_path(ssm, root, 10, Recursive=True)[0]) == [fifteen]


@pytest.mark.parametrize("name", ["awsTestParameter", "SSM-testparameter", "AWS", "/ssm/e2e/reserved",
                                  "/SSM/e2e/reserved"])
def test_reserved_prefixes_are_refused(ssm, name):
    with kms_error("ValidationException"):
        ssm.put_parameter(Name=name, Value="x", Type="String")


def test_the_public_aws_namespace_is_not_writable(ssm):
    # `/aws/...` holds AWS's public parameters; AWS refuses writes there with AccessDeniedException
    # ("No access to reserved parameter name"). Either code is a refusal of a reserved name.
    with pytest.raises(ClientError) as refused:
        ssm.put_parameter(Name="/aws/e2e/reserved", Value="x", Type="String")
    assert refused.value.response["Error"]["Code"] in ("AccessDeniedException", "ValidationException")


@pytest.mark.parametrize("name", ["has space/x", "/bad|char", "/double//slash", "no/leading-slash"])
def test_malformed_names_are_refused(ssm, name):
    with kms_error("ValidationException"):
        ssm.put_parameter(Name=name, Value="x", Type="String")


def test_errors_for_what_is_not_there(ssm):
    missing = base_path("missing") + "/nothing"
    with kms_error("ParameterNotFound"):
        ssm.get_parameter(Name=missing)
    with kms_error("ParameterNotFound"):
        ssm.get_parameter(Name=missing, WithDecryption=True)
    with kms_error("ParameterNotFound"):
        ssm.delete_parameter(Name=missing)
    with kms_error("ParameterNotFound"):
        ssm.unlabel_parameter_version(Name=missing, ParameterVersion=1, Labels=["x"])


def test_a_non_admin_key_is_refused(ssm, app_ssm):
    name = base_path("denied") + "/x"
    ssm.put_parameter(Name=name, Value="admin only", Type="SecureString")
    with kms_error("AccessDeniedException"):
        app_ssm.get_parameter(Name=name, WithDecryption=True)
    # Listings return only what the caller may read, never failing for one forbidden entry
    # and never naming it.
    listed = app_ssm.get_parameters_by_path(Path=name.rsplit("/", 1)[0], Recursive=True)
    assert listed["Parameters"] == []
    with kms_error("AccessDeniedException"):
        app_ssm.put_parameter(Name=name + "-app", Value="x", Type="String")
    with kms_error("AccessDeniedException"):
        app_ssm.delete_parameter(Name=name)
    described = app_ssm.describe_parameters()
    assert name not in [entry["Name"] for entry in described["Parameters"]]
    # Nothing the refused calls asked for happened.
    with kms_error("ParameterNotFound"):
        ssm.get_parameter(Name=name + "-app")
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "admin only"
