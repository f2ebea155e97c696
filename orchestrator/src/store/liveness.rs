//! Heartbeats and the reputation computed from them: first and latest heartbeat, missed
//! heartbeats booked per UTC day, lifetime VM counters, and (from storage reports) the storage
//! proof rate.

use super::{Store, StoreError, named};
use crate::reputation;
use decloud_sdk::NodeId;
pub use decloud_sdk::api::{DailyFailures, Reputation};
use serde::{Deserialize, Serialize};
use sqlx::{Row, any::AnyRow};
use std::collections::HashMap;
use utoipa::ToSchema;

/// Heartbeat bookkeeping of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Liveness {
    /// First heartbeat ever, unix seconds.
    pub first_heartbeat: i64,
    /// Latest heartbeat, unix seconds.
    pub last_heartbeat: i64,
    /// Heartbeats received.
    pub heartbeats: i64,
    /// VMs ever placed on the node.
    pub vms_hosted: i64,
    /// VMs that ran until their lease ended normally.
    pub vms_completed: i64,
}

fn liveness_from_row(row: &AnyRow) -> Result<Liveness, StoreError> {
    Ok(Liveness {
        first_heartbeat: row.try_get("first_heartbeat")?,
        last_heartbeat: row.try_get("last_heartbeat")?,
        heartbeats: row.try_get("heartbeats")?,
        vms_hosted: row.try_get("vms_hosted")?,
        vms_completed: row.try_get("vms_completed")?,
    })
}

impl Store {
    /// Records a heartbeat of `node_id` received at `now` and books the heartbeats missed since
    /// the previous one on the days they were due. Returns how many were missed.
    ///
    /// A heartbeat older than the latest one (clock skew, a retried delivery) is counted but
    /// books nothing and does not move the latest time back.
    pub async fn record_heartbeat(&self, node_id: NodeId, now: i64) -> Result<i64, StoreError> {
        let node_id = node_id.to_string();
        loop {
            let mut tx = self.begin_write().await?;
            let known = sqlx::query("SELECT 1 FROM nodes WHERE node_id = $1")
                .bind(node_id.clone())
                .fetch_optional(&mut *tx)
                .await?;
            if known.is_none() {
                return Err(StoreError::NotFound("node"));
            }
            let seen = sqlx::query(
                "SELECT last_heartbeat, heartbeats FROM node_liveness WHERE node_id = $1",
            )
            .bind(node_id.clone())
            .fetch_optional(&mut *tx)
            .await?;
            let (last, heartbeats): (i64, i64) = match seen {
                Some(row) => (row.try_get("last_heartbeat")?, row.try_get("heartbeats")?),
                None => {
                    let inserted = sqlx::query(
                        "INSERT INTO node_liveness (node_id, first_heartbeat, last_heartbeat, heartbeats, vms_hosted, \
                         vms_completed) VALUES ($1, $2, $2, 1, 0, 0) ON CONFLICT (node_id) DO NOTHING",
                    )
                    .bind(node_id.clone())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if inserted.rows_affected() == 1 {
                        tx.commit().await?;
                        return Ok(0);
                    }
                    // Another replica recorded the first heartbeat meanwhile: go again.
                    continue;
                }
            };
            if heartbeats == 0 {
                // The record was opened by a VM counter; the uptime clock starts now.
                let started = sqlx::query(
                    "UPDATE node_liveness SET first_heartbeat = $2, last_heartbeat = $2, heartbeats = 1 \
                     WHERE node_id = $1 AND heartbeats = 0",
                )
                .bind(node_id.clone())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if started.rows_affected() == 1 {
                    tx.commit().await?;
                    return Ok(0);
                }
                continue;
            }
            let split = reputation::missed_by_day(last, now, reputation::window_start_day(now));
            // Only move forward; the WHERE clause makes a concurrent writer's update win cleanly.
            let updated = sqlx::query(
                "UPDATE node_liveness SET last_heartbeat = $2, heartbeats = heartbeats + 1 \
                 WHERE node_id = $1 AND last_heartbeat = $3",
            )
            .bind(node_id.clone())
            .bind(now.max(last))
            .bind(last)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                continue;
            }
            for (day, failed) in &split {
                sqlx::query(
                    "INSERT INTO node_failures_daily (node_id, day, failed) VALUES ($1, $2, $3) \
                     ON CONFLICT (node_id, day) DO UPDATE SET failed = node_failures_daily.failed + excluded.failed",
                )
                .bind(node_id.clone())
                .bind(*day)
                .bind(*failed)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok(split.iter().map(|(_, n)| n).sum());
        }
    }

