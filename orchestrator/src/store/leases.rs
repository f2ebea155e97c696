//! Leases as opened on-chain, their funding, and what the lifecycle asks about them.

use super::{Store, StoreError, i, named, tier, u};
use crate::scheduler::QualityTier;
pub use decloud_sdk::api::LeaseRecord;
use decloud_sdk::types::LeaseStatus;
use decloud_sdk::{LeaseId, NodeId, TemplateId, VmId};
use sqlx::{AnyConnection, Row, any::AnyRow};

fn lease_from_row(row: &AnyRow) -> Result<LeaseRecord, StoreError> {
    Ok(LeaseRecord {
        lease_id: named(row, "lease_id")?,
        tenant: row.try_get("tenant")?,
        node_id: named(row, "node_id")?,
        status: named(row, "status")?,
        tier: tier(row)?,
        vcpus: u(row, "vcpus")?,
        memory_gib: u(row, "memory_gib")?,
        storage_gib: u(row, "storage_gib")?,
        gpus: u(row, "gpus")?,
        rate_per_hour: u(row, "rate_per_hour")?,
        opened_at: row.try_get("opened_at")?,
    })
}

impl Store {
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
        .bind(lease.lease_id.to_string())
        .bind(lease.tenant.to_lowercase())
        .bind(lease.node_id.to_string())
        .bind(lease.status.as_str())
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
    pub async fn lease(&self, lease_id: LeaseId) -> Result<Option<LeaseRecord>, StoreError> {
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

    /// The on-chain template id a lease deploys, if it names one.
    pub async fn lease_template(
        &self,
        lease_id: LeaseId,
    ) -> Result<Option<TemplateId>, StoreError> {
        let row = sqlx::query("SELECT template_id FROM leases WHERE lease_id = $1")
            .bind(lease_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        // Leases recorded before template ids were typed hold "0" for "no template".
        match row.try_get::<Option<String>, _>("template_id")? {
            Some(text) if text != "0" => named(&row, "template_id").map(Some),
            _ => Ok(None),
        }
    }

    /// The bandwidth tier a lease pays for, as its `LeaseOpened` event stated it; `None` for a
    /// lease recorded without one.
    pub async fn lease_bandwidth(
        &self,
        lease_id: LeaseId,
    ) -> Result<Option<decloud_sdk::types::BandwidthTier>, StoreError> {
        let row = sqlx::query("SELECT bandwidth FROM leases WHERE lease_id = $1")
            .bind(lease_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let Some(value) = row
            .map(|r| r.try_get::<Option<i64>, _>("bandwidth"))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        u8::try_from(value)
            .ok()
            .and_then(|b| decloud_sdk::types::BandwidthTier::try_from(b).ok())
            .map(Some)
            .ok_or(StoreError::Corrupt {
                column: "bandwidth",
                value: value.to_string(),
            })
    }

    /// When an active lease's funds run out, unix seconds: `None` for a lease that is not active
    /// or whose funding the chain has not told.
    pub async fn lease_depleted_at(&self, lease_id: LeaseId) -> Result<Option<i64>, StoreError> {
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
        Ok(Some(crate::money::depleted_at(funded, start, before, rate)))
    }

    /// Leases closed or terminated on-chain whose VM is still to be removed: `(lease_id, status)`.
    pub async fn leases_to_close(&self) -> Result<Vec<(LeaseId, LeaseStatus)>, StoreError> {
        let rows = sqlx::query(
            "SELECT l.lease_id, l.status FROM leases l JOIN vms v ON v.lease_id = l.lease_id \
             WHERE l.status IN ('closed', 'terminated') AND v.state NOT IN ('terminated', 'stopping') \
             ORDER BY l.lease_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((named(r, "lease_id")?, named(r, "status")?)))
            .collect()
    }
    /// Leases on nodes silent since before `cutoff` (latest heartbeat older than it) whose VM is
    /// not terminated yet, active or already terminated on-chain: what the SLA pass looks at.
    /// A node that never sent a heartbeat has no silence to date a failure from and is left out.
    pub async fn leases_on_silent_nodes(
        &self,
        cutoff: i64,
    ) -> Result<Vec<SilentLease>, StoreError> {
        let rows = sqlx::query(
            "SELECT l.lease_id, l.node_id, n.last_heartbeat FROM leases l \
             JOIN node_liveness n ON n.node_id = l.node_id JOIN vms v ON v.lease_id = l.lease_id \
             WHERE l.status IN ('active', 'terminated') AND v.state <> 'terminated' \
             AND n.heartbeats > 0 AND n.last_heartbeat < $1 ORDER BY l.lease_id",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SilentLease {
                    lease_id: named(r, "lease_id")?,
                    node_id: named(r, "node_id")?,
                    last_heartbeat: r.try_get("last_heartbeat")?,
                })
            })
            .collect()
    }
}

/// A lease whose node went silent: see [`Store::leases_on_silent_nodes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SilentLease {
    /// On-chain lease id.
    pub lease_id: LeaseId,
    /// The silent node.
    pub node_id: NodeId,
    /// The node's latest heartbeat, unix seconds: when it went silent.
    pub last_heartbeat: i64,
}

/// A lease as LeaseEscrow's `LeaseOpened` states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOpened {
    /// On-chain lease id.
    pub lease_id: LeaseId,
    /// Tenant address.
    pub tenant: String,
    /// Node the lease pays for.
    pub node_id: NodeId,
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
    /// Micro-USDC per hour.
    pub rate_per_hour: u64,
    /// Open time (and start of accrual), unix seconds.
    pub opened_at: i64,
    /// Bandwidth tier, as the contract's enum value.
    pub bandwidth: u64,
    /// Template id the lease deploys, if any (the event's `0` is none).
    pub template_id: Option<TemplateId>,
    /// Micro-USDC deposited at opening.
    pub funding: u64,
}

