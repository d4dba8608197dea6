-- Schema version 7: the journal is appended as records, one per interaction (ADR 0016).
-- idempotent: this script writes the journal file only.
-- audit_record holds the chained records; the store expands each into its AuditEvents
-- (audit_resource, indexed) later. journal_state: 'record' = last expanded record,
-- 'appended' / 'expanded' = AuditEvents appended / expanded so far (the backlog is the
-- difference, without counting rows). 'audit' stays the index watermark of AuditEvents
-- appended one by one before records existed.
CREATE TABLE IF NOT EXISTS journal.audit_record (
    seq    INTEGER PRIMARY KEY,
    events INTEGER NOT NULL,
    body   BLOB    NOT NULL
);
INSERT OR IGNORE INTO journal.journal_state (name, indexed_upto) VALUES ('record', 0);
INSERT OR IGNORE INTO journal.journal_state (name, indexed_upto) VALUES ('appended', 0);
INSERT OR IGNORE INTO journal.journal_state (name, indexed_upto) VALUES ('expanded', 0)
