"""``teleimagerie delivery …``: run the sender, list deliveries, send one again."""

from __future__ import annotations

import argparse
import asyncio
import json


def run(args: argparse.Namespace) -> int:
    from adapters.delivery import service
    from adapters.delivery.engine import Sender
    from adapters.delivery.outbox import Outbox, register_all
    from adapters.delivery.settings import DeliverySettings
    from adapters.hl7v2.settings import Hl7Settings
    from fhir_server.config import Settings
    from fhir_server.runtime import build_core

    if args.delivery_command == "run":
        service.main()
        return 0
    register_all()
    server = build_core(Settings.from_env())
    try:
        outbox = Outbox(server)
        if args.delivery_command == "once":
            sender = Sender(server, DeliverySettings.from_env(), Hl7Settings.from_env())
            print(f"{asyncio.run(sender.run_once())} delivery(ies) examined")
            return 0
        if args.delivery_command == "retry":
            found = outbox.retry(args.id)
            if found is None:
                print(f"no delivery {args.id}")
                return 1
            print(f"Task/{found.id}: {found.state} ({found.channel} v{found.version})")
            return 0
        params = [("_sort", "-_lastUpdated")]
        if args.state:
            params.append(("business-status", args.state))
        if args.channel:
            params.append(("delivery-channel", args.channel))
        for d in outbox.find(params, limit=args.limit):
            row = {"id": d.id, "channel": d.channel, "state": d.state, "detail": d.detail,
                   "recipient": d.recipient or d.address, "document": d.document,
                   "version": d.version, "attempts": d.attempts, "next": d.next_attempt}
            print(json.dumps(row, ensure_ascii=False))
        return 0
    finally:
        if server.audit is not None:
            server.audit.close()
