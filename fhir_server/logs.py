"""Logging for every process of the server: nothing identifying in a log line (R-SEC-6).

Patient identifiers, names, birth dates and tokens must never reach a log, at any level,
unless an operator opts in explicitly (``TELEIMG_LOG_SENSITIVE=on``, for a test platform).
Our own code logs references (``Patient/<id>``, server-assigned) and never content; this
module is the net under it, installed as a filter on every handler:

* the HTTP access log keeps each query parameter's name but not its value
  (``?patient.identifier=…``), except for the result-shaping parameters that say nothing
  about anyone (``_count``, ``_sort``…) — and those only while their value is made of
  the API's own words (types, parameter names, keywords, numbers), so a name typed into
  ``_sort`` is masked too; a Patient id in the path is kept only when server-shaped (a
  UUID): a client-chosen id can be an IPP;
* any message or traceback has bearer tokens (JWS compact form) and NIR / NIA / INS
  numbers masked — 13 or 15 characters, first digit 1-4, 7 or 8 (NIA), Corsican
  departments 2A/2B, with or without spaces, URL-encoded after ``%7C`` too — but not a
  component of a dotted OID/UID nor part of a longer number (an HL7 timestamp);
* the libraries that can dump protocol content at debug level (pynetdicom's datasets,
  httpx's and the SMTP library's exchanges) are kept at ``info`` or above.
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
import traceback
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

MASK = "…"
# values that shape a result and identify nobody: kept in the access log
SAFE_PARAMETERS = frozenset({"_count", "_sort", "_summary", "_elements", "_format", "_total",
                             "_pretty", "_include", "_revinclude", "_type", "_since", "_offset",
                             "_contained", "_containedType"})
TOKEN = re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
# NIR / NIA (INS): sex or NIA digit, year, month, department (2A/2B: Corsica), commune,
# order, optional key; single spaces allowed between the groups (the printed form). Not
# preceded by a digit or a "digit." (an OID/UID component), not followed by a digit or
# ".digit" — so "…45678." at the end of a sentence and "%7C283…" are caught.
NIR = re.compile(r"(?<!\d)(?<!\d\.)[1-478] ?\d{2} ?\d{2} ?(?:\d{2}|2[ABab]) ?\d{3} ?\d{3}"
                 r"(?: ?\d{2})?(?!\d)(?!\.\d)")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
KEYWORDS = frozenset({"true", "false", "count", "text", "data", "none", "estimate",
                      "accurate", "iterate", "*", "json", "xml", "html", "turtle", "ttl"})
NUMBER = re.compile(r"\d{1,6}")
INSTANT = re.compile(r"\d{4}(-\d{2}(-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?")
MEDIA = re.compile(r"[a-z]+/[a-z0-9.+ -]+(;\s*[a-z-]+=[\w.-]+)*")  # "+" decoded: " "
NOISY = ("pynetdicom", "httpx", "httpcore", "mail.log", "aiosmtpd", "multipart",
         "signxml")  # signxml logs the whole VIHF (patient INS) it canonicalises
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_FORMATS = ("text", "json")
# the request fields a JSON line carries when the record has them (fhir_server.metrics)
JSON_FIELDS = ("request_id", "principal", "interaction", "type", "status", "duration_ms")


def sensitive_allowed(env: dict[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get("TELEIMG_LOG_SENSITIVE", "")
    return value.lower() in ("1", "on", "true", "yes")


@cache
def _api_words() -> frozenset[str]:
    """Resource types, search parameter names and element names: the words a
    result-shaping parameter is made of (read from our own definitions, once)."""
    import json

    from fhir_server.core.resource_types import CONFORMANCE_TYPES, SUPPORTED_TYPES

    rows = json.loads((Path(__file__).parent / "search" / "search_parameters.json")
                      .read_text(encoding="utf-8"))
    words = {*SUPPORTED_TYPES, *CONFORMANCE_TYPES, *(r["name"] for r in rows)}
    for row in rows:  # element names: the steps of every parameter's path
        for path in row.get("paths") or []:
            words.update(re.findall(r"\.([a-zA-Z]\w*)", path.get("expression") or ""))
    return frozenset(words)


def _harmless(name: str, value: str) -> bool:
    """Whether a result-shaping parameter's value says nothing about anyone."""
    if name in ("_count", "_offset"):
        return bool(NUMBER.fullmatch(value))
    if name == "_since":
        return bool(INSTANT.fullmatch(value))
    if name == "_format":
        return value in KEYWORDS or bool(MEDIA.fullmatch(value))
    words = _api_words()
    return all(t.lstrip("-") in words or t in KEYWORDS
               for t in re.split(r"[,:]", value) if t)


