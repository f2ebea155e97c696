//! A VM's serial console end to end: the orchestrator's router on a real socket with its SQLite
//! store, a real node agent connected over its outbound link, and a real guest (the busybox test
//! guest under QEMU through the system libvirtd, with a shell on its serial port). A tenant's
//! WebSocket types into the shell and reads the answer; other tenants, unknown VMs and callers
//! without a session are refused before the upgrade in the API's error shape; closing the socket
//! ends the session on the agent.

mod support;

use alloy::{primitives::Address, signers::local::PrivateKeySigner};
use decloud_node_agent::{
    Agent, Backoff, ConfigLayer, DomainType, Identity, ImageConfig, NetworkConfig,
    create_blank_qcow2, run_link, test_guest,
};
use decloud_orchestrator::{
    AppState, Config, Store, app,
    auth::token_hash,
    clock::now,
    scheduler::{Prices, QualityTier},
    store::{LeaseRecord, NodeRecord, NodeStatus, SessionRecord, VmRecord},
};
use decloud_sdk::{
    agent_protocol::{BandwidthTier, NodeResources, QualityTier as AgentTier, VmSpec},
    types::{LeaseStatus, VmState},
};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue},
};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const VM: &str = "vm-console";
/// Generous for an emulated boot on a shared two-core machine; a bound, not a measurement.
const WAIT: Duration = Duration::from_secs(180);

async fn eventually<F: AsyncFn() -> bool>(what: &str, check: F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session token for `address`, issued the way sign-in issues one.
async fn session_token(store: &Store, address: Address, nonce: &str) -> String {
    let token = format!("token-{nonce}");
    store.create_nonce(nonce, now(), now() + 600).await.unwrap();
    store
        .consume_nonce_and_create_session(
            nonce,
            now(),
            &token_hash(&token),
            &SessionRecord {
                address: format!("{address:#x}"),
                chain_id: 31337,
                expires_at: now() + 3600,
            },
        )
        .await
        .unwrap();
    token
}

/// Opens the console WebSocket; `Err` carries the HTTP refusal as (status, JSON body).
async fn open(
    addr: SocketAddr,
    vm: &str,
    token: Option<&str>,
    query_token: bool,
) -> Result<Ws, (u16, Value)> {
    let query = match (token, query_token) {
        (Some(t), true) => format!("?access_token={t}"),
        _ => String::new(),
    };
    let mut request = format!("ws://{addr}/api/v1/vms/{vm}/console{query}")
        .into_client_request()
        .unwrap();
    if let (Some(t), false) = (token, query_token) {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    match connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            Err((
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ))
        }
        Err(e) => panic!("console connection failed: {e}"),
    }
}

/// Reads until the output contains `needle`; panics if the server closes first.
async fn read_until(ws: &mut Ws, needle: &str) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + WAIT;
    while !text.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => text.push_str(&String::from_utf8_lossy(&data)),
            Ok(Some(Ok(Message::Close(frame)))) => {
                panic!("closed ({frame:?}) before {needle:?}; output:\n{text}")
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("connection ended ({other:?}) before {needle:?}; output:\n{text}"),
            Err(_) => panic!("{needle:?} did not come; output:\n{text}"),
        }
    }
    text
}

/// The close reason the server sends.
async fn close_reason(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a close frame")
        {
            Some(Ok(Message::Close(Some(frame)))) => return frame.reason.to_string(),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return String::new(),
            Some(Ok(_)) => {}
        }
    }
}

