-- Signed, hash-chained attestations of everything the orchestrator does (decloud_sdk::attestation).
-- The head row is the chain's tip: every append updates it first, which serialises appends of
-- concurrent transactions (a row lock on PostgreSQL, the write lock on SQLite), so sequence
-- numbers have no gaps and every `previous` is the hash of the attestation before.
CREATE TABLE attestation_head (
    id BIGINT PRIMARY KEY,
    next_sequence BIGINT NOT NULL,
    last_hash TEXT NOT NULL
);
INSERT INTO attestation_head (id, next_sequence, last_hash)
VALUES (1, 0, '0x0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE attestations (
    sequence BIGINT PRIMARY KEY,
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    previous TEXT NOT NULL,
    time BIGINT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE INDEX attestations_subject ON attestations (subject, sequence);

-- Batches of consecutive attestations and their Merkle roots. A batch is written before it is
-- anchored; tx_hash/block_number/chain_batch_id are filled once AttestationAnchor holds the root.
CREATE TABLE attestation_batches (
    batch_id BIGINT PRIMARY KEY,
    first_sequence BIGINT NOT NULL UNIQUE,
    count BIGINT NOT NULL,
    root TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    tx_hash TEXT,
    block_number BIGINT,
    anchored_at BIGINT
);
