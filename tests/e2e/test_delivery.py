"""End to end: ``teleimagerie serve`` (HTTP, MLLP listener, delivery process) and the
peers of report delivery on real sockets — an XDS.b repository that fails once then
recovers, a RIS on MLLP, an MSSanté relay (issue 8; R-REP-5, R-REP-6, R-INT-2)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from adapters.delivery.outbox import CODE, SYSTEM
from fhir_server.security.devissuer import DevIssuer
from tests import peers
from tests.behaviour.test_report_delivery import GP_MAIL, final, qualify
from tests.behaviour.workflow_world import World
from tests.e2e.harness import eventually, free_port, server_env, start, stop

pytestmark = pytest.mark.e2e


class RemoteWorld(World):
    """The behaviour tests' world, driven over HTTP against the running server."""

    def __init__(self, base: str, data: Path) -> None:
        self.base = base
        super().__init__(SimpleNamespace(), data)  # type: ignore[arg-type]

    def user(self, roles: list[str], nat: str | None = None,
             scopes: list[str] | None = None, finess: list[str] | None = None
             ) -> httpx.Client:  # type: ignore[override]
        token = DevIssuer(self.dir).mint(sub=f"e2e:{roles[0]}:{nat}", roles=roles,
                                         scopes=scopes or ["user/*.cruds"], id_nat_ps=nat,
                                         finess=finess)
        return httpx.Client(base_url=self.base, timeout=30,
                            headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def system(tmp_path: Path) -> Iterator[dict[str, Any]]:
    xds, smtp = peers.XdsPeer(), peers.SmtpPeer()
    ris = peers.MllpPeer(lambda m: peers.ack(m, "AA"))
    cert, key = peers.certificate(tmp_path)
    http_port = free_port()
    env = server_env(tmp_path / "data", http_port,
                     TELEIMG_DMP_XDS_URL=xds.url, TELEIMG_DMP_SIGN_CERT=cert,
                     TELEIMG_DMP_SIGN_KEY=key, TELEIMG_DMP_SOURCE_ID="1.2.250.1.999.1",
                     TELEIMG_DMP_STRUCTURE_ID="1750000001",
                     TELEIMG_MSS_SMTP=f"127.0.0.1:{smtp.port}",
                     TELEIMG_MSS_FROM="teleimagerie@ch-proximite.mssante.fr",
                     TELEIMG_HL7_ROUTES=f"750000001=127.0.0.1:{ris.port}",
                     TELEIMG_DELIVERY_RETRY_BASE="0.3", TELEIMG_DELIVERY_RECHECK="0.5")
    proc = start(env)
    try:
        yield {"base": f"http://127.0.0.1:{http_port}", "data": tmp_path / "data",
               "xds": xds, "smtp": smtp, "ris": ris}
    finally:
        stop(proc)
        xds.close()
        smtp.close()
        ris.close()


def test_final_report_reaches_dmp_ris_and_mssante_once(system: dict[str, Any]) -> None:
    """Written over HTTP, delivered by the server's own delivery process: the DMP
    repository fails once (503) then takes the document; each peer gets it once."""
    xds: peers.XdsPeer = system["xds"]
    xds.script = [(503, b"busy")]
    world = RemoteWorld(system["base"], system["data"])
    qualify(world)
    final(world)
    assert eventually(lambda: len(xds.requests) >= 2 and len(system["smtp"].mails) >= 1
                 and len(system["ris"].messages) >= 1), (
        len(xds.requests), len(system["smtp"].mails), len(system["ris"].messages))

    def states() -> dict[str, str]:
        r = world.ris.get(f"/fhir/Task?code={SYSTEM}|{CODE}&patient={world.refs['patient']}")
        return {(t["resource"].get("owner") or {}).get("reference", "DMP"):
                t["resource"]["businessStatus"]["coding"][0]["code"]
                for t in r.json().get("entry", [])}

    assert eventually(lambda: states().get("DMP") == "envoye"), states()
    found = states()
    assert found[world.refs["gp"]] == "envoye" and found[world.refs["site"]] == "envoye"
    assert found[world.refs["requester"]] == "adresse-absente"
    time.sleep(1.5)  # further passes of the sender send nothing again
    assert len(xds.requests) == 2 and len(system["smtp"].mails) == 1
    assert len(system["ris"].messages) == 1
    assert system["smtp"].mails[0]["To"] == GP_MAIL
