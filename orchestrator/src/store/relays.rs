//! Relays: which relay each relayed node is assigned to and what was published for it there,
//! the nodes' capability flags, and the bytes relays carried per VM.

use super::{Store, StoreError};
use decloud_sdk::api::RelayTraffic;
use decloud_sdk::relay::{RelayedNode, VmTraffic};
use decloud_sdk::{NodeId, VmId};
use sqlx::Row;
use std::net::Ipv4Addr;

/// A relayed node's assignment as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayAssignmentRecord {
    /// The relayed node.
    pub node_id: NodeId,
    /// Its relay.
    pub relay_node_id: NodeId,
    /// The relay's public address (IP or DNS name), where tenants reach the node's VMs.
    pub relay_address: String,
    /// The node's address inside the relay's tunnel subnet.
    pub tunnel_address: Ipv4Addr,
    /// What was last published for the node on the relay (relay ports included).
    pub published: RelayedNode,
    /// When the node was assigned to this relay, unix seconds.
    pub assigned_at: i64,
}

fn corrupt(column: &'static str, value: &str) -> StoreError {
    StoreError::Corrupt {
        column,
        value: value.to_string(),
    }
}

fn assignment(row: &sqlx::any::AnyRow) -> Result<RelayAssignmentRecord, StoreError> {
    let node_id: String = row.try_get("node_id")?;
    let relay_node_id: String = row.try_get("relay_node_id")?;
    let tunnel_address: String = row.try_get("tunnel_address")?;
    let published: String = row.try_get("published")?;
    Ok(RelayAssignmentRecord {
        node_id: node_id.parse().map_err(|_| corrupt("node_id", &node_id))?,
        relay_node_id: relay_node_id
            .parse()
            .map_err(|_| corrupt("relay_node_id", &relay_node_id))?,
        tunnel_address: tunnel_address
            .parse()
            .map_err(|_| corrupt("tunnel_address", &tunnel_address))?,
        published: serde_json::from_str(&published)
            .map_err(|_| corrupt("published", &published))?,
        relay_address: row.try_get("relay_address")?,
        assigned_at: row.try_get("assigned_at")?,
    })
}

impl Store {
    /// A node's on-chain capability flags (0 for a node not recorded).
    pub async fn node_flags(&self, node_id: NodeId) -> Result<u32, StoreError> {
        let flags = sqlx::query("SELECT flags FROM nodes WHERE node_id = $1")
            .bind(node_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<i64, _>("flags"))
            .transpose()?
            .unwrap_or(0);
        Ok(u32::try_from(flags).unwrap_or(0))
    }

