//! The repair watcher: finds failing replicas of the deals this orchestrator repairs and rebuilds
//! them on other nodes, on its own.
//!
//! A deal is watched once its owner registered its repair secret here (and while it names this
//! orchestrator's repairer on-chain). Each pass reads the market directly: a replica whose node
//! is no longer Active, or left its last closed epoch unproven, or whose node sent no heartbeat
//! for `offline_after_secs`, gets a repair job (persisted; one open job per replica). An open job
//! waits until the market allows the repairer to move the replica (its node no longer Active, or
//! both last closed epochs missed), picks the new node with the placement rules (never a node
//! holding a replica of the deal), records it, then runs [`Repairer::rebuild`] from a healthy
//! replica. A node a replica of the deal failed on before is never chosen again for that deal.
//! A failed attempt is kept with its error and tried again after a wait that doubles up
//! to `retry_max_secs`. A crash at any point leaves the job open with its new node recorded:
//! the next pass resumes (a replica already moved is not moved again, an upload resumes).
//!
//! Each pass also counts the storage proof record of the replicas' nodes from the market itself
//! (the node's own report never counts): every closed epoch of a replica is due from the node
//! that held it (the epoch it arrived on its node only when proven, as above), and proven when
//! the market emitted `EpochProven` for it. The counts and a cursor per replica are persisted
//! together, so a restart resumes where the count stopped.

use crate::{
    placement::{self, PlacementQuery},
    repair::{RepairDesk, RepairError, ReplicaRepair},
    store::{NodeStatus, ProofCounts, ProofCursor, Store, StoreError},
};
use alloy::{
    primitives::{Address, B256, U256},
    providers::Provider as _,
};
use decloud_sdk::{
    NodeId,
    api::{RepairJobState, StorageRepairJob},
    bindings::StorageMarket,
    storage::SEGMENT_BYTES,
};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{debug, info, warn};

/// How the watcher paces itself (`[repair]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairPacing {
    /// A node silent this long has its replicas repaired, seconds.
    pub offline_after_secs: i64,
    /// Wait after the first failed attempt, seconds; doubles with each failure.
    pub retry_base_secs: i64,
    /// Longest wait between attempts, seconds.
    pub retry_max_secs: i64,
}

impl From<&crate::config::RepairConfig> for RepairPacing {
    fn from(c: &crate::config::RepairConfig) -> Self {
        let secs = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            offline_after_secs: secs(c.offline_after_secs),
            retry_base_secs: secs(c.retry_base_secs),
            retry_max_secs: secs(c.retry_max_secs),
        }
    }
}

impl RepairPacing {
    /// When a job that failed its `attempts`-th attempt at `now` is tried again.
    pub fn next_attempt(&self, attempts: u32, now: i64) -> i64 {
        let doublings = attempts.saturating_sub(1).min(32);
        let wait = self
            .retry_base_secs
            .saturating_mul(1i64 << doublings)
            .min(self.retry_max_secs);
        now.saturating_add(wait)
    }
}

