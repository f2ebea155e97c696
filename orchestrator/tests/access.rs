//! A tenant reaches and logs into their VM: the profile (SSH keys, sealing key, ports) checked
//! and stored, the login user and a generated password in the user-data a real agent connection
//! receives, the password sealed to the tenant's wallet and served to the tenant alone, the
//! node's address and forwards from heartbeats in `GET /vms/{id}`, stop/start/reboot through
//! the lifecycle, and no clear password in the database or the logs. SQLite and PostgreSQL.

mod support;

use alloy::{
    primitives::{Address, B256},
    signers::{Signer, local::PrivateKeySigner},
};
use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use decloud_orchestrator::{
    AppState, Config, Store, app,
    clock::now,
    config::SiweConfig,
    lifecycle::{self, Workload},
    scheduler::{Prices, QualityTier},
    store::{LeaseOpened, NodeRecord, NodeStatus, chain::lease_opened},
};
use decloud_sdk::NodeId;
use decloud_sdk::{
    agent_protocol::{
        self as proto, Ack, AckOutcome, AgentMessage, BandwidthTier, Capacity, CommandAction,
        Heartbeat, Hello, NodeResources, PROTOCOL_VERSION, PortForward, PortProtocol, PortSpec,
        Readiness, ServerMessage, VmReport, VmState as AgentVmState,
    },
    credentials::SealingKey,
};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::{
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};
use tower::ServiceExt;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const DOMAIN: &str = "app.decloud.test";
const URI: &str = "https://app.decloud.test";
const CHAIN: u64 = 31337;
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIERmbRxmpvQ4hxusWzab9mGUW2vGk+MoKYYUAqvQsETX alice@laptop";

/// Everything every test of this binary logs, at every level.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        // Everything at the most verbose level, with what the orchestrator pins in its own
        // logging.
        let filter = std::iter::once("trace")
            .chain(decloud_orchestrator::access::LOG_PINNED.iter().copied())
            .collect::<Vec<_>>()
            .join(",");
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(move || LogWriter(writer.clone()))
            .init();
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Server {
    addr: SocketAddr,
    state: AppState,
    store: Store,
}

async fn server(url: &str) -> Server {
    server_with(url, None).await
}

/// [`server`] naming HTTP ports under `ingress`, when given.
async fn server_with(
    url: &str,
    ingress: Option<decloud_orchestrator::config::IngressConfig>,
) -> Server {
    let store = Store::connect(url).await.unwrap();
    let config = Config {
        ingress,
        siwe: SiweConfig {
            domains: vec![DOMAIN.into()],
            uris: vec![URI.into()],
            chain_ids: vec![CHAIN],
            ..SiweConfig::default()
        },
        signin_burst: 1_000,
        ..Config::default()
    };
    let state = AppState::new(store.clone(), config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(state.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server { addr, state, store }
}

impl Server {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        let res = app(self.state.clone()).oneshot(req.unwrap()).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Signs in with EIP-4361 and returns the session token.
    async fn sign_in(&self, signer: &PrivateKeySigner) -> String {
        let (_, nonce) = self
            .call(Method::POST, "/api/v1/auth/nonce", None, None)
            .await;
        let issued = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let message = format!(
            "{DOMAIN} wants you to sign in with your Ethereum account:\n{}\n\nSign in to DeCloud.\n\n\
             URI: {URI}\nVersion: 1\nChain ID: {CHAIN}\nNonce: {}\nIssued At: {issued}",
            signer.address().to_checksum(None),
            nonce["nonce"].as_str().unwrap(),
        );
        let signature = signer.sign_message(message.as_bytes()).await.unwrap();
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/auth/verify",
                Some(json!({"message": message, "signature": signature.to_string()})),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().unwrap().to_string()
    }
}

async fn register(store: &Store, node_id: B256, key: Address) {
    store
        .upsert_node(&NodeRecord {
            node_id: node_id.into(),
            operator: format!("{:#x}", Address::repeat_byte(1)),
            node_key: format!("{key:#x}"),
            status: NodeStatus::Active,
            region: "eu-west".into(),
            endpoint: String::new(),
            metadata_cid: String::new(),
            tags: Vec::new(),
            vcpus: 8,
            memory_gib: 32,
            disk_gib: 500,
            gpus: 0,
            bandwidth_mbps: 1000,
            compute_points: 0,
            prices: Prices::default(),
            registered_at: 0,
            updated_at: 0,
        })
        .await
        .unwrap();
}

async fn send(ws: &mut Ws, msg: &AgentMessage) {
    ws.send(Message::Text(msg.to_json().into())).await.unwrap();
}

async fn next(ws: &mut Ws, wait: Duration) -> Option<ServerMessage> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) | Ok(None) => return None,
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(ServerMessage::from_json(t.as_str()).unwrap());
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

async fn agent(addr: SocketAddr, node_id: B256, key: &PrivateKeySigner) -> Ws {
    let mut ws = connect_async(format!("ws://{addr}/api/v1/agent/ws"))
        .await
        .unwrap()
        .0;
    send(
        &mut ws,
        &AgentMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            node_id,
            address: key.address(),
            agent_version: "test".into(),
        }),
    )
    .await;
    let Some(ServerMessage::Challenge(challenge)) = next(&mut ws, Duration::from_secs(5)).await
    else {
        panic!("no challenge");
    };
    let auth = proto::sign_challenge(key, node_id, &challenge).unwrap();
    send(&mut ws, &AgentMessage::Auth(auth)).await;
    assert!(matches!(
        next(&mut ws, Duration::from_secs(5)).await,
        Some(ServerMessage::Welcome(_))
    ));
    ws
}

