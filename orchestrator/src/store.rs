//! Persistent state: SQLite by default, PostgreSQL when the URL says so, through one set of
//! migrations and one set of queries (sqlx's `Any` driver, with SQL both databases accept).
//!
//! Every write that must not be half-done runs in a transaction; heartbeats use optimistic
//! concurrency so several orchestrator replicas can share one PostgreSQL database.

use crate::{
    reputation,
    scheduler::{Prices, QualityTier, Usage},
};
use serde::{Deserialize, Serialize};
use sqlx::{
    AnyPool, Row,
    any::{AnyPoolOptions, AnyRow},
};
use std::{collections::HashMap, str::FromStr, time::Duration};
use utoipa::ToSchema;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or refused a query.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names a database this store does not support.
    #[error("unsupported database url (expected sqlite: or postgres:): {0}")]
    UnsupportedUrl(String),
    /// A referenced record does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A stored value cannot be read back as its type.
    #[error("corrupt stored value in {column}: {value}")]
    Corrupt {
        /// Column holding the value.
        column: &'static str,
        /// The value as stored.
        value: String,
    },
    /// A sign-in nonce cannot be used.
    #[error("nonce {0}")]
    Nonce(NonceProblem),
    /// An attestation of the change could not be made; the change was not stored.
    #[error("attestation failed: {0}")]
    Attestation(String),
}

impl StoreError {
    /// A failure of appending an attestation inside a store transaction.
    pub(crate) fn from_attest(e: crate::attestation::AttestError) -> Self {
        match e {
            crate::attestation::AttestError::Store(e) => e,
            other => Self::Attestation(other.to_string()),
        }
    }
}

/// Why a sign-in nonce was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NonceProblem {
    /// Never issued (or already pruned).
    #[error("was not issued by this server")]
    Unknown,
    /// Already consumed by an earlier sign-in.
    #[error("was already used")]
    Used,
    /// Issued more than its lifetime ago.
    #[error("has expired")]
    Expired,
}

/// Lifecycle of a node as recorded on-chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Takes leases.
    Active,
    /// Takes no new leases.
    Paused,
    /// Gone for good.
    Retired,
}

impl NodeStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Retired => "retired",
        }
    }
}

impl FromStr for NodeStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "active" => Ok(Self::Active),
            "paused" => Ok(Self::Paused),
            "retired" => Ok(Self::Retired),
            _ => Err(()),
        }
    }
}

/// A node as registered on-chain, plus the compute points its agent measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeRecord {
    /// keccak256(machineId, operator), 0x-prefixed lowercase hex.
    pub node_id: String,
    /// Operator address, lowercase hex.
    pub operator: String,
    /// Address of the key the node agent signs with.
    pub node_key: String,
    /// On-chain status.
    pub status: NodeStatus,
    /// Region, e.g. `eu-west`.
    pub region: String,
    /// Public endpoint the operator registered.
    pub endpoint: String,
    /// IPFS CID of the node's metadata.
    pub metadata_cid: String,
    /// Free-form tags from the metadata (lowercase).
    pub tags: Vec<String>,
    /// Logical CPUs offered.
    pub vcpus: u64,
    /// Memory offered, GiB.
    pub memory_gib: u64,
    /// Disk offered, GiB.
    pub disk_gib: u64,
    /// GPUs offered.
    pub gpus: u64,
    /// Uplink, Mbit/s.
    pub bandwidth_mbps: u64,
    /// Total compute points from the agent's CPU benchmark (0 until measured).
    pub compute_points: u64,
    /// Hourly prices as stored on-chain.
    pub prices: Prices,
    /// Registration time, unix seconds.
    pub registered_at: i64,
    /// Last on-chain change, unix seconds.
    pub updated_at: i64,
}

/// Heartbeat bookkeeping of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Liveness {
    /// First heartbeat ever, unix seconds.
    pub first_heartbeat: i64,
    /// Latest heartbeat, unix seconds.
    pub last_heartbeat: i64,
    /// Heartbeats received.
    pub heartbeats: i64,
    /// VMs ever placed on the node.
    pub vms_hosted: i64,
    /// VMs that ran until their lease ended normally.
    pub vms_completed: i64,
}

/// A node's reputation at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reputation {
    /// Heartbeat within the last two minutes.
    pub online: bool,
    /// Latest heartbeat, unix seconds.
    pub last_heartbeat: Option<i64>,
    /// 30-day rolling uptime, basis points; absent until a heartbeat was expected.
    pub uptime_bps: Option<u32>,
    /// Missed heartbeats per UTC day in the window (day = unix seconds / 86400), oldest first.
    pub failed_by_day: Vec<DailyFailures>,
    /// VMs ever placed on the node.
    pub vms_hosted: i64,
    /// VMs that ran until their lease ended normally.
    pub vms_completed: i64,
}

/// Missed heartbeats on one UTC day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DailyFailures {
    /// Days since the unix epoch.
    pub day: i64,
    /// Heartbeats missed that day.
    pub failed: i64,
}

/// A lease as opened on-chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaseRecord {
    /// On-chain lease id (decimal).
    pub lease_id: String,
    /// Tenant address, lowercase hex.
    pub tenant: String,
    /// Node the lease pays for.
    pub node_id: String,
    /// `active`, `closed` or `terminated`.
    pub status: String,
    /// Quality tier.
    pub tier: QualityTier,
    /// vCPUs.
    pub vcpus: u64,
    /// Memory, GiB.
    pub memory_gib: u64,
    /// Storage, GiB.
    pub storage_gib: u64,
    /// GPUs.
    pub gpus: u64,
    /// Micro-USDC per hour computed on-chain.
    pub rate_per_hour: u64,
    /// Open time, unix seconds.
    pub opened_at: i64,
}

