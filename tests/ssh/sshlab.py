"""A lab of real SSH devices for the tests and ``benchmarks/ssh_deploy.py``: private sshd processes on
127.0.0.x, one in a network namespace behind a veth pair (so a test can cut its link), tiny real bundles.

Nothing here mocks paramiko or sshd. Every process started here is stopped by its PID; every namespace and
route created here is removed by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/: _tiers (benchmarks import this file alone)
    sys.path.append(str(Path(__file__).resolve().parents[1]))
from _tiers import starting  # a test that starts sshd must carry the `ssh` marker

SSHD = "/usr/sbin/sshd"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: the test network for namespaced devices; never any other address (see shared/FACTS.md)
NETNS_NET = "10.200.0.0/16"


def missing_tools(*tools: str) -> list[str]:
    found = {"sshd": os.path.exists(SSHD)}
    return [t for t in tools if not (found[t] if t in found else shutil.which(t))]


# -- keys -----------------------------------------------------------------------------------------------------
def write_ed25519_key(path: Path, comment: str = "edgeify-test") -> str:
    """Write an OpenSSH ed25519 private key at ``path`` (0600) and ``path.pub``; return the public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(priv)
    path.chmod(0o600)
    line = pub.decode() + f" {comment}"
    Path(str(path) + ".pub").write_text(line + "\n")
    return line


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def wait_port(address: str, port: int, timeout: float = 5.0, netns: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if netns is None:
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex((address, port)) == 0:
                    return
        else:
            rc = subprocess.run(["ip", "netns", "exec", netns, "python3", "-c",
                                 f"import socket,sys; s=socket.socket(); s.settimeout(0.2); "
                                 f"sys.exit(s.connect_ex(({address!r}, {port})))"],
                                capture_output=True, check=False).returncode
            if rc == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"sshd did not start listening on {address}:{port} within {timeout} s")


