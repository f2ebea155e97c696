//! The real contracts (deployed by the SDK's test system) through a full money flow: a node is
//! registered and repriced, its operator stakes and unstakes, a tenant deposits, opens leases with
//! a paid template, tops up, is claimed against, closes; the arbiter terminates a lease; an author
//! withdraws; attestations are anchored. The indexed entities must equal what the contracts' own
//! view functions return, on SQLite and PostgreSQL, and the raw events must equal `eth_getLogs`.

mod common;

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use async_graphql::dynamic::Schema;
use common::{Kind, TestDb};
use decloud_indexer::graphql::{ApiState, schema};
use decloud_indexer::{
    ContractKind, Database, EventDecoder, Follower, FollowerConfig, IndexerHandler, Metrics,
};
use decloud_sdk::bindings::{
    AttestationAnchor, LeaseEscrow, MockUSDC, NodeRegistry, OperatorStaking, TemplateMarket,
};
use decloud_sdk::testing::{SendOk as _, TestSystem, increase_time};
use serde_json::{Value, json};
use sqlx::Row;
use std::sync::Arc;

const USDC: u64 = 1_000_000;

fn contracts(system: &TestSystem) -> Vec<(ContractKind, Address)> {
    let c = &system.deployment.contracts;
    vec![
        (ContractKind::NodeRegistry, c.node_registry.address),
        (ContractKind::OperatorStaking, c.operator_staking.address),
        (ContractKind::LeaseEscrow, c.lease_escrow.address),
        (ContractKind::TemplateMarket, c.template_market.address),
        (
            ContractKind::AttestationAnchor,
            c.attestation_anchor.address,
        ),
    ]
}

async fn index(system: &TestSystem, db: &Database) {
    let contracts = contracts(system);
    let provider = system.provider(0);
    let config = FollowerConfig::new(
        "indexer",
        contracts.iter().map(|(_, a)| *a).collect(),
        system.deployment.deploy_block,
    );
    let handler = IndexerHandler::new(EventDecoder::new(contracts), db.backend);
    Follower::new(provider, db.clone(), config, handler)
        .sync_to_head()
        .await
        .unwrap();
}

async fn q(schema: &Schema, query: &str) -> Value {
    let r = schema.execute(query).await;
    assert!(r.errors.is_empty(), "{query}: {:?}", r.errors);
    r.data.into_json().unwrap()
}

fn big(v: U256) -> Value {
    json!(v.to_string())
}

