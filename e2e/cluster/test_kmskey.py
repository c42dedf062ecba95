"""KmsKey objects: what the controller makes of them, and how kubectl and the API change them."""

from __future__ import annotations

import json
import re
import time
import uuid

from cluster_helpers import (
    APP_ALIAS,
    APP_KEY,
    COMPANION_SECRET_TYPE,
    KEY_ID_LABEL,
    KEY_RECORD_ANNOTATION,
    KMSKEY_NAME_ANNOTATION,
    KMSKEY_UID_ANNOTATION,
    KNOWN_EVENT_REASONS,
    MANAGED_BY_LABEL,
    NAMESPACE_LABEL,
    REGION,
    app_key_manifest,
    b64,
    companion_name,
    condition,
    get_companion,
    get_kmskey,
    is_ready,
    kmskey_manifest,
    kubectl,
    unb64,
    wait_for_event,
    wait_for_key_state,
    wait_for_kmskey,
    wait_until,
)

DAY = 86400


def version_ids(obj: dict) -> list[str]:
    return [str(version.get("id")) for version in (obj.get("status") or {}).get("versions") or []]


def patch_enabled(namespace: str, name: str, enabled: bool) -> None:
    kubectl("patch", "kmskeys.coffer.dev", name, "-n", namespace, "--type", "merge",
            "-p", json.dumps({"spec": {"enabled": enabled}}))


def test_status_and_labels(cluster, app_key_ready):
    obj = app_key_ready
    metadata, spec, status = obj["metadata"], obj["spec"], obj["status"]
    key_id = status["keyId"]
    assert str(uuid.UUID(key_id)) == key_id, f"status.keyId is not a lowercase uuid: {key_id}"
    assert (metadata.get("labels") or {}).get(KEY_ID_LABEL) == key_id, metadata.get("labels")
    # Nothing holds a deletion of the resource or its namespace up.
    assert not metadata.get("finalizers"), metadata.get("finalizers")
    assert re.fullmatch(rf"arn:aws:kms:{REGION}:\d{{12}}:key/{key_id}", status.get("arn", "")), status.get("arn")
    assert status.get("keyState") == "Enabled", status
    assert status.get("keySpec") == "SYMMETRIC_DEFAULT", status
    assert status.get("keyUsage") == "ENCRYPT_DECRYPT", status
    assert spec.get("keySpec") == "SYMMETRIC_DEFAULT" and spec.get("keyUsage") == "ENCRYPT_DECRYPT", spec
    assert spec.get("enabled") is True, spec
    # "1" at creation; later tests of the session may rotate, so accept "1".."n" in order.
    versions = status.get("versions") or []
    assert version_ids(obj) == [str(n) for n in range(1, len(versions) + 1)], versions
    assert all(version.get("creationTime") for version in versions), versions
    assert status.get("currentVersion") == str(len(versions)), status
    assert status.get("observedGeneration") == metadata["generation"], (status, metadata["generation"])
    ready = condition(obj, "Ready")
    assert ready is not None and ready.get("status") == "True", status.get("conditions")


def test_companion_secret(cluster, app_key_ready):
    obj = app_key_ready
    key_id = obj["status"]["keyId"]
    name = companion_name(cluster.namespace, key_id)
    secret = get_companion(cluster.system_namespace, cluster.namespace, key_id)
    assert secret is not None, f"no companion Secret {name} in {cluster.system_namespace}"
    assert secret.get("type") == COMPANION_SECRET_TYPE, secret.get("type")
    labels = secret["metadata"].get("labels") or {}
    assert labels.get(MANAGED_BY_LABEL) == "coffer", labels
    assert labels.get(KEY_ID_LABEL) == key_id, labels
    assert labels.get(NAMESPACE_LABEL) == cluster.namespace, labels
    # No owner reference: no deletion in the user's namespace may reach the material.
    assert not secret["metadata"].get("ownerReferences"), secret["metadata"].get("ownerReferences")
    annotations = secret["metadata"].get("annotations") or {}
    assert annotations.get(KMSKEY_NAME_ANNOTATION) == APP_KEY, annotations
    assert annotations.get(KMSKEY_UID_ANNOTATION) == obj["metadata"]["uid"], annotations
    in_user_namespace = kubectl("get", "secrets", "-n", cluster.namespace, "-o", "name").stdout
    assert key_id not in in_user_namespace, in_user_namespace

    data = secret.get("data") or {}
    assert data, "companion Secret has no data"
    assert all(re.fullmatch(r"v[1-9][0-9]*", name) for name in data), sorted(data)
    assert set(data) == {f"v{version}" for version in version_ids(obj)}, (sorted(data), version_ids(obj))
    for name, value in data.items():
        blob = unb64(value)
        assert len(blob) > 64, f"{name}: {len(blob)} bytes is too short for a wrapped key version"

    annotation = (secret["metadata"].get("annotations") or {}).get(KEY_RECORD_ANNOTATION)
    assert annotation, f"no {KEY_RECORD_ANNOTATION} annotation: {secret['metadata'].get('annotations')}"
    record = json.loads(annotation)
    assert record.get("keyId") == key_id, record
    for value in data.values():
        assert value not in annotation, "the key record annotation repeats wrapped material"


