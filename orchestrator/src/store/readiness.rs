//! Readiness of each VM's services, as its node reports it in heartbeats: kept so that
//! `GET /vms/{id}` answers from any replica and after a restart, not only from the one holding
//! the node's connection.

use decloud_sdk::{
    agent_protocol::{ProbeResult, Readiness},
    api::{ServiceReadiness, VmReadiness},
};
use sqlx::Row;

use super::{Store, StoreError};
use decloud_sdk::{NodeId, VmId};

impl Store {
    /// Records the readiness a node reports for one of its VMs; a report about a VM placed
    /// on another node is ignored (a node speaks only for its own VMs). Returns whether a
    /// row was written.
    pub async fn record_vm_readiness(
        &self,
        node_id: NodeId,
        vm_id: VmId,
        readiness: &Readiness,
        now: i64,
    ) -> Result<bool, StoreError> {
        let services = serde_json::to_string(&readiness.probes).expect("results serialize");
        let written = sqlx::query(
            "INSERT INTO vm_readiness (vm_id, ready, services, reported_at) \
             SELECT vm_id, $3, $4, $5 FROM vms WHERE vm_id = $1 AND node_id = $2 \
             ON CONFLICT (vm_id) DO UPDATE SET ready = excluded.ready, \
             services = excluded.services, reported_at = excluded.reported_at",
        )
        .bind(vm_id.to_string())
        .bind(node_id.to_string())
        .bind(i64::from(readiness.ready))
        .bind(services)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(written.rows_affected() > 0)
    }

    /// A VM's readiness as last reported; the empty readiness (nothing known) before its node
    /// reported it.
    pub async fn vm_readiness(&self, vm_id: VmId) -> Result<VmReadiness, StoreError> {
        let row =
            sqlx::query("SELECT ready, services, reported_at FROM vm_readiness WHERE vm_id = $1")
                .bind(vm_id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else {
            return Ok(VmReadiness::default());
        };
        let services: String = row.try_get("services")?;
        let results: Vec<ProbeResult> =
            serde_json::from_str(&services).map_err(|_| StoreError::Corrupt {
                column: "services",
                value: services.clone(),
            })?;
        Ok(VmReadiness {
            ready: Some(row.try_get::<i64, _>("ready")? != 0),
            reported_at: Some(row.try_get("reported_at")?),
            services: results.iter().map(ServiceReadiness::from).collect(),
        })
    }
}
