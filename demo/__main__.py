"""``make demo`` / ``python -m demo``: a fresh server, stand-in peers, three requests
carried from order to report, narrated step by step (issue 24; demo/README.md).

The stand-ins (a RIS on MLLP, a DMP XDS.b repository, an MSSanté SMTP relay) are the
ones the end-to-end tests use (``tests/peers.py``): they keep what they receive.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from demo.loop import INS_TEST, ROOT, Loop, environment, listening, wait

INS_1, INS_2, INS_3 = "283052312345678", "279035121518989", "291077512345612"


def _port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _step(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def main(argv: list[str] | None = None) -> int:
    from tests import peers

    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--data", help="data dir (default: a new one under ./demo-data)")
    parser.add_argument("--exit", action="store_true",
                        help="stop the server at the end instead of keeping it running")
    args = parser.parse_args(argv)
    started = time.monotonic()
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(
        prefix=time.strftime("run-%Y%m%d-%H%M%S-"), dir=_mkdir(ROOT / "demo-data")))
    ris = peers.MllpPeer(lambda m: peers.ack(m, "AA"))
    xds, smtp = peers.XdsPeer(), peers.SmtpPeer()
    cert, key = peers.certificate(data.parent)
    http, mllp, dicom = _port(8080), _port(2575), _port(11112)
    env = environment(data, http, mllp, dicom, ris.port, xds.url, smtp.port, cert, key,
                      TELEIMG_LOG_LEVEL="info")
    log = data / "server.log"
    _step("1. le serveur / the server")
    print(f"données / data: {data}\njournal / log: {log}")
    with log.open("ab") as out:
        server = subprocess.Popen([sys.executable, "-m", "teleimagerie.cli", "serve"],
                                  env=env, cwd=ROOT, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{http}"
    if not wait(lambda: _up(base, server) and listening(mllp) and listening(dicom),
                60, 0.3):
        print(f"the server did not start: see {log}", file=sys.stderr)
        server.kill()
        return 1
    print(f"FHIR {base}/fhir · MLLP 127.0.0.1:{mllp} · DICOM TELEIMAGERIE@127.0.0.1:{dicom}")
    print(f"pairs simulés / stand-ins: RIS MLLP :{ris.port}, DMP XDS.b {xds.url}, "
          f"MSSanté SMTP :{smtp.port}")
    loop = Loop(base, mllp, dicom, data, env, say=lambda t: print(f"  · {t}", flush=True))
    try:
        _step("2. l'annuaire / the directory")
        refs = loop.directory()

        _step("3. une demande du RIS (flux 1), images, compte rendu / an order over HL7")
        loop.send_hl7("01-orm-o01-nw-scanner-thorax.hl7")
        sr = loop.request_of("DEMO-0001")
        assert sr is not None
        loop.validate(sr)
        wait(lambda: any(b"ORU^R01" in m for m in ris.messages), 20)
        print(f"  · RIS ← ORU^R01 (flux 3, acceptation) : {_count(ris, b'ORU^R01')} reçu(s)")
        loop.send_hl7("02-omi-o23-sr-scanner-thorax.hl7")
        uid = loop.images("DEMO-0001", "IPP-DEMO-0001", "ARNAUDET^Ysoline", "19830522",
                          study_uid="1.2.250.1.999.77.1")
        study = wait(lambda: loop.study(uid), 30)
        print(f"  · étude ImagingStudy/{study['id']} : {loop.state(sr['id'])}")
        loop.report(sr, study)
        loop.settled(sr["id"], 3)
        loop.pull(INS_1)

        _step("4. les images avant la demande / images before their order")
        uid = loop.images("DEMO-0002", "IPP-DEMO-0002", "CHARPENTIER^Xavière", "19790315")
        waiting = wait(lambda: loop.study(uid), 30)
        print(f"  · étude ImagingStudy/{waiting['id']} en attente de sa demande "
              f"(patient provisoire {waiting['subject']['reference']})")
        loop.send_hl7("03-orm-o01-nw-after-images.hl7")
        sr = loop.request_of("DEMO-0002")
        assert sr is not None
        loop.validate(sr)
        study = loop.study(uid)
        assert study is not None
        print(f"  · l'étude est rattachée à {study.get('basedOn', [{}])[0].get('reference')}"
              f" : {loop.state(sr['id'])}")
        loop.report(sr, study)
        loop.settled(sr["id"], 3)

        _step("5. une demande d'un DPI en FHIR / a request over FHIR")
        sr = loop.request_over_fhir("DEMO-0003", refs, "BERTHELOT", INS_3)
        loop.validate(sr)
        uid = loop.images("DEMO-0003", "IPP-DEMO-0003", "BERTHELOT^Zoé", "19910704")
        study = wait(lambda: loop.study(uid), 30)
        loop.report(sr, study)
        loop.settled(sr["id"], 3)
        loop.pull(INS_3)

        _step("6. ce que les pairs ont reçu / what the peers received")
        print(f"  RIS (MLLP) : {_count(ris, b'ORU^R01')} ORU^R01, "
              f"{_count(ris, b'MDM^T02')} MDM^T02")
        print(f"  DMP (XDS.b ITI-41) : {len(xds.requests)} soumission(s)")
        print(f"  MSSanté (SMTP) : {len(smtp.mails)} message(s) → "
              f"{', '.join(sorted({str(m['To']) for m in smtp.mails}))}")
        _step("7. à regarder / look at it")
        env_line = f"TELEIMG_DATA_DIR={data}"
        print(f"  {env_line} .venv/bin/teleimagerie hl7 list\n"
              f"  {env_line} .venv/bin/teleimagerie hl7 list --outbound\n"
              f"  {env_line} .venv/bin/teleimagerie delivery list\n"
              f"  TOKEN=$({env_line} .venv/bin/teleimagerie token --role dmp-connector "
              "--scope system/DocumentReference.rs --scope system/Binary.r)\n"
              f"  curl -H \"Authorization: Bearer $TOKEN\" '{base}/fhir/DocumentReference?"
              f"patient.identifier={INS_TEST}%7C{INS_1}'")
        print(f"\ndurée / wall time: {time.monotonic() - started:.0f} s")
        if args.exit:
            return 0
        print("\nle serveur continue / the server keeps running — Ctrl-C pour arrêter")
        try:
            while server.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        for peer in (ris, xds, smtp):
            peer.close()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _up(base: str, server: subprocess.Popen[bytes]) -> bool:
    if server.poll() is not None:
        raise SystemExit(f"the server exited ({server.returncode})")
    try:
        return httpx.get(f"{base}/fhir/metadata", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _count(peer: object, kind: bytes) -> int:
    return sum(1 for m in getattr(peer, "messages", []) if kind in m)


if __name__ == "__main__":
    sys.exit(main())