fn heartbeat(seq: u64, public_address: Option<&str>, vms: Vec<VmReport>) -> AgentMessage {
    heartbeat_with(seq, public_address, None, vms)
}

/// [`heartbeat`] saying whether the node runs an ingress (`None`: an agent that does not say).
fn heartbeat_with(
    seq: u64,
    public_address: Option<&str>,
    ingress: Option<bool>,
    vms: Vec<VmReport>,
) -> AgentMessage {
    AgentMessage::Heartbeat(Box::new(Heartbeat {
        seq,
        sent_at: 0,
        ready: true,
        public_address: public_address.map(str::to_string),
        ingress,
        resources: NodeResources {
            arch: "x86_64".into(),
            cpu_model: "test".into(),
            cpu_cores: 8,
            memory_mib: 32 * 1024,
            disks: Vec::new(),
            vm_storage_free_bytes: 1 << 40,
            gpus: Vec::new(),
            compute_points: 8_000,
        },
        free: Capacity {
            millicores: 8_000,
            memory_mib: 32 * 1024,
            disk_bytes: 1 << 40,
        },
        vms,
        events: Vec::new(),
        storage: None,
        relay: None,
        tunnel: None,
    }))
}

fn report(vm_id: &str, state: AgentVmState, forwards: Vec<PortForward>) -> VmReport {
    VmReport {
        id: vm_id.into(),
        state,
        readiness: Readiness {
            ready: true,
            probes: Vec::new(),
        },
        addresses: vec!["192.168.122.10".into()],
        forwards,
        error: None,
    }
}

async fn ack(ws: &mut Ws, command_id: String, vm: Option<VmReport>) {
    send(
        ws,
        &AgentMessage::Ack(Ack {
            command_id,
            outcome: AckOutcome::Done {
                vm,
                user_data_sha256: None,
            },
        }),
    )
    .await;
}

/// Acknowledges a create as its node does: done, with the digest of the user-data it ran.
async fn ack_create(ws: &mut Ws, create: &proto::Command, user_data: &str, vm: VmReport) {
    send(
        ws,
        &AgentMessage::Ack(Ack {
            command_id: create.id.clone(),
            outcome: AckOutcome::Done {
                vm: Some(vm),
                user_data_sha256: Some(proto::user_data_sha256(user_data)),
            },
        }),
    )
    .await;
}

