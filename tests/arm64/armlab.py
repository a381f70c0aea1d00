"""An emulated arm64 edge device: a debootstrapped Debian arm64 root run through qemu-user + binfmt, with sshd.

    python tests/arm64/armlab.py build            # build (or reuse) the cached root tarball
    python tests/arm64/armlab.py start [--address 127.0.0.5]   # start sshd in it (prints how to connect)

The root has Python 3.11, numpy, onnxruntime, ai-edge-litert and ncnn (aarch64 wheels installed from the host with
``pip --target``), and openssh-server. edgeify's device-side runtime is *not* installed: the deployer copies it.
Building takes 4-6 minutes (debootstrap under emulation) and is cached as a tarball keyed by its recipe under
``$EDGEIFY_ARM64_CACHE`` (default ``~/.cache/edgeify-tests``). Everything started is stopped by PID; every mount
is undone, also when a test fails.

Why the cpuinfo file: onnxruntime and LiteRT read /proc/cpuinfo at import; under qemu-user they see the host's x86
file and crash, so an ARM-looking one is bind-mounted over ``ROOT/proc/cpuinfo`` (see shared/FACTS.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ssh"))
import sshlab  # noqa: E402
from _tiers import starting  # noqa: E402  (a test that starts the emulated device must carry `arm64`)

SUITE = "bookworm"
DEB_PACKAGES = ("python3", "python3-venv", "openssh-server")
# the engines a Pi-class device would have pip-installed (ncnn: the ncnn plugin's engine; ExecuTorch is not here:
# its Python runtime links libtorch, and torch's aarch64 wheel is a CUDA build, see test_arm64_engines.py)
WHEELS = ("numpy==2.4.6", "onnxruntime==1.32.0", "ai-edge-litert==2.3.0", "ncnn==1.0.20261020")
PLATFORMS = [f"manylinux_2_{n}_aarch64" for n in (17, 27, 28, 31, 34, 35, 36)] + ["manylinux2014_aarch64"]
SITE = "/opt/site"
RECIPE_VERSION = 1
SYSTEM_TOOLS = ("debootstrap", "qemu-aarch64-static", "update-binfmts")

ARM_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
    "asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n"
    "CPU part\t: 0xd0b\nCPU revision\t: 1\n\n" for i in range(2))


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEIFY_ARM64_CACHE") or "~/.cache/edgeify-tests").expanduser()


def recipe_key() -> str:
    blob = json.dumps([RECIPE_VERSION, SUITE, DEB_PACKAGES, WHEELS, PLATFORMS])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tarball() -> Path:
    return cache_dir() / f"arm64-root-{recipe_key()}.tar.gz"


def missing_system_tools() -> list[str]:
    return [t for t in SYSTEM_TOOLS if shutil.which(t) is None]


def ensure_binfmt() -> None:
    """Register qemu-aarch64 with binfmt_misc (the service is not started on these machines)."""
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], check=True)
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not entry.exists() or "enabled" not in entry.read_text():
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=True, capture_output=True)
    if not entry.exists():
        raise RuntimeError("qemu-aarch64 is not registered with binfmt_misc (install qemu-user-static)")


def debian_mirror() -> str:
    """The mirror this machine's apt already uses (no other network is reachable)."""
    for path in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        if path.exists():
            text = path.read_text()
            m = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
            if m and "security" not in m.group(1):
                return m.group(1)
    return "http://deb.debian.org/debian"


def _log(msg: str) -> None:
    print(f"[arm64] {msg}", file=sys.stderr, flush=True)


def build_root(root: Path) -> None:
    ensure_binfmt()
    t0 = time.monotonic()
    _log(f"debootstrap {SUITE} arm64 into {root} (a few minutes under emulation)")
    subprocess.run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(DEB_PACKAGES)}",
                    SUITE, str(root), debian_mirror()], check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as wheels:
        plat = [a for p in PLATFORMS for a in ("--platform", p)]
        common = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *plat]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", *common, "-d", wheels, *WHEELS], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *common,
                        "--platform", "any", "--target", str(root / SITE.lstrip("/")),
                        *sorted(str(p) for p in Path(wheels).glob("*.whl"))], check=True)
    (root / "usr/lib/python3/dist-packages/edgeify-site.pth").write_text(SITE + "\n")
    _log(f"root built in {time.monotonic() - t0:.0f} s")


def cached_root(workdir: Path, cache: Path, build: Callable[[Path], None]) -> tuple[Path, dict]:
    """Extract the root cached as the tarball ``cache`` into ``workdir/root``; when there is none yet, ``build``
    it in ``workdir/build-root`` and cache it first (written aside and renamed: never a torn tarball). Shared by
    the arm64 and the systemd device roots."""
    root = workdir / "root"
    info = {"cached": cache.exists(), "tarball": str(cache)}
    t0 = time.monotonic()
    if not info["cached"]:
        staging = workdir / "build-root"
        build(staging)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        subprocess.run(["tar", "-C", str(staging), "-czf", str(tmp), "."], check=True)
        os.replace(tmp, cache)
        shutil.rmtree(staging, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(root), "-xzf", str(cache)], check=True)
    info["seconds"] = round(time.monotonic() - t0, 1)
    return root, info


