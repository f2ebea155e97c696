//! The node agent protocol over a real WebSocket: challenge-response against the registered
//! node key, heartbeats into the reputation store, and commands delivered until acknowledged.

mod support;

use alloy::{
    primitives::{Address, B256},
    signers::local::PrivateKeySigner,
};
use decloud_orchestrator::{
    AppState, Config, Store,
    agent::{AgentError, enqueue_command},
    app,
    lifecycle::{self, LifecycleError, VmState, Workload},
    scheduler::{Prices, QualityTier},
    store::{LeaseRecord, NodeRecord, NodeStatus},
};
use decloud_sdk::NodeId;
use decloud_sdk::agent_protocol::{
    self as proto, Ack, AckOutcome, AgentMessage, BandwidthTier, Capacity, CommandAction,
    Heartbeat, Hello, NodeResources, PROTOCOL_VERSION, Readiness, ServerMessage, VmReport,
    VmState as AgentVmState,
};
use decloud_sdk::types::LeaseStatus;
use futures_util::{SinkExt, StreamExt};
use std::{net::SocketAddr, time::Duration};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long an expected frame or state change may take: a bound for a busy two-core machine
/// running many tests at once, never a measurement.
const REPLY: Duration = Duration::from_secs(30);

struct Server {
    url: String,
    addr: SocketAddr,
    state: AppState,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    server_with(Config::default()).await
}