def test_key_usable_by_alias_id_and_arn(cluster, app_key_ready):
    status = app_key_ready["status"]
    token = cluster.token("e2e-app")
    for key in (f"alias/{APP_ALIAS}", status["keyId"], status["arn"]):
        plaintext = f"identifier {key}".encode()
        out = cluster.api.encrypt(key, plaintext, token)
        assert out["KeyId"] == status["arn"], out
        assert cluster.api.decrypt(out["CiphertextBlob"], token) == plaintext
        assert cluster.api.decrypt(out["CiphertextBlob"], token, key_id=key) == plaintext
        meta = cluster.api.describe(key, token)
        assert meta["KeyId"] == status["keyId"] and meta["Arn"] == status["arn"], meta
        assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True, meta


def test_no_plaintext_in_cluster_objects_events_or_log(cluster, app_key_ready):
    token = cluster.token("e2e-app")
    marker = f"coffer-e2e-plaintext-{uuid.uuid4().hex}".encode()
    cluster.api.encrypt(f"alias/{APP_ALIAS}", marker, token)
    data_key = cluster.api.ok("GenerateDataKey", {"KeyId": f"alias/{APP_ALIAS}", "KeySpec": "AES_256"}, token)
    data_key_plain = unb64(data_key["Plaintext"])
    secrets = [marker, data_key_plain]
    needles = {
        "plaintext": marker.decode(),
        "plaintext, base64": b64(marker),
        "plaintext, hex": marker.hex(),
        "data key, base64": b64(data_key_plain),
        "data key, hex": data_key_plain.hex(),
    }
    dumps = {
        "kubectl get kmskey,secret": kubectl("get", "kmskeys.coffer.dev,secrets", "-n", cluster.namespace,
                                             "-o", "json").stdout,
        "events": kubectl("get", "events", "-n", cluster.namespace, "-o", "json").stdout,
        "controller log": cluster.controller.log_text(),
    }
    for where, text in dumps.items():
        for what, needle in needles.items():
            assert needle not in text, f"{what} found in {where}"
    companion = get_companion(cluster.system_namespace, cluster.namespace, app_key_ready["status"]["keyId"])
    for name, value in (companion.get("data") or {}).items():
        blob = unb64(value)
        for secret in secrets:
            assert secret not in blob and blob != secret, f"companion Secret {name} contains a plaintext"


def test_disable_and_enable_with_kubectl(cluster, app_key_ready):
    namespace = cluster.namespace
    token = cluster.token("e2e-app")
    key_id = app_key_ready["status"]["keyId"]
    before = cluster.api.encrypt(key_id, b"before disabling", token)["CiphertextBlob"]
    patch_enabled(namespace, APP_KEY, False)
    try:
        wait_for_key_state(namespace, APP_KEY, "Disabled")
        cluster.api.error("Encrypt", {"KeyId": f"alias/{APP_ALIAS}", "Plaintext": b64(b"x")}, token,
                          "DisabledException")
        meta = cluster.api.describe(key_id, token)
        assert meta["KeyState"] == "Disabled" and meta["Enabled"] is False, meta
        wait_for_event(namespace, APP_KEY, "Disabled")
    finally:
        patch_enabled(namespace, APP_KEY, True)
    obj = wait_for_key_state(namespace, APP_KEY, "Enabled")
    assert is_ready(obj), obj.get("status")
    assert cluster.api.decrypt(before, token) == b"before disabling"
    after = cluster.api.encrypt(key_id, b"after enabling", token)["CiphertextBlob"]
    assert cluster.api.decrypt(after, token) == b"after enabling"
    wait_for_event(namespace, APP_KEY, "Enabled")


def test_rotate_on_demand(cluster, app_key_ready):
    namespace = cluster.namespace
    key_id = app_key_ready["status"]["keyId"]
    count = len(version_ids(app_key_ready))
    old = cluster.api.encrypt(key_id, b"before rotation", cluster.admin)["CiphertextBlob"]
    cluster.api.error("RotateKeyOnDemand", {"KeyId": key_id}, cluster.token("e2e-app"), "AccessDeniedException")
    cluster.api.ok("RotateKeyOnDemand", {"KeyId": key_id}, cluster.admin)
    obj = wait_for_kmskey(
        namespace, APP_KEY, f"has {count + 1} versions in status.versions",
        lambda o: len(version_ids(o)) == count + 1 and o["status"].get("currentVersion") == str(count + 1),
    )
    assert version_ids(obj) == [str(n) for n in range(1, count + 2)], obj["status"]
    wait_until(
        f"the companion Secret holds v{count + 1}",
        lambda: sorted((get_companion(cluster.system_namespace, namespace, key_id) or {}).get("data") or {}),
        lambda names: f"v{count + 1}" in names,
    )
    assert cluster.api.decrypt(old, cluster.admin) == b"before rotation"
    new = cluster.api.encrypt(key_id, b"after rotation", cluster.admin)["CiphertextBlob"]
    assert new != old
    assert cluster.api.decrypt(new, cluster.admin) == b"after rotation"
    wait_for_event(namespace, APP_KEY, "Rotated")


