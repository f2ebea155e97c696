//! SLA termination and lease terms end to end on a real anvil with the whole system deployed:
//! a tenant opens a lease with 2 vCPUs, 2 GiB, 7 GiB of disk and the Performance bandwidth tier;
//! the VM its node defines carries exactly those terms (the spec the agent received, and the
//! domain XML it renders). A second lease runs on the same node. Then the orchestrator stops and
//! the node's agent stops; the second lease is terminated on chain (as by a run that crashed
//! before ending its VM), an hour of chain time passes, and the orchestrator comes back. Once the
//! node has been silent longer than the SLA window (a few seconds here), the orchestrator, as
//! LeaseEscrow's arbiter, terminates the first lease on-chain dated back to the node's last
//! heartbeat and attests it, leaves the already ended one alone on chain, and tells the tenant
//! why on both VMs. The tenant's refund is checked to the micro-USDC against the lease's rate
//! and the time the node went silent.

use alloy::{
    primitives::U256,
    providers::Provider,
    signers::{Signer, local::PrivateKeySigner},
    transports::http::reqwest,
};
use decloud_node_agent::{
    Agent, Backoff, BandwidthShaping, ConfigLayer, DomainPlan, DomainType, Identity, ImageConfig,
    NetworkConfig, bandwidth_kbytes, create_blank_qcow2, render_domain_xml, run_link,
};
use decloud_orchestrator::Store;
use decloud_sdk::NodeId;
use decloud_sdk::{
    USDC,
    agent_protocol::{self as proto, NodeResources},
    bindings::{
        LeaseEscrow, MockUSDC, NodeRegistry, lease_escrow::ILeaseEscrow,
        node_registry::INodeRegistry,
    },
    testing::{self, TestSystem},
    tx,
    types::{Architecture, BandwidthTier, LeaseStatus, QualityTier},
};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    future::Future,
    process::{Child, Command},
    time::{Duration, Instant},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// CI machines have two cores shared with other jobs: generous, but bounded.
const TIMEOUT: Duration = Duration::from_secs(120);
const IMAGE: &str = "blank";
/// The orchestrator's SLA window in this test, seconds.
const SLA_WINDOW_SECS: u64 = 3;

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

