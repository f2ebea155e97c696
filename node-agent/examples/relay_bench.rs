//! Relay benchmark (not a test): TCP throughput and request/response latency to a guest
//! through a relay (the agent's [`Relay`] and [`Tunnel`] over `wireguard-go`) beside the same
//! through a direct forward of the node, in one run; and HTTPS requests per second for a small
//! response through the relay's Caddy.
//!
//! Everything runs in network namespaces this program makes and removes: an "internet" bridge
//! with a client, a relay and a node on it, and a guest namespace behind the node. The node
//! forwards its public ports to the guest with iptables DNAT rules as the agent's forwards do;
//! the direct path is client → node → guest, the relayed one client → relay → tunnel → node →
//! guest. Servers in the guest: a sink that counts what it receives, an echo, and an HTTP
//! server answering `ok`.
//!
//! A third path, client → relay → node → guest through two plain user-space proxies (no
//! encryption, no tunnel, nothing of the agent), is the reference: what any user-space relay
//! at best carries on the same cores, since it copies every byte through two more processes
//! where the direct forward never leaves the kernel.
//!
//! Run as root with `wireguard-go`, `wg`, `iptables` and `caddy` installed:
//! `cargo run --release -p decloud-node-agent --example relay_bench [MiB] [round trips] [seconds]`
//! (defaults 512 MiB, 20000 round trips, 10 s of HTTPS).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use alloy::{primitives::B256, signers::local::PrivateKeySigner};
use decloud_node_agent::{IngressConfig, IngressTls, Relay, RelayConfig, Tunnel, TunnelKeys};
use decloud_sdk::{
    agent_protocol::PortProtocol,
    relay::{RelayAssignment, RelayForward, RelayRoute, RelayedNode, RelayedVm, TunnelBinding},
};

const RELAY: &str = "172.31.81.2";
const CLIENT: &str = "172.31.81.3";
const NODE: &str = "172.31.81.4";
const GUEST: &str = "10.81.0.2";
const HOST: &str = "bench.relay.test";
/// Guest ports: sink, echo, HTTP; the node forwards `node port = 30000 + guest port`, the
/// relay `relay port = 24000 + guest port % 1000`.
const GUEST_PORTS: [u16; 3] = [8080, 8082, 8081];
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";

fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn ns(namespace: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", namespace];
    all.extend(args);
    sh("ip", &all).unwrap_or_else(|e| panic!("{e}"));
}

struct Namespaces(Vec<String>);

impl Namespaces {
    fn name(&self, role: &str) -> String {
        format!("dcb{}-{role}", std::process::id() % 100_000)
    }

    fn new() -> Self {
        let mut this = Self(Vec::new());
        for role in ["inet", "client", "relay", "node", "guest"] {
            let name = this.name(role);
            sh("ip", &["netns", "add", &name]).unwrap();
            ns(&name, &["ip", "link", "set", "lo", "up"]);
            this.0.push(name);
        }
        let inet = this.name("inet");
        ns(&inet, &["ip", "link", "add", "br0", "type", "bridge"]);
        ns(&inet, &["ip", "link", "set", "br0", "up"]);
        for (role, address) in [("client", CLIENT), ("relay", RELAY), ("node", NODE)] {
            let name = this.name(role);
            let port = format!("p-{role}");
            sh(
                "ip",
                &[
                    "link", "add", "eth0", "netns", &name, "type", "veth", "peer", "name", &port,
                    "netns", &inet,
                ],
            )
            .unwrap();
            ns(&inet, &["ip", "link", "set", &port, "master", "br0"]);
            ns(&inet, &["ip", "link", "set", &port, "up"]);
            ns(
                &name,
                &["ip", "addr", "add", &format!("{address}/24"), "dev", "eth0"],
            );
            ns(&name, &["ip", "link", "set", "eth0", "up"]);
        }
        let (node, guest) = (this.name("node"), this.name("guest"));
        sh(
            "ip",
            &[
                "link", "add", "guest0", "netns", &node, "type", "veth", "peer", "name", "eth0",
                "netns", &guest,
            ],
        )
        .unwrap();
        ns(
            &node,
            &["ip", "addr", "add", "10.81.0.1/30", "dev", "guest0"],
        );
        ns(&node, &["ip", "link", "set", "guest0", "up"]);
        ns(
            &guest,
            &["ip", "addr", "add", &format!("{GUEST}/30"), "dev", "eth0"],
        );
        ns(&guest, &["ip", "link", "set", "eth0", "up"]);
        ns(
            &guest,
            &["ip", "route", "add", "default", "via", "10.81.0.1"],
        );
        ns(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for guest_port in GUEST_PORTS {
            let public = (30000 + guest_port).to_string();
            ns(
                &node,
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-p",
                    "tcp",
                    "-m",
                    "addrtype",
                    "--dst-type",
                    "LOCAL",
                    "--dport",
                    &public,
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &format!("{GUEST}:{guest_port}"),
                ],
            );
        }
        this
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = sh("ip", &["netns", "del", name]);
        }
    }
}

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

