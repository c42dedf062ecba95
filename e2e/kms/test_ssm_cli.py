"""SSM Parameter Store through the AWS CLI (v1), unchanged, given only --endpoint-url and a
credentials file: the commands as AWS's documentation writes them, the CLI's own paging, and the
error codes as a shell user sees them."""

from __future__ import annotations

import json

from conftest import unique

# The documentation's example hierarchy; nothing else in the suite writes under it.
DOC_PASSWORD = "/myapp/db/password"
DOC_SECRET = "Tr0ub4dor&3-correct horse"


def ok(result):
    assert result.code == 0, f"exit {result.code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.data


def refused(result, code: str) -> None:
    """The CLI exits non-zero (254 or 255 for a service error) and names the AWS error code."""
    assert result.code in (254, 255), f"exit {result.code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert f"({code})" in result.stderr, result.stderr


def base_path(label: str) -> str:
    return "/e2e/" + unique(f"ssm-cli-{label}")


def test_cli_the_documented_commands(coffer):
    """`aws ssm put-parameter ... --type SecureString`, `get-parameter ... --with-decryption` and
    `get-parameters-by-path --path /myapp/ --recursive --with-decryption`, as AWS writes them."""
    put = ok(coffer.cli("ssm", "put-parameter", "--name", DOC_PASSWORD, "--value", DOC_SECRET,
                        "--type", "SecureString"))
    assert put == {"Version": 1, "Tier": "Standard"}
    ok(coffer.cli("ssm", "put-parameter", "--name", "/myapp/db/user", "--value", "app", "--type", "String"))
    ok(coffer.cli("ssm", "put-parameter", "--name", "/myapp/log-level", "--value", "info", "--type", "String"))

    got = ok(coffer.cli("ssm", "get-parameter", "--name", DOC_PASSWORD, "--with-decryption"))["Parameter"]
    assert (got["Name"], got["Type"], got["Value"], got["Version"]) == (DOC_PASSWORD, "SecureString", DOC_SECRET, 1)
    assert got["ARN"].endswith(":parameter/myapp/db/password") and got["ARN"].startswith("arn:aws:ssm:us-east-1:")
    hidden = ok(coffer.cli("ssm", "get-parameter", "--name", DOC_PASSWORD))["Parameter"]
    assert hidden["Value"] != DOC_SECRET and DOC_SECRET not in hidden["Value"]

    by_path = ok(coffer.cli("ssm", "get-parameters-by-path", "--path", "/myapp/", "--recursive",
                            "--with-decryption"))["Parameters"]
    assert {p["Name"]: p["Value"] for p in by_path} == {
        DOC_PASSWORD: DOC_SECRET, "/myapp/db/user": "app", "/myapp/log-level": "info"}
    one_level = ok(coffer.cli("ssm", "get-parameters-by-path", "--path", "/myapp/"))["Parameters"]
    assert [p["Name"] for p in one_level] == ["/myapp/log-level"]

    # The shell idiom: just the value, as text.
    result = coffer.shell(
        f'aws ssm get-parameter --name {DOC_PASSWORD} --with-decryption --endpoint-url "$ENDPOINT" '
        "--query Parameter.Value --output text"
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == DOC_SECRET + "\n"


def test_cli_overwrite_labels_and_history(coffer):
    name = base_path("versions") + "/feature-flag"
    ok(coffer.cli("ssm", "put-parameter", "--name", name, "--value", "off", "--type", "String",
                  "--description", "first"))
    refused(coffer.cli("ssm", "put-parameter", "--name", name, "--value", "on", "--type", "String"),
            "ParameterAlreadyExists")
    again = ok(coffer.cli("ssm", "put-parameter", "--name", name, "--value", "on", "--overwrite"))
    assert again == {"Version": 2, "Tier": "Standard"}

    labelled = ok(coffer.cli("ssm", "label-parameter-version", "--name", name, "--parameter-version", "1",
                             "--labels", "stable", "rollback"))
    assert labelled == {"InvalidLabels": [], "ParameterVersion": 1}
    stable = ok(coffer.cli("ssm", "get-parameter", "--name", f"{name}:stable"))["Parameter"]
    assert (stable["Name"], stable["Value"], stable["Version"], stable["Selector"]) == (name, "off", 1, ":stable")
    assert ok(coffer.cli("ssm", "get-parameter", "--name", f"{name}:2"))["Parameter"]["Value"] == "on"
    refused(coffer.cli("ssm", "get-parameter", "--name", f"{name}:3"), "ParameterVersionNotFound")

    versions = ok(coffer.cli("ssm", "get-parameter-history", "--name", name))["Parameters"]
    assert [(v["Version"], v["Value"]) for v in versions] == [(1, "off"), (2, "on")]
    assert sorted(versions[0]["Labels"]) == ["rollback", "stable"] and versions[1].get("Labels", []) == []
    assert versions[0]["Description"] == "first"

    removed = ok(coffer.cli("ssm", "unlabel-parameter-version", "--name", name, "--parameter-version", "1",
                            "--labels", "rollback", "absent"))
    assert removed == {"RemovedLabels": ["rollback"], "InvalidLabels": ["absent"]}


def test_cli_get_parameters_names_the_missing(coffer):
    base = base_path("many")
    ok(coffer.cli("ssm", "put-parameter", "--name", f"{base}/a", "--value", "A", "--type", "String"))
    ok(coffer.cli("ssm", "put-parameter", "--name", f"{base}/b", "--value", "x,y,z", "--type", "StringList"))
    got = ok(coffer.cli("ssm", "get-parameters", "--names", f"{base}/a", f"{base}/b", f"{base}/missing"))
    assert {p["Name"]: (p["Type"], p["Value"]) for p in got["Parameters"]} == {
        f"{base}/a": ("String", "A"), f"{base}/b": ("StringList", "x,y,z")}
    assert got["InvalidParameters"] == [f"{base}/missing"]


def test_cli_pages_through_a_path(coffer):
    base = base_path("paging")
    names = sorted(f"{base}/item-{i:02}" for i in range(23))
    for name in names:
        ok(coffer.cli("ssm", "put-parameter", "--name", name, "--value", name[-2:], "--type", "String"))
    # The CLI follows NextToken by itself, ten at a time.
    every = ok(coffer.cli("ssm", "get-parameters-by-path", "--path", base, "--page-size", "10"))
    assert sorted(p["Name"] for p in every["Parameters"]) == names
    # With --max-items it stops and hands back a token to start from.
    first = ok(coffer.cli("ssm", "get-parameters-by-path", "--path", base, "--page-size", "10", "--max-items", "12"))
    assert len(first["Parameters"]) == 12 and first["NextToken"]
    rest = ok(coffer.cli("ssm", "get-parameters-by-path", "--path", base, "--page-size", "10",
                         "--starting-token", first["NextToken"]))
    assert sorted(p["Name"] for p in first["Parameters"] + rest["Parameters"]) == names
    assert "NextToken" not in rest

    described = ok(coffer.cli("ssm", "describe-parameters", "--page-size", "5", "--parameter-filters",
                              f"Key=Path,Option=Recursive,Values={base}"))
    assert sorted(p["Name"] for p in described["Parameters"]) == names


def test_cli_secure_string_under_a_customer_key(coffer):
    key_id = ok(coffer.cli("kms", "create-key", "--description", "e2e cli: ssm"))["KeyMetadata"]["KeyId"]
    alias = "alias/" + unique("e2e-cli-ssm")
    ok(coffer.cli("kms", "create-alias", "--alias-name", alias, "--target-key-id", key_id))
    name = base_path("cmk") + "/token"
    ok(coffer.cli("ssm", "put-parameter", "--name", name, "--value", "cli cmk", "--type", "SecureString",
                  "--key-id", alias))
    got = ok(coffer.cli("ssm", "get-parameter", "--name", name, "--with-decryption"))["Parameter"]
    assert got["Value"] == "cli cmk"
    secure = ok(coffer.cli("ssm", "describe-parameters", "--parameter-filters",
                           f"Key=Name,Values={name}", "Key=Type,Values=SecureString"))["Parameters"]
    assert [p["Name"] for p in secure] == [name]
    assert secure[0]["KeyId"] in (alias, key_id) or secure[0]["KeyId"].endswith(f":key/{key_id}")


def test_cli_tier_policies_and_tags(coffer):
    name = base_path("advanced") + "/rotating"
    policies = [{"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": "2099-01-01T00:00:00.000Z"}}]
    put = ok(coffer.cli("ssm", "put-parameter", "--name", name, "--value", "x" * 5000, "--type", "String",
                        "--tier", "Advanced", "--policies", json.dumps(policies),
                        "--tags", "Key=team,Value=blue", "Key=env,Value=dev"))
    assert put == {"Version": 1, "Tier": "Advanced"}
    [meta] = ok(coffer.cli("ssm", "describe-parameters", "--parameter-filters", f"Key=Name,Values={name}"))["Parameters"]
    assert meta["Tier"] == "Advanced"
    assert [(p["PolicyType"], json.loads(p["PolicyText"])) for p in meta["Policies"]] == [("Expiration", policies[0])]

    ok(coffer.cli("ssm", "add-tags-to-resource", "--resource-type", "Parameter", "--resource-id", name,
                  "--tags", "Key=env,Value=prod"))
    ok(coffer.cli("ssm", "remove-tags-from-resource", "--resource-type", "Parameter", "--resource-id", name,
                  "--tag-keys", "team"))
    tags = ok(coffer.cli("ssm", "list-tags-for-resource", "--resource-type", "Parameter", "--resource-id", name))
    assert tags["TagList"] == [{"Key": "env", "Value": "prod"}]

    # Over 8 KB is too much even for Advanced.
    refused(coffer.cli("ssm", "put-parameter", "--name", name + "-huge", "--value", "x" * 8193, "--type", "String",
                       "--tier", "Advanced"), "ValidationException")