/// Polls `check` every 250 ms until it yields a value, or panics with `what` after [`TIMEOUT`].
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// GET `path` as the holder of `token`: (status, JSON body or Null).
async fn get(http: &reqwest::Client, base: &str, path: &str, token: &str) -> (u16, Value) {
    let r = http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// POST a JSON body: (status, JSON body).
async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

/// Sign-In with Ethereum over HTTP: nonce → EIP-4361 message signed with `signer` → session
/// token.
async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    host: &str,
    chain_id: u64,
    signer: &PrivateKeySigner,
) -> String {
    let (status, body) = post(http, format!("{base}/api/v1/auth/nonce"), Value::Null).await;
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
    let (status, body) = post(
        http,
        format!("{base}/api/v1/auth/verify"),
        serde_json::json!({
            "message": message,
            "signature": format!("0x{}", hex::encode(signature.as_bytes())),
        }),
    )
    .await;
    assert_eq!(status, 200, "SIWE verify: {body}");
    body["token"].as_str().expect("a session token").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_has_its_lease_terminated_and_the_tenant_refunded_exactly() {
    let system = TestSystem::start()
        .await
        .expect("anvil with the system deployed (run scripts/setup)");
    let d = &system.deployment;
    let chain_id = system.anvil.chain_id();
    let (operator, tenant) = (system.provider(1), system.provider(2));
    let operator_addr = system.address(1);
    let tenant_signer = system.signer(2);
    let tenant_addr = tenant_signer.address();
    // Account 0 holds every role of the deployment: ARBITER_ROLE and the anchor's.
    let orchestrator_key = system.signer(0);
    let work = tempfile::tempdir().unwrap();

    // The node agent on libvirt's in-process test driver.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let agent_dir = work.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let image_path = agent_dir.join("base.qcow2");
    create_blank_qcow2(&image_path, 16).unwrap();
    let image = ImageConfig {
        base: image_path,
        kernel: None,
        initrd: None,
        cmdline: None,
    };
    let network = NetworkConfig::Network {
        name: "default".into(),
    };
    let machine = "sla-node";
    let agent_config = decloud_node_agent::Config::resolve(
        None,
        ConfigLayer::default(),
        ConfigLayer {
            data_dir: Some(agent_dir.join("data")),
            libvirt_uri: Some("test:///default".into()),
            domain_type: Some(DomainType::Qemu),
            orchestrator_url: Some(format!("ws://127.0.0.1:{port}/api/v1/agent/ws")),
            operator: Some(operator_addr),
            machine_id: Some(machine.into()),
            shutdown_timeout_secs: Some(2),
            reserved_memory_mib: Some(0),
            network: Some(network.clone()),
            images: BTreeMap::from([(IMAGE.to_string(), image.clone())]),
            ..Default::default()
        },
    )
    .unwrap();
    let (identity, _) = Identity::load_or_create(&agent_config).unwrap();
    let node_key = identity.address();
    let resources = NodeResources {
        arch: std::env::consts::ARCH.into(),
        cpu_model: "test".into(),
        cpu_cores: 4,
        memory_mib: 4096,
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
                memoryGiB: 4,
                diskGiB: 100,
                gpus: 0,
                bandwidthMbps: 1_000,
                architecture: Architecture::X86_64.into(),
                flags: 1,
            },
            format!("ws://127.0.0.1:{port}"),
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

    // The orchestrator binary with a window of a few seconds, signing (attestations and
    // terminations) with the arbiter's key. Anchoring is left for later batches, so the only
    // transactions it sends in this test are terminations.
    let database_path = work.path().join("orchestrator.db");
    let database_url = format!("sqlite:{}", database_path.display());
    let config = work.path().join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             database_url = \"sqlite:{db}\"\n\
             [siwe]\n\
             domains = [\"127.0.0.1:{port}\"]\n\
             uris = [\"{base}\"]\n\
             chain_ids = [{chain_id}]\n\
             [chain]\n\
             rpc_url = \"{rpc}\"\n\
             node_registry = \"{registry}\"\n\
             lease_escrow = \"{escrow}\"\n\
             confirmations = 0\n\
             image = \"{IMAGE}\"\n\
             reconnect_grace_secs = 0\n\
             sla_window_secs = {SLA_WINDOW_SECS}\n\
             [attestation]\n\
             rpc_url = \"{rpc}\"\n\
             anchor = \"{anchor}\"\n\
             batch_size = 10000\n\
             batch_interval_secs = 86400\n\
             confirm_timeout_secs = 30\n",
            db = database_path.display(),
            rpc = system.rpc_url(),
            registry = d.contracts.node_registry.address,
            escrow = d.contracts.lease_escrow.address,
            anchor = d.contracts.attestation_anchor.address,
        ),
    )
    .unwrap();
    let start_orchestrator = || {
        Orchestrator(
            Command::new(env!("CARGO_BIN_EXE_decloud-orchestrator"))
                .arg("--config")
                .arg(&config)
                .env("DECLOUD_LOG", "info,sqlx=warn")
                .env(
                    "DECLOUD_PRIVATE_KEY",
                    format!("0x{}", hex::encode(orchestrator_key.to_bytes())),
                )
                .spawn()
                .expect("the orchestrator binary starts"),
        )
    };
    let orchestrator = start_orchestrator();
    let http = reqwest::Client::new();
    wait_for("the orchestrator to answer /api/v1/health", || async {
        let r = http
            .get(format!("{base}/api/v1/health"))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    agent.reconcile().await.unwrap();
    let (stop_agent, agent_stopped) = tokio::sync::watch::channel(false);
    let link = tokio::spawn(run_link(
        agent.clone(),
        format!("ws://127.0.0.1:{port}/api/v1/agent/ws"),
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
        },
        agent_stopped,
    ));

    let token = sign_in(
        &http,
        &base,
        &format!("127.0.0.1:{port}"),
        chain_id,
        &tenant_signer,
    )
    .await;
    let node_path = format!("/api/v1/nodes/{node_id:#x}");
    wait_for("the node's agent online", || async {
        let (status, body) = get(&http, &base, &node_path, &token).await;
        (status == 200 && body.to_string().contains("\"online\":true")).then_some(())
    })
    .await;

    // A lease with 2 vCPUs, 2 GiB, 7 GiB of disk, Standard quality, Performance bandwidth.
    let escrow_addr = d.contracts.lease_escrow.address;
    let usdc = MockUSDC::new(d.usdc, tenant.clone());
    let deposit = 20 * USDC;
    tx::send("MockUSDC", usdc.approve(escrow_addr, U256::from(deposit)))
        .await
        .unwrap();
    let escrow = LeaseEscrow::new(escrow_addr, tenant.clone());
    tx::send("LeaseEscrow", escrow.deposit(U256::from(deposit)))
        .await
        .expect("the tenant deposits");
    tx::send(
        "LeaseEscrow",
        escrow.openLease(
            node_id,
            ILeaseEscrow::Resources {
                vcpus: 2,
                memoryGiB: 2,
                storageGiB: 7,
                gpus: 0,
            },
            QualityTier::Standard.into(),
            BandwidthTier::Performance.into(),
            U256::ZERO,
            U256::ZERO,
            u64::MAX,
            U256::from(5 * USDC),
        ),
    )
    .await
    .expect("the tenant opens a lease");
    let lease_id = U256::from(1);
    let vm_path = "/api/v1/vms/vm-1";
    wait_for("the VM to be running", || async {
        let (status, body) = get(&http, &base, vm_path, &token).await;
        // A VM that failed will not run: say why instead of waiting out the bound.
        assert_ne!(body["state"], "failed", "the VM failed: {body}");
        (status == 200 && body["state"] == "running").then_some(())
    })
    .await;

    // Every term of the lease reached the node: the spec it received and the domain it renders.
    let record = agent
        .store()
        .vm("vm-1")
        .await
        .unwrap()
        .expect("the agent records the VM");
    let spec = &record.spec;
    assert_eq!(
        (spec.vcpus, spec.memory_mib, spec.disk_gib),
        (2, 2048, 7),
        "vCPUs, memory and disk are the lease's"
    );
    assert_eq!(
        spec.quality,
        QualityTier::Standard,
        "quality is the lease's"
    );
    assert_eq!(
        spec.bandwidth,
        BandwidthTier::Performance,
        "bandwidth is the lease's"
    );
    let xml = render_domain_xml(&DomainPlan {
        spec,
        node_id,
        domain_type: DomainType::Qemu,
        image: &image,
        disk: agent_dir.join("disk.qcow2"),
        seed: agent_dir.join("seed.iso"),
        console_log: agent_dir.join("console.log"),
        network: &network,
        shaping: BandwidthShaping::Libvirt,
        pci_devices: &[],
    });
    assert!(
        xml.contains("<vcpu placement='static'>2</vcpu>"),
        "2 vCPUs in the domain: {xml}"
    );
    assert!(
        xml.contains("<memory unit='MiB'>2048</memory>"),
        "2 GiB in the domain: {xml}"
    );
    let performance = bandwidth_kbytes(BandwidthTier::Performance.mbps().unwrap());
    assert!(
        xml.contains(&format!("<inbound average='{performance}'/>")),
        "the Performance <bandwidth> in the domain: {xml}"
    );

    // A second, smaller lease on the same node.
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
            QualityTier::Standard.into(),
            BandwidthTier::Basic.into(),
            U256::ZERO,
            U256::ZERO,
            u64::MAX,
            U256::from(5 * USDC),
        ),
    )
    .await
    .expect("the tenant opens a second lease");
    let other_lease = U256::from(2);
    wait_for("the second VM to be running", || async {
        let (status, body) = get(&http, &base, "/api/v1/vms/vm-2", &token).await;
        assert_ne!(body["state"], "failed", "the second VM failed: {body}");
        (status == 200 && body["state"] == "running").then_some(())
    })
    .await;

    // The leases as the chain holds them.
    let opened = tx::read("LeaseEscrow", escrow.getLease(lease_id))
        .await
        .unwrap();
    let other_opened = tx::read("LeaseEscrow", escrow.getLease(other_lease))
        .await
        .unwrap();

    // A heartbeat after both leases opened, so the node was up while they ran.
    let last_heartbeat = |body: &Value| body["reputation"]["last_heartbeat"].as_i64();
    wait_for("a heartbeat after the leases opened", || async {
        let (status, body) = get(&http, &base, &node_path, &token).await;
        (status == 200 && last_heartbeat(&body).is_some_and(|t| t > other_opened.openedAt as i64))
            .then_some(())
    })
    .await;

    // The orchestrator stops; then the agent stops too: no more heartbeats, no link.
    drop(orchestrator);
    let _ = stop_agent.send(true);
    tokio::time::timeout(Duration::from_secs(10), link)
        .await
        .expect("the agent's link stops")
        .unwrap();
    let stopped_at = OffsetDateTime::now_utc().unix_timestamp();
    let silent_since = {
        let store = Store::connect(&database_url).await.unwrap();
        let liveness = store
            .liveness(NodeId::from(node_id))
            .await
            .unwrap()
            .expect("the node's heartbeats were recorded");
        store.close().await;
        liveness.last_heartbeat
    };
    assert!(
        silent_since <= stopped_at,
        "the last heartbeat came before the stop"
    );
    // The second lease was terminated on chain just before the stop (as a run that crashed
    // between its termination and ending the VM would leave it).
    let arbiter = LeaseEscrow::new(escrow_addr, system.provider(0));
    tx::send(
        "LeaseEscrow",
        arbiter.terminateLease(other_lease, u64::try_from(silent_since).unwrap()),
    )
    .await
    .expect("the arbiter terminates the second lease");
    // The tenant's free balance before the first lease ends.
    let balance_before = tx::read("LeaseEscrow", escrow.balanceOf(tenant_addr))
        .await
        .unwrap();
    // An hour passes on chain while the node is gone; the orchestrator comes back.
    testing::increase_time(&tenant, 3600).await.unwrap();
    let _orchestrator = start_orchestrator();
    wait_for("the orchestrator to answer again", || async {
        let r = http
            .get(format!("{base}/api/v1/health"))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    // The orchestrator terminates the lease on-chain.
    let ended = wait_for("the lease to be terminated on chain", || async {
        let lease = tx::read("LeaseEscrow", escrow.getLease(lease_id))
            .await
            .ok()?;
        (LeaseStatus::try_from(lease.status).ok()? == LeaseStatus::Terminated).then_some(lease)
    })
    .await;
    assert_eq!(
        ended.endedAt as i64, silent_since,
        "accrual ended at the node's last heartbeat"
    );
    // Our own arithmetic: the rate over the time the node was up, rounded down; the rest of the
    // funding goes back to the tenant.
    let rate = U256::from(opened.ratePerHour);
    let up_secs = U256::from(u64::try_from(silent_since).unwrap() - opened.accrualStart);
    let charged = rate * up_secs / U256::from(3600);
    let refund = opened.funded - charged;
    let balance_after = tx::read("LeaseEscrow", escrow.balanceOf(tenant_addr))
        .await
        .unwrap();
    assert_eq!(
        balance_after - balance_before,
        refund,
        "the tenant is refunded everything after the node went silent, to the micro-USDC"
    );
    assert_eq!(ended.settled, charged, "what the lease settled");
    let chain_now = system
        .provider(0)
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap()
        .header
        .timestamp;
    assert!(
        rate * U256::from(chain_now - opened.accrualStart) / U256::from(3600) > charged,
        "the silent hour is not charged"
    );

    // The tenant sees why, on both VMs.
    for vm_path in ["/api/v1/vms/vm-1", "/api/v1/vms/vm-2"] {
        let vm = wait_for("the VM to say why it ended", || async {
            let (status, body) = get(&http, &base, vm_path, &token).await;
            (status == 200 && body["state"] == "terminated").then_some(body)
        })
        .await;
        let why = vm["failure"].as_str().unwrap_or_default();
        assert!(
            why.starts_with("node silent") && why.contains(&silent_since.to_string()),
            "the VM says its node went silent and since when: {vm}"
        );
    }

    // The orchestrator's termination is attested; the lease already ended on chain was not
    // terminated again.
    let sla_attestations = |subject: &'static str| {
        let (http, base, token) = (&http, &base, &token);
        async move {
            let (status, list) = get(
                http,
                base,
                &format!("/api/v1/attestations?subject={subject}"),
                token,
            )
            .await;
            assert_eq!(status, 200, "{list}");
            list.as_array()
                .unwrap()
                .iter()
                .filter(|a| a["kind"] == "lease.sla_terminated")
                .cloned()
                .collect::<Vec<Value>>()
        }
    };
    let sla = sla_attestations("lease:1").await;
    assert_eq!(sla.len(), 1, "one attested termination: {sla:?}");
    let payload: Value = serde_json::from_str(sla[0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["failed_at"], silent_since, "{payload}");
    assert!(
        sla_attestations("lease:2").await.is_empty(),
        "nothing sent for a lease already ended on chain"
    );
    let other_ended = tx::read("LeaseEscrow", escrow.getLease(other_lease))
        .await
        .unwrap();
    assert_eq!(other_ended.endedAt as i64, silent_since, "its end stands");

    agent.close().await;
}

#[tokio::test]
async fn only_a_key_holding_the_arbiter_role_terminates() {
    let system = TestSystem::start()
        .await
        .expect("anvil with the system deployed (run scripts/setup)");
    let escrow = system.deployment.contracts.lease_escrow.address;
    let arbiter = decloud_orchestrator::sla::Arbiter::new(escrow, system.provider(0), 1800);
    assert!(
        arbiter.holds_the_role(system.address(0)).await.unwrap(),
        "the deployer holds ARBITER_ROLE"
    );
    assert!(
        !arbiter.holds_the_role(system.address(5)).await.unwrap(),
        "another account does not: the orchestrator would not try with it"
    );
}
