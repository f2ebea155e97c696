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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::{
    connect_async_with_config,
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
    // A VM id (`vm-<lease id>`) no test uses, so its libvirt domain collides with none.
    let mut node = ConsoleNode::start("vm-7102").await;
    node.boot().await;
    node.connect().await;

    // Baseline: the VM's console socket straight, as the agent sees it (no session attached).
    let socket = decloud_node_agent::console_socket_path(&node.agent, &node.vm);
    let (mut reader, mut writer) = tokio::net::UnixStream::connect(&socket)
        .await
        .unwrap()
        .into_split();
    let baseline = measure(
        args.rounds,
        async |data: &[u8]| {
            writer.write_all(data).await.unwrap();
        },
        async || {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), reader.read(&mut buf))
                .await
                .expect("the guest answers")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        },
    )
    .await;
    drop((reader, writer));

    let mut request = format!("ws://{}/api/v1/vms/{}/console", node.addr, node.vm)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", node.alice_token)).unwrap(),
    );
    // No Nagle on the tenant's side either, as `decloud vm console` does.
    let (ws, _) = connect_async_with_config(request, None, true)
        .await
        .expect("the console opens");
    let (mut sink, mut stream) = ws.split();
    let relayed = measure(
        args.rounds,
        async |data: &[u8]| {
            sink.send(Message::binary(data.to_vec())).await.unwrap();
        },
        async || loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                Ok(Some(Ok(Message::Binary(data)))) => {
                    return String::from_utf8_lossy(&data).into_owned();
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("the console ended: {other:?}"),
            }
        },
    )
    .await;
    let _ = sink.close().await;
    node.shutdown().await;

    report("VM console socket directly (baseline)", baseline);
    report("tenant WebSocket → orchestrator → agent link → VM", relayed);
}

/// Presses Enter `rounds` times (after [`WARMUP`] unmeasured ones), each time reading until the
/// shell's next prompt; returns the sorted round trips.
async fn measure(
    rounds: usize,
    mut send: impl AsyncFnMut(&[u8]),
    mut receive: impl AsyncFnMut() -> String,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..WARMUP + rounds {
        let started = Instant::now();
        send(b"\r").await;
        let mut text = String::new();
        // The shell's prompt, possibly followed by its cursor-position query (`ESC [6n`), which
        // may also arrive first, left over from the previous round.
        while !text.contains("# ") {
            text.push_str(&receive().await);
        }
        if round >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    samples.sort();
    samples
}

fn report(path: &str, samples: Vec<Duration>) {
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{path}: Enter → prompt, {} rounds: min {:.2} ms, median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        ms(samples[0]),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(samples[samples.len() - 1]),
    );
}
