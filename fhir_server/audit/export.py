"""Exporting the audit chain head, optionally signed (R-SEC-3 tamper evidence).

Tail truncation of a hash chain is only visible against a head kept elsewhere. The head
is exported as JSON, or as a compact JWS (ES256 for an EC key, RS256 for RSA) so whoever
keeps it — a WORM store, a daily signed mail — can prove which head the server vouched
for. ``read_head`` accepts both and checks the signature when given the public key.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jws
from jose.exceptions import JOSEError


class HeadError(ValueError):
    pass


def _algorithm(pem: bytes) -> str:
    try:
        key: Any = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        key = serialization.load_pem_public_key(pem)
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ES256"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    raise HeadError("the key must be an EC (P-256) or RSA key in PEM")


def head_document(sequence: int, digest: str, issuer: str) -> dict[str, Any]:
    return {"sequence": sequence, "hash": digest, "iss": issuer,
            "iat": int(datetime.now(UTC).timestamp())}


def sign_head(document: dict[str, Any], private_pem: bytes) -> str:
    return str(jws.sign(document, private_pem.decode(), algorithm=_algorithm(private_pem)))


def read_head(text: str, public_pem: bytes | None = None) -> tuple[int, str]:
    """(sequence, hash) from an exported head; a JWS needs its public key to be trusted."""
    text = text.strip()
    try:
        if text.startswith("{"):
            if public_pem is not None:
                raise HeadError("a signed head (JWS) was expected, this one is plain JSON")
            data = json.loads(text)
        else:
            if public_pem is None:
                raise HeadError("the head is signed: give the public key to check it")
            data = json.loads(jws.verify(text, public_pem.decode(),
                                         algorithms=[_algorithm(public_pem)]))
        return int(data["sequence"]), str(data["hash"])
    except JOSEError as exc:
        raise HeadError(f"the head's signature does not verify: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, HeadError):
            raise
        raise HeadError(f"not an exported audit head: {exc}") from None
