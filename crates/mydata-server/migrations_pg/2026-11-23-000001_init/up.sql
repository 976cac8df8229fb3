-- The PostgreSQL schema: the same tables and columns as the SQLite migrations (migrations/sqlite,
-- up to 000003) in PostgreSQL types, so that one set of diesel `table!` definitions serves both
-- (src/storage/rows.rs). Keys that are listed in order use COLLATE "C" (byte order, as SQLite's
-- BINARY), so both backends list registrations in the same order whatever the cluster's locale.

-- Registrations: the record is JSON (see storage::DpRecord / SpRecord); secrets inside it are
-- keyed hashes or sealed (spec D44). Personal data never goes into these tables.
CREATE TABLE dps (
    resource_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    record TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE sps (
    client_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    record TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Access tokens by keyed hash (spec §10.1, D31). Deleted with the transaction's personal data.
CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    tx_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    transaction_uid TEXT NOT NULL,
    scope TEXT NOT NULL,
    sub TEXT NOT NULL,
    uid TEXT NOT NULL,
    claims TEXT NOT NULL,
    iat BIGINT NOT NULL,
    exp BIGINT NOT NULL
);
CREATE INDEX tokens_tx ON tokens (tx_id);
CREATE INDEX tokens_exp ON tokens (exp);

-- One online-service transaction (spec §5–§8). Columns marked personal are cleared or the row is
-- deleted by the purge (D37).
CREATE TABLE transactions (
    id TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    tx_id TEXT NOT NULL,
    state TEXT NOT NULL,
    code INTEGER,
    resources TEXT NOT NULL,
    return_query TEXT,
    case_number TEXT,
    pid_sealed TEXT,            -- personal
    citizen_sealed TEXT,        -- personal
    identity_method TEXT,
    ticket_hash TEXT UNIQUE,
    secret_key_sealed TEXT,     -- personal (key to personal data)
    sp_api_ack BOOLEAN NOT NULL DEFAULT FALSE,
    datasets TEXT NOT NULL DEFAULT '[]',
    package_path TEXT,          -- personal (file in the data directory)
    created_at BIGINT NOT NULL,
    consent_at BIGINT,
    taken_at BIGINT,
    purge_at BIGINT NOT NULL,
    return_url TEXT,            -- personal (the supplied returnUrl, D19)
    last_activity BIGINT NOT NULL DEFAULT 0,
    UNIQUE (client_id, tx_id)
);
CREATE INDEX transactions_purge ON transactions (purge_at);

-- Transfer records (brief §8, D37): kept for at least a year; no identifier in clear. The id only
-- orders a subject's records (oldest first); INTEGER to match the shared `table!` (as SQLite).
CREATE TABLE transfers (
    id INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    client_id TEXT NOT NULL,
    resource_id TEXT,
    subject_hash TEXT NOT NULL,
    code INTEGER NOT NULL,
    case_number TEXT,
    identity_method TEXT
);
CREATE INDEX transfers_subject ON transfers (subject_hash);
