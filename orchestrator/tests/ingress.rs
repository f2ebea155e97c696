//! HTTPS names end to end: the orchestrator binary with an `[ingress]` domain, following a
//! real anvil with the whole system deployed, and a real node agent (libvirt's test driver)
//! whose ingress is a real Caddy. The seed templates' HTTP ports (VS Code Server, Web Proxy
//! Browser, Stable Diffusion's UI) get derived names that Caddy serves; a tenant names, renames
//! and removes names; every refusal changes nothing; names survive an orchestrator restart and
//! go with their VM. The orchestrator's authoritative DNS server for the domain answers each
//! name with the node's reported address over UDP and TCP, follows renames and removals, refuses
//! names outside the domain and survives malformed packets. The uniqueness of names is checked
//! on SQLite and PostgreSQL.

mod support;

#[path = "../../node-agent/tests/common/caddy.rs"]
#[allow(dead_code, unreachable_pub)]
mod caddy;

use alloy::{
    primitives::U256,
    signers::{Signer, local::PrivateKeySigner},
    transports::http::reqwest,
};
use caddy::Caddy;
use decloud_node_agent::{
    Agent, Backoff, ConfigLayer, DomainType, Identity, ImageConfig, IngressConfig, IngressTls,
    NetworkConfig, create_blank_qcow2, node_tag, run_link,
};
use decloud_orchestrator::Store;
use decloud_orchestrator::store::{IngressChange, IngressName};
use decloud_sdk::{
    USDC, VmId,
    agent_protocol::{self as proto, NodeResources},
    bindings::{
        LeaseEscrow, MockUSDC, NodeRegistry, TemplateMarket, lease_escrow::ILeaseEscrow,
        node_registry::INodeRegistry,
    },
    testing::TestSystem,
    tx,
    types::{Architecture, BandwidthTier, QualityTier},
};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

const TIMEOUT: Duration = Duration::from_secs(90);
const IMAGE: &str = "blank";
const DOMAIN: &str = "apps.decloud.test";
/// The seeds with an HTTP port, in the order they are published (template ids 1, 2, 3) and
/// leased (vm-1, vm-2, vm-3), and that port.
const SEEDS: [(&str, u16); 3] = [
    ("vscode-server", 8080),
    ("web-proxy-browser", 80),
    ("stable-diffusion", 80),
];

/// The public address the node's agent reports, which the names resolve to.
const NODE_ADDRESS: &str = "192.0.2.44";

/// A DNS question as any client asks it (hickory's wire format, a random id).
fn question(name: &str, wanted: RecordType) -> Message {
    let mut message = Message::new();
    message
        .set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), wanted));
    message
}

/// Sends `message` over UDP and returns the answer with its id.
async fn over_udp(server: SocketAddr, message: &Message) -> Message {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&message.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("the DNS server answers over UDP")
        .unwrap();
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(answer.id(), message.id());
    assert_eq!(answer.message_type(), MessageType::Response);
    answer
}

/// Sends `message` over TCP (two-byte length, RFC 1035 4.2.2) and returns the answer.
async fn over_tcp(server: SocketAddr, message: &Message) -> Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
    let bytes = message.to_vec().unwrap();
    stream.write_u16(bytes.len() as u16).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let length = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
        .await
        .expect("the DNS server answers over TCP")
        .unwrap();
    let mut buf = vec![0u8; usize::from(length)];
    stream.read_exact(&mut buf).await.unwrap();
    let answer = Message::from_vec(&buf).unwrap();
    assert_eq!(answer.id(), message.id());
    answer
}