    /// Every relayed node's assignment.
    pub async fn relay_assignments(&self) -> Result<Vec<RelayAssignmentRecord>, StoreError> {
        sqlx::query(
            "SELECT node_id, relay_node_id, relay_address, tunnel_address, published, assigned_at \
             FROM relay_assignments ORDER BY node_id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(assignment)
        .collect()
    }

    /// A node's assignment, if it is relayed.
    pub async fn relay_assignment(
        &self,
        node_id: NodeId,
    ) -> Result<Option<RelayAssignmentRecord>, StoreError> {
        sqlx::query(
            "SELECT node_id, relay_node_id, relay_address, tunnel_address, published, assigned_at \
             FROM relay_assignments WHERE node_id = $1",
        )
        .bind(node_id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(assignment)
        .transpose()
    }

    /// Records (or replaces) a node's assignment and publication.
    pub async fn put_relay_assignment(
        &self,
        record: &RelayAssignmentRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO relay_assignments (node_id, relay_node_id, relay_address, tunnel_address, \
             published, assigned_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (node_id) DO UPDATE SET relay_node_id = excluded.relay_node_id, \
             relay_address = excluded.relay_address, tunnel_address = excluded.tunnel_address, \
             published = excluded.published, assigned_at = excluded.assigned_at, \
             updated_at = excluded.updated_at",
        )
        .bind(record.node_id.to_string())
        .bind(record.relay_node_id.to_string())
        .bind(record.relay_address.clone())
        .bind(record.tunnel_address.to_string())
        .bind(serde_json::to_string(&record.published).expect("publications serialize"))
        .bind(record.assigned_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds what a relay reports it carried to each VM's cumulative counts. A counter lower
    /// than the one last reported started again from zero (the relay restarted, or published
    /// the VM anew): its whole value is new traffic.
    pub async fn record_relay_traffic(
        &self,
        relay_node_id: NodeId,
        traffic: &[VmTraffic],
        now: i64,
    ) -> Result<(), StoreError> {
        if traffic.is_empty() {
            return Ok(());
        }
        let relay = relay_node_id.to_string();
        let mut tx = self.begin_write().await?;
        for t in traffic {
            let node = NodeId::from(t.node_id).to_string();
            let (bytes_in, bytes_out) = (
                i64::try_from(t.bytes_in).unwrap_or(i64::MAX),
                i64::try_from(t.bytes_out).unwrap_or(i64::MAX),
            );
            let row = sqlx::query(
                "SELECT total_in, total_out, last_in, last_out FROM relay_traffic \
                 WHERE relay_node_id = $1 AND vm_id = $2",
            )
            .bind(relay.clone())
            .bind(t.vm_id.clone())
            .fetch_optional(&mut *tx)
            .await?;
            let (mut total_in, mut total_out, last_in, last_out) = match &row {
                Some(r) => (
                    r.try_get::<i64, _>("total_in")?,
                    r.try_get::<i64, _>("total_out")?,
                    r.try_get::<i64, _>("last_in")?,
                    r.try_get::<i64, _>("last_out")?,
                ),
                None => (0, 0, 0, 0),
            };
            if (bytes_in, bytes_out) == (last_in, last_out) {
                continue;
            }
            let added = |now: i64, last: i64| if now >= last { now - last } else { now };
            total_in = total_in.saturating_add(added(bytes_in, last_in));
            total_out = total_out.saturating_add(added(bytes_out, last_out));
            sqlx::query(
                "INSERT INTO relay_traffic (relay_node_id, node_id, vm_id, total_in, total_out, \
                 last_in, last_out, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (relay_node_id, vm_id) DO UPDATE SET node_id = excluded.node_id, \
                 total_in = excluded.total_in, total_out = excluded.total_out, \
                 last_in = excluded.last_in, last_out = excluded.last_out, \
                 updated_at = excluded.updated_at",
            )
            .bind(relay.clone())
            .bind(node)
            .bind(t.vm_id.clone())
            .bind(total_in)
            .bind(total_out)
            .bind(bytes_in)
            .bind(bytes_out)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Bytes relays carried for a VM, summed over relays; `None` when no relay carried any.
    pub async fn vm_relay_traffic(&self, vm_id: VmId) -> Result<Option<RelayTraffic>, StoreError> {
        let rows = sqlx::query("SELECT total_in, total_out FROM relay_traffic WHERE vm_id = $1")
            .bind(vm_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut sum = RelayTraffic::default();
        for r in rows {
            sum.bytes_in += u64::try_from(r.try_get::<i64, _>("total_in")?).unwrap_or(0);
            sum.bytes_out += u64::try_from(r.try_get::<i64, _>("total_out")?).unwrap_or(0);
        }
        Ok(Some(sum))
    }

    /// Bytes a relay carried, per VM: `(vm id, traffic)`, for the relay's operator.
    pub async fn relay_traffic_of(
        &self,
        relay_node_id: NodeId,
    ) -> Result<Vec<(String, RelayTraffic)>, StoreError> {
        let rows = sqlx::query(
            "SELECT vm_id, total_in, total_out FROM relay_traffic WHERE relay_node_id = $1 \
             ORDER BY vm_id",
        )
        .bind(relay_node_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("vm_id")?,
                    RelayTraffic {
                        bytes_in: u64::try_from(r.try_get::<i64, _>("total_in")?).unwrap_or(0),
                        bytes_out: u64::try_from(r.try_get::<i64, _>("total_out")?).unwrap_or(0),
                    },
                ))
            })
            .collect()
    }
}
