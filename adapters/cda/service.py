"""One process that holds the compiled ANS schematrons for every process of a host
(issue 26; R-REP-6; ADR 0021 §7).

SaxonC-HE compiles the structuration minimale stylesheet (12 MB of XSLT) in 10-15 s of
CPU, once per process, and cannot save the result (exporting is an EE feature). Every
process that checks documents — each uvicorn worker, the delivery process, the operator's
``teleimagerie cda validate``, each test worker — would pay it again. Here one process
compiles them once and validates for all of them over a Unix socket
(:mod:`multiprocessing.managers`, authenticated by a key only the socket's owner can
read). A process uses it when ``TELEIMG_SCHEMATRON_SERVICE`` names the socket
(:func:`adapters.cda.validate.checker`, :func:`adapters.cda.schematron.default`); when
the service cannot be reached, it validates by itself as before (logged once).

``python -m adapters.cda.service SOCKET`` runs it (the key is ``SOCKET.key``);
:func:`start` starts one for the calling process, which it does not outlive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any

from adapters.cda import schematron
from adapters.cda.schematron import Isolated, Report, Validator

log = logging.getLogger("teleimagerie.cda")
SETTING = "TELEIMG_SCHEMATRON_SERVICE"  # the service's socket
OWNER = "TELEIMG_SCHEMATRON_SERVICE_OWNER"  # the pid the service does not outlive
# the schematrons of the first validator process, the others in the second: a document
# costs them about the same time (structuration minimale 0.4 s + IHE 0.7 s, against
# 0.9 s for the three others; structuration minimale's 10-15 s compilation is the first's)
HEAVY = frozenset({schematron.STRUCT_MIN, schematron.IHE})


def key_of(socket: str) -> Path:
    return Path(f"{socket}.key")


class _Manager(BaseManager):
    """The clients' side: a proxy to the service's validator."""


class _Server(BaseManager):
    """The service's side (the validator registered by :func:`serve`)."""


_Manager.register("validator")


class _Served:
    """What the service exposes: the host's validators. Each schematron belongs to one
    of two validator processes (:class:`~adapters.cda.schematron.Isolated`): each is
    compiled once, and a document's schematrons run on two cores at once. The manager
    gives each client a thread."""

    def __init__(self, kit: Path) -> None:
        self.kit = kit
        self.parts = (Isolated(kit), Isolated(kit))
        # a thread per (client, part) waiting on a validator process: several clients
        self._threads = ThreadPoolExecutor(8, thread_name_prefix="part")
        self._warming: threading.Thread | None = None

    def _part(self, name: str) -> Isolated:
        return self.parts[0 if name in HEAVY else 1]

    def _split(self, names: Sequence[str]) -> list[tuple[Isolated, tuple[str, ...]]]:
        return [(part, tuple(n for n in names if self._part(n) is part))
                for part in self.parts if any(self._part(n) is part for n in names)]

    def validate(self, xml: bytes, names: Sequence[str] | None) -> Report:
        chosen = tuple(names) if names is not None else \
            schematron.BY_LEVEL[schematron.level_of(xml)]
        futures = {group: self._threads.submit(part.validate, xml, group)
                   for part, group in self._split(chosen)}
        report = Report()
        for future in futures.values():
            part = future.result()
            report.failures += part.failures
            report.unverifiable += part.unverifiable
            report.fired += part.fired
        # in the order of the names, as one validator gives them (a stable sort)
        report.failures.sort(key=lambda f: chosen.index(f.schematron))
        report.unverifiable.sort(key=lambda f: chosen.index(f.schematron))
        return report

    def warm(self, names: Sequence[str]) -> None:
        for future in [self._threads.submit(part.warm, group)
                       for part, group in self._split(names)]:
            future.result()

    def warm_soon(self, names: Sequence[str]) -> None:
        """Compile ``names`` in the background (a test session announces its needs)."""
        if self._warming is None:
            self._warming = threading.Thread(target=self.warm, args=(names,),
                                             name="warm", daemon=True)
            self._warming.start()

    def compiled(self) -> list[str]:
        return sorted(n for part in self.parts for n in part.compiled())

    def close(self) -> None:
        for part in self.parts:
            part.close(wait=True)


