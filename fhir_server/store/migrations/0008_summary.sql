-- Schema version 8: summary rows (issue 30, R-EVAL-1). One narrow row per resource (per
-- value of its exploded column) of each declared summary (store.base.Summary): its day
-- and up to twelve column values, kept in the resource's write unit; summary_filled
-- lists the summaries filled for the resources stored before they were declared.
CREATE TABLE summary (
    pk  INTEGER NOT NULL,
    s   TEXT    NOT NULL,
    day INTEGER NOT NULL,
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11
);
CREATE INDEX summary_day ON summary (s, day);
CREATE INDEX summary_pk ON summary (pk);
CREATE TABLE summary_filled (s TEXT PRIMARY KEY)
