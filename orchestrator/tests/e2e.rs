//! End to end on a real anvil with the whole system deployed: an operator registers a node
//! on-chain and starts its agent (libvirt's in-process test driver); the orchestrator binary
//! follows the chain through the indexer's follower; a tenant signs in with SIWE, opens a
//! lease from a seed template published on TemplateMarket, watches the VM reach Running on the
//! agent, closes the lease and watches the VM go.

use alloy::{
    primitives::{U256, keccak256},
    signers::{Signer, local::PrivateKeySigner},
    transports::http::reqwest,
};
use decloud_node_agent::{
    Agent, Backoff, ConfigLayer, DomainType, Identity, ImageConfig, NetworkConfig,
    create_blank_qcow2, run_link,
};
use decloud_sdk::{
    USDC,
    agent_protocol::{self as proto, NodeResources},
    bindings::{
        LeaseEscrow, MockUSDC, NodeRegistry, TemplateMarket, lease_escrow::ILeaseEscrow,
        node_registry::INodeRegistry,
    },
    testing::TestSystem,
    tx,
    types::{Architecture, BandwidthTier, QualityTier},
};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// CI machines have two cores shared with other jobs: generous, but bounded.
const TIMEOUT: Duration = Duration::from_secs(90);
const SEED: &str = "shadowsocks";
const IMAGE: &str = "blank";
/// The fake GPU of the node (see the fake sysfs below) and its audio function.
const GPU: &str = "0000:01:00.0";
const GPU_AUDIO: &str = "0000:01:00.1";

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

