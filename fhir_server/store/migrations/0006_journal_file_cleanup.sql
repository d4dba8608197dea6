-- Schema version 6: the journal tables left in the main file by 0005 are dropped (their
-- rows are in the journal file since 0005 committed).
DROP VIEW main.audit_history;
DROP TABLE main.audit_resource;
DROP TABLE main.audit_idx_token;
DROP TABLE main.audit_idx_string;
DROP TABLE main.audit_idx_date;
DROP TABLE main.audit_idx_number;
DROP TABLE main.audit_idx_quantity;
DROP TABLE main.audit_idx_uri;
DROP TABLE main.audit_idx_reference;
DROP TABLE main.audit_sort_key;
DROP TABLE main.journal_state
