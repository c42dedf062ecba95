"""`spec.sync` on the real control plane: a Secret's current value copied into a core Secret it
owns, following PutSecretValue, and removed when sync is turned off. The values here are put
into a core Secret by design (the one opt-in path to etcd), so they are not registered for the
suite's plaintext scans."""

from __future__ import annotations

import base64
import json
import time
import uuid

from cluster_helpers import (
    delete_namespace,
    kubectl,
    make_namespace,
    secret_manifest,
    wait_for_coffer_secret,
    wait_until,
)
from test_secrets import apply, wait_for_secret_event


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def core_secret(namespace: str, name: str) -> dict | None:
    result = kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def decoded(secret: dict, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def test_a_synced_core_secret_follows_put_secret_value_and_goes_when_turned_off(secrets_ns):
    name = unique("synced")
    spec = {
        "generate": {"template": json.dumps({"username": "app"}), "generateStringKey": "password"},
        "sync": {"type": "kubernetes.io/basic-auth", "secretName": f"{name}-env", "labels": {"team": "shop"}},
    }
    apply(secret_manifest(name, secrets_ns.name, **spec))
    obj = wait_for_coffer_secret(
        secrets_ns.name, name, "a synced core Secret in status",
        lambda obj: (obj.get("status") or {}).get("syncedSecret") == f"{name}-env",
    )
    core = core_secret(secrets_ns.name, f"{name}-env")
    assert core is not None and core["type"] == "kubernetes.io/basic-auth", core
    client = secrets_ns.client()
    value = json.loads(client.get_secret_value(SecretId=name)["SecretString"])
    assert decoded(core, "username") == "app" and decoded(core, "password") == value["password"]
    assert core["metadata"]["labels"]["team"] == "shop"
    owners = core["metadata"]["ownerReferences"]
    assert [(owner["kind"], owner["uid"]) for owner in owners] == [("Secret", obj["metadata"]["uid"])], owners

    # A new value through the API: the copy follows.
    password = f"sync-{uuid.uuid4().hex}"
    started = time.monotonic()
    client.put_secret_value(SecretId=name, SecretString=json.dumps({"username": "app", "password": password}))
    wait_until(
        f"the core Secret {name}-env holds the new password",
        lambda: core_secret(secrets_ns.name, f"{name}-env"),
        lambda core: core is not None and decoded(core, "password") == password,
        timeout=30, interval=0.02,
    )
    print(f"\n[figure] PutSecretValue to the synced core Secret: {(time.monotonic() - started) * 1000:.0f} ms "
          "(polled with kubectl)")

    # Turned off: the copy goes; the Coffer Secret stays.
    spec["sync"]["enabled"] = False
    apply(secret_manifest(name, secrets_ns.name, **spec))
    wait_until(
        f"the core Secret {name}-env is deleted",
        lambda: core_secret(secrets_ns.name, f"{name}-env"),
        lambda core: core is None,
    )
    assert client.get_secret_value(SecretId=name)["SecretString"]


def test_sync_never_takes_over_a_core_secret_it_did_not_make(secrets_ns):
    name = unique("synced-taken")
    kubectl("create", "secret", "generic", name, "-n", secrets_ns.name, "--from-literal=mine=kept")
    apply(secret_manifest(name, secrets_ns.name, generate={}, sync={}))
    obj = wait_for_coffer_secret(
        secrets_ns.name, name, "a failed Synced condition",
        lambda obj: any(c.get("type") == "Synced" and c.get("reason") == "SyncFailed"
                        for c in (obj.get("status") or {}).get("conditions", [])),
    )
    assert not (obj.get("status") or {}).get("syncedSecret")
    core = core_secret(secrets_ns.name, name)
    assert decoded(core, "mine") == "kept" and list(core["data"]) == ["mine"]
    assert not core["metadata"].get("ownerReferences")
    wait_for_secret_event(secrets_ns.name, name, "SyncFailed")


def test_a_synced_parameter_copy_follows_put_parameter(cluster):
    """The same for a Parameter: the latest value in a core Secret, following PutParameter."""
    namespace = f"coffer-e2e-sync-{uuid.uuid4().hex[:8]}"
    make_namespace(namespace)
    try:
        name = unique("url")
        parameter = f"/sync/{name}"
        apply({
            "apiVersion": "coffer.dev/v1alpha1", "kind": "Parameter",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"name": parameter, "value": "postgres://db-1/shop",
                     "sync": {"secretName": f"{name}-env", "keys": [{"key": "DATABASE_URL"}]}},
        })
        wait_until(
            f"the core Secret {name}-env holds the parameter",
            lambda: core_secret(namespace, f"{name}-env"),
            lambda core: core is not None and decoded(core, "DATABASE_URL") == "postgres://db-1/shop",
        )
        kubectl("patch", "parameter.coffer.dev", name, "-n", namespace, "--type=merge",
                "-p", json.dumps({"spec": {"value": "postgres://db-2/shop"}}))
        wait_until(
            f"the core Secret {name}-env follows the new version",
            lambda: core_secret(namespace, f"{name}-env"),
            lambda core: core is not None and decoded(core, "DATABASE_URL") == "postgres://db-2/shop",
        )
    finally:
        delete_namespace(namespace, wait=False)