async fn command(ws: &mut Ws) -> proto::Command {
    match next(ws, Duration::from_secs(5)).await {
        Some(ServerMessage::Command(c)) => c,
        other => panic!("expected a command, got {other:?}"),
    }
}

async fn eventually<F: AsyncFn() -> bool>(what: &str, check: F) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Records a lease the way the chain follower does (with its bandwidth tier and no template).
async fn open_lease_on_chain(store: &Store, lease_id: &str, tenant: Address, node_id: B256) {
    let mut conn = store.follower_database().pool.acquire().await.unwrap();
    lease_opened(
        &mut conn,
        &LeaseOpened {
            lease_id: lease_id.parse().unwrap(),
            tenant: format!("{tenant:#x}"),
            node_id: node_id.into(),
            tier: QualityTier::Standard,
            vcpus: 1,
            memory_gib: 1,
            storage_gib: 10,
            gpus: 0,
            rate_per_hour: 1_000,
            opened_at: now(),
            bandwidth: BandwidthTier::Performance as u64,
            template_id: None,
            funding: 1_000_000_000,
        },
        format!("vm-{lease_id}").parse().unwrap(),
    )
    .await
    .unwrap();
}

fn workload() -> Workload {
    Workload {
        image: "debian-12".into(),
        user_data: String::new(),
        bandwidth: BandwidthTier::Basic,
        grace_secs: 86_400,
        reconnect_grace_until: 0,
        ingress: None,
    }
}

/// Every row of every table, as text, on PostgreSQL.
async fn postgres_dump(url: &str) -> String {
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut dump = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT row_to_json(t)::text FROM \"{table}\" t"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        dump.push_str(&rows.join("\n"));
    }
    pool.close().await;
    dump
}