# -- sshd -----------------------------------------------------------------------------------------------------
@dataclass
class Sshd:
    """One private sshd: ``root`` holds its config, host key, authorized_keys, log and the device's workdir."""

    name: str
    address: str
    root: Path
    authorized_key: str
    port: int = 0
    netns: str | None = None
    proc: subprocess.Popen | None = None
    host_key_line: str = ""
    killed_at: float = 0.0
    workdir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.workdir = self.root / "work"
        self.workdir.mkdir(exist_ok=True)
        if not self.port:
            self.port = 22 if self.netns else free_port(self.address)
        self.host_key = self.root / "ssh_host_ed25519_key"
        if not self.host_key.exists():
            write_ed25519_key(self.host_key, "host")
        self.host_key_line = Path(str(self.host_key) + ".pub").read_text().split(" host")[0].strip()
        (self.root / "authorized_keys").write_text(self.authorized_key + "\n")

    @property
    def known_hosts_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def known_hosts_line(self) -> str:
        return f"{self.known_hosts_name} {self.host_key_line}"

    def config_text(self) -> str:
        r = self.root
        return "\n".join([
            f"ListenAddress {self.address}:{self.port}", f"HostKey {self.host_key}", f"PidFile {r / 'sshd.pid'}",
            f"AuthorizedKeysFile {r / 'authorized_keys'}", "UsePAM no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin prohibit-password",
            "StrictModes no", "Subsystem sftp internal-sftp", "ClientAliveInterval 5", "MaxStartups 64:30:128",
            "MaxSessions 32", "LogLevel ERROR", "",
        ])

    def start(self) -> Sshd:
        starting("ssh")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        cfg = self.root / "sshd_config"
        cfg.write_text(self.config_text())
        cmd = [SSHD, "-D", "-e", "-f", str(cfg)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        log = open(self.root / "sshd.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        try:
            wait_port(self.address, self.port, netns=self.netns)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"{self.name}: sshd failed: {(self.root / 'sshd.log').read_text()[-2000:]}") from None
        return self

    def processes(self) -> list[Any]:
        """The sshd master and every process below it (per-connection sshd, the commands they run)."""
        import psutil

        if self.proc is None:
            return []
        try:
            master = psutil.Process(self.proc.pid)
            return [master, *master.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill_all(self) -> None:
        """SIGKILL the sshd master, its connection processes and what they run (a crashed device)."""
        import psutil

        procs = self.processes()

        def is_sshd(p: Any) -> bool:
            try:
                return p.name() == "sshd"
            except psutil.Error:
                return False

        # the sshd processes first, deepest first (the one holding the connection dies without a word),
        # then what they ran (the commands would otherwise live on as orphans)
        sshds = [p for p in reversed(procs) if is_sshd(p)]
        self.killed_at = time.monotonic()
        for group in (sshds, [p for p in procs if p not in sshds]):
            for p in group:
                with contextlib.suppress(psutil.Error):
                    p.send_signal(signal.SIGKILL)
            psutil.wait_procs(group, timeout=5)
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.kill_all()


# -- network namespace device -------------------------------------------------------------------------------------
class NetnsLink:
    """A network namespace joined to this machine by a veth pair, in 10.200.<n>.0/30."""

    def __init__(self, tag: str) -> None:
        n = os.getpid() % 200 + 20
        self.ns = f"edgeify-{tag}-{os.getpid()}"
        self.host_if = f"edh{os.getpid() % 100000}"
        self.ns_if = f"edn{os.getpid() % 100000}"
        self.host_addr = f"10.200.{n}.1"
        self.ns_addr = f"10.200.{n}.2"
        self._added_route = False

    @staticmethod
    def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)

    def up(self) -> NetnsLink:
        # safety route first: traffic for a downed test link never leaves this machine
        r = self._ip("route", "add", "unreachable", NETNS_NET, "metric", "4000", check=False)
        self._added_route = r.returncode == 0
        self._ip("netns", "add", self.ns)
        try:
            self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            self._ip("link", "set", self.ns_if, "netns", self.ns)
            self._ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            self._ip("-n", self.ns, "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if)
            self._ip("link", "set", self.host_if, "up")
            self._ip("-n", self.ns, "link", "set", self.ns_if, "up")
            self._ip("-n", self.ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError:
            self.down_all()
            raise
        return self

    def cut(self) -> None:
        self._ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        self._ip("link", "set", self.host_if, "up")

    def down_all(self) -> None:
        self._ip("link", "del", self.host_if, check=False)
        self._ip("netns", "del", self.ns, check=False)
        if self._added_route:
            self._ip("route", "del", "unreachable", NETNS_NET, "metric", "4000", check=False)


# -- mounts (disk full, read-only) ----------------------------------------------------------------------------------
def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True,
                   capture_output=True)


def remount_readonly(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


def bind_readonly(path: Path) -> None:
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True, capture_output=True)


def umount(path: Path) -> None:
    for _ in range(3):
        r = subprocess.run(["umount", str(path)], capture_output=True, text=True, check=False)
        if r.returncode == 0 or "not mounted" in r.stderr:
            return
        time.sleep(0.2)
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def can_mount(tmp: Path) -> bool:
    probe = tmp / "mount-probe"
    try:
        mount_tmpfs(probe, "1m")
    except (subprocess.CalledProcessError, OSError):
        return False
    umount(probe)
    return True


# -- device pythons ------------------------------------------------------------------------------------------------
def python_without_engines(root: Path) -> str:
    """A real venv whose site-packages has numpy (linked from this venv) but no onnxruntime/openvino."""
    import numpy

    venv = root / "venv-noengine"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                       capture_output=True)
        site = next((venv / "lib").glob("python3*/site-packages"))
        only = root / "numpy-only"
        only.mkdir(exist_ok=True)
        src = Path(numpy.__file__).resolve().parent
        for item in [src, *src.parent.glob("numpy.libs"), *src.parent.glob("numpy-*.dist-info")]:
            with contextlib.suppress(FileExistsError):
                (only / item.name).symlink_to(item)
        (site / "edgeify_numpy_only.pth").write_text(str(only) + "\n")
    return str(venv / "bin" / "python")


# -- bundles ----------------------------------------------------------------------------------------------------
def make_bundle(out: Path, *, target: str = "x86-avx2", seed: int = 0, weight_mb: float = 0.0,
                in_features: int = 16, out_features: int = 4, extra_files: dict[str, bytes] | None = None) -> Path:
    """A real bundle (ONNX Runtime, fp32): a Gemm whose weight matrix is ``weight_mb`` MB when given."""
    import numpy as np
    from edgeify_runtime.manifest import dumps, files_digest, sha256_file
    from onnx import TensorProto, checker, helper, numpy_helper

    if weight_mb:
        in_features = max(1, int(weight_mb * 1e6 / 4 / out_features))
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((in_features, out_features)).astype(np.float32)
    b = rng.standard_normal((out_features,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_features])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeify-tests")
    model.ir_version = 8
    checker.check_model(model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(model.SerializeToString())
    names = ["model.onnx"]
    for rel, data in (extra_files or {}).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        names.append(rel)
    files = {n: {"sha256": sha256_file(out / n), "size": (out / n).stat().st_size} for n in names}
    manifest = {
        "schema_version": 1, "format": "edgeify-bundle", "created_at": "2026-01-01T00:00:00+00:00",
        "target": {"name": target, "family": target.split("-")[0], "arch": "x86_64", "os": "linux"},
        "engine": {"name": "onnxruntime", "min_version": "1.17.0", "artifact": "model.onnx", "format": "onnx",
                   "options": {}},
        "precision": "fp32",
        "inputs": [{"name": "x", "shape": ["batch", in_features], "dtype": "float32", "layout": "NC"}],
        "outputs": [{"name": "y", "shape": ["batch", out_features], "dtype": "float32", "layout": "NC"}],
        "files": files, "bundle_digest": files_digest(files), "labels": None, "preprocessing": None,
        "tools": {"edgeify": "tests"}, "steps": [], "validation": None,
    }
    (out / "manifest.json").write_text(dumps(manifest))
    (out / "report.md").write_text(f"# test bundle seed={seed}\n")
    return out


def installed(workdir: Path, name: str, which: str = "current") -> dict[str, Any] | None:
    """What is installed on a device (read straight from its directory): digest and a fresh hash check."""
    from edgeify_runtime.manifest import Manifest

    link = workdir / "bundles" / name / which
    if not link.exists():
        return None
    m = Manifest.read(link)
    try:
        m.verify_files(link)
        intact = True
    except Exception:
        intact = False
    return {"digest": m.bundle_digest, "intact": intact, "dir": os.path.realpath(link)}


def disk_free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2))


__all__ = ["IN_CI", "SSHD", "NetnsLink", "Sshd", "bind_readonly", "can_mount", "disk_free", "installed",
           "make_bundle", "missing_tools", "mount_tmpfs", "python_without_engines", "remount_readonly", "umount",
           "wait_port", "write_ed25519_key"]