/// Why a watcher pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the chain failed.
    #[error("reading the chain: {0}")]
    Chain(#[from] decloud_sdk::Error),
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassSummary {
    /// Jobs opened.
    pub opened: usize,
    /// Replicas rebuilt and moved.
    pub repaired: usize,
    /// Attempts that failed.
    pub failed: usize,
}

/// A deal's state on-chain as the watcher needs it.
struct DealView {
    replicas: Vec<(NodeId, U256)>,
    segment_count: u64,
    /// The current epoch; `None` once the deal has ended or settled.
    current: Option<u32>,
    /// Epochs closed so far (every epoch below it), at most the deal's epochs.
    closed: u32,
    /// First block of epoch 0.
    start_block: u64,
    /// Blocks per epoch.
    epoch_blocks: u64,
    repairer: Address,
}

impl DealView {
    fn epoch_start(&self, epoch: u32) -> u64 {
        self.start_block
            .saturating_add(u64::from(epoch).saturating_mul(self.epoch_blocks))
    }
}

/// The watcher over the repair desk's deals.
#[derive(Debug, Clone)]
pub struct RepairWatcher {
    desk: RepairDesk,
    store: Store,
    pacing: RepairPacing,
}

impl RepairWatcher {
    /// A watcher repairing with `desk`'s repairer the deals registered in `store`.
    pub fn new(desk: RepairDesk, store: Store, pacing: RepairPacing) -> Self {
        Self {
            desk,
            store,
            pacing,
        }
    }

    fn market(&self) -> StorageMarket::StorageMarketInstance<&alloy::providers::DynProvider> {
        StorageMarket::new(self.desk.market(), self.desk.repairer().provider())
    }

    /// One pass at `now`: opens jobs for failing replicas, then runs the jobs that are due.
    pub async fn pass(&self, now: i64) -> Result<PassSummary, WatchError> {
        let mut summary = PassSummary::default();
        for deal in self.store.repair_deals().await? {
            match self.watch_deal(deal, now).await {
                Ok(opened) => summary.opened += opened,
                Err(e) => {
                    warn!(target: "orchestrator::repair", deal, error = %e, "watching the deal failed; next pass")
                }
            }
        }
        for job in self.store.due_repair_jobs(now).await? {
            match self.attempt(&job, now).await {
                Ok(Some(true)) => summary.repaired += 1,
                Ok(Some(false)) => summary.failed += 1,
                Ok(None) => {}
                Err(e) => {
                    warn!(target: "orchestrator::repair", job = job.job_id, error = %e, "repair job pass failed; next pass")
                }
            }
        }
        Ok(summary)
    }

    async fn deal_view(&self, deal: u64) -> Result<DealView, WatchError> {
        let market = self.market();
        let id = U256::from(deal);
        let terms = decloud_sdk::tx::read("StorageMarket", market.getDeal(id)).await?;
        let replicas = decloud_sdk::tx::read("StorageMarket", market.getReplicas(id)).await?;
        let repairer = decloud_sdk::tx::read("StorageMarket", market.repairerOf(id)).await?;
        let epoch_blocks = decloud_sdk::tx::read("StorageMarket", market.epochBlocks()).await?;
        let block = self
            .desk
            .repairer()
            .provider()
            .get_block_number()
            .await
            .map_err(|e| decloud_sdk::Error::Chain(e.to_string()))?;
        let epoch_blocks: u64 = epoch_blocks.max(1);
        let end = terms
            .startBlock
            .saturating_add(u64::from(terms.epochs).saturating_mul(epoch_blocks));
        let current = (!terms.settled && block >= terms.startBlock && block < end)
            .then(|| u32::try_from((block - terms.startBlock) / epoch_blocks).unwrap_or(u32::MAX));
        let closed = if block < terms.startBlock {
            0
        } else {
            u32::try_from((block - terms.startBlock) / epoch_blocks)
                .unwrap_or(u32::MAX)
                .min(terms.epochs)
        };
        Ok(DealView {
            replicas: replicas
                .iter()
                .map(|r| (NodeId::from(r.nodeId), r.root))
                .collect(),
            segment_count: terms.segmentCount,
            current,
            closed,
            start_block: terms.startBlock,
            epoch_blocks,
            repairer,
        })
    }

    async fn proven(&self, deal: u64, replica: u32, epoch: u32) -> Result<bool, WatchError> {
        Ok(decloud_sdk::tx::read(
            "StorageMarket",
            self.market()
                .isProven(U256::from(deal), U256::from(replica), epoch),
        )
        .await?)
    }

    /// What the market's `replaceReplica` checks for the repairer: the replica's node is no
    /// longer Active, or it left both last closed epochs (placed in or before the earlier one)
    /// unproven.
    async fn move_allowed(
        &self,
        deal: u64,
        replica: u32,
        node: NodeId,
        current: u32,
    ) -> Result<bool, WatchError> {
        if self.node_status(node).await? != Some(NodeStatus::Active) {
            return Ok(true);
        }
        let since = self.since(deal, replica).await?;
        if current < since.saturating_add(2) {
            return Ok(false);
        }
        Ok(!self.proven(deal, replica, current - 1).await?
            && !self.proven(deal, replica, current - 2).await?)
    }

    async fn since(&self, deal: u64, replica: u32) -> Result<u32, WatchError> {
        Ok(decloud_sdk::tx::read(
            "StorageMarket",
            self.market()
                .replicaSince(U256::from(deal), U256::from(replica)),
        )
        .await?)
    }

    async fn node_status(&self, node: NodeId) -> Result<Option<NodeStatus>, WatchError> {
        Ok(self.store.node(node).await?.map(|n| n.status))
    }

    /// Why the replica needs repair, if it does.
    async fn failure(
        &self,
        deal: u64,
        replica: u32,
        node: NodeId,
        current: u32,
        now: i64,
    ) -> Result<Option<String>, WatchError> {
        if let Some(status) = self.node_status(node).await?
            && status != NodeStatus::Active
        {
            return Ok(Some(format!("node {node} is {status} on-chain")));
        }
        // The epoch a replica arrived on its node does not count against the node (the data may
        // have arrived late in it); every closed epoch after it does.
        let since = self.since(deal, replica).await?;
        if current >= since.saturating_add(2) && !self.proven(deal, replica, current - 1).await? {
            return Ok(Some(format!(
                "node {node} did not prove epoch {} of the replica",
                current - 1
            )));
        }
        if let Some(l) = self.store.liveness(node).await?
            && l.heartbeats > 0
            && now.saturating_sub(l.last_heartbeat) > self.pacing.offline_after_secs
        {
            return Ok(Some(format!(
                "node {node} sent no heartbeat for {} s",
                now - l.last_heartbeat
            )));
        }
        Ok(None)
    }

    /// Opens a job for each failing replica of `deal`; closes the deal's open jobs when it no
    /// longer runs or no longer names this repairer. Returns the jobs opened.
    async fn watch_deal(&self, deal: u64, now: i64) -> Result<usize, WatchError> {
        let view = self.deal_view(deal).await?;
        // Counted before any repair of this pass moves a replica, so each closed epoch goes to
        // the node that held the replica in it.
        // A count that fails is taken up again next pass; repairs go on meanwhile.
        for (index, (node, _)) in view.replicas.iter().enumerate() {
            if let Err(e) = self.count_proofs(deal, index as u32, *node, &view).await {
                warn!(target: "orchestrator::repair", deal, replica = index, error = %e, "counting storage proofs failed; next pass");
            }
        }
        let ours = self.desk.repairer().address();
        let Some(current) = view.current else {
            self.close_jobs(deal, "the deal has ended", now).await?;
            return Ok(0);
        };
        if view.repairer != ours {
            self.close_jobs(deal, "the deal no longer names this repairer", now)
                .await?;
            return Ok(0);
        }
        let mut opened = 0;
        for (index, (node, _)) in view.replicas.iter().enumerate() {
            let replica = index as u32;
            if let Some(reason) = self.failure(deal, replica, *node, current, now).await? {
                let (job, new) = self
                    .store
                    .open_repair_job(deal, replica, &node.to_string(), &reason, now)
                    .await?;
                if new {
                    opened += 1;
                    info!(target: "orchestrator::repair", deal, replica, job = job.job_id, %node, %reason, "repair job opened");
                }
            }
        }
        Ok(opened)
    }

    /// Counts the replica's closed epochs not counted yet into its nodes' proof records: due
    /// from the node that held the replica in each (`node` from the epoch it arrived, the node
    /// the count last saw before that), proven when the market emitted `EpochProven` for it.
    async fn count_proofs(
        &self,
        deal: u64,
        replica: u32,
        node: NodeId,
        view: &DealView,
    ) -> Result<(), WatchError> {
        let cursor = self.store.proof_cursor(deal, replica).await?;
        let start = cursor.map_or(0, |c| c.next_epoch);
        if start >= view.closed && cursor.is_some_and(|c| c.node == node) {
            return Ok(());
        }
        let since = self.since(deal, replica).await?;
        // Proofs of an epoch land inside it (the market refuses them once it closed): the logs
        // of the closed epochs' blocks hold every proof they will ever have.
        let mut proven = BTreeSet::new();
        if start < view.closed {
            let logs = self
                .market()
                .EpochProven_filter()
                .topic1(B256::from(U256::from(deal)))
                .topic2(B256::from(U256::from(replica)))
                .from_block(view.epoch_start(start))
                .to_block(view.epoch_start(view.closed).saturating_sub(1))
                .query()
                .await
                .map_err(|e| decloud_sdk::Error::Chain(e.to_string()))?;
            proven.extend(logs.into_iter().map(|(event, _)| event.epoch));
        }
        let mut counted: BTreeMap<NodeId, ProofCounts> = BTreeMap::new();
        for epoch in start..view.closed {
            let was_proven = proven.contains(&epoch);
            let holder = if epoch >= since {
                node
            } else {
                match cursor {
                    // Before the replica arrived on `node`: the node the count last saw.
                    Some(c) if c.node != node => c.node,
                    // Held by a node this count never saw (the deal was registered after a
                    // move): nobody's record.
                    _ => continue,
                }
            };
            // The epoch a replica arrived on its node counts only when proven (the data may
            // have arrived late in it).
            if epoch == since && !was_proven {
                continue;
            }
            let entry = counted.entry(holder).or_default();
            entry.due += 1;
            entry.proven += u64::from(was_proven);
        }
        let to = ProofCursor {
            node,
            next_epoch: start.max(view.closed),
        };
        let counted: Vec<(NodeId, ProofCounts)> = counted.into_iter().collect();
        if self
            .store
            .count_proof_epochs(deal, replica, cursor, to, &counted)
            .await?
        {
            for (holder, counts) in &counted {
                debug!(target: "orchestrator::repair", deal, replica, node = %holder, due = counts.due, proven = counts.proven, "storage proofs counted");
            }
        }
        Ok(())
    }

    async fn close_jobs(&self, deal: u64, why: &str, now: i64) -> Result<(), WatchError> {
        for job in self.store.repair_jobs_of_deal(deal).await? {
            if job.state == RepairJobState::Open {
                self.store
                    .finish_repair_job(job.job_id, RepairJobState::Closed, Some(why), now)
                    .await?;
                info!(target: "orchestrator::repair", deal, job = job.job_id, %why, "repair job closed");
            }
        }
        Ok(())
    }

    /// One step of an open job. `Some(true)`: repaired; `Some(false)`: an attempt failed;
    /// `None`: nothing attempted (waiting, or closed).
    async fn attempt(&self, job: &StorageRepairJob, now: i64) -> Result<Option<bool>, WatchError> {
        let (deal, replica) = (job.deal_id, job.replica);
        let view = self.deal_view(deal).await?;
        let Some(current) = view.current else {
            self.store
                .finish_repair_job(
                    job.job_id,
                    RepairJobState::Closed,
                    Some("the deal has ended"),
                    now,
                )
                .await?;
            return Ok(None);
        };
        let Some(&(on_chain, _)) = view.replicas.get(replica as usize) else {
            self.store
                .finish_repair_job(
                    job.job_id,
                    RepairJobState::Closed,
                    Some("the deal has no such replica"),
                    now,
                )
                .await?;
            return Ok(None);
        };
        let from: NodeId = job.from_node.parse().map_err(|_| StoreError::Corrupt {
            column: "from_node",
            value: job.from_node.clone(),
        })?;
        let recorded_target: Option<NodeId> = job.to_node.as_deref().and_then(|t| t.parse().ok());
        // Never a node holding a replica of the deal, nor one a replica of the deal already
        // failed on (its disk or its operator let the deal down once).
        let mut deal_nodes: Vec<NodeId> = view.replicas.iter().map(|(n, _)| *n).collect();
        for earlier in self.store.repair_jobs_of_deal(deal).await? {
            if let Ok(node) = earlier.from_node.parse::<NodeId>()
                && !deal_nodes.contains(&node)
            {
                deal_nodes.push(node);
            }
        }
        let target = if on_chain == from {
            if !self.move_allowed(deal, replica, from, current).await? {
                if self
                    .failure(deal, replica, from, current, now)
                    .await?
                    .is_none()
                {
                    self.store
                        .finish_repair_job(
                            job.job_id,
                            RepairJobState::Closed,
                            Some(
                                "the node recovered: it proved the last closed epoch and is online",
                            ),
                            now,
                        )
                        .await?;
                    info!(target: "orchestrator::repair", deal, replica, job = job.job_id, "node recovered; repair job closed");
                } else {
                    // Not an attempt: the market does not allow the move yet. Look again next pass.
                    self.store
                        .defer_repair_job(
                            job.job_id,
                            "waiting: the market lets the repairer move a replica once its node \
                             is no longer active or missed the last two closed epochs",
                            now,
                            now,
                        )
                        .await?;
                }
                return Ok(None);
            }
            self.choose_target(recorded_target, &deal_nodes, view.segment_count, now)
                .await?
        } else if Some(on_chain) == recorded_target {
            // Moved by an earlier attempt that stopped before it finished: resume there.
            Ok(on_chain)
        } else {
            let why = format!("the replica was moved to {on_chain} by its owner");
            self.store
                .finish_repair_job(job.job_id, RepairJobState::Closed, Some(&why), now)
                .await?;
            return Ok(None);
        };
        let target = match target {
            Ok(t) => t,
            Err(why) => return self.failed(job, job.attempts + 1, &why, now, true).await,
        };
        let Some(target_url) = self.url_of(target).await? else {
            let why = format!("node {target} reports no chunk API URL");
            return self.failed(job, job.attempts + 1, &why, now, true).await;
        };
        let Some(sealed) = self.store.repair_secret(deal).await? else {
            return self
                .failed(
                    job,
                    job.attempts + 1,
                    "no repair secret is registered",
                    now,
                    true,
                )
                .await;
        };
        let Some(secret) = self.desk.unseal(deal, &sealed.sealed) else {
            return self
                .failed(
                    job,
                    job.attempts + 1,
                    "the registered repair secret does not open with this repair key",
                    now,
                    true,
                )
                .await;
        };
        self.store
            .start_repair_attempt(job.job_id, &target.to_string(), now)
            .await?;
        let attempts = job.attempts + 1;

        // Healthy replicas to rebuild from: those whose node proved the last closed epoch
        // first, each only if its node reports a chunk API.
        let mut sources = Vec::new();
        for (index, (node, _)) in view.replicas.iter().enumerate() {
            let index = index as u32;
            if index == replica || *node == from {
                continue;
            }
            let Some(url) = self.url_of(*node).await? else {
                continue;
            };
            let proved_last = current > 0 && self.proven(deal, index, current - 1).await?;
            sources.push((!proved_last, index, url));
        }
        sources.sort();
        if sources.is_empty() {
            return self
                .failed(
                    job,
                    attempts,
                    "no healthy replica's node reports a chunk API",
                    now,
                    false,
                )
                .await;
        }
        let mut errors = Vec::new();
        for (_, source, source_url) in sources {
            let repair = ReplicaRepair {
                deal,
                replica,
                source,
                source_url,
                target: target.as_b256(),
                target_url: target_url.clone(),
            };
            match self.desk.repairer().rebuild(&repair, &secret).await {
                Ok(outcome) => {
                    self.store
                        .finish_repair_job(job.job_id, RepairJobState::Done, None, now)
                        .await?;
                    info!(target: "orchestrator::repair", deal, replica, job = job.job_id, from = %from, to = %target, source, chunks = outcome.chunks, moved = outcome.moved, "replica repaired");
                    return Ok(Some(true));
                }
                // The source replica could not serve: try the next one.
                Err(
                    e @ (RepairError::Node(_)
                    | RepairError::SourceIncomplete { .. }
                    | RepairError::SourceRoot { .. }),
                ) => errors.push(format!("from replica {source}: {e}")),
                Err(e) => {
                    errors.push(format!("from replica {source}: {e}"));
                    break;
                }
            }
        }
        self.failed(job, attempts, &errors.join("; "), now, false)
            .await
    }

    /// Records a failed attempt (`count`: not yet counted by `start_repair_attempt`).
    async fn failed(
        &self,
        job: &StorageRepairJob,
        attempts: u32,
        error: &str,
        now: i64,
        count: bool,
    ) -> Result<Option<bool>, WatchError> {
        if count {
            // Counted without a node: none could be chosen.
            self.store.count_repair_attempt(job.job_id, now).await?;
        }
        let next = self.pacing.next_attempt(attempts, now);
        self.store
            .defer_repair_job(job.job_id, error, next, now)
            .await?;
        warn!(target: "orchestrator::repair", deal = job.deal_id, replica = job.replica, job = job.job_id, attempts, next_attempt_at = next, %error, "repair attempt failed");
        Ok(Some(false))
    }

    /// The node recorded for the job when it can still take the replica, else the best one
    /// placement offers outside the deal's nodes.
    async fn choose_target(
        &self,
        recorded: Option<NodeId>,
        deal_nodes: &[NodeId],
        segment_count: u64,
        now: i64,
    ) -> Result<Result<NodeId, String>, WatchError> {
        let query = PlacementQuery {
            replicas: 1,
            bytes: segment_count.saturating_mul(SEGMENT_BYTES).max(1),
            region: None,
            exclude: deal_nodes.to_vec(),
        };
        let candidates = placement::candidates(&self.store, now).await?;
        if let Some(recorded) = recorded {
            let still = PlacementQuery {
                exclude: Vec::new(),
                ..query.clone()
            };
            if !deal_nodes.contains(&recorded)
                && candidates.iter().any(|c| {
                    c.report.node_id == recorded
                        && placement::rank(std::slice::from_ref(c), &still).is_ok()
                })
            {
                return Ok(Ok(recorded));
            }
        }
        Ok(match placement::rank(&candidates, &query) {
            Ok(nodes) => nodes[0]
                .node_id
                .parse()
                .map_err(|_| format!("placement chose a malformed node id {}", nodes[0].node_id)),
            Err(e) => Err(format!("no node can take the replica: {e}")),
        })
    }

    async fn url_of(&self, node: NodeId) -> Result<Option<url::Url>, WatchError> {
        Ok(self
            .store
            .storage_report(node)
            .await?
            .and_then(|r| r.url)
            .and_then(|u| u.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_attempts_wait_longer_each_time_up_to_the_cap() {
        let pacing = RepairPacing {
            offline_after_secs: 60,
            retry_base_secs: 10,
            retry_max_secs: 100,
        };
        assert_eq!(pacing.next_attempt(1, 1000), 1010);
        assert_eq!(pacing.next_attempt(2, 1000), 1020);
        assert_eq!(pacing.next_attempt(3, 1000), 1040);
        assert_eq!(pacing.next_attempt(5, 1000), 1100);
        assert_eq!(pacing.next_attempt(500, 1000), 1100);
    }
}
