//! Relays end to end, on real parts: the orchestrator binary following a real anvil with the
//! whole system deployed, three node agent processes, network namespaces standing in for the
//! internet, `wireguard-go` tunnels, iptables, a real Caddy on each relay and a real QEMU guest
//! (the busybox test guest: `httpd` on port 80, dropbear's SSH on port 22).
//!
//! ```text
//!  client  172.29.81.3 ─┐
//!  relay A 172.29.81.2 ─┼─ bridge (namespace "internet")
//!  relay B 172.29.81.5 ─┤
//!  NAT     172.29.81.4 ─┘  └─ 172.29.82.1 ── 172.29.82.2 node (this host) ── libvirt NAT ── guest
//!  relay A 172.29.83.2 ── 172.29.83.1 host   (the orchestrator's side: relays' agent links)
//!  relay B 172.29.83.6 ── 172.29.83.5 host
//! ```
//!
//! The node behind the NAT accepts no inbound connection and says so (`behind_nat = true`); the
//! orchestrator assigns it a relay, publishes its VM there and gives the relay's address and
//! ports in `GET /vms/{id}`. The client reaches the VM at that endpoint, over HTTPS by its
//! ingress name and over its forwarded TCP port. Then the assigned relay is stopped (its agent,
//! its `wireguard-go` and its Caddy killed): within a minute the API gives the other relay and
//! the client reaches the VM there. The relay's byte counts show up in the API.
//!
//! Needs root, libvirtd, caddy, wireguard-go and the node agent binary beside this test's
//! (`cargo build -p decloud-node-agent`; `cargo test --workspace` builds it). Everything
//! host-global is named after the process id and removed when the test ends, also on failure.

#[path = "../../node-agent/tests/common/netns.rs"]
#[allow(dead_code, unreachable_pub)]
mod netns;

