#!/usr/bin/env python3
"""`make bench-cluster`: `coffer controller` against a real API server with many KmsKeys applied at
once.

For each size N (default 1,000 and 5,000), in fresh namespaces, with a fresh release controller:
apply N KmsKeys in one `kubectl apply --server-side` of a List, as a user would, then report

- seconds from the end of the apply until all N are Ready (timed by a watch, not by polling);
- the controller's peak RSS (VmHWM), beside its RSS when idle before the apply;
- API requests per reconcile and per key, from the controller's own counters
  (`coffer_kubernetes_requests_total`, `coffer_controller_reconciles_total`);
- writes to the API server and reconciles over QUIET_SECONDS (default 60) once settled
  (expected: zero).

The API server is the one KUBECONFIG names, else the repo's own control plane, started for the
run (e2e/controlplane). Run through e2e/python.sh (it needs `requests`):

    e2e/python.sh benches/cluster.py [--sizes 1000,5000] [--quiet-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "e2e" / "controlplane"))
import controlplane  # noqa: E402

READY_TIMEOUT_SECONDS = 900


def kubectl(*args: str, input: str | None = None, timeout: float = 900) -> str:
    result = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:4])}... failed: {result.stderr.strip()}")
    return result.stdout


def free_port() -> int:
    return controlplane.free_port()


class KubectlProxy:
    """`kubectl proxy` on a free port: plain HTTP to the API server, whatever the kubeconfig's
    authentication is."""

    def __init__(self) -> None:
        port = free_port()
        self.process = subprocess.Popen(
            ["kubectl", "proxy", f"--port={port}", "--address=127.0.0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("kubectl proxy did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class ReadyWatch(threading.Thread):
    """Watches the KmsKeys of a namespace and notes when `expected` of them are Ready."""

    def __init__(self, proxy: str, namespace: str, expected: int, plural: str = "kmskeys") -> None:
        super().__init__(daemon=True)
        self.url = f"{proxy}/apis/coffer.dev/v1alpha1/namespaces/{namespace}/{plural}"
        self.expected = expected
        self.ready: set[str] = set()
        self.all_ready_at: float | None = None
        self.done = threading.Event()
        self.started_watching = threading.Event()
        self.error: str | None = None

    @staticmethod
    def is_ready(obj: dict) -> bool:
        status = obj.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        made = bool(status.get("keyId")) or bool(status.get("version"))
        return ready and made and status.get("observedGeneration") == obj["metadata"].get("generation")

    def run(self) -> None:
        try:
            # A watch may end (a timeout, or "too old" when thousands of changes outrun the
            # watch cache): list again and watch on from there.
            while not self.watch_once():
                pass
        except Exception as error:  # reported by the main thread
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.started_watching.set()
            self.done.set()

    def note(self, obj: dict) -> bool:
        """Takes in one object; whether all expected are now Ready."""
        name = (obj.get("metadata") or {}).get("name")
        if name:
            if self.is_ready(obj):
                self.ready.add(name)
            else:
                self.ready.discard(name)
        if len(self.ready) >= self.expected:
            self.all_ready_at = time.monotonic()
            return True
        return False

    def watch_once(self) -> bool:
        listed = requests.get(self.url, timeout=120).json()
        self.ready.clear()
        if any([self.note(obj) for obj in listed.get("items") or []]):
            return True
        version = listed["metadata"]["resourceVersion"]
        with requests.get(self.url, params={"watch": "1", "resourceVersion": version,
                                            "allowWatchBookmarks": "true"},
                          stream=True, timeout=(10, READY_TIMEOUT_SECONDS)) as response:
            self.started_watching.set()
            # chunk_size=None: hand over each event as it arrives, never waiting for a
            # buffer to fill behind the last one.
            for line in response.iter_lines(chunk_size=None):
                if not line:
                    continue
                event = json.loads(line)
                kind = event.get("type")
                if kind == "ERROR":
                    return False
                if kind in ("ADDED", "MODIFIED") and self.note(event.get("object") or {}):
                    return True
                if kind == "DELETED":
                    self.ready.discard(((event.get("object") or {}).get("metadata") or {}).get("name"))
        return False


def metric_values(text: str) -> dict[str, float]:
    """Counters of interest from the controller's /metrics, summed by name and verb."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r'^coffer_kubernetes_requests_total\{verb="(\w+)",resource="(\w+)"\} (\S+)$', line)
        if match:
            values[f"requests.{match.group(1)}.{match.group(2)}"] = float(match.group(3))
            continue
        match = re.match(r'^coffer_controller_reconciles_total\{kind="kmskey",outcome="(\w+)"\} (\S+)$', line)
        if match:
            values[f"reconciles.{match.group(1)}"] = values.get(f"reconciles.{match.group(1)}", 0) + float(match.group(2))
    return values


