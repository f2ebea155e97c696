//! How tenants reach their VMs: tenant profiles (SSH keys, sealing key, ports), sealed
//! credentials, what each VM was created to expose, and the addresses and forwards that nodes
//! report. Lists are stored as JSON text (both databases read it back the same way).

use super::{Store, StoreError};
use alloy::primitives::B256;
use decloud_sdk::agent_protocol::{PortForward, PortSpec};
pub use decloud_sdk::api::{Profile, SealedCredentials, VmAccess};
use decloud_sdk::{NodeId, VmId};
use sqlx::Row;

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("lists serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(
    column: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt {
        column,
        value: text.to_string(),
    })
}

/// Puts a VM's sealed credentials in place, or removes them when it has none.
async fn write_credentials(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    vm_id: VmId,
    sealed: Option<(&str, &str)>,
    created_at: i64,
) -> Result<(), StoreError> {
    match sealed {
        Some((sealing_key, blob)) => {
            sqlx::query(
                "INSERT INTO vm_credentials (vm_id, sealing_key, sealed, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (vm_id) DO UPDATE SET \
                 sealing_key = excluded.sealing_key, sealed = excluded.sealed, \
                 created_at = excluded.created_at",
            )
            .bind(vm_id.to_string())
            .bind(sealing_key.to_string())
            .bind(blob.to_string())
            .bind(created_at)
            .execute(&mut **tx)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM vm_credentials WHERE vm_id = $1")
                .bind(vm_id.to_string())
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

impl Store {
    /// A tenant's profile; the empty profile when the tenant never saved one.
    pub async fn profile(&self, tenant: &str) -> Result<Profile, StoreError> {
        let row = sqlx::query(
            "SELECT ssh_keys, sealing_key, ports FROM tenant_profiles WHERE tenant = $1",
        )
        .bind(tenant.to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Profile::default());
        };
        Ok(Profile {
            ssh_keys: from_json("ssh_keys", &row.try_get::<String, _>("ssh_keys")?)?,
            sealing_key: row.try_get("sealing_key")?,
            ports: from_json("ports", &row.try_get::<String, _>("ports")?)?,
        })
    }

    /// Replaces a tenant's profile (the caller has checked every value).
    pub async fn put_profile(
        &self,
        tenant: &str,
        profile: &Profile,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tenant_profiles (tenant, ssh_keys, sealing_key, ports, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant) DO UPDATE SET \
             ssh_keys = excluded.ssh_keys, sealing_key = excluded.sealing_key, \
             ports = excluded.ports, updated_at = excluded.updated_at",
        )
        .bind(tenant.to_lowercase())
        .bind(json(&profile.ssh_keys))
        .bind(profile.sealing_key.clone())
        .bind(json(&profile.ports))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records what a VM is created with: its sealed credentials (if any), login user and guest
    /// ports. Written before the create command, so whatever reaches the node is on record; kept
    /// too as the version of the setup whose user-data has the digest `user_data_sha256`, until
    /// [`Store::settle_vm_setup`].
    pub async fn record_vm_setup(
        &self,
        vm_id: VmId,
        login_user: &str,
        ports: &[PortSpec],
        sealed: Option<(&str, &str)>,
        user_data_sha256: B256,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO vm_access (vm_id, login_user, ports, addresses, forwards, updated_at) \
             VALUES ($1, $2, $3, '[]', '[]', $4) ON CONFLICT (vm_id) DO UPDATE SET \
             login_user = excluded.login_user, ports = excluded.ports, updated_at = excluded.updated_at",
        )
        .bind(vm_id.to_string())
        .bind(login_user.to_string())
        .bind(json(&ports))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        write_credentials(&mut tx, vm_id, sealed, now).await?;
        // The same user-data again (no password in it, the same SSH keys) is the same version
        // for the node: the latest ports and seal stand for it.
        sqlx::query(
            "INSERT INTO vm_setup_versions (vm_id, user_data_sha256, ports, sealing_key, sealed, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (vm_id, user_data_sha256) \
             DO UPDATE SET ports = excluded.ports, sealing_key = excluded.sealing_key, \
             sealed = excluded.sealed, created_at = excluded.created_at",
        )
        .bind(vm_id.to_string())
        .bind(format!("{user_data_sha256:#x}"))
        .bind(json(&ports))
        .bind(sealed.map(|(key, _)| key.to_string()))
        .bind(sealed.map(|(_, blob)| blob.to_string()))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Settles a VM's setup once its create command is acknowledged. With the digest of the
    /// user-data the node created the VM from, that version's ports and sealed passwords become
    /// the VM's: they are already unless the user-data was put together again (after a restart)
    /// once the node had run the earlier version. Then every version is forgotten. Returns
    /// whether that changed the VM's ports or sealed passwords.
    pub async fn settle_vm_setup(
        &self,
        vm_id: VmId,
        created_from: Option<B256>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut restored = false;
        if let Some(digest) = created_from {
            let version = sqlx::query(
                "SELECT ports, sealing_key, sealed, created_at FROM vm_setup_versions \
                 WHERE vm_id = $1 AND user_data_sha256 = $2",
            )
            .bind(vm_id.to_string())
            .bind(format!("{digest:#x}"))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(version) = version {
                let current_ports: Option<String> =
                    sqlx::query_scalar("SELECT ports FROM vm_access WHERE vm_id = $1")
                        .bind(vm_id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                let current_sealed: Option<String> =
                    sqlx::query_scalar("SELECT sealed FROM vm_credentials WHERE vm_id = $1")
                        .bind(vm_id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                let created_at: i64 = version.try_get("created_at")?;
                let ports: String = version.try_get("ports")?;
                let sealing_key: Option<String> = version.try_get("sealing_key")?;
                let sealed: Option<String> = version.try_get("sealed")?;
                restored = current_ports.as_ref() != Some(&ports) || current_sealed != sealed;
                sqlx::query("UPDATE vm_access SET ports = $1, updated_at = $2 WHERE vm_id = $3")
                    .bind(ports)
                    .bind(now)
                    .bind(vm_id.to_string())
                    .execute(&mut *tx)
                    .await?;
                let seal = sealing_key.as_deref().zip(sealed.as_deref());
                write_credentials(&mut tx, vm_id, seal, created_at).await?;
            }
        }
        sqlx::query("DELETE FROM vm_setup_versions WHERE vm_id = $1")
            .bind(vm_id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(restored)
    }

    /// A VM's sealed credentials.
    pub async fn vm_credentials(
        &self,
        vm_id: VmId,
    ) -> Result<Option<SealedCredentials>, StoreError> {
        let row = sqlx::query(
            "SELECT sealing_key, sealed, created_at FROM vm_credentials WHERE vm_id = $1",
        )
        .bind(vm_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SealedCredentials {
                vm_id: vm_id.to_string(),
                suite: decloud_sdk::credentials::SEALING_SUITE.to_string(),
                sealing_key: r.try_get("sealing_key")?,
                sealed: r.try_get("sealed")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    /// How a VM is reached: its node's public address, what the node reports and what it was
    /// created with. `ssh_command` is left to the caller.
    pub async fn vm_access(&self, vm_id: VmId, node_id: NodeId) -> Result<VmAccess, StoreError> {
        let mut access = VmAccess::default();
        if let Some(row) = sqlx::query(
            "SELECT login_user, ports, addresses, forwards FROM vm_access WHERE vm_id = $1",
        )
        .bind(vm_id.to_string())
        .fetch_optional(&self.pool)
        .await?
        {
            access.login_user = row.try_get("login_user")?;
            access.ports = from_json("ports", &row.try_get::<String, _>("ports")?)?;
            access.addresses = from_json("addresses", &row.try_get::<String, _>("addresses")?)?;
            access.forwards = from_json("forwards", &row.try_get::<String, _>("forwards")?)?;
        }
        if let Some(row) =
            sqlx::query("SELECT public_address, ingress FROM node_addresses WHERE node_id = $1")
                .bind(node_id.to_string())
                .fetch_optional(&self.pool)
                .await?
        {
            access.public_address = row.try_get("public_address")?;
            access.node_ingress = row.try_get::<Option<i64>, _>("ingress")?.map(|i| i != 0);
        }
        access.has_credentials = self.vm_credentials(vm_id).await?.is_some();
        Ok(access)
    }

    /// Records a node's public address and whether it runs an ingress (`None`: not reported);
    /// written only when something changed.
    pub async fn record_node_address(
        &self,
        node_id: NodeId,
        public_address: Option<&str>,
        ingress: Option<bool>,
        now: i64,
    ) -> Result<(), StoreError> {
        let node_id = node_id.to_string();
        let ingress = ingress.map(i64::from);
        let stored =
            sqlx::query("SELECT public_address, ingress FROM node_addresses WHERE node_id = $1")
                .bind(node_id.clone())
                .fetch_optional(&self.pool)
                .await?
                .map(|r| {
                    Ok::<_, sqlx::Error>((
                        r.try_get::<Option<String>, _>("public_address")?,
                        r.try_get::<Option<i64>, _>("ingress")?,
                    ))
                })
                .transpose()?;
        if stored.as_ref().map(|(a, i)| (a.as_deref(), *i)) == Some((public_address, ingress)) {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO node_addresses (node_id, public_address, ingress, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (node_id) DO UPDATE SET public_address = excluded.public_address, \
             ingress = excluded.ingress, updated_at = excluded.updated_at",
        )
        .bind(node_id)
        .bind(public_address.map(str::to_string))
        .bind(ingress)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether a node's VMs' HTTP ports are served by name: by its relay's ingress when it is
    /// relayed, else by its own, which is missing only when its agent reported that it runs none
    /// (a node that never said is taken to run one).
    pub async fn node_runs_ingress(&self, node_id: NodeId) -> Result<bool, StoreError> {
        if self.relay_assignment(node_id).await?.is_some() {
            return Ok(true);
        }
        let reported = sqlx::query("SELECT ingress FROM node_addresses WHERE node_id = $1")
            .bind(node_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<Option<i64>, _>("ingress"))
            .transpose()?
            .flatten();
        Ok(reported != Some(0))
    }

    /// Records the guest addresses and forwards a node reports for one of its VMs; a report
    /// about a VM placed on another node is ignored (a node speaks only for its own VMs).
    /// Written only when something changed.
    pub async fn record_vm_reported(
        &self,
        node_id: NodeId,
        vm_id: VmId,
        addresses: &[String],
        forwards: &[PortForward],
        now: i64,
    ) -> Result<bool, StoreError> {
        let addresses = json(&addresses);
        let forwards = json(&forwards);
        let moved = sqlx::query(
            "UPDATE vm_access SET addresses = $3, forwards = $4, updated_at = $5 WHERE vm_id = $1 \
             AND vm_id IN (SELECT vm_id FROM vms WHERE node_id = $2) \
             AND (addresses <> $3 OR forwards <> $4)",
        )
        .bind(vm_id.to_string())
        .bind(node_id.to_string())
        .bind(addresses.clone())
        .bind(forwards.clone())
        .bind(now)
        .execute(&self.pool)
        .await?;
        if moved.rows_affected() > 0 {
            return Ok(true);
        }
        // VMs created before access was recorded have no row yet.
        let inserted = sqlx::query(
            "INSERT INTO vm_access (vm_id, login_user, ports, addresses, forwards, updated_at) \
             SELECT vm_id, NULL, '[]', $3, $4, $5 FROM vms WHERE vm_id = $1 AND node_id = $2 \
             ON CONFLICT (vm_id) DO NOTHING",
        )
        .bind(vm_id.to_string())
        .bind(node_id.to_string())
        .bind(addresses)
        .bind(forwards)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() > 0)
    }

    /// Marks a VM as stopped by its tenant (`true`) or released to the lifecycle (`false`).
    pub async fn set_vm_held(&self, vm_id: VmId, held: bool, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO vm_access (vm_id, login_user, ports, addresses, forwards, held_by_tenant, updated_at) \
             VALUES ($1, NULL, '[]', '[]', '[]', $2, $3) ON CONFLICT (vm_id) DO UPDATE SET \
             held_by_tenant = excluded.held_by_tenant, updated_at = excluded.updated_at",
        )
        .bind(vm_id.to_string())
        .bind(i64::from(held))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether the VM's tenant stopped it.
    pub async fn vm_held(&self, vm_id: VmId) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT held_by_tenant FROM vm_access WHERE vm_id = $1")
            .bind(vm_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>("held_by_tenant")? != 0,
            None => false,
        })
    }

    /// Queues a command about a VM only while the VM is in `state` (a reboot changes no state,
    /// but must not reach a VM that stopped meanwhile). Returns `false` and queues nothing when
    /// the VM is elsewhere.
    pub async fn queue_vm_command(
        &self,
        vm_id: VmId,
        state: decloud_sdk::types::VmState,
        command_id: &str,
        action: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let queued = sqlx::query(
            "INSERT INTO agent_commands (command_id, node_id, action, created_at, attempts, last_sent_at, \
             acked_at, outcome, vm_id) SELECT $1, node_id, $2, $3, 0, NULL, NULL, NULL, vm_id FROM vms \
             WHERE vm_id = $4 AND state = $5 ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(command_id.to_string())
        .bind(action.to_string())
        .bind(now)
        .bind(vm_id.to_string())
        .bind(state.as_str())
        .execute(&self.pool)
        .await?;
        Ok(queued.rows_affected() == 1)
    }

    /// Replaces the action of a command not acknowledged yet. Returns `false` when it was
    /// acknowledged (or does not exist).
    pub async fn replace_command_action(
        &self,
        command_id: &str,
        action: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agent_commands SET action = $2 WHERE command_id = $1 AND acked_at IS NULL",
        )
        .bind(command_id.to_string())
        .bind(action.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
