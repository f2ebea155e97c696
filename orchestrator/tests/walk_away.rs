//! The orchestrator can die and come back. With leases running, the orchestrator process is
//! killed (`kill -9`); during the outage a lease is opened, another closed, a third topped up on
//! chain; the orchestrator is restarted (a) on its database, then, after a second outage, (b) on
//! an empty database. After each restart, within a generous bound: every lease active on chain
//! has exactly one VM running on its node, every closed lease none, no VM failed, nothing stuck
//! in `stopping`, the node's used capacity is what its running VMs hold, and the attestation
//! log verifies against the chain. Finally a VM destroyed behind the agent's back is reported
//! failed to its tenant. How long each recovery took is printed, never asserted.
//!
//! The CI test runs the node agent on libvirt's in-process test driver; the same walk on real
//! QEMU guests is `#[ignore]`d (part of `scripts/test --long`):
//! `cargo test -p decloud-orchestrator --test walk_away -- --ignored`.

use alloy::{
    primitives::U256,
    providers::ProviderBuilder,
    signers::{Signer, local::PrivateKeySigner},
    transports::http::reqwest,
};
use decloud_node_agent::{
    Agent, Backoff, ConfigLayer, DomainType, Identity, ImageConfig, NetworkConfig,
    create_blank_qcow2, run_link,
};
use decloud_orchestrator::{
    Store,
    scheduler::{QualityTier, TierShare},
};
use decloud_sdk::{NodeId, VmId};
use decloud_sdk::{
    USDC,
    agent_protocol::{self as proto, NodeResources},
    attestation::{self, Evidence, SignerInfo},
    bindings::{
        LeaseEscrow, MockUSDC, NodeRegistry, lease_escrow::ILeaseEscrow,
        node_registry::INodeRegistry,
    },
    testing::TestSystem,
    tx,
    types::{Architecture, BandwidthTier, VmState},
};
use serde_json::Value;
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// How long a recovery may take before the test gives up: generous for two shared CI cores
/// (the agent reconnects within its 2 s backoff cap here, heartbeats come every 15 s).
const RECOVERY_BOUND: Duration = Duration::from_secs(240);
const IMAGE: &str = "blank";

/// The orchestrator binary as a child process.
struct Orchestrator(Child);

impl Orchestrator {
    fn start(config: &Path, anchor_key: &PrivateKeySigner, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Self(
            Command::new(env!("CARGO_BIN_EXE_decloud-orchestrator"))
                .arg("--config")
                .arg(config)
                .env("DECLOUD_LOG", "info,sqlx=warn")
                .env(
                    "DECLOUD_PRIVATE_KEY",
                    format!("0x{}", hex::encode(anchor_key.to_bytes())),
                )
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("the orchestrator binary starts"),
        )
    }

    /// `kill -9`: no shutdown, no draining, nothing flushed.
    fn kill_9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
        std::mem::forget(self);
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a node needs from its surroundings: the agent configuration besides what every agent
/// of this test shares, and the image its VMs boot.
struct NodeSetup {
    libvirt_uri: String,
    network: NetworkConfig,
    /// The agent's data directory (QEMU must be able to reach it for real guests).
    data_dir: PathBuf,
    image: ImageConfig,
}

/// Removes the domains this test's node still owns when the test ends, passed or not: real
/// guests are QEMU processes that would outlive it.
struct Leftovers {
    libvirt_uri: String,
    node_id: alloy::primitives::B256,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let Ok(hypervisor) = decloud_node_agent::Hypervisor::open(&self.libvirt_uri) else {
            return;
        };
        for domain in hypervisor.owned_domains(self.node_id).unwrap_or_default() {
            let _ = hypervisor.remove(&domain.name);
        }
    }
}

