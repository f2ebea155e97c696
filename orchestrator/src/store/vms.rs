//! VMs, the resources they hold on their nodes, and their state changes (each written with the
//! agent command it needs, and attested, in one transaction).

use super::{Store, StoreError, i, named, tier, u};
use crate::scheduler::{TierShare, Usage};
pub use decloud_sdk::api::VmRecord;
use decloud_sdk::types::VmState;
use decloud_sdk::{NodeId, VmId};
use sqlx::{Row, any::AnyRow};
use std::collections::HashMap;

/// VM states that no longer hold capacity on their node.
pub const RELEASED_VM_STATES: [VmState; 2] = [VmState::Terminated, VmState::Failed];

fn vm_from_row(row: &AnyRow) -> Result<VmRecord, StoreError> {
    Ok(VmRecord {
        vm_id: named(row, "vm_id")?,
        lease_id: named(row, "lease_id")?,
        tenant: row.try_get("tenant")?,
        node_id: named(row, "node_id")?,
        state: named(row, "state")?,
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

impl Store {
    /// Inserts a VM record.
    pub async fn insert_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO vms (vm_id, lease_id, tenant, node_id, state, tier, vcpus, memory_gib, disk_gib, gpus, \
             created_at, updated_at, failure) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(vm.vm_id.to_string())
        .bind(vm.lease_id.to_string())
        .bind(vm.tenant.to_lowercase())
        .bind(vm.node_id.to_string())
        .bind(vm.state.as_str())
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
    pub async fn vm(&self, vm_id: VmId) -> Result<Option<VmRecord>, StoreError> {
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
    pub async fn vms_on_node(&self, node_id: NodeId) -> Result<Vec<VmRecord>, StoreError> {
        sqlx::query("SELECT * FROM vms WHERE node_id = $1 ORDER BY created_at DESC, vm_id")
            .bind(node_id.to_string())
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
        vm_id: VmId,
        from: VmState,
        to: VmState,
        failure: Option<&str>,
        command: Option<(&str, &str)>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE vms SET state = $3, failure = $4, updated_at = $5 WHERE vm_id = $1 AND state = $2",
        )
        .bind(vm_id.to_string())
        .bind(from.as_str())
        .bind(to.as_str())
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
            super::append(
                &mut tx,
                attestor,
                &format!("vm:{vm_id}"),
                "vm.transition",
                &payload,
                now,
            )
            .await?;
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

    /// Notes on a Pending VM why it waits (shown to the tenant as its `failure` until it is
    /// placed, which clears it); the state does not change.
    pub async fn note_pending_vm(
        &self,
        vm_id: VmId,
        note: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE vms SET failure = $2, updated_at = $3 WHERE vm_id = $1 AND state = 'pending'",
        )
        .bind(vm_id.to_string())
        .bind(note.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ids of the VMs in one state, oldest first.
    pub async fn vms_in_state(&self, state: VmState) -> Result<Vec<VmId>, StoreError> {
        let rows = sqlx::query("SELECT vm_id FROM vms WHERE state = $1 ORDER BY created_at, vm_id")
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| named(r, "vm_id")).collect()
    }

    /// Why a VM failed, if it did.
    pub async fn vm_failure(&self, vm_id: VmId) -> Result<Option<String>, StoreError> {
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
    pub async fn usage_by_node(&self) -> Result<HashMap<NodeId, Usage>, StoreError> {
        let rows = sqlx::query(
            "SELECT node_id, tier, vcpus, memory_gib, disk_gib, gpus FROM vms WHERE state <> $1 AND state <> $2",
        )
        .bind(RELEASED_VM_STATES[0].as_str())
        .bind(RELEASED_VM_STATES[1].as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut usage: HashMap<NodeId, Usage> = HashMap::new();
        for row in &rows {
            let entry = usage.entry(named(row, "node_id")?).or_default();
            entry.compute_units += tier(row)?.units_for(u(row, "vcpus")?);
            entry.memory_gib += u(row, "memory_gib")?;
            entry.disk_gib += u(row, "disk_gib")?;
            entry.gpus += u(row, "gpus")?;
        }
        Ok(usage)
    }
}