def _redact_segments(base: str) -> str:
    """A client-chosen Patient id (an IPP, say) in the path is masked (R-SEC-6)."""
    parts = base.split("/")
    for i, part in enumerate(parts[:-1]):
        if part == "Patient" and not UUID.fullmatch(parts[i + 1]) and \
                not parts[i + 1].startswith(("$", "_")) and parts[i + 1]:
            parts[i + 1] = MASK
    return "/".join(parts)


def redact_path(path: str) -> str:
    """``/fhir/Patient?identifier=x|123&_count=5`` -> ``/fhir/Patient?identifier=…&_count=5``."""
    base, sep, query = path.partition("?")
    base = _redact_segments(base)
    if not sep:
        return base
    kept = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        plain = name.split(":", 1)[0]
        shown = plain in SAFE_PARAMETERS and _harmless(plain, value)
        kept.append(f"{quote(name, safe=':._-')}="
                    f"{quote(value, safe=':,._-') if shown else MASK}")
    return f"{base}?{'&'.join(kept)}"


def redact(text: str) -> str:
    return NIR.sub(MASK, TOKEN.sub(f"eyJ{MASK}", text))


def failure(exc: BaseException, env: dict[str, str] | None = None) -> str:
    """An unexpected exception for a log line: its type and where it was raised, not its
    message — a message can quote the data that broke (a pydantic error quotes the input,
    a KeyError the key): R-SEC-6. The message is added under ``TELEIMG_LOG_SENSITIVE``."""
    frames = traceback.extract_tb(exc.__traceback__)[-6:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    text = f"{type(exc).__name__} at {where or '?'}"
    return f"{text}: {exc}" if sensitive_allowed(env) else text


class Redact(logging.Filter):
    """The filter every handler carries (see the module docstring)."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and \
                len(record.args) >= 3:  # (client, method, path, http version, status)
            path = record.args[2]
            if isinstance(path, str):
                record.args = (*record.args[:2], redact_path(path), *record.args[3:])
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format: keep the raw template only
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class Json(logging.Formatter):
    """``TELEIMG_LOG_FORMAT=json``: one JSON object a line — time (UTC, ms), level,
    logger, message, and the request fields when the record carries them (request id,
    principal ``sub``, interaction, type, status, duration). Runs after :class:`Redact`
    (a handler's filters come first); the request id, chosen by the client, is redacted
    here too (R-SEC-6)."""

    def format(self, record: logging.LogRecord) -> str:
        import json
        from datetime import UTC, datetime

        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        for name in JSON_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = redact(value)[:128] if isinstance(value, str) else value
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


def log_format(env: dict[str, str] | None = None) -> str:
    """``TELEIMG_LOG_FORMAT`` (validated by :class:`fhir_server.config.Settings`)."""
    value = ((os.environ if env is None else env).get("TELEIMG_LOG_FORMAT") or "text").lower()
    return value if value in LOG_FORMATS else "text"


def config(level: str, env: dict[str, str] | None = None, fmt: str | None = None
           ) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for our processes and uvicorn's (passed to it as
    ``log_config`` so that every worker process installs the same filters). ``fmt``:
    ``text`` or ``json`` (default ``TELEIMG_LOG_FORMAT``). In JSON, the access line is
    ours (``teleimagerie.access``: request id, principal, interaction…), uvicorn's is
    silenced; in text, uvicorn's is kept and ours silenced."""
    # uvicorn's "trace" is below debug; the standard library does not know the name
    level = {"TRACE": "DEBUG"}.get(level.upper(), level.upper())
    allowed = sensitive_allowed(env)
    filters = [] if allowed else ["redact"]
    quiet = level if allowed or level not in ("DEBUG", "NOTSET") else "INFO"
    json_lines = (fmt or log_format(env)) == "json"
    return {
        "version": 1, "disable_existing_loggers": False,
        "filters": {"redact": {"()": Redact}},
        "formatters": {"plain": {"format": FORMAT}, "json": {"()": Json}},
        "handlers": {"default": {"class": "logging.StreamHandler",
                                 "formatter": "json" if json_lines else "plain",
                                 "filters": filters, "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING" if json_lines else level,
                               "propagate": True},
            "teleimagerie.access": {"level": level if json_lines else "WARNING"},
            **{name: {"level": quiet} for name in NOISY},
        },
    }


def configure(level: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Install :func:`config` in this process; returns it (for uvicorn's workers)."""
    cfg = config(level, env)
    logging.config.dictConfig(cfg)
    # warnings (a library's, quoting a value it choked on) go through the same filter
    logging.captureWarnings(True)
    if sensitive_allowed(env):
        logging.getLogger("teleimagerie").warning(
            "TELEIMG_LOG_SENSITIVE=on: log lines are NOT redacted (R-SEC-6) — test "
            "platforms only")
    return cfg
