"""The ``teleimagerie`` command line: ``serve``, ``token``, ``hl7 …``, ``dicom …``,
``delivery …``, ``directory load``, ``audit verify|head``, ``ig package``.

``serve`` never runs half started (issue 24): a port it cannot bind, or a listener that
stops, stops it with status 1. ``token`` signs with the development issuer of the data
directory ``serve`` uses and never makes a new one unasked (``--init``)."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.provisioning import add_parser as directory_parser
from fhir_server import logs
from fhir_server.config import Settings
from fhir_server.interactions.bulk.command import add_parser as export_parser
from fhir_server.processes import READY_FD, cannot_listen
from fhir_server.store.check import add_parser as store_parser
from teleimagerie.wiring import build_core

# -- serve: the HTTP server and its listener processes (issue 24) -------------------------
START_TIMEOUT = 300.0  # seconds a listener may take to start (the SCP imports its spool)
STARTUP_FAILURE = 3  # uvicorn's exit status when its workers cannot start


@dataclass
class _Listener:
    label: str
    proc: subprocess.Popen[bytes]
    ready_fd: int


def _listeners() -> list[tuple[str, str, str]]:
    """(label, service module, parent variable) of the listener processes configured."""
    out = []
    if os.environ.get("TELEIMG_MLLP_PORT", "2575") not in ("0", "off"):
        out.append(("MLLP listener", "adapters.hl7v2.service", "TELEIMG_MLLP_PARENT"))
    if os.environ.get("TELEIMG_DELIVERY", "on").lower() not in ("0", "off", "false", "no"):
        out.append(("delivery sender", "adapters.delivery.service", "TELEIMG_DELIVERY_PARENT"))
    if os.environ.get("TELEIMG_DICOM_PORT", "0") not in ("", "0", "off"):
        out.append(("DICOM SCP", "adapters.dicom.service", "TELEIMG_DICOM_PARENT"))
    return out


def _start_listener(label: str, module: str, parent_var: str) -> _Listener:
    read, write = os.pipe()
    try:
        # a session of its own: a Ctrl+C in the terminal reaches `serve`, which stops it
        # the root's entry point runs the adapter's service on the core built here
        proc = subprocess.Popen([sys.executable, "-m", "teleimagerie.listen", module],
                                pass_fds=(write,),
                                start_new_session=True,
                                env={**os.environ, parent_var: str(os.getpid()),
                                     READY_FD: str(write)})
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)
    return _Listener(label, proc, read)


def _await_listeners(listeners: list[_Listener], timeout: float) -> str | None:
    """None once every listener said ``ready``; otherwise the line that says why not."""
    waiting = {x.ready_fd: x for x in listeners}
    got = dict.fromkeys(waiting, b"")
    deadline = time.monotonic() + timeout
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"{', '.join(x.label for x in waiting.values())} not ready after " \
                   f"{timeout:.0f} s"
        readable, _, _ = select.select(list(waiting), [], [], min(left, 1.0))
        for fd in readable:
            chunk = os.read(fd, 4096)
            got[fd] += chunk
            if chunk and b"\n" not in got[fd]:
                continue
            listener = waiting.pop(fd)
            line = got[fd].partition(b"\n")[0].decode("utf-8", "replace").strip()
            if line == "ready":
                continue
            if line.startswith("fail "):
                return line[5:]
            try:  # gone without a word: a crash, its traceback is on stderr above
                status: int | None = listener.proc.wait(10)
            except subprocess.TimeoutExpired:
                status = None
            return f"{listener.label} stopped before it was ready (exit status {status})"
    return None


def _watch(listeners: list[_Listener], stopping: threading.Event,
           stop_http: Callable[[], None], died: list[str]) -> None:
    """A listener that stops while the server runs stops the server (exit status 1): it
    never serves HTTP without its listeners; the service manager restarts it whole."""
    while not stopping.wait(0.5):
        for listener in listeners:
            status = listener.proc.poll()
            if status is not None and not stopping.is_set():
                died.append(listener.label)
                logging.getLogger("teleimagerie").error(
                    "%s stopped (exit status %s): stopping the server", listener.label,
                    status)
                stop_http()
                return


def _http_socket(host: str, port: int) -> socket.socket:
    """The HTTP socket, bound here before anything starts (as uvicorn binds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # listening now: a listener child cannot take the same port
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _Interrupted(Exception):
    pass


def _interrupt(signum: int, frame: object) -> None:
    raise _Interrupted


def _serve(args: argparse.Namespace) -> int:
    """The HTTP port is bound first, then the listener processes start and each reports
    on a pipe that it listens (or the one line saying why it cannot); only then does
    uvicorn serve, on the socket bound first. Any failure: one line on stderr, exit 1 —
    never a server half started (issue 24)."""
    settings = Settings.from_env()
    from adapters.hl7v2.settings import Hl7Settings, SettingError

    try:  # the MLLP / HL7 settings: one line and exit 2 before anything starts (issue 24)
        Hl7Settings.from_env()
    except SettingError as exc:
        print(exc, file=sys.stderr)
        return 2
    host = args.host or settings.http_host
    port = args.port or settings.http_port
    logs.configure(settings.log_level)  # redacted (R-SEC-6)
    from fhir_server.runtime import DEV_NOTICE, dev_mode_notice

    # once for serve, its listeners and workers (issue 29) — said when it runs, so that a
    # start that fails says only why, in one line
    dev_notice = dev_mode_notice(settings, say=False)
    try:
        sock = _http_socket(host, port)
    except OSError as exc:
        print(cannot_listen("HTTP", host, port, exc), file=sys.stderr)
        return 1
    listeners: list[_Listener] = []
    validator = None
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, _interrupt)  # a stop while the listeners start
    try:
        failed = _prepare(settings, args.access_log)
        if failed:
            print(failed, file=sys.stderr)
            return 1
        validator = _schematron_service()
        for label, module, parent_var in _listeners():
            listeners.append(_start_listener(label, module, parent_var))
        failure = _await_listeners(listeners, START_TIMEOUT)
        if failure:
            print(failure, file=sys.stderr)
            return 1
        if dev_notice:
            logging.getLogger("teleimagerie").warning(DEV_NOTICE)
        store = settings.store_url or f"embedded SQLite in {settings.data_dir.resolve()}"
        logging.getLogger("teleimagerie").info("FHIR base http://%s:%s/fhir, store: %s",
                                               host, port, store)
        return _run_http(settings, args, (host, port), sock, listeners, stopping)
    except (_Interrupted, KeyboardInterrupt):
        return 1
    finally:
        stopping.set()
        _stop(listeners)
        if validator is not None:
            validator.stop()
        sock.close()


