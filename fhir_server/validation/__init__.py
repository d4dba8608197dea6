"""Profile validation driven by StructureDefinition snapshots (issue 4)."""
