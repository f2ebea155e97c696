//! Storage nodes' latest reports (from their heartbeats), their proof records counted from
//! StorageMarket, and the repair jobs of storage replicas.

use super::{Store, StoreError, i, named, u};
use decloud_sdk::{
    NodeId,
    api::{RepairJobState, StorageRepairJob},
    storage::StorageReport,
};
use sqlx::{Row, any::AnyRow};
use std::collections::HashMap;

/// A storage node's latest report as stored, with what placement needs beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredStorageReport {
    /// The node.
    pub node_id: NodeId,
    /// Its chunk API, when it reported one.
    pub url: Option<String>,
    /// Bytes the operator gives the chunk store.
    pub quota_bytes: u64,
    /// Bytes the chunk store holds.
    pub stored_bytes: u64,
    /// Whether it drains.
    pub draining: bool,
    /// Epochs proven over every replica it reported, in its own words (kept for operators; the
    /// proof rate is counted from the chain, see [`Store::storage_proof_rate`]).
    pub proven_epochs: u64,
    /// Epochs missed over every replica it reported, in its own words.
    pub missed_epochs: u64,
    /// When the report arrived, unix seconds.
    pub reported_at: i64,
}

impl StoredStorageReport {
    /// Quota minus stored bytes.
    pub fn free_bytes(&self) -> u64 {
        self.quota_bytes.saturating_sub(self.stored_bytes)
    }
}

/// A node's storage proof record counted from StorageMarket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProofCounts {
    /// Replica-epochs the node was due to prove.
    pub due: u64,
    /// Those the market recorded proven.
    pub proven: u64,
}

impl ProofCounts {
    /// Proven over due, basis points; `None` before any epoch was due.
    pub fn rate_bps(&self) -> Option<u32> {
        crate::reputation::storage_proof_rate_bps(
            self.proven.min(self.due),
            self.due.saturating_sub(self.proven),
        )
    }
}

/// How far a replica's epochs are counted: the node that held it when last counted and the
/// first epoch not counted yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProofCursor {
    /// The node that held the replica at the last count.
    pub node: NodeId,
    /// The first epoch not counted yet.
    pub next_epoch: u32,
}

fn counts_from_row(row: &AnyRow) -> Result<ProofCounts, StoreError> {
    Ok(ProofCounts {
        due: u(row, "due_epochs")?,
        proven: u(row, "proven_epochs")?,
    })
}

fn report_from_row(row: &AnyRow) -> Result<StoredStorageReport, StoreError> {
    let draining: i64 = row.try_get("draining")?;
    Ok(StoredStorageReport {
        node_id: named(row, "node_id")?,
        url: row.try_get("url")?,
        quota_bytes: u(row, "quota_bytes")?,
        stored_bytes: u(row, "stored_bytes")?,
        draining: draining != 0,
        proven_epochs: u(row, "proven_epochs")?,
        missed_epochs: u(row, "missed_epochs")?,
        reported_at: row.try_get("reported_at")?,
    })
}

const REPORT_COLUMNS: &str = "node_id, url, quota_bytes, stored_bytes, draining, proven_epochs, \
    missed_epochs, reported_at";

const JOB_COLUMNS: &str = "job_id, deal_id, replica, from_node, reason, state, attempts, to_node, \
    error, opened_at, updated_at, next_attempt_at";

fn job_from_row(row: &AnyRow) -> Result<StorageRepairJob, StoreError> {
    let replica = u(row, "replica")?;
    let attempts = u(row, "attempts")?;
    Ok(StorageRepairJob {
        job_id: u(row, "job_id")?,
        deal_id: u(row, "deal_id")?,
        replica: u32::try_from(replica).map_err(|_| StoreError::Corrupt {
            column: "replica",
            value: replica.to_string(),
        })?,
        from_node: row.try_get("from_node")?,
        reason: row.try_get("reason")?,
        state: named(row, "state")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        to_node: row.try_get("to_node")?,
        error: row.try_get("error")?,
        opened_at: row.try_get("opened_at")?,
        updated_at: row.try_get("updated_at")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
    })
}