def ensure_root(workdir: Path) -> tuple[Path, dict]:
    """Extract the cached arm64 root into ``workdir/root`` (building and caching it first if needed)."""
    ensure_binfmt()
    return cached_root(workdir, tarball(), build_root)


def write_device_sshd(root: Path, host_dir: Path, address: str, port: int, name: str) -> tuple[Path, int]:
    """The device root's own sshd: a client key on the host (``host_dir/id_ed25519``), a host key and a config
    listening on ``address:port`` (a free port when 0) inside ``root``. Shared by the arm64 and systemd devices."""
    (root / "opt/edgeify").mkdir(parents=True, exist_ok=True)
    key = host_dir / "id_ed25519"
    pub = sshlab.write_ed25519_key(key)
    (root / "etc/ssh/edgeify_authorized_keys").write_text(pub + "\n")
    sshlab.write_ed25519_key(root / "etc/ssh/edgeify_host_ed25519", comment=name)
    port = port or sshlab.free_port(address)
    (root / "etc/ssh/edgeify_sshd_config").write_text(
        f"ListenAddress {address}:{port}\nHostKey /etc/ssh/edgeify_host_ed25519\n"
        "PidFile /run/edgeify-sshd.pid\nAuthorizedKeysFile /etc/ssh/edgeify_authorized_keys\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nPasswordAuthentication no\nStrictModes no\n"
        "Subsystem sftp internal-sftp\nClientAliveInterval 5\nLogLevel ERROR\n")
    return key, port


@dataclass
class Arm64Device:
    """sshd inside the arm64 root on a loopback address; the device's user is root, its workdir /opt/edgeify."""

    root: Path
    address: str = "127.0.0.5"
    port: int = 0
    key: Path | None = None
    mounts: list[Path] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def workdir(self) -> str:
        return "/opt/edgeify"

    @property
    def python(self) -> str:
        return "/usr/bin/python3"

    def _mount(self, *args: str, target: Path) -> None:
        subprocess.run(["mount", *args, str(target)], check=True)
        self.mounts.append(target)

    def start(self, host_dir: Path) -> Arm64Device:
        starting("arm64")
        r = self.root
        self._mount("-t", "proc", "proc", target=r / "proc")
        (host_dir / "cpuinfo").write_text(ARM_CPUINFO)
        self._mount("--bind", str(host_dir / "cpuinfo"), target=r / "proc/cpuinfo")
        self._mount("-t", "sysfs", "sys", target=r / "sys")
        self._mount("-t", "tmpfs", "tmpfs", target=r / "run")
        (r / "run/sshd").mkdir(mode=0o755)
        self.key, self.port = write_device_sshd(r, host_dir, self.address, self.port, "arm64-device")
        with open(host_dir / "sshd.log", "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(["chroot", str(r), "/usr/sbin/sshd", "-D", "-e", "-f",
                                          "/etc/ssh/edgeify_sshd_config"], stdout=subprocess.DEVNULL, stderr=log)
        try:
            sshlab.wait_port(self.address, self.port, timeout=60)
        except Exception:
            self.stop()
            raise
        return self

    def known_hosts_line(self) -> str:
        pub = (self.root / "etc/ssh/edgeify_host_ed25519.pub").read_text().split()
        return f"[{self.address}]:{self.port} {pub[0]} {pub[1]}"

    def stop(self) -> None:
        """Kill sshd (and every process still running inside the root) by PID, then undo the mounts."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        root = str(self.root.resolve())
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.readlink(f"/proc/{pid}/root") == root:
                        os.kill(int(pid), 9)
                except OSError:
                    pass
        for target in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)
        self.mounts.clear()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["build", "start"])
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp/edgeify-arm64"))
    ap.add_argument("--address", default="127.0.0.5")
    args = ap.parse_args()
    missing = missing_system_tools()
    if missing:
        print(f"missing: {missing}; install: apt-get install qemu-user-static binfmt-support debootstrap",
              file=sys.stderr)
        return 1
    if args.command == "build":
        shutil.rmtree(args.workdir, ignore_errors=True)
        args.workdir.mkdir(parents=True)
        root, info = ensure_root(args.workdir)
        print(json.dumps({**info, "root": str(root)}))
        return 0
    root = args.workdir / "root"
    if not root.exists():
        root, _ = ensure_root(args.workdir)
    dev = Arm64Device(root, address=args.address).start(args.workdir)
    print(f"arm64 device: ssh -i {dev.key} -p {dev.port} root@{dev.address}  (Ctrl-C stops it)")
    try:
        while dev.proc and dev.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        dev.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
