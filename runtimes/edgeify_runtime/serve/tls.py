"""TLS for the HTTP service and its gRPC server (``--tls-cert``, ``--tls-key``, ``--tls-client-ca``).

The certificate and key are PEM files, checked at startup (they must load and match, else exit 2 before the
model is loaded); with ``--tls-client-ca`` every client must present a certificate signed by that CA (mutual
TLS), on HTTP and gRPC alike. TLS 1.2 is the oldest version accepted. Plain HTTP or an insecure gRPC channel to a
TLS port fails its handshake: nothing is answered in clear text. How a fleet provisions the files: the README's
security section.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ValueError(f"{flag} {path}: unreadable ({exc.strerror or type(exc).__name__})") from None


def read_tls(cert: str | None, key: str | None, client_ca: str | None) -> dict[str, Any] | None:
    """The TLS settings (paths and PEM bytes), checked: both files load and the key matches the certificate;
    None without ``cert`` and ``key``. ValueError says what is wrong."""
    if not cert and not key:
        if client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (client certificates need TLS)")
        return None
    if not cert or not key:
        raise ValueError("--tls-cert and --tls-key go together (the certificate and its private key)")
    out: dict[str, Any] = {"cert": cert, "key": key, "cert_pem": _read(cert, "--tls-cert"),
                           "key_pem": _read(key, "--tls-key"), "client_ca": client_ca, "client_ca_pem": None}
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its matching key "
                         f"({exc})") from None
    if client_ca:
        out["client_ca_pem"] = _read(client_ca, "--tls-client-ca")
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"--tls-client-ca {client_ca}: not a PEM CA bundle ({exc})") from None
    return out


def tls_config(tls: dict[str, Any] | None) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments for ``tls`` (none without TLS)."""
    if not tls:
        return {}
    kw: dict[str, Any] = {"ssl_certfile": tls["cert"], "ssl_keyfile": tls["key"]}
    if tls.get("client_ca"):
        kw.update(ssl_ca_certs=tls["client_ca"], ssl_cert_reqs=ssl.CERT_REQUIRED)
    return kw


def grpc_credentials(grpc: Any, tls: dict[str, Any]) -> Any:
    """``grpc.ssl_server_credentials`` for ``tls`` (client certificates required with a client CA)."""
    return grpc.ssl_server_credentials([(tls["key_pem"], tls["cert_pem"])], root_certificates=tls["client_ca_pem"],
                                       require_client_auth=bool(tls["client_ca_pem"]))


__all__ = ["grpc_credentials", "read_tls", "tls_config"]
