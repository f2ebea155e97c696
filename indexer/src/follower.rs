//! The reorg-safe chain follower.
//!
//! A [`Follower`] reads the logs of a set of contracts from a start block on, in block ranges that
//! adapt to the RPC node, and hands each range to a [`Handler`] inside a database transaction that
//! also advances the follower's named cursor. A crash therefore loses nothing and duplicates
//! nothing: either the handler's writes and the cursor are committed together, or neither is.
//!
//! Only blocks at least `confirmations` below the head are read. The follower keeps the hashes of
//! the blocks it processed within the last `reorg_window` blocks; before each step it checks the
//! cursor block's hash against the chain, and on a mismatch walks back to the newest stored block
//! that is still canonical (the common ancestor), asks the handler to roll back everything above
//! it, and replays from there.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::network::primitives::BlockTransactionsKind;
use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, Log};
use alloy::transports::TransportError;
// Dynamic SQL here is assembled only from the schema's static identifiers and numbered placeholders;
// every value is bound, so `AssertSqlSafe` holds.
use sqlx::AssertSqlSafe;
use sqlx::{AnyConnection, Row};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::db::{Backend, Database};
use crate::error::{BoxError, FollowerError};
use crate::metrics::Metrics;

/// How a follower reads the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerConfig {
    /// The cursor's name: several followers share one database under different names.
    pub name: String,
    /// The contracts whose logs are read.
    pub addresses: Vec<Address>,
    /// The first block to read (the earliest deploy block).
    pub start_block: u64,
    /// Blocks below the head a block must be before it is read (0 reads the head itself).
    pub confirmations: u64,
    /// How many recent blocks can still be reorganised; their hashes are kept and their changes
    /// remain undoable.
    pub reorg_window: u64,
    /// Pause between polls once caught up.
    pub poll_interval: Duration,
    /// The first `eth_getLogs` range, in blocks.
    pub initial_range: u64,
    /// The largest `eth_getLogs` range, in blocks.
    pub max_range: u64,
    /// A range that returns at most this many logs quickly lets the next range double.
    pub target_logs: usize,
}

impl FollowerConfig {
    /// A configuration with the defaults for a local chain: no confirmations, a 256-block window.
    pub fn new(name: impl Into<String>, addresses: Vec<Address>, start_block: u64) -> Self {
        Self {
            name: name.into(),
            addresses,
            start_block,
            confirmations: 0,
            reorg_window: 256,
            poll_interval: Duration::from_millis(500),
            initial_range: 1_000,
            max_range: 100_000,
            target_logs: 10_000,
        }
    }
}

/// A block the follower knows by number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Block number.
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// Block timestamp, seconds.
    pub timestamp: u64,
}

/// A contiguous range of blocks and the logs in it, handed to a [`Handler`].
#[derive(Debug)]
pub struct LogBatch<'a> {
    /// First block of the range.
    pub from: u64,
    /// The range's last block, which becomes the cursor.
    pub to: BlockRef,
    /// The logs of the range in chain order.
    pub logs: &'a [Log],
    /// Blocks at or below this number are final (older than the reorg window): changes to them never
    /// need to be undone. Handlers may also discard undo data at or below it.
    pub final_block: u64,
    /// The cursor's name.
    pub cursor: &'a str,
}

