//! Durable state in SQLite: VMs with their specs, desired and observed states, their place
//! on the NAT network (MAC, reserved address) and forwarded public ports; executed commands
//! with their acknowledgements; VM state events not yet reported.
//!
//! The schema grows by numbered migrations ([`MIGRATIONS`]); SQLite's `user_version` holds
//! how many have run, so each runs once, in its own transaction.
//!
//! Every write that changes a VM's state records the matching event in the same
//! transaction, so a crash can lose neither.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
    str::FromStr,
    time::Duration,
};

use decloud_sdk::agent_protocol::{Ack, PortForward, PortProtocol, VmEvent, VmSpec, VmState};
use sqlx::{
    Row,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use crate::error::{Error, Result};

/// Migration 1: the first schema. Written with `IF NOT EXISTS` because databases made before
/// migrations were numbered already hold these tables (with `user_version` 0).
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS vms (
    id          TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    desired     TEXT NOT NULL CHECK (desired IN ('running', 'stopped', 'deleted')),
    state       TEXT NOT NULL,
    domain_uuid TEXT,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ports (
    vm_id      TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    guest_port INTEGER NOT NULL,
    protocol   TEXT NOT NULL,
    PRIMARY KEY (vm_id, guest_port, protocol)
);
CREATE TABLE IF NOT EXISTS commands (
    id          TEXT PRIMARY KEY,
    ack         TEXT NOT NULL,
    delivered   INTEGER NOT NULL DEFAULT 0,
    executed_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    vm_id  TEXT NOT NULL,
    state  TEXT NOT NULL,
    at     INTEGER NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Migration 2: port forwarding. `ports` (guest ports only, never used) gives way to
/// `forwards`, which holds the public port allocated to each guest port; `vm_networks` holds
/// each VM's MAC and reserved address on the NAT network. Both are written before the DHCP
/// reservation and the iptables rules are made, so a crash leaves a record to finish from.
/// A public port is unique on the node whatever its protocol: two VMs never share one.
const SCHEMA_V2: &str = "
DROP TABLE IF EXISTS ports;
CREATE TABLE vm_networks (
    vm_id   TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
    network TEXT NOT NULL,
    mac     TEXT NOT NULL UNIQUE,
    ip      TEXT NOT NULL UNIQUE
);
CREATE TABLE forwards (
    vm_id       TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    protocol    TEXT NOT NULL CHECK (protocol IN ('tcp', 'udp')),
    guest_port  INTEGER NOT NULL CHECK (guest_port BETWEEN 1 AND 65535),
    public_port INTEGER NOT NULL UNIQUE CHECK (public_port BETWEEN 1 AND 65535),
    PRIMARY KEY (vm_id, protocol, guest_port)
);
";

/// Migration 3: GPUs passed through to VMs. A PCI address is held by at most one VM (the
/// primary key); the row goes with the VM's row, so deleting the VM releases its GPUs in the
/// same transaction that records the deletion.
const SCHEMA_V3: &str = "
CREATE TABLE gpu_reservations (
    pci_address TEXT PRIMARY KEY,
    vm_id       TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE
);
";

/// The schema's migrations, in order; `PRAGMA user_version` counts those applied.
pub const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3];

/// A VM's place on the NAT network: what the agent allocated for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// libvirt network name.
    pub network: String,
    /// The NIC's MAC address, as in the domain XML.
    pub mac: String,
    /// The address reserved for that MAC in the network's DHCP server.
    pub ip: Ipv4Addr,
    /// Public ports forwarded to the guest.
    pub forwards: Vec<PortForward>,
}

/// What the agent should make of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    /// Keep it running.
    Running,
    /// Keep it defined but off.
    Stopped,
    /// Remove it (a delete is in progress).
    Deleted,
}

impl Desired {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "running" => Ok(Self::Running),
            "stopped" => Ok(Self::Stopped),
            "deleted" => Ok(Self::Deleted),
            other => Err(Error::Corrupt(format!("desired state {other:?}"))),
        }
    }
}