/// Polls `check` (which says what is still missing) until it passes; returns how long it took,
/// or panics with the last thing missing after `bound`.
async fn converge<F, Fut>(what: &str, bound: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let mut last;
    loop {
        match check().await {
            Ok(()) => return started.elapsed(),
            Err(missing) => last = missing,
        }
        assert!(
            started.elapsed() < bound,
            "{what}: not reached within {bound:?}; still: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn get_json(http: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Sign-In with Ethereum: nonce → signed EIP-4361 message → session token.
async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    host: &str,
    chain_id: u64,
    signer: &PrivateKeySigner,
) -> String {
    let nonce: Value = http
        .post(format!("{base}/api/v1/auth/nonce"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let message = format!(
        "{host} wants you to sign in with your Ethereum account:\n{}\n\nSign in to DeCloud.\n\n\
         URI: {base}\nVersion: 1\nChain ID: {chain_id}\nNonce: {}\nIssued At: {}\n\
         Expiration Time: {}",
        signer.address().to_checksum(None),
        nonce["nonce"].as_str().unwrap(),
        now.format(&Rfc3339).unwrap(),
        (now + time::Duration::hours(1)).format(&Rfc3339).unwrap(),
    );
    let signature = signer.sign_message(message.as_bytes()).await.unwrap();
    let body: Value = http
        .post(format!("{base}/api/v1/auth/verify"))
        .json(&serde_json::json!({
            "message": message,
            "signature": format!("0x{}", hex::encode(signature.as_bytes())),
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["token"].as_str().expect("a session token").to_string()
}

/// The state a recovered orchestrator must reach, and the means to look at it.
struct World<'a> {
    http: reqwest::Client,
    base: String,
    rpc_url: url::Url,
    anchor: alloy::primitives::Address,
    agent: &'a Agent,
    node: NodeId,
    /// Lease id → vCPUs, memory GiB, disk GiB of the leases active on chain.
    active: BTreeMap<u64, (u64, u64, u64)>,
    /// Leases closed on chain.
    closed: BTreeSet<u64>,
    tier: QualityTier,
}

impl World<'_> {
    /// Everything the walk-away test demands, or the first thing that is not so yet.
    async fn recovered(&self, db: &str) -> Result<(), String> {
        let (status, health) =
            get_json(&self.http, &format!("{}/api/v1/health", self.base), None).await;
        if status != 200 || health["status"] != "ok" {
            return Err(format!("health: {status} {health}"));
        }
        let store = Store::connect(db).await.map_err(|e| e.to_string())?;
        let result = self.recovered_in(&store).await;
        store.close().await;
        result
    }

    async fn recovered_in(&self, store: &Store) -> Result<(), String> {
        let domains: BTreeMap<String, bool> = self
            .agent
            .owned_domains()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|d| (d.vm_id, d.active))
            .collect();
        let vms = store
            .vms_on_node(self.node)
            .await
            .map_err(|e| e.to_string())?;
        for vm in &vms {
            match vm.state {
                VmState::Failed => return Err(format!("{} failed: {:?}", vm.vm_id, vm.failure)),
                VmState::Stopping => return Err(format!("{} is stopping", vm.vm_id)),
                _ => {}
            }
        }
        for lease in self.active.keys() {
            let vm_id: VmId = format!("vm-{lease}").parse().unwrap();
            let running: Vec<_> = vms
                .iter()
                .filter(|v| v.vm_id == vm_id && v.state == VmState::Running)
                .collect();
            if running.len() != 1 {
                return Err(format!(
                    "active lease {lease}: {} running vm records",
                    running.len()
                ));
            }
            if domains.get(&vm_id.to_string()) != Some(&true) {
                return Err(format!(
                    "active lease {lease}: the node does not run {vm_id}"
                ));
            }
        }
        for lease in &self.closed {
            let vm_id = format!("vm-{lease}");
            if domains.contains_key(&vm_id) {
                return Err(format!(
                    "closed lease {lease}: {vm_id} is still on the node"
                ));
            }
            if vms
                .iter()
                .any(|v| v.vm_id.to_string() == vm_id && v.state != VmState::Terminated)
            {
                return Err(format!("closed lease {lease}: {vm_id} is not terminated"));
            }
        }
        if domains.len() != self.active.len() {
            return Err(format!("the node has domains {domains:?}"));
        }
        // The node's used capacity, as the marketplace shows it, is what the running VMs hold.
        let (status, listing) = get_json(
            &self.http,
            &format!("{}/api/v1/nodes/{}", self.base, self.node),
            None,
        )
        .await;
        if status != 200 {
            return Err(format!("node listing: {status} {listing}"));
        }
        let expected = self
            .active
            .values()
            .fold((0, 0, 0), |(c, m, d), (v, mem, disk)| {
                (c + self.tier.units_for(*v), m + mem, d + disk)
            });
        let used = &listing["used"];
        let shown = (
            used["compute_units"].as_u64().unwrap_or(u64::MAX),
            used["memory_gib"].as_u64().unwrap_or(u64::MAX),
            used["disk_gib"].as_u64().unwrap_or(u64::MAX),
        );
        if shown != expected {
            return Err(format!(
                "node capacity used {shown:?}, running vms hold {expected:?}"
            ));
        }
        self.log_verifies(store).await
    }

    /// Every attestation the orchestrator holds is anchored and verifies against the chain,
    /// link by link from the first it holds.
    async fn log_verifies(&self, store: &Store) -> Result<(), String> {
        let count = store.attestation_count().await.map_err(|e| e.to_string())?;
        let batches = store.batches().await.map_err(|e| e.to_string())?;
        // A rebuilt log holds nothing before its resumption point.
        let first = match batches.first() {
            Some(b)
                if store
                    .attestation(b.first_sequence)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none() =>
            {
                b.first_sequence + b.count
            }
            _ => 0,
        };
        if count <= first {
            return Err("the log holds no attestation".into());
        }
        let api = format!("{}/api/v1/attestations", self.base);
        let (_, info) = get_json(&self.http, &format!("{api}/signer"), None).await;
        let info: SignerInfo = serde_json::from_value(info).map_err(|e| format!("signer: {e}"))?;
        let provider = ProviderBuilder::new().connect_http(self.rpc_url.clone());
        let mut previous = None;
        let mut checked_batches = BTreeSet::new();
        for id in first..count {
            let (status, body) = get_json(&self.http, &format!("{api}/{id}"), None).await;
            if status != 200 {
                return Err(format!("attestation {id}: {status} {body}"));
            }
            let evidence: Evidence = serde_json::from_value(body).map_err(|e| e.to_string())?;
            if evidence.attestation.kind == attestation::RESUMED_KIND {
                let r = attestation::check_offline_resumed(&info, id, &evidence)
                    .map_err(|f| format!("attestation {id}: {f}"))?;
                attestation::check_resumed_on_chain(&provider, self.anchor, &r)
                    .await
                    .map_err(|f| format!("attestation {id} resumes after: {f}"))?;
            } else {
                attestation::check_offline(&info, id, &evidence, previous.as_ref())
                    .map_err(|f| format!("attestation {id}: {f}"))?;
            }
            let inclusion = evidence.inclusion.as_ref().expect("checked");
            if checked_batches.insert(inclusion.batch) {
                attestation::check_on_chain(&provider, self.anchor, inclusion)
                    .await
                    .map_err(|f| format!("attestation {id}: {f}"))?;
            }
            previous = Some(evidence.attestation);
        }
        Ok(())
    }
}

fn orchestrator_config(path: &Path, port: u16, db: &str, system: &TestSystem) {
    let d = &system.deployment;
    std::fs::write(
        path,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             database_url = \"{db}\"\n\
             [siwe]\n\
             domains = [\"127.0.0.1:{port}\"]\n\
             uris = [\"http://127.0.0.1:{port}\"]\n\
             chain_ids = [{chain_id}]\n\
             [chain]\n\
             rpc_url = \"{rpc}\"\n\
             node_registry = \"{registry}\"\n\
             lease_escrow = \"{escrow}\"\n\
             confirmations = 0\n\
             start_block = {start}\n\
             image = \"{IMAGE}\"\n\
             reconnect_grace_secs = 5\n\
             [attestation]\n\
             rpc_url = \"{rpc}\"\n\
             anchor = \"{anchor}\"\n\
             batch_size = 16\n\
             batch_interval_secs = 1\n\
             confirm_timeout_secs = 30\n",
            chain_id = system.anvil.chain_id(),
            rpc = system.rpc_url(),
            registry = d.contracts.node_registry.address,
            escrow = d.contracts.lease_escrow.address,
            start = d.deploy_block,
            anchor = d.contracts.attestation_anchor.address,
        ),
    )
    .unwrap();
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    converge(
        "the orchestrator to answer",
        Duration::from_secs(60),
        || async {
            let (status, _) = get_json(http, &format!("{base}/api/v1/health"), None).await;
            (status == 200)
                .then_some(())
                .ok_or_else(|| format!("health {status}"))
        },
    )
    .await;
}

async fn walk_away(setup: NodeSetup) {
    let system = TestSystem::start()
        .await
        .expect("anvil with the system deployed (run scripts/setup)");
    let d = &system.deployment;
    let chain_id = system.anvil.chain_id();
    let (operator, tenant) = (system.provider(1), system.provider(2));
    let operator_addr = system.address(1);
    let tenant_signer = system.signer(2);
    let anchor_key = system.signer(0);
    assert_eq!(anchor_key.address(), d.roles.anchor, "account 0 anchors");
    // Under target/, not /tmp: the agent checks each VM's disk against the free space there.
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = work.path().join("orchestrator.log");
    eprintln!("orchestrator log: {}", log.display());

    // The node agent, registered on-chain by its operator.
    let machine = format!("walk-away-{}", std::process::id());
    let agent_config = decloud_node_agent::Config::resolve(
        None,
        ConfigLayer::default(),
        ConfigLayer {
            data_dir: Some(setup.data_dir.clone()),
            libvirt_uri: Some(setup.libvirt_uri.clone()),
            domain_type: Some(DomainType::Qemu),
            orchestrator_url: Some(format!("ws://127.0.0.1:{port}/api/v1/agent/ws")),
            operator: Some(operator_addr),
            machine_id: Some(machine.clone()),
            shutdown_timeout_secs: Some(2),
            reserved_memory_mib: Some(0),
            network: Some(setup.network.clone()),
            images: BTreeMap::from([(IMAGE.to_string(), setup.image.clone())]),
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
        memory_mib: 8192,
        disks: vec![],
        vm_storage_free_bytes: 1 << 40,
        gpus: vec![],
        compute_points: 400,
    };
    let agent = Agent::open(agent_config, identity, resources)
        .await
        .unwrap();
    let node_id = proto::node_id(proto::machine_id(&machine), operator_addr);
    let _domains = Leftovers {
        libvirt_uri: setup.libvirt_uri.clone(),
        node_id,
    };
    let node = NodeId::from(node_id);
    let registry = NodeRegistry::new(d.contracts.node_registry.address, operator.clone());
    tx::send(
        "NodeRegistry",
        registry.register(
            proto::machine_id(&machine),
            node_key,
            "eu-west".into(),
            INodeRegistry::Capabilities {
                vcpus: 8,
                memoryGiB: 16,
                diskGiB: 200,
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

    // The tenant's funds and the lease operations of the walk.
    let escrow_addr = d.contracts.lease_escrow.address;
    let usdc = MockUSDC::new(d.usdc, tenant.clone());
    tx::send(
        "MockUSDC",
        usdc.approve(escrow_addr, U256::from(200 * USDC)),
    )
    .await
    .unwrap();
    let escrow = LeaseEscrow::new(escrow_addr, tenant.clone());
    tx::send("LeaseEscrow", escrow.deposit(U256::from(200 * USDC)))
        .await
        .unwrap();
    // At most three VMs at once (one opened before another is removed) fit the test driver's
    // 3 GiB host.
    let (vcpus, memory_gib, disk_gib) = (1u64, 1u64, 1u64);
    // Burstable: three 1-vCPU VMs fit a two-core host under its overcommit.
    let tier = QualityTier::Burstable;
    let mut next_lease = 1u64;
    let open = async |next: &mut u64| {
        tx::send(
            "LeaseEscrow",
            escrow.openLease(
                node_id,
                ILeaseEscrow::Resources {
                    vcpus: vcpus as u32,
                    memoryGiB: memory_gib as u32,
                    storageGiB: disk_gib as u32,
                    gpus: 0,
                },
                tier.into(),
                BandwidthTier::Basic.into(),
                U256::ZERO,
                U256::ZERO,
                u64::MAX,
                U256::from(5 * USDC),
            ),
        )
        .await
        .expect("the tenant opens a lease");
        *next += 1;
        *next - 1
    };
    let close = async |lease: u64| {
        tx::send("LeaseEscrow", escrow.closeLease(U256::from(lease)))
            .await
            .expect("the tenant closes a lease");
    };
    let top_up = async |lease: u64| {
        tx::send(
            "LeaseEscrow",
            escrow.topUp(U256::from(lease), U256::from(USDC)),
        )
        .await
        .expect("the tenant tops a lease up");
    };

    let http = reqwest::Client::new();
    let config = work.path().join("orchestrator.toml");
    let db_a = format!("sqlite:{}", work.path().join("a.db").display());
    orchestrator_config(&config, port, &db_a, &system);
    let orchestrator = Orchestrator::start(&config, &anchor_key, &log);
    wait_healthy(&http, &base).await;

    // The agent connects outbound and keeps reconnecting (2 s backoff cap here).
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
    let observer = {
        let agent = agent.clone();
        tokio::spawn(async move {
            loop {
                let _ = agent.observe().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    let mut world = World {
        http: http.clone(),
        base: base.clone(),
        rpc_url: system.rpc_url(),
        anchor: d.contracts.attestation_anchor.address,
        agent: &agent,
        node,
        active: BTreeMap::new(),
        closed: BTreeSet::new(),
        tier,
    };
    // Two leases running.
    for _ in 0..2 {
        let lease = open(&mut next_lease).await;
        world.active.insert(lease, (vcpus, memory_gib, disk_gib));
    }
    converge("the first leases to run", RECOVERY_BOUND, || {
        world.recovered(&db_a)
    })
    .await;

    // (a) kill -9; during the outage open one lease, close another, top up a third; restart on
    // the same database.
    orchestrator.kill_9();
    let opened = open(&mut next_lease).await;
    close(1).await;
    top_up(2).await;
    world.active.remove(&1);
    world.closed.insert(1);
    world.active.insert(opened, (vcpus, memory_gib, disk_gib));
    let restarted = Instant::now();
    let orchestrator = Orchestrator::start(&config, &anchor_key, &log);
    wait_healthy(&http, &base).await;
    converge("recovery on the same database", RECOVERY_BOUND, || {
        world.recovered(&db_a)
    })
    .await;
    let same_db = restarted.elapsed();
    println!("recovery after kill -9, same database: {same_db:?}");

    // (b) again, then restart on an empty database: nodes, leases and VMs come back from the
    // chain and the agent's reports, and the attestation log continues from the chain.
    let uuids = |domains: Vec<decloud_node_agent::OwnedDomain>| -> BTreeMap<String, String> {
        domains.into_iter().map(|d| (d.vm_id, d.uuid)).collect()
    };
    let before = uuids(agent.owned_domains().await.unwrap());
    orchestrator.kill_9();
    let opened = open(&mut next_lease).await;
    close(2).await;
    top_up(opened - 1).await;
    world.active.remove(&2);
    world.closed.insert(2);
    world.active.insert(opened, (vcpus, memory_gib, disk_gib));
    let db_b = format!("sqlite:{}", work.path().join("b.db").display());
    orchestrator_config(&config, port, &db_b, &system);
    let restarted = Instant::now();
    let orchestrator = Orchestrator::start(&config, &anchor_key, &log);
    wait_healthy(&http, &base).await;
    converge("recovery on an empty database", RECOVERY_BOUND, || {
        world.recovered(&db_b)
    })
    .await;
    let empty_db = restarted.elapsed();
    println!("recovery after kill -9, empty database: {empty_db:?}");
    // What kept running was adopted, not created again.
    let after = uuids(agent.owned_domains().await.unwrap());
    for (vm_id, uuid) in &after {
        if let Some(old) = before.get(vm_id) {
            assert_eq!(old, uuid, "{vm_id} was created again");
        }
    }
    // The rebuilt log starts with a resumption after the chain's last batch.
    let store = Store::connect(&db_b).await.unwrap();
    let resumed_after = store.batches().await.unwrap()[0].clone();
    let resumption = store
        .attestation(resumed_after.first_sequence + resumed_after.count)
        .await
        .unwrap()
        .expect("the resumption attestation");
    assert_eq!(resumption.kind, attestation::RESUMED_KIND);
    assert!(
        store.attestation(0).await.unwrap().is_none(),
        "the rebuilt log does not start over at 0"
    );
    store.close().await;

    // A VM destroyed behind the agent's back is reported, and its tenant sees it.
    let token = sign_in(
        &http,
        &base,
        &format!("127.0.0.1:{port}"),
        chain_id,
        &tenant_signer,
    )
    .await;
    let victim = format!("vm-{}", world.active.keys().next().unwrap());
    let name = agent.domain_name(&victim);
    agent
        .with_hypervisor(move |h| h.remove(&name))
        .await
        .expect("the domain is destroyed behind the agent's back");
    let destroyed = Instant::now();
    let vm_url = format!("{base}/api/v1/vms/{victim}");
    converge(
        "the tenant to see the destroyed vm failed",
        RECOVERY_BOUND,
        || async {
            let (status, vm) = get_json(&http, &vm_url, Some(&token)).await;
            (status == 200 && vm["state"] == "failed" && vm["failure"].as_str().is_some())
                .then_some(())
                .ok_or_else(|| format!("{status} {vm}"))
        },
    )
    .await;
    println!(
        "destroyed vm shown failed to its tenant after {:?}",
        destroyed.elapsed()
    );

    drop(orchestrator);
    let _ = stop_agent.send(true);
    observer.abort();
    let _ = tokio::time::timeout(Duration::from_secs(10), link).await;
    agent.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_converge_after_the_orchestrator_is_killed_and_rebuilt() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let image = dir.path().join("base.qcow2");
    create_blank_qcow2(&image, 16).unwrap();
    walk_away(NodeSetup {
        libvirt_uri: "test:///default".into(),
        network: NetworkConfig::Network {
            name: "default".into(),
        },
        data_dir: dir.path().join("data"),
        image: ImageConfig {
            base: image,
            kernel: None,
            initrd: None,
            cmdline: None,
        },
    })
    .await;
}

/// The same walk with real QEMU guests under the system libvirtd: the host's kernel booted
/// directly with the node agent's busybox test guest. Part of `scripts/test --long`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real QEMU guests: needs libvirtd and minutes; run with --ignored (scripts/test --long)"]
async fn leases_on_real_qemu_guests_converge_after_the_orchestrator_is_killed_and_rebuilt() {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = decloud_node_agent::Hypervisor::open("qemu:///system") {
        panic!("needs libvirtd and virtlogd running with QEMU installed (scripts/setup): {e}");
    }
    // Under /var/tmp, readable by QEMU's own user.
    let dir = tempfile::Builder::new()
        .prefix("decloud-walk-away-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kernel = decloud_node_agent::test_guest::find_kernel().expect("a host kernel in /boot");
    let release = decloud_node_agent::test_guest::kernel_release(&kernel).unwrap();
    let initrd = dir.path().join("test-guest.cpio");
    decloud_node_agent::test_guest::build_initramfs(&release, &initrd)
        .expect("the test guest's initramfs builds (busybox-static)");
    let base = dir.path().join("base.qcow2");
    create_blank_qcow2(&base, 16).unwrap();
    walk_away(NodeSetup {
        libvirt_uri: "qemu:///system".into(),
        network: NetworkConfig::User,
        data_dir: dir.path().join("data"),
        image: ImageConfig {
            base,
            kernel: Some(kernel),
            initrd: Some(initrd),
            cmdline: Some(decloud_node_agent::test_guest::CMDLINE.into()),
        },
    })
    .await;
}
