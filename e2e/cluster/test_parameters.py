"""Parameter resources (parameters.coffer.dev) and the SSM Parameter Store API in Kubernetes mode:
what the controller makes of a manifest, how API writes show in the resource, the resources the
API's new parameters get, SecureString sources (sealed, imported from a core Secret), deletion,
listings that leave out what the caller may not read, RBAC, and an Expiration policy.

Every call goes through boto3 (`ssm`) with a ServiceAccount's temporary credentials from the
controller's credentials endpoint, as a pod's SDK would get them. Every SecureString value is made
with the recognisable marker of the session (`e2e-plain-<hex>`) and registered for the scans of
etcd and of the controller's log at the end of the session (test_secrets.py). String values are
configuration, which the resource shows by design, and are not registered."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from cluster_helpers import (
    PARAMETER_RESOURCE,
    READY_TIMEOUT_SECONDS,
    RECONCILE_TIMEOUT_SECONDS,
    REGION,
    SOURCE_RECHECK_TIMEOUT_SECONDS,
    bind_parameter_role,
    can_i,
    events_for,
    get_parameter_resource,
    is_parameter_ready,
    is_parameter_refused,
    is_ready,
    kmskey_manifest,
    kubectl,
    list_parameter_resources,
    make_parameters_namespace,
    parameter_manifest,
    parameter_resource_name,
    service_client,
    wait_for_kmskey,
    wait_for_parameter,
    wait_for_parameter_gone,
    wait_for_parameter_ready,
    wait_until,
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def apply(manifest: dict) -> None:
    kubectl("apply", "-f", "-", input=json.dumps(manifest))


def apply_ready(manifest: dict, version: int | None = None) -> dict:
    apply(manifest)
    return wait_for_parameter_ready(manifest["metadata"]["namespace"], manifest["metadata"]["name"], version)


def arn_pattern(name: str) -> str:
    return rf"arn:aws:ssm:{re.escape(REGION)}:\d{{12}}:parameter/{re.escape(name.lstrip('/'))}"


def error_code(call, *args, **kwargs) -> str | None:
    """None when the call succeeds, else the error code it answered with."""
    try:
        call(*args, **kwargs)
    except ClientError as err:
        return err.response["Error"]["Code"]
    return None


def expect_error(code: str, call, *args, **kwargs) -> ClientError:
    with pytest.raises(ClientError) as raised:
        call(*args, **kwargs)
    got = raised.value.response["Error"]["Code"]
    assert got == code, f"expected {code}, got {got}: {raised.value.response.get('Error')}"
    return raised.value


def assert_no_value_in(obj: dict, value: str) -> None:
    text = json.dumps(obj)
    assert value not in text, f"the value of {obj['metadata']['name']} appears in the resource"


def parameter_events(namespace: str, name: str) -> list[dict]:
    return [event for event in events_for(namespace, "Parameter", name)
            if (event.get("involvedObject") or {}).get("apiVersion", "").startswith("coffer.dev/")]


def wait_for_parameter_event(namespace: str, name: str, reason: str,
                             timeout: float = RECONCILE_TIMEOUT_SECONDS) -> dict:
    events = wait_until(f"an Event with reason {reason} is recorded on Parameter {namespace}/{name}",
                        lambda: parameter_events(namespace, name),
                        lambda found: any(event.get("reason") == reason for event in found), timeout)
    return next(event for event in events if event.get("reason") == reason)


def history_versions(client, name: str) -> list[int]:
    versions: list[int] = []
    for page in client.get_paginator("get_parameter_history").paginate(Name=name):
        versions += [entry["Version"] for entry in page.get("Parameters", [])]
    return versions


def by_path(client, path: str, **kwargs) -> dict[str, dict]:
    """GetParametersByPath through the paginator: name -> parameter; no name twice."""
    found: dict[str, dict] = {}
    for page in client.get_paginator("get_parameters_by_path").paginate(Path=path, **kwargs):
        for entry in page.get("Parameters", []):
            assert entry["Name"] not in found, f"{entry['Name']} returned twice by GetParametersByPath({path})"
            found[entry["Name"]] = entry
    return found


def described(client, **kwargs) -> set[str]:
    names: list[str] = []
    for page in client.get_paginator("describe_parameters").paginate(**kwargs):
        names += [entry["Name"] for entry in page.get("Parameters", [])]
    assert len(names) == len(set(names)), f"DescribeParameters returned a name twice: {names}"
    return set(names)


def resources_declaring(namespace: str, parameter: str) -> list[dict]:
    return [obj for obj in list_parameter_resources(namespace) if obj["spec"].get("name") == parameter]


def parameter_not_found(client, name: str) -> bool:
    return error_code(client.get_parameter, Name=name) == "ParameterNotFound"


# --------------------------------------------------------------------------------------------
# 1. A String parameter from a manifest, and API writes on it
# --------------------------------------------------------------------------------------------


def test_string_parameter_from_a_manifest_is_served_and_versioned(params_ns):
    namespace = params_ns.name
    client = params_ns.client()
    manifest = parameter_manifest("app.db.url", namespace, name="/app/db/url", value="postgres://db-1/app",
                                  description="the database")
    obj = apply_ready(manifest, version=1)
    status = obj["status"]
    assert status.get("tier") == "Standard", status
    assert status.get("lastModifiedDate"), status
    assert [entry["version"] for entry in status.get("history") or []] == [1], status
    wait_for_parameter_event(namespace, "app.db.url", "Created")

    out = client.get_parameter(Name="/app/db/url")["Parameter"]
    assert out["Value"] == "postgres://db-1/app", out
    assert (out["Name"], out["Type"], out["Version"]) == ("/app/db/url", "String", 1), out
    assert re.fullmatch(arn_pattern("/app/db/url"), out["ARN"]), out["ARN"]
    assert client.get_parameter(Name=out["ARN"])["Parameter"]["Value"] == "postgres://db-1/app"

    # The same manifest again: nothing changes, no new version.
    result = kubectl("apply", "-f", "-", input=json.dumps(manifest))
    assert "unchanged" in result.stdout, result.stdout
    obj = wait_for_parameter_ready(namespace, "app.db.url", version=1)
    assert history_versions(client, "/app/db/url") == [1]

    # A new value in the spec: version 2.
    manifest["spec"]["value"] = "postgres://db-2/app"
    obj = apply_ready(manifest, version=2)
    assert [entry["version"] for entry in obj["status"]["history"]] == [1, 2], obj["status"]
    out = client.get_parameter(Name="/app/db/url")["Parameter"]
    assert (out["Value"], out["Version"]) == ("postgres://db-2/app", 2), out
    assert history_versions(client, "/app/db/url") == [1, 2]
    wait_for_parameter_event(namespace, "app.db.url", "NewVersion")

    # PutParameter through the API: mirrored into the spec, and the status follows.
    put = client.put_parameter(Name="/app/db/url", Value="postgres://db-3/app", Type="String", Overwrite=True)
    assert put["Version"] == 3, put
    obj = wait_for_parameter(
        namespace, "app.db.url", "shows the API's value in spec.value and is Ready for that generation",
        lambda o: o["spec"].get("value") == "postgres://db-3/app" and is_parameter_ready(o),
    )
    assert obj["spec"].get("description") == "the database", obj["spec"]
    # The mirrored spec is no reason for yet another version.
    history = client.get_parameter_history(Name="/app/db/url")["Parameters"]
    assert [(e["Version"], e["Value"]) for e in history] == [
        (1, "postgres://db-1/app"), (2, "postgres://db-2/app"), (3, "postgres://db-3/app")
    ], ("the spec mirrored from PutParameter made another version: "
        + json.dumps([(e["Version"], e["Value"], e.get("LastModifiedUser")) for e in history]))
    assert obj["status"]["version"] == 3, obj["status"]

    # A label through the API shows in the status.
    client.label_parameter_version(Name="/app/db/url", ParameterVersion=2, Labels=["stable"])
    obj = wait_for_parameter(namespace, "app.db.url", "shows label stable on version 2",
                             lambda o: (o.get("status") or {}).get("labels") == {"stable": 2})
    entry = next(e for e in obj["status"]["history"] if e["version"] == 2)
    assert entry.get("labels") == ["stable"], obj["status"]["history"]
    assert client.get_parameter(Name="/app/db/url:stable")["Parameter"]["Value"] == "postgres://db-2/app"

    # The status keeps the 10 newest versions.
    for number in range(4, 13):
        client.put_parameter(Name="/app/db/url", Value=f"postgres://db-{number}/app", Type="String", Overwrite=True)
    obj = wait_for_parameter(namespace, "app.db.url", "shows version 12 with the 10 newest in its history",
                             lambda o: (o.get("status") or {}).get("version") == 12 and is_parameter_ready(o))
    assert [entry["version"] for entry in obj["status"]["history"]] == list(range(3, 13)), obj["status"]["history"]
    assert obj["spec"]["value"] == "postgres://db-12/app", obj["spec"]

    # kubectl delete deletes the parameter: SSM keeps no deleted parameter.
    kubectl("delete", f"{PARAMETER_RESOURCE}/app.db.url", "-n", namespace, "--wait=true",
            f"--timeout={RECONCILE_TIMEOUT_SECONDS}s", timeout=RECONCILE_TIMEOUT_SECONDS + 30)
    wait_until("GetParameter(/app/db/url) answers ParameterNotFound",
               lambda: parameter_not_found(client, "/app/db/url"), bool)
    expect_error("ParameterNotFound", client.get_parameter_history, Name="/app/db/url")
    # And it stays gone: nothing brings the resource back.
    assert get_parameter_resource(namespace, "app.db.url") is None
    assert not resources_declaring(namespace, "/app/db/url")


# --------------------------------------------------------------------------------------------
# 2. Conditions: what the controller refuses
# --------------------------------------------------------------------------------------------


def test_refused_specs_show_in_the_ready_condition(params_ns):
    namespace = params_ns.name
    client = params_ns.client()
    name = f"/app/{unique('refused')}"

    # A value the spec's own allowedPattern refuses.
    apply(parameter_manifest("pattern", namespace, name=name, value="abc", allowedPattern=r"^\d+$"))
    obj = wait_for_parameter(namespace, "pattern", "is Ready False with reason SpecRefused",
                             lambda o: is_parameter_refused(o, "SpecRefused"))
    assert not obj["status"].get("version"), obj["status"]
    expect_error("ParameterNotFound", client.get_parameter, Name=name)
    wait_for_parameter_event(namespace, "pattern", "SpecRefused")
    # Fixed: Ready.
    apply_ready(parameter_manifest("pattern", namespace, name=name, value="42", allowedPattern=r"^\d+$"), version=1)
    assert client.get_parameter(Name=name)["Parameter"]["Value"] == "42"

    # A second resource declaring the same name.
    apply(parameter_manifest("pattern-twin", namespace, name=name, value="7"))
    wait_for_parameter(namespace, "pattern-twin", "is Ready False with reason NameTaken",
                       lambda o: is_parameter_refused(o, "NameTaken"))
    assert client.get_parameter(Name=name)["Parameter"]["Value"] == "42"
    kubectl("delete", f"{PARAMETER_RESOURCE}/pattern-twin", "-n", namespace, "--wait=true")
    # Deleting the twin deletes nothing of the parameter the first one declares.
    obj = wait_for_parameter_ready(namespace, "pattern", version=1)
    assert client.get_parameter(Name=name)["Parameter"]["Value"] == "42"
    kubectl("delete", f"{PARAMETER_RESOURCE}/pattern", "-n", namespace, "--wait=true")
    wait_until(f"GetParameter({name}) answers ParameterNotFound", lambda: parameter_not_found(client, name), bool)


# --------------------------------------------------------------------------------------------
# 3. API -> resource
# --------------------------------------------------------------------------------------------


def test_put_parameter_through_the_api_makes_a_resource(params_ns, plaintexts):
    namespace = params_ns.name
    client = params_ns.client()
    suffix = uuid.uuid4().hex[:8]

    client.put_parameter(Name="/app/feature/flag", Value="on", Type="String")
    obj = wait_for_parameter_ready(namespace, "app.feature.flag", version=1)
    assert obj["spec"]["name"] == "/app/feature/flag", obj["spec"]
    assert (obj["spec"]["type"], obj["spec"].get("value")) == ("String", "on"), obj["spec"]

    # Names that are no dotted resource name: upper case, `_`, `.`, one level without a slash.
    for name, readable, type_, value in [
        (f"/App/Feature_{suffix}", f"app-feature-{suffix}", "String", "x"),
        (f"/app/v1.2/{suffix}", f"app-v1-2-{suffix}", "StringList", "a,b,c"),
        (f"plain-{suffix}", f"plain-{suffix}", "String", "y"),
    ]:
        client.put_parameter(Name=name, Value=value, Type=type_)
        found = wait_until(
            f"a Parameter in {namespace} declares {name}, Ready at version 1",
            lambda name=name: resources_declaring(namespace, name),
            lambda objs: len(objs) == 1 and is_parameter_ready(objs[0]) and objs[0]["status"]["version"] == 1,
        )
        resource = found[0]["metadata"]["name"]
        assert re.fullmatch(rf"p-{re.escape(readable)}-[0-9a-f]{{10}}", resource), (name, resource)
        assert resource == parameter_resource_name(name), (name, resource)
        assert (found[0]["spec"]["type"], found[0]["spec"].get("value")) == (type_, value), found[0]["spec"]

    # `kubectl get cparam` shows the resource names beside the parameter names.
    table = kubectl("get", "cparam", "-n", namespace).stdout
    assert re.search(r"app\.feature\.flag\s+/app/feature/flag\s+String\s+1\b", table), table

    # A SecureString through the API: a resource with no value in it.
    secret_name = f"/app/secret/{suffix}"
    value = plaintexts.new()
    put = client.put_parameter(Name=secret_name, Value=value, Type="SecureString")
    assert put["Version"] == 1, put
    obj = wait_for_parameter_ready(namespace, f"app.secret.{suffix}", version=1)
    assert obj["spec"]["type"] == "SecureString", obj["spec"]
    for field in ("value", "sealedValue", "fromSecret", "kmsKeyRef"):
        assert field not in obj["spec"], obj["spec"]
    assert_no_value_in(obj, value)
    assert client.get_parameter(Name=secret_name, WithDecryption=True)["Parameter"]["Value"] == value
    # A new value through the API is a new version (no source in the spec to win back).
    second = plaintexts.new()
    assert client.put_parameter(Name=secret_name, Value=second, Type="SecureString", Overwrite=True)["Version"] == 2
    obj = wait_for_parameter_ready(namespace, f"app.secret.{suffix}", version=2)
    assert_no_value_in(obj, second)
    assert client.get_parameter(Name=secret_name, WithDecryption=True)["Parameter"]["Value"] == second

    # DeleteParameter through the API deletes the resource.
    client.delete_parameter(Name="/app/feature/flag")
    wait_for_parameter_gone(namespace, "app.feature.flag")
    expect_error("ParameterNotFound", client.get_parameter, Name="/app/feature/flag")


# --------------------------------------------------------------------------------------------
# 4. SecureString sources
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sealing_key(params_ns) -> dict:
    """An RSA_2048 ENCRYPT_DECRYPT KmsKey `sealing` with its public key in the status."""
    apply(kmskey_manifest("sealing", params_ns.name, keySpec="RSA_2048", keyUsage="ENCRYPT_DECRYPT"))
    return wait_for_kmskey(
        params_ns.name, "sealing", "is Ready with status.publicKey",
        lambda o: is_ready(o) and bool(o["status"].get("publicKey")), timeout=READY_TIMEOUT_SECONDS,
    )


def seal_for(sealing_key: dict, namespace: str, resource: str, value: str) -> str:
    from sealing import seal

    return seal(base64.b64decode(sealing_key["status"]["publicKey"]), sealing_key["status"]["keyId"],
                namespace, resource, value.encode())


def test_secure_string_from_a_sealed_value(params_ns, plaintexts, sealing_key):
    namespace = params_ns.name
    client = params_ns.client()
    name = "/app/db/password"
    value = plaintexts.new()
    blob = seal_for(sealing_key, namespace, "app.db.password", value)

    obj = apply_ready(parameter_manifest("app.db.password", namespace, name=name, type="SecureString",
                                         sealedValue=blob), version=1)
    assert_no_value_in(obj, value)
    out = client.get_parameter(Name=name, WithDecryption=True)["Parameter"]
    assert (out["Value"], out["Type"], out["Version"]) == (value, "SecureString", 1), out["Version"]
    hidden = client.get_parameter(Name=name)["Parameter"]["Value"]
    assert value not in hidden, "GetParameter without decryption returned the plaintext"

    # A new value through the API would be lost to the spec's source: refused, nothing written.
    refused = plaintexts.new()
    expect_error("ValidationException", client.put_parameter, Name=name, Value=refused,
                 Type="SecureString", Overwrite=True)
    out = client.get_parameter(Name=name, WithDecryption=True)["Parameter"]
    assert (out["Value"], out["Version"]) == (value, 1), out["Version"]
    assert history_versions(client, name) == [1]

    # A new sealedValue is a new version.
    second = plaintexts.new()
    obj = apply_ready(parameter_manifest("app.db.password", namespace, name=name, type="SecureString",
                                         sealedValue=seal_for(sealing_key, namespace, "app.db.password", second)),
                      version=2)
    assert_no_value_in(obj, second)
    assert client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == second

    # The first blob under another resource name: bound to (namespace, app.db.password), it
    # does not open.
    other = unique("sealed-elsewhere")
    other_name = f"/app/{other}"
    apply(parameter_manifest(other, namespace, name=other_name, type="SecureString", sealedValue=blob))
    obj = wait_for_parameter(namespace, other, "is Ready False with reason SealedValueRefused",
                             lambda o: is_parameter_refused(o, "SealedValueRefused"))
    assert_no_value_in(obj, value)
    expect_error("ParameterNotFound", client.get_parameter, Name=other_name, WithDecryption=True)
    kubectl("delete", f"{PARAMETER_RESOURCE}/{other}", "-n", namespace, "--wait=true")

    # kubectl delete: the parameter is deleted, and an Event says so.
    kubectl("delete", f"{PARAMETER_RESOURCE}/app.db.password", "-n", namespace, "--wait=true")
    wait_until(f"GetParameter({name}) answers ParameterNotFound", lambda: parameter_not_found(client, name), bool)


def core_secret(namespace: str, name: str, data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def test_secure_string_from_a_core_secret(params_ns, plaintexts):
    namespace = params_ns.name
    client = params_ns.client()
    source, resource = unique("legacy"), unique("imported")
    name = f"/app/{resource}"
    first = plaintexts.new()
    # `create`, not `apply`: no last-applied annotation repeating the data.
    kubectl("create", "-f", "-", input=json.dumps(core_secret(namespace, source, {"password": first})))
    try:
        obj = apply_ready(parameter_manifest(resource, namespace, name=name, type="SecureString",
                                             fromSecret={"name": source, "key": "password"}), version=1)
        assert_no_value_in(obj, first)
        assert client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == first
        # The API may not write a value the source would win back.
        expect_error("ValidationException", client.put_parameter, Name=name, Value=plaintexts.new(),
                     Type="SecureString", Overwrite=True)

        second = plaintexts.new()
        kubectl("patch", "secret", source, "-n", namespace, "--type", "merge",
                "-p", json.dumps({"data": {"password": base64.b64encode(second.encode()).decode()}}))
        wait_until(
            f"GetParameter({name}) returns the core Secret's new value as version 2",
            lambda: client.get_parameter(Name=name, WithDecryption=True)["Parameter"],
            lambda out: (out["Value"], out["Version"]) == (second, 2),
            timeout=SOURCE_RECHECK_TIMEOUT_SECONDS, interval=2,
        )
        obj = wait_for_parameter_ready(namespace, resource, version=2)
        assert_no_value_in(obj, second)
    finally:
        kubectl("delete", "secret", source, "-n", namespace, "--ignore-not-found", "--wait=true")

    # Once imported, the source may go: the value stays.
    kubectl("patch", PARAMETER_RESOURCE, resource, "-n", namespace, "--type", "merge",
            "-p", json.dumps({"spec": {"description": "its source is gone"}}))
    obj = wait_for_parameter(namespace, resource, "is reconciled after its source was deleted",
                             lambda o: (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"])
    assert client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == second


def test_secure_string_waits_for_a_missing_core_secret(params_ns, plaintexts):
    namespace = params_ns.name
    client = params_ns.client()
    source, resource = unique("not-yet"), unique("awaits")
    name = f"/app/{resource}"
    apply(parameter_manifest(resource, namespace, name=name, type="SecureString",
                             fromSecret={"name": source, "key": "password"}))
    obj = wait_for_parameter(namespace, resource, "is Ready False with reason SourceMissing",
                             lambda o: is_parameter_refused(o, "SourceMissing"))
    assert not obj["status"].get("version"), obj["status"]
    expect_error("ParameterNotFound", client.get_parameter, Name=name)

    value = plaintexts.new()
    kubectl("create", "-f", "-", input=json.dumps(core_secret(namespace, source, {"password": value})))
    try:
        wait_for_parameter_ready(namespace, resource, version=1, timeout=SOURCE_RECHECK_TIMEOUT_SECONDS)
        assert client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == value
    finally:
        kubectl("delete", "secret", source, "-n", namespace, "--ignore-not-found", "--wait=true")


# --------------------------------------------------------------------------------------------
# 5. Listings and RBAC
# --------------------------------------------------------------------------------------------


@pytest.fixture
def listing_ns(cluster):
    """A namespace of its own, so that a listing's answer is known exactly."""
    name = unique("coffer-e2e-psl")
    make_parameters_namespace(name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False)


