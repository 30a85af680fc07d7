"""A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with
the `openssl` command line (present wherever Python's ssl module is built)."""

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    assert binary, "the TLS tests need the openssl command line"
    subprocess.run([binary, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _signed(directory: Path, name: str, extensions: str) -> tuple[Path, Path]:
    (directory / f"{name}.ext").write_text(extensions + "\n")
    _openssl("req", *KEY, "-subj", f"/CN=batchbus-test-{name}", "-keyout", f"{name}-key.pem",
             "-out", f"{name}.csr", cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
             "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
             cwd=directory)
    return directory / f"{name}.pem", directory / f"{name}-key.pem"


def make_certificates(directory: Path) -> Certificates:
    _openssl("req", "-x509", *KEY, "-days", "1", "-subj", "/CN=batchbus-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=directory)
    server = _signed(directory, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                          "extendedKeyUsage=serverAuth")
    client = _signed(directory, "client", "extendedKeyUsage=clientAuth")
    return Certificates(directory / "ca.pem", *server, *client)
