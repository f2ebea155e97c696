//! Benchmarks of the orchestrator's hot paths.
//!
//! ```text
//! cargo run --release -p decloud-orchestrator --example bench -- [--nodes 10000] [--seconds 10] [--database-url URL]
//! ```
//!
//! - scheduler: decisions per second over `--nodes` nodes, each decision scanning every node;
//! - heartbeats: heartbeats per second recorded in the store (SQLite file by default), sent
//!   by `--concurrency` concurrent writers for `--nodes` distinct nodes, with latency
//!   percentiles. This measures the store path a heartbeat takes, not the WebSocket link.

use clap::Parser;
use decloud_orchestrator::{
    Store,
    scheduler::{self, Candidate, Prices, QualityTier, Request, Usage},
    store::{NodeRecord, NodeStatus},
};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

#[derive(Debug, Parser)]
struct Args {
    /// Nodes in the scheduler's view and in the store.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent heartbeat writers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Store URL; a SQLite file in a temp dir when absent.
    #[arg(long)]
    database_url: Option<String>,
}

/// A small deterministic generator, so every run benchmarks the same nodes.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn bench_scheduler(nodes: usize, seconds: u64) {
    let mut rng = Lcg(42);
    let regions = ["eu-west", "eu-central", "us-east", "us-west", "ap-south"];
    let candidates: Vec<Candidate> = (0..nodes)
        .map(|i| {
            let vcpus = 4 + rng.next(60);
            Candidate {
                node_id: format!("0x{i:064x}"),
                region: regions[rng.next(5) as usize].into(),
                active: rng.next(20) != 0,
                online: rng.next(10) != 0,
                vcpus,
                compute_points: vcpus * (80 + rng.next(40)),
                memory_gib: 16 + rng.next(240),
                disk_gib: 200 + rng.next(2000),
                gpus: if rng.next(10) == 0 {
                    1 + rng.next(4)
                } else {
                    0
                },
                used: Usage {
                    compute_units: rng.next(vcpus * 6_000),
                    memory_gib: rng.next(16),
                    disk_gib: rng.next(200),
                    gpus: 0,
                },
                prices: Prices {
                    cpu_per_hour: 5_000 + rng.next(20_000),
                    memory_gib_per_hour: 1_000 + rng.next(4_000),
                    storage_gib_per_hour: 50 + rng.next(200),
                    gpu_per_hour: 100_000,
                },
                uptime_bps: Some(9_000 + rng.next(1_001) as u32),
            }
        })
        .collect();
    let tiers = [
        QualityTier::Dedicated,
        QualityTier::Standard,
        QualityTier::Balanced,
        QualityTier::Burstable,
    ];
    let mut latencies = Vec::new();
    let mut placed = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        let request = Request {
            vcpus: 1 + rng.next(16),
            memory_gib: 1 + rng.next(64),
            disk_gib: 10 + rng.next(500),
            gpus: 0,
            tier: tiers[rng.next(4) as usize],
            region: (rng.next(2) == 0).then(|| regions[rng.next(5) as usize].to_string()),
            max_price_per_hour: None,
            node_id: None,
        };
        let t = Instant::now();
        if scheduler::schedule(&candidates, &request).is_ok() {
            placed += 1;
        }
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "scheduler: {nodes} nodes, {} decisions in {elapsed:.1} s = {:.0} decisions/s ({placed} placed), p50 {:?}, p99 {:?}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
}

async fn bench_heartbeats(args: &Args) -> eyre::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("bench.db").display()));
    let store = Store::connect(&url).await?;
    for i in 0..args.nodes {
        store
            .upsert_node(&NodeRecord {
                node_id: alloy::primitives::B256::from(alloy::primitives::U256::from(i)).into(),
                operator: format!("0x{:040x}", i % 100),
                node_key: format!("0x{i:040x}"),
                status: NodeStatus::Active,
                region: "eu-west".into(),
                endpoint: String::new(),
                metadata_cid: String::new(),
                tags: Vec::new(),
                vcpus: 16,
                memory_gib: 64,
                disk_gib: 1000,
                gpus: 0,
                bandwidth_mbps: 1000,
                compute_points: 1_600,
                prices: Prices::default(),
                registered_at: 0,
                updated_at: 0,
            })
            .await?;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let t0 = decloud_orchestrator::clock::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let store = store.clone();
        let next = next.clone();
        let nodes = args.nodes;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Node k % nodes, in round k / nodes: one heartbeat every 15 s of simulated time.
                let at = t0 + 15 * (k / nodes) as i64;
                let t = Instant::now();
                store
                    .record_heartbeat(
                        alloy::primitives::B256::from(alloy::primitives::U256::from(k % nodes))
                            .into(),
                        at,
                    )
                    .await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, decloud_orchestrator::StoreError>(latencies)
        }));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let backend = if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    println!(
        "heartbeats ({backend}): {} nodes, {} writers, {} heartbeats in {elapsed:.1} s = {:.0}/s, p50 {:?}, p99 {:?}",
        args.nodes,
        args.concurrency,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    store.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> eyre::Result<()> {
    let args = Args::parse();
    bench_scheduler(args.nodes, args.seconds);
    bench_heartbeats(&args).await
}