def test_listings_return_only_what_the_caller_may_get(cluster, listing_ns, plaintexts):
    namespace = listing_ns
    endpoint = cluster.controller.endpoint
    admin = service_client("ssm", endpoint, namespace, "ps-admin")

    strings = {"/app/db/url": "postgres://db/app", "/app/api/endpoint": "https://api", "/app/cache/host": "cache",
               "/app/top": "t", "/other/x": "o", "/app": "root"}
    for name, value in strings.items():
        resource = parameter_resource_name(name)
        apply(parameter_manifest(resource, namespace, name=name, value=value))
    password = plaintexts.new()
    admin.put_parameter(Name="/app/db/password", Value=password, Type="SecureString")
    for name in list(strings) + ["/app/db/password"]:
        wait_for_parameter_ready(namespace, parameter_resource_name(name), version=1)
    values = {**strings, "/app/db/password": password}
    under_app = {name for name in values if name.startswith("/app/")}

    found = by_path(admin, "/app/", Recursive=True, WithDecryption=True, MaxResults=2)
    assert set(found) == under_app, sorted(found)
    assert {name: entry["Value"] for name, entry in found.items()} == {name: values[name] for name in under_app}
    assert found["/app/db/password"]["Type"] == "SecureString"
    assert set(by_path(admin, "/app/db")) == {"/app/db/url", "/app/db/password"}
    assert set(by_path(admin, "/app")) == {"/app/top"}
    hidden = by_path(admin, "/app/db", WithDecryption=False)["/app/db/password"]["Value"]
    assert password not in hidden, "GetParametersByPath without decryption returned the plaintext"
    assert described(admin) == set(values)

    # `get` on some resource names: the listings give those and leave out the others, without
    # an error and without their names.
    allowed = ["/app/db/url", "/app/db/password"]
    bind_parameter_role(namespace, "ps-some", ["get"], [parameter_resource_name(name) for name in allowed])
    wait_until("kubectl auth can-i get parameters.coffer.dev/app.db.url as ps-some",
               lambda: can_i(namespace, "ps-some", "get", f"{PARAMETER_RESOURCE}/app.db.url"), bool)
    assert not can_i(namespace, "ps-some", "get", f"{PARAMETER_RESOURCE}/app.cache.host")
    some = service_client("ssm", endpoint, namespace, "ps-some")
    found = by_path(some, "/app/", Recursive=True, WithDecryption=True, MaxResults=1)
    assert set(found) == set(allowed), sorted(found)
    assert found["/app/db/password"]["Value"] == password
    assert found["/app/db/url"]["Value"] == values["/app/db/url"]
    assert described(some) == set(allowed)
    assert described(some, ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": ["/app/"]}]) \
        == set(allowed)
    assert some.get_parameter(Name="/app/db/url")["Parameter"]["Value"] == values["/app/db/url"]
    expect_error("AccessDeniedException", some.get_parameter, Name="/app/cache/host")
    # GetParameters fails as a whole for one name the caller may not read.
    expect_error("AccessDeniedException", some.get_parameters, Names=["/app/db/url", "/app/cache/host"])
    assert {entry["Name"] for entry in some.get_parameters(Names=allowed)["Parameters"]} == set(allowed)

    # No Role at all: empty listings, not errors.
    nobody = service_client("ssm", endpoint, namespace, "ps-nobody")
    assert by_path(nobody, "/app/", Recursive=True) == {}
    assert described(nobody) == set()
    expect_error("AccessDeniedException", nobody.get_parameter, Name="/app/db/url")


def test_rbac_verbs_on_parameters(params_ns, plaintexts):
    namespace = params_ns.name
    admin = params_ns.client()
    suffix = uuid.uuid4().hex[:8]
    resource = f"rbac-{suffix}"
    name = f"/rbac/{suffix}/url"
    apply_ready(parameter_manifest(resource, namespace, name=name, value="v1"), version=1)

    target = f"{PARAMETER_RESOURCE}/{resource}"
    assert can_i(namespace, "ps-reader", "get", target)
    assert not can_i(namespace, "ps-reader", "update", target)
    assert not can_i(namespace, "ps-reader", "delete", target)
    reader = params_ns.client("ps-reader")
    assert reader.get_parameter(Name=name)["Parameter"]["Value"] == "v1"
    assert history_versions(reader, name) == [1]
    expect_error("AccessDeniedException", reader.put_parameter, Name=name, Value="v2", Type="String", Overwrite=True)
    expect_error("AccessDeniedException", reader.put_parameter, Name=f"/rbac/{suffix}/new", Value="n", Type="String")
    expect_error("AccessDeniedException", reader.delete_parameter, Name=name)
    expect_error("AccessDeniedException", reader.label_parameter_version, Name=name, ParameterVersion=1,
                 Labels=["nope"])
    out = admin.get_parameter(Name=name)["Parameter"]
    assert (out["Value"], out["Version"]) == ("v1", 1), "a denied write wrote"
    assert resources_declaring(namespace, f"/rbac/{suffix}/new") == []

    assert not can_i(namespace, "ps-nobody", "get", target)
    expect_error("AccessDeniedException", params_ns.client("ps-nobody").get_parameter, Name=name)

    # The names in the brief's example: the resource app.db.url for /app/db/url.
    apply_ready(parameter_manifest("app.db.url", namespace, name="/app/db/url", value="postgres://rbac"))
    bind_parameter_role(namespace, "ps-db", ["get"], ["app.db.url"])
    wait_until("kubectl auth can-i get parameters.coffer.dev/app.db.url as ps-db",
               lambda: can_i(namespace, "ps-db", "get", f"{PARAMETER_RESOURCE}/app.db.url"), bool)
    db = params_ns.client("ps-db")
    assert db.get_parameter(Name="/app/db/url")["Parameter"]["Value"] == "postgres://rbac"
    assert not can_i(namespace, "ps-db", "get", target)
    expect_error("AccessDeniedException", db.get_parameter, Name=name)
    assert not can_i(namespace, "ps-db", "update", f"{PARAMETER_RESOURCE}/app.db.url")
    expect_error("AccessDeniedException", db.put_parameter, Name="/app/db/url", Value="x", Type="String",
                 Overwrite=True)

    # A parameter whose name is no resource name is known to RBAC by its resource's (p-...),
    # for `get` and for `update`.
    api_name = f"/Team/Config_{suffix}"
    secret = plaintexts.new()
    admin.put_parameter(Name=api_name, Value=secret, Type="SecureString")
    derived = parameter_resource_name(api_name)
    wait_for_parameter_ready(namespace, derived, version=1)
    bind_parameter_role(namespace, "ps-derived", ["get", "update"], [derived])
    wait_until(f"kubectl auth can-i update parameters.coffer.dev/{derived} as ps-derived",
               lambda: can_i(namespace, "ps-derived", "update", f"{PARAMETER_RESOURCE}/{derived}"), bool)
    client = params_ns.client("ps-derived")
    assert client.get_parameter(Name=api_name, WithDecryption=True)["Parameter"]["Value"] == secret
    newer = plaintexts.new()
    assert client.put_parameter(Name=api_name, Value=newer, Type="SecureString", Overwrite=True)["Version"] == 2
    assert not can_i(namespace, "ps-derived", "delete", f"{PARAMETER_RESOURCE}/{derived}")
    expect_error("AccessDeniedException", client.delete_parameter, Name=api_name)
    expect_error("AccessDeniedException", client.get_parameter, Name=name)
    wait_for_parameter_ready(namespace, derived, version=2)

    for gone in (resource, "app.db.url", derived):
        kubectl("delete", f"{PARAMETER_RESOURCE}/{gone}", "-n", namespace, "--wait=true")


# --------------------------------------------------------------------------------------------
# 6. Policies
# --------------------------------------------------------------------------------------------

EXPIRATION_LEAD_SECONDS = 20


def test_expiration_policy_deletes_the_parameter_and_its_resource(params_ns):
    namespace = params_ns.name
    client = params_ns.client()
    resource = unique("expiring")
    name = f"/app/{resource}"
    expires = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=EXPIRATION_LEAD_SECONDS)
    timestamp = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    obj = apply_ready(parameter_manifest(resource, namespace, name=name, value="short-lived", tier="Advanced",
                                         policies=[{"type": "Expiration", "timestamp": timestamp}]), version=1)
    assert time.time() < expires.timestamp(), (
        f"the Parameter became Ready only after its expiration {timestamp}: raise EXPIRATION_LEAD_SECONDS"
    )
    assert obj["status"].get("tier") == "Advanced", obj["status"]
    out = client.get_parameter(Name=name)["Parameter"]
    assert out["Value"] == "short-lived", out
    meta = next(iter(client.describe_parameters(
        ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}])["Parameters"]), None)
    assert meta is not None and meta.get("Tier") == "Advanced", meta
    policies = meta.get("Policies") or []
    assert [policy.get("PolicyType") for policy in policies] == ["Expiration"], policies

    remaining = max(0.0, expires.timestamp() - time.time())
    wait_until(f"GetParameter({name}) answers ParameterNotFound after its expiration at {timestamp}",
               lambda: parameter_not_found(client, name), bool, timeout=remaining + RECONCILE_TIMEOUT_SECONDS)
    assert time.time() >= expires.timestamp() - 1, f"{name} was deleted before its expiration at {timestamp}"
    wait_for_parameter_gone(namespace, resource)
    event = wait_for_parameter_event(namespace, resource, "Expired")
    assert name in event.get("message", ""), event