async fn tenant_reaches_and_logs_into_the_vm(url: &str, sqlite_dir: Option<&std::path::Path>) {
    let logs = logs();
    let s = server(url).await;
    let node_key = PrivateKeySigner::random();
    let node_id = B256::left_padding_from(node_key.address().as_slice());
    register(&s.store, node_id, node_key.address()).await;
    let mut ws = agent(s.addr, node_id, &node_key).await;
    send(&mut ws, &heartbeat(1, Some("203.0.113.7"), Vec::new())).await;

    let tenant = PrivateKeySigner::random();
    let stranger = PrivateKeySigner::random();
    let token = s.sign_in(&tenant).await;
    let other = s.sign_in(&stranger).await;

    // Bad profile values are refused with the reason, and nothing is stored.
    for (bad, code) in [
        (
            json!({"ssh_keys": [KEY, "ssh-ed25519 AAAA"]}),
            "invalid_ssh_key",
        ),
        (json!({"sealing_key": "0x1234"}), "invalid_sealing_key"),
        (
            json!({"ports": [{"guest": 80, "protocol": "tcp"}, {"guest": 80, "protocol": "tcp"}]}),
            "invalid_ports",
        ),
        (
            json!({"ports": [{"guest": 0, "protocol": "udp"}]}),
            "invalid_ports",
        ),
    ] {
        let (status, body) = s
            .call(Method::PUT, "/api/v1/profile", Some(bad), Some(&token))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    let (_, profile) = s
        .call(Method::GET, "/api/v1/profile", None, Some(&token))
        .await;
    assert_eq!(
        profile,
        json!({"ssh_keys": [], "sealing_key": null, "ports": []})
    );

    let sealing = SealingKey::derive(&tenant, CHAIN).await.unwrap();
    let (status, body) = s
        .call(
            Method::PUT,
            "/api/v1/profile",
            Some(json!({
                "ssh_keys": [format!("{KEY}\n")],
                "sealing_key": sealing.public_hex(),
                "ports": [{"guest": 8080, "protocol": "tcp"}, {"guest": 53, "protocol": "udp"}],
            })),
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ssh_keys"], json!([KEY]));

    // The lease is opened on-chain; the VM is created with the profile in effect.
    open_lease_on_chain(&s.store, "7", tenant.address(), node_id).await;
    lifecycle::drive(s.state.store(), s.state.agents(), &workload())
        .await
        .unwrap();
    let create = command(&mut ws).await;
    let CommandAction::CreateVm { spec } = &create.action else {
        panic!("{create:?}")
    };
    assert_eq!(
        spec.bandwidth,
        BandwidthTier::Performance,
        "the lease's tier"
    );
    let tcp = |guest| PortSpec {
        guest,
        protocol: PortProtocol::Tcp,
    };
    assert_eq!(
        spec.ports,
        vec![
            tcp(22),
            tcp(8080),
            PortSpec {
                guest: 53,
                protocol: PortProtocol::Udp
            }
        ]
    );
    assert!(
        spec.user_data.starts_with("#cloud-config\n"),
        "{}",
        spec.user_data
    );
    let user_data: serde_yaml::Value =
        serde_yaml::from_str(&spec.user_data["#cloud-config\n".len()..]).unwrap();
    let login = &user_data["users"][1];
    assert_eq!(login["name"], "decloud");
    assert_eq!(login["ssh_authorized_keys"][0], KEY);
    let password = login["plain_text_passwd"].as_str().unwrap().to_string();
    assert!(password.len() >= 16);

    // The tenant opens the sealed password with the wallet; nobody else gets or opens it.
    let (status, sealed) = s
        .call(
            Method::GET,
            "/api/v1/vms/vm-7/credentials",
            None,
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sealed}");
    let blob = sealed["sealed"].as_str().unwrap();
    assert!(!blob.contains(&password));
    let opened = SealingKey::derive(&tenant, CHAIN)
        .await
        .unwrap()
        .open(blob, "vm-7")
        .unwrap();
    assert_eq!(
        (opened.user.as_str(), opened.password.as_str()),
        ("decloud", password.as_str())
    );
    let stranger_key = SealingKey::derive(&stranger, CHAIN).await.unwrap();
    assert!(stranger_key.open(blob, "vm-7").is_err());
    for path in ["/api/v1/vms/vm-7/credentials", "/api/v1/vms/vm-7"] {
        let (status, body) = s.call(Method::GET, path, None, Some(&other)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(!body.to_string().contains(blob));
    }

    // The node creates it and reports the forwards; the tenant sees how to reach it.
    let ssh = PortForward {
        guest: 22,
        public: 40022,
        protocol: PortProtocol::Tcp,
    };
    let CommandAction::CreateVm { spec } = &create.action else {
        panic!("{create:?}")
    };
    ack_create(
        &mut ws,
        &create,
        &spec.user_data,
        report("vm-7", AgentVmState::Running, vec![ssh]),
    )
    .await;
    send(
        &mut ws,
        &heartbeat(
            2,
            Some("203.0.113.7"),
            vec![report("vm-7", AgentVmState::Running, vec![ssh])],
        ),
    )
    .await;
    eventually("the vm to run with its forwards", async || {
        let (_, vm) = s
            .call(Method::GET, "/api/v1/vms/vm-7", None, Some(&token))
            .await;
        vm["state"] == "running"
            && vm["access"]["forwards"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
    })
    .await;
    let (_, vm) = s
        .call(Method::GET, "/api/v1/vms/vm-7", None, Some(&token))
        .await;
    assert_eq!(vm["access"]["public_address"], "203.0.113.7");
    assert_eq!(vm["access"]["addresses"], json!(["192.168.122.10"]));
    assert_eq!(
        vm["access"]["forwards"],
        json!([{"guest": 22, "public": 40022, "protocol": "tcp"}])
    );
    assert_eq!(
        vm["access"]["ssh_command"],
        "ssh -p 40022 decloud@203.0.113.7"
    );
    assert_eq!(vm["access"]["has_credentials"], true);
    // A node cannot speak for a VM placed on another node.
    let intruder_key = PrivateKeySigner::random();
    let intruder = B256::left_padding_from(intruder_key.address().as_slice());
    register(&s.store, intruder, intruder_key.address()).await;
    let mut iws = agent(s.addr, intruder, &intruder_key).await;
    let fake = PortForward {
        guest: 22,
        public: 1,
        protocol: PortProtocol::Tcp,
    };
    send(
        &mut iws,
        &heartbeat(
            1,
            None,
            vec![report("vm-7", AgentVmState::Running, vec![fake])],
        ),
    )
    .await;

    // Control: refused for another tenant and where it makes no sense, carried out otherwise.
    let (status, body) = s
        .call(Method::POST, "/api/v1/vms/vm-7/stop", None, Some(&other))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = s
        .call(Method::POST, "/api/v1/vms/vm-7/start", None, Some(&token))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "invalid_state");
    let (status, body) = s
        .call(Method::POST, "/api/v1/vms/vm-7/reboot", None, Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "running");
    let reboot = command(&mut ws).await;
    assert!(matches!(&reboot.action, CommandAction::RebootVm { vm_id } if vm_id == "vm-7"));
    ack(&mut ws, reboot.id, None).await;

    let (status, body) = s
        .call(Method::POST, "/api/v1/vms/vm-7/stop", None, Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "stopping");
    let stop = command(&mut ws).await;
    assert!(matches!(&stop.action, CommandAction::StopVm { vm_id } if vm_id == "vm-7"));
    ack(&mut ws, stop.id, None).await;
    eventually("the vm to stop", async || {
        s.store
            .vm("vm-7".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str()
            == "stopped"
    })
    .await;
    // The lease is funded, but a VM its tenant stopped stays stopped.
    lifecycle::drive(s.state.store(), s.state.agents(), &workload())
        .await
        .unwrap();
    assert_eq!(
        s.store
            .vm("vm-7".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str(),
        "stopped"
    );
    let (status, _) = s
        .call(Method::POST, "/api/v1/vms/vm-7/reboot", None, Some(&token))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, body) = s
        .call(Method::POST, "/api/v1/vms/vm-7/start", None, Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "provisioning");
    let start = command(&mut ws).await;
    assert!(matches!(&start.action, CommandAction::StartVm { vm_id } if vm_id == "vm-7"));
    ack(
        &mut ws,
        start.id,
        Some(report("vm-7", AgentVmState::Running, vec![ssh])),
    )
    .await;
    eventually("the vm to run again", async || {
        s.store
            .vm("vm-7".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str()
            == "running"
    })
    .await;
    let (_, vm) = s
        .call(Method::GET, "/api/v1/vms/vm-7", None, Some(&token))
        .await;
    assert_eq!(
        vm["access"]["forwards"][0]["public"], 40022,
        "the intruder's report was ignored"
    );

    // A tenant without a sealing key gets SSH-key login only, and no credentials.
    let plain = PrivateKeySigner::random();
    let plain_token = s.sign_in(&plain).await;
    open_lease_on_chain(&s.store, "8", plain.address(), node_id).await;
    lifecycle::drive(s.state.store(), s.state.agents(), &workload())
        .await
        .unwrap();
    let create = command(&mut ws).await;
    let CommandAction::CreateVm { spec } = &create.action else {
        panic!("{create:?}")
    };
    assert!(
        spec.user_data.contains("lock_passwd: true"),
        "{}",
        spec.user_data
    );
    assert!(!spec.user_data.contains("plain_text_passwd"));
    let (status, body) = s
        .call(
            Method::GET,
            "/api/v1/vms/vm-8/credentials",
            None,
            Some(&plain_token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "no_credentials");

    // The password was on the wire to the node and nowhere else: not in the database, not in
    // the logs.
    let stored = match sqlite_dir {
        Some(dir) => {
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(dir).unwrap() {
                bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        None => postgres_dump(url).await,
    };
    assert!(stored.contains("vm-7"), "the dump holds the vm");
    assert!(
        !stored.contains(&password),
        "clear password in the database"
    );
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logged.contains("vm-7"), "the logs were captured");
    let leaking: Vec<&str> = logged.lines().filter(|l| l.contains(&password)).collect();
    assert!(
        leaking.is_empty(),
        "clear password in the logs: {leaking:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_reaches_and_logs_into_the_vm_on_sqlite() {
    let (url, dir) = support::sqlite_database();
    tenant_reaches_and_logs_into_the_vm(&url, Some(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_reaches_and_logs_into_the_vm_on_postgres() {
    let url = support::postgres_database().await;
    tenant_reaches_and_logs_into_the_vm(&url, None).await;
}

/// A create command that waited through a restart was sealed to a key the new process does not
/// have: it is put together again (new password, sealed to the tenant again) and delivered.
#[tokio::test(flavor = "multi_thread")]
async fn a_create_command_sealed_before_a_restart_is_put_together_again() {
    let (url, _dir) = support::sqlite_database();
    let s = server(&url).await;
    let node_key = PrivateKeySigner::random();
    let node_id = B256::left_padding_from(node_key.address().as_slice());
    register(&s.store, node_id, node_key.address()).await;
    s.store
        .set_compute_points(NodeId::from(node_id), 8_000)
        .await
        .unwrap();
    // Online, as a heartbeat books it; the agent connects only after the restart.
    s.store
        .record_heartbeat(NodeId::from(node_id), now())
        .await
        .unwrap();
    let tenant = PrivateKeySigner::random();
    let sealing = SealingKey::derive(&tenant, CHAIN).await.unwrap();
    s.store
        .put_profile(
            &format!("{:#x}", tenant.address()),
            &decloud_orchestrator::store::Profile {
                ssh_keys: vec![KEY.into()],
                sealing_key: Some(sealing.public_hex()),
                ports: Vec::new(),
            },
            now(),
        )
        .await
        .unwrap();
    open_lease_on_chain(&s.store, "9", tenant.address(), node_id).await;
    // Before the restart its agent was connected and had reported (placement waits for that).
    let session = s.state.agents().open_session(NodeId::from(node_id));
    s.state.agents().record_report(&session, Vec::new(), now());
    lifecycle::drive(s.state.store(), s.state.agents(), &workload())
        .await
        .unwrap();
    let queued = s
        .store
        .due_commands(NodeId::from(node_id), i64::MAX)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    let first_sealed = s
        .store
        .vm_credentials("vm-9".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let first_password = sealing.open(&first_sealed.sealed, "vm-9").unwrap().password;
    let action: CommandAction = serde_json::from_str(&queued[0].action).unwrap();
    let CommandAction::CreateVm { spec: first } =
        decloud_orchestrator::access::open_for_node(action.clone()).unwrap()
    else {
        panic!("not a create")
    };
    assert!(first.user_data.contains(&first_password));
    // What an earlier run left: user-data sealed to a key this process never had.
    let CommandAction::CreateVm { mut spec } = action else {
        panic!("not a create")
    };
    let earlier = SealingKey::generate();
    spec.user_data = format!(
        "decloud-sealed-for-node:{}",
        decloud_sdk::credentials::seal_bytes(&earlier.public_hex(), b"vm-9", b"#cloud-config\n")
            .unwrap()
    );
    let stale = serde_json::to_string(&CommandAction::CreateVm { spec }).unwrap();
    assert!(
        s.store
            .replace_command_action(&queued[0].command_id, &stale)
            .await
            .unwrap()
    );

    let mut ws = agent(s.addr, node_id, &node_key).await;
    let create = command(&mut ws).await;
    let CommandAction::CreateVm { spec } = &create.action else {
        panic!("{create:?}")
    };
    assert!(spec.user_data.contains(KEY), "{}", spec.user_data);
    let password = spec
        .user_data
        .lines()
        .find_map(|l| l.trim().strip_prefix("plain_text_passwd: "))
        .expect("a new password")
        .trim_matches('\'');
    let sealed = s
        .store
        .vm_credentials("vm-9".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sealing.open(&sealed.sealed, "vm-9").unwrap().password,
        password
    );
    assert_ne!(password, first_password);
    assert_eq!(
        s.store
            .vm("vm-9".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str(),
        "provisioning"
    );

    // The node had run the first user-data before the restart, so it answers the command id with
    // that run's outcome: the tenant's sealed passwords are again those the VM holds.
    ack_create(
        &mut ws,
        &create,
        &first.user_data,
        report("vm-9", AgentVmState::Running, Vec::new()),
    )
    .await;
    eventually("the vm to run", async || {
        s.store
            .vm("vm-9".parse().unwrap())
            .await
            .unwrap()
            .is_some_and(|vm| vm.state.as_str() == "running")
    })
    .await;
    let sealed = s
        .store
        .vm_credentials("vm-9".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sealing.open(&sealed.sealed, "vm-9").unwrap().password,
        first_password
    );
}

/// Every create acknowledgement settles the VM's setup: the versions kept while it was
/// unacknowledged go, and a digest nobody recorded (or none) changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn setup_versions_are_settled_by_the_create_acknowledgement() {
    let (url, _dir) = support::sqlite_database();
    let store = Store::connect(&url).await.unwrap();
    let vm: decloud_sdk::VmId = "vm-3".parse().unwrap();
    let ssh = [PortSpec {
        guest: 22,
        protocol: PortProtocol::Tcp,
    }];
    let web = [
        ssh[0],
        PortSpec {
            guest: 8080,
            protocol: PortProtocol::Tcp,
        },
    ];
    let (first, second) = (B256::repeat_byte(1), B256::repeat_byte(2));
    store
        .record_vm_setup(vm, "decloud", &ssh, Some(("key", "sealed-1")), first, 10)
        .await
        .unwrap();
    store
        .record_vm_setup(vm, "decloud", &web, Some(("key", "sealed-2")), second, 20)
        .await
        .unwrap();
    let sealed = async || store.vm_credentials(vm).await.unwrap().unwrap().sealed;
    assert_eq!(sealed().await, "sealed-2");

    // An unknown digest (or none) keeps the latest setup, and forgets the versions.
    assert!(
        !store
            .settle_vm_setup(vm, Some(B256::repeat_byte(9)), 30)
            .await
            .unwrap()
    );
    assert_eq!(sealed().await, "sealed-2");
    assert!(!store.settle_vm_setup(vm, Some(first), 30).await.unwrap());
    assert_eq!(sealed().await, "sealed-2");

    // The first version, when the node ran it: its seal and ports come back.
    store
        .record_vm_setup(vm, "decloud", &ssh, Some(("key", "sealed-1")), first, 40)
        .await
        .unwrap();
    store
        .record_vm_setup(vm, "decloud", &web, Some(("key", "sealed-2")), second, 50)
        .await
        .unwrap();
    assert!(store.settle_vm_setup(vm, Some(first), 60).await.unwrap());
    assert_eq!(sealed().await, "sealed-1");
    let access = store.vm_access(vm, NodeId::from(B256::ZERO)).await.unwrap();
    assert_eq!(access.ports, ssh);
    // Settled once: a repeated acknowledgement finds nothing to put back.
    assert!(!store.settle_vm_setup(vm, Some(second), 70).await.unwrap());
    assert_eq!(sealed().await, "sealed-1");
}

/// A node whose agent says it runs no ingress: under an orchestrator with an ingress domain, the
/// HTTP port of its VM's template is forwarded directly (no name that would answer nowhere), the
/// API says so, and naming a port of it is refused with nothing changed.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_without_an_ingress_gets_http_ports_forwarded_directly() {
    let (url, _dir) = support::sqlite_database();
    let ingress = decloud_orchestrator::config::IngressConfig {
        domain: "apps.decloud.test".into(),
        https_port: 443,
        ..Default::default()
    };
    let s = server_with(&url, Some(ingress.clone())).await;
    // VS Code Server marks 8080 http; it is on-chain template 1 here.
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/seed");
    decloud_orchestrator::catalog::load_dir(&s.store, &seeds, now())
        .await
        .unwrap();
    let bundle = decloud_templates::Bundle::load_dir(seeds.join("vscode-server")).unwrap();
    {
        let mut conn = s.store.follower_database().pool.acquire().await.unwrap();
        decloud_orchestrator::store::chain::template_published(
            &mut conn,
            1u64.into(),
            0,
            &bundle.cid().to_string(),
        )
        .await
        .unwrap();
    }
    let node_key = PrivateKeySigner::random();
    let node_id = B256::left_padding_from(node_key.address().as_slice());
    register(&s.store, node_id, node_key.address()).await;
    s.store
        .set_compute_points(NodeId::from(node_id), 8_000)
        .await
        .unwrap();
    let mut ws = agent(s.addr, node_id, &node_key).await;
    send(
        &mut ws,
        &heartbeat_with(1, Some("203.0.113.8"), Some(false), Vec::new()),
    )
    .await;
    let tenant = PrivateKeySigner::random();
    let token = s.sign_in(&tenant).await;
    {
        let mut conn = s.store.follower_database().pool.acquire().await.unwrap();
        lease_opened(
            &mut conn,
            &LeaseOpened {
                lease_id: "4".parse().unwrap(),
                tenant: format!("{:#x}", tenant.address()),
                node_id: node_id.into(),
                tier: QualityTier::Standard,
                vcpus: 1,
                memory_gib: 1,
                storage_gib: 10,
                gpus: 0,
                rate_per_hour: 1_000,
                opened_at: now(),
                bandwidth: BandwidthTier::Basic as u64,
                template_id: Some(1u64.into()),
                funding: 1_000_000_000,
            },
            "vm-4".parse().unwrap(),
        )
        .await
        .unwrap();
    }
    let workload = Workload {
        ingress: Some(ingress),
        ..workload()
    };
    let node_says = async || {
        s.store
            .vm_access("vm-4".parse().unwrap(), NodeId::from(node_id))
            .await
            .unwrap()
            .node_ingress
            == Some(false)
    };
    eventually("the node's report booked", node_says).await;
    lifecycle::drive(s.state.store(), s.state.agents(), &workload)
        .await
        .unwrap();
    let create = command(&mut ws).await;
    let CommandAction::CreateVm { spec } = &create.action else {
        panic!("{create:?}")
    };
    assert!(spec.ingress.is_empty(), "{spec:?}");
    assert!(
        spec.ports.contains(&PortSpec {
            guest: 8080,
            protocol: PortProtocol::Tcp
        }),
        "the http port is forwarded directly: {:?}",
        spec.ports
    );
    let forward = PortForward {
        guest: 8080,
        public: 48080,
        protocol: PortProtocol::Tcp,
    };
    ack(
        &mut ws,
        create.id.clone(),
        Some(report("vm-4", AgentVmState::Running, vec![forward])),
    )
    .await;
    let running = async || {
        s.store
            .vm("vm-4".parse().unwrap())
            .await
            .unwrap()
            .is_some_and(|vm| vm.state.as_str() == "running")
    };
    eventually("vm-4 running", running).await;
    let (status, vm) = s
        .call(Method::GET, "/api/v1/vms/vm-4", None, Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(vm["access"]["node_ingress"], false, "{vm}");
    assert_eq!(vm["access"]["urls"], json!([]), "{vm}");
    for body in [json!({"name": "myide"}), json!({})] {
        let (status, refused) = s
            .call(
                Method::PUT,
                "/api/v1/vms/vm-4/ingress/8080",
                Some(body),
                Some(&token),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{refused}");
        assert_eq!(
            refused["error"]["code"], "node_without_ingress",
            "{refused}"
        );
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("forwarded directly"),
            "{refused}"
        );
    }
    assert!(
        s.store
            .vm_ingress("vm-4".parse().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    // The name is still free for a VM whose node serves names.
    let (status, free) = s
        .call(Method::GET, "/api/v1/ingress/names/myide", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{free}");
    assert_eq!(free["url"], "https://myide.apps.decloud.test");
}
