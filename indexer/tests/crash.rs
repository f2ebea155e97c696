//! The `decloud-indexer` binary killed and stopped in the middle of a backfill of the real
//! contracts' events, on SQLite and PostgreSQL:
//!
//! - SIGKILL during a backfill of 12,000 events that the real NodeRegistry emits (through the
//!   PriceChurner fixture, a contract that operates a node), then a restart: no event or entity
//!   is missing or duplicated;
//! - SIGTERM during the backfill: the binary exits 0, the database holds exactly the committed
//!   ranges, and a restart continues to the head, new blocks included.

mod common;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use common::system::System;
use common::{Kind, TestDb, assert_events_match_chain, dump, follower};
use decloud_indexer::{BlockRef, CURSOR, Database, load_cursor};
use sqlx::Row;

/// Price changes emitted for the backfill, 400 per transaction (one block each).
const PRICE_CHANGES: u64 = 12_000;

fn config(chain: &System, url: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let mut text = format!(
        "database_url = \"{url}\"\nrpc_url = \"{}\"\nchain_id = 31337\nlisten = \"127.0.0.1:0\"\n\
         poll_interval_ms = 50\n# Small ranges: many commits, so the signal lands mid-backfill.\nmax_range = 1\n\n",
        chain.system.rpc_url()
    );
    for (kind, address) in &chain.contracts {
        text.push_str(&format!(
            "[contracts.{kind}]\naddress = \"{address}\"\nstart_block = {}\n",
            chain.deploy_block
        ));
    }
    let path = dir.join("indexer.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The running binary; killed if a failing test drops it, so no indexer outlives its test.
struct Indexer(Child);

impl Drop for Indexer {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start(config: &std::path::Path) -> Indexer {
    Indexer(
        Command::new(env!("CARGO_BIN_EXE_decloud-indexer"))
            .arg("--config")
            .arg(config)
            .env("DECLOUD_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Generous: a loaded 2-core machine runs these four tests, each with its own anvil, indexer and
/// database, side by side with other builds.
const PATIENCE: Duration = Duration::from_secs(240);

async fn count(db: &Database, sql: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(&db.pool)
        .await
        .map_or(0, |r| r.get(0))
}

async fn event_count(db: &Database) -> i64 {
    count(db, "SELECT COUNT(*) FROM events").await
}

/// Waits until the indexer has stored at least `n` events.
async fn wait_for_events(db: &Database, n: i64) {
    let deadline = Instant::now() + PATIENCE;
    while event_count(db).await < n {
        assert!(Instant::now() < deadline, "indexer made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the cursor reaches `head`.
async fn wait_for_cursor(db: &Database, head: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if load_cursor(db, CURSOR)
            .await
            .unwrap()
            .is_some_and(|c| c.number >= head)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "indexer did not catch up after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What is committed is whole: the stored events are exactly the chain's decodable logs up to the
/// cursor's block, and every price change among them made its node price row.
async fn assert_committed_prefix(chain: &System, db: &Database) -> BlockRef {
    let cursor = load_cursor(db, CURSOR)
        .await
        .unwrap()
        .expect("a committed cursor");
    let canonical = chain
        .reader
        .get_block_by_number(cursor.number.into())
        .await
        .unwrap()
        .unwrap()
        .header
        .hash;
    assert_eq!(cursor.hash, canonical, "the cursor names a canonical block");
    let logs = chain
        .reader
        .get_logs(
            &Filter::new()
                .address(chain.contracts.iter().map(|(_, a)| *a).collect::<Vec<_>>())
                .from_block(chain.deploy_block)
                .to_block(cursor.number),
        )
        .await
        .unwrap();
    let decoder = chain.decoder();
    let expected = logs.iter().filter(|l| decoder.decode(l).is_some()).count() as i64;
    assert_eq!(
        event_count(db).await,
        expected,
        "events differ from eth_getLogs up to the cursor"
    );
    let above: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE block_number > $1")
        .bind(cursor.number as i64)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(above, 0, "no event above the cursor");
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM node_prices").await,
        count(
            db,
            "SELECT COUNT(*) FROM events WHERE name = 'NodePricesSet'"
        )
        .await,
        "every stored price change has its entity"
    );
    cursor
}

async fn wait_exit(child: &mut Indexer) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the indexer did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn crash_mid_backfill(kind: Kind) {
    let chain = System::start().await;
    chain.price_changes(PRICE_CHANGES, 400).await;
    let head = chain.reader.get_block_number().await.unwrap();
    let t = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&chain, &t.url, dir.path());

    let mut child = start(&config);
    wait_for_events(&t.db, 2_000).await;
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();

    let cursor = assert_committed_prefix(&chain, &t.db).await;
    assert!(
        cursor.number < head,
        "killed after the backfill finished; nothing was tested"
    );
    assert!(event_count(&t.db).await < PRICE_CHANGES as i64);

    let child = start(&config);
    wait_for_cursor(&t.db, head).await;
    drop(child);

    assert!(event_count(&t.db).await > PRICE_CHANGES as i64);
    assert_events_match_chain(&chain, &t.db).await;
    let fresh = TestDb::new(kind).await;
    follower(&chain, &fresh.db, CURSOR)
        .sync_to_head()
        .await
        .unwrap();
    assert_eq!(dump(&t.db).await, dump(&fresh.db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_mid_backfill() {
    crash_mid_backfill(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_mid_backfill() {
    crash_mid_backfill(Kind::Postgres).await;
}

async fn sigterm_mid_backfill(kind: Kind) {
    let chain = System::start().await;
    chain.price_changes(PRICE_CHANGES, 400).await;
    let head = chain.reader.get_block_number().await.unwrap();
    let t = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&chain, &t.url, dir.path());

    let mut child = start(&config);
    wait_for_events(&t.db, 1_000).await;
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_exit(&mut child).await;
    assert_eq!(
        status.code(),
        Some(0),
        "graceful shutdown exits 0: {status}"
    );

    let cursor = assert_committed_prefix(&chain, &t.db).await;
    assert!(
        cursor.number < head,
        "stopped after the backfill finished; nothing was tested"
    );

    // The chain goes on while the indexer is down; the restart continues from the cursor.
    chain.rounds(1, 1).await;
    let head = chain.reader.get_block_number().await.unwrap();
    let mut child = start(&config);
    wait_for_cursor(&t.db, head).await;
    Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));

    assert_events_match_chain(&chain, &t.db).await;
    let fresh = TestDb::new(kind).await;
    follower(&chain, &fresh.db, CURSOR)
        .sync_to_head()
        .await
        .unwrap();
    assert_eq!(dump(&t.db).await, dump(&fresh.db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigterm_mid_backfill() {
    sigterm_mid_backfill(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_mid_backfill() {
    sigterm_mid_backfill(Kind::Postgres).await;
}
