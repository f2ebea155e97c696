//! Indexer benchmark (a command, not a test):
//!
//! ```text
//! cargo run --release -p decloud-indexer --example bench -- [EVENTS] [CLIENTS] [QUERIES]
//! ```
//!
//! On a fresh anvil with the real contracts deployed (and the tests' setup: nodes, leases, a
//! stake, an anchor), makes the real NodeRegistry emit EVENTS (default 100,000) `NodePricesSet`
//! events, 400 per transaction, through the PriceChurner test fixture (a contract that operates
//! one node and reprices it in a loop). Then, for SQLite and for PostgreSQL (a durable throwaway
//! cluster from indexer/scripts/postgres-test-cluster), measures the backfill rate of the
//! follower with the indexer's handler (raw events + entities, one transaction per range), and
//! the p50/p99 latency of a filtered, ordered GraphQL list query over HTTP under CLIENTS (default
//! 16) concurrent clients issuing QUERIES (default 4,000) queries in all.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use alloy::transports::http::reqwest;
use common::system::System;
use common::{Kind, TestDb, follower};
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

    assert!(events >= 22_000, "EVENTS must be at least 22,000");
    let chain = System::start().await;
    let started = Instant::now();
    chain.price_changes(events, 400).await;
    let head = chain.reader.get_block_number().await.unwrap();
    eprintln!(
        "generated {events} events in {} blocks in {:.1}s",
        head - chain.deploy_block,
        started.elapsed().as_secs_f64()
    );
    // Every log of the deployment, the setup and the price changes: what the index must hold.
    let expected = chain
        .reader
        .get_logs(
            &alloy::rpc::types::Filter::new()
                .address(chain.decoder().addresses())
                .from_block(chain.deploy_block)
                .to_block(head),
        )
        .await
        .unwrap()
        .iter()
        .filter(|l| chain.decoder().decode(l).is_some())
        .count() as u64;
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
        assert_eq!(stored as u64, expected);

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
                    // The churner's CPU prices run from 6,000 up, one per event; the setup's
                    // nodes stay below 20,000, so these windows hold churner prices only.
                    let from = 26_000 + ((c * 7919 + i * 104_729) as u64) % (events - 21_000).max(1);
                    let query = format!(
                        "{{ nodePrices(where: {{cpuPerHour_gte: \"{from}\", cpuPerHour_lt: \"{}\", requestedGpuPerHour: \"0\"}}, \
                         first: 100, orderBy: cpuPerHour, orderDirection: desc) {{ id node cpuPerHour }} }}",
                        from + 1_000
                    );
                    let started = Instant::now();
                    let r = http.post(&url).json(&json!({"query": query})).send().await.unwrap();
                    let body: serde_json::Value = r.json().await.unwrap();
                    latencies.push(started.elapsed());
                    assert_eq!(body["data"]["nodePrices"].as_array().map(Vec::len), Some(100), "{body}");
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
            "| {} | {expected} | {secs:.2} | {:.0} | {:.2} | {:.2} |",
            match kind {
                Kind::Sqlite => "SQLite",
                Kind::Postgres => "PostgreSQL",
            },
            expected as f64 / secs,
            percentile(&all, 0.5).as_secs_f64() * 1e3,
            percentile(&all, 0.99).as_secs_f64() * 1e3,
        );
    }
}
