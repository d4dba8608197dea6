"""How a listener process (MLLP, DICOM SCP, delivery sender) started by ``teleimagerie
serve`` tells it that it listens, or the one line saying why it cannot (issue 24).

The core's side of the readiness protocol: adapters' services use it, the composition
root (:mod:`teleimagerie.cli`) sets the pipe and reads it."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from typing import NoReturn

READY_FD = "TELEIMG_READY_FD"  # a listener's readiness pipe (set by `serve` only)


def tell_parent(line: str) -> bool:
    """A listener process started by ``serve`` reports on its readiness pipe: ``ready``
    once it listens, or ``fail <one line>`` when it cannot. False when it was not started
    by ``serve`` (nobody to tell). One report per process: the pipe is closed after it."""
    fd = os.environ.pop(READY_FD, None)
    if not fd or not fd.isdigit():
        return False
    try:
        os.write(int(fd), f"{line}\n".encode())
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(int(fd))


def cannot_listen(what: str, host: str, port: int, exc: OSError) -> str:
    """``cannot listen on MLLP 127.0.0.1:2575: address already in use``."""
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
        text = str(exc.strerror or exc)
    else:
        text = os.strerror(exc.errno)
    return f"cannot listen on {what} {host}:{port}: {text[:1].lower()}{text[1:]}"


def listener_failed(line: str) -> NoReturn:
    """A listener that cannot start: its one line goes to ``serve``, which prints it and
    exits non-zero, or, run alone (``hl7 listen``, ``dicom scp``), to stderr; exit 1."""
    if not tell_parent(f"fail {line}"):
        print(line, file=sys.stderr)
    raise SystemExit(1)
