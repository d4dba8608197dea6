-- Schema version 4: journal records are indexed after they are appended (ADR 0007).
-- indexed_upto is the last audit_resource.pk whose index rows are written. Rows above it
-- are indexed by the idle-time indexer or by the first search that needs them.
CREATE TABLE journal_state (name TEXT PRIMARY KEY, indexed_upto INTEGER NOT NULL);
INSERT INTO journal_state (name, indexed_upto)
    SELECT 'audit', COALESCE(MAX(pk), 0) FROM audit_resource;