/// A VM as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct VmRecord {
    /// Its spec.
    pub spec: VmSpec,
    /// What it should be.
    pub desired: Desired,
    /// What it was last seen as.
    pub state: VmState,
    /// libvirt UUID of its domain, once defined.
    pub domain_uuid: Option<String>,
    /// Last failure.
    pub error: Option<String>,
}

/// Handle on the state database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// Current unix time in seconds.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the database file and its schema.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed VM row survives power loss, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        loop {
            let mut tx = self.begin_write().await?;
            let applied: i64 = sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&mut *tx)
                .await?;
            let Some(migration) = usize::try_from(applied)
                .ok()
                .and_then(|n| MIGRATIONS.get(n))
            else {
                tx.rollback().await?;
                if applied as usize > MIGRATIONS.len() {
                    return Err(Error::Corrupt(format!(
                        "state database is at schema version {applied}, newer than this agent's {}",
                        MIGRATIONS.len()
                    )));
                }
                return Ok(());
            };
            sqlx::raw_sql(*migration).execute(&mut *tx).await?;
            // PRAGMA takes no bound parameters; the value is our own integer.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "PRAGMA user_version = {}",
                applied + 1
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
    }

    /// Starts a write transaction holding SQLite's write lock from its first statement. A deferred
    /// transaction that reads before it writes fails at once with "database is locked" when another
    /// connection commits in between; an immediate one waits its turn (up to the busy timeout).
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Stores a new VM, its network attachment (MAC, address, forwarded ports) when it has
    /// one, the GPUs (PCI addresses) reserved for it, and a `creating` event, in one
    /// transaction. Fails, storing nothing, if the id exists, the attachment collides with
    /// another VM's MAC, address or public port, or a GPU is held by another VM.
    pub async fn insert_vm(
        &self,
        spec: &VmSpec,
        desired: Desired,
        attachment: Option<&Attachment>,
        gpus: &[String],
    ) -> Result<()> {
        let spec_json = serde_json::to_string(spec).map_err(|e| Error::Corrupt(e.to_string()))?;
        let now = now() as i64;
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO vms (id, spec, desired, state, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(spec.id.clone())
        .bind(spec_json)
        .bind(desired.as_str())
        .bind(VmState::Creating.as_str())
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // Roll back now: a dropped transaction only queues its ROLLBACK, and until the pool
            // reuses this connection it would keep SQLite's write lock from every other writer.
            tx.rollback().await?;
            return Err(Error::InvalidSpec(format!(
                "vm {} already exists on this node; its disk would be overwritten",
                spec.id
            )));
        }
        if let Some(attachment) = attachment
            && let Err(error) = insert_attachment(&mut tx, &spec.id, attachment).await
        {
            tx.rollback().await?;
            return Err(error);
        }
        for pci_address in gpus {
            let reserved = sqlx::query(
                "INSERT INTO gpu_reservations (pci_address, vm_id) VALUES (?, ?)
                 ON CONFLICT (pci_address) DO NOTHING",
            )
            .bind(pci_address.clone())
            .bind(spec.id.clone())
            .execute(&mut *tx)
            .await?;
            if reserved.rows_affected() == 0 {
                tx.rollback().await?;
                return Err(Error::Capacity(format!(
                    "GPU {pci_address} is already reserved by another vm"
                )));
            }
        }
        insert_event(&mut tx, &spec.id, VmState::Creating, None, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every reserved GPU: PCI address to the VM holding it.
    pub async fn gpu_reservations(&self) -> Result<BTreeMap<String, String>> {
        let rows = sqlx::query("SELECT pci_address, vm_id FROM gpu_reservations")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("pci_address")?, r.try_get("vm_id")?)))
            .collect()
    }

    /// The GPUs (PCI addresses) reserved for one VM, in address order.
    pub async fn gpus_of(&self, vm_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT pci_address FROM gpu_reservations WHERE vm_id = ? ORDER BY pci_address",
        )
        .bind(vm_id.to_owned())
        .fetch_all(&self.pool)
        .await?)
    }

    /// One VM.
    pub async fn vm(&self, id: &str) -> Result<Option<VmRecord>> {
        let row =
            sqlx::query("SELECT spec, desired, state, domain_uuid, error FROM vms WHERE id = ?")
                .bind(id.to_owned())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| decode_vm(&r)).transpose()
    }

    /// All VMs, by id.
    pub async fn vms(&self) -> Result<Vec<VmRecord>> {
        let rows =
            sqlx::query("SELECT spec, desired, state, domain_uuid, error FROM vms ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(decode_vm).collect()
    }

    /// Every VM's network attachment, by VM id.
    pub async fn attachments(&self) -> Result<BTreeMap<String, Attachment>> {
        let rows = sqlx::query("SELECT vm_id, network, mac, ip FROM vm_networks")
            .fetch_all(&self.pool)
            .await?;
        let mut forwards = self.forwards().await?;
        rows.iter()
            .map(|r| {
                let vm_id: String = r.try_get("vm_id")?;
                let ip: String = r.try_get("ip")?;
                let attachment = Attachment {
                    network: r.try_get("network")?,
                    mac: r.try_get("mac")?,
                    ip: ip
                        .parse()
                        .map_err(|_| Error::Corrupt(format!("address {ip:?} of vm {vm_id}")))?,
                    forwards: forwards.remove(&vm_id).unwrap_or_default(),
                };
                Ok((vm_id, attachment))
            })
            .collect()
    }

    /// One VM's network attachment.
    pub async fn attachment(&self, id: &str) -> Result<Option<Attachment>> {
        Ok(self.attachments().await?.remove(id))
    }

    /// Every forwarded port, by VM id, ordered by protocol and guest port.
    pub async fn forwards(&self) -> Result<BTreeMap<String, Vec<PortForward>>> {
        let rows = sqlx::query(
            "SELECT vm_id, protocol, guest_port, public_port FROM forwards
             ORDER BY vm_id, protocol, guest_port",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: BTreeMap<String, Vec<PortForward>> = BTreeMap::new();
        for r in &rows {
            let protocol: String = r.try_get("protocol")?;
            let port = |column: &str| -> Result<u16> {
                let value: i64 = r.try_get(column)?;
                u16::try_from(value).map_err(|_| Error::Corrupt(format!("{column} {value}")))
            };
            out.entry(r.try_get("vm_id")?)
                .or_default()
                .push(PortForward {
                    guest: port("guest_port")?,
                    public: port("public_port")?,
                    protocol: parse_protocol(&protocol)?,
                });
        }
        Ok(out)
    }

    /// The address reserved last, for any VM (deleted ones included).
    pub async fn last_reserved_ip(&self) -> Result<Option<Ipv4Addr>> {
        let value: Option<i64> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'last_reserved_ip'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(value
            .and_then(|v| u32::try_from(v).ok())
            .map(Ipv4Addr::from))
    }

    /// Public ports held by any VM.
    pub async fn public_ports(&self) -> Result<BTreeSet<u16>> {
        Ok(self
            .forwards()
            .await?
            .values()
            .flatten()
            .map(|f| f.public)
            .collect())
    }

    /// Sets what a VM should be.
    pub async fn set_desired(&self, id: &str, desired: Desired) -> Result<()> {
        sqlx::query("UPDATE vms SET desired = ?, updated_at = ? WHERE id = ?")
            .bind(desired.as_str())
            .bind(now() as i64)
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces a VM's stored spec (its id stays).
    pub async fn set_spec(&self, spec: &VmSpec) -> Result<()> {
        let spec_json = serde_json::to_string(spec).map_err(|e| Error::Corrupt(e.to_string()))?;
        let done = sqlx::query("UPDATE vms SET spec = ?, updated_at = ? WHERE id = ?")
            .bind(spec_json)
            .bind(now() as i64)
            .bind(spec.id.clone())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::Corrupt(format!("no vm {} to update", spec.id)));
        }
        Ok(())
    }

    /// Records the domain's UUID.
    pub async fn set_domain_uuid(&self, id: &str, uuid: &str) -> Result<()> {
        sqlx::query("UPDATE vms SET domain_uuid = ?, updated_at = ? WHERE id = ?")
            .bind(uuid.to_owned())
            .bind(now() as i64)
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets the observed state (and error); records an event when the state changed.
    pub async fn set_state(
        &self,
        id: &str,
        state: VmState,
        error: Option<&str>,
        reason: Option<&str>,
    ) -> Result<()> {
        let now = now() as i64;
        let mut tx = self.begin_write().await?;
        let previous: Option<String> = sqlx::query_scalar("SELECT state FROM vms WHERE id = ?")
            .bind(id.to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(previous) = previous else {
            return Err(Error::UnknownVm(id.to_owned()));
        };
        sqlx::query("UPDATE vms SET state = ?, error = ?, updated_at = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(error.map(str::to_owned))
            .bind(now)
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        if previous != state.as_str() {
            insert_event(&mut tx, id, state, reason.or(error), now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes a VM (its ports go with it) and records a `deleted` event.
    pub async fn delete_vm(&self, id: &str, reason: Option<&str>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM vms WHERE id = ?")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() > 0 {
            insert_event(&mut tx, id, VmState::Deleted, reason, now() as i64).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The stored acknowledgement of an executed command.
    pub async fn command_ack(&self, command_id: &str) -> Result<Option<Ack>> {
        let ack: Option<String> = sqlx::query_scalar("SELECT ack FROM commands WHERE id = ?")
            .bind(command_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        ack.map(|a| serde_json::from_str(&a).map_err(|e| Error::Corrupt(e.to_string())))
            .transpose()
    }

    /// Stores the acknowledgement of an executed command (not yet delivered).
    pub async fn record_command(&self, ack: &Ack) -> Result<()> {
        let json = serde_json::to_string(ack).map_err(|e| Error::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT OR REPLACE INTO commands (id, ack, delivered, executed_at) VALUES (?, ?, 0, ?)",
        )
        .bind(ack.command_id.clone())
        .bind(json)
        .bind(now() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks an acknowledgement as sent.
    pub async fn mark_ack_delivered(&self, command_id: &str) -> Result<()> {
        sqlx::query("UPDATE commands SET delivered = 1 WHERE id = ?")
            .bind(command_id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Acknowledgements not yet sent, oldest first.
    pub async fn undelivered_acks(&self) -> Result<Vec<Ack>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT ack FROM commands WHERE delivered = 0 ORDER BY executed_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|a| serde_json::from_str(a).map_err(|e| Error::Corrupt(e.to_string())))
            .collect()
    }

    /// Events not yet reported in a heartbeat that got through.
    pub async fn pending_events(&self) -> Result<Vec<VmEvent>> {
        let cursor = self.meta("reported_event_seq").await?;
        let rows = sqlx::query(
            "SELECT seq, vm_id, state, at, reason FROM events WHERE seq > ? ORDER BY seq",
        )
        .bind(cursor)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(VmEvent {
                    seq: r.try_get::<i64, _>("seq")? as u64,
                    vm_id: r.try_get("vm_id")?,
                    state: VmState::parse(&state)
                        .ok_or_else(|| Error::Corrupt(format!("state {state:?}")))?,
                    at: r.try_get::<i64, _>("at")? as u64,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Records that events up to `seq` were reported, and forgets them.
    pub async fn events_reported(&self, seq: u64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('reported_event_seq', ?)
             ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
        )
        .bind(seq as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM events WHERE seq <= ?")
            .bind(seq as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn meta(&self, key: &str) -> Result<i64> {
        let value: Option<i64> = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(value.unwrap_or(0))
    }

    /// Closes the pool, flushing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn insert_attachment(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    vm_id: &str,
    attachment: &Attachment,
) -> Result<()> {
    let taken = |what: String| {
        move |e: sqlx::Error| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => Error::Capacity(what),
            _ => Error::Db(e),
        }
    };
    sqlx::query("INSERT INTO vm_networks (vm_id, network, mac, ip) VALUES (?, ?, ?, ?)")
        .bind(vm_id.to_owned())
        .bind(attachment.network.clone())
        .bind(attachment.mac.clone())
        .bind(attachment.ip.to_string())
        .execute(&mut **tx)
        .await
        .map_err(taken(format!(
            "mac {} or address {} already belongs to another vm",
            attachment.mac, attachment.ip
        )))?;
    // Where the next reservation starts looking (see `NatNetwork::free_address`).
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('last_reserved_ip', ?)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(i64::from(u32::from(attachment.ip)))
    .execute(&mut **tx)
    .await?;
    for forward in &attachment.forwards {
        sqlx::query(
            "INSERT INTO forwards (vm_id, protocol, guest_port, public_port) VALUES (?, ?, ?, ?)",
        )
        .bind(vm_id.to_owned())
        .bind(forward.protocol.to_string())
        .bind(i64::from(forward.guest))
        .bind(i64::from(forward.public))
        .execute(&mut **tx)
        .await
        .map_err(taken(format!(
            "public port {} is already forwarded to another vm",
            forward.public
        )))?;
    }
    Ok(())
}

fn parse_protocol(s: &str) -> Result<PortProtocol> {
    match s {
        "tcp" => Ok(PortProtocol::Tcp),
        "udp" => Ok(PortProtocol::Udp),
        other => Err(Error::Corrupt(format!("protocol {other:?}"))),
    }
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    vm_id: &str,
    state: VmState,
    reason: Option<&str>,
    at: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO events (vm_id, state, at, reason) VALUES (?, ?, ?, ?)")
        .bind(vm_id.to_owned())
        .bind(state.as_str())
        .bind(at)
        .bind(reason.map(str::to_owned))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn decode_vm(row: &sqlx::sqlite::SqliteRow) -> Result<VmRecord> {
    let spec: String = row.try_get("spec")?;
    let state: String = row.try_get("state")?;
    let desired: String = row.try_get("desired")?;
    Ok(VmRecord {
        spec: serde_json::from_str(&spec).map_err(|e| Error::Corrupt(e.to_string()))?,
        desired: Desired::parse(&desired)?,
        state: VmState::parse(&state).ok_or_else(|| Error::Corrupt(format!("state {state:?}")))?,
        domain_uuid: row.try_get("domain_uuid")?,
        error: row.try_get("error")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use decloud_sdk::agent_protocol::{
        AckOutcome, BandwidthTier, PortProtocol, PortSpec, QualityTier,
    };

    fn spec(id: &str) -> VmSpec {
        VmSpec {
            id: id.into(),
            image: "img".into(),
            vcpus: 1,
            memory_mib: 128,
            disk_gib: 1,
            quality: QualityTier::Standard,
            bandwidth: BandwidthTier::Basic,
            gpus: 0,
            hostname: None,
            user_data: String::new(),
            ports: vec![PortSpec {
                guest: 80,
                protocol: PortProtocol::Tcp,
            }],
            readiness: vec![],
            ingress: Vec::new(),
        }
    }

    #[tokio::test]
    async fn state_survives_reopen_and_events_are_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        let attachment = Attachment {
            network: "decloud".into(),
            mac: "52:54:00:00:00:0a".into(),
            ip: Ipv4Addr::new(192, 168, 123, 2),
            forwards: vec![PortForward {
                guest: 80,
                public: 40000,
                protocol: PortProtocol::Tcp,
            }],
        };
        store
            .insert_vm(&spec("a"), Desired::Running, Some(&attachment), &[])
            .await
            .unwrap();
        assert!(matches!(
            store
                .insert_vm(&spec("a"), Desired::Running, None, &[])
                .await,
            Err(Error::InvalidSpec(_))
        ));
        store
            .set_state("a", VmState::Running, None, None)
            .await
            .unwrap();
        store
            .set_state("a", VmState::Running, None, None)
            .await
            .unwrap();
        store
            .record_command(&Ack {
                command_id: "c1".into(),
                outcome: AckOutcome::Done {
                    vm: None,
                    user_data_sha256: None,
                },
            })
            .await
            .unwrap();
        store.close().await;

        let store = Store::open(&path).await.unwrap();
        let vm = store.vm("a").await.unwrap().unwrap();
        assert_eq!((vm.state, vm.desired), (VmState::Running, Desired::Running));
        assert_eq!(
            store.attachment("a").await.unwrap().as_ref(),
            Some(&attachment)
        );
        // Another VM asking for the same public port (or MAC, or address) stores nothing.
        let mut clash = attachment.clone();
        clash.mac = "52:54:00:00:00:0b".into();
        clash.ip = Ipv4Addr::new(192, 168, 123, 3);
        assert!(matches!(
            store
                .insert_vm(&spec("b"), Desired::Running, Some(&clash), &[])
                .await,
            Err(Error::Capacity(_))
        ));
        assert!(store.vm("b").await.unwrap().is_none());
        assert_eq!(store.public_ports().await.unwrap(), BTreeSet::from([40000]));
        assert_eq!(store.last_reserved_ip().await.unwrap(), Some(attachment.ip));
        let events = store.pending_events().await.unwrap();
        let states: Vec<_> = events.iter().map(|e| e.state).collect();
        assert_eq!(states, vec![VmState::Creating, VmState::Running]);
        store.events_reported(events[1].seq).await.unwrap();
        assert!(store.pending_events().await.unwrap().is_empty());

        assert_eq!(store.undelivered_acks().await.unwrap().len(), 1);
        store.mark_ack_delivered("c1").await.unwrap();
        assert!(store.undelivered_acks().await.unwrap().is_empty());
        assert!(store.command_ack("c1").await.unwrap().is_some());

        store.delete_vm("a", None).await.unwrap();
        assert!(store.vm("a").await.unwrap().is_none());
        assert!(store.attachments().await.unwrap().is_empty());
        assert!(store.public_ports().await.unwrap().is_empty());
        let events = store.pending_events().await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].state, VmState::Deleted);
    }

    #[tokio::test]
    async fn gpu_reservations_are_exclusive_survive_reopen_and_go_with_the_vm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        let gpu = "0000:01:00.0".to_owned();
        store
            .insert_vm(
                &spec("a"),
                Desired::Running,
                None,
                std::slice::from_ref(&gpu),
            )
            .await
            .unwrap();
        // A second VM asking for a held GPU stores nothing at all.
        let refused = store
            .insert_vm(
                &spec("b"),
                Desired::Running,
                None,
                std::slice::from_ref(&gpu),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, Error::Capacity(m) if m.contains("0000:01:00.0")),
            "{refused}"
        );
        assert!(store.vm("b").await.unwrap().is_none());
        store.close().await;

        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.gpus_of("a").await.unwrap(), vec![gpu.clone()]);
        assert_eq!(
            store.gpu_reservations().await.unwrap(),
            BTreeMap::from([(gpu.clone(), "a".to_owned())])
        );
        store.delete_vm("a", None).await.unwrap();
        assert!(store.gpu_reservations().await.unwrap().is_empty());
        store
            .insert_vm(
                &spec("b"),
                Desired::Running,
                None,
                std::slice::from_ref(&gpu),
            )
            .await
            .unwrap();
        assert_eq!(store.gpus_of("b").await.unwrap(), vec![gpu]);
    }

    #[tokio::test]
    async fn a_database_from_before_numbered_migrations_is_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let options = SqliteConnectOptions::from_str("sqlite:")
                .unwrap()
                .filename(&path)
                .create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .connect_with(options)
                .await
                .unwrap();
            sqlx::raw_sql(SCHEMA_V1).execute(&pool).await.unwrap();
            pool.close().await;
        }
        for _ in 0..2 {
            let store = Store::open(&path).await.unwrap();
            let version: i64 = sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(version, MIGRATIONS.len() as i64);
            let ports: Option<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'ports'",
            )
            .fetch_optional(&store.pool)
            .await
            .unwrap();
            assert_eq!(ports, None);
            store.close().await;
        }
    }
}
