"""Request limits (configurable via TELEIMG_* variables, see README).

A search's size is bounded before it reaches a store (issue 27 item 6): an OR list of
more than ``max_or_values`` values for one parameter, or more than ``max_sort_keys``
sort keys, is refused with 400 naming the limit — never a store error (SQLite's
expression depth and join limits sit just above a few hundred of either).

Its work is bounded too (issue 27 item 7, :mod:`fhir_server.store.budget`): a query runs
at most ``query_timeout`` seconds (then 503 ``timeout`` with Retry-After; also when the
client leaves), its ``_include``/``_revinclude`` return at most ``max_includes``
resources over at most ``max_include_depth`` ``:iterate`` rounds (400 ``too-costly``).
A request body is refused while it arrives, past ``max_body_bytes`` (item 8).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    default_count: int = 20
    max_count: int = 1000
    max_chain_depth: int = 4
    max_bundle_entries: int = 5000
    max_body_bytes: int = 16 * 1024 * 1024
    max_or_values: int = 200  # values of one search parameter (a,b,c…)
    max_sort_keys: int = 8  # _sort=a,b,c…
    max_search_terms: int = 64  # AND-ed search parameters of one query
    query_timeout: float = 10.0  # seconds of query work per request (0: unbounded)
    max_includes: int = 1000  # resources _include/_revinclude may add to a page
    max_include_depth: int = 4  # rounds of _include:iterate / _revinclude:iterate
    break_glass_minutes: int = 60  # how long a break-the-glass opens a record (R-SEC-2)