def _schematron_service() -> Any:
    """One schematron validation service for the HTTP workers and listeners this serve
    starts (inherited through ``TELEIMG_SCHEMATRON_SERVICE``): Saxon compiles the ANS
    schematrons once per host, not once per worker (issue 26, ADR 0021 §7). None when
    one is configured already (shared by several serves) or the ANS kit is absent."""
    from adapters.cda import schematron, service

    if os.environ.get(service.SETTING) or not schematron.available():
        return None
    try:
        handle = service.start()
    except schematron.Unavailable as exc:  # each process validates by itself
        logging.getLogger("teleimagerie").warning("%s", exc)
        return None
    os.environ[service.SETTING] = handle.socket
    return handle


def _prepare(settings: Settings, access_log: bool) -> str | None:
    """Before any listener starts: the embedded store's migrations, then readiness and
    ``/metrics`` (issue 29); the one line saying why not, or None."""
    if settings.store_url is None or settings.store_url.startswith("sqlite:///"):
        # the embedded store's migrations run here, once, before the processes that
        # share the file open it together (on a new data directory they would race)
        from fhir_server.store import open_store

        try:
            open_store(settings.store_url, settings.data_dir).close()
        except (ValueError, OSError, sqlite3.Error) as exc:
            return f"teleimagerie serve: cannot open the store: {exc}"
    from adapters.queues import measure
    from fhir_server import metrics_server

    try:  # before any process that records metrics
        metrics_server.setup(settings, [m for _, m, _ in _listeners()], access_log,
                             queues=measure)
    except OSError as exc:
        where = metrics_server.metrics_address() or ("?", 0)
        return cannot_listen("metrics", *where, exc)
    return None


def _stop(listeners: list[_Listener]) -> None:
    for listener in listeners:
        if listener.proc.poll() is None:
            listener.proc.terminate()
    for listener in listeners:
        try:
            listener.proc.wait(10)
        except subprocess.TimeoutExpired:
            listener.proc.kill()
        with contextlib.suppress(OSError):
            os.close(listener.ready_fd)


