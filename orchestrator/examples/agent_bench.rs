//! Heartbeats from many simulated node agents against the real server binary.
//!
//! ```text
//! cargo build --release -p decloud-orchestrator --bins --examples
//! target/release/examples/agent_bench --agents 10000 --seconds 60
//! ```
//!
//! Registers `--agents` nodes (each with its own key) in a fresh SQLite database, starts
//! `decloud-orchestrator` on it in another process (so each side has its own file-descriptor
//! budget), opens one WebSocket per agent, authenticates each with its node key, then sends a
//! heartbeat every 15 s per agent, with start times spread over the first interval. The rate
//! and the server-side latency (arrival to commit) come from the server's own `/metrics`.

use alloy::{
    primitives::{Address, B256},
    signers::local::PrivateKeySigner,
};
use clap::Parser;
use decloud_orchestrator::{
    Store,
    scheduler::Prices,
    store::{NodeRecord, NodeStatus},
};
use decloud_sdk::agent_protocol::{
    self as proto, AgentMessage, Capacity, Heartbeat, Hello, NodeResources, PROTOCOL_VERSION,
    ServerMessage,
};
use futures_util::{SinkExt, StreamExt};
use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::{connect_async, tungstenite::Message};

#[derive(Debug, Parser)]
struct Args {
    /// Simulated agents (one WebSocket each).
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Seconds of steady heartbeating measured after every agent is connected.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The server binary; by default the one next to this example's directory.
    #[arg(long)]
    binary: Option<std::path::PathBuf>,
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// `(heartbeats, latency buckets (le, cumulative count))` from the server's metrics.
fn heartbeat_metrics(port: u16) -> (u64, Vec<(f64, u64)>) {
    let text = http_get(port, "/metrics").expect("metrics");
    let mut total = 0;
    let mut buckets = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("decloud_agent_heartbeats_total ") {
            total = v.parse().unwrap();
        } else if let Some(rest) = line.strip_prefix("decloud_agent_heartbeat_seconds_bucket{le=\"")
        {
            let (le, n) = rest.split_once("\"} ").unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            buckets.push((le, n.parse().unwrap()));
        }
    }
    (total, buckets)
}

fn key(i: usize) -> PrivateKeySigner {
    let mut bytes = [0u8; 32];
    bytes[24..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    PrivateKeySigner::from_bytes(&B256::from(bytes)).unwrap()
}

fn node_id(i: usize) -> B256 {
    proto::node_id(
        proto::machine_id(&format!("bench-{i}")),
        Address::repeat_byte(1),
    )
}

fn heartbeat(seq: u64) -> String {
    AgentMessage::Heartbeat(Box::new(Heartbeat {
        seq,
        sent_at: decloud_orchestrator::clock::now() as u64,
        ready: true,
        public_address: None,
        ingress: None,
        resources: NodeResources {
            arch: "x86_64".into(),
            cpu_model: "bench".into(),
            cpu_cores: 16,
            memory_mib: 64 * 1024,
            disks: Vec::new(),
            vm_storage_free_bytes: 1 << 40,
            gpus: Vec::new(),
            compute_points: 1_600,
        },
        free: Capacity {
            millicores: 16_000,
            memory_mib: 64 * 1024,
            disk_bytes: 1 << 40,
        },
        vms: Vec::new(),
        events: Vec::new(),
        storage: None,
        relay: None,
        tunnel: None,
    }))
    .to_json()
}

async fn agent(
    port: u16,
    i: usize,
    connecting: Arc<Semaphore>,
    connected: Arc<Semaphore>,
    mut start: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
) {
    let signer = key(i);
    let node = node_id(i);
    let permit = connecting.acquire_owned().await.unwrap();
    let (mut ws, _) = connect_async(format!("ws://127.0.0.1:{port}/api/v1/agent/ws"))
        .await
        .expect("connect");
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        node_id: node,
        address: signer.address(),
        agent_version: "bench".into(),
    };
    ws.send(Message::Text(AgentMessage::Hello(hello).to_json().into()))
        .await
        .unwrap();
    let challenge = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match ServerMessage::from_json(t.as_str()) {
                Ok(ServerMessage::Challenge(c)) => break c,
                other => panic!("agent {i}: expected a challenge, got {other:?}"),
            },
            Some(Ok(_)) => continue,
            other => panic!("agent {i}: connection lost during the handshake: {other:?}"),
        }
    };
    let auth = proto::sign_challenge(&signer, node, &challenge).unwrap();
    ws.send(Message::Text(AgentMessage::Auth(auth).to_json().into()))
        .await
        .unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(t)))
            if matches!(
                ServerMessage::from_json(t.as_str()),
                Ok(ServerMessage::Welcome(_))
            ) => {}
        other => panic!("agent {i} not welcomed: {other:?}"),
    }
    drop(permit);
    connected.add_permits(1);
    start.wait_for(|go| *go).await.unwrap();
    // Spread the agents over one interval, as agents started at different times are.
    tokio::time::sleep(Duration::from_millis((i as u64 * 1_000_003) % 15_000)).await;
    let mut tick = tokio::time::interval(Duration::from_secs(proto::HEARTBEAT_INTERVAL_SECS));
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = tick.tick() => {
                seq += 1;
                ws.send(Message::Text(heartbeat(seq).into())).await.unwrap_or_else(|e| panic!("agent {i}: {e}"));
            }
            // Answer pings and notice a server that went away.
            frame = ws.next() => if frame.is_none() { panic!("agent {i}: server closed the connection") },
        }
    }
    let _ = ws.close(None).await;
}

