"""The ``teleimagerie`` command line: ``serve``, ``token``, ``hl7 …``, ``dicom …``,
``delivery …``,
``audit verify|head``, ``ig package``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from fhir_server.config import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env()
    host = args.host or settings.http_host
    port = args.port or settings.http_port
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    store = settings.store_url or f"embedded SQLite in {settings.data_dir.resolve()}"
    logging.getLogger("teleimagerie").info("FHIR base http://%s:%s/fhir, store: %s",
                                           host, port, store)
    # the listeners run in processes of their own: the HTTP workers stay free of them
    children = []
    if os.environ.get("TELEIMG_MLLP_PORT", "2575") not in ("0", "off"):
        children.append(subprocess.Popen(
            [sys.executable, "-m", "adapters.hl7v2.service"],
            env={**os.environ, "TELEIMG_MLLP_PARENT": str(os.getpid())}))
    if os.environ.get("TELEIMG_DELIVERY", "on").lower() not in ("0", "off", "false", "no"):
        children.append(subprocess.Popen(
            [sys.executable, "-m", "adapters.delivery.service"],
            env={**os.environ, "TELEIMG_DELIVERY_PARENT": str(os.getpid())}))
    if os.environ.get("TELEIMG_DICOM_PORT", "0") not in ("", "0", "off"):
        children.append(subprocess.Popen(
            [sys.executable, "-m", "adapters.dicom.service"],
            env={**os.environ, "TELEIMG_DICOM_PARENT": str(os.getpid())}))
    try:
        uvicorn.run("fhir_server.http.app:create_asgi", factory=True, host=host, port=port,
                    workers=args.workers, log_level=settings.log_level,
                    access_log=args.access_log)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def _hl7(args: argparse.Namespace) -> int:
    from adapters.hl7v2 import cli

    result: int = cli.run(args)
    return result


def _dicom(args: argparse.Namespace) -> int:
    from adapters.dicom import cli

    result: int = cli.run(args)
    return result


def _delivery(args: argparse.Namespace) -> int:
    from adapters.delivery import cli

    result: int = cli.run(args)
    return result


def _token(args: argparse.Namespace) -> int:
    from fhir_server.security.devissuer import DevIssuer
    from fhir_server.security.roles import ROLES

    settings = Settings.from_env()
    if not settings.auth.dev_issuer:
        print("the development issuer is disabled (TELEIMG_ENV=production)", file=sys.stderr)
        return 2
    unknown = [r for r in args.role if r not in ROLES]
    if unknown:
        print(f"unknown role(s) {', '.join(unknown)}; known: {', '.join(sorted(ROLES))}",
              file=sys.stderr)
        return 2
    system = all(r in ("ris", "pacs", "dmp-connector") for r in args.role)
    scopes = args.scope or (["system/*.cruds"] if system else
                            ["patient/*.cruds"] if args.patient else ["user/*.cruds"])
    sub = args.sub or (f"rpps:{args.rpps}" if args.rpps else
                       f"patient:{args.patient}" if args.patient else f"client:{args.role[0]}")
    token = DevIssuer(settings.data_dir, settings.auth.audience).mint(
        sub=sub, roles=args.role, scopes=scopes, id_nat_ps=args.rpps, patient=args.patient,
        acr=None if system and not args.acr else args.acr or "eidas2", name=args.name,
        finess=args.finess, lifetime=args.lifetime)
    print(token)
    return 0


def _audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fhir_server.audit.chain import head, verify
    from fhir_server.audit.export import HeadError, head_document, read_head, sign_head
    from fhir_server.store import open_store

    settings = Settings.from_env()
    store = open_store(settings.store_url, settings.data_dir)
    try:
        if args.audit_command == "head":
            seq, digest = head(store)
            document = head_document(seq, digest, f"teleimagerie {socket.gethostname()} "
                                     f"{settings.data_dir.resolve()}")
            if args.sign_key:
                print(sign_head(document, Path(args.sign_key).read_bytes()))
            else:
                print(json.dumps(document))
            return 0
        expected = None
        if args.head:
            try:
                expected = read_head(Path(args.head).read_text(encoding="utf-8"),
                                     Path(args.public_key).read_bytes()
                                     if args.public_key else None)
            except (HeadError, OSError) as exc:
                print(f"cannot use the exported head: {exc}", file=sys.stderr)
                return 2
        report = verify(store, expected)
    finally:
        store.close()
    for problem in report.problems:
        print(f"BROKEN: {problem}")
    status = "intact" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"audit chain {status}: {report.checked} events checked, head "
          f"{report.head_sequence} {report.head_hash}")
    return 0 if report.ok else 1


def _ig_package(args: argparse.Namespace) -> int:
    from fhir_server.validation.package import build

    count = build(Path(args.out))
    print(f"wrote {args.out}: {count} resources (StructureDefinition, CodeSystem, ValueSet, "
          "ConceptMap)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="teleimagerie", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the FHIR server (TELEIMG_* configure it)")
    serve.add_argument("--host", help="override TELEIMG_HTTP_HOST")
    serve.add_argument("--port", type=int, help="override TELEIMG_HTTP_PORT")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false")
    serve.set_defaults(func=_serve)
    token = sub.add_parser("token", help="print a token signed by the development issuer")
    token.add_argument("--role", action="append", required=True,
                       help="application role (repeatable), e.g. remote-imager")
    token.add_argument("--rpps", help="idNatPs / RPPS of the professional (SubjectNameID)")
    token.add_argument("--patient", help="patient context (Patient id) for patient tokens")
    token.add_argument("--scope", action="append", help="SMART scope (repeatable)")
    token.add_argument("--acr", help="authentication level (default eidas2 for users)")
    token.add_argument("--name", help="display name")
    token.add_argument("--finess", action="append", help="FINESS of the user's structure")
    token.add_argument("--sub", help="subject (default derived from rpps/patient/role)")
    token.add_argument("--lifetime", type=int, default=3600, help="seconds (default 3600)")
    token.set_defaults(func=_token)
    ig = sub.add_parser("ig", help="the implementation guide we ship (profiles, terminology)")
    ig_sub = ig.add_subparsers(dest="ig_command", required=True)
    pack = ig_sub.add_parser("package", help="write the IG as a FHIR NPM package (package.tgz)")
    pack.add_argument("--out", default="package.tgz", help="output file (default package.tgz)")
    pack.set_defaults(func=_ig_package)
    hl7 = sub.add_parser("hl7", help="HL7 v2 over MLLP: listen, send, browse, reprocess")
    hl7_sub = hl7.add_subparsers(dest="hl7_command", required=True)
    hl7_sub.add_parser("listen", help="run the MLLP listener and the outbox alone")
    send = hl7_sub.add_parser("send", help="send message files over MLLP, print the ACKs")
    send.add_argument("files", nargs="+", help="files of one or more messages (ER7)")
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=None, help="default TELEIMG_MLLP_PORT")
    send.add_argument("--timeout", type=float, default=30.0)
    listing = hl7_sub.add_parser("list", help="browse the message store")
    listing.add_argument("--status", help="received, processed, error, rejected, held, "
                         "pending, sent, failed")
    listing.add_argument("--outbound", action="store_true", help="messages we sent")
    listing.add_argument("--limit", type=int, default=50)
    reprocess = hl7_sub.add_parser("reprocess", help="process stored messages again")
    reprocess.add_argument("ids", nargs="+", help="message record ids (Basic ids)")
    replay = hl7_sub.add_parser("replay", help="reprocess every inbound message in a "
                                "status (default error)")
    replay.add_argument("--status", default="error")
    replay.add_argument("--limit", type=int, default=1000)
    hl7.set_defaults(func=_hl7)
    dicom = sub.add_parser("dicom", help="DICOM: import headers and dose reports, C-STORE SCP")
    dicom_sub = dicom.add_subparsers(dest="dicom_command", required=True)
    imp = dicom_sub.add_parser("import", help="import Part 10 files, folder trees, DICOMDIRs")
    imp.add_argument("paths", nargs="+")
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")
    dicom_sub.add_parser("scp", help="run the C-STORE SCP alone (TELEIMG_DICOM_*)")
    dicom.set_defaults(func=_dicom)
    delivery = sub.add_parser("delivery", help="report delivery (DMP, RIS, MSSanté): run "
                              "the sender, list, retry")
    delivery_sub = delivery.add_subparsers(dest="delivery_command", required=True)
    delivery_sub.add_parser("run", help="run the sender alone (TELEIMG_DMP_*, TELEIMG_MSS_*)")
    delivery_sub.add_parser("once", help="one pass over the due deliveries, then exit")
    listing = delivery_sub.add_parser("list", help="deliveries, newest first (JSON lines)")
    listing.add_argument("--state", help="business status, e.g. lettre-morte, "
                         "bloque-opposition, identite-non-qualifiee")
    listing.add_argument("--channel", choices=["dmp", "ris", "mssante"])
    listing.add_argument("--limit", type=int, default=100)
    again = delivery_sub.add_parser("retry", help="send a dead-lettered or held delivery "
                                    "again from attempt 1")
    again.add_argument("id", help="the delivery Task id")
    delivery.set_defaults(func=_delivery)
    audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="walk the hash chain, report broken links")
    verify.add_argument("--head", help="file written by 'audit head' earlier (JSON or JWS)")
    verify.add_argument("--public-key", help="PEM public key that signed the head")
    head = audit_sub.add_parser("head", help="print the chain head (sequence, hash) to keep "
                                "elsewhere")
    head.add_argument("--sign-key", help="PEM private key (EC P-256 or RSA): print a JWS")
    audit.set_defaults(func=_audit)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
