-- StorageMarket entities: deals, their replicas and epochs, accepted proofs, payees' earnings.
-- Same portable types as 0001 (uint256 as zero-padded decimal TEXT, hashes as 0x-hex TEXT).

CREATE TABLE deals (
    id TEXT PRIMARY KEY,
    deal_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    segment_count BIGINT NOT NULL,
    price_per_epoch TEXT NOT NULL,
    epochs BIGINT NOT NULL,
    start_block BIGINT NOT NULL,
    fee_bps BIGINT NOT NULL,
    replica_count BIGINT NOT NULL,
    deposit TEXT NOT NULL,
    remaining TEXT NOT NULL,
    proven_epochs BIGINT NOT NULL,
    node_paid TEXT NOT NULL,
    fees_paid TEXT NOT NULL,
    settled BIGINT NOT NULL,
    refund TEXT NOT NULL,
    created_block BIGINT NOT NULL,
    settled_block BIGINT,
    updated_block BIGINT NOT NULL
);
CREATE TABLE deal_replicas (
    id TEXT PRIMARY KEY,
    deal TEXT NOT NULL,
    replica BIGINT NOT NULL,
    node TEXT NOT NULL,
    payee TEXT NOT NULL,
    root TEXT NOT NULL,
    proven_epochs BIGINT NOT NULL,
    earned TEXT NOT NULL
);
CREATE TABLE deal_epochs (
    id TEXT PRIMARY KEY,
    deal TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    randomness TEXT,
    recorded_block BIGINT,
    proven_replicas BIGINT NOT NULL
);
CREATE TABLE proofs (
    id TEXT PRIMARY KEY,
    deal TEXT NOT NULL,
    replica BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    payee TEXT NOT NULL,
    node_amount TEXT NOT NULL,
    fee TEXT NOT NULL,
    block_number BIGINT NOT NULL,
    tx_hash TEXT NOT NULL
);
CREATE TABLE storage_payees (
    id TEXT PRIMARY KEY,
    earned TEXT NOT NULL,
    claimed TEXT NOT NULL,
    unclaimed TEXT NOT NULL,
    proof_count BIGINT NOT NULL,
    updated_block BIGINT NOT NULL
);

CREATE INDEX deals_owner ON deals (owner);
CREATE INDEX deal_replicas_deal ON deal_replicas (deal);
CREATE INDEX deal_replicas_node ON deal_replicas (node);
CREATE INDEX deal_epochs_deal ON deal_epochs (deal, epoch);
CREATE INDEX proofs_deal ON proofs (deal, epoch);
CREATE INDEX proofs_payee ON proofs (payee);
