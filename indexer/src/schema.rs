//! The indexed entities: one table each, described once here for the store and the GraphQL API.
//!
//! Types are chosen to be portable and exactly comparable in both SQLite and PostgreSQL:
//! `uint256` amounts are stored as 78-digit zero-padded decimal text (so `<`, `>` and `ORDER BY`
//! compare them as numbers in both databases without a big-number type), 64-bit integers as
//! `BIGINT`, booleans as `BIGINT` 0/1, hashes and addresses as lowercase 0x-hex text.

/// How a column is stored and exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// The entity's id (text; GraphQL `ID`).
    Id,
    /// Free text (GraphQL `String`).
    Text,
    /// 0x-hex bytes, addresses and hashes (GraphQL `Bytes`).
    Bytes,
    /// A small integer (GraphQL `Int`): enums, counts, basis points.
    Int,
    /// A 64-bit unsigned integer stored as `BIGINT` (GraphQL `BigInt`, a decimal string).
    BigInt64,
    /// A 256-bit unsigned integer stored as zero-padded decimal text (GraphQL `BigInt`).
    BigInt,
    /// A boolean stored as 0/1 (GraphQL `Boolean`).
    Bool,
}

impl ColumnType {
    /// Whether the column is stored as an integer.
    pub fn is_integer(self) -> bool {
        matches!(self, Self::Int | Self::BigInt64 | Self::Bool)
    }
}

/// One column of an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The GraphQL field name (camelCase).
    pub field: &'static str,
    /// The SQL column name (snake_case).
    pub column: &'static str,
    /// The storage and GraphQL type.
    pub ty: ColumnType,
    /// Whether the column may be null.
    pub nullable: bool,
}

/// An entity type: its table and columns. The first column is always `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityDef {
    /// The GraphQL type name, e.g. `Lease`.
    pub type_name: &'static str,
    /// The single-item query, e.g. `lease`.
    pub single: &'static str,
    /// The list query, e.g. `leases`.
    pub list: &'static str,
    /// The SQL table.
    pub table: &'static str,
    /// What the entity is, for the GraphQL schema's descriptions.
    pub description: &'static str,
    /// The columns, `id` first.
    pub columns: &'static [Column],
}

impl EntityDef {
    /// The index of a column by its SQL name.
    ///
    /// # Panics
    /// When the column does not exist: a programming error caught by the tests.
    pub fn index(&self, column: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c.column == column)
            .unwrap_or_else(|| panic!("entity {} has no column {column}", self.type_name))
    }

    /// The column behind a GraphQL field.
    pub fn by_field(&self, field: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.field == field)
    }

    /// The comma-separated column list for SELECTs.
    pub fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.column)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

const fn col(field: &'static str, column: &'static str, ty: ColumnType) -> Column {
    Column {
        field,
        column,
        ty,
        nullable: false,
    }
}

const fn opt(field: &'static str, column: &'static str, ty: ColumnType) -> Column {
    Column {
        field,
        column,
        ty,
        nullable: true,
    }
}

use ColumnType::{BigInt, BigInt64, Bool, Bytes, Id, Int, Text};

/// Raw decoded events, the source of truth every entity derives from.
pub const EVENTS: EntityDef = EntityDef {
    type_name: "Event",
    single: "event",
    list: "events",
    table: "events",
    description: "A decoded log of a DeCloud contract. Id: transaction hash and log index.",
    columns: &[
        col("id", "id", Id),
        col("blockNumber", "block_number", BigInt64),
        col("blockHash", "block_hash", Bytes),
        col("transactionHash", "tx_hash", Bytes),
        col("logIndex", "log_index", Int),
        col("address", "address", Bytes),
        col("contract", "contract", Text),
        col("name", "name", Text),
        col("args", "args", Text),
    ],
};

/// Nodes of the NodeRegistry.
pub const NODES: EntityDef = EntityDef {
    type_name: "Node",
    single: "node",
    list: "nodes",
    table: "nodes",
    description: "A registered node. Id: the node id (bytes32).",
    columns: &[
        col("id", "id", Id),
        col("operator", "operator", Bytes),
        col("nodeKey", "node_key", Bytes),
        col("machineId", "machine_id", Bytes),
        col("region", "region", Text),
        col("endpoint", "endpoint", Text),
        col("metadataCid", "metadata_cid", Text),
        col("vcpus", "vcpus", Int),
        col("memoryGiB", "memory_gib", Int),
        col("diskGiB", "disk_gib", Int),
        col("gpus", "gpus", Int),
        col("bandwidthMbps", "bandwidth_mbps", Int),
        col("architecture", "architecture", Int),
        col("flags", "flags", Int),
        col("status", "status", Text),
        col("cpuPerHour", "cpu_per_hour", BigInt64),
        col("memoryGiBPerHour", "memory_gib_per_hour", BigInt64),
        col("storageGiBPerHour", "storage_gib_per_hour", BigInt64),
        col("gpuPerHour", "gpu_per_hour", BigInt64),
        col("priceChanges", "price_changes", Int),
        col("registeredBlock", "registered_block", BigInt64),
        col("updatedBlock", "updated_block", BigInt64),
    ],
};

