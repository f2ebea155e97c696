//! HTTPS ingress benchmark (not a test): requests per second and latency percentiles for a
//! small response through the node's Caddy ingress (a route made by the agent's
//! [`Ingress`]), beside the same requests sent to the upstream directly in plain HTTP.
//!
//! Everything runs on loopback in this process and one Caddy it starts (its own admin port,
//! HTTPS port and storage): a tokio server answering `ok` to every request stands in for the
//! guest. Clients keep their connections alive, as browsers do.
//!
//! Run: `cargo run --release -p decloud-node-agent --example ingress_bench [clients] [seconds]`
//! (defaults 16 clients, 10 seconds) with Debian's `caddy` installed.

use std::{
    net::{SocketAddr, SocketAddrV4, TcpListener as StdListener},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use decloud_node_agent::{Ingress, IngressConfig, IngressRule, IngressTls};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const HOST: &str = "bench.apps.test";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Answers `ok` to every request of every connection (requests without bodies).
async fn upstream(listener: TcpListener) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut filled = 0;
            loop {
                match socket.read(&mut buf[filled..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => filled += n,
                }
                while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                    if socket.write_all(RESPONSE).await.is_err() {
                        return;
                    }
                    buf.copy_within(end + 4..filled, 0);
                    filled -= end + 4;
                }
                if filled == buf.len() {
                    return;
                }
            }
        });
    }
}

struct Run {
    requests: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

async fn load(client: reqwest::Client, url: String, clients: usize, seconds: u64) -> Run {
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let sent = Instant::now();
                let response = client.get(&url).send().await.expect("request");
                assert!(response.status().is_success(), "{}", response.status());
                let body = response.bytes().await.expect("body");
                assert_eq!(&body[..], b"ok");
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Run {
        requests: latencies.len(),
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn print(name: &str, run: &Run) {
    println!(
        "{name}: {} requests in {:.1} s = {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        run.requests,
        run.elapsed.as_secs_f64(),
        run.requests as f64 / run.elapsed.as_secs_f64(),
        run.p50.as_secs_f64() * 1e3,
        run.p99.as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map_or(16, |a| a.parse().expect("clients"));
    let seconds: u64 = args.next().map_or(10, |a| a.parse().expect("seconds"));

    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let https_port = free_port();
    let config = json!({
        "admin": { "listen": admin },
        "storage": { "module": "file_system", "root": dir.path().join("storage") },
        "apps": { "pki": { "certificate_authorities": { "local": { "install_trust": false } } } },
    });
    let config_path = dir.path().join("caddy.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let mut caddy = Command::new("caddy")
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("caddy (apt-get install caddy)");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let SocketAddr::V4(upstream_addr) = listener.local_addr().unwrap() else {
        unreachable!("bound to an IPv4 address")
    };
    tokio::spawn(upstream(listener));

    let ingress = Ingress::new(
        IngressConfig {
            admin: admin.clone(),
            listen: format!("127.0.0.1:{https_port}"),
            tls: IngressTls::Internal,
            acme_email: None,
            acme_ca: None,
        },
        "bench",
    )
    .unwrap();
    let rule = IngressRule {
        host: HOST.into(),
        vm_id: "bench".into(),
        upstream: SocketAddrV4::new(*upstream_addr.ip(), upstream_addr.port()),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = ingress.reconcile(std::slice::from_ref(&rule)).await {
        assert!(
            Instant::now() < deadline,
            "caddy did not take the route: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let root = dir.path().join("storage/pki/authorities/local/root.crt");
    let https = loop {
        // The root certificate exists once Caddy issued the host's certificate.
        if let Ok(pem) = std::fs::read(&root) {
            let client = reqwest::Client::builder()
                .no_proxy()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], https_port)))
                .build()
                .unwrap();
            if client
                .get(format!("https://{HOST}:{https_port}/"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break client;
            }
        }
        assert!(Instant::now() < deadline, "no HTTPS answer through caddy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();

    println!("{clients} clients, {seconds} s each, keep-alive, response body 2 bytes");
    let direct = load(plain, format!("http://{upstream_addr}/"), clients, seconds).await;
    print("direct http to the upstream", &direct);
    let through = load(
        https,
        format!("https://{HOST}:{https_port}/"),
        clients,
        seconds,
    )
    .await;
    print("https through the ingress  ", &through);

    ingress.reconcile(&[]).await.unwrap();
    let _ = caddy.kill();
    let _ = caddy.wait();
}
