//! Indexer benchmark (a command, not a test):
//!
//! ```text
//! cargo run --release -p decloud-indexer --example bench -- [EVENTS] [CLIENTS] [QUERIES]
//! ```
//!
//! Generates EVENTS (default 100,000) `BatchAnchored` logs on a fresh anvil (400 per transaction,
//! one transaction per block), then for SQLite and for PostgreSQL (a durable throwaway cluster
//! from indexer/scripts/postgres-test-cluster) measures the backfill rate of the follower with the
//! indexer's handler (raw events + anchor entities, one transaction per range), and the p50/p99
//! latency of a filtered, ordered GraphQL list query over HTTP under CLIENTS (default 16)
//! concurrent clients issuing QUERIES (default 4,000) queries in all.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use alloy::transports::http::reqwest;
use common::{Chain, Kind, TestDb, follower};
use decloud_indexer::graphql::ApiState;
use decloud_indexer::{IndexerHandler, Metrics};
use serde_json::json;
use sqlx::Row;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args.get(1).map_or(100_000, |s| s.parse().unwrap());
    let clients: usize = args.get(2).map_or(16, |s| s.parse().unwrap());
    let queries: usize = args.get(3).map_or(4_000, |s| s.parse().unwrap());

    // Blocks carry 400 events each; a 30M gas limit fits one such transaction per block.
    let chain = Chain::start_with(&["--gas-limit", "60000000"]).await;
    let started = Instant::now();
    chain.anchors(0, events, 400).await;
    let head = chain.reader.get_block_number().await.unwrap();
    eprintln!(
        "generated {events} events in {} blocks in {:.1}s",
        head - chain.deploy_block,
        started.elapsed().as_secs_f64()
    );
    if std::env::var("DECLOUD_TEST_POSTGRES_URL").is_err() {
        let out = std::process::Command::new(
            common::root().join("indexer/scripts/postgres-test-cluster"),
        )
        .args(["start", &std::process::id().to_string(), "durable"])
        .output()
        .unwrap();
        assert!(out.status.success());
        // SAFETY: set before any other thread reads the environment (the runtime's workers do not).
        unsafe {
            std::env::set_var(
                "DECLOUD_TEST_POSTGRES_URL",
                String::from_utf8(out.stdout).unwrap().trim(),
            );
        }
    }

    println!("| backend | events | backfill s | events/s | query p50 ms | query p99 ms |");
    println!("|---|---|---|---|---|---|");
    for kind in [Kind::Sqlite, Kind::Postgres] {
        let t = TestDb::new(kind).await;
        let mut f = follower(&chain, &t.db, "indexer");
        let started = Instant::now();
        f.sync_to_head().await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        let stored: i64 = sqlx::query("SELECT COUNT(*) FROM events")
            .fetch_one(&t.db.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored as u64, events);

        let handler = IndexerHandler::new(chain.decoder(), t.db.backend);
        let state = ApiState {
            db: t.db.clone(),
            cursor: "indexer".into(),
            metrics: Arc::new(Metrics::default()),
            notices: handler.notices(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = decloud_indexer::app(state).unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/graphql");
        let per_client = queries / clients;
        let mut tasks = Vec::new();
        for c in 0..clients {
            let http = http.clone();
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let from = ((c * 7919 + i * 104_729) as u64) % events.saturating_sub(1_000).max(1);
                    let query = format!(
                        "{{ anchors(where: {{batchId_gte: \"{from}\", batchId_lt: \"{}\", count: \"8\"}}, \
                         first: 100, orderBy: batchId, orderDirection: desc) {{ id root timestamp }} }}",
                        from + 1_000
                    );
                    let started = Instant::now();
                    let r = http.post(&url).json(&json!({"query": query})).send().await.unwrap();
                    let body: serde_json::Value = r.json().await.unwrap();
                    latencies.push(started.elapsed());
                    assert_eq!(body["data"]["anchors"].as_array().map(Vec::len), Some(100));
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        server.abort();
        println!(
            "| {} | {events} | {secs:.2} | {:.0} | {:.2} | {:.2} |",
            match kind {
                Kind::Sqlite => "SQLite",
                Kind::Postgres => "PostgreSQL",
            },
            events as f64 / secs,
            percentile(&all, 0.5).as_secs_f64() * 1e3,
            percentile(&all, 0.99).as_secs_f64() * 1e3,
        );
    }
}
