"""Directory provisioning (issue 24): ``teleimagerie directory load FILE``.

:mod:`.loader` loads structures, professionals and their roles from a FHIR Bundle or a
CSV through the core; :mod:`.cli` is the command; :mod:`.r38` the specialty codes. See
``docs/provisioning.md``.
"""

from adapters.provisioning.cli import add_parser, run

__all__ = ["add_parser", "run"]
