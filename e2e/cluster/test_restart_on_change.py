"""`coffer.dev/restart-on-change` on the real control plane: a workload naming secrets and
parameters is first only recorded, then rolled (its pod template patched) exactly once for a
burst of changes, and never for a pinned reference. kube-controller-manager runs, so a patched
Deployment makes a new ReplicaSet, as it would in any cluster."""

from __future__ import annotations

import json
import time
import uuid

from cluster_helpers import events_for, kubectl, kubectl_json, wait_until
from conftest import RESTART_DEBOUNCE_SECONDS

ANNOTATION = "coffer.dev/restart-on-change"
VERSIONS = "coffer.dev/restart-on-change-versions"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def workload(kind: str, name: str, namespace: str, follows: str) -> dict:
    labels = {"app": name}
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }
    spec: dict = {"selector": {"matchLabels": labels}, "template": template}
    if kind == "Deployment":
        spec["replicas"] = 1
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "annotations": {ANNOTATION: follows}},
        "spec": spec,
    }


def create(manifest: dict) -> None:
    kubectl("create", "-f", "-", input=json.dumps(manifest))


def get(kind: str, namespace: str, name: str) -> dict:
    return kubectl_json("get", kind.lower(), name, "-n", namespace)


def recorded(obj: dict) -> str | None:
    return (obj["metadata"].get("annotations") or {}).get(VERSIONS)


def template_digest(obj: dict) -> str | None:
    return ((obj["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(VERSIONS)


def wait_recorded(kind: str, namespace: str, name: str) -> dict:
    return wait_until(
        f"{kind} {name} has its versions recorded",
        lambda: get(kind, namespace, name),
        lambda obj: recorded(obj) is not None,
        timeout=30, interval=0.2,
    )


def test_a_burst_of_five_changes_rolls_a_deployment_exactly_once(secrets_ns):
    name = unique("rolled")
    client = secrets_ns.client()
    client.create_secret(Name=name, SecretString="v0")
    create(workload("Deployment", name, secrets_ns.name, f"secret/{name}"))

    # First sight: recorded on the metadata, the pod template left alone (no rollout).
    first = wait_recorded("Deployment", secrets_ns.name, name)
    generation = first["metadata"]["generation"]
    assert template_digest(first) is None, first["spec"]["template"]

    # Five new versions within about a second.
    started = time.monotonic()
    for index in range(5):
        client.put_secret_value(SecretId=name, SecretString=f"v{index + 1}")
        time.sleep(0.2)
    last_put = time.monotonic()

    rolled = wait_until(
        f"Deployment {name}'s pod template names the new versions",
        lambda: get("Deployment", secrets_ns.name, name),
        lambda obj: template_digest(obj) is not None,
        timeout=RESTART_DEBOUNCE_SECONDS + 30, interval=0.1,
    )
    rolled_at = time.monotonic()
    # Long enough for a second rollout, were there to be one.
    time.sleep(RESTART_DEBOUNCE_SECONDS * 2 + 1)
    final = get("Deployment", secrets_ns.name, name)
    assert final["metadata"]["generation"] == generation + 1, (
        f"the pod template changed {final['metadata']['generation'] - generation} times for 5 changes")
    assert template_digest(final) == recorded(final) == template_digest(rolled)
    assert recorded(final) != recorded(first)
    reasons = [event.get("reason") for event in events_for(secrets_ns.name, "Deployment", name)]
    assert reasons.count("RestartedOnChange") == 1, reasons
    # kube-controller-manager rolled it out: a second ReplicaSet.
    wait_until(
        f"Deployment {name} has a second ReplicaSet",
        lambda: kubectl_json("get", "replicasets", "-n", secrets_ns.name, "-l", f"app={name}")["items"],
        lambda items: len(items) == 2,
        timeout=30,
    )
    print(f"\n[figure] restart on change: 5 PutSecretValue in {last_put - started:.1f} s, one rollout "
          f"{(rolled_at - last_put) * 1000:.0f} ms after the last (debounce {RESTART_DEBOUNCE_SECONDS} s)")

    # Nothing new: a restarted controller or a resync would not roll it again (same digest).
    client.update_secret(SecretId=name, Description="metadata only")
    time.sleep(RESTART_DEBOUNCE_SECONDS + 2)
    assert get("Deployment", secrets_ns.name, name)["metadata"]["generation"] == generation + 1


def test_a_statefulset_follows_a_parameter_and_a_pinned_reference_is_refused(secrets_ns, params_ns):
    name = unique("follows")
    parameter = f"/e2e/{name}/url"
    ssm = params_ns.client()
    ssm.put_parameter(Name=parameter, Value="https://one.example", Type="String")
    create(workload("StatefulSet", name, params_ns.name, f"parameter/{parameter}"))
    first = wait_recorded("StatefulSet", params_ns.name, name)
    generation = first["metadata"]["generation"]
    ssm.put_parameter(Name=parameter, Value="https://two.example", Type="String", Overwrite=True)
    wait_until(
        f"StatefulSet {name} is rolled",
        lambda: get("StatefulSet", params_ns.name, name),
        lambda obj: template_digest(obj) is not None,
        timeout=RESTART_DEBOUNCE_SECONDS + 30, interval=0.2,
    )
    assert get("StatefulSet", params_ns.name, name)["metadata"]["generation"] == generation + 1

    # Pinned: a Warning says so, and a change of the secret rolls nothing.
    pinned = unique("pinned")
    client = secrets_ns.client()
    client.create_secret(Name=pinned, SecretString="a")
    create(workload("DaemonSet", pinned, secrets_ns.name, f"secret/{pinned}?stage=AWSPREVIOUS"))
    event = wait_until(
        f"a RestartOnChangeIgnored Event on DaemonSet {pinned}",
        lambda: [e for e in events_for(secrets_ns.name, "DaemonSet", pinned)
                 if e.get("reason") == "RestartOnChangeIgnored"],
        lambda events: len(events) == 1,
        timeout=30,
    )[0]
    assert "pinned" in (event.get("note") or event.get("message") or ""), event
    before = get("DaemonSet", secrets_ns.name, pinned)["metadata"]["generation"]
    client.put_secret_value(SecretId=pinned, SecretString="b")
    time.sleep(RESTART_DEBOUNCE_SECONDS + 2)
    after = get("DaemonSet", secrets_ns.name, pinned)
    assert after["metadata"]["generation"] == before and template_digest(after) is None
