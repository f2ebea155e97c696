//! A console-ready system for the console test and benchmark: the orchestrator's router on a
//! real socket over a real SQLite store, a node agent on the system libvirtd whose image is the
//! busybox test guest (a shell on its serial port), the node, a lease and a VM of Alice in the
//! orchestrator's store, and session tokens for Alice and for Bob (who owns nothing).
#![allow(dead_code, unreachable_pub)]

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
    NodeId,
    agent_protocol::{BandwidthTier, NodeResources, QualityTier as AgentTier, VmSpec},
    types::{LeaseStatus, VmState},
};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};
use tokio::{sync::watch, task::JoinHandle};

/// Generous for an emulated boot on a shared two-core machine; a bound, not a measurement.
pub const WAIT: Duration = Duration::from_secs(180);

/// Polls `check` every 100 ms until it holds, or panics with `what` after [`WAIT`].
pub async fn eventually<F: AsyncFn() -> bool>(what: &str, check: F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The running system.
pub struct ConsoleNode {
    /// The orchestrator's address.
    pub addr: SocketAddr,
    /// The orchestrator's state (its agent hub and console relay).
    pub state: AppState,
    /// The orchestrator's store.
    pub store: Store,
    /// The node agent.
    pub agent: Agent,
    /// The node id, lowercase hex.
    pub node_id: NodeId,
    /// The VM, Alice's, running the test guest once [`ConsoleNode::boot`] returned.
    pub vm: String,
    /// Alice's session token.
    pub alice_token: String,
    /// Bob's session token.
    pub bob_token: String,
    link: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
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

impl ConsoleNode {
    /// Starts the orchestrator and opens the agent; records the node, lease and VM. Nothing
    /// boots and the agent is not connected yet.
    pub async fn start(vm: &str) -> Self {
        if let Err(e) = decloud_node_agent::Hypervisor::open("qemu:///system") {
            panic!("this needs libvirtd and virtlogd running (scripts/test starts them): {e}");
        }
        let db = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!(
            "sqlite:{}",
            db.path().join("orchestrator.db").display()
        ))
        .await
        .unwrap();
        let state = AppState::new(store.clone(), Config::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // As the orchestrator's own server does (see `decloud_orchestrator::run`).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let router = app(state.clone());
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });

        let dir = tempfile::Builder::new()
            .prefix("decloud-console-")
            .tempdir_in("/var/tmp")
            .unwrap();
        // QEMU runs as its own user and must reach the VM's files.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let kernel = test_guest::find_kernel().unwrap();
        let initrd = dir.path().join("test-guest.cpio");
        test_guest::build_initramfs(&test_guest::kernel_release(&kernel).unwrap(), &initrd)
            .unwrap();
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
                // One machine id per process: two of these never share a node.
                machine_id: Some(format!("console-{}-{vm}", std::process::id())),
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
        let node_id = NodeId::from(identity.node_id);
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

        let alice = PrivateKeySigner::random().address();
        let bob = PrivateKeySigner::random().address();
        store
            .upsert_node(&NodeRecord {
                node_id,
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
                lease_id: "1".parse().unwrap(),
                tenant: format!("{alice:#x}"),
                node_id,
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
                vm_id: vm.parse().unwrap(),
                lease_id: "1".parse().unwrap(),
                tenant: format!("{alice:#x}"),
                node_id,
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
        Self {
            addr,
            state,
            store,
            agent,
            node_id,
            vm: vm.into(),
            alice_token,
            bob_token,
            link: None,
            _dirs: (db, dir),
        }
    }

    /// Creates the VM on the agent and waits until the guest's shell runs.
    pub async fn boot(&self) {
        self.agent
            .create_vm(VmSpec {
                id: self.vm.clone(),
                image: "test-guest".into(),
                vcpus: 1,
                memory_mib: 256,
                disk_gib: 1,
                quality: AgentTier::Dedicated,
                bandwidth: BandwidthTier::Basic,
                gpus: 0,
                hostname: None,
                user_data: "#cloud-config\n".into(),
                ports: vec![],
                readiness: vec![],
                ingress: Vec::new(),
            })
            .await
            .unwrap();
        let log = self.agent.vm_dir(&self.vm).join("console.log");
        eventually("the guest to start its shell", async || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Cloud-init v. test-guest finished at")
        })
        .await;
    }

    /// Starts the agent's link to the orchestrator and waits until it is connected.
    pub async fn connect(&mut self) {
        let (stop, stopped) = watch::channel(false);
        let link = tokio::spawn(run_link(
            self.agent.clone(),
            format!("ws://{}/api/v1/agent/ws", self.addr),
            Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
            },
            stopped,
        ));
        self.link = Some((stop, link));
        let (relay, node_id) = (self.state.agents().consoles().clone(), self.node_id);
        eventually("the agent to connect", async || relay.is_linked(node_id)).await;
    }

    /// Stops the link and deletes the VM.
    pub async fn shutdown(mut self) {
        if let Some((stop, link)) = self.link.take() {
            let _ = stop.send(true);
            tokio::time::timeout(Duration::from_secs(10), link)
                .await
                .expect("the link stops")
                .unwrap();
        }
        self.agent.delete_vm(&self.vm).await.unwrap();
        self.agent.close().await;
    }
}
