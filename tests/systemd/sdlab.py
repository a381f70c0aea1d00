"""A device that runs systemd: a debootstrapped Debian amd64 root booted with systemd as PID 1 in its own PID,
mount, UTS, IPC and cgroup namespaces (``unshare``, no systemd-nspawn needed), sharing the host's network, with
sshd as one of its units on a loopback address.

    python tests/systemd/sdlab.py build              # build (or reuse) the cached root tarball
    python tests/systemd/sdlab.py start [--address 127.0.0.7]   # boot it (prints how to connect; Ctrl-C stops)

The root holds Debian's systemd, dbus, python3 and openssh-server, plus numpy, onnxruntime and the serve extra
installed with ``pip --target /opt/site`` from the host (the root's Python is Debian's 3.11, same ABI). Building
takes about 2 minutes (debootstrap) and is cached as a tarball keyed by its recipe under
``$EDGEIFY_SYSTEMD_CACHE`` (default ``~/.cache/edgeify-tests``). systemd gets a cgroup2 hierarchy of its own: a
child cgroup of the host's cgroup2 mount (the process is moved there before ``unshare --cgroup``), mounted at the
root's ``/sys/fs/cgroup``. Stopping kills ``unshare`` (``--kill-child``: PID 1 and with it every process of the
namespace) by PID and removes the child cgroup; the mounts live in the namespace and go with it. Needs root.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "ssh"))
sys.path.insert(0, str(HERE.parent / "arm64"))
import armlab  # noqa: E402  (the Debian mirror this machine uses)
import sshlab  # noqa: E402
from _tiers import starting  # noqa: E402  (a test that boots this device must carry the `systemd` marker)

SUITE = "bookworm"
DEB_PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "openssh-server", "procps")
WHEELS = ("numpy", "onnxruntime", "starlette", "uvicorn", "prometheus-client")
SITE = "/opt/site"
RECIPE_VERSION = 1
SYSTEM_TOOLS = ("debootstrap", "unshare", "nsenter", "chroot")
#: units a container has no use for (or that would clash with the host: the stock sshd on port 22)
MASKED = ("ssh.service", "ssh.socket", "getty@tty1.service", "console-getty.service", "e2scrub_reap.service",
          "systemd-logind.service")
SSHD_UNIT = """[Unit]
Description=sshd for the edgeify test device
[Service]
RuntimeDirectory=sshd
ExecStart=/usr/sbin/sshd -D -e -f /etc/ssh/edgeify_sshd_config
[Install]
WantedBy=multi-user.target
"""
BOOT = """set -e
R="$1"
mount --make-rprivate /
mount -t proc proc "$R/proc"
mount -t sysfs -o ro sys "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
mount --rbind /dev "$R/dev"
exec chroot "$R" /usr/bin/env -i container=edgeify-test /lib/systemd/systemd --log-target=console
"""


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEIFY_SYSTEMD_CACHE") or "~/.cache/edgeify-tests").expanduser()


def _pins() -> list[str]:
    names = {w.lower().replace("_", "-") for w in WHEELS}
    pins = []
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name = line.split("==")[0].strip().lower().replace("_", "-")
        if "==" in line and name in names:
            pins.append(line.strip())
    return sorted(pins)


def recipe_key() -> str:
    text = repr((RECIPE_VERSION, SUITE, DEB_PACKAGES, _pins(), MASKED, SSHD_UNIT, sys.version_info[:2]))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def tarball() -> Path:
    return cache_dir() / f"systemd-root-{recipe_key()}.tar.gz"


def missing_system_tools() -> list[str]:
    return [t for t in SYSTEM_TOOLS if shutil.which(t) is None]


def cgroup2_mount() -> Path | None:
    """Where the host's cgroup2 hierarchy is mounted (``/sys/fs/cgroup`` or the hybrid ``.../unified``)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


def _log(msg: str) -> None:
    print(f"[systemd] {msg}", file=sys.stderr, flush=True)


