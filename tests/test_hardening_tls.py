"""TLS for the device service (issue 24, item 3): HTTPS and gRPC over TLS with a throwaway CA made here with
``cryptography``; mutual TLS with ``--tls-client-ca``; plain HTTP and insecure gRPC to a TLS port get nothing."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import os
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest


def _load_bench() -> Any:  # the service launcher of benchmarks/serve_load.py
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgeify_serve_load", Path(__file__).resolve().parents[1] /
                                                  "benchmarks" / "serve_load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key: Any, issuer: tuple[str, Any] | None, *, ca: bool = False, server: bool = False) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]), issuer[1]) \
        if issuer else (name, key)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False),
                            critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: Any = None, key: Any = None) -> Path:
    from cryptography.hazmat.primitives import serialization

    data = b""
    if cert is not None:
        data += cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key = _key(), _key()
    ca = _cert("edgeify test CA", ca_key, None, ca=True)
    other_ca = _cert("someone else's CA", other_key, None, ca=True)
    srv_key, cli_key, rogue_key = _key(), _key(), _key()
    files = {"ca": _write(d / "ca.pem", ca),
             "server_cert": _write(d / "server.pem", _cert("device-1", srv_key, ("edgeify test CA", ca_key),
                                                           server=True)),
             "server_key": _write(d / "server.key", key=srv_key),
             "client_cert": _write(d / "client.pem", _cert("fleet-client", cli_key, ("edgeify test CA", ca_key))),
             "client_key": _write(d / "client.key", key=cli_key),
             "rogue_cert": _write(d / "rogue.pem", _cert("rogue", rogue_key, ("someone else's CA", other_key))),
             "rogue_key": _write(d / "rogue.key", key=rogue_key),
             "other_ca": _write(d / "other-ca.pem", other_ca)}
    os.chmod(files["server_key"], 0o600)
    return files


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bench._bundle(tmp_path_factory.mktemp("tls-bundle"))


def _https(port: int, path: str, pki: dict[str, Path], client: str | None = None) -> int:
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    if client:
        ctx.load_cert_chain(str(pki[f"{client}_cert"]), str(pki[f"{client}_key"]))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=20, context=ctx)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _plain_http_fails(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            conn.request("GET", "/healthz")
            conn.getresponse().read()
    finally:
        conn.close()


def _grpc_ready(port: int, pki: dict[str, Path] | None, client: str | None = None) -> bool:
    import grpc
    from edgeify_runtime.serve.proto import grpc_predict_v2_pb2 as pb
    from edgeify_runtime.serve.proto import grpc_predict_v2_pb2_grpc as pb_grpc

    if pki is None:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    else:
        creds = grpc.ssl_channel_credentials(
            root_certificates=pki["ca"].read_bytes(),
            private_key=pki[f"{client}_key"].read_bytes() if client else None,
            certificate_chain=pki[f"{client}_cert"].read_bytes() if client else None)
        channel = grpc.secure_channel(f"127.0.0.1:{port}", creds)
    try:
        return pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    finally:
        channel.close()


def test_https_and_grpc_over_tls_refuse_plain(bundle: Path, pki: dict[str, Path]) -> None:
    proc, port = bench.start(bench.serve_argv(bundle, "--tls-cert", str(pki["server_cert"]), "--tls-key",
                                              str(pki["server_key"]), "--grpc-port", "0"), env=dict(os.environ))
    try:
        assert proc.ready["url"].startswith("https://") and proc.ready["tls"] is True
        assert _https(port, "/healthz", pki) == 200
        assert _https(port, "/v2/health/ready", pki) == 200
        _plain_http_fails(port)
        # a client that does not trust the CA refuses the server
        ctx = ssl.create_default_context(cafile=str(pki["other_ca"]))
        with pytest.raises(ssl.SSLError):
            http.client.HTTPSConnection("127.0.0.1", port, timeout=20, context=ctx).request("GET", "/healthz")
        grpc_port = proc.ready["grpc_port"]
        assert _grpc_ready(grpc_port, pki) is True
        import grpc

        with pytest.raises(grpc.RpcError):
            _grpc_ready(grpc_port, None)  # insecure channel to the TLS port
    finally:
        bench.stop(proc)


def test_client_certificates_required_with_a_client_ca(bundle: Path, pki: dict[str, Path]) -> None:
    import grpc

    proc, port = bench.start(bench.serve_argv(bundle, "--tls-cert", str(pki["server_cert"]), "--tls-key",
                                              str(pki["server_key"]), "--tls-client-ca", str(pki["ca"]),
                                              "--grpc-port", "0"), env=dict(os.environ))
    try:
        assert proc.ready["client_certs"] is True
        assert _https(port, "/healthz", pki, client="client") == 200
        for who in (None, "rogue"):  # no certificate, or one from another CA: the handshake fails
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException, OSError)):
                _https(port, "/healthz", pki, client=who)
        grpc_port = proc.ready["grpc_port"]
        assert _grpc_ready(grpc_port, pki, client="client") is True
        for who in (None, "rogue"):
            with pytest.raises(grpc.RpcError):
                _grpc_ready(grpc_port, pki, client=who)
    finally:
        bench.stop(proc)


def test_a_key_that_does_not_match_is_refused_at_startup(bundle: Path, pki: dict[str, Path]) -> None:
    run = subprocess.run(bench.serve_argv(bundle, "--tls-cert", str(pki["server_cert"]), "--tls-key",
                                          str(pki["client_key"])), capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "--tls-key" in run.stderr and "matching key" in run.stderr
    run = subprocess.run(bench.serve_argv(bundle, "--tls-cert", str(pki["server_cert"])), capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "go together" in run.stderr