def test_events_have_known_reasons(cluster, app_key_ready):
    reasons = wait_for_event(cluster.namespace, APP_KEY, "Created")
    unknown = set(reasons) - KNOWN_EVENT_REASONS
    assert not unknown, f"Event reasons outside {sorted(KNOWN_EVENT_REASONS)}: {sorted(unknown)}"


def test_delete_with_kubectl_then_cancel_by_reapplying(cluster, app_key_ready):
    namespace = cluster.namespace
    key_id = app_key_ready["status"]["keyId"]
    admin = cluster.admin
    ciphertext = cluster.api.encrypt(key_id, b"survives a cancelled deletion", admin)["CiphertextBlob"]
    kubectl("delete", "kmskeys.coffer.dev", APP_KEY, "-n", namespace, "--wait=false")
    try:
        wait_until(
            f"KmsKey {namespace}/{APP_KEY} is gone after kubectl delete",
            lambda: get_kmskey(namespace, APP_KEY),
            lambda obj: obj is None,
        )
        secret = get_companion(cluster.system_namespace, namespace, key_id)
        assert secret is not None, "the companion Secret went with the KmsKey; the key must stay recoverable"
        annotations = secret["metadata"].get("annotations") or {}
        assert annotations.get(KMSKEY_NAME_ANNOTATION) == APP_KEY, annotations

        meta = cluster.api.describe(key_id, admin)
        assert meta["KeyState"] == "PendingDeletion", meta
        expected = time.time() + 30 * DAY
        assert abs(float(meta["DeletionDate"]) - expected) < DAY, (meta["DeletionDate"], expected)
        cluster.api.error("Decrypt", {"CiphertextBlob": ciphertext}, admin, "KMSInvalidStateException")
        wait_for_event(namespace, APP_KEY, "DeletionScheduled")
    finally:
        kubectl("apply", "-f", "-", input=json.dumps(app_key_manifest(namespace)))

    obj = wait_for_kmskey(
        namespace, APP_KEY, f"is Ready and Enabled again with the same keyId {key_id}",
        lambda o: is_ready(o) and o["status"].get("keyState") == "Enabled",
    )
    assert obj["status"]["keyId"] == key_id, obj["status"]
    assert (obj["metadata"].get("labels") or {}).get(KEY_ID_LABEL) == key_id, obj["metadata"]
    assert cluster.api.describe(key_id, admin)["KeyState"] == "Enabled"
    assert cluster.api.decrypt(ciphertext, admin) == b"survives a cancelled deletion"
    wait_for_event(namespace, APP_KEY, "DeletionCancelled")
    uid = obj["metadata"]["uid"]
    wait_until(
        "the companion Secret names the re-created KmsKey",
        lambda: (get_companion(cluster.system_namespace, namespace, key_id) or {})
        .get("metadata", {}).get("annotations", {}).get(KMSKEY_UID_ANNOTATION),
        lambda recorded: recorded == uid,
    )


def test_delete_with_kubectl_then_cancel_through_the_api(cluster):
    namespace = cluster.namespace
    name = "e2e-cancel-api"
    admin = cluster.admin
    kubectl("apply", "-f", "-", input=json.dumps(kmskey_manifest(name, namespace, description="e2e cancel")))
    obj = wait_for_kmskey(namespace, name, "is Ready", is_ready, timeout=60)
    key_id = obj["status"]["keyId"]
    ciphertext = cluster.api.encrypt(key_id, b"cancelled through the API", admin)["CiphertextBlob"]

    kubectl("delete", "kmskeys.coffer.dev", name, "-n", namespace, "--wait=false")
    wait_until(f"KmsKey {namespace}/{name} is gone", lambda: get_kmskey(namespace, name), lambda o: o is None)
    assert cluster.api.describe(key_id, admin)["KeyState"] == "PendingDeletion"

    out = cluster.api.ok("CancelKeyDeletion", {"KeyId": key_id}, admin)
    assert out.get("KeyId", "").endswith(key_id), out
    obj = wait_for_kmskey(
        namespace, name, "reappears with spec.enabled false and keyState Disabled",
        lambda o: o["spec"].get("enabled") is False
        and (o.get("status") or {}).get("keyId") == key_id
        and o["status"].get("keyState") == "Disabled",
    )
    assert (obj["metadata"].get("labels") or {}).get(KEY_ID_LABEL) == key_id, obj["metadata"]
    meta = cluster.api.describe(key_id, admin)
    assert meta["KeyState"] == "Disabled" and meta["Enabled"] is False, meta

    patch_enabled(namespace, name, True)
    wait_for_key_state(namespace, name, "Enabled")
    assert cluster.api.decrypt(ciphertext, admin) == b"cancelled through the API"
    wait_for_event(namespace, name, "DeletionCancelled")