WRITE_VERBS = ("create", "update", "patch", "delete")


def summarize(values: dict[str, float]) -> dict[str, float]:
    """Requests (watches aside), writes of anything but the leader's Lease, Lease writes (leader
    election renews it every few seconds, whatever else happens), and reconciles."""
    requests_total = writes = lease_writes = 0.0
    for key, value in values.items():
        if not key.startswith("requests."):
            continue
        _, verb, resource = key.split(".")
        if verb == "watch":
            continue
        requests_total += value
        if verb in WRITE_VERBS:
            if resource == "leases":
                lease_writes += value
            else:
                writes += value
    reconciles = sum(v for k, v in values.items() if k.startswith("reconciles."))
    return {"requests": requests_total, "writes": writes, "lease_writes": lease_writes,
            "reconciles": reconciles, "errors": values.get("reconciles.error", 0)}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0) for key in after}


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def kmskey_list(namespace: str, count: int) -> str:
    items = [{
        "apiVersion": "coffer.dev/v1alpha1",
        "kind": "KmsKey",
        "metadata": {"name": f"key-{index:05d}", "namespace": namespace},
        "spec": {"description": f"bench key {index}"},
    } for index in range(count)]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def parameter_list(namespace: str, count: int) -> str:
    items = [{
        "apiVersion": "coffer.dev/v1alpha1",
        "kind": "Parameter",
        "metadata": {"name": f"param-{index:05d}", "namespace": namespace},
        "spec": {"name": f"/bench/app/param-{index:05d}", "value": f"value {index}"},
    } for index in range(count)]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


KINDS = {"kmskeys": kmskey_list, "parameters": parameter_list}


def run_size(binary: str, count: int, quiet_seconds: int, workdir: Path, kind: str = "kmskeys") -> dict:
    suffix = uuid.uuid4().hex[:6]
    system, apps = f"coffer-bench-sys-{suffix}", f"coffer-bench-{suffix}"
    for namespace in (system, apps):
        kubectl("create", "namespace", namespace)
    api_port, probe_port = free_port(), free_port()
    log_path = workdir / f"controller-{count}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log_path, "wb") as log:
        controller = subprocess.Popen(
            [binary, "--log-format", "json", "controller", "--insecure-http",
             "--listen", f"127.0.0.1:{api_port}", "--probe-listen", f"127.0.0.1:{probe_port}",
             "--namespace", system, "--audit-log", "off"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    metrics_url = f"http://127.0.0.1:{probe_port}/metrics"
    proxy = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{probe_port}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if controller.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"controller not ready; see {log_path}")
            time.sleep(0.2)
        while "leading" not in log_path.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"controller never led; see {log_path}")
            time.sleep(0.2)
        time.sleep(1)
        idle_rss = rss_kib(controller.pid, "VmRSS")

        proxy = KubectlProxy()
        watch = ReadyWatch(proxy.url, apps, count, kind)
        watch.start()
        watch.started_watching.wait(60)
        manifest = workdir / f"{kind}-{count}.json"
        manifest.write_text(KINDS[kind](apps, count))
        before_values = metric_values(requests.get(metrics_url, timeout=10).text)
        before = summarize(before_values)
        apply_started = time.monotonic()
        kubectl("apply", "--server-side", "-f", str(manifest), timeout=READY_TIMEOUT_SECONDS)
        apply_ended = time.monotonic()
        if not watch.done.wait(READY_TIMEOUT_SECONDS):
            raise RuntimeError(f"only {len(watch.ready)} of {count} Ready after {READY_TIMEOUT_SECONDS}s")
        if watch.error or watch.all_ready_at is None:
            raise RuntimeError(f"watch failed: {watch.error}")
        # Let the last reconciles (woken by their own writes' echoes) finish, then stay quiet.
        time.sleep(5)
        settled_values = metric_values(requests.get(metrics_url, timeout=10).text)
        settled = summarize(settled_values)
        time.sleep(quiet_seconds)
        quiet = summarize(metric_values(requests.get(metrics_url, timeout=10).text))
        settled_rss = rss_kib(controller.pid, "VmRSS")
        work = delta(settled, before)
        idle = delta(quiet, settled)
        return {
            "kind": kind,
            "keys": count,
            "apply_seconds": apply_ended - apply_started,
            "ready_after_apply_seconds": watch.all_ready_at - apply_ended,
            "ready_after_start_seconds": watch.all_ready_at - apply_started,
            "idle_rss_mib": idle_rss / 1024,
            "peak_rss_mib": rss_kib(controller.pid, "VmHWM") / 1024,
            "settled_rss_mib": settled_rss / 1024,
            "requests": work["requests"],
            "reconciles": work["reconciles"],
            "reconcile_errors": work["errors"],
            "requests_per_reconcile": work["requests"] / max(work["reconciles"], 1),
            "requests_per_key": work["requests"] / count,
            "quiet_seconds": quiet_seconds,
            "quiet_writes": idle["writes"],
            "quiet_lease_writes": idle["lease_writes"],
            "quiet_reconciles": idle["reconciles"],
            "requests_by_verb_and_resource": {
                key: value for key, value in delta(settled_values, before_values).items()
                if key.startswith("requests.") and value
            },
        }
    finally:
        if proxy is not None:
            proxy.stop()
        controller.terminate()
        try:
            controller.wait(timeout=30)
        except subprocess.TimeoutExpired:
            controller.kill()
        # Wait until they are gone: the next size's controller would reconcile what is left.
        subprocess.run(["kubectl", "delete", "namespace", apps, system, "--wait=true", "--timeout=600s"],
                       capture_output=True, timeout=660)


