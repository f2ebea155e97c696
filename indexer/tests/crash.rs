//! SIGKILL the `decloud-indexer` binary in the middle of a backfill of 12,000 events, start it
//! again, and check that no event or entity is missing or duplicated, on SQLite and PostgreSQL.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use common::{Chain, Kind, TestDb, assert_events_match_chain, dump, follower};
use decloud_indexer::{CURSOR, ContractKind, Database, load_cursor};
use sqlx::Row;

const EVENTS: u64 = 12_000;

fn config(chain: &Chain, url: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let mut text = format!(
        "database_url = \"{url}\"\nrpc_url = \"{}\"\nchain_id = 31337\nlisten = \"127.0.0.1:0\"\n\
         poll_interval_ms = 50\n# Small ranges: many commits, so the kill lands mid-backfill.\nmax_range = 1\n\n",
        chain.anvil.endpoint()
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

fn start(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_decloud-indexer"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

async fn event_count(db: &Database) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .map_or(0, |r| r.get(0))
}

async fn crash_mid_backfill(kind: Kind) {
    let chain = Chain::start().await;
    chain.anchors(0, EVENTS, 400).await;
    let head = chain.reader.get_block_number().await.unwrap();
    let t = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&chain, &t.url, dir.path());

    let mut child = start(&config);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = event_count(&t.db).await;
        if n >= 2_000 {
            break;
        }
        assert!(Instant::now() < deadline, "indexer made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // What is committed is whole: the events are exactly those of the blocks up to the cursor.
    let cursor = load_cursor(&t.db, CURSOR)
        .await
        .unwrap()
        .expect("a committed cursor");
    assert!(
        cursor.number < head,
        "killed after the backfill finished; nothing was tested"
    );
    let stored = event_count(&t.db).await;
    assert!(stored < EVENTS as i64);
    let in_range: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE block_number <= $1")
        .bind(cursor.number as i64)
        .fetch_one(&t.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_range, stored);
    let anchors: i64 = sqlx::query("SELECT COUNT(*) FROM anchors")
        .fetch_one(&t.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(anchors, stored);

    let mut child = start(&config);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if load_cursor(&t.db, CURSOR)
            .await
            .unwrap()
            .is_some_and(|c| c.number >= head)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "indexer did not catch up after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(event_count(&t.db).await, EVENTS as i64);
    assert_events_match_chain(&chain, &t.db).await;
    let fresh = TestDb::new(kind).await;
    follower(&chain, &fresh.db, CURSOR)
        .sync_to_head()
        .await
        .unwrap();
    assert_eq!(dump(&t.db).await, dump(&fresh.db).await);
    let _ = ContractKind::ALL;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_mid_backfill() {
    crash_mid_backfill(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_mid_backfill() {
    crash_mid_backfill(Kind::Postgres).await;
}
