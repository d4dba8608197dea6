-- Schema version 8: summary rows (issue 30, R-EVAL-1). One narrow row per resource (per
-- value of its exploded column: k numbers them) of each declared summary
-- (store.base.Summary): its day and up to twelve column values, kept in the resource's
-- write unit. Clustered by summary and day (WITHOUT ROWID), so a period's rows are read
-- in sequence; summary_filled lists the summaries filled for the resources stored
-- before they were declared.
CREATE TABLE summary (
    s   TEXT    NOT NULL,
    day INTEGER NOT NULL,
    pk  INTEGER NOT NULL,
    k   INTEGER NOT NULL,
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11,
    PRIMARY KEY (s, day, pk, k)
) WITHOUT ROWID;
CREATE INDEX summary_pk ON summary (pk);
CREATE TABLE summary_filled (s TEXT PRIMARY KEY)
