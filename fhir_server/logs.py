"""Logging for every process of the server: nothing identifying in a log line (R-SEC-6).

Patient identifiers, names, birth dates and tokens must never reach a log, at any level,
unless an operator opts in explicitly (``TELEIMG_LOG_SENSITIVE=on``, for a test platform).
Our own code logs references (``Patient/<id>``, server-assigned) and never content; this
module is the net under it, installed as a filter on every handler:

* the HTTP access log keeps each query parameter's name but not its value
  (``?patient.identifier=…``), except for the result-shaping parameters that say nothing
  about anyone (``_count``, ``_sort``…);
* any message or traceback has bearer tokens (JWS compact form), NIR / INS numbers
  (13 or 15 digits starting with 1 or 2, not inside a dotted OID/UID) masked;
* the libraries that can dump protocol content at debug level (pynetdicom's datasets,
  httpx's and the SMTP library's exchanges) are kept at ``info`` or above.
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
from typing import Any
from urllib.parse import parse_qsl, quote

MASK = "…"
# values that shape a result and identify nobody: kept in the access log
SAFE_PARAMETERS = frozenset({"_count", "_sort", "_summary", "_elements", "_format", "_total",
                             "_pretty", "_include", "_revinclude", "_type", "_since",
                             "_contained", "_containedType"})
TOKEN = re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
NIR = re.compile(r"(?<![\w.])[12]\d{12}(?:\d{2})?(?![\w.])")
NOISY = ("pynetdicom", "httpx", "httpcore", "mail.log", "aiosmtpd", "multipart",
         "signxml")  # signxml logs the whole VIHF (patient INS) it canonicalises
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def sensitive_allowed(env: dict[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get("TELEIMG_LOG_SENSITIVE", "")
    return value.lower() in ("1", "on", "true", "yes")


def redact_path(path: str) -> str:
    """``/fhir/Patient?identifier=x|123&_count=5`` -> ``/fhir/Patient?identifier=…&_count=5``."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    kept = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        plain = name.split(":", 1)[0]
        kept.append(f"{quote(name, safe=':._-')}="
                    f"{quote(value, safe=':,._-') if plain in SAFE_PARAMETERS else MASK}")
    return f"{base}?{'&'.join(kept)}"


def redact(text: str) -> str:
    return NIR.sub(MASK, TOKEN.sub(f"eyJ{MASK}", text))


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


def config(level: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for our processes and uvicorn's (passed to it as
    ``log_config`` so that every worker process installs the same filters)."""
    level = level.upper()
    allowed = sensitive_allowed(env)
    filters = [] if allowed else ["redact"]
    quiet = level if allowed or level not in ("DEBUG", "NOTSET") else "INFO"
    return {
        "version": 1, "disable_existing_loggers": False,
        "filters": {"redact": {"()": Redact}},
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "plain",
                                 "filters": filters, "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
            **{name: {"level": quiet} for name in NOISY},
        },
    }


def configure(level: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Install :func:`config` in this process; returns it (for uvicorn's workers)."""
    cfg = config(level, env)
    logging.config.dictConfig(cfg)
    if sensitive_allowed(env):
        logging.getLogger("teleimagerie").warning(
            "TELEIMG_LOG_SENSITIVE=on: log lines are NOT redacted (R-SEC-6) — test "
            "platforms only")
    return cfg
