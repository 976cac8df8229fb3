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
    sp_api_ack INTEGER NOT NULL DEFAULT 0,
    datasets TEXT NOT NULL DEFAULT '[]',
    package_path TEXT,          -- personal (file in the data directory)
    created_at BIGINT NOT NULL,
    consent_at BIGINT,
    taken_at BIGINT,
    purge_at BIGINT NOT NULL,
    UNIQUE (client_id, tx_id)
);
CREATE INDEX transactions_purge ON transactions (purge_at);

-- Transfer records (brief §8, D37): kept for at least a year; no identifier in clear.
CREATE TABLE transfers (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
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
