"""Secret resources (secrets.coffer.dev) and the Secrets Manager API in Kubernetes mode: what the
controller makes of a manifest, how API calls show in the resource, value sources (generated,
imported from a core Secret, sealed), deletion windows, RBAC, cross-namespace reads, and, at the
end of the session, a scan of etcd and of the controller's log for every value used here.

Every call goes through boto3 with a ServiceAccount's temporary credentials from the
controller's credentials endpoint, as a pod's SDK would get them. Every value is either made
with a recognisable marker (`e2e-plain-<hex>`) or read back through GetSecretValue, and
registered for the scans (the `plaintexts` fixture)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from cluster_helpers import (
    DAY_SECONDS,
    READY_TIMEOUT_SECONDS,
    RECONCILE_TIMEOUT_SECONDS,
    REGION,
    ROOT_KEY_SECRET,
    SECRET_NAME_ANNOTATION,
    SECRET_RESOURCE,
    SOURCE_RECHECK_TIMEOUT_SECONDS,
    can_i,
    can_i_as,
    delete_namespace,
    etcd_dump,
    etcd_endpoint,
    events_for,
    find_plaintexts,
    get_coffer_secret,
    is_ready,
    is_secret_ready,
    is_secret_reconciled,
    is_secret_refused,
    kmskey_manifest,
    kubectl,
    list_coffer_secrets,
    list_parameter_resources,
    make_namespace,
    make_secrets_namespace,
    role_binding,
    secret_manifest,
    secret_record,
    secret_role,
    secrets_client,
    skip_scan,
    version_stages,
    wait_for_coffer_secret,
    wait_for_kmskey,
    wait_for_secret_gone,
    wait_for_secret_ready,
    wait_until,
)


# How long the controller may remember a ServiceAccount's uid (docs/wire.md, "Kubernetes").
SERVICE_ACCOUNT_CACHE_SECONDS = 10


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def apply(manifest: dict) -> None:
    kubectl("apply", "-f", "-", input=json.dumps(manifest))


def arn_pattern(name: str) -> str:
    return rf"arn:aws:secretsmanager:{re.escape(REGION)}:\d{{12}}:secret:{re.escape(name)}-[A-Za-z0-9]{{6}}"


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


def listed_arns(client, **kwargs) -> set[str]:
    arns: set[str] = set()
    for page in client.get_paginator("list_secrets").paginate(**kwargs):
        arns |= {entry["ARN"] for entry in page.get("SecretList", [])}
    return arns


def read_value(client, secret_id: str, plaintexts, **kwargs) -> dict:
    """GetSecretValue; the value read is registered for the scans."""
    out = client.get_secret_value(SecretId=secret_id, **kwargs)
    if out.get("SecretString") is not None:
        plaintexts.add(out["SecretString"])
    if out.get("SecretBinary") is not None:
        plaintexts.add(out["SecretBinary"])
    return out


def assert_no_value_in(obj: dict, value: str) -> None:
    text = json.dumps(obj)
    assert value not in text, f"the value of {obj['metadata']['name']} appears in the resource"


def apply_ready(manifest: dict, timeout: float = READY_TIMEOUT_SECONDS) -> dict:
    apply(manifest)
    return wait_for_secret_ready(manifest["metadata"]["namespace"], manifest["metadata"]["name"], timeout)


# --------------------------------------------------------------------------------------------
# A generated secret
# --------------------------------------------------------------------------------------------


def test_generated_secret_is_ready_and_served(secrets_ns, plaintexts):
    name = unique("gen")
    obj = apply_ready(secret_manifest(name, secrets_ns.name, generate={}))
    status = obj["status"]
    assert re.fullmatch(arn_pattern(name), status["arn"]), status["arn"]
    versions = status.get("versions") or []
    assert len(versions) == 1, versions
    assert versions[0]["versionId"] == status["currentVersion"], status
    assert versions[0].get("stages") == ["AWSCURRENT"], versions
    assert versions[0].get("createdDate"), versions
    assert not status.get("deletionDate"), status

    client = secrets_ns.client()
    described = client.describe_secret(SecretId=name)
    assert described["ARN"] == status["arn"], described
    assert described["Name"] == name, described
    assert "DeletedDate" not in described, described
    assert {vid: sorted(stages) for vid, stages in described["VersionIdsToStages"].items()} == \
        version_stages(obj), (described["VersionIdsToStages"], status["versions"])
    assert status["arn"] in listed_arns(client)

    out = read_value(client, name, plaintexts)
    assert out["ARN"] == status["arn"] and out["Name"] == name, out
    assert out["VersionId"] == status["currentVersion"], out
    assert "AWSCURRENT" in out["VersionStages"], out
    value = out["SecretString"]
    assert isinstance(value, str) and len(value) == 32, f"generated value of {len(value)} characters"
    # By ARN too.
    assert client.get_secret_value(SecretId=status["arn"])["SecretString"] == value
    assert_no_value_in(get_coffer_secret(secrets_ns.name, name), value)
    wait_for_secret_event(secrets_ns.name, name, "Created")


# --------------------------------------------------------------------------------------------
# API -> resource
# --------------------------------------------------------------------------------------------


def derived_resource_name(secret_name: str, readable: str) -> str:
    return f"sm-{readable}-{hashlib.sha256(secret_name.encode()).hexdigest()[:10]}"


def secret_events(namespace: str, name: str) -> list[str]:
    return [event.get("reason", "") for event in events_for(namespace, "Secret", name)
            if (event.get("involvedObject") or {}).get("apiVersion", "").startswith("coffer.dev/")]


def wait_for_secret_event(namespace: str, name: str, reason: str) -> None:
    wait_until(f"an Event with reason {reason} is recorded on Secret {namespace}/{name}",
               lambda: secret_events(namespace, name), lambda reasons: reason in reasons)


def resources_named(namespace: str, secret_name: str) -> list[dict]:
    return [obj for obj in list_coffer_secrets(namespace)
            if (obj["metadata"].get("annotations") or {}).get(SECRET_NAME_ANNOTATION) == secret_name]


def test_create_secret_through_the_api_makes_a_resource(secrets_ns, plaintexts):
    client = secrets_ns.client()
    namespace = secrets_ns.name

    value = plaintexts.new()
    created = client.create_secret(Name="prod/api/token", SecretString=value)
    assert re.fullmatch(arn_pattern("prod/api/token"), created["ARN"]), created
    found = wait_until(
        f"a Secret in {namespace} carries {SECRET_NAME_ANNOTATION}: prod/api/token and shows ARN {created['ARN']}",
        lambda: resources_named(namespace, "prod/api/token"),
        lambda objs: len(objs) == 1 and (objs[0].get("status") or {}).get("arn") == created["ARN"],
    )
    obj = found[0]
    assert obj["metadata"]["name"].startswith("sm-"), obj["metadata"]["name"]
    # docs/secrets.md: `sm-` + a readable part + 10 hex digits of SHA-256 of the name.
    assert obj["metadata"]["name"] == derived_resource_name("prod/api/token", "prod-api-token"), obj["metadata"]
    assert obj["metadata"]["namespace"] == namespace
    assert obj["status"].get("currentVersion") == created["VersionId"], obj["status"]
    assert_no_value_in(obj, value)
    assert client.get_secret_value(SecretId="prod/api/token")["SecretString"] == value

    plain_value = plaintexts.new()
    plain = client.create_secret(Name="plain-name", SecretString=plain_value, Description="made through the API")
    obj = wait_for_coffer_secret(namespace, "plain-name", f"shows ARN {plain['ARN']}",
                                 lambda o: (o.get("status") or {}).get("arn") == plain["ARN"])
    assert obj["status"].get("currentVersion") == plain["VersionId"], obj["status"]
    assert_no_value_in(obj, plain_value)
    assert client.get_secret_value(SecretId="plain-name")["SecretString"] == plain_value


def test_create_secret_as_the_first_secret_of_a_namespace(cluster, plaintexts):
    """The first value of a namespace is sealed under its managed key `aws/secretsmanager`, which
    that first write creates: a CreateSecret must not depend on a secret having been applied
    before it."""
    namespace = unique("coffer-e2e-smfirst")
    make_secrets_namespace(namespace)
    try:
        client = secrets_client(cluster.controller.endpoint, namespace, "sm-admin")
        value = plaintexts.new()
        created = client.create_secret(Name="first", SecretString=value)
        assert re.fullmatch(arn_pattern("first"), created["ARN"]), created
        assert client.get_secret_value(SecretId="first")["SecretString"] == value
        wait_for_coffer_secret(namespace, "first", f"is Ready with ARN {created['ARN']}",
                               lambda o: is_secret_ready(o) and o["status"]["arn"] == created["ARN"])
    finally:
        kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)


def test_concurrent_create_secret_calls_each_make_their_resource(secrets_ns, plaintexts):
    """CreateSecret makes the resource and the record; the reconciler, seeing the resource, must
    not race the call into making a second secret or refusing it."""
    client = secrets_ns.client()
    # One write first, so that the namespace's managed key exists (concurrent first writes are
    # the next test's).
    client.create_secret(Name=unique("burst-first"), SecretString=plaintexts.new())
    names = [unique("burst") for _ in range(8)]
    values = {name: plaintexts.new() for name in names}

    def create(name: str) -> str:
        return client.create_secret(Name=name, SecretString=values[name])["ARN"]

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        arns = dict(zip(names, pool.map(create, names)))
    for name in names:
        obj = wait_for_coffer_secret(secrets_ns.name, name, f"is Ready with ARN {arns[name]}",
                                     lambda o, name=name: is_secret_ready(o) and o["status"]["arn"] == arns[name])
        assert len(obj["status"].get("versions") or []) == 1, obj["status"]
        assert client.get_secret_value(SecretId=name)["SecretString"] == values[name]


def test_concurrent_first_writes_of_a_namespace(cluster, plaintexts):
    """Concurrent first writes of a namespace all make its managed key, under the same derived
    key id (docs/wire.md: "so concurrent first uses agree"): every one of them succeeds."""
    namespace = unique("coffer-e2e-smburst")
    make_secrets_namespace(namespace)
    try:
        client = secrets_client(cluster.controller.endpoint, namespace, "sm-admin")
        names = [f"first-{n}" for n in range(8)]
        values = {name: plaintexts.new() for name in names}

        def create(name: str) -> str | None:
            try:
                client.create_secret(Name=name, SecretString=values[name])
            except ClientError as err:
                return f"{err.response['Error'].get('Code')}: {err.response['Error'].get('Message')}"
            return None

        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            outcomes = dict(zip(names, pool.map(create, names)))
        failed = {name: outcome for name, outcome in outcomes.items() if outcome is not None}
        assert not failed, f"{len(failed)} of {len(names)} concurrent first CreateSecret calls failed:\n" + \
            "\n".join(f"{name}: {outcome}" for name, outcome in failed.items())
        for name in names:
            assert client.get_secret_value(SecretId=name)["SecretString"] == values[name]
    finally:
        kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)


# --------------------------------------------------------------------------------------------
# API writes on a kubectl-applied secret
# --------------------------------------------------------------------------------------------


def test_put_secret_value_and_update_secret_show_in_the_resource(secrets_ns, plaintexts):
    namespace = secrets_ns.name
    name = unique("put")
    first = apply_ready(secret_manifest(name, namespace, generate={}))
    old_version = first["status"]["currentVersion"]
    client = secrets_ns.client()
    generated = read_value(client, name, plaintexts)["SecretString"]

    value = plaintexts.new()
    put = client.put_secret_value(SecretId=name, SecretString=value)
    new_version = put["VersionId"]
    assert new_version != old_version, put
    assert put["ARN"] == first["status"]["arn"], put
    obj = wait_for_coffer_secret(
        namespace, name, f"shows version {new_version} AWSCURRENT and {old_version} AWSPREVIOUS",
        lambda o: (o.get("status") or {}).get("currentVersion") == new_version
        and version_stages(o).get(new_version) == ["AWSCURRENT"]
        and version_stages(o).get(old_version) == ["AWSPREVIOUS"],
    )
    assert_no_value_in(obj, value)
    assert client.get_secret_value(SecretId=name)["SecretString"] == value
    assert client.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")["SecretString"] == generated
    wait_for_secret_event(namespace, name, "NewVersion")

    client.update_secret(SecretId=name, Description="x")
    obj = wait_for_coffer_secret(namespace, name, "has spec.description x and is reconciled",
                                 lambda o: (o.get("spec") or {}).get("description") == "x" and is_secret_ready(o))
    # A change of the spec is no reason to generate a value again.
    assert obj["status"]["currentVersion"] == new_version, obj["status"]
    assert client.describe_secret(SecretId=name).get("Description") == "x"
    assert client.get_secret_value(SecretId=name)["SecretString"] == value


# --------------------------------------------------------------------------------------------
# Imported from a core Secret
# --------------------------------------------------------------------------------------------


def core_secret(namespace: str, name: str, data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def test_from_secret_imports_and_follows_a_core_secret(secrets_ns, plaintexts):
    namespace = secrets_ns.name
    client = secrets_ns.client()
    first = plaintexts.new()
    # `create`, not `apply`: no last-applied annotation repeating the data.
    kubectl("create", "-f", "-", input=json.dumps(core_secret(namespace, "legacy", {"token": first, "other": "unused"})))
    try:
        obj = apply_ready(secret_manifest("imported", namespace, fromSecret={"name": "legacy", "key": "token"}))
        assert client.get_secret_value(SecretId="imported")["SecretString"] == first
        first_version = obj["status"]["currentVersion"]
        assert_no_value_in(obj, first)

        second = plaintexts.new()
        kubectl("patch", "secret", "legacy", "-n", namespace, "--type", "merge",
                "-p", json.dumps({"data": {"token": base64.b64encode(second.encode()).decode()}}))
        wait_until(
            "GetSecretValue(imported) returns the core Secret's new value",
            lambda: client.get_secret_value(SecretId="imported")["SecretString"] == second,
            bool, timeout=SOURCE_RECHECK_TIMEOUT_SECONDS, interval=2,
        )
        obj = wait_for_coffer_secret(
            namespace, "imported", "shows the import as a new current version, the first one AWSPREVIOUS",
            lambda o: (o.get("status") or {}).get("currentVersion") not in (None, first_version)
            and version_stages(o).get(first_version) == ["AWSPREVIOUS"],
        )
        assert client.get_secret_value(SecretId="imported", VersionStage="AWSPREVIOUS")["SecretString"] == first
    finally:
        kubectl("delete", "secret", "legacy", "-n", namespace, "--ignore-not-found", "--wait=true")

    # The core Secret may go once imported. A change of the spec makes the controller look at
    # the resource (and its missing source) again at once.
    kubectl("patch", SECRET_RESOURCE, "imported", "-n", namespace, "--type", "merge",
            "-p", json.dumps({"spec": {"description": "its source is gone"}}))
    wait_for_coffer_secret(namespace, "imported", "is reconciled after its source was deleted", is_secret_reconciled)
    assert client.get_secret_value(SecretId="imported")["SecretString"] == second


def test_from_secret_waits_for_a_missing_core_secret(secrets_ns, plaintexts):
    namespace = secrets_ns.name
    name, source = unique("awaits"), unique("not-yet")
    apply(secret_manifest(name, namespace, fromSecret={"name": source, "key": "token"}))
    obj = wait_for_coffer_secret(namespace, name, "is Ready False with a reason and a message", is_secret_refused)
    assert not (obj.get("status") or {}).get("currentVersion"), obj["status"]

    value = plaintexts.new()
    kubectl("create", "-f", "-", input=json.dumps(core_secret(namespace, source, {"token": value})))
    try:
        wait_for_secret_ready(namespace, name, timeout=SOURCE_RECHECK_TIMEOUT_SECONDS)
        assert secrets_ns.client().get_secret_value(SecretId=name)["SecretString"] == value
    finally:
        kubectl("delete", "secret", source, "-n", namespace, "--ignore-not-found", "--wait=true")


# --------------------------------------------------------------------------------------------
# Sealed values
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sealing_key(secrets_ns) -> dict:
    """An RSA_2048 ENCRYPT_DECRYPT KmsKey `sealing` with its public key in the status."""
    apply(kmskey_manifest("sealing", secrets_ns.name, keySpec="RSA_2048", keyUsage="ENCRYPT_DECRYPT"))
    return wait_for_kmskey(
        secrets_ns.name, "sealing", "is Ready with status.publicKey",
        lambda o: is_ready(o) and bool(o["status"].get("publicKey")), timeout=READY_TIMEOUT_SECONDS,
    )


def test_sealed_value_opens_only_for_its_own_name(secrets_ns, plaintexts, sealing_key):
    from sealing import seal

    namespace = secrets_ns.name
    client = secrets_ns.client()
    value = plaintexts.new()
    blob = seal(base64.b64decode(sealing_key["status"]["publicKey"]), sealing_key["status"]["keyId"],
                namespace, "sealed", value.encode())

    obj = apply_ready(secret_manifest("sealed", namespace, sealedValue=blob))
    assert client.get_secret_value(SecretId="sealed")["SecretString"] == value
    assert_no_value_in(obj, value)

    # A new sealedValue is a new version.
    first_version = obj["status"]["currentVersion"]
    second = plaintexts.new()
    apply(secret_manifest("sealed", namespace, sealedValue=seal(
        base64.b64decode(sealing_key["status"]["publicKey"]), sealing_key["status"]["keyId"],
        namespace, "sealed", second.encode())))
    obj = wait_for_coffer_secret(
        namespace, "sealed", "is Ready with a new current version, the first one AWSPREVIOUS",
        lambda o: is_secret_ready(o) and o["status"]["currentVersion"] != first_version
        and version_stages(o).get(first_version) == ["AWSPREVIOUS"],
    )
    assert client.get_secret_value(SecretId="sealed")["SecretString"] == second

    # The same blob under another name: bound to (namespace, "sealed"), it does not open.
    other = unique("sealed-elsewhere")
    apply(secret_manifest(other, namespace, sealedValue=blob))
    refused = wait_for_coffer_secret(namespace, other, "is Ready False with a reason and a message", is_secret_refused)
    assert_no_value_in(refused, value)
    try:
        out = client.get_secret_value(SecretId=other)
    except ClientError as err:
        assert err.response["Error"]["Code"] in ("ResourceNotFoundException", "InvalidRequestException"), \
            err.response["Error"]
    else:
        assert out.get("SecretString") != value and out.get("SecretBinary") != value.encode(), \
            "a sealed value opened under another name"


# --------------------------------------------------------------------------------------------
# Deletion
# --------------------------------------------------------------------------------------------


def deleted_date(described: dict) -> dt.datetime:
    assert described.get("DeletedDate"), f"DescribeSecret shows no DeletedDate: {described}"
    return described["DeletedDate"]


@pytest.mark.parametrize("window", [None, 7], ids=["default-window", "window-7"])
def test_kubectl_delete_schedules_deletion_and_reapplying_restores(secrets_ns, plaintexts, window):
    namespace = secrets_ns.name
    name = unique("del")
    spec: dict = {"generate": {}}
    if window is not None:
        spec["recoveryWindowDays"] = window
    manifest = secret_manifest(name, namespace, **spec)
    obj = apply_ready(manifest)
    if window is None:
        assert obj["spec"].get("recoveryWindowDays") == 30, obj["spec"]
    arn = obj["status"]["arn"]
    client = secrets_ns.client()
    value = read_value(client, name, plaintexts)["SecretString"]

    kubectl("delete", f"{SECRET_RESOURCE}/{name}", "-n", namespace, "--wait=true",
            f"--timeout={RECONCILE_TIMEOUT_SECONDS}s", timeout=RECONCILE_TIMEOUT_SECONDS + 30)
    wait_for_secret_gone(namespace, name)
    described = wait_until(
        f"DescribeSecret({name}) shows a DeletedDate",
        lambda: client.describe_secret(SecretId=name),
        lambda d: bool(d.get("DeletedDate")),
    )
    assert described["ARN"] == arn, described
    when = deleted_date(described)
    assert abs(when.timestamp() - time.time()) < 600, f"DeletedDate {when} is not about now"
    # The window the spec asked for (30 days by default) is the one the controller keeps.
    record = secret_record(secrets_ns.system_namespace, namespace, name)
    assert record is not None, f"no record of secret {name} in {secrets_ns.system_namespace}"
    days = window or 30
    assert abs(float(record.get("purgeAfter", 0)) - (time.time() + days * DAY_SECONDS)) < 600, (
        f"the secret is to be purged at {record.get('purgeAfter')}, not {days} days from now: {record}"
    )
    expect_error("InvalidRequestException", client.get_secret_value, SecretId=name)
    assert arn not in listed_arns(client)
    assert arn in listed_arns(client, IncludePlannedDeletion=True)

    # The same manifest within the window: the same secret, with its value.
    obj = apply_ready(manifest)
    assert obj["status"]["arn"] == arn, obj["status"]
    assert not obj["status"].get("deletionDate"), obj["status"]
    assert client.get_secret_value(SecretId=name)["SecretString"] == value
    assert "DeletedDate" not in client.describe_secret(SecretId=name)
    assert arn in listed_arns(client)


def test_delete_secret_through_the_api_deletes_the_resource_and_restore_brings_it_back(secrets_ns, plaintexts):
    namespace = secrets_ns.name
    name = unique("apidel")
    arn = apply_ready(secret_manifest(name, namespace, generate={}))["status"]["arn"]
    client = secrets_ns.client()
    value = read_value(client, name, plaintexts)["SecretString"]

    out = client.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    assert out["ARN"] == arn, out
    expected = time.time() + 7 * DAY_SECONDS
    assert abs(out["DeletionDate"].timestamp() - expected) < 600, (out["DeletionDate"], expected)
    wait_for_secret_gone(namespace, name)
    expect_error("InvalidRequestException", client.get_secret_value, SecretId=name)

    restored = client.restore_secret(SecretId=name)
    assert restored["ARN"] == arn, restored
    obj = wait_for_secret_ready(namespace, name)
    assert obj["status"]["arn"] == arn, obj["status"]
    assert client.get_secret_value(SecretId=name)["SecretString"] == value


def test_force_delete_removes_the_resource_and_the_secret(secrets_ns, plaintexts):
    namespace = secrets_ns.name
    name = unique("forced")
    client = secrets_ns.client()
    created = client.create_secret(Name=name, SecretString=plaintexts.new())
    wait_for_coffer_secret(namespace, name, f"shows ARN {created['ARN']}",
                           lambda o: (o.get("status") or {}).get("arn") == created["ARN"])

    client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    wait_for_secret_gone(namespace, name)
    wait_until(f"DescribeSecret({name}) answers ResourceNotFoundException",
               lambda: error_code(client.describe_secret, SecretId=name),
               lambda code: code == "ResourceNotFoundException")
    # And it stays gone: no reconcile brings it back.
    assert get_coffer_secret(namespace, name) is None
    assert created["ARN"] not in listed_arns(client, IncludePlannedDeletion=True)


def test_reapplying_after_delete_secret_through_the_api_restores(secrets_ns, plaintexts):
    namespace = secrets_ns.name
    name = unique("reapply")
    manifest = secret_manifest(name, namespace, generate={})
    arn = apply_ready(manifest)["status"]["arn"]
    client = secrets_ns.client()
    value = read_value(client, name, plaintexts)["SecretString"]

    client.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    wait_for_secret_gone(namespace, name)
    obj = apply_ready(manifest)
    assert obj["status"]["arn"] == arn, obj["status"]
    assert client.get_secret_value(SecretId=name)["SecretString"] == value
    assert "DeletedDate" not in client.describe_secret(SecretId=name)


def test_deleting_a_namespace_schedules_its_secrets_and_making_it_again_restores_them(cluster, plaintexts):
    namespace = unique("coffer-e2e-smns")
    manifest = secret_manifest("kept", namespace, generate={}, recoveryWindowDays=7)
    make_secrets_namespace(namespace)
    try:
        arn = apply_ready(manifest)["status"]["arn"]
        client = secrets_client(cluster.controller.endpoint, namespace, "sm-admin")
        value = read_value(client, "kept", plaintexts)["SecretString"]

        # Nothing of Coffer's holds the namespace up.
        delete_namespace(namespace)
        record = wait_until(
            f"the controller's record of secret kept ({namespace}) shows a scheduled deletion",
            lambda: secret_record(cluster.system_namespace, namespace, "kept"),
            lambda r: r is not None and r.get("deleted") is not None,
        )
        assert abs(float(record.get("purgeAfter", 0)) - (time.time() + 7 * DAY_SECONDS)) < 600, record

        # The same namespace and the same manifest, within the window: the same secret.
        make_secrets_namespace(namespace)
        obj = apply_ready(manifest)
        assert obj["status"]["arn"] == arn, obj["status"]
        # sm-admin is a new ServiceAccount under an old name: the controller may go on knowing
        # the old one's uid for the 10 s it caches it (docs/wire.md), refusing the new one's
        # credentials as unrecognized until then.
        client = secrets_client(cluster.controller.endpoint, namespace, "sm-admin")
        wait_until("the re-created sm-admin's credentials are recognized",
                   lambda: error_code(client.describe_secret, SecretId="kept"),
                   lambda code: code != "UnrecognizedClientException", timeout=SERVICE_ACCOUNT_CACHE_SECONDS + 10)
        assert client.get_secret_value(SecretId="kept")["SecretString"] == value
        assert "DeletedDate" not in client.describe_secret(SecretId="kept")
    finally:
        kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)


# --------------------------------------------------------------------------------------------
# RBAC
# --------------------------------------------------------------------------------------------


def test_rbac_verbs_on_secrets(secrets_ns, plaintexts):
    namespace = secrets_ns.name
    name = unique("rbac")
    other = unique("rbac-other")
    apply_ready(secret_manifest(name, namespace, generate={}))
    apply_ready(secret_manifest(other, namespace, generate={}))
    value = read_value(secrets_ns.client(), name, plaintexts)["SecretString"]
    read_value(secrets_ns.client(), other, plaintexts)

    assert can_i(namespace, "sm-reader", "get", f"{SECRET_RESOURCE}/{name}")
    assert not can_i(namespace, "sm-reader", "update", f"{SECRET_RESOURCE}/{name}")
    reader = secrets_ns.client("sm-reader")
    assert reader.get_secret_value(SecretId=name)["SecretString"] == value
    expect_error("AccessDeniedException", reader.put_secret_value, SecretId=name, SecretString=plaintexts.new())
    expect_error("AccessDeniedException", reader.list_secrets)
    expect_error("AccessDeniedException", reader.create_secret, Name=unique("by-reader"), SecretString=plaintexts.new())
    assert secrets_ns.client().get_secret_value(SecretId=name)["SecretString"] == value, "the denied put wrote"

    assert not can_i(namespace, "sm-nobody", "get", f"{SECRET_RESOURCE}/{name}")
    expect_error("AccessDeniedException", secrets_ns.client("sm-nobody").get_secret_value, SecretId=name)

    # `get` on one resource name reads that secret and no other.
    account = "sm-one"
    items = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
             secret_role(account, ["get"], [name]), role_binding(account, account, [(namespace, account)])]
    kubectl("apply", "-n", namespace, "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    wait_until(f"kubectl auth can-i get {SECRET_RESOURCE}/{name} as {account}",
               lambda: can_i(namespace, account, "get", f"{SECRET_RESOURCE}/{name}"), bool)
    assert not can_i(namespace, account, "get", f"{SECRET_RESOURCE}/{other}")
    one = secrets_ns.client(account)
    assert one.get_secret_value(SecretId=name)["SecretString"] == value
    expect_error("AccessDeniedException", one.get_secret_value, SecretId=other)

    # A secret whose name is no resource name is known to RBAC by its resource's name (sm-...).
    suffix = uuid.uuid4().hex[:8]
    api_name = f"team/Token_{suffix}"
    api_value = plaintexts.new()
    secrets_ns.client().create_secret(Name=api_name, SecretString=api_value)
    resource = derived_resource_name(api_name, f"team-token-{suffix}")
    wait_for_coffer_secret(namespace, resource, f"stands for secret {api_name}", is_secret_ready)
    items = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sm-derived"}},
             secret_role("sm-derived", ["get"], [resource]), role_binding("sm-derived", "sm-derived", [(namespace, "sm-derived")])]
    kubectl("apply", "-n", namespace, "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    wait_until(f"kubectl auth can-i get {SECRET_RESOURCE}/{resource} as sm-derived",
               lambda: can_i(namespace, "sm-derived", "get", f"{SECRET_RESOURCE}/{resource}"), bool)
    derived = secrets_ns.client("sm-derived")
    assert derived.get_secret_value(SecretId=api_name)["SecretString"] == api_value
    expect_error("AccessDeniedException", derived.get_secret_value, SecretId=name)


# --------------------------------------------------------------------------------------------
# Across namespaces
# --------------------------------------------------------------------------------------------


def test_cross_namespace_reads_need_the_resource_policy(cluster, plaintexts):
    suffix = uuid.uuid4().hex[:8]
    ns_a, ns_b = f"coffer-e2e-xa-{suffix}", f"coffer-e2e-xb-{suffix}"
    cluster_role = f"coffer-e2e-xns-{suffix}"
    endpoint = cluster.controller.endpoint
    try:
        for namespace in (ns_a, ns_b):
            make_namespace(namespace, with_service_accounts=False)
        owner_role = secret_role("owner", ["*"])
        owner_role["rules"].append({"apiGroups": ["coffer.dev"], "resources": ["kmskeys"], "verbs": ["*"]})
        kubectl("apply", "-n", ns_a, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "owner"}},
            owner_role, role_binding("owner", "owner", [(ns_a, "owner")]),
        ]}))
        readers = ["reader", "some-sa"]
        kubectl("apply", "-n", ns_b, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}} for sa in readers]}))
        # B's ServiceAccounts may `get` (and `update`) Secrets in every namespace: RBAC alone
        # must not let them read, let alone write, A's secrets.
        kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            secret_role(cluster_role, ["get", "update"], kind="ClusterRole"),
            role_binding(cluster_role, cluster_role, [(ns_b, sa) for sa in readers], kind="ClusterRoleBinding"),
        ]}))
        wait_until(
            "the RBAC of the two namespaces is in effect (kubectl auth can-i)",
            lambda: [can_i(ns_a, "owner", "create", SECRET_RESOURCE)]
            + [can_i_as(ns_a, f"system:serviceaccount:{ns_b}:{sa}", "get", f"{SECRET_RESOURCE}/private")
               for sa in readers],
            all,
        )

        policy = {"version": "2012-10-17", "statements": [
            {"sid": "owners", "effect": "Allow", "principals": [f"system:serviceaccounts:{ns_a}"], "actions": ["kms:*"]},
            {"sid": "readers", "effect": "Allow", "principals": [f"system:serviceaccounts:{ns_b}"],
             "actions": ["kms:Decrypt"]},
        ]}
        apply(kmskey_manifest("shared", ns_a, policy=policy))
        wait_for_kmskey(ns_a, "shared", "is Ready", is_ready, timeout=READY_TIMEOUT_SECONDS)
        key_ref = {"name": "shared"}
        secrets = {
            "shared": {"resourcePolicy": {"allowedNamespaces": [ns_b]}},
            "private": {},
            "one-sa": {"resourcePolicy": {"allowedServiceAccounts": [f"{ns_b}/some-sa"]}},
        }
        for name, extra in secrets.items():
            apply(secret_manifest(name, ns_a, generate={}, kmsKeyRef=key_ref, **extra))
        arns = {name: wait_for_secret_ready(ns_a, name)["status"]["arn"] for name in secrets}
        owner = secrets_client(endpoint, ns_a, "owner")
        values = {name: read_value(owner, name, plaintexts)["SecretString"] for name in secrets}

        reader = secrets_client(endpoint, ns_b, "reader")
        some_sa = secrets_client(endpoint, ns_b, "some-sa")
        assert reader.get_secret_value(SecretId=arns["shared"])["SecretString"] == values["shared"]
        assert some_sa.get_secret_value(SecretId=arns["shared"])["SecretString"] == values["shared"]
        expect_error("AccessDeniedException", reader.get_secret_value, SecretId=arns["private"])
        expect_error("AccessDeniedException", some_sa.get_secret_value, SecretId=arns["private"])
        assert some_sa.get_secret_value(SecretId=arns["one-sa"])["SecretString"] == values["one-sa"]
        expect_error("AccessDeniedException", reader.get_secret_value, SecretId=arns["one-sa"])
        # Another namespace only reads: the policy grants no write, and its own `update` counts
        # for nothing here.
        expect_error("AccessDeniedException", reader.put_secret_value, SecretId=arns["shared"],
                     SecretString=plaintexts.new())
        assert owner.get_secret_value(SecretId="shared")["SecretString"] == values["shared"]
        # The owner's own access is intact.
        assert owner.get_secret_value(SecretId="private")["SecretString"] == values["private"]
    finally:
        kubectl("delete", "clusterrolebinding,clusterrole", cluster_role, "--ignore-not-found", check=False)
        for namespace in (ns_a, ns_b):
            kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)


# --------------------------------------------------------------------------------------------
# No value in etcd or in the controller's log (run after every other test of the session)
# --------------------------------------------------------------------------------------------


def registered(plaintexts) -> list[bytes]:
    values = list(plaintexts.values)
    if not values:
        pytest.fail("no test registered a value to look for: run the scans with the Secrets or the "
                    "Parameters tests (-k 'secrets or parameters')", pytrace=False)
    return values


@pytest.mark.run_last
def test_secrets_plaintext_scan_controller_log(cluster, plaintexts):
    values = registered(plaintexts)
    log = cluster.controller.log_text()
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) >= 5, f"the controller's log has {len(lines)} lines: nothing to scan"
    found = find_plaintexts(values, {f"the controller's log ({cluster.controller.log_path})": log.encode()})
    assert not found, "values of the Secrets tests in the controller's log:\n" + "\n".join(found)


@pytest.mark.run_last
def test_secrets_plaintext_scan_etcd(cluster, secrets_ns, params_ns, plaintexts):
    values = registered(plaintexts)
    endpoint = etcd_endpoint()
    if endpoint is None:
        skip_scan("etcd is not reachable from here (ETCDCTL_ENDPOINTS unset: the cluster is KUBECONFIG's, "
                  "not the repo's own control plane), so etcd was not searched for the test values")
    try:
        dump = etcd_dump(endpoint)
    except (RuntimeError, ValueError) as error:
        skip_scan(f"etcd at {endpoint} could not be read: {error}")

    # The scan saw what it should: every Secret resource of the session's Secrets namespace and
    # every Parameter resource of its Parameters namespace (nothing deletes any there any more),
    # with the parameters' records and values, and Coffer's own storage in the controller's
    # namespace.
    listed = [("secrets", o) for o in list_coffer_secrets(secrets_ns.name)]
    parameters = [("parameters", o) for o in list_parameter_resources(params_ns.name)]
    assert listed or parameters, (f"no Secret resource left in {secrets_ns.name} and no Parameter resource "
                                  f"left in {params_ns.name} to find in etcd")
    keys = {key.decode(errors="replace") for key in dump}
    missing = [f"{kind} {o['metadata']['namespace']}/{o['metadata']['name']}" for kind, o in listed + parameters
               if f"/registry/coffer.dev/{kind}/{o['metadata']['namespace']}/{o['metadata']['name']}" not in keys]
    assert not missing, f"resources the API server lists but the etcd dump lacks: {missing}"
    if parameters:
        stored = f"/registry/secrets/{cluster.system_namespace}/parameter-{params_ns.name}."
        assert any(key.startswith(stored) for key in keys), (
            f"the dump lacks the parameter records and values of {params_ns.name} ({stored}...)"
        )
    assert f"/registry/secrets/{cluster.system_namespace}/{ROOT_KEY_SECRET}" in keys, \
        f"the dump lacks the controller's namespace {cluster.system_namespace}"

    haystacks = {f"etcd key {key.decode(errors='replace')}": key + b"\n" + value for key, value in dump.items()}
    found = find_plaintexts(values, haystacks)
    assert not found, (f"values of the Secrets tests in etcd ({len(dump)} keys searched):\n" + "\n".join(found))