fn assert_refused(result: Result<Ws, (u16, Value)>, status: u16, code: &str) -> String {
    let Err((got, body)) = result else {
        panic!("the console opened; expected {status} {code}");
    };
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    body["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_types_into_its_vms_console_and_no_one_else_can() {
    if let Err(e) = decloud_node_agent::Hypervisor::open("qemu:///system") {
        panic!("this test needs libvirtd and virtlogd running (scripts/test starts them): {e}");
    }
    // The orchestrator: its router on a real socket over a real store.
    let (url, _db) = support::sqlite_database();
    let store = Store::connect(&url).await.unwrap();
    let state = AppState::new(store.clone(), Config::default()).unwrap();
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

    // The node agent on the system libvirtd, with the test guest as its image.
    let dir = tempfile::Builder::new()
        .prefix("decloud-console-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    // QEMU runs as its own user and must reach the VM's files.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kernel = test_guest::find_kernel().unwrap();
    let initrd = dir.path().join("test-guest.cpio");
    test_guest::build_initramfs(&test_guest::kernel_release(&kernel).unwrap(), &initrd).unwrap();
    let base = dir.path().join("base.qcow2");
    create_blank_qcow2(&base, 16).unwrap();
    let operator = Address::repeat_byte(0x42);
    let agent_config = decloud_node_agent::Config::resolve(
        None,
        ConfigLayer {
            data_dir: Some(dir.path().join("data")),
            libvirt_uri: Some("qemu:///system".into()),
            domain_type: Some(DomainType::Qemu),
            operator: Some(operator),
            machine_id: Some("orchestrator-console-test".into()),
            shutdown_timeout_secs: Some(2),
            network: Some(NetworkConfig::User),
            images: BTreeMap::from([(
                "test-guest".to_string(),
                ImageConfig {
                    base,
                    kernel: Some(kernel),
                    initrd: Some(initrd),
                    cmdline: Some(test_guest::CMDLINE.into()),
                },
            )]),
            ..Default::default()
        },
        ConfigLayer::default(),
    )
    .unwrap();
    let (identity, _) = Identity::load_or_create(&agent_config).unwrap();
    let node_id = format!("{:#x}", identity.node_id);
    let node_key = identity.address();
    let agent = Agent::open(
        agent_config,
        identity,
        NodeResources {
            arch: std::env::consts::ARCH.into(),
            cpu_model: "test".into(),
            cpu_cores: 2,
            memory_mib: 2048,
            disks: vec![],
            vm_storage_free_bytes: 1 << 30,
            gpus: vec![],
            compute_points: 100,
        },
    )
    .await
    .unwrap();
    agent.reconcile().await.unwrap();

    // The orchestrator knows the node (by its key), the lease and the VM, which is Alice's.
    let alice = PrivateKeySigner::random().address();
    let bob = PrivateKeySigner::random().address();
    store
        .upsert_node(&NodeRecord {
            node_id: node_id.clone(),
            operator: format!("{operator:#x}"),
            node_key: format!("{node_key:#x}"),
            status: NodeStatus::Active,
            region: "eu-west".into(),
            endpoint: String::new(),
            metadata_cid: String::new(),
            tags: Vec::new(),
            vcpus: 2,
            memory_gib: 2,
            disk_gib: 10,
            gpus: 0,
            bandwidth_mbps: 100,
            compute_points: 0,
            prices: Prices::default(),
            registered_at: 0,
            updated_at: 0,
        })
        .await
        .unwrap();
    store
        .upsert_lease(&LeaseRecord {
            lease_id: "1".into(),
            tenant: format!("{alice:#x}"),
            node_id: node_id.clone(),
            status: LeaseStatus::Active,
            tier: QualityTier::Dedicated,
            vcpus: 1,
            memory_gib: 1,
            storage_gib: 1,
            gpus: 0,
            rate_per_hour: 1,
            opened_at: 1,
        })
        .await
        .unwrap();
    store
        .insert_vm(&VmRecord {
            vm_id: VM.into(),
            lease_id: "1".into(),
            tenant: format!("{alice:#x}"),
            node_id: node_id.clone(),
            state: VmState::Running,
            tier: QualityTier::Dedicated,
            vcpus: 1,
            memory_gib: 1,
            disk_gib: 1,
            gpus: 0,
            created_at: 1,
            updated_at: 1,
            failure: None,
        })
        .await
        .unwrap();
    let alice_token = session_token(&store, alice, "nonce-alice").await;
    let bob_token = session_token(&store, bob, "nonce-bob").await;

    // Before the node's agent is connected, the console is unreachable, and says so.
    let message = assert_refused(
        open(addr, VM, Some(&alice_token), false).await,
        409,
        "node_unreachable",
    );
    assert!(message.contains("no agent connected"), "{message}");

    agent
        .create_vm(VmSpec {
            id: VM.into(),
            image: "test-guest".into(),
            vcpus: 1,
            memory_mib: 256,
            disk_gib: 1,
            quality: AgentTier::Dedicated,
            bandwidth: BandwidthTier::Basic,
            hostname: None,
            user_data: "#cloud-config\n".into(),
            ports: vec![],
            readiness: vec![],
        })
        .await
        .unwrap();
    let log = agent.vm_dir(VM).join("console.log");
    eventually("the guest to start its shell", async || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Cloud-init v. test-guest finished at")
    })
    .await;
    let (stop_link, link_stopped) = tokio::sync::watch::channel(false);
    let link = tokio::spawn(run_link(
        agent.clone(),
        format!("ws://{addr}/api/v1/agent/ws"),
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
        link_stopped,
    ));
    eventually("the agent to connect", async || {
        state.agents().consoles().is_linked(&node_id)
    })
    .await;

    // Refusals come before the upgrade, in the API's error shape.
    assert_refused(open(addr, VM, None, false).await, 401, "missing_session");
    assert_refused(
        open(addr, VM, Some("forged"), false).await,
        401,
        "invalid_session",
    );
    let message = assert_refused(
        open(addr, VM, Some(&bob_token), false).await,
        403,
        "forbidden",
    );
    assert!(message.contains("belongs to another address"), "{message}");
    assert_refused(
        open(addr, "vm-unknown", Some(&alice_token), false).await,
        404,
        "not_found",
    );
    assert!(
        agent.consoles().attached().is_empty(),
        "no refused request reached the agent"
    );

    // Alice types into the guest's shell and reads its answer (the typed line echoes as
    // `hello-$((6*7))`, so `hello-42` is the shell's result).
    let mut first = open(addr, VM, Some(&alice_token), false).await.unwrap();
    first
        .send(Message::binary(b"echo hello-$((6*7))\r".to_vec()))
        .await
        .unwrap();
    read_until(&mut first, "hello-42").await;
    assert_eq!(agent.consoles().attached().len(), 1);

    // A browser passes the token as a query parameter; its session replaces the first, which
    // is closed with the reason.
    let mut second = open(addr, VM, Some(&alice_token), true).await.unwrap();
    let reason = close_reason(&mut first).await;
    assert!(reason.contains("replaced"), "{reason}");
    second
        .send(Message::text("echo hello-$((7*8))\r"))
        .await
        .unwrap();
    read_until(&mut second, "hello-56").await;

    // Closing the socket ends the session on the agent.
    second.close(None).await.unwrap();
    eventually("the agent to end the session", async || {
        agent.consoles().attached().is_empty() && state.agents().consoles().sessions() == 0
    })
    .await;

    // The link carried heartbeats all along: the node is online in the store.
    let liveness = store.liveness(&node_id).await.unwrap();
    assert!(liveness.is_some(), "heartbeats were booked");

    let _ = stop_link.send(true);
    tokio::time::timeout(Duration::from_secs(10), link)
        .await
        .expect("the link stops")
        .unwrap();
    agent.delete_vm(VM).await.unwrap();
    agent.close().await;
}