def _run_http(settings: Settings, args: argparse.Namespace, where: tuple[str, int],
              sock: socket.socket, listeners: list[_Listener],
              stopping: threading.Event) -> int:
    """uvicorn on the socket bound first, watched: a listener that stops stops it."""
    host, port = where
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    died: list[str] = []
    config = uvicorn.Config("teleimagerie.wiring:create_asgi", factory=True, host=host,
                            port=port, workers=args.workers, log_level=settings.log_level,
                            # JSON: the access line is ours (fhir_server.metrics)
                            access_log=args.access_log and settings.log_format == "text",
                            log_config=logs.config(settings.log_level))
    # uvicorn handles SIGTERM from here on; a single worker raises it again once
    # stopped, into this no-op, so that the listeners are stopped below
    signal.signal(signal.SIGTERM, lambda *_: None)
    if config.workers > 1:
        # uvicorn < 0.30 takes the worker target, later ones build it
        extra: dict[str, Any] = {"target": uvicorn.Server(config).run} if "target" in \
            inspect.signature(Multiprocess).parameters else {}
        supervisor = Multiprocess(config, sockets=[sock], **extra)
        stop_http: Callable[[], None] = supervisor.should_exit.set
    else:
        server = uvicorn.Server(config)
        stop_http = lambda: setattr(server, "should_exit", True)  # noqa: E731
    threading.Thread(target=_watch, args=(listeners, stopping, stop_http, died),
                     daemon=True, name="listener-watch").start()
    try:
        if config.workers > 1:
            supervisor.run()
        else:
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    if died:
        return 1
    if config.workers > 1:
        return STARTUP_FAILURE if any(p.exitcode == STARTUP_FAILURE
                                      for p in supervisor.processes) else 0
    return 0 if server.started else STARTUP_FAILURE


def _hl7(args: argparse.Namespace) -> int:
    from adapters.hl7v2 import cli

    result: int = cli.run(args, build_core)
    return result


def _dicom(args: argparse.Namespace) -> int:
    from adapters.dicom import cli

    result: int = cli.run(args, build_core)
    return result


def _delivery(args: argparse.Namespace) -> int:
    from adapters.delivery import cli

    result: int = cli.run(args, build_core)
    return result


