"""Test peers for the delivery channels, started by the tests on free local ports: an
XDS.b document repository (HTTP, MTOM), an MLLP receiver (the RIS) and an SMTP relay
(aiosmtpd). Each keeps what it received and answers from a script, so a test can make a
peer fail, then recover. They parse with the standard library, not with our code."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lxml import etree

RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
SOAP = "http://www.w3.org/2003/05/soap-envelope"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"


def certificate(directory: Path) -> tuple[str, str]:
    """A self-signed seal certificate and its key (PEM files) for the VIHF signature."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CH de proximité"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "cachet teleimagerie test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "seal.pem", directory / "seal.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def registry_response(status: str = SUCCESS, *errors: str) -> bytes:
    body = "".join(f'<rs:RegistryError errorCode="{e}" codeContext="{e} (test)" '
                   'severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/>'
                   for e in errors)
    listed = f"<rs:RegistryErrorList>{body}</rs:RegistryErrorList>" if errors else ""
    return (f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Body>'
            f'<rs:RegistryResponse xmlns:rs="{RS}" status="{status}">{listed}'
            "</rs:RegistryResponse></soap:Body></soap:Envelope>").encode()


class XdsPeer:
    """An ITI-41 document repository (and ITI-57 registry): keeps each request as
    (headers, root XML, parts) and answers ``script`` entries in turn — (HTTP status,
    body) — then Success."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, bytes]] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                content_type = self.headers["Content-Type"]
                if content_type.startswith("application/soap+xml"):  # ITI-57: no parts
                    peer.requests.append({"content_type": content_type, "parts": {},
                                          "root": etree.fromstring(data),
                                          "root_type": content_type})
                else:
                    msg = email.message_from_bytes(
                        f"Content-Type: {content_type}\r\n\r\n".encode() + data,
                        policy=email.policy.HTTP)
                    parts = list(msg.iter_parts())
                    peer.requests.append({
                        "content_type": content_type,
                        "root": etree.fromstring(parts[0].get_payload(decode=True)),
                        "root_type": parts[0]["Content-Type"],
                        "parts": {str(p["Content-ID"]).strip("<>"):
                                  p.get_payload(decode=True) for p in parts[1:]}})
                status, answer = peer.script.pop(0) if peer.script else (
                    200, registry_response())
                self.send_response(status)
                self.send_header("Content-Type", "application/soap+xml; charset=UTF-8")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/repository"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MllpPeer:
    """An MLLP receiver: keeps each message and answers with ``answer(message)``."""

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.messages: list[bytes] = []
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                buffer = b""
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    buffer += chunk
                    while b"\x1c\r" in buffer:
                        frame, _, buffer = buffer.partition(b"\x1c\r")
                        message = frame.lstrip(b"\x0b")
                        self.messages.append(message)
                        conn.sendall(b"\x0b" + self.answer(message) + b"\x1c\r")

    def close(self) -> None:
        self.sock.close()


def ack(message: bytes, code: str) -> bytes:
    fields = message.split(b"\r")[0].split(b"|")
    return (b"MSH|^~\\&|RIS|SITE|TLRapp|TLRfacility|20260101120000||ACK^" +
            fields[8].split(b"^")[1] + b"^ACK|A1|P|2.6\rMSA|" + code.encode() + b"|" +
            fields[9] + b"\r")


class SmtpPeer:
    """An SMTP relay (aiosmtpd): keeps each accepted mail; ``refuse`` holds SMTP answers
    (e.g. ``451 …``) given to the next DATA commands instead of accepting."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.mails: list[email.message.EmailMessage] = []
        self.refuse: list[str] = []
        peer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if peer.refuse:
                    return peer.refuse.pop(0)
                peer.mails.append(email.message_from_bytes(
                    envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
                return "250 OK"

        with socket.socket() as probe:  # Controller checks readiness on its own port
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
