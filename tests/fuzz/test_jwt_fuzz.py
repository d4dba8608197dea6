"""Hypothesis over JWT headers and claims: a token is accepted or refused, never a 5xx
(issue 27 items 10 and 12; R-SEC-1, R-SEC-3, R-INT-2).

Tokens are signed with the development issuer's real key, so the refusals come from the
checks of every header parameter and claim, not from the signature: ``kid``, ``alg``,
``typ``, ``crit``, ``cty`` of any JSON type; ``exp``/``nbf``/``iat`` as strings, floats,
``1e300``, infinities, negatives, booleans, lists; ``aud`` as a list or an object;
``scope``, roles and identity claims of any type. Some tokens are junk strings or valid
tokens with a byte changed. Every answer is 2xx, 401 or 403; a token that must be
refused is a 401 OperationOutcome with a Bearer challenge, and an AuditEvent names the
request — on FHIR paths, on unknown paths and on DICOMweb STOW-RS alike.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from jose import jwt

from fhir_server.security.devissuer import DEFAULT_AUDIENCE, DEV_ISSUER, DevIssuer
from fhir_server.security.tokens import ACCEPTED_TYP, MAX_NUMERIC_DATE
from tests.fuzz.routes import Served, request_id

EXAMPLES = 200


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    app = Served()
    yield app
    app.close()


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), TEXT,
                 st.floats(allow_nan=True, allow_infinity=True),
                 st.sampled_from([1e300, -1, 0, 253402300800, 1.5, "1700000000", "", "ES256"]))
ANY_JSON = st.recursive(LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=5)
HEADER_NAMES = ("kid", "alg", "typ", "crit", "cty", "jku", "x5u", "jwk", "b64", "zip")
CLAIM_NAMES = ("exp", "nbf", "iat", "aud", "iss", "sub", "scope", "scp", "roles", "azp",
               "client_id", "acr", "authMode", "patient", "SubjectNameID", "finess",
               "SubjectRole", "jti", "given_name", "name")
URLS = ("/fhir/Patient", "/fhir/Patient/{patient}", "/fhir/Medication/1",
        "/fhir/no/such/path", "/fhir/Patient/{patient}/_history/99999999999999999999",
        "/dicomweb/studies")


def _numeric_date(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and \
        0 <= value <= MAX_NUMERIC_DATE


def must_refuse(header: dict[str, Any], claims: dict[str, Any], kid: str) -> bool:
    """What the server must refuse whatever else the token says (a partial oracle)."""
    now = time.time()
    typ = header.get("typ")
    return (header.get("alg") != "ES256" or header.get("kid", kid) != kid
            or (typ is not None and (type(typ) is not str or typ.lower() not in ACCEPTED_TYP))
            or "crit" in header or "cty" in header
            or not all(_numeric_date(claims.get(n)) for n in ("exp", "iat"))
            or ("nbf" in claims and not _numeric_date(claims["nbf"]))
            or claims["exp"] < now - 30 or claims["iat"] > now + 30
            or ("nbf" in claims and claims["nbf"] > now + 30)
            or claims.get("iss") != DEV_ISSUER
            or type(claims.get("sub")) is not str or not claims["sub"])


@st.composite
def tokens(draw: st.DrawFn, issuer: DevIssuer) -> tuple[str, bool]:
    """(token, whether it must be refused)."""
    kind = draw(st.sampled_from(["fields", "fields", "fields", "junk", "tampered"]))
    if kind == "junk":
        parts = draw(st.lists(st.one_of(TEXT, st.binary(max_size=24).map(
            lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="))), min_size=1,
            max_size=6))
        return ".".join(parts) or ".", True
    now = int(time.time())
    claims: dict[str, Any] = {"iss": DEV_ISSUER, "aud": DEFAULT_AUDIENCE, "sub": "fuzz",
                              "iat": now, "exp": now + 600, "roles": ["ris"],
                              "scope": "system/*.rs"}
    header: dict[str, Any] = {"kid": issuer.kid, "alg": "ES256"}
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=2, unique=True)):
        header[name] = draw(ANY_JSON)
    for name in draw(st.lists(st.sampled_from(CLAIM_NAMES), min_size=1, max_size=3,
                              unique=True)):
        if draw(st.integers(0, 5)) == 0:
            claims.pop(name, None)
        else:
            claims[name] = draw(ANY_JSON)
    token = jwt.encode(claims, issuer.private_path.read_text(), algorithm="ES256",
                       headers=header)
    refuse = must_refuse({"typ": "JWT", **header}, claims, issuer.kid)
    if kind == "tampered":  # one signature character changed (not the last: padding)
        # ECDSA signatures differ run to run: the draws must not depend on the token
        index = token.rindex(".") + 1 + draw(st.integers(0, 80))  # 86 characters (ES256)
        k = draw(st.integers(0, 3))
        char = "AQgw"[k] if "AQgw"[k] != token[index] else "AQgw"[(k + 1) % 4]
        token, refuse = token[:index] + char + token[index + 1:], True
    return token, refuse


@seed(20270012)
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_header_or_claim_is_401_audited_never_5xx_R_SEC_1_R_SEC_3(
        served: Served, data: st.DataObject) -> None:
    token, refuse = data.draw(tokens(DevIssuer(served.dir / "data")), "token")
    url = data.draw(st.sampled_from(URLS), "url").format(patient=served.ids["Patient"])
    rid = request_id()
    headers = {"Authorization": f"Bearer {token}".encode(), "X-Request-Id": rid.encode()}
    if url.startswith("/dicomweb"):
        headers["Content-Type"] = b'multipart/related; type="application/dicom"; boundary=x'
        response = served.http.post(url, content=b"--x--", headers=headers)
    else:
        response = served.http.get(url, headers=headers)
    status = response.status_code
    assert status < 500, (url, status, response.text)
    if refuse:
        assert status == 401, (url, status, response.text)
    if status in (401, 403):
        assert response.json()["resourceType"] == "OperationOutcome", response.text
        assert served.audited(rid), (url, status, "refusal not audited")
    if status == 401:  # a challenge in printable ASCII, whatever the token said
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="teleimagerie"')
        assert all(" " <= c <= "~" for c in challenge), challenge
