//! Reviews end to end on a real anvil with the system deployed and the orchestrator following it:
//! a tenant's EIP-712 signed reviews of their lease's node and template are accepted once each and
//! show in the marketplace's aggregates; a review from an address without a lease, a second review
//! of the same lease, a changed review, one for another chain, an unknown lease and a template
//! review of a lease without a template are refused; accepted reviews verify offline.

use alloy::primitives::{Address, U256};
use decloud_orchestrator::{
    Config,
    config::{ChainConfig, SiweConfig},
};
use decloud_sdk::{
    USDC, agent_protocol,
    api::ReviewView,
    bindings::{
        LeaseEscrow, MockUSDC, NodeRegistry, TemplateMarket, lease_escrow::ILeaseEscrow,
        node_registry::INodeRegistry,
    },
    reviews::{ReviewDraft, ReviewSubject, SignedReview, sign},
    testing::TestSystem,
    tx,
    types::{Architecture, BandwidthTier, QualityTier},
};
use serde_json::{Value, json};
use std::{
    future::Future,
    path::Path,
    time::{Duration, Instant},
};

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

async fn get(url: String) -> (u16, Value) {
    let r = reqwest::get(&url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(base: &str, review: &SignedReview) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/reviews"))
        .json(review)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

use alloy::transports::http::reqwest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_leases_tenant_reviews_it_once_and_the_aggregates_show_it() {
    let system = TestSystem::start()
        .await
        .expect("anvil with the system deployed");
    let d = &system.deployment;
    let chain_id = system.anvil.chain_id();
    let escrow_addr = d.contracts.lease_escrow.address;
    let (operator, tenant, author) = (system.provider(1), system.provider(2), system.provider(3));
    let (tenant_key, stranger_key) = (system.signer(2), system.signer(4));

    // A node, and a seed template published by an author.
    let machine_id = agent_protocol::machine_id("reviewed-machine");
    let node_id = agent_protocol::node_id(machine_id, system.address(1));
    tx::send(
        "NodeRegistry",
        NodeRegistry::new(d.contracts.node_registry.address, operator.clone()).register(
            machine_id,
            Address::repeat_byte(7),
            "eu-west".into(),
            INodeRegistry::Capabilities {
                vcpus: 4,
                memoryGiB: 8,
                diskGiB: 100,
                gpus: 0,
                bandwidthMbps: 1_000,
                architecture: Architecture::X86_64.into(),
                flags: 1,
            },
            String::new(),
            String::new(),
            INodeRegistry::Prices {
                cpuPerHour: 5_000,
                memoryGiBPerHour: 2_500,
                storageGiBPerHour: 50,
                gpuPerHour: 50_000,
            },
        ),
    )
    .await
    .unwrap();
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/seed");
    let bundle = decloud_templates::Bundle::load_dir(seeds.join("postgresql")).unwrap();
    tx::send(
        "TemplateMarket",
        TemplateMarket::new(d.contracts.template_market.address, author).publish(
            bundle.cid().to_string(),
            U256::ZERO,
            "{}".into(),
        ),
    )
    .await
    .unwrap();

    // The tenant opens lease 1 with the template and lease 2 without one.
    let usdc = MockUSDC::new(d.usdc, tenant.clone());
    tx::send("MockUSDC", usdc.approve(escrow_addr, U256::from(20 * USDC)))
        .await
        .unwrap();
    let escrow = LeaseEscrow::new(escrow_addr, tenant.clone());
    tx::send("LeaseEscrow", escrow.deposit(U256::from(20 * USDC)))
        .await
        .unwrap();
    for template_id in [1u64, 0] {
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

    // The orchestrator follows the chain.
    let work = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let config = Config {
        listen: addr,
        database_url: format!("sqlite:{}", work.path().join("o.db").display()),
        templates_dir: Some(seeds),
        siwe: SiweConfig {
            domains: vec![addr.to_string()],
            uris: vec![base.clone()],
            ..SiweConfig::default()
        },
        chain: Some(ChainConfig {
            rpc_url: system.rpc_url().to_string(),
            node_registry: d.contracts.node_registry.address.to_string(),
            lease_escrow: escrow_addr.to_string(),
            template_market: Some(d.contracts.template_market.address.to_string()),
            storage_market: None,
            start_block: d.deploy_block,
            confirmations: 0,
            image: "blank".into(),
            grace_secs: 86_400,
            reconnect_grace_secs: 90,
            sla_window_secs: 1_800,
        }),
        ..Config::default()
    };
    let running = decloud_orchestrator::start(config, listener).await.unwrap();
    let node_url = format!("{base}/api/v1/nodes/{node_id}");
    eventually("the node and template 1 in the marketplace", || async {
        let (node, _) = get(node_url.clone()).await;
        let (template, _) = get(format!("{base}/api/v1/templates/1")).await;
        (node == 200 && template == 200).then_some(())
    })
    .await;
    let (_, listed) = get(node_url.clone()).await;
    assert_eq!(listed["rating"]["count"], 0, "{listed}");
    assert_eq!(listed["rating"]["mean_hundredths"], Value::Null, "{listed}");

    let review = |lease: u64, subject: ReviewSubject, rating: u8, text: &str| ReviewDraft {
        lease_id: U256::from(lease),
        subject,
        rating,
        text: text.into(),
    };
    let node_review = review(1, ReviewSubject::Node, 4, "Fast disks, never down.");

    // An address without a lease on that node is refused, and nothing is stored.
    let stranger = sign(&stranger_key, chain_id, escrow_addr, &node_review).unwrap();
    let (status, body) = post(&base, &stranger).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("not_eligible")),
        "{body}"
    );

    // A review changed after signing names another signer than the one it states.
    let mut changed = sign(&tenant_key, chain_id, escrow_addr, &node_review).unwrap();
    changed.rating = 5;
    let (status, body) = post(&base, &changed).await;
    assert_eq!(status, 400, "{body}");
    // Signed for another chain, or for a lease that does not exist.
    let other_chain = sign(&tenant_key, 1, escrow_addr, &node_review).unwrap();
    assert_eq!(post(&base, &other_chain).await.0, 400);
    let unknown = sign(
        &tenant_key,
        chain_id,
        escrow_addr,
        &review(99, ReviewSubject::Node, 3, ""),
    )
    .unwrap();
    assert_eq!(post(&base, &unknown).await.0, 404);
    // A lease without a template has no template to review.
    let no_template = sign(
        &tenant_key,
        chain_id,
        escrow_addr,
        &review(2, ReviewSubject::Template, 3, ""),
    )
    .unwrap();
    let (status, body) = post(&base, &no_template).await;
    assert_eq!(status, 422, "{body}");
    let (_, listed) = get(node_url.clone()).await;
    assert_eq!(
        listed["rating"]["count"], 0,
        "refusals store nothing: {listed}"
    );

    // The tenant's review is accepted, once.
    let signed = sign(&tenant_key, chain_id, escrow_addr, &node_review).unwrap();
    let (status, body) = post(&base, &signed).await;
    assert_eq!(status, 201, "{body}");
    let accepted: ReviewView = serde_json::from_value(body).unwrap();
    assert_eq!(accepted.target, format!("{node_id:#x}"));
    let again = sign(
        &tenant_key,
        chain_id,
        escrow_addr,
        &review(1, ReviewSubject::Node, 1, "Changed my mind."),
    )
    .unwrap();
    let (status, body) = post(&base, &again).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_reviewed")),
        "{body}"
    );
    // Its other lease rates the same node: two reviews in the aggregate.
    let second = sign(
        &tenant_key,
        chain_id,
        escrow_addr,
        &review(2, ReviewSubject::Node, 5, ""),
    )
    .unwrap();
    assert_eq!(post(&base, &second).await.0, 201);
    let template_review = sign(
        &tenant_key,
        chain_id,
        escrow_addr,
        &review(1, ReviewSubject::Template, 5, "Works out of the box."),
    )
    .unwrap();
    assert_eq!(post(&base, &template_review).await.0, 201);

    // The aggregates: the node has 4 and 5 stars, the template 5.
    let (_, listed) = get(node_url.clone()).await;
    assert_eq!(listed["rating"]["count"], 2, "{listed}");
    assert_eq!(listed["rating"]["stars"], 9, "{listed}");
    assert_eq!(listed["rating"]["mean_hundredths"], 450, "{listed}");
    let (_, found) = get(format!("{base}/api/v1/nodes?region=eu-west")).await;
    assert_eq!(found["nodes"][0]["rating"]["count"], 2, "{found}");
    let (_, template) = get(format!("{base}/api/v1/templates/1")).await;
    assert_eq!(template["rating"]["count"], 1, "{template}");
    assert_eq!(template["rating"]["mean_hundredths"], 500, "{template}");

    // Anyone can verify the listed reviews offline: they carry the signature and its domain.
    let (status, listed) = get(format!("{base}/api/v1/reviews?node={node_id}")).await;
    assert_eq!(status, 200);
    let listed: Vec<ReviewView> = serde_json::from_value(listed).unwrap();
    assert_eq!(listed.len(), 2);
    for r in &listed {
        assert_eq!(r.review.verify().unwrap(), system.address(2));
        assert_eq!(r.review.chain_id, chain_id);
    }
    assert_eq!(get(format!("{base}/api/v1/reviews")).await.0, 400);
    // The id is parsed, so its spelling does not matter and a malformed one is a 400 (not an
    // empty list).
    let upper = format!("0x{}", format!("{node_id:x}").to_uppercase());
    let (status, same) = get(format!("{base}/api/v1/reviews?node={upper}")).await;
    assert_eq!(
        (status, same.as_array().map(Vec::len)),
        (200, Some(2)),
        "{same}"
    );
    let (_, by_template) = get(format!("{base}/api/v1/reviews?template=01")).await;
    assert_eq!(
        by_template.as_array().map(Vec::len),
        Some(1),
        "{by_template}"
    );
    let (status, refused) = get(format!("{base}/api/v1/reviews?node=0x12")).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (400, &json!("invalid_node_id"))
    );
    let (status, refused) = get(format!("{base}/api/v1/reviews?template=one")).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (400, &json!("invalid_template_id"))
    );

    running.stop().await.unwrap();
}