impl Store {
    /// Keeps `report` as the node's latest storage report, received at `now`.
    pub async fn save_storage_report(
        &self,
        node_id: NodeId,
        report: &StorageReport,
        now: i64,
    ) -> Result<(), StoreError> {
        let proven: u64 = report
            .proofs
            .iter()
            .map(|p| u64::from(p.proven_epochs))
            .sum();
        let missed: u64 = report
            .proofs
            .iter()
            .map(|p| u64::from(p.missed_epochs))
            .sum();
        let json = serde_json::to_string(report).expect("a storage report serialises");
        sqlx::query(
            "INSERT INTO storage_node_reports (node_id, url, quota_bytes, stored_bytes, draining, \
             proven_epochs, missed_epochs, report, reported_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (node_id) DO UPDATE SET url = excluded.url, quota_bytes = excluded.quota_bytes, \
             stored_bytes = excluded.stored_bytes, draining = excluded.draining, \
             proven_epochs = excluded.proven_epochs, missed_epochs = excluded.missed_epochs, \
             report = excluded.report, reported_at = excluded.reported_at \
             WHERE storage_node_reports.reported_at <= excluded.reported_at",
        )
        .bind(node_id.to_string())
        .bind(report.url.clone())
        .bind(i(report.quota_bytes))
        .bind(i(report.stored_bytes))
        .bind(i64::from(report.draining))
        .bind(i(proven))
        .bind(i(missed))
        .bind(json)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest storage report of every node in the storage role.
    pub async fn storage_reports(&self) -> Result<Vec<StoredStorageReport>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REPORT_COLUMNS} FROM storage_node_reports ORDER BY node_id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(report_from_row).collect()
    }

    /// A node's latest storage report.
    pub async fn storage_report(
        &self,
        node_id: NodeId,
    ) -> Result<Option<StoredStorageReport>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REPORT_COLUMNS} FROM storage_node_reports WHERE node_id = $1"
        )))
        .bind(node_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(report_from_row).transpose()
    }

    /// Storage proof rate of every node with an epoch due, counted from StorageMarket, basis
    /// points.
    pub async fn storage_proof_rates(&self) -> Result<HashMap<NodeId, u32>, StoreError> {
        let rows =
            sqlx::query("SELECT node_id, due_epochs, proven_epochs FROM storage_proof_counts")
                .fetch_all(&self.pool)
                .await?;
        let mut out = HashMap::new();
        for row in &rows {
            let counts = counts_from_row(row)?;
            if let Some(rate) = counts.rate_bps() {
                out.insert(named(row, "node_id")?, rate);
            }
        }
        Ok(out)
    }

    /// A node's storage proof rate counted from StorageMarket, basis points; `None` before any
    /// epoch was due.
    pub async fn storage_proof_rate(&self, node_id: NodeId) -> Result<Option<u32>, StoreError> {
        Ok(self.storage_proof_counts(node_id).await?.rate_bps())
    }

    /// A node's replica-epochs due and proven, counted from StorageMarket.
    pub async fn storage_proof_counts(&self, node_id: NodeId) -> Result<ProofCounts, StoreError> {
        let row = sqlx::query(
            "SELECT due_epochs, proven_epochs FROM storage_proof_counts WHERE node_id = $1",
        )
        .bind(node_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(counts_from_row)
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// How far the proof record of a deal's replica is counted.
    pub async fn proof_cursor(
        &self,
        deal_id: u64,
        replica: u32,
    ) -> Result<Option<ProofCursor>, StoreError> {
        let row = sqlx::query(
            "SELECT node_id, next_epoch FROM storage_proof_cursors WHERE deal_id = $1 AND replica = $2",
        )
        .bind(i(deal_id))
        .bind(i64::from(replica))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let next = u(&row, "next_epoch")?;
            Ok(ProofCursor {
                node: named(&row, "node_id")?,
                next_epoch: u32::try_from(next).map_err(|_| StoreError::Corrupt {
                    column: "next_epoch",
                    value: next.to_string(),
                })?,
            })
        })
        .transpose()
    }

    /// Adds `counted` (per node: epochs due and proven) to the nodes' proof records and moves
    /// the replica's cursor from `from` (what [`Self::proof_cursor`] returned) to `to`, in one
    /// transaction. Returns `false`, changing nothing, when the cursor is no longer at `from`
    /// (another orchestrator sharing the database counted these epochs first).
    pub async fn count_proof_epochs(
        &self,
        deal_id: u64,
        replica: u32,
        from: Option<ProofCursor>,
        to: ProofCursor,
        counted: &[(NodeId, ProofCounts)],
    ) -> Result<bool, StoreError> {
        if from.is_some_and(|f| to.next_epoch < f.next_epoch) {
            return Err(StoreError::Corrupt {
                column: "next_epoch",
                value: format!("cursor moved back to {}", to.next_epoch),
            });
        }
        let mut tx = self.begin_write().await?;
        let moved = match from {
            Some(from) => sqlx::query(
                "UPDATE storage_proof_cursors SET node_id = $3, next_epoch = $4                  WHERE deal_id = $1 AND replica = $2 AND node_id = $5 AND next_epoch = $6",
            )
            .bind(i(deal_id))
            .bind(i64::from(replica))
            .bind(to.node.to_string())
            .bind(i64::from(to.next_epoch))
            .bind(from.node.to_string())
            .bind(i64::from(from.next_epoch))
            .execute(&mut *tx)
            .await?,
            None => sqlx::query(
                "INSERT INTO storage_proof_cursors (deal_id, replica, node_id, next_epoch)                  VALUES ($1, $2, $3, $4) ON CONFLICT (deal_id, replica) DO NOTHING",
            )
            .bind(i(deal_id))
            .bind(i64::from(replica))
            .bind(to.node.to_string())
            .bind(i64::from(to.next_epoch))
            .execute(&mut *tx)
            .await?,
        };
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for (node, counts) in counted {
            if counts.due == 0 && counts.proven == 0 {
                continue;
            }
            sqlx::query(
                "INSERT INTO storage_proof_counts (node_id, due_epochs, proven_epochs)                  VALUES ($1, $2, $3) ON CONFLICT (node_id) DO UPDATE SET                  due_epochs = storage_proof_counts.due_epochs + excluded.due_epochs,                  proven_epochs = storage_proof_counts.proven_epochs + excluded.proven_epochs",
            )
            .bind(node.to_string())
            .bind(i(counts.due))
            .bind(i(counts.proven))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Every deal with a registered repair secret.
    pub async fn repair_deals(&self) -> Result<Vec<u64>, StoreError> {
        let rows = sqlx::query("SELECT deal_id FROM storage_repair_secrets ORDER BY deal_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| u(r, "deal_id")).collect()
    }

    /// Opens a repair job for the replica unless one is open already. Returns the open job and
    /// whether this call opened it.
    pub async fn open_repair_job(
        &self,
        deal_id: u64,
        replica: u32,
        from_node: &str,
        reason: &str,
        now: i64,
    ) -> Result<(StorageRepairJob, bool), StoreError> {
        let mut tx = self.begin_write().await?;
        let open = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM storage_repair_jobs WHERE deal_id = $1 AND replica = $2 \
             AND state = 'open'"
        )))
        .bind(i(deal_id))
        .bind(i64::from(replica))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = open {
            return Ok((job_from_row(&row)?, false));
        }
        let next: i64 =
            sqlx::query("SELECT COALESCE(MAX(job_id), 0) + 1 AS next FROM storage_repair_jobs")
                .fetch_one(&mut *tx)
                .await?
                .try_get("next")?;
        sqlx::query(
            "INSERT INTO storage_repair_jobs (job_id, deal_id, replica, from_node, reason, state, \
             attempts, to_node, error, opened_at, updated_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, 'open', 0, NULL, NULL, $6, $6, $6)",
        )
        .bind(next)
        .bind(i(deal_id))
        .bind(i64::from(replica))
        .bind(from_node.to_lowercase())
        .bind(reason.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let job = self
            .repair_job(next as u64)
            .await?
            .ok_or(StoreError::NotFound("repair job"))?;
        Ok((job, true))
    }

    /// One repair job.
    pub async fn repair_job(&self, job_id: u64) -> Result<Option<StorageRepairJob>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM storage_repair_jobs WHERE job_id = $1"
        )))
        .bind(i(job_id))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Open repair jobs due at `now` (next attempt reached), oldest first.
    pub async fn due_repair_jobs(&self, now: i64) -> Result<Vec<StorageRepairJob>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM storage_repair_jobs WHERE state = 'open' \
             AND next_attempt_at <= $1 ORDER BY job_id"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Every repair job of a deal, newest first.
    pub async fn repair_jobs_of_deal(
        &self,
        deal_id: u64,
    ) -> Result<Vec<StorageRepairJob>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM storage_repair_jobs WHERE deal_id = $1 ORDER BY job_id DESC"
        )))
        .bind(i(deal_id))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Records the node an open job rebuilds its replica on and counts an attempt, before the
    /// attempt runs (so a crash in the middle resumes on the same node).
    pub async fn start_repair_attempt(
        &self,
        job_id: u64,
        to_node: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE storage_repair_jobs SET to_node = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE job_id = $1 AND state = 'open'",
        )
        .bind(i(job_id))
        .bind(to_node.to_lowercase())
        .bind(now)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("open repair job"));
        }
        Ok(())
    }

    /// Counts an attempt that failed before a node could be chosen for it.
    pub async fn count_repair_attempt(&self, job_id: u64, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE storage_repair_jobs SET attempts = attempts + 1, updated_at = $2 \
             WHERE job_id = $1 AND state = 'open'",
        )
        .bind(i(job_id))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Leaves an open job open with `error` (a failed attempt, or what it waits for), to be
    /// tried again at `next_attempt_at`.
    pub async fn defer_repair_job(
        &self,
        job_id: u64,
        error: &str,
        next_attempt_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE storage_repair_jobs SET error = $2, next_attempt_at = $3, updated_at = $4 \
             WHERE job_id = $1 AND state = 'open'",
        )
        .bind(i(job_id))
        .bind(error.to_string())
        .bind(next_attempt_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends an open job: `Done` (rebuilt and moved) or `Closed` (nothing left to do, `note`
    /// says why).
    pub async fn finish_repair_job(
        &self,
        job_id: u64,
        state: RepairJobState,
        note: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE storage_repair_jobs SET state = $2, error = $3, updated_at = $4 \
             WHERE job_id = $1 AND state = 'open'",
        )
        .bind(i(job_id))
        .bind(state.as_str())
        .bind(note.map(str::to_string))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
