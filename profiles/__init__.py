"""The téléimagerie profiles (issue 4, ADR 0008, docs/profiles.md): differentials written
in ``spec.py``, StructureDefinitions with their generated snapshot in ``definitions/``
(``tools/build_profiles.py``), and valid and invalid examples of each in ``examples/``."""
