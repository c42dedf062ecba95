"""No path that deletes a KmsKey destroys its key before the deletion window has passed: not
kubectl, not the deletion of its namespace, not garbage collection of an owner, not the API.
The material lives in the controller's namespace, and the key comes back when a KmsKey of the
same name is applied again in a namespace of the same name."""

from __future__ import annotations

import json
import time
import uuid

from cluster_helpers import (
    DAY_SECONDS,
    KmsApi,
    create_token,
    delete_namespace,
    get_companion,
    get_kmskey,
    is_ready,
    key_record,
    kmskey_manifest,
    kubectl,
    make_namespace,
    wait_for_event,
    wait_for_kmskey,
    wait_until,
)


def wait_for_record_state(cluster, namespace: str, key_id: str, state: str) -> dict:
    return wait_until(
        f"key {namespace}/{key_id} is {state} in the controller's records",
        lambda: key_record(cluster.system_namespace, namespace, key_id),
        lambda record: record is not None and record.get("state") == state,
    )


def assert_window(record: dict, days: int) -> None:
    expected = time.time() + days * DAY_SECONDS
    assert abs(float(record["deletionDate"]) - expected) < 600, (record.get("deletionDate"), expected)


def apply_ready(manifest: dict) -> dict:
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    metadata = manifest["metadata"]
    return wait_for_kmskey(
        metadata["namespace"], metadata["name"], "is Ready and Enabled",
        lambda o: is_ready(o) and o["status"].get("keyState") == "Enabled", timeout=60,
    )


def test_deleting_a_namespace_keeps_its_keys_and_making_it_again_brings_them_back(cluster):
    namespace = f"coffer-e2e-nsdel-{uuid.uuid4().hex[:8]}"
    manifest = kmskey_manifest("vault", namespace, aliases=["vault"], deletionWindowDays=7)
    api: KmsApi = cluster.api
    make_namespace(namespace)
    try:
        key_id = apply_ready(manifest)["status"]["keyId"]
        ciphertext = api.encrypt("alias/vault", b"outlives its namespace",
                                 create_token(namespace, "e2e-admin"))["CiphertextBlob"]

        # Nothing of Coffer's holds the namespace up.
        delete_namespace(namespace)
        record = wait_for_record_state(cluster, namespace, key_id, "PendingDeletion")
        assert_window(record, 7)
        companion = get_companion(cluster.system_namespace, namespace, key_id)
        assert "v1" in (companion.get("data") or {}), "the material is still there"

        # The same namespace and the same manifest, within the window: the same key.
        make_namespace(namespace)
        obj = apply_ready(manifest)
        assert obj["status"]["keyId"] == key_id, obj["status"]
        token = create_token(namespace, "e2e-admin")
        assert api.decrypt(ciphertext, token) == b"outlives its namespace"
        assert api.describe(key_id, token)["KeyState"] == "Enabled"
        record = key_record(cluster.system_namespace, namespace, key_id)
        assert record["state"] == "Enabled" and "deletionDate" not in record, record
        wait_for_event(namespace, "vault", "DeletionCancelled")
    finally:
        delete_namespace(namespace, wait=False)


def test_garbage_collection_of_an_owner_keeps_the_key(cluster):
    namespace = cluster.namespace
    suffix = uuid.uuid4().hex[:8]
    owner_name, key_name = f"owner-{suffix}", f"owned-{suffix}"
    kubectl("create", "configmap", owner_name, "-n", namespace)
    owner = json.loads(kubectl("get", "configmap", owner_name, "-n", namespace, "-o", "json").stdout)
    manifest = kmskey_manifest(key_name, namespace, deletionWindowDays=10)
    manifest["metadata"]["ownerReferences"] = [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": owner_name, "uid": owner["metadata"]["uid"],
    }]
    key_id = apply_ready(manifest)["status"]["keyId"]
    ciphertext = cluster.api.encrypt(key_id, b"outlives its owner", cluster.admin)["CiphertextBlob"]

    # kube-controller-manager's garbage collector deletes the KmsKey with its owner.
    kubectl("delete", "configmap", owner_name, "-n", namespace)
    wait_until(f"KmsKey {namespace}/{key_name} is collected with its owner",
               lambda: get_kmskey(namespace, key_name), lambda obj: obj is None, timeout=90)
    assert_window(wait_for_record_state(cluster, namespace, key_id, "PendingDeletion"), 10)
    cluster.api.error("Decrypt", {"CiphertextBlob": ciphertext}, cluster.admin, "KMSInvalidStateException")

    del manifest["metadata"]["ownerReferences"]
    assert apply_ready(manifest)["status"]["keyId"] == key_id
    assert cluster.api.decrypt(ciphertext, cluster.admin) == b"outlives its owner"
    kubectl("delete", "kmskeys.coffer.dev", key_name, "-n", namespace, "--wait=false")


def test_schedule_key_deletion_through_the_api_deletes_the_kmskey_and_keeps_the_material(cluster):
    namespace = cluster.namespace
    name = f"e2e-api-delete-{uuid.uuid4().hex[:8]}"
    key_id = apply_ready(kmskey_manifest(name, namespace))["status"]["keyId"]
    ciphertext = cluster.api.encrypt(key_id, b"scheduled through the API", cluster.admin)["CiphertextBlob"]
    out = cluster.api.ok("ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 7}, cluster.admin)
    assert out["KeyState"] == "PendingDeletion" and out["PendingWindowInDays"] == 7, out
    wait_until(f"KmsKey {namespace}/{name} is deleted with its key's deletion",
               lambda: get_kmskey(namespace, name), lambda obj: obj is None)
    record = key_record(cluster.system_namespace, namespace, key_id)
    assert record["state"] == "PendingDeletion", record
    assert_window(record, 7)

    # Re-applying takes it back.
    assert apply_ready(kmskey_manifest(name, namespace))["status"]["keyId"] == key_id
    assert cluster.api.decrypt(ciphertext, cluster.admin) == b"scheduled through the API"
    kubectl("delete", "kmskeys.coffer.dev", name, "-n", namespace, "--wait=false")
