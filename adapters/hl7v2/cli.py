"""``teleimagerie hl7 …``: listen, send files, browse the message store, reprocess,
replay, resend.

Operator commands cannot destroy work (issue 24, R-INT-2): ``reprocess`` and ``replay``
apply to inbound messages not yet processed, ``resend`` to outbound messages not pending;
anything else — an unknown id included — is refused on stderr with what would apply, exit
2, and when one id of a command is refused none is acted on. Every action is audited with
the operator (``user@host``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.hl7v2.mllp import MllpClient
from adapters.hl7v2.records import INBOUND, KIND_SYSTEM, OUTBOUND, Record
from adapters.hl7v2.settings import Hl7Settings, SettingError
from adapters.transaction import literal

if TYPE_CHECKING:
    from adapters.hl7v2.receiver import Receiver
    from fhir_server.runtime import CoreBuilder


def split_messages(data: bytes) -> list[bytes]:
    """A file may hold several messages: each starts at a line beginning with MSH."""
    text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    parts = re.split(rb"\r(?=MSH)", text)
    out = []
    for part in parts:
        lines = [line for line in part.split(b"\r") if line.strip()]
        if lines:
            out.append(b"\r".join(lines) + b"\r")
    return out


def declared_charset(message: bytes) -> str | None:
    """MSH-18 of ``message`` as written (ASCII bytes), or None when absent."""
    if not message.startswith(b"MSH") or len(message) < 4:
        return None
    first = re.split(rb"[\r\n]", message, maxsplit=1)[0]
    fields = first.split(message[3:4])
    # MSH-1 is the separator itself: fields[n] is MSH-(n+1)
    value = fields[17].split(b"^")[0].strip() if len(fields) > 17 else b""
    return value.decode("ascii", errors="replace") or None


def ack_text(ack: bytes, sent: bytes) -> str:
    """An ACK as text, decoded in the charset it declares (MSH-18), else the one of the
    message it answers (the receiver answers in that one), else UTF-8."""
    from adapters.hl7v2.message import CHARSETS

    for declared in (declared_charset(ack), declared_charset(sent)):
        if declared and declared in CHARSETS:
            return ack.decode(CHARSETS[declared], errors="replace")
    return ack.decode("utf-8", errors="replace")


async def _send(files: list[str], host: str, port: int, timeout: float) -> int:
    failures = 0
    async with MllpClient(host, port, timeout) as client:
        for name in files:
            for message in split_messages(Path(name).read_bytes()):
                ack = await client.send(message)
                text = ack_text(ack, message).replace("\r", "\n").strip()
                print(f"# {name}\n{text}\n")
                if b"MSA|AA" not in ack and b"MSA|CA" not in ack:
                    failures += 1
    return failures


def operator() -> str:
    """Who runs an operator command, for its AuditEvent: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _checked(ids: list[str], check: Callable[[str], Record]) -> list[Record] | None:
    """Every record of ``ids`` through ``check`` (``Receiver.check_*``), or None after
    printing why each refused one does not apply (then nothing is done). An id given
    twice is acted on once (issue 24: the second pass found it processed and crashed)."""
    from adapters.hl7v2.receiver import Refused

    records: list[Record] = []
    problems: list[str] = []
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        print(f"{len(ids) - len(unique)} id(s) given more than once: each is acted on once",
              file=sys.stderr)
    ids = unique
    for rid in ids:
        try:
            records.append(check(rid))
        except KeyError:
            problems.append(f"{rid}: no such HL7 message record (ids: teleimagerie hl7 "
                            "list [--outbound])")
        except Refused as exc:
            problems.append(str(exc))
    if not problems:
        return records
    for line in problems:
        print(line, file=sys.stderr)
    if len(ids) > 1:
        print(f"nothing done: {len(problems)} of {len(ids)} id(s) refused", file=sys.stderr)
    return None


def reprocess(receiver: Receiver, ids: list[str], who: str) -> int:
    """``hl7 reprocess ID…``: 0 all processed (or held), 1 some in error again, 2 refused."""
    records = _checked(ids, receiver.check_reprocess)
    if records is None:
        return 2
    worst = 0
    for record in records:
        done = receiver.reprocess(record.id, who)
        print(f"{done.id}: {done.status} {done.ack_code} {done.error}".rstrip())
        worst = max(worst, 0 if done.status in ("processed", "held") else 1)
    return worst


