#!/usr/bin/env python3
"""`make bench-cluster`, KMS plugin part: what `coffer kms-plugin` adds to kube-apiserver's writes.

In one run, on this machine, three fresh control planes of the repo's own (e2e/controlplane), one
after the other: with no encryption provider (Secrets stored in plaintext), then with an
EncryptionConfiguration that seals Secrets with `coffer kms-plugin`, then without again. Each gets WARM_UP Secrets, then
COUNT (default 1,000) Secrets created one at a time by POST over one keep-alive connection; the
latency of each create is timed. Reported: total seconds, mean, p50, p99, and the difference
between on and the mean of the two off runs. Run through e2e/python.sh (it needs `requests`):

    e2e/python.sh benches/kms_plugin.py [--count 1000]

The plugin binary is $COFFER_BIN, else target/release/coffer. Output: a table, then the figures
as one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "e2e" / "controlplane"))
import controlplane  # noqa: E402

WARM_UP = 50
DEFAULT_ENDPOINT = "unix:///var/run/coffer/kms-plugin.sock"


def create_secrets(state: Path, server: str, count: int, prefix: str) -> list[float]:
    """Creates `count` Secrets in `default`, one request at a time; the seconds each took."""
    pki = state / "pki"
    session = requests.Session()
    session.cert = (str(pki / "admin.crt"), str(pki / "admin.key"))
    url = f"{server}/api/v1/namespaces/default/secrets"
    latencies = []
    for index in range(count):
        body = {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": f"{prefix}-{index}"},
                "data": {"value": "c2VjcmV0LXZhbHVlLWZvci10aGUtYmVuY2g="}}
        started = time.perf_counter()
        # verify per request: an environment CA bundle would override the session's.
        response = session.post(url, json=body, timeout=30, verify=str(pki / "ca.crt"))
        latencies.append(time.perf_counter() - started)
        if response.status_code != 201:
            raise RuntimeError(f"create {prefix}-{index}: HTTP {response.status_code}: {response.text[:300]}")
    return latencies


def measure(state: Path, bin_dir: Path, count: int, extra_args: list[str]) -> dict:
    env = controlplane.up(state, bin_dir, extra_args)
    try:
        server = env["COFFER_TEST_APISERVER"]
        create_secrets(state, server, WARM_UP, "warm")
        latencies = create_secrets(state, server, count, "bench")
    finally:
        controlplane.down(state)
    ordered = sorted(latencies)
    return {
        "total_s": round(sum(latencies), 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    binary = os.environ.get("COFFER_BIN") or str(REPO_ROOT / "target" / "release" / "coffer")
    bin_dir = controlplane.assets()
    with tempfile.TemporaryDirectory(prefix="kmsb") as work:
        base = Path(work)
        # Off before and after on, so that whatever drifts over the run (the machine's other
        # load, caches) weighs on both sides.
        off_before = measure(base / "off-1", bin_dir, args.count, [])

        socket = base / "kms.sock"
        config = base / "encryption-config.yaml"
        template = (REPO_ROOT / "deploy" / "encryption-config.yaml").read_text()
        config.write_text(template.replace(DEFAULT_ENDPOINT, f"unix://{socket}"))
        log = open(base / "kms-plugin.log", "wb")
        plugin = subprocess.Popen(
            [binary, "kms-plugin", "--socket", str(socket), "--data-dir", str(base / "plugin-data")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while not socket.is_socket():
                if plugin.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("kms-plugin did not start: " + (base / "kms-plugin.log").read_text())
                time.sleep(0.05)
            on = measure(base / "on", bin_dir, args.count, ["--encryption-provider-config", str(config)])
        finally:
            plugin.send_signal(signal.SIGTERM)
            plugin.wait(timeout=30)
            log.close()
        off_after = measure(base / "off-2", bin_dir, args.count, [])

    print(f"Creating {args.count} Secrets one at a time through kube-apiserver ({WARM_UP} warm-up first):")
    print(f"{'':>12} {'total s':>9} {'mean ms':>9} {'p50 ms':>9} {'p99 ms':>9}")
    off = {key: round((off_before[key] + off_after[key]) / 2, 3) for key in off_before}
    for name, figures in (("off, before", off_before), ("plugin on", on), ("off, after", off_after)):
        print(f"{name:>12} {figures['total_s']:>9} {figures['mean_ms']:>9} {figures['p50_ms']:>9} {figures['p99_ms']:>9}")
    added = round(on["mean_ms"] - off["mean_ms"], 3)
    print(f"added by the plugin: {added} ms per Secret on average (against the mean of both off runs)")
    print(json.dumps({"bench": "kms_plugin_apiserver", "count": args.count, "run": uuid.uuid4().hex[:8],
                      "off_before": off_before, "on": on, "off_after": off_after, "added_mean_ms": added}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
