#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback, for Coffer's tests: etcd, kube-apiserver and
kube-controller-manager, built from their Go modules and started the way controller-runtime's
envtest starts them, but with what a real cluster has and envtest leaves out: RBAC, a
ServiceAccount issuer with signing keys (TokenRequest and TokenReview), and the
controller-manager's garbage collector, namespace and ServiceAccount controllers.

    controlplane.py assets [--no-build]   # print the folder of binaries, building them if needed
    controlplane.py up DIR                # start; writes DIR/kubeconfig and DIR/env
    controlplane.py down DIR              # stop what `up DIR` started
    controlplane.py run DIR -- CMD ...    # up, run CMD with KUBECONFIG set, down; CMD's status

Binaries: the folder named by COFFER_K8S_ASSETS (as KUBEBUILDER_ASSETS names envtest's), else
the build cache ($COFFER_CACHE_DIR, default ~/.cache/coffer, under k8s/<versions>), built there
by `go build` from the pinned modules beside this file (kubernetes/, etcd/, helm/) when absent.
Standard library and the openssl command only: nothing to install.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ASSETS_ENV = "COFFER_K8S_ASSETS"

# Each binary: the module folder beside this file, and the Go package to build.
BINARIES = {
    "kube-apiserver": ("kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver"),
    "kube-controller-manager": ("kubernetes", "k8s.io/kubernetes/cmd/kube-controller-manager"),
    "kubectl": ("kubernetes", "k8s.io/kubernetes/cmd/kubectl"),
    "etcd": ("etcd", "go.etcd.io/etcd/server/v3"),
    "etcdctl": ("etcd", "go.etcd.io/etcd/etcdctl/v3"),
    "helm": ("helm", "helm.sh/helm/v3/cmd/helm"),
}
REQUIRED = ("kube-apiserver", "kube-controller-manager", "kubectl", "etcd")
# The module each folder pins, for the cache key and for `version`.
PINNED = {
    "kubernetes": "k8s.io/kubernetes",
    "etcd": "go.etcd.io/etcd/server/v3",
    "helm": "helm.sh/helm/v3",
}

# Bump when `build` changes how binaries are made, so cached ones are made again.
BUILD_RECIPE = "2"

SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT_SECONDS = 180


class ControlPlaneError(Exception):
    pass


def log(message: str) -> None:
    print(f"controlplane: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------------


def pinned_version(folder: str) -> str:
    text = (HERE / folder / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(PINNED[folder])}\s+(v\S+)", text, re.M)
    if not match:
        raise ControlPlaneError(f"{folder}/go.mod does not pin {PINNED[folder]}")
    return match.group(1)


def cache_key() -> str:
    """Versions for people, plus a hash of the module files, so that any change of a pin or of
    go.sum builds again."""
    digest = hashlib.sha256(BUILD_RECIPE.encode())
    for folder in sorted(PINNED):
        for name in ("go.mod", "go.sum"):
            digest.update((HERE / folder / name).read_bytes())
    versions = "_".join(f"{folder}-{pinned_version(folder)}" for folder in sorted(PINNED))
    return f"{versions}_{digest.hexdigest()[:12]}"


def cache_root() -> Path:
    base = os.environ.get("COFFER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "coffer"
    )
    return Path(base) / "k8s"


def missing_in(folder: Path) -> list[str]:
    return [name for name in REQUIRED if not os.access(folder / name, os.X_OK)]


def version_flags(folder: str) -> str:
    """What the projects' own release builds stamp into their binaries with -X."""
    version = pinned_version(folder)
    if folder == "kubernetes":
        major, minor = version.lstrip("v").split(".")[:2]
        stamps = {"gitVersion": version, "gitMajor": major, "gitMinor": minor,
                  "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z"}
        return " ".join(f"-X {package}.{name}={value}"
                        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
                        for name, value in stamps.items())
    if folder == "helm":
        return f"-X helm.sh/helm/v3/internal/version.version={version} -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    return ""


def build(target: Path) -> None:
    """Builds every binary into `target`, through a temporary folder renamed at the end, so a
    build cut short never leaves a folder that looks complete."""
    go = shutil.which("go")
    if go is None:
        raise ControlPlaneError("no `go` on PATH to build the control plane with")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        for name, (folder, package) in BINARIES.items():
            started = time.monotonic()
            log(f"building {name} ({package}); the first build takes minutes, later runs reuse it")
            subprocess.run(
                [go, "build", "-trimpath", f"-ldflags=-s -w {version_flags(folder)}",
                 "-o", str(staging / name), package],
                cwd=HERE / folder,
                check=True,
                env={**os.environ, "CGO_ENABLED": "0",
                     "GOFLAGS": f"{os.environ.get('GOFLAGS', '')} -mod=readonly".strip()},
            )
            log(f"built {name} in {time.monotonic() - started:.0f}s")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except subprocess.CalledProcessError as error:
        raise ControlPlaneError(f"go build failed: {error}") from error
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def assets(allow_build: bool = True) -> Path:
    """The folder of binaries: COFFER_K8S_ASSETS, else the build cache (built when absent)."""
    named = os.environ.get(ASSETS_ENV)
    if named:
        folder = Path(named)
        missing = missing_in(folder)
        if missing:
            raise ControlPlaneError(f"{ASSETS_ENV}={named} lacks {', '.join(missing)}")
        return folder
    folder = cache_root() / cache_key()
    if not missing_in(folder):
        return folder
    if not allow_build:
        raise ControlPlaneError(f"no binaries in {folder} and building is off")
    build(folder)
    return folder


# --------------------------------------------------------------------------------------------
# Certificates and kubeconfigs (the openssl command)
# --------------------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
            "-subj", "/CN=coffer-test-ca", cwd=pki)
    leaves = {
        # name: (subject, extensions)
        "apiserver": ("/CN=kube-apiserver",
                      "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
                      "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
                      "DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth"),
        "admin": ("/O=system:masters/CN=coffer-test-admin", "extendedKeyUsage=clientAuth"),
        "controller-manager": ("/CN=system:kube-controller-manager", "extendedKeyUsage=clientAuth"),
    }
    for name, (subject, extensions) in leaves.items():
        (pki / f"{name}.ext").write_text(extensions + "\n")
        openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", subject, cwd=pki)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "3650", "-out", f"{name}.crt",
                "-extfile", f"{name}.ext", cwd=pki)
    # ServiceAccount token signing keys.
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", "sa.key", cwd=pki)
    openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        key.chmod(0o600)


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    def data(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "coffer-test", "cluster": {
            "server": server, "certificate-authority-data": data("ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": data(f"{user}.crt"),
            "client-key-data": data(f"{user}.key")}}],
        "contexts": [{"name": "coffer-test", "context": {"cluster": "coffer-test", "user": user}}],
        "current-context": "coffer-test",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(state: Path, name: str, argv: list[str]) -> int:
    logs = state / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pids = read_pids(state)
    pids[name] = process.pid
    (state / "pids.json").write_text(json.dumps(pids))
    return process.pid


