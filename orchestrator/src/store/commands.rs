//! Commands queued for node agents and their acknowledgements.

use super::{Store, StoreError, named};
use decloud_sdk::{NodeId, VmId};
use sqlx::{Row, any::AnyRow};

/// A command queued for a node agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRecord {
    /// Idempotency key, unique.
    pub command_id: String,
    /// Node that must execute it.
    pub node_id: NodeId,
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

fn command_from_row(row: &AnyRow) -> Result<CommandRecord, StoreError> {
    Ok(CommandRecord {
        command_id: row.try_get("command_id")?,
        node_id: named(row, "node_id")?,
        action: row.try_get("action")?,
        created_at: row.try_get("created_at")?,
        attempts: row.try_get("attempts")?,
        last_sent_at: row.try_get("last_sent_at")?,
        acked_at: row.try_get("acked_at")?,
        outcome: row.try_get("outcome")?,
    })
}

impl Store {
    /// The VM a command acts on, if it acts on one.
    pub async fn command_vm(&self, command_id: &str) -> Result<Option<VmId>, StoreError> {
        let row = sqlx::query("SELECT vm_id FROM agent_commands WHERE command_id = $1")
            .bind(command_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => match r.try_get::<Option<String>, _>("vm_id")? {
                Some(_) => super::named(&r, "vm_id").map(Some),
                None => Ok(None),
            },
            None => Ok(None),
        }
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

    /// Queues a command for a node. Enqueuing an id that exists changes nothing and returns
    /// `false`, so a retried enqueue cannot create a second command.
    pub async fn enqueue_command(
        &self,
        command_id: &str,
        node_id: NodeId,
        action: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO agent_commands (command_id, node_id, action, created_at, attempts, last_sent_at, acked_at, \
             outcome) VALUES ($1, $2, $3, $4, 0, NULL, NULL, NULL) ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(command_id.to_string())
        .bind(node_id.to_string())
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
        node_id: NodeId,
        sent_before: i64,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM agent_commands WHERE node_id = $1 AND acked_at IS NULL \
             AND (last_sent_at IS NULL OR last_sent_at <= $2) ORDER BY created_at, command_id",
        )
        .bind(node_id.to_string())
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
        node_id: NodeId,
        command_id: &str,
        outcome: &str,
        now: i64,
    ) -> Result<AckRecorded, StoreError> {
        let done = sqlx::query(
            "UPDATE agent_commands SET acked_at = $3, outcome = $4 \
             WHERE command_id = $1 AND node_id = $2 AND acked_at IS NULL",
        )
        .bind(command_id.to_string())
        .bind(node_id.to_string())
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
                .bind(node_id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(if exists.is_some() {
            AckRecorded::Duplicate
        } else {
            AckRecorded::Unknown
        })
    }

    /// Every command queued about a VM, oldest first.
    pub async fn commands_of_vm(&self, vm_id: VmId) -> Result<Vec<CommandRecord>, StoreError> {
        sqlx::query("SELECT * FROM agent_commands WHERE vm_id = $1 ORDER BY created_at, command_id")
            .bind(vm_id.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(command_from_row)
            .collect()
    }

    /// Queues a command about a VM without changing the VM's state (a repair the reconciler
    /// decided, such as removing a VM its node should no longer run). Like
    /// [`Store::enqueue_command`], an id that exists changes nothing and returns `false`.
    pub async fn enqueue_vm_command(
        &self,
        command_id: &str,
        node_id: NodeId,
        vm_id: VmId,
        action: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO agent_commands (command_id, node_id, action, created_at, attempts, last_sent_at, acked_at, \
             outcome, vm_id) VALUES ($1, $2, $3, $4, 0, NULL, NULL, NULL, $5) ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(command_id.to_string())
        .bind(node_id.to_string())
        .bind(action.to_string())
        .bind(now)
        .bind(vm_id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One command by id.
    pub async fn command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM agent_commands WHERE command_id = $1")
            .bind(command_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(command_from_row).transpose()
    }
}
