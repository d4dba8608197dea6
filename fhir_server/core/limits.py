"""Request limits (configurable via TELEIMG_* variables, see README).

A search's size is bounded before it reaches a store (issue 27 item 6): an OR list of
more than ``max_or_values`` values for one parameter, or more than ``max_sort_keys``
sort keys, is refused with 400 naming the limit — never a store error (SQLite's
expression depth and join limits sit just above a few hundred of either).
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
    break_glass_minutes: int = 60  # how long a break-the-glass opens a record (R-SEC-2)
