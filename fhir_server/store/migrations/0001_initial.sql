-- Schema version 1: current resources, full history, typed search index tables.
CREATE TABLE resource (
    pk      INTEGER PRIMARY KEY,
    type    TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    vid     INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    body    BLOB,
    UNIQUE (type, id)
);
CREATE INDEX resource_type_pk ON resource (type, pk);

CREATE TABLE history (
    seq     INTEGER PRIMARY KEY,
    type    TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    vid     INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    method  TEXT    NOT NULL,
    body    BLOB,
    UNIQUE (type, id, vid)
);
CREATE INDEX history_type_seq ON history (type, seq);
CREATE INDEX history_updated ON history (updated);

CREATE TABLE idx_token (pk INTEGER NOT NULL, p TEXT NOT NULL, system TEXT, code TEXT, text TEXT);
CREATE INDEX idx_token_code ON idx_token (p, code, system);
CREATE INDEX idx_token_text ON idx_token (p, text);
CREATE INDEX idx_token_pk ON idx_token (pk);

CREATE TABLE idx_string (pk INTEGER NOT NULL, p TEXT NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL);
CREATE INDEX idx_string_norm ON idx_string (p, norm);
CREATE INDEX idx_string_pk ON idx_string (pk);

CREATE TABLE idx_date (pk INTEGER NOT NULL, p TEXT NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL);
CREATE INDEX idx_date_low ON idx_date (p, low);
CREATE INDEX idx_date_high ON idx_date (p, high);
CREATE INDEX idx_date_pk ON idx_date (pk);

CREATE TABLE idx_number (pk INTEGER NOT NULL, p TEXT NOT NULL, value REAL NOT NULL);
CREATE INDEX idx_number_value ON idx_number (p, value);
CREATE INDEX idx_number_pk ON idx_number (pk);

CREATE TABLE idx_quantity (pk INTEGER NOT NULL, p TEXT NOT NULL, value REAL NOT NULL,
                           system TEXT, code TEXT, unit TEXT);
CREATE INDEX idx_quantity_value ON idx_quantity (p, value);
CREATE INDEX idx_quantity_pk ON idx_quantity (pk);

CREATE TABLE idx_uri (pk INTEGER NOT NULL, p TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX idx_uri_value ON idx_uri (p, value);
CREATE INDEX idx_uri_pk ON idx_uri (pk);

CREATE TABLE idx_reference (pk INTEGER NOT NULL, p TEXT NOT NULL, rtype TEXT, rid TEXT,
                            url TEXT, idsys TEXT, idval TEXT);
CREATE INDEX idx_reference_target ON idx_reference (p, rid, rtype);
CREATE INDEX idx_reference_url ON idx_reference (p, url);
CREATE INDEX idx_reference_ident ON idx_reference (p, idval);
CREATE INDEX idx_reference_pk ON idx_reference (pk);

CREATE TABLE sort_key (pk INTEGER NOT NULL, p TEXT NOT NULL, asc_key, desc_key,
                       PRIMARY KEY (pk, p)) WITHOUT ROWID;
CREATE INDEX sort_key_asc ON sort_key (p, asc_key);
