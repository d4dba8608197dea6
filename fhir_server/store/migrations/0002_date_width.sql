-- Schema version 2: the widest [low, high) interval stored per date parameter, so that
-- "high > X" can also be written "low > X - width" and range-scan idx_date_low.
CREATE TABLE date_width (p TEXT PRIMARY KEY, w INTEGER NOT NULL);
INSERT INTO date_width (p, w) SELECT p, MAX(high - low) FROM idx_date GROUP BY p;
