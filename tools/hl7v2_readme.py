"""Regenerate the field tables of ``adapters/hl7v2/README.md`` from the HL7 v2 mapping
tables (issue 28). Run after adding or changing a row::

    python tools/hl7v2_readme.py          # rewrite the README's generated part
    python tools/hl7v2_readme.py --check  # exit 1 when the README has drifted

The text between the markers is :func:`adapters.hl7v2.tables.render`; the rest of the
README is hand-written.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's adapters

from adapters.hl7v2.tables import README, updated


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    fresh = updated(text)
    if "--check" in argv:
        if fresh != text:
            print(f"{README} differs from the mapping tables: run tools/hl7v2_readme.py",
                  file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        README.write_text(fresh, encoding="utf-8")
        print(f"{README} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