    /// Heartbeat bookkeeping of one node.
    pub async fn liveness(&self, node_id: NodeId) -> Result<Option<Liveness>, StoreError> {
        let row = sqlx::query(
            "SELECT first_heartbeat, last_heartbeat, heartbeats, vms_hosted, vms_completed \
             FROM node_liveness WHERE node_id = $1",
        )
        .bind(node_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(liveness_from_row).transpose()
    }

    /// Counts a VM placed on the node (lifetime "hosted").
    pub async fn record_vm_hosted(&self, node_id: NodeId, now: i64) -> Result<(), StoreError> {
        self.bump_vm_counter(node_id, now, "vms_hosted").await
    }

    /// Counts a VM that ran until its lease ended normally (lifetime "completed").
    pub async fn record_vm_completed(&self, node_id: NodeId, now: i64) -> Result<(), StoreError> {
        self.bump_vm_counter(node_id, now, "vms_completed").await
    }

    async fn bump_vm_counter(
        &self,
        node_id: NodeId,
        now: i64,
        column: &'static str,
    ) -> Result<(), StoreError> {
        if self.node(node_id).await?.is_none() {
            return Err(StoreError::NotFound("node"));
        }
        let node_id = node_id.to_string();
        let (hosted, completed) = if column == "vms_hosted" {
            (1, 0)
        } else {
            (0, 1)
        };
        // A node that never sent a heartbeat starts its record here; its uptime clock starts at
        // its first heartbeat, which is why first/last are only set on insert.
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO node_liveness (node_id, first_heartbeat, last_heartbeat, heartbeats, vms_hosted, \
             vms_completed) VALUES ($1, $2, $2, 0, $3, $4) \
             ON CONFLICT (node_id) DO UPDATE SET {column} = node_liveness.{column} + 1"
        ));
        sqlx::query(sql)
            .bind(node_id)
            .bind(now)
            .bind(hosted)
            .bind(completed)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Missed heartbeats per day of one node from `from_day` on, oldest first.
    pub async fn failures_by_day(
        &self,
        node_id: NodeId,
        from_day: i64,
    ) -> Result<Vec<DailyFailures>, StoreError> {
        let rows = sqlx::query(
            "SELECT day, failed FROM node_failures_daily WHERE node_id = $1 AND day >= $2 ORDER BY day",
        )
        .bind(node_id.to_string())
        .bind(from_day)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DailyFailures {
                    day: r.try_get("day")?,
                    failed: r.try_get("failed")?,
                })
            })
            .collect()
    }

    /// A node's reputation at `now`.
    pub async fn reputation(&self, node_id: NodeId, now: i64) -> Result<Reputation, StoreError> {
        let liveness = self.liveness(node_id).await?;
        let failed_by_day = self
            .failures_by_day(node_id, reputation::window_start_day(now))
            .await?;
        let recorded: i64 = failed_by_day.iter().map(|d| d.failed).sum();
        let mut out = reputation_of(liveness, recorded, failed_by_day, now);
        out.storage_proof_rate_bps = self.storage_proof_rate(node_id).await?;
        Ok(out)
    }

    /// Reputation of every node with a heartbeat record, by node id.
    pub async fn reputations(&self, now: i64) -> Result<HashMap<NodeId, Reputation>, StoreError> {
        let rows = sqlx::query(
            "SELECT node_id, first_heartbeat, last_heartbeat, heartbeats, vms_hosted, vms_completed FROM node_liveness",
        )
        .fetch_all(&self.pool)
        .await?;
        let failed_rows = sqlx::query(
            "SELECT node_id, CAST(SUM(failed) AS BIGINT) AS failed FROM node_failures_daily \
             WHERE day >= $1 GROUP BY node_id",
        )
        .bind(reputation::window_start_day(now))
        .fetch_all(&self.pool)
        .await?;
        let mut failed = HashMap::new();
        for row in &failed_rows {
            let id: NodeId = named(row, "node_id")?;
            let n: i64 = row.try_get("failed")?;
            failed.insert(id, n);
        }
        let rates = self.storage_proof_rates().await?;
        let mut out = HashMap::new();
        for row in &rows {
            let id: NodeId = named(row, "node_id")?;
            let recorded = failed.get(&id).copied().unwrap_or(0);
            let mut rep = reputation_of(Some(liveness_from_row(row)?), recorded, Vec::new(), now);
            // The storage proof record, counted from StorageMarket (not the node's own report).
            rep.storage_proof_rate_bps = rates.get(&id).copied();
            out.insert(id, rep);
        }
        Ok(out)
    }
}

fn reputation_of(
    liveness: Option<Liveness>,
    recorded_failed: i64,
    failed_by_day: Vec<DailyFailures>,
    now: i64,
) -> Reputation {
    match liveness {
        None => Reputation {
            online: false,
            last_heartbeat: None,
            uptime_bps: None,
            failed_by_day,
            vms_hosted: 0,
            vms_completed: 0,
            storage_proof_rate_bps: None,
        },
        Some(l) => {
            let seen = l.heartbeats > 0;
            Reputation {
                online: seen && reputation::is_online(Some(l.last_heartbeat), now),
                last_heartbeat: seen.then_some(l.last_heartbeat),
                uptime_bps: if seen {
                    reputation::uptime_bps(
                        l.first_heartbeat,
                        l.last_heartbeat,
                        recorded_failed,
                        now,
                    )
                } else {
                    None
                },
                failed_by_day,
                vms_hosted: l.vms_hosted,
                vms_completed: l.vms_completed,
                storage_proof_rate_bps: None,
            }
        }
    }
}