/// A VM and the resources it holds on its node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmRecord {
    /// VM id.
    pub vm_id: String,
    /// Lease that pays for it.
    pub lease_id: String,
    /// Tenant address, lowercase hex.
    pub tenant: String,
    /// Node it runs on.
    pub node_id: String,
    /// Lifecycle state (`pending`, `provisioning`, `running`, `stopping`, `stopped`,
    /// `terminated`, `failed`).
    pub state: String,
    /// Quality tier.
    pub tier: QualityTier,
    /// vCPUs.
    pub vcpus: u64,
    /// Memory, GiB.
    pub memory_gib: u64,
    /// Disk, GiB.
    pub disk_gib: u64,
    /// GPUs.
    pub gpus: u64,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Last change, unix seconds.
    pub updated_at: i64,
    /// Why the VM failed, when it did.
    #[serde(default)]
    pub failure: Option<String>,
}

/// VM states that no longer hold capacity on their node.
pub const RELEASED_VM_STATES: [&str; 2] = ["terminated", "failed"];

/// A template in the catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateRecord {
    /// Unique slug, e.g. `postgresql`.
    pub slug: String,
    /// On-chain template id once published on TemplateMarket.
    pub template_id: Option<String>,
    /// Content id (CIDv1) of the published bundle.
    pub cid: String,
    /// Display name.
    pub name: String,
    /// Category, e.g. `database`.
    pub category: String,
    /// What it is.
    pub description: String,
    /// Lowercase tags.
    pub tags: Vec<String>,
    /// Minimum vCPUs.
    pub min_vcpus: u64,
    /// Minimum memory, GiB.
    pub min_memory_gib: u64,
    /// Minimum disk, GiB.
    pub min_disk_gib: u64,
    /// GPUs needed.
    pub gpus: u64,
    /// Price per deploy, micro-USDC (0 = free).
    pub price: u64,
    /// The bundle's manifest (ports, readiness checks, …).
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
    /// When it entered the catalog, unix seconds.
    pub added_at: i64,
    /// The published bundle (`decloud-templates` content), from which user-data is rendered.
    #[serde(skip)]
    pub content: Option<String>,
}

/// A command queued for a node agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRecord {
    /// Idempotency key, unique.
    pub command_id: String,
    /// Node that must execute it.
    pub node_id: String,
    /// The action as JSON (the protocol's `CommandAction`).
    pub action: String,
    /// Enqueue time, unix seconds.
    pub created_at: i64,
    /// Times it was sent.
    pub attempts: i64,
    /// Last send, unix seconds.
    pub last_sent_at: Option<i64>,
    /// Acknowledgement time, unix seconds.
    pub acked_at: Option<i64>,
    /// The acknowledgement's outcome as JSON (the protocol's `AckOutcome`).
    pub outcome: Option<String>,
}

/// What recording an acknowledgement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckRecorded {
    /// First acknowledgement: stored.
    Recorded,
    /// Already acknowledged; the first outcome stands.
    Duplicate,
    /// No such command for this node.
    Unknown,
}

/// A signed-in session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Address the session is bound to, lowercase hex.
    pub address: String,
    /// Chain id the sign-in message named.
    pub chain_id: u64,
    /// Expiry, unix seconds.
    pub expires_at: i64,
}

/// Handle to the database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    sqlite: bool,
    attestor: Option<std::sync::Arc<crate::attestation::Attestor>>,
}

fn u(row: &AnyRow, column: &'static str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(column)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        column,
        value: v.to_string(),
    })
}