def report(results: list[dict], server_version: str) -> None:
    kinds = sorted({r["kind"] for r in results})
    print(f"\ncoffer controller, {' and '.join(kinds)} applied at once (kube-apiserver {server_version}, same machine)\n")
    header = ("| objects | apply (s) | all Ready after apply (s) | after its start (s) | RSS idle / peak / settled (MiB) | reconciles "
              "| API requests per reconcile | per key | writes in quiet period (Lease renewals aside) "
              "| Lease renewals | reconciles in quiet period |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in results:
        print(f"| {r['keys']:,} | {r['apply_seconds']:.1f} | {r['ready_after_apply_seconds']:.2f} "
              f"| {r['ready_after_start_seconds']:.1f} "
              f"| {r['idle_rss_mib']:.0f} / {r['peak_rss_mib']:.0f} / {r['settled_rss_mib']:.0f} | {r['reconciles']:.0f} "
              f"({r['reconcile_errors']:.0f} failed) | {r['requests_per_reconcile']:.2f} "
              f"| {r['requests_per_key']:.2f} | {r['quiet_writes']:.0f} in {r['quiet_seconds']} s "
              f"| {r['quiet_lease_writes']:.0f} | {r['quiet_reconciles']:.0f} |")
    if len(results) > 1:
        small, large = results[0], results[-1]
        scale = large["keys"] / small["keys"]
        print(f"\n{large['keys']:,} keys against {small['keys']:,} ({scale:.0f}x): apply start to all Ready "
              f"{large['ready_after_start_seconds'] / small['ready_after_start_seconds']:.1f}x, "
              f"kubectl apply alone {large['apply_seconds'] / small['apply_seconds']:.1f}x, "
              f"peak RSS {large['peak_rss_mib'] / small['peak_rss_mib']:.1f}x, "
              f"requests per key {large['requests_per_key'] / small['requests_per_key']:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=os.environ.get("BENCH_CLUSTER_SIZES", "1000,5000"))
    parser.add_argument("--kind", choices=sorted(KINDS), default=os.environ.get("BENCH_CLUSTER_KIND", "kmskeys"),
                        help="what to apply: KmsKeys (the default) or Parameters (String values)")
    parser.add_argument("--quiet-seconds", type=int, default=int(os.environ.get("BENCH_CLUSTER_QUIET_SECONDS", "60")))
    parser.add_argument("--binary", default=os.environ.get("COFFER_BIN", str(REPO_ROOT / "target/release/coffer")))
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size]

    state = None
    if not os.environ.get("KUBECONFIG"):
        state = REPO_ROOT / "build" / "bench-cluster"
        env = controlplane.up(state, controlplane.assets())
        os.environ.update(env)
        os.environ["PATH"] = f"{env[controlplane.ASSETS_ENV]}{os.pathsep}{os.environ['PATH']}"
    try:
        kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        kubectl("wait", "--for", "condition=Established", "crd/kmskeys.coffer.dev", "--timeout=60s")
        server_version = json.loads(kubectl("version", "-o", "json")).get("serverVersion", {}).get("gitVersion", "?")
        results = []
        with tempfile.TemporaryDirectory(prefix="coffer-bench-cluster-") as workdir:
            for size in sizes:
                print(f"bench-cluster: {size:,} KmsKeys...", file=sys.stderr, flush=True)
                results.append(run_size(args.binary, size, args.quiet_seconds, Path(workdir), args.kind))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        report(results, server_version)
    finally:
        if state is not None:
            controlplane.down(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
