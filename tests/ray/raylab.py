"""A real Ray cluster for the tests: a head node and worker nodes (`ray start`, 1 CPU each) in a private network
namespace that has only a loopback interface.

Why a namespace: Ray's gRPC servers listen on every interface of the host unless the node address is exactly
127.0.0.1, and a second node on one machine needs another address. Inside the namespace "every interface" is
its loopback only, so nothing is reachable from outside, and the nodes get their own addresses (head
127.0.0.1, workers 127.0.0.2, ...). Everything the lab starts runs in the namespace (the CLI under test too), so
teardown kills exactly those processes by PID (`ip netns pids`) and checks they are gone.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/: _tiers (benchmarks import this file alone)
    sys.path.append(str(Path(__file__).resolve().parents[1]))
from _tiers import starting  # a test that starts Ray must carry the `ray` marker

RAY = str(Path(sys.executable).with_name("ray"))
PORT = 6379  # the namespace is private: the default port is free there
# the head notices a dead node within a few seconds (defaults: tens of seconds)
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
               "RAY_health_check_failure_threshold": "3", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
_ids = itertools.count()


# token authentication with a per-session token passed in the environment: independent of ~/.ray/auth_token
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _proc_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **FAST_HEALTH, **AUTH, **(extra or {})}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.pop("EDGEIFY_DEBUG", None)
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass
class Node:
    name: str
    ip: str
    temp_dir: Path


@dataclass
class RayLab:
    netns: str = field(default_factory=lambda: f"edgeify-ray-{os.getpid()}-{next(_ids)}")
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="eray-", dir="/tmp")))  # short:
    nodes: dict[str, Node] = field(default_factory=dict)  # Ray's socket paths must stay under 107 characters

    @property
    def address(self) -> str:
        return f"127.0.0.1:{PORT}"

    def ns(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd]

    def start(self) -> RayLab:
        starting("ray")
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        subprocess.run(self.ns("ip", "link", "set", "lo", "up"), check=True, capture_output=True)
        self._ray_start("head", "127.0.0.1", ["--head", "--port", str(PORT), "--include-dashboard=false"])
        return self

    def add_node(self, name: str, env: dict[str, str] | None = None) -> Node:
        starting("ray")
        ip = f"127.0.0.{len(self.nodes) + 1}"
        return self._ray_start(name, ip, ["--address", self.address], env)

    def _ray_start(self, name: str, ip: str, args: list[str], env: dict[str, str] | None = None) -> Node:
        temp = self.root / name
        cmd = self.ns(RAY, "start", *args, "--node-ip-address", ip, "--num-cpus", "1", "--disable-usage-stats",
                      "--object-store-memory", str(100 * 1024**2), "--temp-dir", str(temp))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_proc_env(env))
        if r.returncode != 0:
            raise RuntimeError(f"ray start ({name}) failed: {r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        self.nodes[name] = Node(name, ip, temp)
        return self.nodes[name]

    def pids(self) -> list[int]:
        r = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True)
        return [int(p) for p in r.stdout.split()]

    def node_processes(self, name: str) -> list[psutil.Process]:
        """The node's Ray processes (their command lines name its temp dir) and everything they started."""
        marker = str(self.nodes[name].temp_dir)
        found: dict[int, psutil.Process] = {}
        for pid in self.pids():
            try:
                p = psutil.Process(pid)
                if any(marker in a for a in p.cmdline()):
                    found[pid] = p
                    found.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL a worker node: its raylet, agents and worker processes, as when a machine dies."""
        procs = self.node_processes(name)
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(procs, timeout=10)
        return [p.pid for p in procs]

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """`edgeify ARGS` inside the namespace (the driver must reach the cluster's loopback addresses)."""
        return subprocess.Popen(self.ns(sys.executable, "-m", "edgeify", *args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_proc_env(env),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def stop(self) -> None:
        """Kill every process in the namespace by PID, check none is left, remove the namespace."""
        deadline = time.monotonic() + 5  # then SIGKILL
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self.pids():
                break
            deadline = time.monotonic() + 10
        left = self.pids()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        if left:
            raise RuntimeError(f"Ray processes survived the teardown: {left}")
