"""``teleimagerie hl7 …``: listen, send files, browse the message store, reprocess."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

from adapters.hl7v2.mllp import MllpClient
from adapters.hl7v2.records import INBOUND, KIND_SYSTEM, OUTBOUND
from adapters.hl7v2.settings import Hl7Settings


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


async def _send(files: list[str], host: str, port: int, timeout: float) -> int:
    failures = 0
    async with MllpClient(host, port, timeout) as client:
        for name in files:
            for message in split_messages(Path(name).read_bytes()):
                ack = await client.send(message)
                text = ack.decode("utf-8", errors="replace").replace("\r", "\n").strip()
                print(f"# {name}\n{text}\n")
                if b"MSA|AA" not in ack and b"MSA|CA" not in ack:
                    failures += 1
    return failures


def run(args: argparse.Namespace) -> int:
    from fhir_server.config import Settings

    if args.hl7_command == "listen":
        from adapters.hl7v2 import service

        service.main()
        return 0
    if args.hl7_command == "send":
        port = args.port or Hl7Settings.from_env().port
        try:
            failures = asyncio.run(_send(args.files, args.host, port, args.timeout))
        except (OSError, TimeoutError) as exc:
            print(f"cannot reach {args.host}:{port}: {exc}", file=sys.stderr)
            return 2
        return 1 if failures else 0
    from adapters.hl7v2.receiver import Receiver, describe
    from fhir_server.runtime import build_core

    server = build_core(Settings.from_env())
    receiver = Receiver(server, Hl7Settings.from_env())
    try:
        if args.hl7_command == "list":
            params = [("code", f"{KIND_SYSTEM}|{OUTBOUND if args.outbound else INBOUND}"),
                      ("_sort", "-_lastUpdated")]
            if args.status:
                params.append(("hl7-status", args.status))
            for record in receiver.messages.find(params, args.limit):
                d = describe(record)
                print(f"{d['id']}  {record.created}  {d['status']:<9} {d['type']:<8} "
                      f"{d['control']}  {d['ack']}  {d['patient'] or ''}  {d['error']}")
            return 0
        if args.hl7_command == "replay":
            records = receiver.messages.find([("code", f"{KIND_SYSTEM}|{INBOUND}"),
                                              ("hl7-status", args.status)], args.limit)
            ids = [r.id for r in records]
        else:
            ids = args.ids
        worst = 0
        for rid in ids:
            try:
                record = receiver.reprocess(rid)
            except KeyError:
                print(f"{rid}: no such message", file=sys.stderr)
                worst = 2
                continue
            print(f"{rid}: {record.status} {record.ack_code} {record.error}")
            worst = max(worst, 0 if record.status in ("processed", "held") else 1)
        return worst
    finally:
        if server.audit is not None:
            server.audit.close()