/// Whether the agent's libvirt holds a domain for `vm_id`, and whether it runs.
async fn domain_of(agent: &Agent, vm_id: &str) -> Option<bool> {
    agent
        .owned_domains()
        .await
        .expect("the agent lists its domains")
        .into_iter()
        .find(|d| d.vm_id == vm_id)
        .map(|d| d.active)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_opens_and_closes_a_lease_and_the_vm_follows_on_the_node() {
    let system = TestSystem::start()
        .await
        .expect("anvil with the system deployed (run scripts/setup)");
    let d = &system.deployment;
    let chain_id = system.anvil.chain_id();
    let (operator, tenant, author) = (system.provider(1), system.provider(2), system.provider(3));
    let operator_addr = system.address(1);
    let tenant_signer = system.signer(2);
    let tenant_addr = tenant_signer.address();
    let work = tempfile::tempdir().unwrap();

    // The node agent: its key and machine id, on libvirt's in-process test driver.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let agent_dir = work.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let image = agent_dir.join("base.qcow2");
    create_blank_qcow2(&image, 16).unwrap();
    let machine = "e2e-node";
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
            network: Some(NetworkConfig::Network {
                name: "default".into(),
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
    let (identity, _) = Identity::load_or_create(&agent_config).unwrap();
    let node_key = identity.address();
    // Resources as discovery reports them, without spending CI time on the benchmark. This
    // host has no GPU: discovery reads a fake sysfs tree with one GPU (and its audio function)
    // in IOMMU group 5.
    let sysfs = work.path().join("fake-sysfs");
    for (address, class) in [(GPU, "0x030000"), (GPU_AUDIO, "0x040300")] {
        let device = sysfs.join("bus/pci/devices").join(address);
        std::fs::create_dir_all(&device).unwrap();
        std::fs::write(device.join("class"), class).unwrap();
        std::fs::write(device.join("vendor"), "0x10de").unwrap();
        std::fs::write(device.join("device"), "0x2684").unwrap();
        let group = sysfs.join("kernel/iommu_groups/5/devices");
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(group.join(address), "").unwrap();
    }
    let resources = NodeResources {
        arch: std::env::consts::ARCH.into(),
        cpu_model: "test".into(),
        cpu_cores: 4,
        memory_mib: 4096,
        disks: vec![],
        vm_storage_free_bytes: 1 << 40,
        gpus: decloud_node_agent::discover_gpus(&sysfs),
        compute_points: 400,
    };
    assert_eq!(resources.gpus.len(), 1);
    let agent = Agent::open(agent_config, identity, resources)
        .await
        .unwrap();

    // The operator registers that node on-chain with the agent's key and machine id.
    let machine_id = proto::machine_id(machine);
    let node_id = proto::node_id(machine_id, operator_addr);
    assert_eq!(
        node_id,
        keccak256([machine_id.as_slice(), operator_addr.as_slice()].concat()),
        "node id = keccak256(machineId ‖ operator)"
    );
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
                // One more than the agent can pass through: the agent is the last word.
                gpus: 2,
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

    // The orchestrator binary: SQLite in a temp dir, the seed catalog, following the chain.
    let config = work.path().join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             database_url = \"sqlite:{db}\"\n\
             templates_dir = \"{seeds}\"\n\
             [siwe]\n\
             domains = [\"127.0.0.1:{port}\"]\n\
             uris = [\"{base}\"]\n\
             chain_ids = [{chain_id}]\n\
             [chain]\n\
             rpc_url = \"{rpc}\"\n\
             node_registry = \"{registry}\"\n\
             lease_escrow = \"{escrow}\"\n\
             template_market = \"{market}\"\n\
             confirmations = 0\n\
             image = \"{IMAGE}\"\n",
            db = work.path().join("orchestrator.db").display(),
            seeds = root().join("templates/seed").display(),
            rpc = system.rpc_url(),
            registry = d.contracts.node_registry.address,
            escrow = d.contracts.lease_escrow.address,
            market = d.contracts.template_market.address,
        ),
    )
    .unwrap();
    let _orchestrator = Orchestrator(
        Command::new(env!("CARGO_BIN_EXE_decloud-orchestrator"))
            .arg("--config")
            .arg(&config)
            .env("DECLOUD_LOG", "info")
            .spawn()
            .expect("the orchestrator binary starts"),
    );
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

    // The agent starts and connects outbound to the orchestrator's WebSocket.
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

    // The tenant signs in with SIWE using an anvil key.
    let token = sign_in(
        &http,
        &base,
        &format!("127.0.0.1:{port}"),
        chain_id,
        &tenant_signer,
    )
    .await;
    let (status, session) = get(&http, &base, "/api/v1/auth/session", &token).await;
    assert_eq!(status, 200, "session: {session}");
    assert!(
        session
            .to_string()
            .to_lowercase()
            .contains(&format!("{tenant_addr:#x}")),
        "the session is the tenant's: {session}"
    );

    // An author publishes the seed bundle on TemplateMarket under its content id.
    let bundle = decloud_templates::Bundle::load_dir(root().join("templates/seed").join(SEED))
        .expect("the seed bundle loads");
    let cid = bundle.cid().to_string();
    let market = TemplateMarket::new(d.contracts.template_market.address, author.clone());
    let template_price = USDC;
    tx::send(
        "TemplateMarket",
        market.publish(cid.clone(), U256::from(template_price), "{}".into()),
    )
    .await
    .expect("the author publishes the template");
    let template_id = U256::from(1);
    let (_, template) = wait_for("the orchestrator to map template 1 to the seed", || async {
        let (status, body) = get(&http, &base, "/api/v1/templates/1", &token).await;
        (status == 200).then_some((status, body))
    })
    .await;
    assert_eq!(template["slug"], SEED, "template 1 is the seed: {template}");

    // Wait for the node to be known and its agent connected before the tenant picks it.
    let node_path = format!("/api/v1/nodes/{node_id:#x}");
    wait_for(
        "the orchestrator to see the node's agent online",
        || async {
            let (status, body) = get(&http, &base, &node_path, &token).await;
            (status == 200 && body.to_string().contains("\"online\":true")).then_some(())
        },
    )
    .await;

    // The tenant deposits and opens a lease on that node with that template.
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
                vcpus: 1,
                memoryGiB: 1,
                storageGiB: 5,
                gpus: 0,
            },
            QualityTier::Dedicated.into(),
            BandwidthTier::Basic.into(),
            template_id,
            U256::from(template_price),
            u64::MAX,
            U256::from(5 * USDC),
        ),
    )
    .await
    .expect("the tenant opens a lease");
    let lease_id = U256::from(1);
    let vm_path = "/api/v1/vms/vm-1";

    // The VM reaches Running on the orchestrator, and the domain runs in the agent's libvirt.
    let vm = wait_for("the VM to be running", || async {
        let (status, body) = get(&http, &base, vm_path, &token).await;
        (status == 200 && body["state"] == "running").then_some(body)
    })
    .await;
    assert_eq!(
        vm["node_id"].as_str().map(str::to_lowercase),
        Some(format!("{node_id:#x}")),
        "{vm}"
    );
    assert_eq!(
        domain_of(&agent, "vm-1").await,
        Some(true),
        "the agent runs the VM's domain in libvirt"
    );

    // What runs is the seed template, rendered for this VM, on the image the orchestrator names.
    let record = agent
        .store()
        .vm("vm-1")
        .await
        .unwrap()
        .expect("the agent records the VM");
    assert_eq!(
        (
            record.spec.image.as_str(),
            record.spec.vcpus,
            record.spec.disk_gib
        ),
        (IMAGE, 1, 5)
    );
    assert!(
        record.spec.user_data.starts_with("#cloud-config")
            && record.spec.user_data.contains("shadowsocks"),
        "the VM boots the seed's user-data: {}",
        record.spec.user_data
    );
    assert!(
        record.spec.ports.iter().any(|p| p.guest == 8388),
        "the seed's ports reach the node: {:?}",
        record.spec.ports
    );

    // Each of the seed's checks reaches the tenant with its state, last check and detail.
    // The test driver's guest never boots: cloud-init never finishes. (What the TCP check
    // meets depends on the address the test driver invents, so only its shape is checked.)
    let vm = wait_for("the node to report the VM's checks", || async {
        let (status, body) = get(&http, &base, vm_path, &token).await;
        let services = body["readiness"]["services"].as_array()?;
        (status == 200 && services.len() == 2 && services.iter().all(|s| s["checked_at"].is_u64()))
            .then_some(body)
    })
    .await;
    let readiness = &vm["readiness"];
    assert_eq!(readiness["ready"], false, "{readiness}");
    assert!(readiness["reported_at"].is_i64(), "{readiness}");
    let services = readiness["services"].as_array().unwrap();
    assert_eq!(
        services
            .iter()
            .map(|s| s["check"].clone())
            .collect::<Vec<_>>(),
        ["cloud-init finished", "tcp :8388"],
        "{readiness}"
    );
    assert_eq!(services[1]["probe"]["kind"], "tcp");
    assert_eq!(services[1]["probe"]["port"], 8388);
    assert_eq!(services[0]["state"], "not_ready", "{readiness}");
    assert_eq!(services[0]["detail"], "cloud-init has not finished");
    assert!(
        services[1]["state"] == "ready" && services[1]["detail"].is_null()
            || services[1]["state"] == "not_ready" && services[1]["detail"].is_string(),
        "{readiness}"
    );

    // A lease with a GPU: the node reserves its GPU and passes it through (with the rest of
    // its IOMMU group) as VFIO hostdevs.
    let open_gpu_lease = || {
        escrow.openLease(
            node_id,
            ILeaseEscrow::Resources {
                vcpus: 1,
                memoryGiB: 1,
                storageGiB: 5,
                gpus: 1,
            },
            QualityTier::Dedicated.into(),
            BandwidthTier::Basic.into(),
            U256::ZERO,
            U256::ZERO,
            u64::MAX,
            U256::from(3 * USDC),
        )
    };
    tx::send("LeaseEscrow", open_gpu_lease())
        .await
        .expect("the tenant opens a GPU lease");
    let gpu_vm = wait_for("the GPU VM to be running", || async {
        let (status, body) = get(&http, &base, "/api/v1/vms/vm-2", &token).await;
        (status == 200 && body["state"] == "running").then_some(body)
    })
    .await;
    assert_eq!(gpu_vm["gpus"], 1, "{gpu_vm}");
    let record = agent.store().vm("vm-2").await.unwrap().unwrap();
    assert_eq!(
        record.spec.gpus, 1,
        "the lease's GPU count reaches the spec"
    );
    assert_eq!(agent.store().gpus_of("vm-2").await.unwrap(), [GPU]);
    let gpu_domain = agent.domain_name("vm-2");
    let xml = agent
        .with_hypervisor(move |h| h.domain_xml(&gpu_domain))
        .await
        .unwrap()
        .expect("the GPU VM's domain exists");
    // libvirt writes the definition back in its own layout: one VFIO hostdev per device of
    // the GPU's IOMMU group, with the host PCI address as the source.
    assert_eq!(
        xml.matches("<hostdev mode='subsystem' type='pci' managed='yes'>")
            .count(),
        2,
        "{xml}"
    );
    let compact = xml.split_whitespace().collect::<Vec<_>>().join(" ");
    for function in ["0x0", "0x1"] {
        let source = format!(
            "<source> <address domain='0x0000' bus='0x01' slot='0x00' function='{function}'/>"
        );
        assert!(compact.contains(&source), "{function} missing: {xml}");
    }

    // A second GPU lease: the chain and the scheduler still count one GPU free, but the node
    // has none left to pass through and refuses, and the tenant sees why.
    tx::send("LeaseEscrow", open_gpu_lease())
        .await
        .expect("the tenant opens a second GPU lease");
    let refused = wait_for("the second GPU VM to fail", || async {
        let (status, body) = get(&http, &base, "/api/v1/vms/vm-3", &token).await;
        (status == 200 && body["state"] == "failed").then_some(body)
    })
    .await;
    let failure = refused["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains("1 GPUs wanted: 0 of this node's 1 passable GPUs are free"),
        "{refused}"
    );
    assert!(agent.store().vm("vm-3").await.unwrap().is_none());
    for lease in [2u64, 3] {
        tx::send("LeaseEscrow", escrow.closeLease(U256::from(lease)))
            .await
            .expect("the tenant closes the GPU leases");
    }
    wait_for("the GPU to be free again", || async {
        agent
            .store()
            .gpu_reservations()
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;

    // The tenant closes the lease on-chain: the VM is terminated and its domain removed.
    tx::send("LeaseEscrow", escrow.closeLease(lease_id))
        .await
        .expect("the tenant closes the lease");
    let vm = wait_for("the VM to be terminated", || async {
        let (status, body) = get(&http, &base, vm_path, &token).await;
        (status == 200 && body["state"] == "terminated").then_some(body)
    })
    .await;
    assert_eq!(vm["state"], "terminated");
    wait_for("the agent to remove the VM's domain", || async {
        domain_of(&agent, "vm-1").await.is_none().then_some(())
    })
    .await;
    assert!(
        agent.store().vm("vm-1").await.unwrap().is_none(),
        "the agent forgets the deleted VM"
    );
    assert!(
        !agent_dir.join("data/vms/vm-1").exists(),
        "the agent removes the deleted VM's files"
    );

    // Stop everything this test started: the agent's link and observer, then the orchestrator
    // (dropped) and anvil (dropped with the system).
    let _ = stop_agent.send(true);
    observer.abort();
    tokio::time::timeout(Duration::from_secs(10), link)
        .await
        .expect("the agent's link stops")
        .unwrap();
    agent.close().await;
}
