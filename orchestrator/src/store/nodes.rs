//! Nodes as registered on-chain: the record the chain follower keeps and the compute points
//! their agents measured.

use super::{Store, StoreError, i, named, u};
use crate::scheduler::Prices;
use decloud_sdk::NodeId;
pub use decloud_sdk::api::NodeRecord;
use sqlx::{AnyConnection, Row, any::AnyRow};

pub use decloud_sdk::types::NodeStatus;

fn node_from_row(row: &AnyRow) -> Result<NodeRecord, StoreError> {
    let tags: String = row.try_get("tags")?;
    Ok(NodeRecord {
        node_id: named(row, "node_id")?,
        operator: row.try_get("operator")?,
        node_key: row.try_get("node_key")?,
        status: named(row, "status")?,
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

const NODE_COLUMNS: &str = "node_id, operator, node_key, status, region, endpoint, metadata_cid, tags, vcpus, \
    memory_gib, disk_gib, gpus, bandwidth_mbps, compute_points, price_cpu, price_memory, price_storage, \
    price_gpu, registered_at, updated_at";

impl Store {
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
        .bind(node.node_id.to_string())
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
    pub async fn node(&self, node_id: NodeId) -> Result<Option<NodeRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = $1"
        ));
        let row = sqlx::query(sql)
            .bind(node_id.to_string())
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

    /// Sets the compute points a node's agent measured.
    pub async fn set_compute_points(&self, node_id: NodeId, points: u64) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE nodes SET compute_points = $2 WHERE node_id = $1")
            .bind(node_id.to_string())
            .bind(i(points))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("node"));
        }
        Ok(())
    }
}

/// What a node offers, as its registration or update states it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCapabilities {
    /// Logical CPUs.
    pub vcpus: u64,
    /// Memory, GiB.
    pub memory_gib: u64,
    /// Disk, GiB.
    pub disk_gib: u64,
    /// GPUs.
    pub gpus: u64,
    /// Uplink, Mbit/s.
    pub bandwidth_mbps: u64,
    /// Capability flags (`decloud_sdk::relay::RELAY_FLAG` among them).
    pub flags: u32,
}

/// A node's registration (or update) as NodeRegistry emitted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRegistration {
    /// Node id, 0x hex.
    pub node_id: NodeId,
    /// Operator address (kept from the registration on an update).
    pub operator: String,
    /// Address of the node's signing key.
    pub node_key: String,
    /// Region.
    pub region: String,
    /// Public endpoint.
    pub endpoint: String,
    /// IPFS CID of the metadata.
    pub metadata_cid: String,
    /// What it offers.
    pub capabilities: NodeCapabilities,
}

/// Records a newly registered node (active, unpriced, unmeasured); a node already recorded
/// (the same event read again) is left as it is.
pub async fn node_registered(
    conn: &mut AnyConnection,
    node: &NodeRegistration,
    block_time: i64,
) -> Result<(), StoreError> {
    let caps = &node.capabilities;
    sqlx::query(
        "INSERT INTO nodes (node_id, operator, node_key, status, region, endpoint, metadata_cid, tags, \
         vcpus, memory_gib, disk_gib, gpus, bandwidth_mbps, compute_points, price_cpu, price_memory, \
         price_storage, price_gpu, registered_at, updated_at, flags) \
         VALUES ($1, $2, $3, 'active', $4, $5, $6, '', $7, $8, $9, $10, $11, 0, 0, 0, 0, 0, $12, $12, $13) \
         ON CONFLICT (node_id) DO NOTHING",
    )
    .bind(node.node_id.to_string())
    .bind(node.operator.clone())
    .bind(node.node_key.clone())
    .bind(node.region.clone())
    .bind(node.endpoint.clone())
    .bind(node.metadata_cid.clone())
    .bind(i(caps.vcpus))
    .bind(i(caps.memory_gib))
    .bind(i(caps.disk_gib))
    .bind(i(caps.gpus))
    .bind(i(caps.bandwidth_mbps))
    .bind(block_time)
    .bind(i64::from(caps.flags))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies a node's update: key, region, endpoint, metadata and capabilities (the operator
/// never changes).
pub async fn node_updated(
    conn: &mut AnyConnection,
    node: &NodeRegistration,
    block_time: i64,
) -> Result<(), StoreError> {
    let caps = &node.capabilities;
    sqlx::query(
        "UPDATE nodes SET node_key = $2, region = $3, endpoint = $4, metadata_cid = $5, vcpus = $6, \
         memory_gib = $7, disk_gib = $8, gpus = $9, bandwidth_mbps = $10, updated_at = $11, \
         flags = $12 WHERE node_id = $1",
    )
    .bind(node.node_id.to_string())
    .bind(node.node_key.clone())
    .bind(node.region.clone())
    .bind(node.endpoint.clone())
    .bind(node.metadata_cid.clone())
    .bind(i(caps.vcpus))
    .bind(i(caps.memory_gib))
    .bind(i(caps.disk_gib))
    .bind(i(caps.gpus))
    .bind(i(caps.bandwidth_mbps))
    .bind(block_time)
    .bind(i64::from(caps.flags))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets a node's hourly prices as stored on-chain.
pub async fn node_prices_set(
    conn: &mut AnyConnection,
    node_id: NodeId,
    prices: &Prices,
    block_time: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE nodes SET price_cpu = $2, price_memory = $3, price_storage = $4, price_gpu = $5, \
         updated_at = $6 WHERE node_id = $1",
    )
    .bind(node_id.to_string())
    .bind(i(prices.cpu_per_hour))
    .bind(i(prices.memory_gib_per_hour))
    .bind(i(prices.storage_gib_per_hour))
    .bind(i(prices.gpu_per_hour))
    .bind(block_time)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets a node's on-chain status.
pub async fn node_status_changed(
    conn: &mut AnyConnection,
    node_id: NodeId,
    status: NodeStatus,
    block_time: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE nodes SET status = $2, updated_at = $3 WHERE node_id = $1")
        .bind(node_id.to_string())
        .bind(status.as_str())
        .bind(block_time)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