def replay(receiver: Receiver, status: str, limit: int, who: str) -> int:
    """``hl7 replay --status S``: reprocess the inbound messages in status S, except those
    that reused another's control id (the sender was told AE 205 and is expected to send
    them under a new MSH-10: ``reprocess ID`` processes one anyway) and unreadable ones."""
    from adapters.hl7v2.receiver import REPROCESSABLE, Refused

    if status not in REPROCESSABLE:
        print(f"replay applies to inbound messages in status {', '.join(REPROCESSABLE)}, "
              f"not {status!r}", file=sys.stderr)
        return 2
    worst = 0
    for record in receiver.messages.find([("code", f"{KIND_SYSTEM}|{INBOUND}"),
                                          ("hl7-status", status)], limit):
        if record.reused:
            print(f"{record.id}: skipped, its control id {record.control} belongs to another "
                  f"message (teleimagerie hl7 reprocess {record.id} processes it anyway)",
                  file=sys.stderr)
            continue
        try:
            done = receiver.reprocess(record.id, who)
        except (KeyError, Refused) as exc:
            print(f"{record.id}: skipped, {exc}", file=sys.stderr)
            continue
        print(f"{done.id}: {done.status} {done.ack_code} {done.error}".rstrip())
        worst = max(worst, 0 if done.status in ("processed", "held") else 1)
    return worst


def resend(receiver: Receiver, ids: list[str], who: str) -> int:
    """``hl7 resend ID…``: outbound messages queued again (0), or refused (2)."""
    records = _checked(ids, receiver.check_resend)
    if records is None:
        return 2
    for record in records:
        was = record.attempts
        done = receiver.resend(record.id, who)
        print(f"{done.id}: pending, {done.type or '?'} to {done.destination or '?'}, next "
              f"attempt now (attempts reset, {was} before)")
    return 0


def listing(receiver: Receiver, outbound: bool, status: str | None, limit: int,
            control: str | None = None) -> int:
    """``hl7 list``: newest first, one line each — id, time, status, type, the control
    key, whose key it is (``own``; ``reused``: another message owns it, AE 205;
    ``unreadable``: read best-effort from a message that did not parse), ACK, patient,
    error. ``control``: only the messages whose MSH-10 is that (MSA-2 of an ACK)."""
    from adapters.hl7v2.receiver import describe
    from adapters.hl7v2.records import STATUSES

    if status and status not in STATUSES:
        print(f"unknown status {status!r} ({', '.join(STATUSES)})", file=sys.stderr)
        return 2
    params = [("code", f"{KIND_SYSTEM}|{OUTBOUND if outbound else INBOUND}"),
              ("_sort", "-_lastUpdated")]
    if status:
        params.append(("hl7-status", status))
    if control:
        params.append(("hl7-control", literal(control)))
    for record in receiver.messages.find(params, limit):
        d = describe(record)
        print(f"{d['id']}  {record.created}  {d['status']:<9} {d['type'] or '-':<8} "
              f"{d['control'] or '-'}  {d['key']}  {d['ack'] or '-'}  "
              f"{d['patient'] or '-'}  {d['error']}".rstrip())
    return 0


def run(args: argparse.Namespace, build: CoreBuilder) -> int:
    from fhir_server.config import Settings

    if args.hl7_command == "listen":
        from adapters.hl7v2 import service

        service.main(build)
        return 0
    if args.hl7_command == "send":
        try:
            port = args.port or Hl7Settings.from_env().port
        except SettingError as exc:
            print(exc, file=sys.stderr)
            return 2
        try:
            failures = asyncio.run(_send(args.files, args.host, port, args.timeout))
        except (OSError, TimeoutError) as exc:
            print(f"cannot reach {args.host}:{port}: {exc}", file=sys.stderr)
            return 2
        return 1 if failures else 0
    from adapters.hl7v2.receiver import Receiver

    try:
        hl7 = Hl7Settings.from_env()
    except SettingError as exc:
        print(exc, file=sys.stderr)
        return 2
    server = build(Settings.from_env())
    receiver = Receiver(server, hl7)
    try:
        if args.hl7_command == "list":
            return listing(receiver, args.outbound, args.status, args.limit,
                           args.control)
        if args.hl7_command == "replay":
            return replay(receiver, args.status, args.limit, operator())
        if args.hl7_command == "resend":
            return resend(receiver, args.ids, operator())
        return reprocess(receiver, args.ids, operator())
    finally:
        if server.audit is not None:
            server.audit.close()