/// The response code and the addresses (A and AAAA) of the answer to `name`/`wanted`, asked over
/// UDP and over TCP (which must agree).
async fn resolve(
    server: SocketAddr,
    name: &str,
    wanted: RecordType,
) -> (ResponseCode, Vec<IpAddr>) {
    let ask = question(name, wanted);
    let mut seen = Vec::new();
    for answer in [over_udp(server, &ask).await, over_tcp(server, &ask).await] {
        let addresses: Vec<IpAddr> = answer
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        if answer.response_code() != ResponseCode::Refused {
            assert!(answer.authoritative(), "{name}: {answer:?}");
        }
        if answer.response_code() == ResponseCode::NXDomain || addresses.is_empty() {
            // NXDOMAIN and NODATA carry the zone's SOA, for negative caching.
            if answer.response_code() != ResponseCode::Refused {
                assert!(
                    answer
                        .name_servers()
                        .iter()
                        .any(|r| r.record_type() == RecordType::SOA),
                    "{name}: {answer:?}"
                );
            }
        }
        for r in answer.answers() {
            assert!(r.ttl() <= 30, "short TTLs: {r:?}");
        }
        seen.push((answer.response_code(), addresses));
    }
    assert_eq!(seen[0], seen[1], "{name}: UDP and TCP agree");
    seen.remove(0)
}

/// Waits until `name` resolves to the node's address.
async fn wait_resolves(server: SocketAddr, name: &str) {
    let want = (
        ResponseCode::NoError,
        vec![NODE_ADDRESS.parse::<IpAddr>().unwrap()],
    );
    let host = format!("{name}.{DOMAIN}");
    wait_for(&format!("{host} to resolve to the node"), || async {
        (resolve(server, &host, RecordType::A).await == want).then_some(())
    })
    .await;
}

