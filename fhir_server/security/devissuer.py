"""The local development issuer: a key pair in the data directory and a token minter.

``make run`` must work with one command, so the server trusts this issuer unless
``TELEIMG_ENV=production``. Keys (EC P-256, ES256) are generated on first start into
``<data dir>/dev-issuer/``; ``teleimagerie token`` signs tokens with them, and never
creates them unasked (a new pair would sign tokens the running server does not know:
"kid unknown", issue 24). :meth:`DevIssuer.mint` creates them when missing (tests).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwt

DEV_ISSUER = "https://dev-issuer.teleimagerie.invalid"
DEFAULT_AUDIENCE = "teleimagerie-fhir"


def _b64(n: int, size: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


class DevIssuer:
    def __init__(self, data_dir: Path, audience: str = DEFAULT_AUDIENCE) -> None:
        self.dir = data_dir / "dev-issuer"
        self.audience = audience
        self.private_path = self.dir / "private-key.pem"
        self.jwks_path = self.dir / "jwks.json"

    def exists(self) -> bool:
        """Whether the key pair is there (the server of this data directory made it)."""
        return self.private_path.exists() and self.jwks_path.exists()

    @property
    def kid(self) -> str:
        """The key id tokens carry (the JWK thumbprint)."""
        kid: str = json.loads(self.jwks_path.read_text(encoding="utf-8"))["keys"][0]["kid"]
        return kid

    def ensure(self) -> bool:
        """Create the key pair if missing; True when it was just created.

        Several worker processes start at once: a file lock makes exactly one of them
        generate the pair, and the files appear atomically (rename).
        """
        if self.private_path.exists() and self.jwks_path.exists():
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.private_path.exists() and self.jwks_path.exists():
                return False
            self._generate()
            return True

    def _generate(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        numbers = key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x, 32), "y": _b64(numbers.y, 32)}
        thumb = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()
        jwk.update(kid=base64.urlsafe_b64encode(hashlib.sha256(thumb).digest())
                   .rstrip(b"=").decode(), alg="ES256", use="sig")
        tmp = self.private_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        tmp.replace(self.private_path)
        tmp_jwks = self.jwks_path.with_suffix(".tmp")
        tmp_jwks.write_text(json.dumps({"keys": [jwk]}, indent=2), encoding="utf-8")
        tmp_jwks.replace(self.jwks_path)

    def mint(self, *, sub: str, roles: list[str], scopes: list[str], id_nat_ps: str | None = None,
             patient: str | None = None, acr: str | None = "eidas2", name: str | None = None,
             finess: list[str] | None = None, lifetime: int = 3600,
             extra: dict[str, Any] | None = None) -> str:
        self.ensure()
        kid = self.kid
        now = int(time.time())
        claims: dict[str, Any] = {"iss": DEV_ISSUER, "aud": self.audience, "sub": sub,
                                  "iat": now, "nbf": now, "exp": now + lifetime,
                                  "jti": str(uuid.uuid4()), "azp": "teleimagerie-cli",
                                  "roles": roles, "scope": " ".join(scopes)}
        for claim, value in (("SubjectNameID", id_nat_ps), ("patient", patient), ("acr", acr),
                             ("name", name), ("finess", finess)):
            if value:
                claims[claim] = value
        claims.update(extra or {})
        return jwt.encode(claims, self.private_path.read_text(encoding="utf-8"),
                          algorithm="ES256", headers={"kid": kid})
