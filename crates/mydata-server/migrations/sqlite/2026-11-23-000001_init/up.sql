-- Registrations: the record is JSON (see storage::DpRecord / SpRecord); secrets inside it are
-- keyed hashes or sealed (spec D44). Personal data never goes into these tables.
CREATE TABLE dps (
    resource_id TEXT PRIMARY KEY NOT NULL,
    record TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE sps (
    client_id TEXT PRIMARY KEY NOT NULL,
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