def serve(socket: str) -> None:
    """Run the service on ``socket`` until its owner (``OWNER``) is gone."""
    kit = schematron.references()
    if kit is None:
        raise SystemExit("kit CDA de l'ANS introuvable")
    served = _Served(kit)
    _Server.register("validator", callable=lambda: served)
    owner = int(os.environ.get(OWNER, "0") or 0)

    def orphaned() -> None:  # the owner was stopped or killed: nobody will ask again
        while not owner or _alive(owner):
            time.sleep(1.0)
        with contextlib.suppress(OSError):
            os.unlink(socket)
        os._exit(0)

    threading.Thread(target=orphaned, name="owner-watch", daemon=True).start()
    manager = _Server(address=socket, authkey=key_of(socket).read_bytes())
    server = manager.get_server()
    signal.signal(signal.SIGTERM, _stop)
    print("ready", flush=True)
    try:
        server.serve_forever()
    finally:  # the validator processes stop with it
        served.close()


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Handle:
    """A service started by :func:`start`: its socket and process."""

    socket: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for path in (Path(self.socket), key_of(self.socket)):
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            Path(self.socket).parent.rmdir()


def start(owner: int | None = None) -> Handle:
    """A service for this process (and those it starts: set ``SETTING`` to its socket),
    in a private directory; it stops when ``owner`` (default: this process) is gone."""
    folder = tempfile.mkdtemp(prefix="teleimg-schematron-")  # mode 0700: the key's guard
    socket = os.path.join(folder, "service")
    key = key_of(socket)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
    env = {**os.environ, OWNER: str(owner or os.getpid())}
    env.pop(SETTING, None)
    proc = subprocess.Popen([sys.executable, "-m", "adapters.cda.service", socket],
                            env=env, stdout=subprocess.PIPE, start_new_session=True,
                            cwd=str(schematron.ROOT))
    handle = Handle(socket, proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "ready" once it listens (or EOF: it failed)
    proc.stdout.close()
    if line.strip() != b"ready":
        handle.stop()
        raise schematron.Unavailable("le service de validation n'a pas démarré")
    return handle


class Shared(Validator):
    """The host's service seen as a :class:`Validator`: validation and compilation
    happen there; the compiled stylesheets on disk (:meth:`stylesheet`, :meth:`gaps`) are
    shared. If the service cannot be reached, this process validates by itself."""

    def __init__(self, kit: Path, socket: str) -> None:
        super().__init__(kit)
        self.socket = socket
        self._remote: Any = None
        self._down = False

    def _service(self) -> Any:
        with self._lock:
            if self._remote is None and not self._down:
                try:
                    manager = _Manager(address=self.socket,
                                       authkey=key_of(self.socket).read_bytes())
                    manager.connect()
                    self._remote = manager.validator()  # type: ignore[attr-defined]
                except (OSError, EOFError) as exc:
                    self._gone(exc)
            return self._remote

    def _gone(self, exc: BaseException) -> None:
        log.warning("service de validation injoignable (%s) : validation dans ce "
                    "processus", type(exc).__name__)
        self._down, self._remote = True, None

    def _ask(self, method: str, *args: Any) -> Any:
        remote = self._service()
        if remote is not None:
            try:
                return getattr(remote, method)(*args)
            except (OSError, EOFError) as exc:
                with self._lock:
                    self._gone(exc)
        return getattr(super(), method)(*args)

    def validate(self, xml: bytes, schematrons: Sequence[str] | None = None) -> Report:
        report: Report = self._ask("validate", xml,
                                   tuple(schematrons) if schematrons is not None else None)
        return report

    def warm(self, names: Iterable[str] = schematron.BY_LEVEL["N3"]) -> None:
        self._ask("warm", tuple(names))

    def warm_soon(self, names: Iterable[str] = schematron.BY_LEVEL["N3"]) -> None:
        """Ask the service to compile ``names`` in the background; no-op when down."""
        remote = self._service()
        if remote is not None:
            try:
                remote.warm_soon(tuple(names))
            except (OSError, EOFError) as exc:
                with self._lock:
                    self._gone(exc)

    def compiled(self) -> list[str]:
        found: list[str] = self._ask("compiled")
        return found

    def stylesheet(self, name: str) -> Path:
        target = self.root / (name.replace("/", "__") + ".xsl")
        if not target.exists():  # the service writes it (and compiles it) first
            self.warm([name])
        return super().stylesheet(name)


def shared(kit: Path) -> Shared | None:
    """The service ``SETTING`` names, or None when none is configured."""
    socket = os.environ.get(SETTING, "")
    return Shared(kit, socket) if socket else None


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    serve(sys.argv[1])