fn p99(before: &[(f64, u64)], after: &[(f64, u64)]) -> String {
    let deltas: Vec<(f64, u64)> = after
        .iter()
        .zip(before)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    let total = deltas.last().map(|d| d.1).unwrap_or(0);
    let target = (total as f64 * 0.99).ceil() as u64;
    match deltas.iter().find(|(_, n)| *n >= target) {
        Some((le, _)) if le.is_finite() => format!("<= {} ms", le * 1000.0),
        _ => "> 1 s".into(),
    }
}

#[tokio::main]
async fn main() -> eyre::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite:{}", dir.path().join("bench.db").display());
    let store = Store::connect(&db).await?;
    for i in 0..args.agents {
        store
            .upsert_node(&NodeRecord {
                node_id: node_id(i).into(),
                operator: format!("{:#x}", Address::repeat_byte(1)),
                node_key: format!("{:#x}", key(i).address()),
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
    store.close().await;

    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .and_then(|p| p.parent())
            .unwrap()
            .join("decloud-orchestrator"),
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = Command::new(&binary)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("DECLOUD_ORCHESTRATOR_DATABASE_URL", &db)
        .env("DECLOUD_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    while http_get(port, "/api/v1/health").is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let connecting = Arc::new(Semaphore::new(256));
    let connected = Arc::new(Semaphore::new(0));
    let (go, start) = watch::channel(false);
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.agents {
        tasks.push(tokio::spawn(agent(
            port,
            i,
            connecting.clone(),
            connected.clone(),
            start.clone(),
            stop.clone(),
        )));
    }
    let _all = connected.acquire_many(args.agents as u32).await?;
    println!(
        "{} agents connected and authenticated in {:.1} s",
        args.agents,
        began.elapsed().as_secs_f64()
    );
    go.send(true)?;
    // One interval of warm-up so every agent is in its steady rhythm.
    tokio::time::sleep(Duration::from_secs(proto::HEARTBEAT_INTERVAL_SECS)).await;
    let (count0, buckets0) = heartbeat_metrics(port);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (count1, buckets1) = heartbeat_metrics(port);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    println!(
        "heartbeats: {} agents, {} heartbeats booked in {elapsed:.1} s = {:.0}/s sustained, p99 arrival-to-commit {}",
        args.agents,
        count1 - count0,
        (count1 - count0) as f64 / elapsed,
        p99(&buckets0, &buckets1)
    );
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()?;
    server.wait()?;
    for t in tasks {
        t.abort();
    }
    Ok(())
}