/// Price history of nodes.
pub const NODE_PRICES: EntityDef = EntityDef {
    type_name: "NodePrice",
    single: "nodePrice",
    list: "nodePrices",
    table: "node_prices",
    description: "A price change of a node (requested and stored after floors). Id: tx hash-log index.",
    columns: &[
        col("id", "id", Id),
        col("node", "node", Bytes),
        col("cpuPerHour", "cpu_per_hour", BigInt64),
        col("memoryGiBPerHour", "memory_gib_per_hour", BigInt64),
        col("storageGiBPerHour", "storage_gib_per_hour", BigInt64),
        col("gpuPerHour", "gpu_per_hour", BigInt64),
        col("requestedCpuPerHour", "requested_cpu_per_hour", BigInt64),
        col(
            "requestedMemoryGiBPerHour",
            "requested_memory_gib_per_hour",
            BigInt64,
        ),
        col(
            "requestedStorageGiBPerHour",
            "requested_storage_gib_per_hour",
            BigInt64,
        ),
        col("requestedGpuPerHour", "requested_gpu_per_hour", BigInt64),
        col("blockNumber", "block_number", BigInt64),
        col("transactionHash", "tx_hash", Bytes),
    ],
};

/// Operator stakes.
pub const STAKES: EntityDef = EntityDef {
    type_name: "Stake",
    single: "stake",
    list: "stakes",
    table: "stakes",
    description: "An operator's stake. Id: the operator's address.",
    columns: &[
        col("id", "id", Id),
        col("operator", "operator", Bytes),
        col("activeStake", "active_stake", BigInt),
        col("unbonding", "unbonding", BigInt),
        col("totalStaked", "total_staked", BigInt),
        col("totalWithdrawn", "total_withdrawn", BigInt),
        col("requestCount", "request_count", Int),
        col("updatedBlock", "updated_block", BigInt64),
    ],
};

/// Unstake requests.
pub const UNSTAKE_REQUESTS: EntityDef = EntityDef {
    type_name: "UnstakeRequest",
    single: "unstakeRequest",
    list: "unstakeRequests",
    table: "unstake_requests",
    description: "A request to unstake. Id: operator-requestId.",
    columns: &[
        col("id", "id", Id),
        col("operator", "operator", Bytes),
        col("requestId", "request_id", BigInt64),
        col("amount", "amount", BigInt),
        col("unlockAt", "unlock_at", BigInt64),
        col("withdrawn", "withdrawn", Bool),
        col("requestedBlock", "requested_block", BigInt64),
        opt("withdrawnBlock", "withdrawn_block", BigInt64),
    ],
};

/// Escrow accounts.
pub const ACCOUNTS: EntityDef = EntityDef {
    type_name: "Account",
    single: "account",
    list: "accounts",
    table: "accounts",
    description: "A LeaseEscrow account's free balance. Id: the account's address.",
    columns: &[
        col("id", "id", Id),
        col("balance", "balance", BigInt),
        col("totalDeposited", "total_deposited", BigInt),
        col("totalWithdrawn", "total_withdrawn", BigInt),
        col("updatedBlock", "updated_block", BigInt64),
    ],
};

/// Leases.
pub const LEASES: EntityDef = EntityDef {
    type_name: "Lease",
    single: "lease",
    list: "leases",
    table: "leases",
    description: "A lease of LeaseEscrow. Id: the lease id in decimal.",
    columns: &[
        col("id", "id", Id),
        col("leaseId", "lease_id", BigInt),
        col("tenant", "tenant", Bytes),
        col("node", "node", Bytes),
        col("operator", "operator", Bytes),
        col("vcpus", "vcpus", Int),
        col("memoryGiB", "memory_gib", Int),
        col("storageGiB", "storage_gib", Int),
        col("gpus", "gpus", Int),
        col("quality", "quality", Int),
        col("bandwidth", "bandwidth", Int),
        col("templateId", "template_id", BigInt),
        col("ratePerHour", "rate_per_hour", BigInt64),
        col("feeBps", "fee_bps", Int),
        col("funded", "funded", BigInt),
        col("accrualStart", "accrual_start", BigInt64),
        col("accruedBefore", "accrued_before", BigInt),
        col("settled", "settled", BigInt),
        col("settledAt", "settled_at", BigInt64),
        col("operatorPaid", "operator_paid", BigInt),
        col("platformFeePaid", "platform_fee_paid", BigInt),
        col("refund", "refund", BigInt),
        col("status", "status", Text),
        col("openedAt", "opened_at", BigInt64),
        opt("endedAt", "ended_at", BigInt64),
        opt("failedAt", "failed_at", BigInt64),
        col("claimCount", "claim_count", Int),
        col("openedBlock", "opened_block", BigInt64),
        col("updatedBlock", "updated_block", BigInt64),
    ],
};