/// What a follower drives: processes batches of logs and undoes them on a reorg. Both run inside the
/// transaction that also moves the cursor, so they must only write through `conn`.
///
/// Implementations must be idempotent for a log identified by (block hash, log index).
pub trait Handler: Send + Sync {
    /// Processes the logs of one block range.
    fn handle(
        &self,
        conn: &mut AnyConnection,
        batch: &LogBatch<'_>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Undoes everything derived from blocks above `ancestor`.
    fn rollback(
        &self,
        conn: &mut AnyConnection,
        ancestor: u64,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Called after a batch was committed (e.g. to notify subscribers). Must not block.
    fn committed(&self, _batch: &LogBatch<'_>) {}
}

/// Creates the follower's own tables if missing: named cursors and recent block hashes.
pub async fn ensure_follower_schema(db: &Database) -> Result<(), FollowerError> {
    for ddl in [
        "CREATE TABLE IF NOT EXISTS follower_cursors (
            name TEXT PRIMARY KEY,
            block_number BIGINT NOT NULL,
            block_hash TEXT NOT NULL,
            block_timestamp BIGINT NOT NULL
        )",
        "CREATE TABLE IF NOT EXISTS follower_blocks (
            name TEXT NOT NULL,
            block_number BIGINT NOT NULL,
            block_hash TEXT NOT NULL,
            PRIMARY KEY (name, block_number)
        )",
    ] {
        sqlx::query(ddl).execute(&db.pool).await?;
    }
    Ok(())
}

/// Reads a follower's committed cursor.
pub async fn load_cursor(db: &Database, name: &str) -> Result<Option<BlockRef>, FollowerError> {
    let sql = format!(
        "SELECT block_number, block_hash, block_timestamp FROM follower_cursors WHERE name = {}",
        db.backend.param(1)
    );
    let row = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(name)
        .fetch_optional(&db.pool)
        .await?;
    row.map(|row| {
        let number: i64 = row.try_get(0)?;
        let hash: String = row.try_get(1)?;
        let timestamp: i64 = row.try_get(2)?;
        Ok(BlockRef {
            number: number as u64,
            hash: parse_hash(&hash)?,
            timestamp: timestamp as u64,
        })
    })
    .transpose()
}

fn parse_hash(s: &str) -> Result<B256, FollowerError> {
    s.parse()
        .map_err(|_| FollowerError::Inconsistent(format!("stored block hash {s:?} is not a hash")))
}

/// Follows the chain for one handler. See the module docs.
#[derive(Debug)]
pub struct Follower<H> {
    provider: DynProvider,
    db: Database,
    config: FollowerConfig,
    handler: H,
    metrics: Arc<Metrics>,
    range: u64,
}

/// How one step of the follower ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A range was committed up to this block.
    Indexed(u64),
    /// A reorg was rolled back to this common ancestor.
    RolledBack(u64),
    /// Nothing new below the confirmation depth.
    CaughtUp,
    /// The RPC node refused the range or answered inconsistently; the next step asks again.
    Retry,
}

impl<H: Handler> Follower<H> {
    /// A follower over `provider` writing through `handler` into `db`.
    pub fn new(provider: DynProvider, db: Database, config: FollowerConfig, handler: H) -> Self {
        let range = config.initial_range.clamp(1, config.max_range.max(1));
        Self {
            provider,
            db,
            config,
            handler,
            metrics: Arc::default(),
            range,
        }
    }