use alloy::{
    primitives::{B256, U256},
    signers::{Signer, local::PrivateKeySigner},
    transports::http::reqwest,
};
use decloud_node_agent::{Config as AgentConfig, ConfigLayer, Identity};
use decloud_sdk::{
    USDC,
    bindings::{
        LeaseEscrow, MockUSDC, NodeRegistry, lease_escrow::ILeaseEscrow,
        node_registry::INodeRegistry,
    },
    relay::RELAY_FLAG,
    testing::TestSystem,
    tx,
    types::{Architecture, BandwidthTier, QualityTier},
};
use netns::{NsCaddy, in_ns, must, sh};
use serde_json::{Value, json};
use std::{
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Generous bound for things that take a heartbeat or two on a busy machine.
const TIMEOUT: Duration = Duration::from_secs(120);
/// A guest boot under software emulation on a busy two-core machine.
const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// What the issue asks of failover: the VM is reached again within a minute.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
const DOMAIN: &str = "relayed.decloud.test";
const IMAGE: &str = "test-guest";
const CLIENT: &str = "172.29.81.3";
const NAT: &str = "172.29.81.4";
const WG_PORT: u16 = 51820;

/// One relay of the topology.
struct RelaySite {
    name: &'static str,
    address: &'static str,
    /// The host's end of the relay's link to the orchestrator.
    host_side: &'static str,
    relay_side: &'static str,
    tunnel_subnet: &'static str,
    ports: &'static str,
}

const RELAYS: [RelaySite; 2] = [
    RelaySite {
        name: "a",
        address: "172.29.81.2",
        host_side: "172.29.83.1",
        relay_side: "172.29.83.2",
        tunnel_subnet: "10.96.81.0/24",
        ports: "24100-24199",
    },
    RelaySite {
        name: "b",
        address: "172.29.81.5",
        host_side: "172.29.83.5",
        relay_side: "172.29.83.6",
        tunnel_subnet: "10.96.82.0/24",
        ports: "24200-24299",
    },
];

/// The namespaces, links and routes of the topology. When dropped, every process left in its
/// namespaces (a relay's `wireguard-go`, Caddy) is killed and everything is removed.
struct Topology {
    internet: String,
    client: String,
    nat: String,
    relays: Vec<String>,
    host_link: String,
    control_links: Vec<String>,
}

impl Topology {
    fn new(unique: &str) -> Self {
        let this = Self {
            internet: format!("dcfi-{unique}"),
            client: format!("dcfc-{unique}"),
            nat: format!("dcfn-{unique}"),
            relays: RELAYS
                .iter()
                .map(|r| format!("dcf{}-{unique}", r.name))
                .collect(),
            host_link: format!("dcfh-{unique}"),
            control_links: RELAYS
                .iter()
                .map(|r| format!("dcfk{}-{unique}", r.name))
                .collect(),
        };
        this.remove();
        let mut all = vec![&this.internet, &this.client, &this.nat];
        all.extend(this.relays.iter());
        for ns in all {
            must("ip", &["netns", "add", ns]);
            in_ns(ns, &["ip", "link", "set", "lo", "up"]).unwrap();
        }
        in_ns(
            &this.internet,
            &["ip", "link", "add", "br0", "type", "bridge"],
        )
        .unwrap();
        in_ns(&this.internet, &["ip", "link", "set", "br0", "up"]).unwrap();
        let mut members = vec![
            (this.client.clone(), CLIENT, "p-client".to_string()),
            (this.nat.clone(), NAT, "p-nat".to_string()),
        ];
        for (ns, site) in this.relays.iter().zip(&RELAYS) {
            members.push((ns.clone(), site.address, format!("p-relay-{}", site.name)));
        }
        for (ns, address, port) in &members {
            must(
                "ip",
                &[
                    "link",
                    "add",
                    "eth0",
                    "netns",
                    ns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    port,
                    "netns",
                    &this.internet,
                ],
            );
            in_ns(
                &this.internet,
                &["ip", "link", "set", port, "master", "br0"],
            )
            .unwrap();
            in_ns(&this.internet, &["ip", "link", "set", port, "up"]).unwrap();
            in_ns(
                ns,
                &["ip", "addr", "add", &format!("{address}/24"), "dev", "eth0"],
            )
            .unwrap();
            in_ns(ns, &["ip", "link", "set", "eth0", "up"]).unwrap();
        }
        // The relays' links to the orchestrator on this host (their agents dial it there).
        for ((ns, site), link) in this.relays.iter().zip(&RELAYS).zip(&this.control_links) {
            must(
                "ip",
                &[
                    "link", "add", link, "type", "veth", "peer", "name", "ctl", "netns", ns,
                ],
            );
            must(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{}/30", site.host_side),
                    "dev",
                    link,
                ],
            );
            must("ip", &["link", "set", link, "up"]);
            in_ns(
                ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/30", site.relay_side),
                    "dev",
                    "ctl",
                ],
            )
            .unwrap();
            in_ns(ns, &["ip", "link", "set", "ctl", "up"]).unwrap();
        }
        // The node (this host) reaches the internet only through the NAT namespace.
        must(
            "ip",
            &[
                "link",
                "add",
                &this.host_link,
                "type",
                "veth",
                "peer",
                "name",
                "inside",
                "netns",
                &this.nat,
            ],
        );
        must(
            "ip",
            &["addr", "add", "172.29.82.2/30", "dev", &this.host_link],
        );
        must("ip", &["link", "set", &this.host_link, "up"]);
        must(
            "ip",
            &["route", "add", "172.29.81.0/24", "via", "172.29.82.1"],
        );
        for step in [
            vec!["ip", "addr", "add", "172.29.82.1/30", "dev", "inside"],
            vec!["ip", "link", "set", "inside", "up"],
            vec!["sysctl", "-qw", "net.ipv4.ip_forward=1"],
            vec![
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "eth0",
                "-j",
                "MASQUERADE",
            ],
            vec!["iptables", "-P", "FORWARD", "DROP"],
            vec![
                "iptables", "-A", "FORWARD", "-i", "inside", "-o", "eth0", "-j", "ACCEPT",
            ],
            vec![
                "iptables",
                "-A",
                "FORWARD",
                "-i",
                "eth0",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
            vec!["iptables", "-P", "INPUT", "DROP"],
            vec![
                "iptables",
                "-A",
                "INPUT",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
            vec!["iptables", "-A", "INPUT", "-i", "inside", "-j", "ACCEPT"],
        ] {
            in_ns(&this.nat, &step).unwrap();
        }
        this
    }

    /// Kills every process in a namespace (they are this test's: agents, `wireguard-go`,
    /// Caddy started inside it).
    fn kill_all_in(ns: &str) {
        if let Ok(pids) = sh("ip", &["netns", "pids", ns]) {
            for pid in pids.split_whitespace() {
                let _ = sh("kill", &["-KILL", pid]);
            }
        }
    }

    fn remove(&self) {
        let _ = sh(
            "ip",
            &["route", "del", "172.29.81.0/24", "via", "172.29.82.1"],
        );
        let _ = sh("ip", &["link", "del", &self.host_link]);
        for link in &self.control_links {
            let _ = sh("ip", &["link", "del", link]);
        }
        let mut all = vec![&self.internet, &self.client, &self.nat];
        all.extend(self.relays.iter());
        for ns in all {
            Self::kill_all_in(ns);
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }

    /// `curl` from the client: (HTTP status, body), or curl's error.
    fn client_curl(&self, args: &[&str]) -> Result<(u16, String), String> {
        let mut all = vec!["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}"];
        all.extend(args);
        let text = in_ns(&self.client, &all)?;
        let (body, status) = text.rsplit_once('\n').ok_or("no status")?;
        Ok((
            status.trim().parse().map_err(|_| "bad status")?,
            body.to_owned(),
        ))
    }

    /// The first bytes a TCP server at `address:port` sends the client (an SSH banner).
    fn client_banner(&self, address: &str, port: u16) -> Result<String, String> {
        in_ns(
            &self.client,
            &[
                "timeout",
                "5",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{address}/{port}; head -c 16 <&3"),
            ],
        )
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A process killed (SIGKILL) when dropped unless it already ended.
struct Process(Child);

impl Process {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}

/// The node agent binary: beside this test binary's directory (`target/<profile>/`).
fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("decloud-node-agent");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p decloud-node-agent`",
        path.display()
    );
    path
}

/// Starts the agent with `config`, inside `namespace` when given; its log goes to `log`.
fn start_agent(namespace: Option<&str>, config: &Path, log: &Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    let mut command = match namespace {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(agent_binary());
            c
        }
        None => Command::new(agent_binary()),
    };
    Process(
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("DECLOUD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// Removes the NAT'd node's VMs, forwards and network from this host, also on failure.
struct HostCleanup {
    node_id: B256,
    network: String,
}

impl Drop for HostCleanup {
    fn drop(&mut self) {
        if let Ok(libvirt) = decloud_node_agent::Hypervisor::open("qemu:///system") {
            for domain in libvirt.owned_domains(self.node_id).unwrap_or_default() {
                let _ = libvirt.remove(&domain.name);
            }
            let _ = libvirt.remove_network(&self.network);
        }
        let tag = decloud_node_agent::node_tag(&self.node_id);
        let firewall = decloud_node_agent::Firewall::new(tag.clone());
        for rule in firewall.rules().unwrap_or_default() {
            if rule.tag() == Some(tag.as_str()) {
                let mut args = vec!["-t", rule.table, "-D", rule.chain];
                args.extend(rule.args.iter().map(String::as_str));
                let _ = sh("iptables", &args);
            }
        }
        // The node's tunnel interface (its wireguard-go ends with the interface).
        let _ = sh("ip", &["link", "del", &format!("dct{}", &tag[..8])]);
    }
}

async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, &url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let r = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    host: &str,
    chain_id: u64,
    signer: &PrivateKeySigner,
) -> String {
    let (status, body) = call(
        http,
        reqwest::Method::POST,
        format!("{base}/api/v1/auth/nonce"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "nonce: {body}");
    let nonce = body["nonce"].as_str().expect("a nonce").to_string();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let rfc = |t: OffsetDateTime| t.format(&Rfc3339).unwrap();
    let message = format!(
        "{host} wants you to sign in with your Ethereum account:\n{}\n\nSign in to DeCloud.\n\n\
         URI: {base}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {}\n\
         Expiration Time: {}",
        signer.address().to_checksum(None),
        rfc(now),
        rfc(now + time::Duration::hours(1)),
    );
    let signature = signer.sign_message(message.as_bytes()).await.unwrap();
    let (status, body) = call(
        http,
        reqwest::Method::POST,
        format!("{base}/api/v1/auth/verify"),
        None,
        Some(json!({
            "message": message,
            "signature": format!("0x{}", hex::encode(signature.as_bytes())),
        })),
    )
    .await;
    assert_eq!(status, 200, "SIWE verify: {body}");
    body["token"].as_str().expect("a session token").to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The relay endpoint of a VM detail: (relay node id, address, relay port of guest `guest`).
fn relay_endpoint(vm: &Value, guest: u64) -> Option<(String, String, u16)> {
    let relay = vm["access"]["relay"].as_object()?;
    let port = relay["forwards"]
        .as_array()?
        .iter()
        .find(|f| f["guest"] == guest && f["protocol"] == "tcp")?["public"]
        .as_u64()?;
    Some((
        relay["relay_node_id"].as_str()?.to_owned(),
        vm["access"]["public_address"].as_str()?.to_owned(),
        u16::try_from(port).ok()?,
    ))
}

/// Waits until the client reaches the guest through the relay at `address`: its SSH banner at
/// `ssh_port`, and its HTTP server over HTTPS by `host` (Caddy's certificate checked against
/// `ca`) and at `http_port`.
async fn reach(
    topology: &Topology,
    address: &str,
    ssh_port: u16,
    http_port: u16,
    host: &str,
    ca: &Path,
    limit: Duration,
) {
    let resolve = format!("{host}:443:{address}");
    let url = format!("https://{host}/");
    let ca = ca.to_string_lossy().into_owned();
    let plain = format!("http://{address}:{http_port}/");
    let deadline = Instant::now() + limit;
    loop {
        let banner = topology.client_banner(address, ssh_port);
        let https = topology.client_curl(&["--resolve", &resolve, "--cacert", &ca, &url]);
        let http = topology.client_curl(&[&plain]);
        let ssh_ok = banner
            .as_deref()
            .is_ok_and(|b| b.starts_with("SSH-2.0-dropbear"));
        let https_ok = matches!(&https, Ok((200, _)));
        let http_ok = matches!(&http, Ok((200, _)));
        if ssh_ok && https_ok && http_ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the client did not reach the guest through {address} within {limit:?}: \
             ssh {banner:?}, https {https:?}, http {http:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_behind_nat_is_reached_through_its_relay_and_through_another_after_failover() {
    if let Err(e) = decloud_node_agent::Hypervisor::open("qemu:///system") {
        panic!(
            "this test needs libvirtd with QEMU (scripts/setup, then `virtlogd -d && libvirtd -d`): {e}"
        );
    }
    let unique = format!("{}", std::process::id() % 100_000);
    let work = tempfile::Builder::new()
        .prefix("decloud-relay-failover-")
        .tempdir_in("/var/tmp")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        // QEMU (its own user) reads the guest's disk and seed under here.
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let system = TestSystem::start()
        .await
        .expect("anvil with the system deployed (run scripts/setup)");
    let d = &system.deployment;
    let chain_id = system.anvil.chain_id();
    let operator = system.provider(1);
    let operator_addr = system.address(1);
    let tenant = system.provider(2);
    let tenant_signer = system.signer(2);

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let host = format!("127.0.0.1:{port}");

    // The node behind the NAT: a real QEMU guest on its own libvirt NAT network.
    let node_dir = work.path().join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let kernel = decloud_node_agent::test_guest::find_kernel().unwrap();
    let release = decloud_node_agent::test_guest::kernel_release(&kernel).unwrap();
    let initrd = node_dir.join("test-guest.cpio");
    decloud_node_agent::test_guest::build_initramfs(&release, &initrd).unwrap();
    let base_image = node_dir.join("base.qcow2");
    decloud_node_agent::create_blank_qcow2(&base_image, 16).unwrap();
    let network = format!("dcfnet-{unique}");
    let node_machine = format!("relay-failover-node-{unique}");
    let node_toml = format!(
        "data_dir = \"{data}\"\nlibvirt_uri = \"qemu:///system\"\ndomain_type = \"qemu\"\n\
         operator = \"{operator_addr}\"\nmachine_id = \"{node_machine}\"\nshutdown_timeout_secs = 3\n\
         orchestrator_url = \"ws://{host}/api/v1/agent/ws\"\n\
         network = {{ type = \"network\", name = \"{network}\" }}\n\
         network_subnet = \"192.168.246.0/24\"\npublic_port_range = \"31520-31539\"\n\
         behind_nat = true\n\
         [images.{IMAGE}]\nbase = \"{base}\"\nkernel = \"{kernel}\"\ninitrd = \"{initrd}\"\n\
         cmdline = \"{cmdline}\"\n",
        data = node_dir.join("data").display(),
        base = base_image.display(),
        kernel = kernel.display(),
        initrd = initrd.display(),
        cmdline = decloud_node_agent::test_guest::CMDLINE,
    );
    let node_config = node_dir.join("agent.toml");
    std::fs::write(&node_config, &node_toml).unwrap();
    let node_identity = identity(&node_toml);
    let node_id = node_identity.node_id;
    let _host_cleanup = HostCleanup {
        node_id,
        network: network.clone(),
    };
    let topology = Topology::new(&unique);

    // The two relays: public nodes with a [relay] section, on libvirt's test driver (they run
    // no VM here), each with its Caddy, dialling the orchestrator over their control link.
    let mut relay_configs = Vec::new();
    let mut relay_ids = Vec::new();
    let mut caddies = Vec::new();
    for (site, ns) in RELAYS.iter().zip(&topology.relays) {
        let dir = work.path().join(format!("relay-{}", site.name));
        std::fs::create_dir_all(&dir).unwrap();
        let toml = format!(
            "data_dir = \"{data}\"\nlibvirt_uri = \"test:///default\"\ndomain_type = \"qemu\"\n\
             operator = \"{operator_addr}\"\nmachine_id = \"relay-failover-{name}-{unique}\"\n\
             orchestrator_url = \"ws://{control}:{port}/api/v1/agent/ws\"\n\
             network = {{ type = \"network\", name = \"test-relay-{name}-{unique}\" }}\n\
             public_address = \"{address}\"\n\
             [relay]\nlisten_port = {WG_PORT}\npublic_address = \"{address}\"\n\
             tunnel_subnet = \"{subnet}\"\nport_range = \"{ports}\"\n\
             [relay.ingress]\nadmin = \"{admin}\"\nlisten = \":443\"\ntls = \"internal\"\n",
            data = dir.join("data").display(),
            name = site.name,
            control = site.host_side,
            address = site.address,
            subnet = site.tunnel_subnet,
            ports = site.ports,
            admin = NsCaddy::ADMIN,
        );
        let path = dir.join("agent.toml");
        std::fs::write(&path, &toml).unwrap();
        relay_ids.push(identity(&toml));
        relay_configs.push((path, dir));
        caddies.push(NsCaddy::start(ns));
    }

    // Everything registered on-chain: the relays with the relay flag, the node behind CGNAT.
    let registry = NodeRegistry::new(d.contracts.node_registry.address, operator.clone());
    let mut registrations: Vec<(&Identity, u32)> =
        relay_ids.iter().map(|r| (r, 1 | RELAY_FLAG)).collect();
    registrations.push((&node_identity, 2));
    for (identity, flags) in registrations {
        tx::send(
            "NodeRegistry",
            registry.register(
                identity.machine_id,
                identity.address(),
                "eu-west".into(),
                INodeRegistry::Capabilities {
                    vcpus: 2,
                    memoryGiB: 2,
                    diskGiB: 20,
                    gpus: 0,
                    bandwidthMbps: 1_000,
                    architecture: Architecture::X86_64.into(),
                    flags,
                },
                format!("ws://{host}"),
                "".into(),
                INodeRegistry::Prices {
                    cpuPerHour: 5_000,
                    memoryGiBPerHour: 2_500,
                    storageGiBPerHour: 50,
                    gpuPerHour: 50_000,
                },
            ),
        )
        .await
        .expect("the operator registers the node");
    }

    // The orchestrator: on every address of this host (the relays reach it over their control
    // links), names under DOMAIN, failover after 10 s without a relay.
    let config = work.path().join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"0.0.0.0:{port}\"\n\
             database_url = \"sqlite:{db}\"\n\
             [siwe]\n\
             domains = [\"{host}\"]\n\
             uris = [\"{base}\"]\n\
             chain_ids = [{chain_id}]\n\
             [chain]\n\
             rpc_url = \"{rpc}\"\n\
             node_registry = \"{registry}\"\n\
             lease_escrow = \"{escrow}\"\n\
             confirmations = 0\n\
             image = \"{IMAGE}\"\n\
             [ingress]\n\
             domain = \"{DOMAIN}\"\n\
             https_port = 443\n\
             [relays]\n\
             failover_secs = 10\n",
            db = work.path().join("orchestrator.db").display(),
            rpc = system.rpc_url(),
            registry = d.contracts.node_registry.address,
            escrow = d.contracts.lease_escrow.address,
        ),
    )
    .unwrap();
    let start_orchestrator = |run: u32| {
        let log =
            std::fs::File::create(work.path().join(format!("orchestrator-{run}.log"))).unwrap();
        Process(
            Command::new(env!("CARGO_BIN_EXE_decloud-orchestrator"))
                .arg("--config")
                .arg(&config)
                .env("DECLOUD_LOG", "info")
                .stderr(log)
                .spawn()
                .expect("the orchestrator binary starts"),
        )
    };
    let mut orchestrator = start_orchestrator(1);
    let http = reqwest::Client::new();
    let healthy = || async {
        wait_for(
            "the orchestrator to answer /api/v1/health",
            TIMEOUT,
            || async {
                let r = http
                    .get(format!("{base}/api/v1/health"))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await
    };
    healthy().await;

    let mut relay_agents: Vec<Process> = relay_configs
        .iter()
        .zip(&topology.relays)
        .map(|((path, dir), ns)| start_agent(Some(ns), path, &dir.join("agent.log")))
        .collect();
    let _node_agent = start_agent(None, &node_config, &node_dir.join("agent.log"));

    // The tenant forwards port 80 (the relay's Caddy reaches the guest's HTTP server through
    // the node's forward of it), opens a lease on the node behind the NAT and names port 80.
    let token = sign_in(&http, &base, &host, chain_id, &tenant_signer).await;
    let (status, body) = call(
        &http,
        reqwest::Method::PUT,
        format!("{base}/api/v1/profile"),
        Some(&token),
        Some(json!({ "ports": [{ "guest": 80, "protocol": "tcp" }] })),
    )
    .await;
    assert_eq!(status, 200, "profile: {body}");
    wait_for("the node behind the NAT online", TIMEOUT, || async {
        let (status, body) = call(
            &http,
            reqwest::Method::GET,
            format!("{base}/api/v1/nodes/{node_id:#x}"),
            Some(&token),
            None,
        )
        .await;
        (status == 200 && body.to_string().contains("\"online\":true")).then_some(())
    })
    .await;
    let escrow_addr = d.contracts.lease_escrow.address;
    let usdc = MockUSDC::new(d.usdc, tenant.clone());
    tx::send("MockUSDC", usdc.approve(escrow_addr, U256::from(10 * USDC)))
        .await
        .unwrap();
    let escrow = LeaseEscrow::new(escrow_addr, tenant.clone());
    tx::send("LeaseEscrow", escrow.deposit(U256::from(10 * USDC)))
        .await
        .unwrap();
    tx::send(
        "LeaseEscrow",
        escrow.openLease(
            node_id,
            ILeaseEscrow::Resources {
                vcpus: 1,
                memoryGiB: 1,
                storageGiB: 1,
                gpus: 0,
            },
            QualityTier::Dedicated.into(),
            BandwidthTier::Basic.into(),
            U256::ZERO,
            U256::ZERO,
            u64::MAX,
            U256::from(5 * USDC),
        ),
    )
    .await
    .expect("the tenant opens a lease");
    let vm_url = format!("{base}/api/v1/vms/vm-1");
    let get_vm = || {
        let (http, url, token) = (http.clone(), vm_url.clone(), token.clone());
        async move { call(&http, reqwest::Method::GET, url, Some(&token), None).await }
    };
    wait_for("the VM to run", BOOT_LIMIT, || async {
        let (status, body) = get_vm().await;
        (status == 200 && body["state"] == "running").then_some(())
    })
    .await;
    let (status, body) = call(
        &http,
        reqwest::Method::PUT,
        format!("{base}/api/v1/vms/vm-1/ingress/80"),
        Some(&token),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "expose: {body}");
    let name_host = format!("vm-1-80.{DOMAIN}");

    // The orchestrator assigned a relay: the API gives its address and ports.
    let (first_relay, address, ssh_port) =
        wait_for("the VM's relay endpoint", BOOT_LIMIT, || async {
            let (_, vm) = get_vm().await;
            relay_endpoint(&vm, 22)
        })
        .await;
    let (_, vm) = get_vm().await;
    let (_, _, http_port) = relay_endpoint(&vm, 80).expect("port 80 is relayed too");
    let first = relay_ids
        .iter()
        .position(|r| format!("{:#x}", r.node_id) == first_relay)
        .unwrap_or_else(|| panic!("{first_relay} is none of the relays: {vm}"));
    assert_eq!(address, RELAYS[first].address, "{vm}");
    assert!(
        vm["access"]["ssh_command"]
            .as_str()
            .is_some_and(|c| c.contains(&format!("-p {ssh_port} decloud@{address}"))),
        "{vm}"
    );
    // Nothing reaches the node itself from the internet.
    assert!(topology.client_banner(NAT, 31520).is_err());
    let ca = wait_for("the relay's Caddy CA", TIMEOUT, || async {
        let ca = caddies[first].root_certificate();
        ca.exists().then_some(ca)
    })
    .await;
    reach(
        &topology, &address, ssh_port, http_port, &name_host, &ca, TIMEOUT,
    )
    .await;

    // The relay counted the bytes, and the API serves them.
    let counted = wait_for("the relay's byte counts in the API", TIMEOUT, || async {
        let (_, vm) = get_vm().await;
        let t = &vm["access"]["relay_traffic"];
        (t["bytes_in"].as_u64()? > 0 && t["bytes_out"].as_u64()? > 0).then(|| t.clone())
    })
    .await;

    // The first relay stops: its agent, its wireguard-go and its Caddy die.
    relay_agents[first].kill();
    Topology::kill_all_in(&topology.relays[first]);
    let stopped = Instant::now();
    let second = 1 - first;
    let (moved_to, new_address, new_ssh_port) =
        wait_for("the API to give another relay", FAILOVER_LIMIT, || async {
            let (_, vm) = get_vm().await;
            relay_endpoint(&vm, 22).filter(|(relay, _, _)| *relay != first_relay)
        })
        .await;
    assert_eq!(moved_to, format!("{:#x}", relay_ids[second].node_id));
    assert_eq!(new_address, RELAYS[second].address);
    let (_, vm) = get_vm().await;
    let (_, _, new_http_port) = relay_endpoint(&vm, 80).expect("port 80 is relayed too");
    let ca = caddies[second].root_certificate();
    let left = FAILOVER_LIMIT.saturating_sub(stopped.elapsed());
    let wait_ca = Instant::now();
    while !ca.exists() {
        assert!(
            wait_ca.elapsed() < left,
            "no certificate: {}",
            caddies[second].log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reach(
        &topology,
        &new_address,
        new_ssh_port,
        new_http_port,
        &name_host,
        &ca,
        FAILOVER_LIMIT.saturating_sub(stopped.elapsed()),
    )
    .await;

    // The new relay's bytes add to the first one's.
    let counted = wait_for("the second relay's bytes in the API", TIMEOUT, || async {
        let (_, vm) = get_vm().await;
        let t = &vm["access"]["relay_traffic"];
        (t["bytes_out"].as_u64()? > counted["bytes_out"].as_u64()?).then(|| t.clone())
    })
    .await;

    // The orchestrator restarts: the assignment is whole (same relay, same ports), the VM is
    // reached there, and the counts go on from where they were.
    let _ = sh("kill", &["-TERM", &orchestrator.0.id().to_string()]);
    let _ = orchestrator.0.wait();
    orchestrator = start_orchestrator(2);
    healthy().await;
    let (_, vm) = get_vm().await;
    assert_eq!(
        relay_endpoint(&vm, 22),
        Some((moved_to.clone(), new_address.clone(), new_ssh_port)),
        "{vm}"
    );
    assert_eq!(
        relay_endpoint(&vm, 80),
        Some((moved_to.clone(), new_address.clone(), new_http_port)),
        "{vm}"
    );
    assert!(
        vm["access"]["relay_traffic"]["bytes_out"].as_u64() >= counted["bytes_out"].as_u64(),
        "{vm}"
    );
    reach(
        &topology,
        &new_address,
        new_ssh_port,
        new_http_port,
        &name_host,
        &ca,
        TIMEOUT,
    )
    .await;
    wait_for(
        "the relayed bytes to grow after the restart",
        TIMEOUT,
        || async {
            let (_, vm) = get_vm().await;
            let t = &vm["access"]["relay_traffic"];
            (t["bytes_out"].as_u64()? > counted["bytes_out"].as_u64()?).then_some(())
        },
    )
    .await;
    let (_, vm) = get_vm().await;
    assert_eq!(
        relay_endpoint(&vm, 22),
        Some((moved_to.clone(), new_address.clone(), new_ssh_port)),
        "the heartbeats after the restart change nothing: {vm}"
    );
    // The operator sees the node behind NAT on its new relay, and what the relay carried.
    let operator_token = sign_in(&http, &base, &host, chain_id, &system.signer(1)).await;
    let (status, node) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/v1/operator/nodes/{node_id:#x}"),
        Some(&operator_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{node}");
    assert_eq!(node["reachability"]["behind_nat"], true, "{node}");
    assert_eq!(
        node["reachability"]["relay"]["relay_node_id"], moved_to,
        "{node}"
    );
    let (status, relay_node) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/v1/operator/nodes/{moved_to}"),
        Some(&operator_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{relay_node}");
    assert_eq!(
        relay_node["reachability"]["relayed"][0]["vm_id"], "vm-1",
        "{relay_node}"
    );
    drop(relay_agents);
    drop(orchestrator);
}

/// The node identity an agent with this config uses (made in its data directory now, loaded
/// by the agent process later).
fn identity(toml_text: &str) -> Identity {
    let layer: ConfigLayer = toml::from_str(toml_text).unwrap();
    let config =
        AgentConfig::resolve(Some(layer), ConfigLayer::default(), ConfigLayer::default()).unwrap();
    std::fs::create_dir_all(&config.data_dir).unwrap();
    Identity::load_or_create(&config).unwrap().0
}