def test_cli_delete(coffer):
    base = base_path("delete")
    for leaf in ("a", "b", "c"):
        ok(coffer.cli("ssm", "put-parameter", "--name", f"{base}/{leaf}", "--value", leaf, "--type", "String"))
    assert ok(coffer.cli("ssm", "delete-parameter", "--name", f"{base}/a")) is None
    refused(coffer.cli("ssm", "get-parameter", "--name", f"{base}/a"), "ParameterNotFound")
    refused(coffer.cli("ssm", "delete-parameter", "--name", f"{base}/a"), "ParameterNotFound")
    deleted = ok(coffer.cli("ssm", "delete-parameters", "--names", f"{base}/b", f"{base}/c", f"{base}/a"))
    assert sorted(deleted["DeletedParameters"]) == [f"{base}/b", f"{base}/c"]
    assert deleted["InvalidParameters"] == [f"{base}/a"]
    assert ok(coffer.cli("ssm", "get-parameters-by-path", "--path", base, "--recursive"))["Parameters"] == []


def test_cli_errors(coffer):
    refused(coffer.cli("ssm", "get-parameter", "--name", base_path("none") + "/x"), "ParameterNotFound")
    refused(coffer.cli("ssm", "put-parameter", "--name", "ssm-reserved", "--value", "x", "--type", "String"),
            "ValidationException")
    deep = base_path("deep") + "".join(f"/l{i}" for i in range(3, 17))
    assert deep.count("/") == 16
    refused(coffer.cli("ssm", "put-parameter", "--name", deep, "--value", "x", "--type", "String"),
            "HierarchyLevelLimitExceededException")
    name = base_path("pattern") + "/port"
    refused(coffer.cli("ssm", "put-parameter", "--name", name, "--value", "eighty", "--type", "String",
                       "--allowed-pattern", "^[0-9]+$"), "ParameterPatternMismatchException")
    # A key without permissions: the `app` profile.
    ok(coffer.cli("ssm", "put-parameter", "--name", name, "--value", "8080", "--type", "String"))
    refused(coffer.cli("ssm", "get-parameter", "--name", name, profile="app"), "AccessDeniedException")