    /// Shares the follower's metrics.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The follower's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Follows the chain until `shutdown` turns true. RPC failures are retried with backoff; a
    /// store or handler failure stops the follower with an error.
    pub async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), FollowerError> {
        ensure_follower_schema(&self.db).await?;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let step = tokio::select! {
                step = self.step() => step,
                _ = shutdown.changed() => return Ok(()),
            };
            match step {
                Ok(Step::CaughtUp) => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.metrics.indexing_error.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    }

    /// Follows until the cursor reaches the current safe head (head minus confirmations).
    pub async fn sync_to_head(&mut self) -> Result<u64, FollowerError> {
        ensure_follower_schema(&self.db).await?;
        loop {
            match self.step().await? {
                Step::CaughtUp => {
                    return Ok(self.metrics.indexed_block.load(Ordering::Relaxed));
                }
                Step::Indexed(_) | Step::RolledBack(_) | Step::Retry => {}
            }
        }
    }

    /// One step: detect and roll back a reorg, or index the next range, or report being caught up.
    pub async fn step(&mut self) -> Result<Step, FollowerError> {
        let head = self
            .retry("eth_blockNumber", || self.provider.get_block_number())
            .await;
        self.metrics.head_block.store(head, Ordering::Relaxed);
        let safe = head.saturating_sub(self.config.confirmations);
        let cursor = load_cursor(&self.db, &self.config.name).await?;
        if let Some(cursor) = cursor {
            self.metrics
                .indexed_block
                .store(cursor.number, Ordering::Relaxed);
            match self.block(cursor.number).await {
                Some(b) if b.hash == cursor.hash => {}
                _ => return self.roll_back(cursor, head).await.map(Step::RolledBack),
            }
        }
        let from = cursor.map_or(self.config.start_block, |c| c.number + 1);
        if from > safe {
            return Ok(Step::CaughtUp);
        }
        let to = safe.min(from.saturating_add(self.range - 1));
        let Some(to_block) = self.block(to).await else {
            // The node's head moved back (a reorg in progress); retry next poll.
            return Ok(Step::CaughtUp);
        };
        let started = Instant::now();
        let Some(logs) = self.logs(from, to).await else {
            return Ok(Step::Retry);
        };
        // A log of the last block with another hash means the chain changed between the two calls:
        // leave it to the next step, which sees a consistent view.
        if logs
            .iter()
            .any(|l| l.block_number == Some(to) && l.block_hash != Some(to_block.hash))
            || logs
                .iter()
                .any(|l| l.block_number.is_none_or(|n| n < from || n > to))
        {
            warn!(target: "indexer::follower", from, to, "logs and header disagree; retrying");
            return Ok(Step::Retry);
        }
        let elapsed = started.elapsed();
        let final_block = head.saturating_sub(self.config.reorg_window);
        let batch = LogBatch {
            from,
            to: to_block,
            logs: &logs,
            final_block,
            cursor: &self.config.name,
        };
        self.commit(&batch).await?;
        self.handler.committed(&batch);
        self.metrics.indexed_block.store(to, Ordering::Relaxed);
        self.metrics
            .events_total
            .fetch_add(logs.len() as u64, Ordering::Relaxed);
        debug!(target: "indexer::follower", from, to, logs = logs.len(), range = self.range,
            ms = elapsed.as_millis() as u64, "indexed range");
        if elapsed < Duration::from_secs(2) && logs.len() < self.config.target_logs {
            self.range = (self.range * 2).min(self.config.max_range.max(1));
        }
        Ok(Step::Indexed(to))
    }

    async fn commit(&self, batch: &LogBatch<'_>) -> Result<(), FollowerError> {
        let p = |n| self.db.backend.param(n);
        let mut tx = self.db.pool.begin().await?;
        self.handler
            .handle(&mut tx, batch)
            .await
            .map_err(FollowerError::Handler)?;
        // Remember the hashes of the range's end and of every block with logs, while they can still
        // be reorganised: the walk back to the common ancestor compares them with the chain.
        let mut hashes: Vec<(u64, B256)> = batch
            .logs
            .iter()
            .filter_map(|l| Some((l.block_number?, l.block_hash?)))
            .filter(|(n, _)| *n > batch.final_block)
            .collect();
        hashes.push((batch.to.number, batch.to.hash));
        hashes.dedup();
        let upsert = format!(
            "INSERT INTO follower_blocks (name, block_number, block_hash) VALUES ({}, {}, {})
             ON CONFLICT (name, block_number) DO UPDATE SET block_hash = excluded.block_hash",
            p(1),
            p(2),
            p(3)
        );
        for (number, hash) in hashes {
            sqlx::query(AssertSqlSafe(upsert.as_str()))
                .bind(batch.cursor)
                .bind(number as i64)
                .bind(hash.to_string())
                .execute(&mut *tx)
                .await?;
        }
        let prune = format!(
            "DELETE FROM follower_blocks WHERE name = {} AND block_number < {}",
            p(1),
            p(2)
        );
        sqlx::query(AssertSqlSafe(prune.as_str()))
            .bind(batch.cursor)
            .bind(batch.final_block.min(batch.to.number) as i64)
            .execute(&mut *tx)
            .await?;
        save_cursor(&mut tx, self.db.backend, batch.cursor, batch.to).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Walks back from the cursor to the newest stored block that is still canonical, undoes
    /// everything above it and moves the cursor there.
    async fn roll_back(&self, cursor: BlockRef, head: u64) -> Result<u64, FollowerError> {
        let p = |n| self.db.backend.param(n);
        let sql = format!(
            "SELECT block_number, block_hash FROM follower_blocks WHERE name = {} AND block_number <= {}
             ORDER BY block_number DESC",
            p(1),
            p(2)
        );
        let stored = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(&self.config.name)
            .bind(cursor.number as i64)
            .fetch_all(&self.db.pool)
            .await?;
        let mut ancestor = None;
        for row in stored {
            let number: i64 = row.try_get(0)?;
            let hash = parse_hash(&row.try_get::<String, _>(1)?)?;
            let number = number as u64;
            if number > head {
                continue;
            }
            if let Some(block) = self.block(number).await
                && block.hash == hash
            {
                ancestor = Some(block);
                break;
            }
        }
        let Some(ancestor) = ancestor else {
            return Err(FollowerError::ReorgTooDeep {
                cursor: cursor.number,
                window: self.config.reorg_window,
            });
        };
        let mut tx = self.db.pool.begin().await?;
        self.handler
            .rollback(&mut tx, ancestor.number)
            .await
            .map_err(FollowerError::Handler)?;
        let delete = format!(
            "DELETE FROM follower_blocks WHERE name = {} AND block_number > {}",
            p(1),
            p(2)
        );
        sqlx::query(AssertSqlSafe(delete.as_str()))
            .bind(&self.config.name)
            .bind(ancestor.number as i64)
            .execute(&mut *tx)
            .await?;
        save_cursor(&mut tx, self.db.backend, &self.config.name, ancestor).await?;
        tx.commit().await?;
        self.metrics.reorgs_total.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .indexed_block
            .store(ancestor.number, Ordering::Relaxed);
        info!(target: "indexer::follower", cursor = cursor.number, ancestor = ancestor.number,
            depth = cursor.number - ancestor.number, "reorg rolled back");
        Ok(ancestor.number)
    }

    /// A block header, retried on RPC failure; `None` when the node does not have it (yet).
    async fn block(&self, number: u64) -> Option<BlockRef> {
        let block = self
            .retry("eth_getBlockByNumber", || async {
                self.provider
                    .get_block_by_number(BlockNumberOrTag::Number(number))
                    .kind(BlockTransactionsKind::Hashes)
                    .await
            })
            .await?;
        Some(BlockRef {
            number: block.header.number,
            hash: block.header.hash,
            timestamp: block.header.timestamp,
        })
    }

    /// The logs of `from..=to`, or `None` after shrinking the range because the node refused it as
    /// too large. Other failures are retried with backoff.
    async fn logs(&mut self, from: u64, to: u64) -> Option<Vec<Log>> {
        let filter = Filter::new()
            .address(self.config.addresses.clone())
            .from_block(from)
            .to_block(to);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.provider.get_logs(&filter).await {
                Ok(mut logs) => {
                    logs.sort_by_key(|l| (l.block_number, l.log_index));
                    return Some(logs);
                }
                Err(e) => {
                    self.metrics
                        .rpc_errors_total
                        .fetch_add(1, Ordering::Relaxed);
                    if is_range_error(&e) && to > from {
                        self.range = (to - from).div_ceil(2).max(1);
                        warn!(target: "indexer::follower", from, to, range = self.range, error = %e,
                            "eth_getLogs range too large; shrinking");
                        return None;
                    }
                    warn!(target: "indexer::follower", from, to, error = %e, backoff_ms =
                        backoff.as_millis() as u64, "eth_getLogs failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Runs an RPC call until it succeeds, backing off exponentially (up to 30 s) between failures.
    async fn retry<T, F, Fut>(&self, what: &'static str, mut call: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TransportError>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            match call().await {
                Ok(v) => return v,
                Err(e) => {
                    self.metrics
                        .rpc_errors_total
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(target: "indexer::follower", call = what, error = %e,
                        backoff_ms = backoff.as_millis() as u64, "rpc call failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

async fn save_cursor(
    conn: &mut AnyConnection,
    backend: Backend,
    name: &str,
    block: BlockRef,
) -> Result<(), FollowerError> {
    let p = |n| backend.param(n);
    let sql = format!(
        "INSERT INTO follower_cursors (name, block_number, block_hash, block_timestamp)
         VALUES ({}, {}, {}, {})
         ON CONFLICT (name) DO UPDATE SET block_number = excluded.block_number,
             block_hash = excluded.block_hash, block_timestamp = excluded.block_timestamp",
        p(1),
        p(2),
        p(3),
        p(4)
    );
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(name)
        .bind(block.number as i64)
        .bind(block.hash.to_string())
        .bind(block.timestamp as i64)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether an `eth_getLogs` error means "ask for a smaller range": providers word it differently
/// (Alchemy, Infura, QuickNode, geth, erigon), so match the common phrases and codes.
fn is_range_error(e: &TransportError) -> bool {
    let text = e.to_string().to_lowercase();
    [
        "too many",
        "range",
        "limit",
        "exceed",
        "response size",
        "too large",
        "more than",
        "-32005",
        "timeout",
        "timed out",
    ]
    .iter()
    .any(|p| text.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::transports::RpcError;

    #[test]
    fn recognises_range_errors() {
        let e: TransportError = RpcError::local_usage_str("query returned more than 10000 results");
        assert!(is_range_error(&e));
        let e: TransportError = RpcError::local_usage_str("connection refused");
        assert!(!is_range_error(&e));
    }
}