/// A thread inside a namespace with its own runtime.
struct NsThread(Option<mpsc::Sender<Job>>);

impl NsThread {
    fn new(namespace: &str) -> Self {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let path = format!("/var/run/netns/{namespace}");
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: setns(2) on a descriptor we own; it changes only this thread.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            while let Ok(job) = receiver.recv() {
                job(&runtime);
            }
        });
        Self(Some(jobs))
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
    ) -> T {
        let (done, result) = mpsc::channel();
        self.0
            .as_ref()
            .unwrap()
            .send(Box::new(move |runtime| {
                let _ = done.send(f(runtime));
            }))
            .unwrap();
        result.recv().unwrap()
    }
}

/// The guest's servers, on threads of its namespace.
fn serve_guest(guest: &NsThread) {
    guest.run(|_| {
        let sink = TcpListener::bind(("0.0.0.0", GUEST_PORTS[0])).unwrap();
        let echo = TcpListener::bind(("0.0.0.0", GUEST_PORTS[1])).unwrap();
        let http = TcpListener::bind(("0.0.0.0", GUEST_PORTS[2])).unwrap();
        std::thread::spawn(move || {
            for mut socket in sink.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 17];
                    let mut total: u64 = 0;
                    while let Ok(n) = socket.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                    let _ = socket.write_all(&total.to_be_bytes());
                });
            }
        });
        std::thread::spawn(move || {
            for mut socket in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = socket.set_nodelay(true);
                    let mut buf = [0u8; 64];
                    while socket.read_exact(&mut buf).is_ok() {
                        if socket.write_all(&buf).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        std::thread::spawn(move || {
            for mut socket in http.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 8192];
                    let mut filled = 0;
                    loop {
                        match socket.read(&mut buf[filled..]) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => filled += n,
                        }
                        while let Some(end) =
                            buf[..filled].windows(4).position(|w| w == b"\r\n\r\n")
                        {
                            if socket.write_all(RESPONSE).is_err() {
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
        });
    });
}

/// The node's forward port of a guest port.
fn node_port(guest_port: u16) -> u16 {
    30000 + guest_port
}

/// The relay's port of a guest port.
fn relay_port(guest_port: u16) -> u16 {
    24000 + guest_port % 1000
}

/// The reference path's ports: the relay's proxy listens on `25000 + guest port % 1000` and
/// connects to the node's, on `26000 + guest port % 1000`, which connects to the guest.
fn proxy_port(base: u16, guest_port: u16) -> u16 {
    base + guest_port % 1000
}

/// A plain user-space TCP proxy from `listen` to `upstream`, on threads of the calling
/// thread's namespace: each connection copied both ways by blocking reads and writes of
/// 128 KiB, as a stream relay without encryption would at best.
fn pass_through(listen: SocketAddr, upstream: SocketAddr) {
    let listener = TcpListener::bind(listen).unwrap();
    std::thread::spawn(move || {
        for downstream in listener.incoming().flatten() {
            let Ok(up) = TcpStream::connect(upstream) else {
                continue;
            };
            for socket in [&downstream, &up] {
                let _ = socket.set_nodelay(true);
            }
            let (down_reader, up_writer) =
                (downstream.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || copy_until_eof(down_reader, up_writer));
            std::thread::spawn(move || copy_until_eof(up, downstream));
        }
    });
}

fn copy_until_eof(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 1 << 17];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// MiB/s for sending `mib` MiB to the sink at `address`.
fn throughput(address: SocketAddr, mib: usize) -> f64 {
    let mut socket = TcpStream::connect(address).unwrap();
    let chunk = vec![0x5au8; 1 << 17];
    let start = Instant::now();
    for _ in 0..mib * 8 {
        socket.write_all(&chunk).unwrap();
    }
    socket.shutdown(std::net::Shutdown::Write).unwrap();
    let mut count = [0u8; 8];
    socket.read_exact(&mut count).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(u64::from_be_bytes(count), (mib as u64) << 20);
    mib as f64 / elapsed.as_secs_f64()
}

/// (p50, p99) of 64-byte round trips to the echo at `address`.
fn latency(address: SocketAddr, round_trips: usize) -> (Duration, Duration) {
    let mut socket = TcpStream::connect(address).unwrap();
    socket.set_nodelay(true).unwrap();
    let message = [7u8; 64];
    let mut answer = [0u8; 64];
    let mut samples = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let start = Instant::now();
        socket.write_all(&message).unwrap();
        socket.read_exact(&mut answer).unwrap();
        samples.push(start.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(512, |a| a.parse().expect("MiB"));
    let round_trips: usize = args
        .next()
        .map_or(20000, |a| a.parse().expect("round trips"));
    let seconds: u64 = args.next().map_or(10, |a| a.parse().expect("seconds"));

    let namespaces = Namespaces::new();
    let (client, relay_ns, node, guest) = (
        NsThread::new(&namespaces.name("client")),
        NsThread::new(&namespaces.name("relay")),
        NsThread::new(&namespaces.name("node")),
        NsThread::new(&namespaces.name("guest")),
    );
    serve_guest(&guest);

    // The relay's Caddy, in the relay's namespace.
    let dir = tempfile::tempdir().unwrap();
    let caddy_config = serde_json::json!({
        "admin": { "listen": "127.0.0.1:2019" },
        "storage": { "module": "file_system", "root": dir.path().join("storage") },
        "apps": { "pki": { "certificate_authorities": { "local": { "install_trust": false } } } },
    });
    let config_path = dir.path().join("caddy.json");
    std::fs::write(&config_path, caddy_config.to_string()).unwrap();
    let mut caddy = Command::new("ip")
        .args([
            "netns",
            "exec",
            &namespaces.name("relay"),
            "caddy",
            "run",
            "--config",
        ])
        .arg(&config_path)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("caddy (apt-get install caddy)");
    std::thread::sleep(Duration::from_secs(1));

    let relay_id = B256::repeat_byte(0x6b);
    let relay_dir = dir.path().join("relay");
    std::fs::create_dir_all(&relay_dir).unwrap();
    let relay = Arc::new(relay_ns.run(move |_| {
        Relay::start(
            RelayConfig {
                listen_port: 51821,
                public_address: RELAY.into(),
                tunnel_subnet: "10.97.81.0/24".into(),
                port_range: "24000-24999".into(),
                ingress: Some(IngressConfig {
                    admin: "127.0.0.1:2019".into(),
                    listen: ":443".into(),
                    tls: IngressTls::Internal,
                    acme_email: None,
                    acme_ca: None,
                }),
            },
            &decloud_node_agent::node_tag(&relay_id),
            &relay_dir,
        )
        .unwrap()
    }));

    // The node dials the relay; the relay publishes its forwards and the HTTP port's name.
    let node_key = PrivateKeySigner::random();
    let node_id = B256::repeat_byte(0x6c);
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let keys = TunnelKeys::load_or_create(&node_dir.join("tunnel.key")).unwrap();
    let binding = TunnelBinding::sign(&node_key, node_id, keys.public).unwrap();
    let assignment = RelayAssignment {
        relay_node_id: relay_id,
        endpoint: relay.endpoint(),
        relay_key: relay.public_key(),
        relay_address: relay.address(),
        node_address: "10.97.81.2".parse().unwrap(),
    };
    let tunnel = node.run(move |_| {
        Tunnel::join(&decloud_node_agent::node_tag(&node_id), &keys, assignment).unwrap()
    });
    let published = RelayedNode {
        node_id,
        node_key: node_key.address(),
        binding,
        tunnel_address: "10.97.81.2".parse().unwrap(),
        vms: vec![RelayedVm {
            vm_id: "bench".into(),
            forwards: GUEST_PORTS[..2]
                .iter()
                .map(|p| RelayForward {
                    protocol: PortProtocol::Tcp,
                    relay_port: relay_port(*p),
                    node_port: node_port(*p),
                })
                .collect(),
            routes: vec![RelayRoute {
                host: HOST.into(),
                node_port: node_port(GUEST_PORTS[2]),
            }],
        }],
    };
    relay_ns
        .run({
            let relay = relay.clone();
            move |runtime| runtime.block_on(relay.publish(published))
        })
        .unwrap();

    let direct = move |p: u16| SocketAddr::new(NODE.parse().unwrap(), node_port(p));
    let relayed = move |p: u16| SocketAddr::new(RELAY.parse().unwrap(), relay_port(p));
    let proxied = move |p: u16| SocketAddr::new(RELAY.parse().unwrap(), proxy_port(25000, p));
    for port in &GUEST_PORTS[..2] {
        let port = *port;
        node.run(move |_| {
            pass_through(
                SocketAddr::new(NODE.parse().unwrap(), proxy_port(26000, port)),
                SocketAddr::new(GUEST.parse().unwrap(), port),
            )
        });
        relay_ns.run(move |_| {
            pass_through(
                proxied(port),
                SocketAddr::new(NODE.parse().unwrap(), proxy_port(26000, port)),
            )
        });
    }
    // The tunnel's first handshake, before anything is measured.
    client.run(move |_| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&relayed(GUEST_PORTS[1]), Duration::from_secs(2)).is_err()
        {
            assert!(Instant::now() < deadline, "the relay does not answer");
        }
    });

    println!(
        "{mib} MiB one way per throughput run, {round_trips} round trips of 64 bytes, TCP_NODELAY"
    );
    for round in 1..=2 {
        let (d, r, p) = client.run(move |_| {
            (
                throughput(direct(GUEST_PORTS[0]), mib),
                throughput(relayed(GUEST_PORTS[0]), mib),
                throughput(proxied(GUEST_PORTS[0]), mib),
            )
        });
        println!(
            "round {round} throughput: direct {d:.0} MiB/s, relay {r:.0} MiB/s ({:.0}% of direct), \
             user-space pass-through {p:.0} MiB/s ({:.0}% of direct)",
            100.0 * r / d,
            100.0 * p / d
        );
        let ((d50, d99), (r50, r99), (p50, p99)) = client.run(move |_| {
            (
                latency(direct(GUEST_PORTS[1]), round_trips),
                latency(relayed(GUEST_PORTS[1]), round_trips),
                latency(proxied(GUEST_PORTS[1]), round_trips),
            )
        });
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "round {round} latency: direct p50 {:.3} ms p99 {:.3} ms, relay p50 {:.3} ms p99 {:.3} ms (p50 +{:.3} ms), \
             user-space pass-through p50 {:.3} ms p99 {:.3} ms",
            ms(d50),
            ms(d99),
            ms(r50),
            ms(r99),
            ms(r50) - ms(d50),
            ms(p50),
            ms(p99)
        );
    }

    // HTTPS by name through the relay's Caddy, one client after another on keep-alive.
    let root = dir.path().join("storage/pki/authorities/local/root.crt");
    let (requests, elapsed, p50, p99) = client.run(move |runtime| {
        runtime.block_on(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let https = loop {
                if let Ok(pem) = std::fs::read(&root) {
                    let client = reqwest::Client::builder()
                        .no_proxy()
                        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                        .resolve(HOST, SocketAddr::new(RELAY.parse().unwrap(), 443))
                        .build()
                        .unwrap();
                    if client
                        .get(format!("https://{HOST}/"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                    {
                        break client;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "no HTTPS answer through the relay"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let start = Instant::now();
            let until = start + Duration::from_secs(seconds);
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let https = https.clone();
                tasks.push(tokio::spawn(async move {
                    let mut samples = Vec::new();
                    while Instant::now() < until {
                        let sent = Instant::now();
                        let response = https.get(format!("https://{HOST}/")).send().await.unwrap();
                        assert!(response.status().is_success());
                        assert_eq!(&response.bytes().await.unwrap()[..], b"ok");
                        samples.push(sent.elapsed());
                    }
                    samples
                }));
            }
            let mut samples = Vec::new();
            for task in tasks {
                samples.extend(task.await.unwrap());
            }
            let elapsed = start.elapsed();
            samples.sort();
            let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
            (samples.len(), elapsed, at(0.5), at(0.99))
        })
    });
    println!(
        "https by name through the relay's caddy (8 clients, keep-alive, 2-byte body): {requests} requests in {:.1} s = {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    let traffic = relay_ns
        .run({
            let relay = relay.clone();
            move |_| relay.traffic()
        })
        .unwrap();
    for vm in traffic {
        println!(
            "relay counted for vm {}: {} bytes in, {} bytes out",
            vm.vm_id, vm.bytes_in, vm.bytes_out
        );
    }

    relay_ns
        .run({
            let relay = relay.clone();
            move |runtime| runtime.block_on(relay.shutdown())
        })
        .unwrap();
    drop(tunnel);
    drop(relay);
    let _ = caddy.kill();
    let _ = caddy.wait();
    drop(namespaces);
}
