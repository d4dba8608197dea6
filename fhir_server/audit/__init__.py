"""The audit trail: IHE BALP AuditEvents for every interaction, hash-chained (R-SEC-3)."""