fn i(v: u64) -> i64 {
    // Capacities and prices come from uint32/uint64 fields; values above i64::MAX are clamped
    // rather than wrapped so a hostile registration cannot turn into a negative capacity.
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn tier(row: &AnyRow) -> Result<QualityTier, StoreError> {
    let v: i64 = row.try_get("tier")?;
    QualityTier::from_index(v).ok_or(StoreError::Corrupt {
        column: "tier",
        value: v.to_string(),
    })
}

fn node_from_row(row: &AnyRow) -> Result<NodeRecord, StoreError> {
    let status: String = row.try_get("status")?;
    let tags: String = row.try_get("tags")?;
    Ok(NodeRecord {
        node_id: row.try_get("node_id")?,
        operator: row.try_get("operator")?,
        node_key: row.try_get("node_key")?,
        status: status.parse().map_err(|()| StoreError::Corrupt {
            column: "status",
            value: status.clone(),
        })?,
        region: row.try_get("region")?,
        endpoint: row.try_get("endpoint")?,
        metadata_cid: row.try_get("metadata_cid")?,
        tags: tags
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        vcpus: u(row, "vcpus")?,
        memory_gib: u(row, "memory_gib")?,
        disk_gib: u(row, "disk_gib")?,
        gpus: u(row, "gpus")?,
        bandwidth_mbps: u(row, "bandwidth_mbps")?,
        compute_points: u(row, "compute_points")?,
        prices: Prices {
            cpu_per_hour: u(row, "price_cpu")?,
            memory_gib_per_hour: u(row, "price_memory")?,
            storage_gib_per_hour: u(row, "price_storage")?,
            gpu_per_hour: u(row, "price_gpu")?,
        },
        registered_at: row.try_get("registered_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn lease_from_row(row: &AnyRow) -> Result<LeaseRecord, StoreError> {
    Ok(LeaseRecord {
        lease_id: row.try_get("lease_id")?,
        tenant: row.try_get("tenant")?,
        node_id: row.try_get("node_id")?,
        status: row.try_get("status")?,
        tier: tier(row)?,
        vcpus: u(row, "vcpus")?,
        memory_gib: u(row, "memory_gib")?,
        storage_gib: u(row, "storage_gib")?,
        gpus: u(row, "gpus")?,
        rate_per_hour: u(row, "rate_per_hour")?,
        opened_at: row.try_get("opened_at")?,
    })
}

fn vm_from_row(row: &AnyRow) -> Result<VmRecord, StoreError> {
    Ok(VmRecord {
        vm_id: row.try_get("vm_id")?,
        lease_id: row.try_get("lease_id")?,
        tenant: row.try_get("tenant")?,
        node_id: row.try_get("node_id")?,
        state: row.try_get("state")?,
        tier: tier(row)?,
        vcpus: u(row, "vcpus")?,
        memory_gib: u(row, "memory_gib")?,
        disk_gib: u(row, "disk_gib")?,
        gpus: u(row, "gpus")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        failure: row.try_get("failure")?,
    })
}

fn template_from_row(row: &AnyRow) -> Result<TemplateRecord, StoreError> {
    let tags: String = row.try_get("tags")?;
    let manifest: String = row.try_get("manifest")?;
    Ok(TemplateRecord {
        slug: row.try_get("slug")?,
        template_id: row.try_get("template_id")?,
        cid: row.try_get("cid")?,
        name: row.try_get("name")?,
        category: row.try_get("category")?,
        description: row.try_get("description")?,
        tags: tags
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        min_vcpus: u(row, "min_vcpus")?,
        min_memory_gib: u(row, "min_memory_gib")?,
        min_disk_gib: u(row, "min_disk_gib")?,
        gpus: u(row, "gpus")?,
        price: u(row, "price")?,
        manifest: serde_json::from_str(&manifest).map_err(|_| StoreError::Corrupt {
            column: "manifest",
            value: manifest.clone(),
        })?,
        added_at: row.try_get("added_at")?,
        content: row.try_get("content")?,
    })
}

fn command_from_row(row: &AnyRow) -> Result<CommandRecord, StoreError> {
    Ok(CommandRecord {
        command_id: row.try_get("command_id")?,
        node_id: row.try_get("node_id")?,
        action: row.try_get("action")?,
        created_at: row.try_get("created_at")?,
        attempts: row.try_get("attempts")?,
        last_sent_at: row.try_get("last_sent_at")?,
        acked_at: row.try_get("acked_at")?,
        outcome: row.try_get("outcome")?,
    })
}

fn liveness_from_row(row: &AnyRow) -> Result<Liveness, StoreError> {
    Ok(Liveness {
        first_heartbeat: row.try_get("first_heartbeat")?,
        last_heartbeat: row.try_get("last_heartbeat")?,
        heartbeats: row.try_get("heartbeats")?,
        vms_hosted: row.try_get("vms_hosted")?,
        vms_completed: row.try_get("vms_completed")?,
    })
}

const NODE_COLUMNS: &str = "node_id, operator, node_key, status, region, endpoint, metadata_cid, tags, vcpus, \
    memory_gib, disk_gib, gpus, bandwidth_mbps, compute_points, price_cpu, price_memory, price_storage, \
    price_gpu, registered_at, updated_at";

impl Store {
    /// Opens (creating if needed) the database at `url` and applies pending migrations.
    ///
    /// `sqlite:path` (or `sqlite::memory:`) and `postgres://…` are accepted.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        }
        let url = if sqlite && !url.contains("mode=") && !url.contains(":memory:") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_string()
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if sqlite {
            // An in-memory SQLite database lives in one connection; a file shares across many.
            options = options.max_connections(if url.contains(":memory:") { 1 } else { 8 });
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers work while a heartbeat writes.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(16);
        }
        let pool = options.connect(&url).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            sqlite,
            attestor: None,
        })
    }

    /// Starts a transaction that will write. SQLite cannot upgrade a read transaction to a write
    /// one while another connection writes (it fails at once with "database is locked"), so
    /// there the write lock is taken up front and waits under the busy timeout instead.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(self
            .pool
            .begin_with(if self.sqlite {
                "BEGIN IMMEDIATE"
            } else {
                "BEGIN"
            })
            .await?)
    }

    /// The same store, signing an attestation of every state change it makes with `attestor`
    /// (in the transaction of the change).
    pub fn with_attestor(mut self, attestor: crate::attestation::Attestor) -> Self {
        self.attestor = Some(std::sync::Arc::new(attestor));
        self
    }

    /// The attestation key, when one is configured.
    pub fn attestor(&self) -> Option<&crate::attestation::Attestor> {
        self.attestor.as_deref()
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- nodes ----

    /// Inserts a node or replaces every field of the existing record.
    pub async fn upsert_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let tags = node
            .tags
            .iter()
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty() && !t.contains(','))
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query(
            "INSERT INTO nodes (node_id, operator, node_key, status, region, endpoint, metadata_cid, tags, vcpus, \
             memory_gib, disk_gib, gpus, bandwidth_mbps, compute_points, price_cpu, price_memory, price_storage, \
             price_gpu, registered_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
             ON CONFLICT (node_id) DO UPDATE SET operator = excluded.operator, node_key = excluded.node_key, \
             status = excluded.status, region = excluded.region, endpoint = excluded.endpoint, \
             metadata_cid = excluded.metadata_cid, tags = excluded.tags, vcpus = excluded.vcpus, \
             memory_gib = excluded.memory_gib, disk_gib = excluded.disk_gib, gpus = excluded.gpus, \
             bandwidth_mbps = excluded.bandwidth_mbps, compute_points = excluded.compute_points, \
             price_cpu = excluded.price_cpu, price_memory = excluded.price_memory, \
             price_storage = excluded.price_storage, price_gpu = excluded.price_gpu, \
             registered_at = excluded.registered_at, updated_at = excluded.updated_at",
        )
        .bind(node.node_id.to_lowercase())
        .bind(node.operator.to_lowercase())
        .bind(node.node_key.to_lowercase())
        .bind(node.status.as_str())
        .bind(node.region.clone())
        .bind(node.endpoint.clone())
        .bind(node.metadata_cid.clone())
        .bind(tags)
        .bind(i(node.vcpus))
        .bind(i(node.memory_gib))
        .bind(i(node.disk_gib))
        .bind(i(node.gpus))
        .bind(i(node.bandwidth_mbps))
        .bind(i(node.compute_points))
        .bind(i(node.prices.cpu_per_hour))
        .bind(i(node.prices.memory_gib_per_hour))
        .bind(i(node.prices.storage_gib_per_hour))
        .bind(i(node.prices.gpu_per_hour))
        .bind(node.registered_at)
        .bind(node.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One node by id.
    pub async fn node(&self, node_id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = $1"
        ));
        let row = sqlx::query(sql)
            .bind(node_id.to_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(node_from_row).transpose()
    }

    /// Every node, ordered by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY node_id"));
        sqlx::query(sql)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(node_from_row)
            .collect()
    }

    /// Nodes of one operator, ordered by id.
    pub async fn nodes_of_operator(&self, operator: &str) -> Result<Vec<NodeRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE operator = $1 ORDER BY node_id"
        ));
        sqlx::query(sql)
            .bind(operator.to_lowercase())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(node_from_row)
            .collect()
    }

    // ---- heartbeats and reputation ----

    /// Records a heartbeat of `node_id` received at `now` and books the heartbeats missed since
    /// the previous one on the days they were due. Returns how many were missed.
    ///
    /// A heartbeat older than the latest one (clock skew, a retried delivery) is counted but
    /// books nothing and does not move the latest time back.
    pub async fn record_heartbeat(&self, node_id: &str, now: i64) -> Result<i64, StoreError> {
        let node_id = node_id.to_lowercase();
        loop {
            let mut tx = self.begin_write().await?;
            let known = sqlx::query("SELECT 1 FROM nodes WHERE node_id = $1")
                .bind(node_id.clone())
                .fetch_optional(&mut *tx)
                .await?;
            if known.is_none() {
                return Err(StoreError::NotFound("node"));
            }
            let seen = sqlx::query(
                "SELECT last_heartbeat, heartbeats FROM node_liveness WHERE node_id = $1",
            )
            .bind(node_id.clone())
            .fetch_optional(&mut *tx)
            .await?;
            let (last, heartbeats): (i64, i64) = match seen {
                Some(row) => (row.try_get("last_heartbeat")?, row.try_get("heartbeats")?),
                None => {
                    let inserted = sqlx::query(
                        "INSERT INTO node_liveness (node_id, first_heartbeat, last_heartbeat, heartbeats, vms_hosted, \
                         vms_completed) VALUES ($1, $2, $2, 1, 0, 0) ON CONFLICT (node_id) DO NOTHING",
                    )
                    .bind(node_id.clone())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if inserted.rows_affected() == 1 {
                        tx.commit().await?;
                        return Ok(0);
                    }
                    // Another replica recorded the first heartbeat meanwhile: go again.
                    continue;
                }
            };
            if heartbeats == 0 {
                // The record was opened by a VM counter; the uptime clock starts now.
                let started = sqlx::query(
                    "UPDATE node_liveness SET first_heartbeat = $2, last_heartbeat = $2, heartbeats = 1 \
                     WHERE node_id = $1 AND heartbeats = 0",
                )
                .bind(node_id.clone())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if started.rows_affected() == 1 {
                    tx.commit().await?;
                    return Ok(0);
                }
                continue;
            }
            let split = reputation::missed_by_day(last, now, reputation::window_start_day(now));
            // Only move forward; the WHERE clause makes a concurrent writer's update win cleanly.
            let updated = sqlx::query(
                "UPDATE node_liveness SET last_heartbeat = $2, heartbeats = heartbeats + 1 \
                 WHERE node_id = $1 AND last_heartbeat = $3",
            )
            .bind(node_id.clone())
            .bind(now.max(last))
            .bind(last)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                continue;
            }
            for (day, failed) in &split {
                sqlx::query(
                    "INSERT INTO node_failures_daily (node_id, day, failed) VALUES ($1, $2, $3) \
                     ON CONFLICT (node_id, day) DO UPDATE SET failed = node_failures_daily.failed + excluded.failed",
                )
                .bind(node_id.clone())
                .bind(*day)
                .bind(*failed)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok(split.iter().map(|(_, n)| n).sum());
        }
    }

    /// Heartbeat bookkeeping of one node.
    pub async fn liveness(&self, node_id: &str) -> Result<Option<Liveness>, StoreError> {
        let row = sqlx::query(
            "SELECT first_heartbeat, last_heartbeat, heartbeats, vms_hosted, vms_completed \
             FROM node_liveness WHERE node_id = $1",
        )
        .bind(node_id.to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(liveness_from_row).transpose()
    }

    /// Counts a VM placed on the node (lifetime "hosted").
    pub async fn record_vm_hosted(&self, node_id: &str, now: i64) -> Result<(), StoreError> {
        self.bump_vm_counter(node_id, now, "vms_hosted").await
    }

    /// Counts a VM that ran until its lease ended normally (lifetime "completed").
    pub async fn record_vm_completed(&self, node_id: &str, now: i64) -> Result<(), StoreError> {
        self.bump_vm_counter(node_id, now, "vms_completed").await
    }

    async fn bump_vm_counter(
        &self,
        node_id: &str,
        now: i64,
        column: &'static str,
    ) -> Result<(), StoreError> {
        let node_id = node_id.to_lowercase();
        if self.node(&node_id).await?.is_none() {
            return Err(StoreError::NotFound("node"));
        }
        let (hosted, completed) = if column == "vms_hosted" {
            (1, 0)
        } else {
            (0, 1)
        };
        // A node that never sent a heartbeat starts its record here; its uptime clock starts at
        // its first heartbeat, which is why first/last are only set on insert.
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO node_liveness (node_id, first_heartbeat, last_heartbeat, heartbeats, vms_hosted, \
             vms_completed) VALUES ($1, $2, $2, 0, $3, $4) \
             ON CONFLICT (node_id) DO UPDATE SET {column} = node_liveness.{column} + 1"
        ));
        sqlx::query(sql)
            .bind(node_id)
            .bind(now)
            .bind(hosted)
            .bind(completed)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Missed heartbeats per day of one node from `from_day` on, oldest first.
    pub async fn failures_by_day(
        &self,
        node_id: &str,
        from_day: i64,
    ) -> Result<Vec<DailyFailures>, StoreError> {
        let rows = sqlx::query(
            "SELECT day, failed FROM node_failures_daily WHERE node_id = $1 AND day >= $2 ORDER BY day",
        )
        .bind(node_id.to_lowercase())
        .bind(from_day)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DailyFailures {
                    day: r.try_get("day")?,
                    failed: r.try_get("failed")?,
                })
            })
            .collect()
    }

    /// A node's reputation at `now`.
    pub async fn reputation(&self, node_id: &str, now: i64) -> Result<Reputation, StoreError> {
        let liveness = self.liveness(node_id).await?;
        let failed_by_day = self
            .failures_by_day(node_id, reputation::window_start_day(now))
            .await?;
        let recorded: i64 = failed_by_day.iter().map(|d| d.failed).sum();
        Ok(reputation_of(liveness, recorded, failed_by_day, now))
    }

    /// Reputation of every node with a heartbeat record, by node id.
    pub async fn reputations(&self, now: i64) -> Result<HashMap<String, Reputation>, StoreError> {
        let rows = sqlx::query(
            "SELECT node_id, first_heartbeat, last_heartbeat, heartbeats, vms_hosted, vms_completed FROM node_liveness",
        )
        .fetch_all(&self.pool)
        .await?;
        let failed_rows = sqlx::query(
            "SELECT node_id, CAST(SUM(failed) AS BIGINT) AS failed FROM node_failures_daily \
             WHERE day >= $1 GROUP BY node_id",
        )
        .bind(reputation::window_start_day(now))
        .fetch_all(&self.pool)
        .await?;
        let mut failed = HashMap::new();
        for row in &failed_rows {
            let id: String = row.try_get("node_id")?;
            let n: i64 = row.try_get("failed")?;
            failed.insert(id, n);
        }
        let mut out = HashMap::new();
        for row in &rows {
            let id: String = row.try_get("node_id")?;
            let recorded = failed.get(&id).copied().unwrap_or(0);
            out.insert(
                id,
                reputation_of(Some(liveness_from_row(row)?), recorded, Vec::new(), now),
            );
        }
        Ok(out)
    }

    // ---- leases and VMs ----

    /// Inserts a lease or replaces the existing record.
    pub async fn upsert_lease(&self, lease: &LeaseRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO leases (lease_id, tenant, node_id, status, tier, vcpus, memory_gib, storage_gib, gpus, \
             rate_per_hour, opened_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (lease_id) DO UPDATE SET tenant = excluded.tenant, node_id = excluded.node_id, \
             status = excluded.status, tier = excluded.tier, vcpus = excluded.vcpus, \
             memory_gib = excluded.memory_gib, storage_gib = excluded.storage_gib, gpus = excluded.gpus, \
             rate_per_hour = excluded.rate_per_hour, opened_at = excluded.opened_at",
        )
        .bind(lease.lease_id.clone())
        .bind(lease.tenant.to_lowercase())
        .bind(lease.node_id.to_lowercase())
        .bind(lease.status.clone())
        .bind(lease.tier as i64)
        .bind(i(lease.vcpus))
        .bind(i(lease.memory_gib))
        .bind(i(lease.storage_gib))
        .bind(i(lease.gpus))
        .bind(i(lease.rate_per_hour))
        .bind(lease.opened_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One lease by id.
    pub async fn lease(&self, lease_id: &str) -> Result<Option<LeaseRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM leases WHERE lease_id = $1")
            .bind(lease_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    /// Leases of one tenant, newest first.
    pub async fn leases_of_tenant(&self, tenant: &str) -> Result<Vec<LeaseRecord>, StoreError> {
        sqlx::query("SELECT * FROM leases WHERE tenant = $1 ORDER BY opened_at DESC, lease_id")
            .bind(tenant.to_lowercase())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(lease_from_row)
            .collect()
    }

    /// Inserts a VM record.
    pub async fn insert_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO vms (vm_id, lease_id, tenant, node_id, state, tier, vcpus, memory_gib, disk_gib, gpus, \
             created_at, updated_at, failure) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(vm.vm_id.clone())
        .bind(vm.lease_id.clone())
        .bind(vm.tenant.to_lowercase())
        .bind(vm.node_id.to_lowercase())
        .bind(vm.state.clone())
        .bind(vm.tier as i64)
        .bind(i(vm.vcpus))
        .bind(i(vm.memory_gib))
        .bind(i(vm.disk_gib))
        .bind(i(vm.gpus))
        .bind(vm.created_at)
        .bind(vm.updated_at)
        .bind(vm.failure.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One VM by id.
    pub async fn vm(&self, vm_id: &str) -> Result<Option<VmRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM vms WHERE vm_id = $1")
            .bind(vm_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(vm_from_row).transpose()
    }

    /// VMs of one tenant, newest first.
    pub async fn vms_of_tenant(&self, tenant: &str) -> Result<Vec<VmRecord>, StoreError> {
        sqlx::query("SELECT * FROM vms WHERE tenant = $1 ORDER BY created_at DESC, vm_id")
            .bind(tenant.to_lowercase())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(vm_from_row)
            .collect()
    }

    /// VMs placed on one node, newest first.
    pub async fn vms_on_node(&self, node_id: &str) -> Result<Vec<VmRecord>, StoreError> {
        sqlx::query("SELECT * FROM vms WHERE node_id = $1 ORDER BY created_at DESC, vm_id")
            .bind(node_id.to_lowercase())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(vm_from_row)
            .collect()
    }

    /// Moves a VM from `from` to `to` and, in the same transaction, queues `command` for its
    /// node (persist first: the command exists only if the new state does). Returns `false`
    /// and changes nothing when the VM is no longer in `from` (another writer moved it).
    pub async fn transition_vm(
        &self,
        vm_id: &str,
        from: &str,
        to: &str,
        failure: Option<&str>,
        command: Option<(&str, &str)>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE vms SET state = $3, failure = $4, updated_at = $5 WHERE vm_id = $1 AND state = $2",
        )
        .bind(vm_id.to_string())
        .bind(from.to_string())
        .bind(to.to_string())
        .bind(failure.map(str::to_string))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        let row = sqlx::query("SELECT node_id, lease_id FROM vms WHERE vm_id = $1")
            .bind(vm_id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let node: String = row.try_get("node_id")?;
        if let Some(attestor) = self.attestor() {
            let lease: String = row.try_get("lease_id")?;
            let payload = serde_json::json!({
                "vm_id": vm_id, "lease_id": lease, "node_id": node, "from": from, "to": to,
                "failure": failure, "command_id": command.map(|(id, _)| id),
            });
            crate::attestation::append(
                &mut tx,
                attestor,
                &format!("vm:{vm_id}"),
                "vm.transition",
                &payload,
                now,
            )
            .await
            .map_err(StoreError::from_attest)?;
        }
        if let Some((command_id, action)) = command {
            sqlx::query(
                "INSERT INTO agent_commands (command_id, node_id, action, created_at, attempts, last_sent_at, \
                 acked_at, outcome, vm_id) VALUES ($1, $2, $3, $4, 0, NULL, NULL, NULL, $5) \
                 ON CONFLICT (command_id) DO NOTHING",
            )
            .bind(command_id.to_string())
            .bind(node)
            .bind(action.to_string())
            .bind(now)
            .bind(vm_id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The on-chain template id a lease deploys, if it names one.
    pub async fn lease_template(&self, lease_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT template_id FROM leases WHERE lease_id = $1")
            .bind(lease_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r
                .try_get::<Option<String>, _>("template_id")?
                .filter(|t| t != "0"),
            None => None,
        })
    }

    /// When an active lease's funds run out, unix seconds: `None` for a lease that is not active
    /// or whose funding the chain has not told.
    pub async fn lease_depleted_at(&self, lease_id: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT funded, accrual_start, accrued_before, rate_per_hour FROM leases \
             WHERE lease_id = $1 AND status = 'active'",
        )
        .bind(lease_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (Some(funded), Some(start), Some(before)) = (
            row.try_get::<Option<i64>, _>("funded")?,
            row.try_get::<Option<i64>, _>("accrual_start")?,
            row.try_get::<Option<i64>, _>("accrued_before")?,
        ) else {
            return Ok(None);
        };
        let rate: i64 = row.try_get("rate_per_hour")?;
        Ok(Some(crate::lifecycle::depleted_at(
            funded, start, before, rate,
        )))
    }

    /// Ids of the VMs in one state, oldest first.
    pub async fn vms_in_state(&self, state: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT vm_id FROM vms WHERE state = $1 ORDER BY created_at, vm_id")
            .bind(state.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("vm_id")?)).collect()
    }

    /// Leases closed or terminated on-chain whose VM is still to be removed: `(lease_id, status)`.
    pub async fn leases_to_close(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT l.lease_id, l.status FROM leases l JOIN vms v ON v.lease_id = l.lease_id \
             WHERE l.status IN ('closed', 'terminated') AND v.state NOT IN ('terminated', 'stopping') \
             ORDER BY l.lease_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("lease_id")?, r.try_get("status")?)))
            .collect()
    }

    /// The pool, as the chain follower's database handle.
    pub fn follower_database(&self) -> decloud_indexer::Database {
        let backend = if self.sqlite {
            decloud_indexer::Backend::Sqlite
        } else {
            decloud_indexer::Backend::Postgres
        };
        decloud_indexer::Database {
            pool: self.pool.clone(),
            backend,
        }
    }

    /// The VM a command acts on, if it acts on one.
    pub async fn command_vm(&self, command_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT vm_id FROM agent_commands WHERE command_id = $1")
            .bind(command_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("vm_id")?,
            None => None,
        })
    }

    /// Acknowledged commands whose VM is still waiting for them (provisioning or stopping):
    /// what a crash between storing an acknowledgement and applying it leaves behind.
    pub async fn unapplied_acks(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.command_id, c.outcome FROM agent_commands c JOIN vms v ON v.vm_id = c.vm_id \
             WHERE c.acked_at IS NOT NULL AND v.state IN ('provisioning', 'stopping') ORDER BY c.acked_at, c.command_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("command_id")?,
                    r.try_get::<Option<String>, _>("outcome")?
                        .unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// Why a VM failed, if it did.
    pub async fn vm_failure(&self, vm_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT failure FROM vms WHERE vm_id = $1")
            .bind(vm_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("failure")?,
            None => None,
        })
    }

    /// Resources held on each node by VMs that are not terminated or failed.
    pub async fn usage_by_node(&self) -> Result<HashMap<String, Usage>, StoreError> {
        let rows = sqlx::query(
            "SELECT node_id, tier, vcpus, memory_gib, disk_gib, gpus FROM vms WHERE state <> $1 AND state <> $2",
        )
        .bind(RELEASED_VM_STATES[0])
        .bind(RELEASED_VM_STATES[1])
        .fetch_all(&self.pool)
        .await?;
        let mut usage: HashMap<String, Usage> = HashMap::new();
        for row in &rows {
            let entry = usage.entry(row.try_get("node_id")?).or_default();
            entry.compute_units += tier(row)?.units_for(u(row, "vcpus")?);
            entry.memory_gib += u(row, "memory_gib")?;
            entry.disk_gib += u(row, "disk_gib")?;
            entry.gpus += u(row, "gpus")?;
        }
        Ok(usage)
    }

    /// Sets the compute points a node's agent measured.
    pub async fn set_compute_points(&self, node_id: &str, points: u64) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE nodes SET compute_points = $2 WHERE node_id = $1")
            .bind(node_id.to_lowercase())
            .bind(i(points))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("node"));
        }
        Ok(())
    }

    // ---- template catalog ----

    /// Inserts a template or replaces the one with the same slug. A record without an on-chain
    /// id (the catalog loaded again at start) keeps the id and price the chain gave the same
    /// content, since the chain follower does not read those events again.
    pub async fn upsert_template(&self, t: &TemplateRecord) -> Result<(), StoreError> {
        let tags = t
            .tags
            .iter()
            .filter(|x| !x.is_empty() && !x.contains(','))
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query(
            "INSERT INTO templates (slug, template_id, cid, name, category, description, tags, min_vcpus, \
             min_memory_gib, min_disk_gib, gpus, price, manifest, added_at, content) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (slug) DO UPDATE SET \
             template_id = CASE WHEN excluded.template_id IS NULL AND templates.cid = excluded.cid \
               THEN templates.template_id ELSE excluded.template_id END, \
             price = CASE WHEN excluded.template_id IS NULL AND templates.cid = excluded.cid \
               THEN templates.price ELSE excluded.price END, \
             cid = excluded.cid, \
             name = excluded.name, category = excluded.category, description = excluded.description, \
             tags = excluded.tags, min_vcpus = excluded.min_vcpus, min_memory_gib = excluded.min_memory_gib, \
             min_disk_gib = excluded.min_disk_gib, gpus = excluded.gpus, \
             manifest = excluded.manifest, content = excluded.content",
        )
        .bind(t.slug.clone())
        .bind(t.template_id.clone())
        .bind(t.cid.clone())
        .bind(t.name.clone())
        .bind(t.category.clone())
        .bind(t.description.clone())
        .bind(tags)
        .bind(i(t.min_vcpus))
        .bind(i(t.min_memory_gib))
        .bind(i(t.min_disk_gib))
        .bind(i(t.gpus))
        .bind(i(t.price))
        .bind(t.manifest.to_string())
        .bind(t.added_at)
        .bind(t.content.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every template, by slug.
    pub async fn templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        sqlx::query("SELECT * FROM templates ORDER BY slug")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(template_from_row)
            .collect()
    }

    /// A template by slug or by on-chain template id.
    pub async fn template(&self, slug_or_id: &str) -> Result<Option<TemplateRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM templates WHERE slug = $1 OR template_id = $1 ORDER BY slug LIMIT 1",
        )
        .bind(slug_or_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(template_from_row).transpose()
    }

    // ---- node agent commands ----

    /// Queues a command for a node. Enqueuing an id that exists changes nothing and returns
    /// `false`, so a retried enqueue cannot create a second command.
    pub async fn enqueue_command(
        &self,
        command_id: &str,
        node_id: &str,
        action: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO agent_commands (command_id, node_id, action, created_at, attempts, last_sent_at, acked_at, \
             outcome) VALUES ($1, $2, $3, $4, 0, NULL, NULL, NULL) ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(command_id.to_string())
        .bind(node_id.to_lowercase())
        .bind(action.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Unacknowledged commands of a node never sent or last sent at or before `sent_before`,
    /// oldest first.
    pub async fn due_commands(
        &self,
        node_id: &str,
        sent_before: i64,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM agent_commands WHERE node_id = $1 AND acked_at IS NULL \
             AND (last_sent_at IS NULL OR last_sent_at <= $2) ORDER BY created_at, command_id",
        )
        .bind(node_id.to_lowercase())
        .bind(sent_before)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(command_from_row)
        .collect()
    }

    /// Notes that a command was sent at `now`.
    pub async fn mark_command_sent(&self, command_id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE agent_commands SET attempts = attempts + 1, last_sent_at = $2 WHERE command_id = $1")
            .bind(command_id.to_string())
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a node's acknowledgement of one of its commands; the first one wins.
    pub async fn ack_command(
        &self,
        node_id: &str,
        command_id: &str,
        outcome: &str,
        now: i64,
    ) -> Result<AckRecorded, StoreError> {
        let done = sqlx::query(
            "UPDATE agent_commands SET acked_at = $3, outcome = $4 \
             WHERE command_id = $1 AND node_id = $2 AND acked_at IS NULL",
        )
        .bind(command_id.to_string())
        .bind(node_id.to_lowercase())
        .bind(now)
        .bind(outcome.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(AckRecorded::Recorded);
        }
        let exists =
            sqlx::query("SELECT 1 FROM agent_commands WHERE command_id = $1 AND node_id = $2")
                .bind(command_id.to_string())
                .bind(node_id.to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
        Ok(if exists.is_some() {
            AckRecorded::Duplicate
        } else {
            AckRecorded::Unknown
        })
    }

    /// One command by id.
    pub async fn command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM agent_commands WHERE command_id = $1")
            .bind(command_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(command_from_row).transpose()
    }

    // ---- sign-in ----

    /// Stores a freshly issued nonce valid until `expires_at`.
    pub async fn create_nonce(
        &self,
        nonce: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO siwe_nonces (nonce, created_at, expires_at, used_at) VALUES ($1, $2, $3, NULL)")
            .bind(nonce.to_string())
            .bind(now)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Issue time of a nonce that is still usable at `now`, or why it is not.
    pub async fn usable_nonce(&self, nonce: &str, now: i64) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT created_at, expires_at, used_at FROM siwe_nonces WHERE nonce = $1")
                .bind(nonce.to_string())
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::Nonce(NonceProblem::Unknown))?;
        let used: Option<i64> = row.try_get("used_at")?;
        let expires: i64 = row.try_get("expires_at")?;
        if used.is_some() {
            return Err(StoreError::Nonce(NonceProblem::Used));
        }
        if expires <= now {
            return Err(StoreError::Nonce(NonceProblem::Expired));
        }
        Ok(row.try_get("created_at")?)
    }

    /// Consumes a nonce and creates the session in one transaction: of two concurrent sign-ins
    /// with the same nonce exactly one gets a session.
    pub async fn consume_nonce_and_create_session(
        &self,
        nonce: &str,
        now: i64,
        token_hash: &str,
        session: &SessionRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let consumed = sqlx::query(
            "UPDATE siwe_nonces SET used_at = $2 WHERE nonce = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(nonce.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if consumed.rows_affected() != 1 {
            drop(tx);
            // Say precisely why; usable_nonce reports the problem, or Used if it raced.
            self.usable_nonce(nonce, now).await?;
            return Err(StoreError::Nonce(NonceProblem::Used));
        }
        sqlx::query(
            "INSERT INTO sessions (token_hash, address, chain_id, created_at, expires_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(token_hash.to_string())
        .bind(session.address.to_lowercase())
        .bind(i(session.chain_id))
        .bind(now)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live (not expired, not revoked) session with this token hash.
    pub async fn session(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT address, chain_id, expires_at FROM sessions \
             WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash.to_string())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRecord {
                address: r.try_get("address")?,
                chain_id: u(&r, "chain_id")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Revokes a session; returns whether a live session was revoked.
    pub async fn revoke_session(&self, token_hash: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes nonces and sessions that can no longer be used; returns how many rows went.
    pub async fn prune_auth(&self, now: i64) -> Result<u64, StoreError> {
        let a =
            sqlx::query("DELETE FROM siwe_nonces WHERE expires_at <= $1 OR used_at IS NOT NULL")
                .bind(now)
                .execute(&self.pool)
                .await?;
        let b =
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR revoked_at IS NOT NULL")
                .bind(now)
                .execute(&self.pool)
                .await?;
        Ok(a.rows_affected() + b.rows_affected())
    }
}

fn reputation_of(
    liveness: Option<Liveness>,
    recorded_failed: i64,
    failed_by_day: Vec<DailyFailures>,
    now: i64,
) -> Reputation {
    match liveness {
        None => Reputation {
            online: false,
            last_heartbeat: None,
            uptime_bps: None,
            failed_by_day,
            vms_hosted: 0,
            vms_completed: 0,
        },
        Some(l) => {
            let seen = l.heartbeats > 0;
            Reputation {
                online: seen && reputation::is_online(Some(l.last_heartbeat), now),
                last_heartbeat: seen.then_some(l.last_heartbeat),
                uptime_bps: if seen {
                    reputation::uptime_bps(
                        l.first_heartbeat,
                        l.last_heartbeat,
                        recorded_failed,
                        now,
                    )
                } else {
                    None
                },
                failed_by_day,
                vms_hosted: l.vms_hosted,
                vms_completed: l.vms_completed,
            }
        }
    }
}