def build_root(root: Path) -> None:
    t0 = time.monotonic()
    _log(f"debootstrap {SUITE} amd64 into {root} (about 2 minutes)")
    subprocess.run(["debootstrap", "--arch=amd64", "--variant=minbase", f"--include={','.join(DEB_PACKAGES)}",
                    SUITE, str(root), armlab.debian_mirror()], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-warn-conflicts", "--target",
                    str(root / SITE.lstrip("/")), "-c", str(REPO / "constraints.txt"), *_pins()], check=True)
    (root / "usr/lib/python3/dist-packages/edgeify-site.pth").write_text(SITE + "\n")
    units = root / "etc/systemd/system"
    for unit in MASKED:
        (units / unit).unlink(missing_ok=True)
        (units / unit).symlink_to("/dev/null")
    (units / "edgeify-sshd.service").write_text(SSHD_UNIT)
    wants = units / "multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / "edgeify-sshd.service").symlink_to("/etc/systemd/system/edgeify-sshd.service")
    (root / "etc/machine-id").write_text("")  # a fresh id per boot, like an image
    _log(f"root built in {time.monotonic() - t0:.0f} s")


def ensure_root(workdir: Path) -> tuple[Path, dict]:
    """Extract the cached systemd root into ``workdir/root`` (building and caching it first if needed)."""
    return armlab.cached_root(workdir, tarball(), build_root)


@dataclass
class SystemdDevice:
    """The booted root; sshd (a systemd unit) on ``address:port``; the device's user is root."""

    root: Path
    address: str = "127.0.0.7"
    port: int = 0
    key: Path | None = None
    proc: subprocess.Popen | None = None
    cgroup: Path | None = None
    boots: list[float] = field(default_factory=list)

    @property
    def workdir(self) -> str:
        return "/opt/edgeify"

    @property
    def python(self) -> str:
        return "/usr/bin/python3"

    @property
    def pid1(self) -> int:
        """The host PID of the device's systemd (the child of ``unshare``)."""
        assert self.proc is not None
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        pids = out.stdout.split()
        if not pids:
            raise RuntimeError("the device's systemd is not running")
        return int(pids[0])

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A command inside the device (its namespaces and root), e.g. ``systemctl is-active UNIT``."""
        return subprocess.run(["nsenter", "-t", str(self.pid1), "-a", "-r", "-w", *argv], capture_output=True,
                              text=True, timeout=timeout)

    def prepare(self, host_dir: Path) -> SystemdDevice:
        r = self.root
        self.key, self.port = armlab.write_device_sshd(r, host_dir, self.address, self.port, "systemd-device")
        return self

    def boot(self, log: Path, timeout: float = 60.0) -> SystemdDevice:
        """Boot systemd in the root and wait until its sshd unit answers."""
        starting("systemd")
        host = cgroup2_mount()
        if host is None:
            raise RuntimeError("no cgroup2 hierarchy is mounted on this host (systemd needs one)")
        self.cgroup = host / f"edgeify-systemd-{os.getpid()}-{len(self.boots)}"
        self.cgroup.mkdir()
        script = log.parent / "boot.sh"
        script.write_text(BOOT)
        t0 = time.monotonic()
        with open(log, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                ["sh", "-c", f'echo $$ > "{self.cgroup}/cgroup.procs" && exec unshare --pid --fork --kill-child '
                             f'--mount --uts --ipc --cgroup sh "{script}" "{self.root}"'],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            sshlab.wait_port(self.address, self.port, timeout=timeout)
        except Exception:
            self.stop()
            raise RuntimeError(f"the systemd device did not boot: {log.read_text(errors='replace')[-3000:]}") \
                from None
        self.boots.append(round(time.monotonic() - t0, 2))
        return self

    def known_hosts_line(self) -> str:
        pub = (self.root / "etc/ssh/edgeify_host_ed25519.pub").read_text().split()
        return f"[{self.address}]:{self.port} {pub[0]} {pub[1]}"

    def stop(self) -> None:
        """Power off: kill ``unshare`` by PID (its ``--kill-child`` kills PID 1, the namespace goes with it), wait
        until the device's cgroup is empty, remove it (children first)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.cgroup is not None and self.cgroup.is_dir():
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    for sub in sorted((p for p in self.cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                        sub.rmdir()
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        self.cgroup = None
        self.proc = None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["build", "start"])
    ap.add_argument("--address", default="127.0.0.7")
    args = ap.parse_args()
    missing = missing_system_tools()
    if missing or os.geteuid() != 0:
        print(f"needs root and {', '.join(SYSTEM_TOOLS)} (missing: {missing}); apt-get install debootstrap",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root, info = ensure_root(work)
        print(f"root: {info}")
        if args.command == "build":
            return 0
        dev = SystemdDevice(root, address=args.address).prepare(work).boot(work / "boot.log")
        try:
            print(f"ssh -i {dev.key} -p {dev.port} -o StrictHostKeyChecking=no root@{dev.address}   (Ctrl-C stops)")
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            dev.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
