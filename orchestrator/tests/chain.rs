//! Lease events on a real anvil chain, read by the indexer's follower, drive a VM through its
//! lifecycle on a node agent connected over a real WebSocket.

mod support;

use alloy::{
    network::TransactionBuilder,
    node_bindings::Anvil,
    primitives::{Address, B256, Bytes, U256},
    providers::{Provider, ProviderBuilder},
    rpc::types::TransactionRequest,
    signers::local::PrivateKeySigner,
};
use decloud_indexer::{Follower, FollowerConfig};
use decloud_orchestrator::{
    AppState, Config, Store, app,
    chain::ChainHandler,
    lifecycle::{self, Workload},
};
use decloud_sdk::NodeId;
use decloud_sdk::agent_protocol::{
    self as proto, Ack, AckOutcome, AgentMessage, BandwidthTier, Capacity, CommandAction,
    Heartbeat, Hello, NodeResources, PROTOCOL_VERSION, Readiness, ServerMessage, VmReport,
    VmState as AgentVmState,
};
use decloud_sdk::testing::SendOk as _;
use futures_util::{SinkExt, StreamExt};
use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};
use tokio_tungstenite::{connect_async, tungstenite::Message};

mod fixture {
    #![allow(clippy::too_many_arguments)]
    alloy::sol! {
        #[sol(rpc)]
        interface IEventSource {
            struct Capabilities { uint32 vcpus; uint32 memoryGiB; uint32 diskGiB; uint16 gpus; uint32 bandwidthMbps; uint8 architecture; uint32 flags; }
            struct Resources { uint32 vcpus; uint32 memoryGiB; uint32 storageGiB; uint16 gpus; }
            struct Prices { uint64 cpuPerHour; uint64 memoryGiBPerHour; uint64 storageGiBPerHour; uint64 gpuPerHour; }
            function nodeRegistered(bytes32 nodeId, address operator, bytes32 machineId, address nodeKey, string region, Capabilities capabilities, string endpoint, string metadataCid) external;
            function nodePricesSet(bytes32 nodeId, Prices requested, Prices stored) external;
            function leaseOpened(uint256 leaseId, address tenant, bytes32 nodeId, address operator, Resources resources, uint256 templateId, uint64 ratePerHour, uint256 funding) external;
            function leaseClosed(uint256 leaseId, uint256 settled, uint256 refund) external;
        function leaseToppedUp(uint256 leaseId, address from, uint256 amount, uint256 funded, uint64 accrualStart, uint256 accruedBefore) external;
        }
    }
}
use fixture::IEventSource;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The indexer's event fixture: it emits the contracts' events with the data a test chooses.
fn event_source_bytecode() -> Bytes {
    decloud_sdk::testing::compile_fixture("indexer/tests/fixtures/EventSource.sol", "EventSource")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_command(ws: &mut Ws) -> proto::Command {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a command within 5 s")
        {
            Some(Ok(Message::Text(t))) => match ServerMessage::from_json(t.as_str()).unwrap() {
                ServerMessage::Command(c) => return c,
                other => panic!("expected a command, got {other:?}"),
            },
            Some(Ok(_)) => continue,
            other => panic!("connection lost: {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, msg: AgentMessage) {
    ws.send(Message::Text(msg.to_json().into())).await.unwrap();
}

async fn state_of(store: &Store, vm_id: &str) -> String {
    store
        .vm(vm_id.parse().unwrap())
        .await
        .unwrap()
        .map(|v| v.state.to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_events_on_chain_drive_the_vm_on_the_agent() {
    let (url, _dir) = support::sqlite_database();
    lease_flow(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_events_on_chain_drive_the_vm_on_postgres() {
    lease_flow(support::postgres_database().await).await;
}

async fn lease_flow(url: String) {
    // Chain: one EventSource as the registry, one as the escrow.
    let anvil = Anvil::at(root().join("contracts/node_modules/.bin/anvil")).spawn();
    let deployer: PrivateKeySigner = anvil.keys()[0].clone().into();
    let provider = decloud_sdk::tx::signing_provider(anvil.endpoint_url(), deployer);
    let mut addresses = Vec::new();
    for _ in 0..2 {
        let tx = TransactionRequest::default().with_deploy_code(event_source_bytecode());
        let receipt = provider
            .send_transaction(tx)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        addresses.push(receipt.contract_address.unwrap());
    }
    let registry = IEventSource::new(addresses[0], provider.clone());
    let escrow = IEventSource::new(addresses[1], provider.clone());

    // Orchestrator: store, server, follower with the orchestrator's handler.
    let attestor = decloud_orchestrator::attestation::Attestor::new(
        PrivateKeySigner::random(),
        31337,
        Address::repeat_byte(0xaa),
    );
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_attestor(attestor.clone());
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
    let handler = ChainHandler::new(
        addresses[0],
        addresses[1],
        Arc::new(tokio::sync::Notify::new()),
    )
    .with_attestor(attestor.clone());
    let reader = ProviderBuilder::new()
        .connect_http(anvil.endpoint_url())
        .erased();
    let config = FollowerConfig::new("orchestrator", handler.addresses(), 0);
    let mut follower = Follower::new(reader, store.follower_database(), config, handler);
    let workload = Workload {
        image: "debian-12".into(),
        user_data: "#cloud-config\n".into(),
        bandwidth: BandwidthTier::Basic,
        grace_secs: 86_400,
        reconnect_grace_until: 0,
        ingress: None,
    };
    let sync = async |follower: &mut Follower<ChainHandler>| {
        follower.sync_to_head().await.unwrap();
        lifecycle::drive(state.store(), state.agents(), &workload)
            .await
            .unwrap();
    };
    // The same, with a grace period short enough for a test.
    let short = Workload {
        grace_secs: 6,
        ..workload.clone()
    };
    let sync_short = async |follower: &mut Follower<ChainHandler>| {
        follower.sync_to_head().await.unwrap();
        lifecycle::drive(state.store(), state.agents(), &short)
            .await
            .unwrap();
    };

    // The operator registers a node on-chain with its agent's key and sets prices.
    let key = PrivateKeySigner::random();
    let operator = Address::repeat_byte(0x0a);
    let node_id = proto::node_id(proto::machine_id("chain-node"), operator);
    let caps = IEventSource::Capabilities {
        vcpus: 8,
        memoryGiB: 32,
        diskGiB: 500,
        gpus: 0,
        bandwidthMbps: 1000,
        architecture: 0,
        flags: 1,
    };
    registry
        .nodeRegistered(
            node_id,
            operator,
            B256::repeat_byte(1),
            key.address(),
            "eu-west".into(),
            caps,
            "https://n".into(),
            "bafy".into(),
        )
        .send_ok()
        .await;
    let prices = IEventSource::Prices {
        cpuPerHour: 10_000,
        memoryGiBPerHour: 2_000,
        storageGiBPerHour: 100,
        gpuPerHour: 0,
    };
    registry
        .nodePricesSet(node_id, prices.clone(), prices)
        .send_ok()
        .await;
    sync(&mut follower).await;
    let node = store
        .node(NodeId::from(node_id))
        .await
        .unwrap()
        .expect("node synced from chain");
    assert_eq!(
        (
            node.operator,
            node.node_key,
            node.vcpus,
            node.prices.cpu_per_hour
        ),
        (
            format!("{operator:#x}"),
            format!("{:#x}", key.address()),
            8,
            10_000
        )
    );

    // Its agent connects with the registered key and reports its benchmark.
    let (mut ws, _) = connect_async(format!("ws://{addr}/api/v1/agent/ws"))
        .await
        .unwrap();
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        node_id,
        address: key.address(),
        agent_version: "t".into(),
    };
    send(&mut ws, AgentMessage::Hello(hello)).await;
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!()
    };
    let ServerMessage::Challenge(challenge) = ServerMessage::from_json(t.as_str()).unwrap() else {
        panic!()
    };
    send(
        &mut ws,
        AgentMessage::Auth(proto::sign_challenge(&key, node_id, &challenge).unwrap()),
    )
    .await;
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!()
    };
    assert!(matches!(
        ServerMessage::from_json(t.as_str()).unwrap(),
        ServerMessage::Welcome(_)
    ));
    let heartbeat = Heartbeat {
        seq: 1,
        sent_at: 0,
        ready: true,
        public_address: None,
        ingress: None,
        resources: NodeResources {
            arch: "x86_64".into(),
            cpu_model: "t".into(),
            cpu_cores: 8,
            memory_mib: 32 * 1024,
            disks: Vec::new(),
            vm_storage_free_bytes: 1 << 40,
            gpus: Vec::new(),
            compute_points: 800,
        },
        free: Capacity {
            millicores: 8_000,
            memory_mib: 32 * 1024,
            disk_bytes: 1 << 40,
        },
        vms: Vec::new(),
        events: Vec::new(),
        storage: None,
        relay: None,
        tunnel: None,
    };
    send(&mut ws, AgentMessage::Heartbeat(Box::new(heartbeat))).await;
    for _ in 0..100 {
        if store
            .node(NodeId::from(node_id))
            .await
            .unwrap()
            .unwrap()
            .compute_points
            == 8_000
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Template 3 on-chain is the PostgreSQL seed bundle in the catalog.
    let seeds = root().join("templates/seed");
    decloud_orchestrator::catalog::load_dir(&store, &seeds, 0)
        .await
        .unwrap();
    let mut pg = store.template("postgresql").await.unwrap().unwrap();
    pg.template_id = Some("3".parse().unwrap());
    store.upsert_template(&pg).await.unwrap();

    // A tenant opens a lease on-chain: the VM is created on the node and runs.
    let tenant = Address::repeat_byte(0x0b);
    let resources = IEventSource::Resources {
        vcpus: 2,
        memoryGiB: 4,
        storageGiB: 20,
        gpus: 0,
    };
    escrow
        .leaseOpened(
            U256::from(1),
            tenant,
            node_id,
            operator,
            resources,
            U256::from(3),
            30_000,
            U256::from(1_000_000),
        )
        .send_ok()
        .await;
    sync(&mut follower).await;
    let lease = store
        .lease("1".parse().unwrap())
        .await
        .unwrap()
        .expect("lease synced");
    assert_eq!(
        (
            lease.tenant.as_str(),
            lease.status.as_str(),
            lease.rate_per_hour
        ),
        (format!("{tenant:#x}").as_str(), "active", 30_000)
    );
    let create = next_command(&mut ws).await;
    let CommandAction::CreateVm { spec } = &create.action else {
        panic!("{create:?}")
    };
    assert_eq!(
        (spec.id.as_str(), spec.vcpus, spec.disk_gib),
        ("vm-1", 2, 20)
    );
    // The template's user-data, rendered for this VM, with its ports and readiness checks.
    assert!(
        spec.user_data.starts_with("#cloud-config"),
        "{}",
        spec.user_data
    );
    assert!(
        !spec.user_data.contains("${DECLOUD_"),
        "unrendered variable left: {}",
        spec.user_data
    );
    assert!(
        spec.ports.iter().any(|p| p.guest == 5432),
        "{:?}",
        spec.ports
    );
    let running = VmReport {
        id: "vm-1".into(),
        state: AgentVmState::Running,
        readiness: Readiness {
            ready: true,
            probes: Vec::new(),
        },
        addresses: Vec::new(),
        forwards: Vec::new(),
        error: None,
    };
    send(
        &mut ws,
        AgentMessage::Ack(Ack {
            command_id: create.id,
            outcome: AckOutcome::Done {
                vm: Some(running),
                user_data_sha256: None,
            },
        }),
    )
    .await;
    for _ in 0..100 {
        if state_of(&store, "vm-1").await == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state_of(&store, "vm-1").await, "running");
    // Syncing again (nothing new, or the same events replayed) changes nothing.
    sync(&mut follower).await;
    assert_eq!(state_of(&store, "vm-1").await, "running");

    // The tenant closes the lease: the VM is deleted on the node.
    escrow
        .leaseClosed(U256::from(1), U256::from(10), U256::from(5))
        .send_ok()
        .await;
    sync(&mut follower).await;
    let delete = next_command(&mut ws).await;
    assert_eq!(
        delete.action,
        CommandAction::DeleteVm {
            vm_id: "vm-1".parse().unwrap()
        }
    );
    send(
        &mut ws,
        AgentMessage::Ack(Ack {
            command_id: delete.id,
            outcome: AckOutcome::Done {
                vm: None,
                user_data_sha256: None,
            },
        }),
    )
    .await;
    for _ in 0..100 {
        if state_of(&store, "vm-1").await == "terminated" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state_of(&store, "vm-1").await, "terminated");
    assert_eq!(
        store
            .lease("1".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .status,
        "closed"
    );
    let live = store
        .liveness(NodeId::from(node_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((live.vms_hosted, live.vms_completed), (1, 1));

    // A lease opened and closed before the orchestrator acted never reaches the node.
    escrow
        .leaseOpened(
            U256::from(2),
            tenant,
            node_id,
            operator,
            IEventSource::Resources {
                vcpus: 1,
                memoryGiB: 1,
                storageGiB: 5,
                gpus: 0,
            },
            U256::ZERO,
            1,
            U256::from(1),
        )
        .send_ok()
        .await;
    escrow
        .leaseClosed(U256::from(2), U256::ZERO, U256::ZERO)
        .send_ok()
        .await;
    sync(&mut follower).await;
    assert_eq!(state_of(&store, "vm-2").await, "terminated");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), ws.next())
            .await
            .is_err(),
        "nothing sent for lease 2"
    );

    // A lease naming a template the catalog does not have fails its VM, saying so.
    escrow
        .leaseOpened(
            U256::from(4),
            tenant,
            node_id,
            operator,
            IEventSource::Resources {
                vcpus: 1,
                memoryGiB: 1,
                storageGiB: 5,
                gpus: 0,
            },
            U256::from(99),
            1,
            U256::from(1),
        )
        .send_ok()
        .await;
    sync(&mut follower).await;
    let vm = store.vm("vm-4".parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(
        (vm.state.as_str(), vm.failure.as_deref()),
        ("failed", Some("template 99 is not in the catalog"))
    );

    // Lease 5 runs out of funds (3 units at 3600/h last 3 s): its VM is paused, not deleted,
    // and resumed by a top-up.
    let small = || IEventSource::Resources {
        vcpus: 1,
        memoryGiB: 1,
        storageGiB: 5,
        gpus: 0,
    };
    let ack = |id: String, running: bool| {
        let vm = running.then(|| VmReport {
            id: "x".into(),
            state: AgentVmState::Running,
            readiness: Readiness {
                ready: true,
                probes: Vec::new(),
            },
            addresses: Vec::new(),
            forwards: Vec::new(),
            error: None,
        });
        AgentMessage::Ack(Ack {
            command_id: id,
            outcome: AckOutcome::Done {
                vm,
                user_data_sha256: None,
            },
        })
    };
    escrow
        .leaseOpened(
            U256::from(5),
            tenant,
            node_id,
            operator,
            small(),
            U256::ZERO,
            3_600,
            U256::from(3),
        )
        .send_ok()
        .await;
    sync(&mut follower).await;
    let create = next_command(&mut ws).await;
    send(&mut ws, ack(create.id, true)).await;
    wait_state(&store, "vm-5", "running").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    sync_short(&mut follower).await;
    let stop = next_command(&mut ws).await;
    assert_eq!(
        stop.action,
        CommandAction::StopVm {
            vm_id: "vm-5".parse().unwrap()
        }
    );
    send(&mut ws, ack(stop.id, false)).await;
    wait_state(&store, "vm-5", "stopped").await;
    let now = decloud_orchestrator::clock::now() as u64;
    escrow
        .leaseToppedUp(
            U256::from(5),
            tenant,
            U256::from(1_000),
            U256::from(1_003),
            now,
            U256::from(3),
        )
        .send_ok()
        .await;
    sync_short(&mut follower).await;
    let start = next_command(&mut ws).await;
    assert_eq!(
        start.action,
        CommandAction::StartVm {
            vm_id: "vm-5".parse().unwrap()
        }
    );
    send(&mut ws, ack(start.id, true)).await;
    wait_state(&store, "vm-5", "running").await;

    // Lease 6 runs out and is never topped up: paused, then deleted after the grace period.
    escrow
        .leaseOpened(
            U256::from(6),
            tenant,
            node_id,
            operator,
            small(),
            U256::ZERO,
            3_600,
            U256::from(1),
        )
        .send_ok()
        .await;
    sync(&mut follower).await;
    let create = next_command(&mut ws).await;
    send(&mut ws, ack(create.id, true)).await;
    wait_state(&store, "vm-6", "running").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sync_short(&mut follower).await;
    let stop = next_command(&mut ws).await;
    assert_eq!(
        stop.action,
        CommandAction::StopVm {
            vm_id: "vm-6".parse().unwrap()
        }
    );
    send(&mut ws, ack(stop.id, false)).await;
    wait_state(&store, "vm-6", "stopped").await;
    sync_short(&mut follower).await;
    assert_eq!(
        state_of(&store, "vm-6").await,
        "stopped",
        "still within the grace period"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    sync_short(&mut follower).await;
    let delete = next_command(&mut ws).await;
    assert_eq!(
        delete.action,
        CommandAction::DeleteVm {
            vm_id: "vm-6".parse().unwrap()
        }
    );
    send(&mut ws, ack(delete.id, false)).await;
    wait_state(&store, "vm-6", "terminated").await;
    assert_eq!(
        state_of(&store, "vm-5").await,
        "running",
        "the topped-up lease keeps running"
    );

    // Every lease event and VM transition above was attested, in order, in one signed chain.
    let kinds = |subject: &'static str| {
        let store = store.clone();
        async move {
            store
                .attestations_of(subject, None, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.kind)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(kinds("lease:6").await, ["lease.opened"]);
    assert_eq!(kinds("vm:vm-6").await, ["vm.transition"; 6]);
    let transitions: Vec<(String, String)> = store
        .attestations_of("vm:vm-6", None, 100)
        .await
        .unwrap()
        .iter()
        .map(|a| {
            let p: serde_json::Value = serde_json::from_str(&a.payload).unwrap();
            (
                p["from"].as_str().unwrap().into(),
                p["to"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("pending", "provisioning"),
        ("provisioning", "running"),
        ("running", "stopping"),
        ("stopping", "stopped"),
        ("stopped", "stopping"),
        ("stopping", "terminated"),
    ];
    assert_eq!(
        transitions,
        expected.map(|(f, t)| (f.to_string(), t.to_string()))
    );
    let count = store.attestation_count().await.unwrap();
    let mut previous = None;
    for id in 0..count {
        let a = store.attestation(id).await.unwrap().unwrap();
        decloud_sdk::attestation::check_record(&a, attestor.domain(), attestor.address()).unwrap();
        decloud_sdk::attestation::check_link(&a, id, previous.as_ref()).unwrap();
        previous = Some(a);
    }
}

async fn wait_state(store: &Store, vm_id: &str, state: &str) {
    for _ in 0..100 {
        if state_of(store, vm_id).await == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{vm_id} never reached {state}: {}",
        state_of(store, vm_id).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_follows_the_chain_from_its_config() {
    let anvil = Anvil::at(root().join("contracts/node_modules/.bin/anvil")).spawn();
    let deployer: PrivateKeySigner = anvil.keys()[0].clone().into();
    let provider = decloud_sdk::tx::signing_provider(anvil.endpoint_url(), deployer);
    let mut addresses = Vec::new();
    for _ in 0..2 {
        let tx = TransactionRequest::default().with_deploy_code(event_source_bytecode());
        let receipt = provider
            .send_transaction(tx)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        addresses.push(receipt.contract_address.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite:{}\"\n[chain]\nrpc_url = \"{}\"\nnode_registry = \"{:#x}\"\nlease_escrow = \"{:#x}\"\n\
             confirmations = 0\nimage = \"debian-12\"\n",
            dir.path().join("o.db").display(),
            anvil.endpoint(),
            addresses[0],
            addresses[1]
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_decloud-orchestrator"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let node_id = B256::repeat_byte(0x42);
    let caps = IEventSource::Capabilities {
        vcpus: 4,
        memoryGiB: 8,
        diskGiB: 100,
        gpus: 0,
        bandwidthMbps: 100,
        architecture: 0,
        flags: 0,
    };
    IEventSource::new(addresses[0], provider.clone())
        .nodeRegistered(
            node_id,
            Address::repeat_byte(3),
            B256::ZERO,
            Address::repeat_byte(4),
            "us-east".into(),
            caps,
            String::new(),
            String::new(),
        )
        .send_ok()
        .await;
    // The running server picks the registration up from the chain and lists the node.
    let mut found = false;
    for _ in 0..100 {
        let out = std::net::TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
            use std::io::Read;
            write!(s, "GET /api/v1/nodes/{node_id:#x} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        });
        if out.is_some_and(|o| o.starts_with("HTTP/1.1 200") && o.contains("us-east")) {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let status = server.wait().unwrap();
    assert!(found, "node never appeared in the API");
    assert!(status.success(), "{status}");
}