async fn server_with(config: Config) -> Server {
    let (url, dir) = support::sqlite_database();
    let store = Store::connect(&url).await.unwrap();
    let state = AppState::new(store.clone(), config).unwrap();
    let url = url.clone();
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
    Server {
        url,
        addr,
        state,
        store,
        _dir: dir,
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

async fn connect(addr: SocketAddr) -> Ws {
    connect_async(format!("ws://{addr}/api/v1/agent/ws"))
        .await
        .unwrap()
        .0
}

async fn send(ws: &mut Ws, msg: &AgentMessage) {
    ws.send(Message::Text(msg.to_json().into())).await.unwrap();
}

/// The next protocol frame, or `None` if none arrives within `wait`.
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

fn hello(node_id: B256, address: Address, version: u32) -> AgentMessage {
    AgentMessage::Hello(Hello {
        protocol_version: version,
        node_id,
        address,
        agent_version: "test".into(),
    })
}

/// Runs the handshake as `address`, signing with `signer`; returns the server's last answer.
async fn handshake(
    ws: &mut Ws,
    node_id: B256,
    address: Address,
    signer: &PrivateKeySigner,
) -> ServerMessage {
    send(ws, &hello(node_id, address, PROTOCOL_VERSION)).await;
    let Some(ServerMessage::Challenge(challenge)) = next(ws, REPLY).await else {
        panic!("no challenge");
    };
    let auth = proto::sign_challenge(signer, node_id, &challenge).unwrap();
    send(ws, &AgentMessage::Auth(auth)).await;
    next(ws, REPLY).await.expect("an answer to auth")
}

fn heartbeat(seq: u64, compute_points: u64) -> AgentMessage {
    AgentMessage::Heartbeat(Box::new(Heartbeat {
        seq,
        sent_at: 0,
        ready: true,
        public_address: None,
        ingress: None,
        resources: NodeResources {
            arch: "x86_64".into(),
            cpu_model: "test".into(),
            cpu_cores: 8,
            memory_mib: 32 * 1024,
            disks: Vec::new(),
            vm_storage_free_bytes: 1 << 40,
            gpus: Vec::new(),
            compute_points,
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
    }))
}

async fn eventually<F: AsyncFn() -> bool>(what: &str, check: F) {
    let deadline = tokio::time::Instant::now() + REPLY;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn agent_authenticates_heartbeats_and_acknowledges_commands() {
    let s = server().await;
    let key = PrivateKeySigner::random();
    let node_id = proto::node_id(proto::machine_id("machine-1"), Address::repeat_byte(1));
    let node = NodeId::from(node_id);
    register(&s.store, node_id, key.address()).await;

    let mut ws = connect(s.addr).await;
    let answer = handshake(&mut ws, node_id, key.address(), &key).await;
    assert!(
        matches!(answer, ServerMessage::Welcome(ref w) if w.heartbeat_interval_secs == 15),
        "{answer:?}"
    );

    send(&mut ws, &heartbeat(1, 12_345)).await;
    eventually("the heartbeat to be booked", async || {
        s.store
            .liveness(node)
            .await
            .unwrap()
            .is_some_and(|l| l.heartbeats == 1)
    })
    .await;
    assert_eq!(
        s.store.node(node).await.unwrap().unwrap().compute_points,
        12_345
    );
    assert!(
        s.store
            .reputation(node, decloud_orchestrator::clock::now())
            .await
            .unwrap()
            .online
    );

    let action = CommandAction::StartVm {
        vm_id: "vm-1".parse().unwrap(),
    };
    assert!(
        enqueue_command(s.state.agents(), node, "cmd-1", &action)
            .await
            .unwrap()
    );
    let Some(ServerMessage::Command(cmd)) = next(&mut ws, REPLY).await else {
        panic!("command not delivered");
    };
    assert_eq!((cmd.id.as_str(), &cmd.action), ("cmd-1", &action));
    // Queueing the same id again changes nothing and sends nothing.
    assert!(
        !enqueue_command(
            s.state.agents(),
            node,
            "cmd-1",
            &CommandAction::DeleteVm {
                vm_id: "vm-1".parse().unwrap()
            }
        )
        .await
        .unwrap()
    );
    assert!(next(&mut ws, Duration::from_millis(500)).await.is_none());

    send(
        &mut ws,
        &AgentMessage::Ack(Ack {
            command_id: "cmd-1".into(),
            outcome: AckOutcome::Done {
                vm: None,
                user_data_sha256: None,
            },
        }),
    )
    .await;
    eventually("the ack to be stored", async || {
        s.store
            .command("cmd-1")
            .await
            .unwrap()
            .is_some_and(|c| c.acked_at.is_some())
    })
    .await;
    // A repeated ack with another outcome does not overwrite the first.
    send(
        &mut ws,
        &AgentMessage::Ack(Ack {
            command_id: "cmd-1".into(),
            outcome: AckOutcome::Failed { error: "x".into() },
        }),
    )
    .await;
    send(&mut ws, &heartbeat(2, 12_345)).await;
    eventually("the second heartbeat", async || {
        s.store
            .liveness(node)
            .await
            .unwrap()
            .is_some_and(|l| l.heartbeats == 2)
    })
    .await;
    let stored = s.store.command("cmd-1").await.unwrap().unwrap();
    assert!(stored.outcome.unwrap().contains("done"));
    assert_eq!(stored.attempts, 1);

    let unknown = enqueue_command(
        s.state.agents(),
        B256::with_last_byte(5).into(),
        "cmd-x",
        &action,
    )
    .await;
    assert!(matches!(unknown, Err(AgentError::UnknownNode(_))));
}

#[tokio::test]
async fn unacknowledged_commands_are_resent_after_reconnect() {
    let s = server().await;
    let key = PrivateKeySigner::random();
    let node_id = B256::repeat_byte(0x77);
    let node = NodeId::from(node_id);
    register(&s.store, node_id, key.address()).await;
    let action = CommandAction::StopVm {
        vm_id: "vm-9".parse().unwrap(),
    };
    enqueue_command(s.state.agents(), node, "cmd-2", &action)
        .await
        .unwrap();

    for attempt in 1..=2 {
        let mut ws = connect(s.addr).await;
        assert!(matches!(
            handshake(&mut ws, node_id, key.address(), &key).await,
            ServerMessage::Welcome(_)
        ));
        let Some(ServerMessage::Command(cmd)) = next(&mut ws, REPLY).await else {
            panic!("command not delivered on connect {attempt}");
        };
        assert_eq!(cmd.id, "cmd-2");
        if attempt == 2 {
            send(
                &mut ws,
                &AgentMessage::Ack(Ack {
                    command_id: cmd.id,
                    outcome: AckOutcome::Done {
                        vm: None,
                        user_data_sha256: None,
                    },
                }),
            )
            .await;
            eventually("the ack", async || {
                s.store
                    .command("cmd-2")
                    .await
                    .unwrap()
                    .unwrap()
                    .acked_at
                    .is_some()
            })
            .await;
        }
        ws.close(None).await.unwrap();
    }
    let mut ws = connect(s.addr).await;
    assert!(matches!(
        handshake(&mut ws, node_id, key.address(), &key).await,
        ServerMessage::Welcome(_)
    ));
    assert!(
        next(&mut ws, Duration::from_millis(700)).await.is_none(),
        "acknowledged command sent again"
    );
    assert_eq!(s.store.command("cmd-2").await.unwrap().unwrap().attempts, 2);
}

#[tokio::test]
async fn agents_without_the_registered_key_are_rejected() {
    let s = server().await;
    let key = PrivateKeySigner::random();
    let other = PrivateKeySigner::random();
    let node_id = B256::repeat_byte(0x33);
    register(&s.store, node_id, key.address()).await;
    let rejected = |m: ServerMessage| match m {
        ServerMessage::Rejected { reason } => reason,
        other => panic!("expected rejection, got {other:?}"),
    };

    // A valid signature by a key that is not the registered one.
    let mut ws = connect(s.addr).await;
    let reason = rejected(handshake(&mut ws, node_id, other.address(), &other).await);
    assert!(
        reason.contains("is not the node key registered"),
        "{reason}"
    );
    // Claiming the registered key without holding it.
    let mut ws = connect(s.addr).await;
    let reason = rejected(handshake(&mut ws, node_id, key.address(), &other).await);
    assert!(reason.contains("signature is by"), "{reason}");
    // A node that is not registered.
    let mut ws = connect(s.addr).await;
    let reason = rejected(handshake(&mut ws, B256::repeat_byte(0x44), key.address(), &key).await);
    assert!(reason.contains("is not registered"), "{reason}");
    // Another protocol version.
    let mut ws = connect(s.addr).await;
    send(
        &mut ws,
        &hello(node_id, key.address(), PROTOCOL_VERSION + 1),
    )
    .await;
    let reason = rejected(next(&mut ws, REPLY).await.unwrap());
    assert!(reason.contains("unsupported protocol version"), "{reason}");
    // A heartbeat before authenticating.
    let mut ws = connect(s.addr).await;
    send(&mut ws, &heartbeat(1, 1)).await;
    let reason = rejected(next(&mut ws, REPLY).await.unwrap());
    assert_eq!(reason, "expected hello");
    // Garbage.
    let mut ws = connect(s.addr).await;
    ws.send(Message::Text("{\"type\":\"nonsense\"}".into()))
        .await
        .unwrap();
    let reason = rejected(next(&mut ws, REPLY).await.unwrap());
    assert!(reason.contains("malformed frame"), "{reason}");

    // None of it was booked as a heartbeat.
    assert!(
        s.store
            .liveness(NodeId::from(node_id))
            .await
            .unwrap()
            .is_none()
    );
    // And the registered key still gets in.
    let mut ws = connect(s.addr).await;
    assert!(matches!(
        handshake(&mut ws, node_id, key.address(), &key).await,
        ServerMessage::Welcome(_)
    ));
    // Re-sending hello after authentication is a protocol violation.
    send(&mut ws, &hello(node_id, key.address(), PROTOCOL_VERSION)).await;
    assert_eq!(
        rejected(next(&mut ws, REPLY).await.unwrap()),
        "already authenticated"
    );
}

fn lease(id: &str, node_id: B256, vcpus: u64) -> LeaseRecord {
    LeaseRecord {
        lease_id: id.parse().unwrap(),
        tenant: format!("{:#x}", Address::repeat_byte(0xaa)),
        node_id: node_id.into(),
        status: LeaseStatus::Active,
        tier: QualityTier::Standard,
        vcpus,
        memory_gib: 4,
        storage_gib: 20,
        gpus: 0,
        rate_per_hour: 1_000,
        opened_at: 1,
    }
}

fn workload() -> Workload {
    Workload {
        image: "debian-12".into(),
        user_data: "#cloud-config\n".into(),
        bandwidth: BandwidthTier::Basic,
        grace_secs: 86_400,
        reconnect_grace_until: 0,
        ingress: None,
    }
}

async fn state_of(store: &Store, vm_id: &str) -> decloud_sdk::types::VmState {
    store
        .vm(vm_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .state
}

#[tokio::test]
async fn lease_events_drive_the_vm_through_its_lifecycle_on_the_agent() {
    let s = server().await;
    let key = PrivateKeySigner::random();
    let node_id = B256::repeat_byte(0x55);
    let node = NodeId::from(node_id);
    register(&s.store, node_id, key.address()).await;
    let mut ws = connect(s.addr).await;
    assert!(matches!(
        handshake(&mut ws, node_id, key.address(), &key).await,
        ServerMessage::Welcome(_)
    ));
    send(&mut ws, &heartbeat(1, 8_000)).await;
    eventually("the node to be online", async || {
        s.store.liveness(node).await.unwrap().is_some()
    })
    .await;

    // LeaseOpened: the VM is recorded, placed and created on the node.
    let vm = lifecycle::open_lease(
        s.state.store(),
        s.state.agents(),
        &lease("1", node_id, 2),
        &workload(),
    )
    .await
    .unwrap();
    assert_eq!(
        (vm.vm_id.to_string().as_str(), vm.state.as_str()),
        ("vm-1", "provisioning")
    );
    let Some(ServerMessage::Command(cmd)) = next(&mut ws, REPLY).await else {
        panic!("no create")
    };
    let CommandAction::CreateVm { spec } = &cmd.action else {
        panic!("{cmd:?}")
    };
    assert_eq!(
        (
            spec.id.as_str(),
            spec.vcpus,
            spec.memory_mib,
            spec.image.as_str()
        ),
        ("vm-1", 2, 4096, "debian-12")
    );
    // A replayed event changes nothing and queues nothing new.
    lifecycle::open_lease(
        s.state.store(),
        s.state.agents(),
        &lease("1", node_id, 2),
        &workload(),
    )
    .await
    .unwrap();
    assert!(next(&mut ws, Duration::from_millis(300)).await.is_none());

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
        &AgentMessage::Ack(Ack {
            command_id: cmd.id,
            outcome: AckOutcome::Done {
                vm: Some(running),
                user_data_sha256: None,
            },
        }),
    )
    .await;
    eventually("the vm to run", async || {
        state_of(&s.store, "vm-1").await == "running"
    })
    .await;
    assert_eq!(s.store.liveness(node).await.unwrap().unwrap().vms_hosted, 1);

    // An invalid transition is refused and changes nothing.
    let err = lifecycle::transition(
        &s.store,
        "vm-1".parse().unwrap(),
        VmState::Pending,
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err,
        LifecycleError::InvalidTransition {
            from: VmState::Running,
            to: VmState::Pending
        }
    ));
    assert_eq!(state_of(&s.store, "vm-1").await, "running");

    // LeaseClosed: the VM is deleted on the node, then terminated.
    lifecycle::close_lease(
        s.state.store(),
        s.state.agents(),
        "1".parse().unwrap(),
        LeaseStatus::Closed,
    )
    .await
    .unwrap();
    assert_eq!(state_of(&s.store, "vm-1").await, "stopping");
    let Some(ServerMessage::Command(cmd)) = next(&mut ws, REPLY).await else {
        panic!("no delete")
    };
    assert_eq!(
        cmd.action,
        CommandAction::DeleteVm {
            vm_id: "vm-1".parse().unwrap()
        }
    );
    send(
        &mut ws,
        &AgentMessage::Ack(Ack {
            command_id: cmd.id,
            outcome: AckOutcome::Done {
                vm: None,
                user_data_sha256: None,
            },
        }),
    )
    .await;
    eventually("the vm to be terminated", async || {
        state_of(&s.store, "vm-1").await == "terminated"
    })
    .await;
    assert_eq!(
        s.store.liveness(node).await.unwrap().unwrap().vms_completed,
        1
    );
    assert_eq!(
        s.store
            .lease("1".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .status,
        "closed"
    );

    // A VM the node cannot create fails with the node's reason.
    lifecycle::open_lease(
        s.state.store(),
        s.state.agents(),
        &lease("2", node_id, 1),
        &workload(),
    )
    .await
    .unwrap();
    let Some(ServerMessage::Command(cmd)) = next(&mut ws, REPLY).await else {
        panic!("no create")
    };
    send(
        &mut ws,
        &AgentMessage::Ack(Ack {
            command_id: cmd.id,
            outcome: AckOutcome::Failed {
                error: "no such image".into(),
            },
        }),
    )
    .await;
    eventually("the vm to fail", async || {
        state_of(&s.store, "vm-2").await == "failed"
    })
    .await;
    assert_eq!(
        s.store
            .vm_failure("vm-2".parse().unwrap())
            .await
            .unwrap()
            .as_deref(),
        Some("no such image")
    );
}

/// A node that connected, authenticated and sent one heartbeat reporting `vms`.
async fn connected(
    s: &Server,
    byte: u8,
    vms: Vec<VmReport>,
) -> (Ws, B256, NodeId, PrivateKeySigner) {
    let key = PrivateKeySigner::random();
    let node_id = B256::repeat_byte(byte);
    let node = NodeId::from(node_id);
    register(&s.store, node_id, key.address()).await;
    let mut ws = connect(s.addr).await;
    assert!(matches!(
        handshake(&mut ws, node_id, key.address(), &key).await,
        ServerMessage::Welcome(_)
    ));
    send(&mut ws, &heartbeat_with(1, vms)).await;
    eventually("the node's report", async || {
        s.state.agents().report(node).is_some()
    })
    .await;
    (ws, node_id, node, key)
}

fn heartbeat_with(seq: u64, vms: Vec<VmReport>) -> AgentMessage {
    let AgentMessage::Heartbeat(mut hb) = heartbeat(seq, 8_000) else {
        unreachable!()
    };
    hb.vms = vms;
    AgentMessage::Heartbeat(hb)
}

fn report(id: &str, state: AgentVmState, error: Option<&str>) -> VmReport {
    VmReport {
        id: id.into(),
        state,
        readiness: Readiness {
            ready: state == AgentVmState::Running,
            probes: Vec::new(),
        },
        addresses: Vec::new(),
        forwards: Vec::new(),
        error: error.map(str::to_string),
    }
}

/// The next command sent on `ws`, skipping nothing else (the server sends only commands).
async fn next_command(ws: &mut Ws) -> proto::Command {
    match next(ws, REPLY).await {
        Some(ServerMessage::Command(c)) => c,
        other => panic!("expected a command, got {other:?}"),
    }
}

#[tokio::test]
async fn an_offline_node_delays_placement_and_never_fails_the_vm() {
    let s = server().await;
    let key = PrivateKeySigner::random();
    let node_id = B256::repeat_byte(0x66);
    let node = NodeId::from(node_id);
    register(&s.store, node_id, key.address()).await;
    // The node never connected: the VM waits, says why, and nothing is queued.
    let vm = lifecycle::open_lease(
        s.state.store(),
        s.state.agents(),
        &lease("3", node_id, 1),
        &workload(),
    )
    .await
    .unwrap();
    assert_eq!(vm.state, "pending");
    assert!(
        vm.failure
            .as_deref()
            .is_some_and(|f| f.contains("waiting for node")),
        "{vm:?}"
    );
    assert!(
        s.store
            .due_commands(node, i64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    // Still pending after any number of passes.
    lifecycle::drive(s.state.store(), s.state.agents(), &workload())
        .await
        .unwrap();
    assert_eq!(state_of(&s.store, "vm-3").await, "pending");

    // The agent connects and reports: the VM is placed and created.
    let mut ws = connect(s.addr).await;
    assert!(matches!(
        handshake(&mut ws, node_id, key.address(), &key).await,
        ServerMessage::Welcome(_)
    ));
    send(&mut ws, &heartbeat_with(1, Vec::new())).await;
    eventually("the node's report", async || {
        s.state.agents().report(node).is_some()
    })
    .await;
    lifecycle::drive(s.state.store(), s.state.agents(), &workload())
        .await
        .unwrap();
    assert_eq!(state_of(&s.store, "vm-3").await, "provisioning");
    assert_eq!(
        s.store.vm_failure("vm-3".parse().unwrap()).await.unwrap(),
        None
    );
    assert_eq!(next_command(&mut ws).await.id, "create-vm-3");
}

#[tokio::test]
async fn a_vm_that_does_not_fit_fails_and_its_deletion_completes_when_the_node_has_none() {
    let s = server().await;
    let (mut ws, node_id, node, _key) = connected(&s, 0x67, Vec::new()).await;
    let vm = lifecycle::open_lease(
        s.state.store(),
        s.state.agents(),
        &lease("4", node_id, 500),
        &workload(),
    )
    .await
    .unwrap();
    assert_eq!(vm.state, "failed", "{vm:?}");
    assert!(vm.failure.is_some());
    // Closing the lease of a failed VM still asks the node to clean up; the node has no such
    // VM, which completes the deletion instead of leaving it stopping (and its capacity held).
    lifecycle::close_lease(
        s.state.store(),
        s.state.agents(),
        "4".parse().unwrap(),
        LeaseStatus::Closed,
    )
    .await
    .unwrap();
    assert_eq!(state_of(&s.store, "vm-4").await, "stopping");
    let delete = next_command(&mut ws).await;
    assert_eq!(delete.id, "delete-vm-4");
    send(
        &mut ws,
        &AgentMessage::Ack(Ack {
            command_id: delete.id,
            outcome: AckOutcome::Failed {
                error: "no vm with id vm-4".into(),
            },
        }),
    )
    .await;
    eventually("the deletion to complete", async || {
        state_of(&s.store, "vm-4").await == "terminated"
    })
    .await;
    assert!(!s.store.usage_by_node().await.unwrap().contains_key(&node));
}

#[tokio::test]
async fn the_reconciler_adopts_what_runs_reports_failures_and_removes_orphans() {
    let s = server().await;
    // The node already runs vm-10 (the orchestrator lost its database) and vm-12, whose lease
    // ended while the orchestrator was away.
    let (mut ws, node_id, node, _key) = connected(
        &s,
        0x68,
        vec![
            report("vm-10", AgentVmState::Running, None),
            report("vm-12", AgentVmState::Running, None),
        ],
    )
    .await;
    let store = s.state.store();
    let agents = s.state.agents();
    // The chain says lease 10 and 11 are active, lease 12 opened and closed.
    for id in ["10", "11", "12"] {
        store.upsert_lease(&lease(id, node_id, 1)).await.unwrap();
        store
            .insert_vm(&decloud_orchestrator::store::VmRecord {
                vm_id: format!("vm-{id}").parse().unwrap(),
                lease_id: id.parse().unwrap(),
                tenant: format!("{:#x}", Address::repeat_byte(7)),
                node_id: node,
                state: VmState::Pending,
                tier: QualityTier::Standard,
                vcpus: 1,
                memory_gib: 2,
                disk_gib: 20,
                gpus: 0,
                created_at: 1,
                updated_at: 1,
                failure: None,
            })
            .await
            .unwrap();
    }
    lifecycle::close_lease(store, agents, "12".parse().unwrap(), LeaseStatus::Closed)
        .await
        .unwrap();
    lifecycle::drive(store, agents, &workload()).await.unwrap();
    // Adopted, not created again; the missing one is created.
    assert_eq!(state_of(&s.store, "vm-10").await, "running");
    assert_eq!(state_of(&s.store, "vm-11").await, "provisioning");
    assert_eq!(state_of(&s.store, "vm-12").await, "terminated");
    assert_eq!(next_command(&mut ws).await.id, "create-vm-11");

    // Later heartbeats (after the last change): vm-10's domain vanished behind the agent's
    // back, vm-12 still runs although its lease ended.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    send(
        &mut ws,
        &heartbeat_with(
            2,
            vec![
                report(
                    "vm-10",
                    AgentVmState::Failed,
                    Some("domain disappeared from libvirt"),
                ),
                report("vm-11", AgentVmState::Creating, None),
                report("vm-12", AgentVmState::Running, None),
            ],
        ),
    )
    .await;
    eventually("the second report", async || {
        agents.report(node).is_some_and(|r| r.vms.len() == 3)
    })
    .await;
    decloud_orchestrator::reconcile::reconcile_node(store, agents, node, &workload())
        .await
        .unwrap();
    assert_eq!(state_of(&s.store, "vm-10").await, "failed");
    assert_eq!(
        s.store
            .vm_failure("vm-10".parse().unwrap())
            .await
            .unwrap()
            .as_deref(),
        Some("domain disappeared from libvirt")
    );
    let delete = next_command(&mut ws).await;
    assert!(delete.id.starts_with("delete-vm-12-orphan-"), "{delete:?}");
    assert_eq!(
        delete.action,
        CommandAction::DeleteVm {
            vm_id: "vm-12".parse().unwrap()
        }
    );
    // Reconciling the same report again queues nothing more: the deletion is under way.
    decloud_orchestrator::reconcile::reconcile_node(store, agents, node, &workload())
        .await
        .unwrap();
    assert!(next(&mut ws, Duration::from_millis(300)).await.is_none());

    // vm-11 runs, then its node loses it entirely (the agent's records gone): the loss is
    // recorded and, the lease being active, the VM is created again under a new command id.
    send(
        &mut ws,
        &AgentMessage::Ack(Ack {
            command_id: "create-vm-11".into(),
            outcome: AckOutcome::Done {
                vm: Some(report("vm-11", AgentVmState::Running, None)),
                user_data_sha256: None,
            },
        }),
    )
    .await;
    eventually("vm-11 to run", async || {
        state_of(&s.store, "vm-11").await == "running"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    send(&mut ws, &heartbeat_with(3, Vec::new())).await;
    eventually("the third report", async || {
        agents.report(node).is_some_and(|r| r.vms.is_empty())
    })
    .await;
    decloud_orchestrator::reconcile::reconcile_node(store, agents, node, &workload())
        .await
        .unwrap();
    assert_eq!(state_of(&s.store, "vm-11").await, "provisioning");
    let again = next_command(&mut ws).await;
    assert!(again.id.starts_with("create-vm-11-"), "{again:?}");
    assert!(matches!(again.action, CommandAction::CreateVm { .. }));
}

#[tokio::test]
async fn a_new_session_of_a_node_replaces_the_live_one() {
    let s = server().await;
    let (mut first, node_id, node, key) = connected(&s, 0x69, Vec::new()).await;
    let mut second = connect(s.addr).await;
    assert!(matches!(
        handshake(&mut second, node_id, key.address(), &key).await,
        ServerMessage::Welcome(_)
    ));
    // The older session is told why and closed.
    match next(&mut first, REPLY).await {
        Some(ServerMessage::Rejected { reason }) => {
            assert!(reason.contains("replaced"), "{reason}")
        }
        other => panic!("expected the old session to be rejected, got {other:?}"),
    }
    assert!(next(&mut first, Duration::from_secs(2)).await.is_none());
    // The new one is the node's session: it reports, and commands reach it.
    send(&mut second, &heartbeat_with(1, Vec::new())).await;
    eventually("the new session's report", async || {
        s.state.agents().report(node).is_some()
    })
    .await;
    let action = CommandAction::StartVm {
        vm_id: "vm-s".into(),
    };
    enqueue_command(s.state.agents(), node, "cmd-s", &action)
        .await
        .unwrap();
    assert_eq!(next_command(&mut second).await.id, "cmd-s");
}

#[tokio::test]
async fn acknowledgements_stored_before_a_crash_are_applied_on_recovery() {
    let s = server().await;
    let (_ws, node_id, node, _key) = connected(&s, 0x88, Vec::new()).await;
    s.store.set_compute_points(node, 8_000).await.unwrap();
    lifecycle::open_lease(
        &s.store,
        s.state.agents(),
        &lease("5", node_id, 1),
        &workload(),
    )
    .await
    .unwrap();
    // The ack reached the store, the process died before the VM moved.
    let outcome = serde_json::to_string(&AckOutcome::Done {
        vm: None,
        user_data_sha256: None,
    })
    .unwrap();
    s.store
        .ack_command(node, "create-vm-5", &outcome, 1)
        .await
        .unwrap();
    assert_eq!(state_of(&s.store, "vm-5").await, "provisioning");
    // Reopened (as after a restart), recovery applies it once.
    let reopened = Store::connect(&s.url).await.unwrap();
    assert_eq!(lifecycle::recover(&reopened).await.unwrap(), 1);
    assert_eq!(state_of(&reopened, "vm-5").await, "running");
    assert_eq!(lifecycle::recover(&reopened).await.unwrap(), 0);
}

#[tokio::test]
async fn unacknowledged_commands_are_resent_on_the_same_connection() {
    let s = server_with(Config {
        agent_resend_secs: 1,
        ..Config::default()
    })
    .await;
    let key = PrivateKeySigner::random();
    let node_id = B256::repeat_byte(0x99);
    let node = NodeId::from(node_id);
    register(&s.store, node_id, key.address()).await;
    let mut ws = connect(s.addr).await;
    assert!(matches!(
        handshake(&mut ws, node_id, key.address(), &key).await,
        ServerMessage::Welcome(_)
    ));
    let action = CommandAction::StartVm {
        vm_id: "vm-r".into(),
    };
    enqueue_command(s.state.agents(), node, "cmd-r", &action)
        .await
        .unwrap();
    for delivery in 1..=2 {
        let Some(ServerMessage::Command(cmd)) = next(&mut ws, REPLY).await else {
            panic!("delivery {delivery} missing");
        };
        assert_eq!(cmd.id, "cmd-r");
    }
    // The second send is recorded right after it leaves; wait for that write.
    eventually("two recorded sends", async || {
        s.store.command("cmd-r").await.unwrap().unwrap().attempts >= 2
    })
    .await;
    send(
        &mut ws,
        &AgentMessage::Ack(Ack {
            command_id: "cmd-r".into(),
            outcome: AckOutcome::Done {
                vm: None,
                user_data_sha256: None,
            },
        }),
    )
    .await;
    eventually("the ack", async || {
        s.store
            .command("cmd-r")
            .await
            .unwrap()
            .unwrap()
            .acked_at
            .is_some()
    })
    .await;
    // Drain a resend that may have crossed the ack, then nothing more comes.
    let _ = next(&mut ws, Duration::from_millis(200)).await;
    assert!(
        next(&mut ws, Duration::from_millis(2_500)).await.is_none(),
        "acknowledged command resent"
    );
}
