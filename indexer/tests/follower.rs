//! The chain follower against anvil: indexing, idempotent replays, resumption, and reorgs made
//! with `anvil_reorg`, on SQLite and on PostgreSQL.

mod common;

use alloy::network::TransactionBuilder;
use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::TransactionRequest;
use alloy::rpc::types::anvil::{ReorgOptions, TransactionData};
use common::{Chain, Kind, TestDb, assert_events_match_chain, dump, follower, scenario_calls};
use decloud_indexer::{ContractKind, Handler, LogBatch, load_cursor};
use sqlx::{AnyConnection, Row};

async fn indexes_then_resumes(kind: Kind) {
    let chain = Chain::start().await;
    chain.scenario(1).await;
    let t = TestDb::new(kind).await;
    let mut f = follower(&chain, &t.db, "indexer");
    let head = chain.reader.get_block_number().await.unwrap();
    assert_eq!(f.sync_to_head().await.unwrap(), head);
    assert_events_match_chain(&chain, &t.db).await;
    let first = dump(&t.db).await;

    // More events after a restart (a new follower on the same cursor) continue where it stopped.
    chain.scenario(2).await;
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

/// Replaces the last 64 blocks with different transactions and checks that, once caught up, the
/// database equals both a fresh index of the canonical chain and `eth_getLogs`.
async fn reorg_of_64_blocks(kind: Kind) {
    let chain = Chain::start().await;
    chain.scenario(1).await;
    // 64+ blocks that the reorg replaces: entity updates of existing rows and new rows.
    for _ in 0..3 {
        chain.scenario(2).await;
    }
    let head = chain.reader.get_block_number().await.unwrap();
    let t = TestDb::new(kind).await;
    let mut f = follower(&chain, &t.db, "indexer");
    f.sync_to_head().await.unwrap();
    let before = dump(&t.db).await;

    // The replacement chain: other calls (scenario 3) in each of the 64 replaced blocks.
    let depth = 64u64;
    let calls = scenario_calls(&chain, 3);
    let mut pairs = Vec::new();
    for i in 0..depth {
        let (kind, input) = &calls[i as usize % calls.len()];
        let tx = TransactionRequest::default()
            .with_from(chain.from)
            .with_to(chain.address(*kind))
            .with_input(input.clone())
            .with_gas_limit(25_000_000);
        pairs.push((TransactionData::JSON(tx), i));
    }
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
            depth,
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

    f.sync_to_head().await.unwrap();
    assert_eq!(
        f.metrics()
            .reorgs_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let after = dump(&t.db).await;
    assert_ne!(before, after, "the reorg changed the indexed state");
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
    assert_eq!(cursor.hash, new_hash);
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
    let chain = Chain::start().await;
    chain.scenario(1).await;
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
    let escrow_events: i64 =
        sqlx::query("SELECT COUNT(*) FROM events WHERE contract = 'LeaseEscrow'")
            .fetch_one(&t.db.pool)
            .await
            .unwrap()
            .get(0);
    assert!(seen > 0);
    assert_eq!(seen, escrow_events);
    let a = load_cursor(&t.db, "indexer").await.unwrap().unwrap();
    let b = load_cursor(&t.db, "orchestrator").await.unwrap().unwrap();
    assert_eq!(a, b);
    assert_ne!(a.hash, B256::ZERO);
}