async fn money_flow(kind: Kind) {
    let system = TestSystem::start().await.unwrap();
    let c = system.deployment.contracts;
    let usdc = system.deployment.usdc;
    let admin = system.provider(0);
    let tenant_p = system.provider(1);
    let operator_p = system.provider(2);
    let author_p = system.provider(3);
    let tenant = system.address(1);
    let operator = system.address(2);
    let author = system.address(3);

    // Operator: register a node, change its prices, stake, request an unstake.
    let registry = NodeRegistry::new(c.node_registry.address, &operator_p);
    let machine = keccak256("machine-a");
    let caps = decloud_sdk::bindings::node_registry::INodeRegistry::Capabilities {
        vcpus: 8,
        memoryGiB: 32,
        diskGiB: 500,
        gpus: 0,
        bandwidthMbps: 1000,
        architecture: 0,
        flags: 1,
    };
    let prices = decloud_sdk::bindings::node_registry::INodeRegistry::Prices {
        cpuPerHour: 6_000,
        memoryGiBPerHour: 1_000,
        storageGiBPerHour: 10,
        gpuPerHour: 0,
    };
    registry
        .register(
            machine,
            operator,
            "eu-west".into(),
            caps,
            "https://n.example".into(),
            "bafy".into(),
            prices.clone(),
        )
        .send_ok()
        .await;
    let node_id = registry
        .computeNodeId(machine, operator)
        .call()
        .await
        .unwrap();
    let mut repriced = prices.clone();
    repriced.cpuPerHour = 7_000;
    registry.setPrices(node_id, repriced).send_ok().await;

    let staking = OperatorStaking::new(c.operator_staking.address, &operator_p);
    MockUSDC::new(usdc, &operator_p)
        .approve(c.operator_staking.address, U256::from(1_000 * USDC))
        .send_ok()
        .await;
    staking.stake(U256::from(1_000 * USDC)).send_ok().await;
    staking
        .requestUnstake(U256::from(400 * USDC))
        .send_ok()
        .await;

    // Author: a paid template.
    let market = TemplateMarket::new(c.template_market.address, &author_p);
    market
        .publish("bafytemplate".into(), U256::from(2 * USDC), "{}".into())
        .send_ok()
        .await;

    // Tenant: deposit, open two leases (one with the template), top up.
    let escrow = LeaseEscrow::new(c.lease_escrow.address, &tenant_p);
    MockUSDC::new(usdc, &tenant_p)
        .approve(c.lease_escrow.address, U256::from(500 * USDC))
        .send_ok()
        .await;
    escrow.deposit(U256::from(500 * USDC)).send_ok().await;
    let resources = decloud_sdk::bindings::lease_escrow::ILeaseEscrow::Resources {
        vcpus: 2,
        memoryGiB: 4,
        storageGiB: 50,
        gpus: 0,
    };
    escrow
        .openLease(
            node_id,
            resources.clone(),
            1,
            2,
            U256::from(1),
            U256::from(2 * USDC),
            u64::MAX,
            U256::from(50 * USDC),
        )
        .send_ok()
        .await;
    escrow
        .openLease(
            node_id,
            resources,
            0,
            0,
            U256::ZERO,
            U256::ZERO,
            u64::MAX,
            U256::from(20 * USDC),
        )
        .send_ok()
        .await;
    increase_time(&admin, 3_600).await.unwrap();
    escrow
        .topUp(U256::from(1), U256::from(5 * USDC))
        .send_ok()
        .await;

    // Operator claims; time passes; the tenant closes lease 1; the arbiter terminates lease 2.
    increase_time(&admin, 1_800).await.unwrap();
    LeaseEscrow::new(c.lease_escrow.address, &operator_p)
        .claim(vec![U256::from(1), U256::from(2)])
        .send_ok()
        .await;
    increase_time(&admin, 900).await.unwrap();
    escrow.closeLease(U256::from(1)).send_ok().await;
    let now = admin
        .get_block(alloy::eips::BlockId::latest())
        .await
        .unwrap()
        .unwrap()
        .header
        .timestamp;
    LeaseEscrow::new(c.lease_escrow.address, &admin)
        .terminateLease(U256::from(2), now - 60)
        .send_ok()
        .await;
    LeaseEscrow::new(c.lease_escrow.address, &operator_p)
        .claim(vec![U256::from(1), U256::from(2)])
        .send_ok()
        .await;
    escrow.withdraw(U256::from(100 * USDC)).send_ok().await;
    market.withdrawEarnings(author).send_ok().await;

    // Anchors.
    let anchor = AttestationAnchor::new(c.attestation_anchor.address, &admin);
    for i in 0..3u64 {
        let first = anchor.nextSequence().call().await.unwrap();
        anchor
            .anchor(
                B256::from(U256::from(i + 1)),
                10,
                first,
                format!("ipfs://b{i}"),
            )
            .send_ok()
            .await;
    }

    let t = TestDb::new(kind).await;
    index(&system, &t.db).await;

    // Raw events equal eth_getLogs of the five contracts.
    let decoder = EventDecoder::new(contracts(&system));
    let head = admin.get_block_number().await.unwrap();
    let logs = admin
        .get_logs(
            &Filter::new()
                .address(decoder.addresses())
                .from_block(system.deployment.deploy_block)
                .to_block(head),
        )
        .await
        .unwrap();
    let decodable = logs.iter().filter(|l| decoder.decode(l).is_some()).count() as i64;
    let stored: i64 = sqlx::query("SELECT COUNT(*) FROM events")
        .fetch_one(&t.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, decodable);
    assert!(stored >= 25, "the flow emitted {stored} events");

    // Entities equal the contracts' own state.
    let state = ApiState {
        db: t.db.clone(),
        cursor: "indexer".into(),
        metrics: Arc::new(Metrics::default()),
        notices: tokio::sync::broadcast::channel(1).0,
    };
    let s = schema(state).unwrap();
    let reader = LeaseEscrow::new(c.lease_escrow.address, &admin);
    for id in [1u64, 2] {
        let lease = reader.getLease(U256::from(id)).call().await.unwrap();
        let d = q(
            &s,
            &format!(
                r#"{{ lease(id: "{id}") {{ tenant operator node status ratePerHour feeBps funded settled
                     operatorPaid accrualStart accruedBefore openedAt endedAt templateId quality bandwidth }} }}"#
            ),
        )
        .await;
        let l = &d["lease"];
        assert_eq!(l["tenant"], json!(format!("{:#x}", lease.tenant)));
        assert_eq!(l["operator"], json!(format!("{:#x}", lease.operator)));
        assert_eq!(l["node"], json!(lease.nodeId.to_string()));
        let status = ["None", "Active", "Closed", "Terminated"][lease.status as usize];
        assert_eq!(l["status"], json!(status));
        assert_eq!(l["ratePerHour"], json!(lease.ratePerHour.to_string()));
        assert_eq!(l["feeBps"], json!(lease.feeBps));
        assert_eq!(l["funded"], big(lease.funded));
        assert_eq!(l["settled"], big(lease.settled));
        assert_eq!(l["operatorPaid"], big(lease.operatorPaid));
        assert_eq!(l["accrualStart"], json!(lease.accrualStart.to_string()));
        assert_eq!(l["accruedBefore"], big(lease.accruedBefore));
        assert_eq!(l["openedAt"], json!(lease.openedAt.to_string()));
        assert_eq!(l["endedAt"], json!(lease.endedAt.to_string()));
        assert_eq!(l["templateId"], big(lease.templateId));
        assert_eq!(l["quality"], json!(lease.quality as u8));
        assert_eq!(l["bandwidth"], json!(lease.bandwidth as u8));
    }
    let d = q(
        &s,
        &format!(
            r#"{{ account(id: "{tenant:#x}") {{ balance }} claims {{ lease operatorAmount }} }}"#
        ),
    )
    .await;
    assert_eq!(
        d["account"]["balance"],
        big(reader.balanceOf(tenant).call().await.unwrap())
    );
    let claimed: U256 = d["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["operatorAmount"]
                .as_str()
                .unwrap()
                .parse::<U256>()
                .unwrap()
        })
        .sum();
    let paid = reader
        .getLease(U256::from(1))
        .call()
        .await
        .unwrap()
        .operatorPaid
        + reader
            .getLease(U256::from(2))
            .call()
            .await
            .unwrap()
            .operatorPaid;
    assert_eq!(claimed, paid);

    let node = NodeRegistry::new(c.node_registry.address, &admin)
        .getNode(node_id)
        .call()
        .await
        .unwrap();
    let d = q(
        &s,
        &format!(
            r#"{{ node(id: "{node_id}") {{ operator region vcpus cpuPerHour memoryGiBPerHour status priceChanges }}
                 nodePrices(where: {{node: "{node_id}"}}) {{ cpuPerHour }} }}"#
        ),
    )
    .await;
    assert_eq!(d["node"]["operator"], json!(format!("{operator:#x}")));
    assert_eq!(d["node"]["region"], json!(node.region));
    assert_eq!(d["node"]["vcpus"], json!(node.capabilities.vcpus));
    assert_eq!(
        d["node"]["cpuPerHour"],
        json!(node.prices.cpuPerHour.to_string())
    );
    assert_eq!(
        d["node"]["memoryGiBPerHour"],
        json!(node.prices.memoryGiBPerHour.to_string())
    );
    assert_eq!(d["node"]["status"], json!("Active"));
    assert_eq!(d["node"]["priceChanges"], json!(2));
    assert_eq!(d["nodePrices"].as_array().unwrap().len(), 2);

    let st = OperatorStaking::new(c.operator_staking.address, &admin);
    let d = q(&s, &format!(r#"{{ stake(id: "{operator:#x}") {{ activeStake unbonding }} unstakeRequests {{ amount withdrawn }} }}"#)).await;
    assert_eq!(
        d["stake"]["activeStake"],
        big(st.activeStakeOf(operator).call().await.unwrap())
    );
    assert_eq!(
        d["stake"]["unbonding"],
        big(st.unbondingOf(operator).call().await.unwrap())
    );
    assert_eq!(
        d["unstakeRequests"],
        json!([{"amount": (400 * USDC).to_string(), "withdrawn": false}])
    );

    let tm = TemplateMarket::new(c.template_market.address, &admin);
    let template = tm.getTemplate(U256::from(1)).call().await.unwrap();
    let d = q(&s, r#"{ template(id: "1") { author cid price purchaseCount authorEarnings } purchases { buyer payer price authorShare platformShare } }"#).await;
    assert_eq!(d["template"]["author"], json!(format!("{author:#x}")));
    assert_eq!(d["template"]["cid"], json!(template.cid));
    assert_eq!(d["template"]["price"], big(template.price));
    assert_eq!(
        d["template"]["purchaseCount"],
        json!(template.purchaseCount.to_string())
    );
    let (author_share, platform_share) = tm
        .splitPrice(template.price)
        .call()
        .await
        .map(|r| (r.authorShare, r.platformShare))
        .unwrap();
    assert_eq!(d["template"]["authorEarnings"], big(author_share));
    assert_eq!(
        d["purchases"],
        json!([{"buyer": format!("{tenant:#x}"), "payer": format!("{:#x}", c.lease_escrow.address),
                "price": big(template.price), "authorShare": big(author_share), "platformShare": big(platform_share)}])
    );

    let aa = AttestationAnchor::new(c.attestation_anchor.address, &admin);
    let d = q(
        &s,
        "{ anchors(orderBy: batchId) { batchId root count firstSequence timestamp uri } }",
    )
    .await;
    for i in 0..3u64 {
        let batch = aa.getBatch(U256::from(i)).call().await.unwrap();
        assert_eq!(
            d["anchors"][i as usize],
            json!({"batchId": i.to_string(), "root": batch.root.to_string(), "count": batch.count.to_string(),
                   "firstSequence": batch.firstSequence.to_string(), "timestamp": batch.timestamp.to_string(),
                   "uri": batch.uri})
        );
    }
    filters(&s, tenant, operator, c.lease_escrow.address).await;
}

/// `where` filters on the entities of the real flow: at least one per entity, on both databases
/// (the StorageMarket entities' are in `tests/storage.rs`).
async fn filters(s: &Schema, tenant: Address, operator: Address, escrow: Address) {
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let (tenant, operator, escrow) = (
        format!("{tenant:#x}"),
        format!("{operator:#x}"),
        format!("{escrow:#x}"),
    );
    let active = (600 * USDC).to_string();
    let d = q(s, &format!(r#"{{ a: stakes(where: {{activeStake_gte: "{active}"}}) {{ id }} b: stakes(where: {{activeStake_gt: "{active}"}}) {{ id }} }}"#)).await;
    assert_eq!(ids(&d["a"]), vec![operator.clone()]);
    assert!(ids(&d["b"]).is_empty());
    let amount = (400 * USDC).to_string();
    let d = q(s, &format!(r#"{{ a: unstakeRequests(where: {{withdrawn_not: true, amount_lte: "{amount}"}}) {{ id }} b: unstakeRequests(where: {{amount_lt: "{amount}"}}) {{ id }} }}"#)).await;
    assert_eq!(ids(&d["a"]), vec![format!("{operator}-0")]);
    assert!(ids(&d["b"]).is_empty());
    let d = q(s, &format!(r#"{{ a: accounts(where: {{id_in: ["{tenant}", "{operator}"]}}) {{ id }} b: accounts(where: {{balance_lt: "1"}}) {{ id }} }}"#)).await;
    assert_eq!(ids(&d["a"]), vec![tenant.clone()]);
    assert!(ids(&d["b"]).is_empty());
    let all = q(s, "{ claims { id lease } }").await;
    let of = |lease: &str| -> Vec<String> {
        let mut v: Vec<String> = all["claims"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["lease"] == json!(lease))
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert!(!of("1").is_empty() && !of("2").is_empty());
    let d = q(s, &format!(r#"{{ a: claims(where: {{lease_in: ["1"]}}) {{ id }} b: claims(where: {{lease_not_in: ["1"], operator: "{operator}"}}) {{ id }} }}"#)).await;
    assert_eq!(ids(&d["a"]), of("1"));
    assert_eq!(ids(&d["b"]), of("2"));
    let d = q(s, &format!(r#"{{ a: purchases(where: {{payer: "{escrow}", buyer_starts_with: "{}"}}) {{ id }} b: purchases(where: {{price_gt: "{}"}}) {{ id }} }}"#, &tenant[..10], 2 * USDC)).await;
    assert_eq!(ids(&d["a"]), vec!["1".to_owned()]);
    assert!(ids(&d["b"]).is_empty());
    let d = q(s, r#"{ a: nodePrices(where: {cpuPerHour_gt: "6000"}) { cpuPerHour } b: templates(where: {cid_contains: "template"}) { id } c: leases(where: {status_not: "Active"}) { id } }"#).await;
    assert_eq!(d["a"], json!([{"cpuPerHour": "7000"}]));
    assert_eq!(ids(&d["b"]), vec!["1".to_owned()]);
    assert_eq!(ids(&d["c"]), vec!["1".to_owned(), "2".to_owned()]);
    let d = q(s, &format!(r#"{{ a: nodes(where: {{region_starts_with: "eu-", operator: "{operator}"}}) {{ id }} b: nodes(where: {{region_not: "eu-west"}}) {{ id }} }}"#)).await;
    assert_eq!(ids(&d["a"]).len(), 1);
    assert!(ids(&d["b"]).is_empty());
    let d = q(s, r#"{ a: anchors(where: {batchId_gt: "0", count_lte: "10"}) { id } b: events(where: {name: "LeaseOpened"}) { contract } }"#).await;
    assert_eq!(ids(&d["a"]), vec!["1".to_owned(), "2".to_owned()]);
    assert_eq!(
        d["b"],
        json!([{"contract": "LeaseEscrow"}, {"contract": "LeaseEscrow"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_money_flow_matches_contract_state() {
    money_flow(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_money_flow_matches_contract_state() {
    money_flow(Kind::Postgres).await;
}

/// `decloud dev`'s service list with the indexer after the chain: it indexes the deployment the
/// chain service recorded and publishes its GraphQL URL in the context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_service_indexes_the_local_chain() {
    use alloy::transports::http::reqwest;
    use decloud_sdk::dev::{DevContext, DevService};

    let system = TestSystem::start().await.unwrap();
    let mut ctx = DevContext {
        rpc_url: Some(system.rpc_url()),
        deployment: Some(system.deployment.clone()),
        ..DevContext::default()
    };
    let mut service = decloud_indexer::IndexerService::default();
    service.start(&mut ctx).await.unwrap();
    let (name, url) = ctx.endpoints.last().unwrap().clone();
    assert_eq!(name, "indexer (GraphQL)");
    let head = system.provider(0).get_block_number().await.unwrap();
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let body: Value = http
            .post(&url)
            .json(&json!({"query": "{ _meta { block { number } } }"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["data"]["_meta"]["block"]["number"] == json!(head.to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dev indexer did not catch up: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    service.stop().await;
    assert!(
        http.post(&url)
            .json(&json!({"query": "{ _meta { hasIndexingErrors } }"}))
            .send()
            .await
            .is_err()
    );
}