/// A lease's funding after a top-up: the escrow accrues `accrued_before` plus the rate since
/// `accrual_start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseFunding {
    /// Micro-USDC deposited in total.
    pub funded: u64,
    /// Start of the current accrual segment, unix seconds.
    pub accrual_start: i64,
    /// Micro-USDC accrued before that segment.
    pub accrued_before: u64,
}

/// Records an opened lease and its VM (`pending`, with id `vm_id`) in the caller's transaction;
/// an event read again changes nothing.
pub async fn lease_opened(
    conn: &mut AnyConnection,
    lease: &LeaseOpened,
    vm_id: VmId,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO leases (lease_id, tenant, node_id, status, tier, vcpus, memory_gib, storage_gib, gpus, \
         rate_per_hour, opened_at, bandwidth, template_id, funded, accrual_start, accrued_before) \
         VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $10, 0) \
         ON CONFLICT (lease_id) DO NOTHING",
    )
    .bind(lease.lease_id.to_string())
    .bind(lease.tenant.clone())
    .bind(lease.node_id.to_string())
    .bind(lease.tier as i64)
    .bind(i(lease.vcpus))
    .bind(i(lease.memory_gib))
    .bind(i(lease.storage_gib))
    .bind(i(lease.gpus))
    .bind(i(lease.rate_per_hour))
    .bind(lease.opened_at)
    .bind(i(lease.bandwidth))
    .bind(lease.template_id.map(|t| t.to_string()))
    .bind(i(lease.funding))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO vms (vm_id, lease_id, tenant, node_id, state, tier, vcpus, memory_gib, disk_gib, gpus, \
         created_at, updated_at, failure) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $10, NULL) \
         ON CONFLICT (vm_id) DO NOTHING",
    )
    .bind(vm_id.to_string())
    .bind(lease.lease_id.to_string())
    .bind(lease.tenant.clone())
    .bind(lease.node_id.to_string())
    .bind(lease.tier as i64)
    .bind(i(lease.vcpus))
    .bind(i(lease.memory_gib))
    .bind(i(lease.storage_gib))
    .bind(i(lease.gpus))
    .bind(lease.opened_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a lease's funding after a top-up.
pub async fn lease_topped_up(
    conn: &mut AnyConnection,
    lease_id: LeaseId,
    funding: &LeaseFunding,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE leases SET funded = $2, accrual_start = $3, accrued_before = $4 WHERE lease_id = $1",
    )
    .bind(lease_id.to_string())
    .bind(i(funding.funded))
    .bind(funding.accrual_start)
    .bind(i(funding.accrued_before))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks an active lease `closed` or `terminated`; a lease already ended keeps its first end.
pub async fn lease_ended(
    conn: &mut AnyConnection,
    lease_id: LeaseId,
    status: LeaseStatus,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE leases SET status = $2 WHERE lease_id = $1 AND status = 'active'")
        .bind(lease_id.to_string())
        .bind(status.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