/// Operator claims.
pub const CLAIMS: EntityDef = EntityDef {
    type_name: "Claim",
    single: "claim",
    list: "claims",
    table: "claims",
    description: "A payment of a lease's earnings to its operator. Id: tx hash-log index.",
    columns: &[
        col("id", "id", Id),
        col("lease", "lease", Id),
        col("operator", "operator", Bytes),
        col("operatorAmount", "operator_amount", BigInt),
        col("platformFee", "platform_fee", BigInt),
        col("blockNumber", "block_number", BigInt64),
        col("transactionHash", "tx_hash", Bytes),
    ],
};

/// Templates.
pub const TEMPLATES: EntityDef = EntityDef {
    type_name: "Template",
    single: "template",
    list: "templates",
    table: "templates",
    description: "A VM template of TemplateMarket. Id: the template id in decimal.",
    columns: &[
        col("id", "id", Id),
        col("templateId", "template_id", BigInt),
        col("author", "author", Bytes),
        col("cid", "cid", Text),
        col("price", "price", BigInt),
        col("metadata", "metadata", Text),
        col("deprecated", "deprecated", Bool),
        col("purchaseCount", "purchase_count", BigInt64),
        col("revenue", "revenue", BigInt),
        col("authorEarnings", "author_earnings", BigInt),
        col("publishedBlock", "published_block", BigInt64),
        col("updatedBlock", "updated_block", BigInt64),
    ],
};

/// Template purchases.
pub const PURCHASES: EntityDef = EntityDef {
    type_name: "Purchase",
    single: "purchase",
    list: "purchases",
    table: "purchases",
    description: "A paid deploy of a template. Id: the purchase id in decimal.",
    columns: &[
        col("id", "id", Id),
        col("purchaseId", "purchase_id", BigInt),
        col("template", "template", Id),
        col("buyer", "buyer", Bytes),
        col("payer", "payer", Bytes),
        col("price", "price", BigInt),
        col("authorShare", "author_share", BigInt),
        col("platformShare", "platform_share", BigInt),
        col("blockNumber", "block_number", BigInt64),
        col("transactionHash", "tx_hash", Bytes),
    ],
};

/// Attestation anchors.
pub const ANCHORS: EntityDef = EntityDef {
    type_name: "Anchor",
    single: "anchor",
    list: "anchors",
    table: "anchors",
    description: "An anchored batch of attestations. Id: the batch id in decimal.",
    columns: &[
        col("id", "id", Id),
        col("batchId", "batch_id", BigInt),
        col("root", "root", Bytes),
        col("count", "count", BigInt64),
        col("firstSequence", "first_sequence", BigInt64),
        col("timestamp", "timestamp", BigInt64),
        col("uri", "uri", Text),
        col("blockNumber", "block_number", BigInt64),
        col("transactionHash", "tx_hash", Bytes),
    ],
};

/// Storage deals.
pub const DEALS: EntityDef = EntityDef {
    type_name: "Deal",
    single: "deal",
    list: "deals",
    table: "deals",
    description: "A storage deal of StorageMarket. Id: the deal id in decimal.",
    columns: &[
        col("id", "id", Id),
        col("dealId", "deal_id", BigInt),
        col("owner", "owner", Bytes),
        col("segmentCount", "segment_count", BigInt64),
        col("pricePerEpoch", "price_per_epoch", BigInt),
        col("epochs", "epochs", BigInt64),
        col("startBlock", "start_block", BigInt64),
        col("feeBps", "fee_bps", Int),
        col("replicaCount", "replica_count", Int),
        col("deposit", "deposit", BigInt),
        col("remaining", "remaining", BigInt),
        col("provenEpochs", "proven_epochs", BigInt64),
        col("nodePaid", "node_paid", BigInt),
        col("feesPaid", "fees_paid", BigInt),
        col("settled", "settled", Bool),
        col("refund", "refund", BigInt),
        col("createdBlock", "created_block", BigInt64),
        opt("settledBlock", "settled_block", BigInt64),
        col("updatedBlock", "updated_block", BigInt64),
        opt("repairer", "repairer", Bytes),
        opt("endedBlock", "ended_block", BigInt64),
    ],
};

