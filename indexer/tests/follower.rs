//! The chain follower against anvil with the real contracts deployed by the SDK's test system:
//! indexing, idempotent replays, resumption, and reorgs made with `anvil_reorg` that replace real
//! contract calls with other real contract calls, on SQLite and on PostgreSQL.

mod common;

use alloy::eips::BlockId;
use alloy::network::TransactionBuilder;
use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::TransactionRequest;
use alloy::rpc::types::anvil::{ReorgOptions, TransactionData};
use common::system::System;
use common::{Kind, TestDb, assert_events_match_chain, dump, follower};
use decloud_indexer::{ContractKind, Handler, LogBatch, load_cursor};
use sqlx::{AnyConnection, Row};

async fn indexes_then_resumes(kind: Kind) {
    let chain = System::start().await;
    chain.rounds(1, 1).await;
    let t = TestDb::new(kind).await;
    let mut f = follower(&chain, &t.db, "indexer");
    let head = chain.reader.get_block_number().await.unwrap();
    assert_eq!(f.sync_to_head().await.unwrap(), head);
    assert_events_match_chain(&chain, &t.db).await;
    let first = dump(&t.db).await;

    // More events after a restart (a new follower on the same cursor) continue where it stopped.
    chain.rounds(2, 1).await;
    let mut f = follower(&chain, &t.db, "indexer");
    f.sync_to_head().await.unwrap();
    assert_events_match_chain(&chain, &t.db).await;
    let second = dump(&t.db).await;
    assert_ne!(first, second);

    // A fresh index of the same chain is identical.
    let fresh = TestDb::new(kind).await;
    follower(&chain, &fresh.db, "indexer")
        .sync_to_head()
        .await
        .unwrap();
    assert_eq!(dump(&fresh.db).await, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_indexes_then_resumes() {
    indexes_then_resumes(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_indexes_then_resumes() {
    indexes_then_resumes(Kind::Postgres).await;
}

/// Replaces the last 64 blocks of real contract calls with other real contract calls and checks
/// that, once caught up, the database equals both a fresh index of the canonical chain and
/// `eth_getLogs`.
async fn reorg_of_64_blocks(kind: Kind) {
    const DEPTH: u64 = 64;
    let chain = System::start().await;
    let setup_head = chain.reader.get_block_number().await.unwrap();
    // More than 64 blocks of calls after the setup (15 per round): the reorg replaces only them,
    // updating rows that existed before it (nodes, accounts, leases, stakes, templates) and
    // removing rows it created.
    chain.rounds(1, 5).await;
    let head = chain.reader.get_block_number().await.unwrap();
    assert!(head - DEPTH > setup_head, "the reorg stays above the setup");
    let t = TestDb::new(kind).await;
    let mut f = follower(&chain, &t.db, "indexer");
    f.sync_to_head().await.unwrap();
    let before = dump(&t.db).await;

    // The replacement: rounds of other calls (other salts: other prices, amounts, nodes, leases,
    // templates, storage deals, anchors), valid on the state of the common ancestor, one
    // transaction per block.
    let ancestor = head - DEPTH;
    let mut sequence = chain.next_sequence(BlockId::number(ancestor)).await;
    let mut actions = Vec::new();
    let mut salt = 100;
    while actions.len() < DEPTH as usize {
        actions.extend(chain.round(salt, sequence));
        sequence += 5;
        salt += 1;
    }
    // The last round may be cut: its anchor then never comes, which leaves `sequence` unused.
    let pairs = actions
        .iter()
        .take(DEPTH as usize)
        .enumerate()
        .map(|(i, a)| {
            let tx = TransactionRequest::default()
                .with_from(chain.account(a.from))
                .with_to(a.to)
                .with_input(a.input.clone())
                .with_gas_limit(2_000_000);
            (TransactionData::JSON(tx), i as u64)
        })
        .collect();
    let old_hash = chain
        .reader
        .get_block_by_number(head.into())
        .await
        .unwrap()
        .unwrap()
        .header
        .hash;
    chain
        .reader
        .anvil_reorg(ReorgOptions {
            depth: DEPTH,
            tx_block_pairs: pairs,
        })
        .await
        .unwrap();
    let new_hash = chain
        .reader
        .get_block_by_number(head.into())
        .await
        .unwrap()
        .unwrap()
        .header
        .hash;
    assert_ne!(old_hash, new_hash, "anvil_reorg replaced the head");
    // Every replacement call succeeded: the new branch holds real state changes, not reverts.
    let mut replaced = 0;
    for block in ancestor + 1..=head {
        let receipts = chain
            .reader
            .get_block_receipts(block.into())
            .await
            .unwrap()
            .unwrap();
        for r in receipts {
            assert!(r.status(), "a replacement call reverted in block {block}");
            replaced += 1;
        }
    }
    assert_eq!(replaced, DEPTH);
    // The chain goes on after the reorg.
    chain.rounds(200, 1).await;

    f.sync_to_head().await.unwrap();
    assert_eq!(
        f.metrics()
            .reorgs_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let after = dump(&t.db).await;
    assert_ne!(before, after, "the reorg changed the indexed state");
    for table in [
        "nodes",
        "leases",
        "purchases",
        "deals",
        "deal_replicas",
        "anchors",
    ] {
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&t.db.pool)
            .await
            .unwrap()
            .get(0);
        assert!(n > 0, "{table} has rows after the reorg");
    }
    assert_events_match_chain(&chain, &t.db).await;
    let fresh = TestDb::new(kind).await;
    follower(&chain, &fresh.db, "indexer")
        .sync_to_head()
        .await
        .unwrap();
    assert_eq!(
        dump(&fresh.db).await,
        after,
        "reorged index differs from a fresh index"
    );
    let cursor = load_cursor(&t.db, "indexer").await.unwrap().unwrap();
    let canonical = chain
        .reader
        .get_block_by_number(cursor.number.into())
        .await
        .unwrap()
        .unwrap()
        .header
        .hash;
    assert_eq!(cursor.hash, canonical);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reorg_of_64_blocks() {
    reorg_of_64_blocks(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reorg_of_64_blocks() {
    reorg_of_64_blocks(Kind::Postgres).await;
}

/// A handler of another service: counts logs per block in its own table under its own cursor,
/// sharing the database with the indexer.
struct CountingHandler;

impl Handler for CountingHandler {
    async fn handle(
        &self,
        conn: &mut AnyConnection,
        batch: &LogBatch<'_>,
    ) -> Result<(), decloud_indexer::BoxError> {
        for log in batch.logs {
            sqlx::query("INSERT INTO seen (block_hash, log_index) VALUES ($1, $2)")
                .bind(log.block_hash.unwrap_or_default().to_string())
                .bind(log.log_index.unwrap_or_default() as i64)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn rollback(
        &self,
        _conn: &mut AnyConnection,
        _ancestor: u64,
    ) -> Result<(), decloud_indexer::BoxError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_share_a_database_under_their_own_cursors() {
    let chain = System::start().await;
    chain.rounds(1, 1).await;
    let t = TestDb::new(Kind::Postgres).await;
    sqlx::query("CREATE TABLE seen (block_hash TEXT, log_index BIGINT, PRIMARY KEY (block_hash, log_index))")
        .execute(&t.db.pool)
        .await
        .unwrap();
    follower(&chain, &t.db, "indexer")
        .sync_to_head()
        .await
        .unwrap();
    let mut config = chain.follower_config("orchestrator");
    config.addresses = vec![chain.address(ContractKind::LeaseEscrow)];
    let mut other =
        decloud_indexer::Follower::new(chain.reader.clone(), t.db.clone(), config, CountingHandler);
    other.sync_to_head().await.unwrap();
    let seen: i64 = sqlx::query("SELECT COUNT(*) FROM seen")
        .fetch_one(&t.db.pool)
        .await
        .unwrap()
        .get(0);
    // The other service sees every log of the escrow, OpenZeppelin's role events included, which
    // the indexer's own handler skips.
    let escrow_logs = chain
        .reader
        .get_logs(
            &alloy::rpc::types::Filter::new()
                .address(chain.address(ContractKind::LeaseEscrow))
                .from_block(chain.deploy_block),
        )
        .await
        .unwrap();
    let escrow_events: i64 =
        sqlx::query("SELECT COUNT(*) FROM events WHERE contract = 'LeaseEscrow'")
            .fetch_one(&t.db.pool)
            .await
            .unwrap()
            .get(0);
    assert!(escrow_events > 0);
    assert_eq!(seen, escrow_logs.len() as i64);
    assert!(seen > escrow_events, "role events reach the other handler");
    let a = load_cursor(&t.db, "indexer").await.unwrap().unwrap();
    let b = load_cursor(&t.db, "orchestrator").await.unwrap().unwrap();
    assert_eq!(a, b);
    assert_ne!(a.hash, B256::ZERO);
}
