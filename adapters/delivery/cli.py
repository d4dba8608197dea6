"""``teleimagerie delivery …``: run the sender, list deliveries, send one again.

``retry`` applies to a dead letter (``lettre-morte``), a refused (``rejete``) or a held
delivery; a sent, cancelled or already queued one, or an unknown id, is refused on stderr
with what would apply, exit 2, nothing changed; a retry is audited with the operator
(issue 24, R-INT-2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

from adapters.hl7v2.cli import operator

if TYPE_CHECKING:
    from adapters.delivery.outbox import Outbox
    from fhir_server.runtime import CoreBuilder


def retry(outbox: Outbox, delivery_id: str, who: str) -> int:
    """``delivery retry ID``: 0 queued again, 2 refused or unknown (nothing changed)."""
    from adapters.exchange import Refused

    try:
        found = outbox.retry(delivery_id, who)
    except Refused as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if found is None:
        print(f"no delivery {delivery_id} (Task ids: teleimagerie delivery list)",
              file=sys.stderr)
        return 2
    print(f"Task/{found.id}: {found.state} ({found.channel} v{found.version}), next attempt "
          "now, attempts reset")
    return 0


def run(args: argparse.Namespace, build: CoreBuilder) -> int:
    from adapters.cda.check import delivery_check
    from adapters.delivery import service
    from adapters.delivery.engine import Sender
    from adapters.delivery.outbox import Outbox, register_all
    from adapters.delivery.settings import DeliverySettings
    from adapters.hl7v2.settings import Hl7Settings
    from fhir_server.config import Settings

    if args.delivery_command == "run":
        service.main(build)
        return 0
    register_all()
    server = build(Settings.from_env())
    try:
        outbox = Outbox(server)
        if args.delivery_command == "once":
            sender = Sender(server, DeliverySettings.from_env(), Hl7Settings.from_env(),
                            check=delivery_check())  # issue 26
            print(f"{asyncio.run(sender.run_once())} delivery(ies) examined")
            return 0
        if args.delivery_command == "retry":
            return retry(outbox, args.id, operator())
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
