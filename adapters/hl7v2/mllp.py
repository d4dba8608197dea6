"""MLLP, the Minimal Lower Layer Protocol (HL7 v2.5.1 Implementation Guide, appendix C).

A frame is ``<VT> message <FS><CR>`` (0x0B … 0x1C 0x0D). :class:`FrameDecoder` cuts a
byte stream into frames however the reads split them; the server and the client both
use it, so inbound and outbound traffic share one framing code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fhir_server import metrics

log = logging.getLogger("teleimagerie.mllp")

START = b"\x0b"
END = b"\x1c\x0d"


def frame(message: bytes) -> bytes:
    return START + message + END


@dataclass
class Frame:
    """A complete frame's payload; ``oversize`` when it exceeded the limit (then
    ``payload`` holds only its first bytes, kept for the record)."""

    payload: bytes
    oversize: bool = False
    size: int = 0


class FramingError(Exception):
    """Bytes outside a frame: the peer does not speak MLLP."""


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the frames completed by those bytes."""

    KEEP = 64 * 1024  # of an oversize message, what we keep for the message store

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._inside = False
        self._oversize = False
        self._size = 0

    @property
    def pending(self) -> bool:
        return self._inside

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        view = memoryview(data)
        i = 0
        while i < len(view):
            if not self._inside:
                start = data.find(START, i)
                junk = data[i:start if start >= 0 else len(data)]
                if junk.strip(b"\r\n\t \x00"):
                    raise FramingError(f"{len(junk)} bytes outside an MLLP frame")
                if start < 0:
                    return out
                self._inside, self._oversize, self._size = True, False, 0
                self._buf.clear()
                i = start + 1
                continue
            end = data.find(b"\x1c", i)
            chunk = view[i:end if end >= 0 else len(view)]
            self._size += len(chunk)
            if not self._oversize:
                self._buf += chunk
                if len(self._buf) > self.max_size:
                    self._oversize = True
                    del self._buf[self.KEEP:]
            if end < 0:
                return out
            # FS must be followed by CR; tolerate a missing CR at the very end of a read
            nxt = end + 1
            if nxt < len(data) and data[nxt] == 0x0D:
                nxt += 1
            out.append(Frame(bytes(self._buf), self._oversize, self._size))
            self._inside = False
            self._buf.clear()
            i = nxt
        return out


Handler = Callable[[Frame, str], Awaitable[bytes | None]]


@dataclass
class ServerLimits:
    max_message_bytes: int = 8 * 1024 * 1024
    idle_timeout: float = 300.0


async def serve(handler: Handler, host: str, port: int, limits: ServerLimits,
                reuse_port: bool = False) -> asyncio.Server:
    """Start an MLLP server: every frame is passed to ``handler(frame, peer)``, whose
    answer (an ACK) is written back framed, in order, on the same connection."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = (writer.get_extra_info("peername") or ("?", "?"))[:2]
        peer = f"{host}:{port}"
        metrics.mllp_connection()  # issue 29
        decoder = FrameDecoder(limits.max_message_bytes)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(256 * 1024),
                                                  limits.idle_timeout)
                except TimeoutError:
                    log.info("MLLP %s idle for %.0f s: closing", peer, limits.idle_timeout)
                    return
                if not data:
                    if decoder.pending:
                        log.warning("MLLP %s closed inside a frame (truncated message)",
                                    peer)
                    return
                try:
                    frames = decoder.feed(data)
                except FramingError as exc:
                    log.warning("MLLP %s: %s: closing", peer, exc)
                    return
                for f in frames:
                    answer = await handler(f, peer)
                    if answer is not None:
                        writer.write(frame(answer))
                        await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception:
            log.exception("MLLP %s: unexpected error, closing the connection", peer)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    return await asyncio.start_server(connection, host, port, reuse_port=reuse_port,
                                      limit=2 ** 20)


class MllpClient:
    """One connection to an MLLP peer: send a message, wait for its acknowledgement."""

    def __init__(self, host: str, port: int, timeout: float = 30.0,
                 max_size: int = 8 * 1024 * 1024) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._decoder = FrameDecoder(max_size)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._frames: list[Frame] = []

    async def __aenter__(self) -> MllpClient:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            self._writer = None

    async def send(self, message: bytes) -> bytes:
        """Send one message, return the payload of the next frame the peer answers."""
        assert self._writer is not None and self._reader is not None, "not connected"
        self._writer.write(frame(message))
        await self._writer.drain()
        return await asyncio.wait_for(self._next(), self.timeout)

    async def _next(self) -> bytes:
        assert self._reader is not None
        while not self._frames:
            data = await self._reader.read(256 * 1024)
            if not data:
                raise ConnectionError("the peer closed the connection before answering")
            self._frames.extend(self._decoder.feed(data))
        return self._frames.pop(0).payload
