"""A real PostgreSQL server for tests: ``initdb`` in a temporary directory, ``postgres`` on a free loopback port,
stopped and removed afterwards. ``initdb`` refuses to run as root, so as root the server runs as the ``postgres``
user (Debian's ``postgresql`` package creates it; ``install.sh --dev`` installs the package)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from _tiers import starting  # a test that starts PostgreSQL must carry the `postgres` marker


def pg_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class PgServer:
    port: int
    user: str
    database: str

    def url(self, password: str | None = None) -> str:
        cred = f"{self.user}:{password}" if password else self.user
        return f"postgresql://{cred}@127.0.0.1:{self.port}/{self.database}"


@contextmanager
def postgres_server(database: str = "edgeify", user: str = "edgeify") -> Iterator[PgServer]:
    starting("postgres")
    bindir = pg_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb) not found: apt-get install postgresql "
                                "(./install.sh --dev)")
    as_root = os.geteuid() == 0
    run_as: list[str] = []
    if as_root:
        pw = pwd.getpwnam("postgres")
        run_as = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--"]
    root = tempfile.mkdtemp(prefix="edgeify-pg-")  # not under pytest's tmp dirs: those are private to root
    data = os.path.join(root, "data")
    if as_root:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
    proc = None
    try:
        subprocess.run([*run_as, f"{bindir}/initdb", "-D", data, "-U", user, "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, text=True, env=env, timeout=120, cwd=root)
        port = _free_port()
        log = open(os.path.join(root, "server.log"), "w")  # noqa: SIM115  (closed in finally)
        proc = subprocess.Popen([*run_as, f"{bindir}/postgres", "-D", data, "-k", root, "-p", str(port),
                                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=60"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
        deadline = time.monotonic() + 60
        while True:
            ready = subprocess.run([f"{bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(port), "-U", user],
                                   capture_output=True, timeout=30)
            if ready.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(root, "server.log")) as f:
                    raise RuntimeError(f"postgres did not start: {f.read()[-2000:]}")
            time.sleep(0.2)
        subprocess.run([f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", user, database],
                       check=True, capture_output=True, timeout=60)
        yield PgServer(port=port, user=user, database=database)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
