"""The self-signed certificate ``parley up --tls`` makes: its names, its reuse, and a real TLS handshake with it."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from parley.tls import MachineNames, ensure_self_signed, fingerprint, machine_names, trust_hint

NAMES = MachineNames(
    dns=("localhost", "farmbox"),
    ips=(
        ipaddress.ip_address("192.168.1.23"),
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ),
)
NOW = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)


def _san(path: Path) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {
        str(i) for i in san.get_values_for_type(x509.IPAddress)
    }


def test_the_certificate_names_the_machine_and_the_key_is_private(tmp_path: Path) -> None:
    files = ensure_self_signed(tmp_path, NAMES, now=NOW)
    dns, ips = _san(files.cert)
    assert dns == {"localhost", "farmbox"}
    assert ips == {"192.168.1.23", "127.0.0.1", "::1"}
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert NAMES.lan_ip == ipaddress.ip_address("192.168.1.23")
    hint = trust_hint(files, NAMES, 8443)
    assert "https://192.168.1.23:8443/" in hint and fingerprint(files.cert) in hint


def test_it_is_reused_while_valid_and_remade_for_new_names_or_near_expiry(tmp_path: Path) -> None:
    first = ensure_self_signed(tmp_path, NAMES, now=NOW).cert.read_bytes()
    assert ensure_self_signed(tmp_path, NAMES, now=NOW + dt.timedelta(days=300)).cert.read_bytes() == first
    moved = MachineNames(NAMES.dns, (ipaddress.ip_address("10.0.0.7"), *NAMES.ips[1:]))
    remade = ensure_self_signed(tmp_path, moved, now=NOW).cert.read_bytes()
    assert remade != first and "10.0.0.7" in _san(tmp_path / "parley-cert.pem")[1]
    later = ensure_self_signed(tmp_path, moved, now=NOW + dt.timedelta(days=380)).cert.read_bytes()
    assert later != remade  # less than a month left: renewed
    (tmp_path / "parley-cert.pem").write_text("not a certificate")
    assert (
        ensure_self_signed(tmp_path, moved, now=NOW).cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    )


def test_this_machine_has_loopback_names() -> None:
    names = machine_names()
    assert "localhost" in names.dns
    assert ipaddress.ip_address("127.0.0.1") in names.ips


@pytest.mark.parametrize("server_name", ["localhost", "127.0.0.1"])
async def test_a_client_that_trusts_the_certificate_completes_a_tls_handshake(
    tmp_path: Path, server_name: str
) -> None:
    files = ensure_self_signed(tmp_path)  # this machine's names, today's date
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(files.cert, files.key)
    client_ctx = ssl.create_default_context(cafile=str(files.cert))

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname=server_name
        )
        writer.write(b"hello\n")
        assert await reader.readline() == b"hello\n"
        writer.close()
        await writer.wait_closed()


def test_parley_up_tls_makes_the_certificate_once_and_refuses_a_bad_pair(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from parley.procs import StartFailed
    from parley.settings import Settings
    from parley.up import _tls_update

    settings = Settings(tls_dir=str(tmp_path / "tls"))
    assert _tls_update(settings, "127.0.0.1", 8443, self_signed=False) == {}
    with caplog.at_level("INFO", logger="parley.up"):
        update = _tls_update(settings, "127.0.0.1", 8443, self_signed=True)
    assert update == {
        "tls_cert_file": str(tmp_path / "tls" / "parley-cert.pem"),
        "tls_key_file": str(tmp_path / "tls" / "parley-key.pem"),
    }
    assert "SHA-256 fingerprint" in caplog.text and "--host 0.0.0.0" in caplog.text
    first = Path(str(update["tls_cert_file"])).read_bytes()
    assert (
        Path(str(_tls_update(settings, "0.0.0.0", 8443, self_signed=True)["tls_cert_file"])).read_bytes()
        == first
    )
    half = Settings(tls_cert_file=str(update["tls_cert_file"]))
    with pytest.raises(StartFailed, match="set both"):
        _tls_update(half, "127.0.0.1", 8443, self_signed=True)
