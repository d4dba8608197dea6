"""UCUM units of dose values: parse the few atoms radiation dose uses and convert between
units of the same dimension (UCUM specification §§ 4, 5: prefixes, atoms, products
with ``.``, exponents as trailing digits)."""

from __future__ import annotations

import re

PREFIXES = {"": 1.0, "k": 1e3, "h": 1e2, "da": 1e1, "d": 1e-1, "c": 1e-2, "m": 1e-3,
            "u": 1e-6, "n": 1e-9, "M": 1e6, "G": 1e9}
# atom -> (factor to the base unit, dimension)
ATOMS = {"Gy": (1.0, "Gy"), "m": (1.0, "m"), "s": (1.0, "s"), "min": (60.0, "s"),
         "h": (3600.0, "s"), "Bq": (1.0, "Bq"), "Ci": (3.7e10, "Bq")}
_LONGEST_FIRST = sorted(ATOMS, key=len, reverse=True)  # 'min' before 'm', 'Gy' before 'G'
_TERM = re.compile(r"^(?P<atom>[A-Za-z]+?)(?P<exp>-?\d*)$")


class UnitError(ValueError):
    pass


def _term(term: str) -> tuple[float, dict[str, int]]:
    m = _TERM.match(term)
    if not m:
        raise UnitError(f"unité UCUM non reconnue : {term!r}")
    text, exp = m.group("atom"), int(m.group("exp") or 1)
    for atom in _LONGEST_FIRST:
        if text.endswith(atom) and text[:-len(atom)] in PREFIXES:
            factor, dim = ATOMS[atom]
            return (PREFIXES[text[:-len(atom)]] * factor) ** exp, {dim: exp}
    raise UnitError(f"unité UCUM non reconnue : {term!r}")


def parse(unit: str) -> tuple[float, dict[str, int]]:
    """``mGy.cm2`` -> (factor to base units, dimension exponents)."""
    factor, dims = 1.0, dict[str, int]()
    for term in unit.strip().split("."):
        f, d = _term(term)
        factor *= f
        for k, v in d.items():
            dims[k] = dims.get(k, 0) + v
    return factor, {k: v for k, v in dims.items() if v}


def convert(value: float, source: str, target: str) -> float:
    """``value`` in ``source`` expressed in ``target`` (same dimension, else UnitError)."""
    f_source, d_source = parse(source)
    f_target, d_target = parse(target)
    if d_source != d_target:
        raise UnitError(f"unités incompatibles : {source} -> {target}")
    return float(f"{value * f_source / f_target:.10g}")  # no binary-float noise in reports