def read_pids(state: Path) -> dict[str, int]:
    try:
        return json.loads((state / "pids.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process counts as gone.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def log_tail(state: Path, name: str, lines: int = 30) -> str:
    try:
        text = (state / "logs" / f"{name}.log").read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def stop_all(state: Path) -> None:
    pids = read_pids(state)
    # The controller-manager first, etcd last.
    for name in reversed(list(pids)):
        pid = pids[name]
        if not alive(pid):
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 15
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            log(f"{name} (pid {pid}) ignored SIGTERM; killing it")
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    (state / "pids.json").unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Up and down
# --------------------------------------------------------------------------------------------


def admin_context(pki: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return context


def api_get(server: str, path: str, context: ssl.SSLContext) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(server + path, context=context, timeout=5) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error)


def wait_for(what: str, check, state: Path, pids: dict[str, int]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    last = ""
    while time.monotonic() < deadline:
        for name, pid in pids.items():
            if not alive(pid):
                raise ControlPlaneError(f"{name} exited while waiting for {what}:\n{log_tail(state, name)}")
        ok, last = check()
        if ok:
            return
        time.sleep(0.25)
    tails = "\n".join(f"--- {name} ---\n{log_tail(state, name)}" for name in pids)
    raise ControlPlaneError(f"timed out waiting for {what} (last: {last})\n{tails}")


def up(state: Path, bin_dir: Path, extra_apiserver_args: list[str] | None = None) -> dict[str, str]:
    if read_pids(state):
        raise ControlPlaneError(f"{state} already has a running control plane; `down` it first")
    state.mkdir(parents=True, exist_ok=True)
    for stale in ("etcd", "pki"):
        shutil.rmtree(state / stale, ignore_errors=True)
    pki = state / "pki"
    make_pki(pki)

    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    server = f"https://127.0.0.1:{api_port}"
    pids: dict[str, int] = {}
    try:
        pids["etcd"] = start(state, "etcd", [
            str(bin_dir / "etcd"),
            "--name", "coffer-test",
            "--data-dir", str(state / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"coffer-test={peer_url}",
            # A test cluster's data is thrown away: skip fsync, as envtest does.
            "--unsafe-no-fsync",
            "--quota-backend-bytes", str(4 * 1024**3),
            "--log-level", "warn",
        ])
        wait_for("etcd", lambda: etcd_healthy(etcd_url), state, pids)

        apiserver_argv = [
            str(bin_dir / "kube-apiserver"),
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(api_port),
            "--tls-cert-file", str(pki / "apiserver.crt"),
            "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--authorization-mode", "Node,RBAC",
            "--service-account-issuer", ISSUER,
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--allow-privileged=true",
            "--profiling=false",
            *(extra_apiserver_args or []),
        ]
        # Kept for restart_apiserver.
        (state / "kube-apiserver.argv.json").write_text(json.dumps(apiserver_argv))
        pids["kube-apiserver"] = start(state, "kube-apiserver", apiserver_argv)
        context = admin_context(pki)
        wait_for("kube-apiserver /readyz", lambda: ready(server, context), state, pids)

        write_kubeconfig(state / "controller-manager.kubeconfig", server, pki, "controller-manager")
        pids["kube-controller-manager"] = start(state, "kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            "--kubeconfig", str(state / "controller-manager.kubeconfig"),
            "--use-service-account-credentials=true",
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"),
            "--controllers", "*",
            "--leader-elect=false",
            "--secure-port", "0",
            "--profiling=false",
        ])
        # The ServiceAccount controller making `default` proves the controller-manager works.
        wait_for(
            "kube-controller-manager (the ServiceAccount default/default)",
            lambda: ok_status(api_get(server, "/api/v1/namespaces/default/serviceaccounts/default", context)),
            state, pids,
        )
    except BaseException:
        stop_all(state)
        raise

    write_kubeconfig(state / "kubeconfig", server, pki, "admin")
    env = {
        "KUBECONFIG": str(state / "kubeconfig"),
        ASSETS_ENV: str(bin_dir),
        "ETCDCTL_ENDPOINTS": etcd_url,
        "COFFER_TEST_APISERVER": server,
    }
    (state / "env").write_text("".join(f"export {key}={value}\n" for key, value in env.items()))
    version = api_get(server, "/version", context)[1]
    try:
        git_version = json.loads(version).get("gitVersion", "?")
    except json.JSONDecodeError:
        git_version = "?"
    log(f"kube-apiserver {git_version} ready at {server}; KUBECONFIG={state / 'kubeconfig'}")
    return env


def restart_apiserver(state: Path) -> None:
    """Stops kube-apiserver and starts it again with the flags `up` gave it; etcd and the
    controller-manager keep running. For tests of what survives an API server restart."""
    argv = json.loads((state / "kube-apiserver.argv.json").read_text())
    pid = read_pids(state).get("kube-apiserver")
    if pid is not None and alive(pid):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
    new_pid = start(state, "kube-apiserver", argv)
    server = f"https://127.0.0.1:{argv[argv.index('--secure-port') + 1]}"
    context = admin_context(state / "pki")
    wait_for("kube-apiserver /readyz after a restart", lambda: ready(server, context), state,
             {"kube-apiserver": new_pid})


def etcd_healthy(url: str) -> tuple[bool, str]:
    status, body = api_get(url, "/health", ssl.create_default_context())
    return status == 200 and '"true"' in body, body


def ready(server: str, context: ssl.SSLContext) -> tuple[bool, str]:
    status, body = api_get(server, "/readyz", context)
    return status == 200, body[-300:]


def ok_status(answer: tuple[int, str]) -> tuple[bool, str]:
    return answer[0] == 200, answer[1][-300:]


def down(state: Path) -> None:
    stop_all(state)
    shutil.rmtree(state / "etcd", ignore_errors=True)


def run(state: Path, bin_dir: Path, command: list[str]) -> int:
    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    env = up(state, bin_dir)
    try:
        child_env = {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        return subprocess.run(command, env=child_env).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        down(state)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    assets_command = commands.add_parser("assets", help="print the folder of binaries")
    assets_command.add_argument("--no-build", action="store_true", help="fail instead of building")
    commands.add_parser("versions", help="print the pinned versions")
    for name in ("up", "down"):
        commands.add_parser(name).add_argument("dir", type=Path)
    run_command = commands.add_parser("run", help="up, run a command, down")
    run_command.add_argument("dir", type=Path)
    run_command.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    try:
        if args.command == "assets":
            print(assets(allow_build=not args.no_build))
        elif args.command == "versions":
            for folder in sorted(PINNED):
                print(f"{PINNED[folder]} {pinned_version(folder)}")
        elif args.command == "up":
            env = up(args.dir.resolve(), assets())
            print("".join(f"export {key}={value}\n" for key, value in env.items()), end="")
        elif args.command == "down":
            down(args.dir.resolve())
        elif args.command == "run":
            command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not command:
                parser.error("run needs a command after --")
            return run(args.dir.resolve(), assets(), command)
    except ControlPlaneError as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