/// Asserts that `name` does not exist under the domain.
async fn assert_nxdomain(server: SocketAddr, name: &str) {
    let host = format!("{name}.{DOMAIN}");
    assert_eq!(
        resolve(server, &host, RecordType::A).await,
        (ResponseCode::NXDomain, vec![]),
        "{host}"
    );
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The orchestrator binary, stopped (SIGTERM, then SIGKILL) when dropped.
struct Orchestrator(Child);

impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// One request as the holder of `token`: (status, JSON body or Null).
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
    let message = format!(
        "{host} wants you to sign in with your Ethereum account:\n{}\n\nSign in to DeCloud.\n\n\
         URI: {base}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {}\n\
         Expiration Time: {}",
        signer.address().to_checksum(None),
        rfc3339(now),
        rfc3339(now + time::Duration::hours(1)),
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

/// The hosts this node's Caddy server routes, sorted; `None` while Caddy's admin API does not
/// answer (it is reloading).
fn try_served(caddy: &Caddy, tag: &str) -> Option<Vec<String>> {
    let output = Command::new("curl")
        .args(["-sf", &format!("http://{}/config/", caddy.admin)])
        .output()
        .ok()?;
    let config: Value = serde_json::from_slice(&output.stdout).ok()?;
    let mut hosts: Vec<String> = config
        .pointer(&format!("/apps/http/servers/decloud-{tag}/routes"))
        .and_then(Value::as_array)
        .map(|routes| {
            routes
                .iter()
                .filter_map(|r| r.pointer("/match/0/host/0")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    hosts.sort();
    Some(hosts)
}

/// Waits until Caddy serves exactly `names` under the domain for this node.
async fn wait_served(caddy: &Caddy, tag: &str, names: &[&str], what: &str) {
    let want = hosts(names);
    let mut last = None;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = try_served(caddy, tag);
        if now.as_ref() == Some(&want) {
            return;
        }
        if now.is_some() {
            last = now;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: want {want:?}, caddy serves {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn hosts(names: &[&str]) -> Vec<String> {
    let mut hosts: Vec<String> = names.iter().map(|n| format!("{n}.{DOMAIN}")).collect();
    hosts.sort();
    hosts
}

/// `(guest port, name, url)` of a VM detail's URLs.
fn urls(vm: &Value) -> Vec<(u64, String, String)> {
    vm["access"]["urls"]
        .as_array()
        .unwrap_or_else(|| panic!("no urls: {vm}"))
        .iter()
        .map(|u| {
            (
                u["guest"].as_u64().unwrap(),
                u["name"].as_str().unwrap().to_owned(),
                u["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn get(http: &reqwest::Client, base: &str, path: &str, token: &str) -> (u16, Value) {
    call(
        http,
        reqwest::Method::GET,
        format!("{base}/api/v1{path}"),
        Some(token),
        None,
    )
    .await
}

fn start_orchestrator(config: &Path) -> Orchestrator {
    Orchestrator(
        Command::new(env!("CARGO_BIN_EXE_decloud-orchestrator"))
            .arg("--config")
            .arg(config)
            .env("DECLOUD_LOG", "info")
            .spawn()
            .expect("the orchestrator binary starts"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_http_ports_get_names_that_tenants_change_and_that_survive_a_restart() {
    let caddy = Caddy::start();
    let system = TestSystem::start()
        .await
        .expect("anvil with the system deployed (run scripts/setup)");
    let d = &system.deployment;
    let chain_id = system.anvil.chain_id();
    let (operator, tenant, author) = (system.provider(1), system.provider(2), system.provider(3));
    let operator_addr = system.address(1);
    let (tenant_signer, other_signer) = (system.signer(2), system.signer(4));
    let work = tempfile::tempdir().unwrap();

    let port = caddy::free_port();
    let dns: SocketAddr = format!("127.0.0.1:{}", caddy::free_port()).parse().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let host = format!("127.0.0.1:{port}");
    let agent_dir = work.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let image = agent_dir.join("base.qcow2");
    create_blank_qcow2(&image, 16).unwrap();
    let machine = "names-e2e";
    let agent_config = decloud_node_agent::Config::resolve(
        None,
        ConfigLayer::default(),
        ConfigLayer {
            data_dir: Some(agent_dir.join("data")),
            libvirt_uri: Some("test:///default".into()),
            domain_type: Some(DomainType::Qemu),
            orchestrator_url: Some(format!("ws://{host}/api/v1/agent/ws")),
            operator: Some(operator_addr),
            machine_id: Some(machine.into()),
            public_address: Some(NODE_ADDRESS.into()),
            shutdown_timeout_secs: Some(2),
            reserved_memory_mib: Some(0),
            network: Some(NetworkConfig::Network {
                name: "test-names-e2e".into(),
            }),
            images: BTreeMap::from([(
                IMAGE.to_string(),
                ImageConfig {
                    base: image,
                    kernel: None,
                    initrd: None,
                    cmdline: None,
                },
            )]),
            ..Default::default()
        },
    )
    .unwrap();
    let mut agent_config = agent_config;
    agent_config.ingress = Some(IngressConfig {
        admin: caddy.admin.clone(),
        listen: format!("127.0.0.1:{}", caddy.https_port),
        tls: IngressTls::Internal,
        acme_email: None,
        acme_ca: None,
    });
    let (identity, _) = Identity::load_or_create(&agent_config).unwrap();
    let node_key = identity.address();
    let tag = node_tag(&identity.node_id);
    let resources = NodeResources {
        arch: std::env::consts::ARCH.into(),
        cpu_cores: 4,
        cpu_model: "test".into(),
        memory_mib: 8192,
        disks: vec![],
        vm_storage_free_bytes: 1 << 40,
        gpus: vec![],
        compute_points: 400,
    };
    let agent = Agent::open(agent_config, identity, resources)
        .await
        .unwrap();

    let machine_id = proto::machine_id(machine);
    let node_id = proto::node_id(machine_id, operator_addr);
    let registry = NodeRegistry::new(d.contracts.node_registry.address, operator.clone());
    tx::send(
        "NodeRegistry",
        registry.register(
            machine_id,
            node_key,
            "eu-west".into(),
            INodeRegistry::Capabilities {
                vcpus: 4,
                memoryGiB: 8,
                diskGiB: 100,
                gpus: 0,
                bandwidthMbps: 1_000,
                architecture: Architecture::X86_64.into(),
                flags: 1,
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

    // The orchestrator names HTTP ports under DOMAIN, served on the Caddy's HTTPS port.
    let config = work.path().join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{host}\"\n\
             database_url = \"sqlite:{db}\"\n\
             templates_dir = \"{seeds}\"\n\
             [siwe]\n\
             domains = [\"{host}\"]\n\
             uris = [\"{base}\"]\n\
             chain_ids = [{chain_id}]\n\
             [chain]\n\
             rpc_url = \"{rpc}\"\n\
             node_registry = \"{registry}\"\n\
             lease_escrow = \"{escrow}\"\n\
             template_market = \"{market}\"\n\
             confirmations = 0\n\
             image = \"{IMAGE}\"\n\
             [ingress]\n\
             domain = \"{DOMAIN}\"\n\
             https_port = {https}\n\
             dns_listen = \"{dns}\"\n\
             dns_nameserver = \"ns1.{DOMAIN}\"\n\
             dns_nameserver_addresses = [\"127.0.0.1\"]\n",
            db = work.path().join("orchestrator.db").display(),
            seeds = root().join("templates/seed").display(),
            rpc = system.rpc_url(),
            registry = d.contracts.node_registry.address,
            escrow = d.contracts.lease_escrow.address,
            market = d.contracts.template_market.address,
            https = caddy.https_port,
        ),
    )
    .unwrap();
    let mut orchestrator = Some(start_orchestrator(&config));
    let http = reqwest::Client::new();
    let health = || async {
        wait_for("the orchestrator to answer /api/v1/health", || async {
            let r = http
                .get(format!("{base}/api/v1/health"))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await
    };
    health().await;

    agent.reconcile().await.unwrap();
    let (stop_agent, agent_stopped) = tokio::sync::watch::channel(false);
    let link = tokio::spawn(run_link(
        agent.clone(),
        format!("ws://{host}/api/v1/agent/ws"),
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
        },
        agent_stopped,
    ));
    let observer = {
        let agent = agent.clone();
        tokio::spawn(async move {
            loop {
                let _ = agent.observe().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    let token = sign_in(&http, &base, &host, chain_id, &tenant_signer).await;
    let other = sign_in(&http, &base, &host, chain_id, &other_signer).await;
    let (status, info) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/v1/ingress"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        info,
        json!({"domain": DOMAIN, "https_port": caddy.https_port})
    );

    // The author publishes the three seeds (free); the tenant opens a lease on each.
    let market = TemplateMarket::new(d.contracts.template_market.address, author.clone());
    for (seed, _) in SEEDS {
        let bundle =
            decloud_templates::Bundle::load_dir(root().join("templates/seed").join(seed)).unwrap();
        tx::send(
            "TemplateMarket",
            market.publish(bundle.cid().to_string(), U256::ZERO, "{}".into()),
        )
        .await
        .expect("the author publishes the seed");
    }
    for (n, (seed, _)) in SEEDS.iter().enumerate() {
        wait_for("the orchestrator to map the seeds", || async {
            let (status, body) = get(&http, &base, &format!("/templates/{}", n + 1), &token).await;
            (status == 200 && body["slug"] == *seed).then_some(())
        })
        .await;
    }
    wait_for("the node's agent online", || async {
        let (status, body) = get(&http, &base, &format!("/nodes/{node_id:#x}"), &token).await;
        (status == 200 && body.to_string().contains("\"online\":true")).then_some(())
    })
    .await;
    let escrow_addr = d.contracts.lease_escrow.address;
    let usdc = MockUSDC::new(d.usdc, tenant.clone());
    tx::send("MockUSDC", usdc.approve(escrow_addr, U256::from(30 * USDC)))
        .await
        .unwrap();
    let escrow = LeaseEscrow::new(escrow_addr, tenant.clone());
    tx::send("LeaseEscrow", escrow.deposit(U256::from(30 * USDC)))
        .await
        .unwrap();
    for template in 1..=SEEDS.len() {
        tx::send(
            "LeaseEscrow",
            escrow.openLease(
                node_id,
                ILeaseEscrow::Resources {
                    vcpus: 1,
                    memoryGiB: 1,
                    storageGiB: 5,
                    gpus: 0,
                },
                QualityTier::Dedicated.into(),
                BandwidthTier::Basic.into(),
                U256::from(template),
                U256::ZERO,
                u64::MAX,
                U256::from(5 * USDC),
            ),
        )
        .await
        .expect("the tenant opens a lease");
    }

    // Each VM runs with its seed's HTTP port named after the VM and port, and no direct forward.
    let derived: Vec<String> = SEEDS
        .iter()
        .enumerate()
        .map(|(n, (_, port))| format!("vm-{}-{port}", n + 1))
        .collect();
    for (n, (seed, guest)) in SEEDS.iter().enumerate() {
        let vm_id = format!("vm-{}", n + 1);
        let vm = wait_for("the VM to run", || async {
            let (status, body) = get(&http, &base, &format!("/vms/{vm_id}"), &token).await;
            (status == 200 && body["state"] == "running").then_some(body)
        })
        .await;
        assert_eq!(
            urls(&vm),
            vec![(
                u64::from(*guest),
                derived[n].clone(),
                format!("https://{}.{DOMAIN}:{}", derived[n], caddy.https_port)
            )],
            "{seed}: {vm}"
        );
        let record = agent.store().vm(&vm_id).await.unwrap().unwrap();
        assert_eq!(
            record.spec.ingress,
            vec![proto::IngressRoute {
                host: format!("{}.{DOMAIN}", derived[n]),
                guest: *guest
            }],
            "{seed}"
        );
        assert!(
            !record.spec.ports.iter().any(|p| p.guest == *guest),
            "{seed}: an HTTP port gets no direct forward: {:?}",
            record.spec.ports
        );
    }
    let derived_refs: Vec<&str> = derived.iter().map(String::as_str).collect();
    wait_served(
        &caddy,
        &tag,
        &derived_refs,
        "Caddy to serve the seeds' names",
    )
    .await;

    // The orchestrator's DNS server answers each name with the node's address, over UDP and
    // TCP, in any letter case; other types get an empty answer, other names none.
    for name in &derived {
        wait_resolves(dns, name).await;
    }
    let node_ip: IpAddr = NODE_ADDRESS.parse().unwrap();
    assert_eq!(
        resolve(dns, "VM-1-8080.Apps.DeCloud.Test", RecordType::A).await,
        (ResponseCode::NoError, vec![node_ip])
    );
    assert_eq!(
        resolve(dns, &format!("vm-1-8080.{DOMAIN}"), RecordType::AAAA).await,
        (ResponseCode::NoError, vec![])
    );
    for unknown in ["nobody", "vm-9-80", "deeper.vm-1-8080"] {
        assert_nxdomain(dns, unknown).await;
    }
    assert_eq!(
        resolve(dns, "vm-1-8080.apps.example.org", RecordType::A).await,
        (ResponseCode::Refused, vec![])
    );
    assert_eq!(
        resolve(dns, "decloud.test", RecordType::SOA).await,
        (ResponseCode::Refused, vec![])
    );
    // The apex has its SOA and NS; the nameserver's glue address answers too.
    let apex = over_tcp(dns, &question(DOMAIN, RecordType::SOA)).await;
    assert_eq!(apex.response_code(), ResponseCode::NoError);
    match apex.answers().first().map(|r| r.data()) {
        Some(RData::SOA(soa)) => {
            assert_eq!(soa.mname().to_ascii(), format!("ns1.{DOMAIN}."));
            assert_eq!(soa.minimum(), 30);
        }
        other => panic!("no SOA at the apex: {other:?}"),
    }
    let ns = over_udp(dns, &question(DOMAIN, RecordType::NS)).await;
    match ns.answers().first().map(|r| r.data()) {
        Some(RData::NS(ns)) => assert_eq!(ns.0.to_ascii(), format!("ns1.{DOMAIN}.")),
        other => panic!("no NS at the apex: {other:?}"),
    }
    assert_eq!(
        resolve(dns, &format!("ns1.{DOMAIN}"), RecordType::A).await,
        (
            ResponseCode::NoError,
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        )
    );
    // Malformed packets: garbage and a cut header get nothing, a cut question a FORMERR, two
    // questions a FORMERR, a response is not answered; the server answers the next query.
    {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let good = question(&format!("vm-2-80.{DOMAIN}"), RecordType::A)
            .to_vec()
            .unwrap();
        let mut cut_question = good.clone();
        cut_question.truncate(good.len() - 3);
        let mut two = question(&format!("vm-2-80.{DOMAIN}"), RecordType::A);
        two.add_query(Query::query(
            Name::from_ascii(format!("vm-3-80.{DOMAIN}")).unwrap(),
            RecordType::A,
        ));
        let mut response = question(&format!("vm-2-80.{DOMAIN}"), RecordType::A);
        response.set_message_type(MessageType::Response);
        for (packet, answered) in [
            (b"\xff\x00garbage".to_vec(), None),
            (vec![0u8; 0], None),
            (good[..7].to_vec(), None),
            (cut_question, Some(ResponseCode::FormErr)),
            (two.to_vec().unwrap(), Some(ResponseCode::FormErr)),
            (response.to_vec().unwrap(), None),
            (vec![0xab; 4000], None),
        ] {
            socket.send_to(&packet, dns).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let got =
                tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await;
            match (answered, got) {
                (None, Err(_)) => {}
                (Some(code), Ok(Ok((n, _)))) => {
                    let answer = Message::from_vec(&buf[..n]).unwrap();
                    assert_eq!(answer.response_code(), code, "{packet:?}");
                }
                (want, got) => panic!("{packet:?}: want {want:?}, got {got:?}"),
            }
        }
        // Over TCP, a length with nothing behind it and then a closed connection.
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(dns).await.unwrap();
        stream.write_all(&[0x01, 0x00, 0xde, 0xad]).await.unwrap();
        drop(stream);
    }
    assert_eq!(
        resolve(dns, &format!("vm-2-80.{DOMAIN}"), RecordType::A).await,
        (ResponseCode::NoError, vec![node_ip])
    );

    // The tenant renames the IDE's port and names another port of the proxy browser.
    let put = |path: String, token: String, body: Value| {
        let http = http.clone();
        let url = format!("{base}/api/v1{path}");
        async move { call(&http, reqwest::Method::PUT, url, Some(&token), Some(body)).await }
    };
    let delete = |path: String, token: String| {
        let http = http.clone();
        let url = format!("{base}/api/v1{path}");
        async move { call(&http, reqwest::Method::DELETE, url, Some(&token), None).await }
    };
    let (status, vm) = put(
        "/vms/vm-1/ingress/8080".into(),
        token.clone(),
        json!({"name": "myide"}),
    )
    .await;
    assert_eq!(status, 200, "{vm}");
    assert_eq!(
        urls(&vm),
        vec![(
            8080,
            "myide".into(),
            format!("https://myide.{DOMAIN}:{}", caddy.https_port)
        )]
    );
    assert_eq!(vm["access"]["urls"][0]["chosen"], true);
    let (status, vm) = put("/vms/vm-2/ingress/6080".into(), token.clone(), json!({})).await;
    assert_eq!(status, 200, "{vm}");
    assert_eq!(
        urls(&vm).iter().map(|u| u.1.as_str()).collect::<Vec<_>>(),
        ["vm-2-80", "vm-2-6080"]
    );
    let names = ["myide", "vm-2-80", "vm-2-6080", "vm-3-80"];
    wait_served(&caddy, &tag, &names, "Caddy to serve the changed names").await;
    // A renamed port's old name is gone from DNS; its new name and the new port's resolve.
    wait_resolves(dns, "myide").await;
    wait_resolves(dns, "vm-2-6080").await;
    assert_nxdomain(dns, "vm-1-8080").await;

    // Refused with a clear error and nothing changed.
    let snapshot = |token: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let mut all = Vec::new();
            for vm in ["vm-1", "vm-2", "vm-3"] {
                let (_, body) = call(
                    &http,
                    reqwest::Method::GET,
                    format!("{base}/api/v1/vms/{vm}"),
                    Some(&token),
                    None,
                )
                .await;
                all.push(urls(&body));
            }
            all
        }
    };
    let before = snapshot(token.clone()).await;
    let before_caddy = caddy.config();
    for (path, who, body, status, code, says) in [
        (
            "/vms/vm-2/ingress/80",
            &token,
            json!({"name": "myide"}),
            409,
            "name_taken",
            "taken",
        ),
        (
            "/vms/vm-3/ingress/80",
            &token,
            json!({"name": "vm-2-80"}),
            400,
            "invalid_name",
            "derived name",
        ),
        (
            "/vms/vm-2/ingress/80",
            &token,
            json!({"name": "My_App"}),
            400,
            "invalid_name",
            "lowercase",
        ),
        (
            "/vms/vm-2/ingress/80",
            &token,
            json!({"name": "my.app"}),
            400,
            "invalid_name",
            "one DNS label",
        ),
        (
            "/vms/vm-2/ingress/80",
            &token,
            json!({"name": "-app"}),
            400,
            "invalid_name",
            "start or end",
        ),
        (
            "/vms/vm-2/ingress/80",
            &token,
            json!({"name": "www"}),
            400,
            "invalid_name",
            "reserved",
        ),
        (
            "/vms/vm-2/ingress/80",
            &token,
            json!({"name": "x".repeat(64)}),
            400,
            "invalid_name",
            "1 to 63",
        ),
        (
            "/vms/vm-2/ingress/0",
            &token,
            json!({}),
            400,
            "invalid_port",
            "not a port",
        ),
        (
            "/vms/vm-2/ingress/99999",
            &token,
            json!({}),
            400,
            "invalid_port",
            "not a port",
        ),
        (
            "/vms/vm-1/ingress/9000",
            &other,
            json!({"name": "evil"}),
            403,
            "forbidden",
            "",
        ),
        (
            "/vms/vm-1/ingress/8080",
            &other,
            json!({"name": "evil"}),
            403,
            "forbidden",
            "",
        ),
    ] {
        let (got, body) = put(path.into(), who.clone(), body.clone()).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{path}: {body}"
        );
    }
    let (got, body) = delete("/vms/vm-1/ingress/8080".into(), other.clone()).await;
    assert_eq!(got, 403, "{body}");
    let (got, body) = delete("/vms/vm-1/ingress/9000".into(), token.clone()).await;
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (404, Some("not_named")),
        "{body}"
    );
    assert_eq!(snapshot(token.clone()).await, before);
    let (_, their_vms) = get(&http, &base, "/vms", &other).await;
    assert_eq!(their_vms, json!([]));
    // A change would have reached the node within a couple of observation rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(caddy.config(), before_caddy);

    // The orchestrator restarts: the names are kept, served, and still change.
    drop(orchestrator.take());
    orchestrator = Some(start_orchestrator(&config));
    health().await;
    let token = sign_in(&http, &base, &host, chain_id, &tenant_signer).await;
    assert_eq!(snapshot(token.clone()).await, before);
    let (status, vm) = delete("/vms/vm-2/ingress/6080".into(), token.clone()).await;
    assert_eq!(status, 200, "{vm}");
    // The names survived the restart in DNS too.
    wait_resolves(dns, "myide").await;
    let names = ["myide", "vm-2-80", "vm-3-80"];
    wait_served(&caddy, &tag, &names, "Caddy to drop the removed name").await;
    assert_nxdomain(dns, "vm-2-6080").await;

    // A closed lease's VM goes with its routes, and its name is free for another VM.
    tx::send("LeaseEscrow", escrow.closeLease(U256::from(1)))
        .await
        .unwrap();
    wait_for("vm-1 to be terminated", || async {
        let (status, body) = get(&http, &base, "/vms/vm-1", &token).await;
        (status == 200 && body["state"] == "terminated").then_some(())
    })
    .await;
    wait_served(
        &caddy,
        &tag,
        &["vm-2-80", "vm-3-80"],
        "Caddy to drop vm-1's route",
    )
    .await;
    let (_, vm) = get(&http, &base, "/vms/vm-1", &token).await;
    assert_eq!(urls(&vm), vec![]);
    // A terminated VM's name does not resolve; the name then moves to another VM.
    assert_nxdomain(dns, "myide").await;
    let (status, body) = put("/vms/vm-1/ingress/8080".into(), token.clone(), json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "{body}"
    );
    let (status, vm) = put(
        "/vms/vm-2/ingress/80".into(),
        token.clone(),
        json!({"name": "myide"}),
    )
    .await;
    assert_eq!(status, 200, "{vm}");
    wait_served(
        &caddy,
        &tag,
        &["myide", "vm-3-80"],
        "Caddy to serve the name on its new VM",
    )
    .await;
    wait_resolves(dns, "myide").await;
    for lease in [2u64, 3] {
        tx::send("LeaseEscrow", escrow.closeLease(U256::from(lease)))
            .await
            .unwrap();
    }
    wait_served(&caddy, &tag, &[], "Caddy to serve nothing of this node").await;
    for name in ["myide", "vm-3-80"] {
        wait_for(&format!("{name} to stop resolving"), || async {
            let host = format!("{name}.{DOMAIN}");
            (resolve(dns, &host, RecordType::A).await.0 == ResponseCode::NXDomain).then_some(())
        })
        .await;
    }

    let _ = stop_agent.send(true);
    observer.abort();
    drop(orchestrator);
    tokio::time::timeout(Duration::from_secs(10), link)
        .await
        .expect("the agent's link stops")
        .unwrap();
    agent.close().await;
}

async fn uniqueness_holds(store: &Store) {
    let (a, b): (VmId, VmId) = ("vm-1".parse().unwrap(), "vm-2".parse().unwrap());
    let name = |n: &str, guest| IngressName {
        guest,
        name: n.into(),
        chosen: true,
    };
    let none = |_: &[IngressName]| None;
    assert!(matches!(
        store.change_ingress(a, 80, Some(&name("web", 80)), none, 1).await.unwrap(),
        IngressChange::Done(ref names) if names.len() == 1
    ));
    // Another VM, or another port of the same VM, cannot take it.
    assert_eq!(
        store
            .change_ingress(b, 80, Some(&name("web", 80)), none, 2)
            .await
            .unwrap(),
        IngressChange::Taken(a)
    );
    assert_eq!(
        store
            .change_ingress(a, 81, Some(&name("web", 81)), none, 2)
            .await
            .unwrap(),
        IngressChange::Taken(a)
    );
    assert!(store.vm_ingress(b).await.unwrap().is_empty());
    assert_eq!(store.vm_ingress(a).await.unwrap(), vec![name("web", 80)]);
    // Derived names never displace a port's name; freed names can be taken.
    let names = store
        .add_ingress_defaults(
            a,
            &[
                IngressName {
                    guest: 80,
                    name: "vm-1-80".into(),
                    chosen: false,
                },
                IngressName {
                    guest: 8080,
                    name: "vm-1-8080".into(),
                    chosen: false,
                },
            ],
            3,
        )
        .await
        .unwrap();
    assert_eq!(
        names.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["web", "vm-1-8080"]
    );
    store.release_ingress(a).await.unwrap();
    assert!(matches!(
        store
            .change_ingress(b, 80, Some(&name("web", 80)), none, 4)
            .await
            .unwrap(),
        IngressChange::Done(_)
    ));
}

#[tokio::test]
async fn names_are_unique_on_sqlite_and_postgres() {
    let (url, _dir) = support::sqlite_database();
    let store = Store::connect(&url).await.unwrap();
    uniqueness_holds(&store).await;
    // The database itself refuses a second row with a taken name.
    sqlx::any::install_default_drivers();
    for url in [url, support::postgres_database().await] {
        let store = Store::connect(&url).await.unwrap();
        if url.starts_with("postgres") {
            uniqueness_holds(&store).await;
        }
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let insert = |vm: &'static str| {
            sqlx::query(
                "INSERT INTO vm_ingress (vm_id, guest_port, name, chosen, created_at) \
                 VALUES ($1, 80, 'dup', 1, 0)",
            )
            .bind(vm)
            .execute(&pool)
        };
        insert("vm-8").await.unwrap();
        let err = insert("vm-9").await.unwrap_err();
        assert!(
            matches!(&err, sqlx::Error::Database(e) if e.is_unique_violation()),
            "{url}: {err}"
        );
        pool.close().await;
    }
}