/// The replicas of storage deals.
pub const DEAL_REPLICAS: EntityDef = EntityDef {
    type_name: "DealReplica",
    single: "dealReplica",
    list: "dealReplicas",
    table: "deal_replicas",
    description: "A node storing a copy of a deal's data, with its commitment. Id: dealId-replica.",
    columns: &[
        col("id", "id", Id),
        col("deal", "deal", Id),
        col("replica", "replica", Int),
        col("node", "node", Bytes),
        col("payee", "payee", Bytes),
        col("root", "root", Bytes),
        col("provenEpochs", "proven_epochs", BigInt64),
        col("earned", "earned", BigInt),
        col("moves", "moves", BigInt64),
    ],
};

/// Replica moves between nodes.
pub const REPLICA_MOVES: EntityDef = EntityDef {
    type_name: "ReplicaMove",
    single: "replicaMove",
    list: "replicaMoves",
    table: "replica_moves",
    description: "A replica of a deal moved from one node to another (by the deal's owner or its \
                  repairer). Id: dealId-replica-n, n counting the replica's moves from 1.",
    columns: &[
        col("id", "id", Id),
        col("deal", "deal", Id),
        col("replica", "replica", Int),
        col("oldNode", "old_node", Bytes),
        col("newNode", "new_node", Bytes),
        col("newRoot", "new_root", Bytes),
        col("payee", "payee", Bytes),
        col("blockNumber", "block_number", BigInt64),
        col("transactionHash", "tx_hash", Bytes),
    ],
};

/// The epochs of storage deals whose randomness was recorded or that were proven.
pub const DEAL_EPOCHS: EntityDef = EntityDef {
    type_name: "DealEpoch",
    single: "dealEpoch",
    list: "dealEpochs",
    table: "deal_epochs",
    description: "An epoch of a deal: its recorded randomness and how many replicas proved it. \
                  Id: dealId-epoch.",
    columns: &[
        col("id", "id", Id),
        col("deal", "deal", Id),
        col("epoch", "epoch", BigInt64),
        opt("randomness", "randomness", Bytes),
        opt("recordedBlock", "recorded_block", BigInt64),
        col("provenReplicas", "proven_replicas", Int),
    ],
};

/// Storage proofs accepted by StorageMarket.
pub const PROOFS: EntityDef = EntityDef {
    type_name: "Proof",
    single: "proof",
    list: "proofs",
    table: "proofs",
    description: "A storage proof the market verified, and the payment it earned. \
                  Id: dealId-replica-epoch.",
    columns: &[
        col("id", "id", Id),
        col("deal", "deal", Id),
        col("replica", "replica", Int),
        col("epoch", "epoch", BigInt64),
        col("payee", "payee", Bytes),
        col("nodeAmount", "node_amount", BigInt),
        col("fee", "fee", BigInt),
        col("blockNumber", "block_number", BigInt64),
        col("transactionHash", "tx_hash", Bytes),
    ],
};

/// Storage earnings per payee.
pub const STORAGE_PAYEES: EntityDef = EntityDef {
    type_name: "StoragePayee",
    single: "storagePayee",
    list: "storagePayees",
    table: "storage_payees",
    description: "An operator's storage earnings: earned by proofs, claimed, still unclaimed. \
                  Id: the payee's address.",
    columns: &[
        col("id", "id", Id),
        col("earned", "earned", BigInt),
        col("claimed", "claimed", BigInt),
        col("unclaimed", "unclaimed", BigInt),
        col("proofCount", "proof_count", BigInt64),
        col("updatedBlock", "updated_block", BigInt64),
    ],
};

/// The tables of the entities derived from StorageMarket's events.
pub const STORAGE_TABLES: [&str; 6] = [
    DEALS.table,
    DEAL_REPLICAS.table,
    REPLICA_MOVES.table,
    DEAL_EPOCHS.table,
    PROOFS.table,
    STORAGE_PAYEES.table,
];

/// Every entity, in GraphQL schema order.
pub const ENTITIES: [&EntityDef; 17] = [
    &NODES,
    &NODE_PRICES,
    &STAKES,
    &UNSTAKE_REQUESTS,
    &ACCOUNTS,
    &LEASES,
    &CLAIMS,
    &TEMPLATES,
    &PURCHASES,
    &ANCHORS,
    &DEALS,
    &DEAL_REPLICAS,
    &REPLICA_MOVES,
    &DEAL_EPOCHS,
    &PROOFS,
    &STORAGE_PAYEES,
    &EVENTS,
];
