//! Console round-trip latency: a key pressed on the tenant's WebSocket until the guest's answer
//! comes back on it, through the whole path (tenant WebSocket → orchestrator → the agent's
//! outbound link → the agent → the VM's serial socket → the guest's shell, and back).
//!
//! ```text
//! cargo run -p decloud-orchestrator --example console_bench -- --rounds 200
//! ```
//!
//! Starts the orchestrator's router on a local socket, a node agent on the system libvirtd and a
//! VM running the busybox test guest (QEMU software emulation), attaches to its console as the
//! VM's tenant, then presses Enter `--rounds` times, each time waiting for the shell's next
//! prompt (`# `), and prints the distribution of the round trips. Needs libvirtd and virtlogd
//! running (scripts/test starts them).

#[path = "../tests/console_node/mod.rs"]
mod console_node;

use clap::Parser;
use console_node::ConsoleNode;
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

/// Console round-trip latency through the orchestrator and the node agent.
#[derive(Debug, Parser)]
struct Args {
    /// Round trips to measure (after 10 unmeasured ones).
    #[arg(long, default_value_t = 200)]
    rounds: usize,
}

const WARMUP: usize = 10;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let mut node = ConsoleNode::start("vm-console-bench").await;
    node.boot().await;
    node.connect().await;

    let mut request = format!("ws://{}/api/v1/vms/{}/console", node.addr, node.vm)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", node.alice_token)).unwrap(),
    );
    let (mut ws, _) = connect_async(request).await.expect("the console opens");

    let mut samples = Vec::with_capacity(args.rounds);
    for round in 0..WARMUP + args.rounds {
        let started = Instant::now();
        ws.send(Message::binary(b"\r".to_vec())).await.unwrap();
        let mut text = String::new();
        while !text.ends_with("# ") {
            match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                Ok(Some(Ok(Message::Binary(data)))) => {
                    text.push_str(&String::from_utf8_lossy(&data))
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("no prompt after Enter (round {round}): {other:?}; got {text:?}"),
            }
        }
        if round >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    ws.close(None).await.unwrap();
    node.shutdown().await;

    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "console round trip (Enter → prompt), {} rounds: min {:.2} ms, median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        ms(samples[0]),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(samples[samples.len() - 1]),
    );
}
