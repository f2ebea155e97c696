-- DeCloud indexer schema. Portable between SQLite and PostgreSQL: uint256 values are 78-digit
-- zero-padded decimal TEXT (ordered and compared as numbers in both), 64-bit integers and booleans
-- BIGINT, hashes and addresses lowercase 0x-hex TEXT.

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    block_number BIGINT NOT NULL,
    block_hash TEXT NOT NULL,
    tx_hash TEXT NOT NULL,
    log_index BIGINT NOT NULL,
    address TEXT NOT NULL,
    contract TEXT NOT NULL,
    name TEXT NOT NULL,
    args TEXT NOT NULL
);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    operator TEXT NOT NULL,
    node_key TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    region TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    metadata_cid TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_gib BIGINT NOT NULL,
    disk_gib BIGINT NOT NULL,
    gpus BIGINT NOT NULL,
    bandwidth_mbps BIGINT NOT NULL,
    architecture BIGINT NOT NULL,
    flags BIGINT NOT NULL,
    status TEXT NOT NULL,
    cpu_per_hour BIGINT NOT NULL,
    memory_gib_per_hour BIGINT NOT NULL,
    storage_gib_per_hour BIGINT NOT NULL,
    gpu_per_hour BIGINT NOT NULL,
    price_changes BIGINT NOT NULL,
    registered_block BIGINT NOT NULL,
    updated_block BIGINT NOT NULL
);
CREATE TABLE node_prices (
    id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    cpu_per_hour BIGINT NOT NULL,
    memory_gib_per_hour BIGINT NOT NULL,
    storage_gib_per_hour BIGINT NOT NULL,
    gpu_per_hour BIGINT NOT NULL,
    requested_cpu_per_hour BIGINT NOT NULL,
    requested_memory_gib_per_hour BIGINT NOT NULL,
    requested_storage_gib_per_hour BIGINT NOT NULL,
    requested_gpu_per_hour BIGINT NOT NULL,
    block_number BIGINT NOT NULL,
    tx_hash TEXT NOT NULL
);
CREATE TABLE stakes (
    id TEXT PRIMARY KEY,
    operator TEXT NOT NULL,
    active_stake TEXT NOT NULL,
    unbonding TEXT NOT NULL,
    total_staked TEXT NOT NULL,
    total_withdrawn TEXT NOT NULL,
    request_count BIGINT NOT NULL,
    updated_block BIGINT NOT NULL
);
CREATE TABLE unstake_requests (
    id TEXT PRIMARY KEY,
    operator TEXT NOT NULL,
    request_id BIGINT NOT NULL,
    amount TEXT NOT NULL,
    unlock_at BIGINT NOT NULL,
    withdrawn BIGINT NOT NULL,
    requested_block BIGINT NOT NULL,
    withdrawn_block BIGINT
);
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    balance TEXT NOT NULL,
    total_deposited TEXT NOT NULL,
    total_withdrawn TEXT NOT NULL,
    updated_block BIGINT NOT NULL
);
CREATE TABLE leases (
    id TEXT PRIMARY KEY,
    lease_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    node TEXT NOT NULL,
    operator TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_gib BIGINT NOT NULL,
    storage_gib BIGINT NOT NULL,
    gpus BIGINT NOT NULL,
    quality BIGINT NOT NULL,
    bandwidth BIGINT NOT NULL,
    template_id TEXT NOT NULL,
    rate_per_hour BIGINT NOT NULL,
    fee_bps BIGINT NOT NULL,
    funded TEXT NOT NULL,
    accrual_start BIGINT NOT NULL,
    accrued_before TEXT NOT NULL,
    settled TEXT NOT NULL,
    settled_at BIGINT NOT NULL,
    operator_paid TEXT NOT NULL,
    platform_fee_paid TEXT NOT NULL,
    refund TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    ended_at BIGINT,
    failed_at BIGINT,
    claim_count BIGINT NOT NULL,
    opened_block BIGINT NOT NULL,
    updated_block BIGINT NOT NULL
);
CREATE TABLE claims (
    id TEXT PRIMARY KEY,
    lease TEXT NOT NULL,
    operator TEXT NOT NULL,
    operator_amount TEXT NOT NULL,
    platform_fee TEXT NOT NULL,
    block_number BIGINT NOT NULL,
    tx_hash TEXT NOT NULL
);
CREATE TABLE templates (
    id TEXT PRIMARY KEY,
    template_id TEXT NOT NULL,
    author TEXT NOT NULL,
    cid TEXT NOT NULL,
    price TEXT NOT NULL,
    metadata TEXT NOT NULL,
    deprecated BIGINT NOT NULL,
    purchase_count BIGINT NOT NULL,
    revenue TEXT NOT NULL,
    author_earnings TEXT NOT NULL,
    published_block BIGINT NOT NULL,
    updated_block BIGINT NOT NULL
);
CREATE TABLE purchases (
    id TEXT PRIMARY KEY,
    purchase_id TEXT NOT NULL,
    template TEXT NOT NULL,
    buyer TEXT NOT NULL,
    payer TEXT NOT NULL,
    price TEXT NOT NULL,
    author_share TEXT NOT NULL,
    platform_share TEXT NOT NULL,
    block_number BIGINT NOT NULL,
    tx_hash TEXT NOT NULL
);
CREATE TABLE anchors (
    id TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL,
    root TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_sequence BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    uri TEXT NOT NULL,
    block_number BIGINT NOT NULL,
    tx_hash TEXT NOT NULL
);

-- A log is stored once: replays of a range skip the logs already present.
CREATE UNIQUE INDEX events_block_hash_log_index ON events (block_hash, log_index);
CREATE INDEX events_block_number ON events (block_number, log_index);
CREATE INDEX events_name ON events (name, block_number);
CREATE INDEX leases_tenant ON leases (tenant);
CREATE INDEX leases_node ON leases (node);
CREATE INDEX leases_status ON leases (status);
CREATE INDEX node_prices_node ON node_prices (node, block_number);
CREATE INDEX claims_lease ON claims (lease);
CREATE INDEX purchases_template ON purchases (template);
CREATE INDEX anchors_batch_id ON anchors (batch_id);
CREATE INDEX anchors_block_number ON anchors (block_number);
CREATE INDEX anchors_timestamp ON anchors (timestamp);

-- Undo log for blocks that can still be reorganised: the state of an entity row before a block
-- changed it (NULL: the row did not exist). A rollback applies it newest first.
CREATE TABLE undo_log (
    block_number BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    old_row TEXT,
    PRIMARY KEY (block_number, seq)
);