def _token(args: argparse.Namespace) -> int:
    from fhir_server.security.devissuer import DEV_ISSUER, DevIssuer
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
    system = all(ROLES[r].system for r in args.role)  # the role table says (R-SEC-1)
    scopes = args.scope or (["system/*.cruds"] if system else
                            ["patient/*.cruds"] if args.patient else ["user/*.cruds"])
    sub = args.sub or (f"rpps:{args.rpps}" if args.rpps else
                       f"patient:{args.patient}" if args.patient else f"client:{args.role[0]}")
    issuer = DevIssuer(settings.data_dir, settings.auth.audience)
    where = settings.data_dir.resolve()
    if not issuer.exists():
        if not args.init:
            print(f"no development issuer in {where} (TELEIMG_DATA_DIR): start `teleimagerie "
                  "serve` with this data directory first, set TELEIMG_DATA_DIR to the "
                  "server's, or pass --init", file=sys.stderr)
            return 2
        issuer.ensure()
    print(f"development issuer {DEV_ISSUER} key {issuer.kid} in {where}", file=sys.stderr)
    token = issuer.mint(
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
    print(f"wrote {args.out}: {count} resources (ImplementationGuide, StructureDefinition, "
          "CodeSystem, ValueSet, ConceptMap)")
    return 0


def _cda_validate(path: str) -> int:
    from adapters.cda.validate import main as validate  # the same check as before delivery

    return validate([path])


def main(argv: list[str] | None = None) -> int:
    from adapters.delivery.outbox import STATES
    from adapters.hl7v2.receiver import REPROCESSABLE
    from adapters.hl7v2.records import STATUSES
    from fhir_server import __version__

    parser = argparse.ArgumentParser(prog="teleimagerie", description=__doc__)
    parser.add_argument("--version", action="version", version=f"teleimagerie {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the FHIR server (TELEIMG_* configure it)")
    serve.add_argument("--host", help="override TELEIMG_HTTP_HOST")
    serve.add_argument("--port", type=int, help="override TELEIMG_HTTP_PORT")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false")
    serve.set_defaults(func=_serve)
    token = sub.add_parser("token", help="print a token signed by the development issuer "
                           "of the data directory (TELEIMG_DATA_DIR, default ./data)")
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
    token.add_argument("--init", action="store_true",
                       help="create the development issuer in the data directory if it "
                       "does not exist yet (otherwise `teleimagerie serve` creates it)")
    token.set_defaults(func=_token)
    ig = sub.add_parser("ig", help="the implementation guide we ship (profiles, terminology)")
    ig_sub = ig.add_subparsers(dest="ig_command", required=True)
    pack = ig_sub.add_parser("package", help="write the IG as a FHIR NPM package (package.tgz)")
    pack.add_argument("--out", default="package.tgz", help="output file (default package.tgz)")
    pack.set_defaults(func=_ig_package)
    hl7 = sub.add_parser("hl7", help="HL7 v2 over MLLP: listen, send, browse, reprocess, "
                         "resend")
    hl7_sub = hl7.add_subparsers(dest="hl7_command", required=True)
    hl7_sub.add_parser("listen", help="run the MLLP listener and the outbox alone")
    send = hl7_sub.add_parser("send", help="send message files over MLLP, print the ACKs")
    send.add_argument("files", nargs="+", help="files of one or more messages (ER7)")
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=None, help="default TELEIMG_MLLP_PORT")
    send.add_argument("--timeout", type=float, default=30.0)
    listing = hl7_sub.add_parser("list", help="browse the message store")
    listing.add_argument("--status", choices=STATUSES, help="inbound: received, processed, "
                         "error, rejected, held; outbound: pending, sent, failed, dead")
    listing.add_argument("--outbound", action="store_true", help="messages we sent")
    listing.add_argument("--control", help="only the messages with this MSH-10 (MSA-2)")
    listing.add_argument("--limit", type=int, default=50)
    reprocess = hl7_sub.add_parser("reprocess", help="process inbound messages again "
                                   "(status received, error, rejected or held)")
    reprocess.add_argument("ids", nargs="+", help="inbound message record ids (Basic ids)")
    replay = hl7_sub.add_parser("replay", help="reprocess every inbound message in a "
                                "status (default error)")
    replay.add_argument("--status", default="error", choices=REPROCESSABLE,
                        help="received, error, rejected or held (default error)")
    replay.add_argument("--limit", type=int, default=1000)
    resend = hl7_sub.add_parser("resend", help="queue outbound messages (sent or failed) "
                                "again, next attempt now")
    resend.add_argument("ids", nargs="+", help="outbound message record ids (Basic ids)")
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
    listing.add_argument("--state", choices=list(STATES), help="business status, e.g. "
                         "lettre-morte, bloque-opposition, identite-non-qualifiee")
    listing.add_argument("--channel", choices=["dmp", "ris", "mssante"])
    listing.add_argument("--limit", type=int, default=100)
    again = delivery_sub.add_parser("retry", help="send a dead-lettered, rejected or held "
                                    "delivery again from attempt 1")
    again.add_argument("id", help="the delivery Task id")
    delivery.set_defaults(func=_delivery)
    # teleimagerie directory load FILE (docs/provisioning.md)
    directory_parser(sub, build_core)
    store_parser(sub)  # teleimagerie store check (issue 25)
    export_parser(sub, build_core)  # teleimagerie export (Bulk Data, issue 31)
    audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="walk the hash chain, report broken links")
    verify.add_argument("--head", help="file written by 'audit head' earlier (JSON or JWS)")
    verify.add_argument("--public-key", help="PEM public key that signed the head")
    head = audit_sub.add_parser("head", help="print the chain head (sequence, hash) to keep "
                                "elsewhere")
    head.add_argument("--sign-key", help="PEM private key (EC P-256 or RSA): print a JWS")
    audit.set_defaults(func=_audit)
    cda = sub.add_parser("cda", help="CDA documents (issue 26)")
    cda_sub = cda.add_subparsers(dest="cda_command", required=True)
    check = cda_sub.add_parser("validate", help="check a CDA file against the CDA XSD and "
                               "every rule of the ANS schematrons: exit 0 valid, 1 invalid "
                               "(failed assertions one per line), 2 usage")
    check.add_argument("file")
    cda.set_defaults(func=lambda args: _cda_validate(args.file))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
