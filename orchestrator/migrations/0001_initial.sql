-- One schema for SQLite and PostgreSQL: only types both share (BIGINT, TEXT), no booleans,
-- no autoincrement, addresses and hashes as lowercase 0x-prefixed hex text.

-- Nodes as registered on-chain (NodeRegistry), filled by the chain sync.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    operator TEXT NOT NULL,
    node_key TEXT NOT NULL,
    status TEXT NOT NULL,
    region TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    metadata_cid TEXT NOT NULL,
    tags TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_gib BIGINT NOT NULL,
    disk_gib BIGINT NOT NULL,
    gpus BIGINT NOT NULL,
    bandwidth_mbps BIGINT NOT NULL,
    compute_points BIGINT NOT NULL,
    price_cpu BIGINT NOT NULL,
    price_memory BIGINT NOT NULL,
    price_storage BIGINT NOT NULL,
    price_gpu BIGINT NOT NULL,
    registered_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX nodes_operator ON nodes (operator);

-- Heartbeat bookkeeping per node; survives restarts because it lives here and nowhere else.
CREATE TABLE node_liveness (
    node_id TEXT PRIMARY KEY,
    first_heartbeat BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL,
    heartbeats BIGINT NOT NULL,
    vms_hosted BIGINT NOT NULL,
    vms_completed BIGINT NOT NULL
);

-- Missed heartbeats per node and UTC day (day = unix seconds / 86400).
CREATE TABLE node_failures_daily (
    node_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    PRIMARY KEY (node_id, day)
);

-- Leases as opened on-chain (LeaseEscrow), filled by the chain sync.
CREATE TABLE leases (
    lease_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    node_id TEXT NOT NULL,
    status TEXT NOT NULL,
    tier BIGINT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_gib BIGINT NOT NULL,
    storage_gib BIGINT NOT NULL,
    gpus BIGINT NOT NULL,
    rate_per_hour BIGINT NOT NULL,
    opened_at BIGINT NOT NULL
);
CREATE INDEX leases_tenant ON leases (tenant);

-- Virtual machines; the capacity they hold on a node is what the scheduler subtracts.
CREATE TABLE vms (
    vm_id TEXT PRIMARY KEY,
    lease_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    node_id TEXT NOT NULL,
    state TEXT NOT NULL,
    tier BIGINT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_gib BIGINT NOT NULL,
    disk_gib BIGINT NOT NULL,
    gpus BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX vms_tenant ON vms (tenant);
CREATE INDEX vms_node ON vms (node_id);

-- Sign-in nonces: single use, short-lived.
CREATE TABLE siwe_nonces (
    nonce TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

-- Sessions are stored by the keccak256 of their token, so the table alone cannot be used to sign in.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    chain_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_address ON sessions (address);
