"""TLS for the relay: a certificate and key given by the operator, or a self-signed pair made for this machine.

Phones give a page the microphone only over ``https://``, and the Node ``openai`` SDK only connects over ``wss://``.
``parley up --tls`` makes (once) a self-signed certificate for the machine's names and addresses -- ``localhost``,
the host name, 127.0.0.1, ::1 and the LAN address a phone on the same network reaches -- stores it under the data
directory and reuses it while it still covers those names and has a month left. ``trust_hint`` says how to accept it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from parley.settings import Settings

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
VALID_DAYS = 397  # browsers refuse server certificates valid for longer than 398 days
RENEW_BEFORE_DAYS = 30
CERT_NAME = "parley-cert.pem"
KEY_NAME = "parley-key.pem"


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path


class TLSConfigError(ValueError):
    """The operator's certificate settings cannot work; the message says why, in one line."""


def server_files(settings: Settings) -> TLSFiles | None:
    """The certificate and key the relay serves with (``PARLEY_TLS_CERT_FILE`` / ``_KEY_FILE``), checked to load
    as a pair; None for plain HTTP."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if not cert and not key:
        return None
    if not (cert and key):
        raise TLSConfigError("set both PARLEY_TLS_CERT_FILE and PARLEY_TLS_KEY_FILE, or neither")
    for path in (cert, key):
        if not Path(path).is_file():
            raise TLSConfigError(f"TLS file {path} does not exist")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"cannot use {cert} with {key}: {exc.strerror or exc}") from None
    return TLSFiles(Path(cert), Path(key))


@dataclass(frozen=True)
class MachineNames:
    dns: tuple[str, ...]
    ips: tuple[IPAddress, ...]

    @property
    def lan_ip(self) -> IPAddress | None:
        """The first address that is neither loopback nor link-local: what a phone on the same network opens."""
        for ip in self.ips:
            if not ip.is_loopback and not ip.is_link_local:
                return ip
        return None


def _outbound_ip() -> str | None:
    """The address of the interface that routes off this machine. A UDP "connect" sends nothing; it only picks
    the route, so this works offline as long as a default route exists."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))
        return str(s.getsockname()[0])
    return None


def machine_names() -> MachineNames:
    host = socket.gethostname()
    dns = ["localhost"]
    for name in (host, socket.getfqdn()):
        if name and name not in dns and not _is_ip(name):
            dns.append(name)
    found: list[str] = []
    outbound = _outbound_ip()
    if outbound:
        found.append(outbound)
    with contextlib.suppress(OSError):
        found += [str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]
    ips: list[IPAddress] = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    for text in found:
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(text.split("%")[0])
            if ip not in ips:
                ips.append(ip)
    lan = [ip for ip in ips if not ip.is_loopback and not ip.is_link_local]
    loop = [ip for ip in ips if ip.is_loopback or ip.is_link_local]
    return MachineNames(tuple(dns), tuple(lan + loop))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _covers(cert: x509.Certificate, names: MachineNames, now: dt.datetime) -> bool:
    if cert.not_valid_after_utc - now < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = set(san.get_values_for_type(x509.IPAddress))
    return set(names.dns) <= dns and set(names.ips) <= ips


def make_self_signed(names: MachineNames, now: dt.datetime) -> tuple[bytes, bytes]:
    """A P-256 key and a self-signed server certificate for ``names``, as PEM (certificate, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"Parley on {names.dns[-1]}"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Parley (self-signed)"),
        ]
    )
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names.dns]
    alt += [x509.IPAddress(ip) for ip in names.ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_self_signed(
    directory: Path, names: MachineNames | None = None, *, now: dt.datetime | None = None
) -> TLSFiles:
    """The self-signed pair in ``directory``: reused while it covers ``names`` (default: this machine's) and has a
    month left, else made anew. The key file is readable by its owner only."""
    names = names or machine_names()
    now = now or dt.datetime.now(dt.UTC)
    files = TLSFiles(directory / CERT_NAME, directory / KEY_NAME)
    if files.cert.is_file() and files.key.is_file():
        try:
            if _covers(x509.load_pem_x509_certificate(files.cert.read_bytes()), names, now):
                return files
        except ValueError:
            logger.warning("%s is not a readable certificate; making a new one", files.cert)
    directory.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = make_self_signed(names, now)
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    files.cert.write_bytes(cert_pem)
    logger.info("made a self-signed certificate for %s in %s", ", ".join(_shown(names)), directory)
    return files


def _shown(names: MachineNames) -> list[str]:
    return list(names.dns) + [str(ip) for ip in names.ips]


def fingerprint(cert_path: Path) -> str:
    """SHA-256 of the certificate (DER), as browsers show it: ``AB:CD:...``."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def trust_hint(files: TLSFiles, names: MachineNames, port: int) -> str:
    """What to tell the person starting the demo: the address a phone opens and how to accept the certificate."""
    lan = names.lan_ip
    host = (f"[{lan}]" if lan.version == 6 else str(lan)) if lan is not None else "localhost"
    return (
        f"HTTPS with a self-signed certificate: on a phone on the same network open https://{host}:{port}/ and "
        "accept the warning (Advanced -> Proceed; on iPhone: Show Details -> visit this website). To trust it "
        f"instead, install {files.cert} on the device. SHA-256 fingerprint: {fingerprint(files.cert)}"
    )
