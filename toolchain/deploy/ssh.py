"""``SSHTransport``: a device over SSH, with paramiko.

Security and failure behaviour (``tests/ssh`` runs all of it against real sshd processes):

- Host keys are checked strictly against known_hosts (``~/.ssh/known_hosts`` or the config's
  ``UserKnownHostsFile``, plus the global file). An unknown host fails with ``HostKeyUnknownError`` (22) and the
  key's fingerprint; a changed key fails with ``HostKeyChangedError`` (23) and is never replaced
  automatically. Trust-on-first-use happens only with ``trust_new_host_key=True`` (``--trust-new-host-key``),
  which appends the new key to the first known_hosts file.
- Authentication: the key files (the device's ``key``, else the config's ``IdentityFile``, else OpenSSH's
  defaults), then the ssh-agent's keys. Passphrases are held in memory only and never logged, stored or shown.
- The TCP socket is made here, with ``TCP_USER_TIMEOUT`` and keepalive probes, and handed to paramiko, which
  also sends SSH keepalives: a device that vanishes (link cut, power loss) gives ``TransportLostError`` (24)
  within seconds instead of blocking for the kernel's ~15 minute retransmission timeout.
- Commands are argv lists; every argument is quoted with ``shlex.quote`` before it reaches the remote shell.
- Files go over SFTP with pipelined writes and prefetched reads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import (
    ConfigError,
    HostKeyChangedError,
    HostKeyUnknownError,
    RemoteCommandError,
    RemoteDiskError,
    RemoteUnwritableError,
    SessionLostError,
    SSHAuthError,
    TransportLostError,
    UnreachableError,
)
from .hostkeys import TCP_USER_TIMEOUT_MS, fingerprint, key_kind, load_host_keys, remember_host_key, tcp_socket
from .local import io_error
from .sshconfig import SSHEndpoint, resolve
from .transport import CommandResult, ProgressCallback, Transport, as_bytes, check_env

if TYPE_CHECKING:  # paramiko is imported when a connection is made, not when edgeify starts
    import paramiko

#: seconds between SSH keepalive packets (they also make TCP notice an idle dead link)
KEEPALIVE_S = 2
CONNECT_TIMEOUT_S = 10.0
#: longest an SFTP operation may stall with the connection alive
IO_TIMEOUT_S = 60.0
#: SSH window we advertise (for downloads) and SFTP write request size for uploads. 128 KiB writes took 50 MB
#: in 0.45 s vs 0.53 s with paramiko's 32 KiB (loopback, median of 5); OpenSSH's sftp-server takes messages
#: up to 256 KiB (255 KiB writes worked too).
WINDOW_BYTES = 8 * 2**20
PUT_CHUNK = 128 * 1024
#: AES-GCM first: one pass for encryption and integrity (OpenSSH >= 6.2 offers it); the rest as paramiko has them
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr",
                     "aes192-ctr")
#: known_hosts key type -> host key algorithms that prove it
_KEY_ALGOS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


class SSHTransport(Transport):
    """One SSH connection to a device; connects lazily, reconnects after ``close``.

    ``SSHTransport.for_endpoint(resolve("pi-01"))`` or ``SSHTransport("192.168.1.50", user="pi")``.
    """

    def __init__(self, host: str, *, port: int | None = None, user: str | None = None, key: str | None = None,
                 trust_new_host_key: bool = False, passphrase: str | None = None, use_agent: bool = True,
                 connect_timeout: float = CONNECT_TIMEOUT_S, io_timeout: float = IO_TIMEOUT_S,
                 endpoint: SSHEndpoint | None = None, label: str | None = None) -> None:
        self.endpoint = endpoint or resolve(host, port=port, user=user, key=key)
        self.label = label or self.endpoint.label
        #: for connection errors: the device's name and where it resolved to
        self.where = self.label if self.label == self.endpoint.label else f"{self.label} ({self.endpoint.label})"
        self.trust_new_host_key = trust_new_host_key
        self.use_agent = use_agent
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.__passphrase = passphrase  # name-mangled, never in repr/logs/results
        self._t: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        #: set after connecting: what was verified (for ``devices check``)
        self.host_key_fingerprint: str | None = None
        self.trusted_new_key = False

    @classmethod
    def for_endpoint(cls, endpoint: SSHEndpoint, **kwargs: Any) -> SSHTransport:
        return cls(endpoint.hostname, endpoint=endpoint, **kwargs)

    def __repr__(self) -> str:
        return f"SSHTransport({self.label!r})"

    # -- connection ------------------------------------------------------------------------------------
    def connect(self) -> None:
        self._transport()

    def _alive(self) -> bool:
        t = self._t
        return t is not None and t.is_active()

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            if self._t is not None and self._t.is_active():
                return self._t
            self._close_quietly()
            self._t = self._open()
            return self._t

    def _open(self) -> paramiko.Transport:
        import paramiko

        ep = self.endpoint
        host_keys = self._load_host_keys()
        known = host_keys.lookup(ep.known_hosts_name) or {}
        sock = tcp_socket(ep.hostname, ep.port, timeout=self.connect_timeout, label=self.label)
        t = paramiko.Transport(sock, default_window_size=WINDOW_BYTES)
        try:
            t.banner_timeout = t.handshake_timeout = t.auth_timeout = self.connect_timeout
            opts = t.get_security_options()
            opts.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in opts.ciphers) + tuple(
                c for c in opts.ciphers if c not in PREFERRED_CIPHERS)
            if known:  # ask for the host key type(s) we already know, as OpenSSH does
                algos = [a for kt in known for a in _KEY_ALGOS.get(kt, (kt,)) if a in opts.key_types]
                opts.key_types = tuple(algos) + tuple(a for a in opts.key_types if a not in algos)
            try:
                t.start_client(timeout=self.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise UnreachableError(f"{self.where}: the SSH handshake failed: {exc or type(exc).__name__}",
                                       hint="is an SSH server listening on that port?") from None
            self._check_host_key(t.get_remote_server_key(), known)
            self._authenticate(t)
            t.set_keepalive(KEEPALIVE_S)
            return t
        except BaseException:
            t.close()
            raise

    def _load_host_keys(self) -> paramiko.HostKeys:
        return load_host_keys((*self.endpoint.global_known_hosts_files, *self.endpoint.known_hosts_files))

    def _check_host_key(self, key: paramiko.PKey, known: Mapping[str, paramiko.PKey]) -> None:
        ep = self.endpoint
        fp = fingerprint(key)
        self.host_key_fingerprint = fp
        name = ep.known_hosts_name
        kh = ep.known_hosts_files[0]
        if known:
            match = known.get(key.get_name())
            if match is not None and match.asbytes() == key.asbytes():
                return
            old = ", ".join(f"{key_kind(k)} {fingerprint(k)}" for k in known.values())
            raise HostKeyChangedError(
                f"{self.where}: HOST KEY CHANGED for {name}: known_hosts has {old}, the device presented "
                f"{key_kind(key)} {fp}. Someone may be intercepting the connection (man-in-the-middle), or the "
                f"device was reinstalled",
                hint=f"if you know the device was reinstalled, remove the old key with "
                     f"`ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(kh)}` and reconnect with "
                     f"--trust-new-host-key; otherwise do not connect")
        if not self.trust_new_host_key:
            raise HostKeyUnknownError(
                f"{self.where}: host key of {name} is not in known_hosts ({', '.join(ep.known_hosts_files)}); "
                f"the device presented {key_kind(key)} {fp}",
                hint=f"check that fingerprint on the device (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`), then "
                     f"accept it once with --trust-new-host-key (e.g. `edgeify devices check NAME "
                     f"--trust-new-host-key`) or `ssh-keyscan -p {ep.port} {ep.hostname} >> {kh}`")
        self._remember_host_key(kh, name, key)
        self.trusted_new_key = True

    @staticmethod
    def _remember_host_key(path: str, name: str, key: paramiko.PKey) -> None:
        remember_host_key(path, name, key)

    def _authenticate(self, t: paramiko.Transport) -> None:
        import paramiko

        ep = self.endpoint
        tried: list[str] = []

        def attempt(pkey: paramiko.PKey, what: str) -> bool:
            try:
                remaining = t.auth_publickey(ep.user, pkey)
            except paramiko.BadAuthenticationType as exc:
                raise SSHAuthError(f"{self.where}: the server does not accept public-key authentication "
                                   f"(it allows: {', '.join(exc.allowed_types) or 'nothing'})",
                                   hint="enable PubkeyAuthentication on the device") from None
            except paramiko.AuthenticationException:
                tried.append(what)
                return False
            except (paramiko.SSHException, EOFError, OSError) as exc:
                tried.append(what)
                if isinstance(exc, OSError):  # the network failed (no route, reset, timeout): not the server's no
                    raise TransportLostError(f"{self.where}: connection lost during authentication: {exc}") from None
                if not t.is_active():  # MaxAuthTries reached: the server hung up
                    raise SSHAuthError(f"{self.where}: the server closed the connection during authentication "
                                       f"after trying {', '.join(tried)}",
                                       hint="use --key to name the right key (the server limits attempts)") from None
                raise TransportLostError(f"{self.where}: connection lost during authentication: {exc}") from None
            if remaining:
                raise SSHAuthError(f"{self.where}: the server wants more authentication "
                                   f"({', '.join(remaining)}) after the key; edgeify supports keys only")
            return True

        for path in ep.key_files:
            if not os.path.isfile(path):
                if ep.explicit_keys:
                    raise ConfigError(f"{self.where}: key file {path} does not exist",
                                      hint="fix the device's key: edgeify devices add NAME ... --key FILE --replace")
                continue
            try:
                pw = self.__passphrase.encode() if self.__passphrase is not None else None
                pkey = paramiko.PKey.from_path(path, pw)
            except (paramiko.PasswordRequiredException, TypeError):  # cryptography raises TypeError for it
                tried.append(f"{path} (encrypted, no passphrase given)")
                continue
            except (paramiko.SSHException, ValueError, OSError) as exc:
                why = "wrong passphrase or unreadable" if self.__passphrase else f"unreadable: {type(exc).__name__}"
                tried.append(f"{path} ({why})")
                continue
            if attempt(pkey, path):
                return
        if self.use_agent and os.environ.get("SSH_AUTH_SOCK"):
            agent = paramiko.Agent()
            try:
                for i, akey in enumerate(agent.get_keys()):
                    if attempt(akey, f"agent key {i + 1} ({key_kind(akey)} {fingerprint(akey)})"):
                        return
            finally:
                agent.close()
        raise SSHAuthError(
            f"{self.where}: authentication failed; tried " + (", ".join(tried) or "no keys (none found)"),
            hint=f"install your public key on the device (`ssh-copy-id -p {ep.port} {ep.user}@{ep.hostname}`), "
                 "name the key with --key, or load it into ssh-agent (`ssh-add KEY`)")

    # -- operations ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _io(self, what: str) -> Iterator[None]:
        """Map failures inside an operation: connection gone -> TransportLostError, else the I/O error."""
        import paramiko

        try:
            yield
        except (EOFError, paramiko.SSHException, OSError) as exc:
            if not self._alive() or isinstance(exc, (EOFError, ConnectionError)):
                self._close_quietly()
                raise TransportLostError(f"{self.label}: connection lost during {what} "
                                         f"({type(exc).__name__}: {exc or 'EOF'})",
                                         hint="check the device's power and network, then retry; nothing was "
                                              "installed from the interrupted operation") from None
            if isinstance(exc, socket.timeout):
                raise RemoteCommandError(f"{self.label}: {what} stalled for {self.io_timeout:g} s") from None
            if isinstance(exc, OSError) and exc.errno is not None:
                raise io_error(exc, f"{self.label}: {what}") from None
            raise RemoteCommandError(f"{self.label}: {what} failed: {exc}") from None

    @staticmethod
    def command_line(cmd: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
        """The remote shell line: every piece quoted, so arguments arrive exactly as given."""
        if not cmd:
            raise ValueError("empty command")
        parts: list[str] = []
        if cwd:
            parts.append(f"cd {shlex.quote(cwd)} &&")
        env = check_env(env)
        if env:
            parts.append("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " &&")
        parts.append("exec " + " ".join(shlex.quote(str(c)) for c in cmd))
        return " ".join(parts)

    def run(self, cmd: Sequence[str], *, timeout: float, input: str | bytes | None = None,
            env: Mapping[str, str] | None = None, cwd: str | None = None) -> CommandResult:
        line = self.command_line(cmd, env, cwd)
        deadline = time.monotonic() + timeout
        t = self._transport()
        what = f"`{cmd[0]}`"
        with self._io(what):
            chan = t.open_session(timeout=min(timeout, self.connect_timeout))
        try:
            with self._io(what):
                chan.settimeout(max(0.1, min(timeout, self.io_timeout)))
                chan.exec_command(line)
                data = as_bytes(input)
                if data:
                    chan.sendall(data)
                chan.shutdown_write()
                chan.settimeout(0.0)
            out, err = bytearray(), bytearray()
            fd = chan.fileno()
            while True:
                with self._io(what):
                    progressed = False
                    while chan.recv_ready():
                        out += chan.recv(1 << 16)
                        progressed = True
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(1 << 16)
                        progressed = True
                # paramiko sets status_event (and exit_status_ready()) when the channel closes for any reason;
                # a channel the device closed in order has seen its EOF first, a dead connection's has not
                if chan.closed or (chan.status_event.is_set() and chan.eof_received):
                    if chan.recv_ready() or chan.recv_stderr_ready():
                        continue
                    if not chan.eof_received:
                        self._close_quietly()
                        raise SessionLostError(
                            f"{self.label}: connection lost while {what} was running",
                            hint="check the device's power and network (and whether its sshd was restarted), "
                                 "then retry")
                    break  # exit_status stays -1 when the command died by a signal
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RemoteCommandError(f"{self.label}: {what} ran past its {timeout:g} s deadline",
                                             hint="raise the deadline, or check the device's load")
                if not progressed:
                    select.select([fd], [], [], min(remaining, 0.25))
                    if not self._alive() and not chan.eof_received:
                        self._close_quietly()
                        raise SessionLostError(f"{self.label}: connection lost while {what} was running",
                                                 hint="check the device's power and network, then retry")
            rc = chan.exit_status
            return CommandResult(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        finally:
            with contextlib.suppress(Exception):
                chan.close()

    def _sftp_client(self) -> paramiko.SFTPClient:
        import paramiko

        with self._lock:
            t = self._transport()
            if self._sftp is None or self._sftp.get_channel() is None or self._sftp.get_channel().closed:
                with self._io("opening SFTP"):
                    self._sftp = paramiko.SFTPClient.from_transport(t, window_size=WINDOW_BYTES)
                    if self._sftp is None:
                        raise RemoteCommandError(f"{self.label}: the server refused the SFTP subsystem",
                                                 hint="enable `Subsystem sftp` in the device's sshd_config")
                self._sftp.get_channel().settimeout(self.io_timeout)
            return self._sftp

    def put(self, local: str, remote: str, *, callback: ProgressCallback | None = None) -> None:
        total = os.path.getsize(local)
        sftp = self._sftp_client()
        done = 0
        try:
            with open(local, "rb") as src, self._io(f"upload of {remote}"):
                with sftp.open(remote, "wb") as dst:
                    dst.set_pipelined(True)
                    dst.MAX_REQUEST_SIZE = PUT_CHUNK
                    while True:
                        block = src.read(PUT_CHUNK * 8)
                        if not block:
                            break
                        dst.write(block)
                        done += len(block)
                        if callback:
                            callback(done, total)
                if total == 0 and callback:
                    callback(0, 0)
                # paramiko drops the error replies of pipelined writes still in flight at close (a full disk
                # then looks like success): the size on the device is the proof
                written = sftp.stat(remote).st_size
            if written != total:
                raise RemoteCommandError(f"{self.label}: upload of {remote} is incomplete: {written} of {total} "
                                         "bytes were written")
        except RemoteCommandError as exc:
            raise self._diagnose_write_failure(remote, total, exc) from None

    #: why a write failed, asked of the device's shell: SFTP reports ENOSPC and EROFS as a bare "Failure"
    _PROBE = ('d=$(dirname -- "$1"); f="$d/.edgeify-probe-$$"; '
              'if err=$( (: > "$f") 2>&1 ); then rm -f -- "$f"; echo PROBE-OK; else echo "PROBE-FAIL $err"; fi; '
              'df -Pk -- "$d" 2>/dev/null | tail -n 1')

    def _diagnose_write_failure(self, remote: str, size: int, exc: RemoteCommandError) -> Exception:
        try:
            out = self.run(["sh", "-c", self._PROBE, "sh", remote], timeout=15).stdout
        except Exception:  # the diagnosis is best effort; report the original failure
            return exc
        lines = out.strip().splitlines()
        first = lines[0] if lines else ""
        low = first.lower()
        if "no space" in low or "quota" in low:
            return RemoteDiskError(f"{self.label}: writing {remote}: the device's disk is full",
                                   hint="free space in the device's work directory or set another --workdir")
        if "read-only" in low or "permission denied" in low or "not permitted" in low:
            reason = first.split(":")[-1].strip() or "not writable"
            return RemoteUnwritableError(f"{self.label}: writing {remote}: not writable ({reason})",
                                   hint="make the device's work directory writable for the login user, or set "
                                        "another one: edgeify devices add NAME ... --workdir DIR")
        if first == "PROBE-OK" and len(lines) > 1:
            fields = lines[-1].split()
            try:
                avail = int(fields[3]) * 1024
            except (IndexError, ValueError):
                return exc
            if avail < size:
                return RemoteDiskError(f"{self.label}: writing {remote}: the device's disk is full "
                                       f"({avail / 1e6:.1f} MB free, {size / 1e6:.1f} MB needed)",
                                       hint="free space in the device's work directory or set another --workdir")
        return exc

    def get(self, remote: str, local: str) -> None:
        sftp = self._sftp_client()
        with self._io(f"download of {remote}"):
            try:
                sftp.get(remote, local, prefetch=True)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    raise RemoteCommandError(f"{self.label}: no such file {remote}") from None
                raise

    def _close_quietly(self) -> None:
        sftp, t = self._sftp, self._t
        self._sftp = self._t = None
        for thing in (sftp, t):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()

    def close(self) -> None:
        with self._lock:
            self._close_quietly()


__all__ = ["TCP_USER_TIMEOUT_MS", "SSHTransport", "fingerprint", "tcp_socket"]
