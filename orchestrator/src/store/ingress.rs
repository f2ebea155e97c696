//! HTTPS names of VMs' HTTP ports. A name is unique across the orchestrator: the table's
//! unique constraint decides, so two replicas sharing a database cannot hand out one name twice.
//! A change of a VM's names is written with the agent command that carries it, in one
//! transaction.

use super::{Store, StoreError};
use decloud_sdk::{NodeId, VmId};
use sqlx::Row;

/// One named port of a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressName {
    /// Port inside the guest that speaks HTTP.
    pub guest: u16,
    /// The name (one DNS label).
    pub name: String,
    /// Whether the tenant chose it (else it was derived from the VM and port).
    pub chosen: bool,
}

/// Who holds a name now: a VM that is not terminated, its node, and the public address that
/// node's agent last reported (`None` when it reported none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameHolder {
    /// The VM whose port has the name.
    pub vm_id: VmId,
    /// The node that runs the VM.
    pub node_id: NodeId,
    /// The node's public address (IP or DNS name) as its agent last reported it.
    pub node_address: Option<String>,
    /// The public address of the node's relay, when the node is relayed.
    pub relay_address: Option<String>,
}

/// A command for the VM's node, made from the VM's names after a change: (command id, node,
/// action JSON). `None` queues nothing.
pub type IngressCommand = Option<(String, NodeId, String)>;

/// What a change of a VM's names did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngressChange {
    /// Stored (with its command, if any): the VM's names afterwards.
    Done(Vec<IngressName>),
    /// Refused, nothing changed: the name belongs to this other VM.
    Taken(VmId),
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

async fn names_in(
    conn: &mut sqlx::AnyConnection,
    vm_id: VmId,
) -> Result<Vec<IngressName>, StoreError> {
    let rows = sqlx::query(
        "SELECT guest_port, name, chosen FROM vm_ingress WHERE vm_id = $1 ORDER BY guest_port",
    )
    .bind(vm_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let port: i64 = r.try_get("guest_port")?;
            Ok(IngressName {
                guest: u16::try_from(port).map_err(|_| StoreError::Corrupt {
                    column: "guest_port",
                    value: port.to_string(),
                })?,
                name: r.try_get("name")?,
                chosen: r.try_get::<i64, _>("chosen")? != 0,
            })
        })
        .collect()
}

impl Store {
    /// A VM's named ports, by port.
    pub async fn vm_ingress(&self, vm_id: VmId) -> Result<Vec<IngressName>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        names_in(&mut conn, vm_id).await
    }

    /// Names the ports that have none yet with the names given (derived ones, which no tenant
    /// can take); ports already named keep their names. Returns the VM's names afterwards.
    pub async fn add_ingress_defaults(
        &self,
        vm_id: VmId,
        defaults: &[IngressName],
        now: i64,
    ) -> Result<Vec<IngressName>, StoreError> {
        let mut tx = self.begin_write().await?;
        for d in defaults {
            sqlx::query(
                "INSERT INTO vm_ingress (vm_id, guest_port, name, chosen, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(vm_id.to_string())
            .bind(i64::from(d.guest))
            .bind(d.name.clone())
            .bind(i64::from(d.chosen))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let names = names_in(&mut tx, vm_id).await?;
        tx.commit().await?;
        Ok(names)
    }

    /// Gives `entry.guest` of a VM the name `entry.name` (replacing the port's name, if any),
    /// or with `entry` `None` removes the name of port `guest`; then queues the command
    /// `command` makes from the VM's names, all in one transaction. A name another VM (or
    /// another port of this VM) holds is refused and nothing changes.
    pub async fn change_ingress(
        &self,
        vm_id: VmId,
        guest: u16,
        entry: Option<&IngressName>,
        command: impl FnOnce(&[IngressName]) -> IngressCommand,
        now: i64,
    ) -> Result<IngressChange, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(entry) = entry {
            let holder = sqlx::query("SELECT vm_id, guest_port FROM vm_ingress WHERE name = $1")
                .bind(entry.name.clone())
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = holder {
                let holder_vm: VmId = super::named(&row, "vm_id")?;
                let holder_port: i64 = row.try_get("guest_port")?;
                if holder_vm != vm_id || holder_port != i64::from(guest) {
                    return Ok(IngressChange::Taken(holder_vm));
                }
            }
        }
        sqlx::query("DELETE FROM vm_ingress WHERE vm_id = $1 AND guest_port = $2")
            .bind(vm_id.to_string())
            .bind(i64::from(guest))
            .execute(&mut *tx)
            .await?;
        if let Some(entry) = entry {
            let inserted = sqlx::query(
                "INSERT INTO vm_ingress (vm_id, guest_port, name, chosen, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(vm_id.to_string())
            .bind(i64::from(guest))
            .bind(entry.name.clone())
            .bind(i64::from(entry.chosen))
            .bind(now)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                // Another replica took the name meanwhile: the constraint decides.
                Err(e) if unique_violation(&e) => {
                    drop(tx);
                    let holder = sqlx::query("SELECT vm_id FROM vm_ingress WHERE name = $1")
                        .bind(entry.name.clone())
                        .fetch_optional(&self.pool)
                        .await?;
                    return match holder {
                        Some(row) => Ok(IngressChange::Taken(super::named(&row, "vm_id")?)),
                        None => Err(e.into()),
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
        let names = names_in(&mut tx, vm_id).await?;
        if let Some((command_id, node_id, action)) = command(&names) {
            sqlx::query(
                "INSERT INTO agent_commands (command_id, node_id, action, created_at, attempts, \
                 last_sent_at, acked_at, outcome, vm_id) VALUES ($1, $2, $3, $4, 0, NULL, NULL, NULL, $5)",
            )
            .bind(command_id)
            .bind(node_id.to_string())
            .bind(action)
            .bind(now)
            .bind(vm_id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(IngressChange::Done(names))
    }

    /// The VM holding `name`, its node, that node's reported public address and its relay's;
    /// `None` when no
    /// VM that is not terminated holds it.
    pub async fn ingress_holder(&self, name: &str) -> Result<Option<NameHolder>, StoreError> {
        let row = sqlx::query(
            "SELECT v.vm_id, v.node_id, a.public_address, r.relay_address FROM vm_ingress i \
             JOIN vms v ON v.vm_id = i.vm_id \
             LEFT JOIN node_addresses a ON a.node_id = v.node_id \
             LEFT JOIN relay_assignments r ON r.node_id = v.node_id \
             WHERE i.name = $1 AND v.state <> $2",
        )
        .bind(name.to_string())
        .bind(decloud_sdk::types::VmState::Terminated.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(NameHolder {
                vm_id: super::named(&r, "vm_id")?,
                node_id: super::named(&r, "node_id")?,
                node_address: r.try_get("public_address")?,
                relay_address: r.try_get("relay_address")?,
            })
        })
        .transpose()
    }

    /// Whether any VM (created or not yet) holds `name`.
    pub async fn ingress_name_taken(&self, name: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT vm_id FROM vm_ingress WHERE name = $1")
            .bind(name.to_string())
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Frees every name of a VM (it was terminated).
    pub async fn release_ingress(&self, vm_id: VmId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vm_ingress WHERE vm_id = $1")
            .bind(vm_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
