//! Registering a storage deal's repair secret through the API, against the real contracts on
//! anvil and both stores: the repairer's address is served, only the deal's owner registers,
//! only for an unsettled deal that names this orchestrator's repairer, only a 32-byte secret; every refusal
//! stores nothing, and what is stored is sealed (the secret never appears in the database).

mod support;

use alloy::{
    primitives::{B256, U256},
    providers::Provider,
    signers::{Signer, local::PrivateKeySigner},
};
use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use decloud_orchestrator::{
    AppState, Config, Store, app,
    clock::now,
    config::{ChainConfig, SiweConfig},
    repair::{RepairDesk, Repairer},
};
use decloud_sdk::{
    agent_protocol,
    bindings::{MockUSDC, NodeRegistry, StorageMarket, node_registry::INodeRegistry},
    testing::{SendOk as _, TestSystem},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tower::ServiceExt;

const DOMAIN: &str = "app.decloud.test";
const URI: &str = "https://app.decloud.test";
const OWNER: usize = 5;
const STRANGER: usize = 6;
const REPAIR_KEY: usize = 7;
const SECRET: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a0001";

fn config(system: &TestSystem) -> Config {
    let c = &system.deployment.contracts;
    Config {
        siwe: SiweConfig {
            domains: vec![DOMAIN.into()],
            uris: vec![URI.into()],
            chain_ids: vec![31337],
            ..SiweConfig::default()
        },
        signin_burst: 1_000,
        chain: Some(ChainConfig {
            rpc_url: system.rpc_url().to_string(),
            node_registry: c.node_registry.address.to_string(),
            lease_escrow: c.lease_escrow.address.to_string(),
            template_market: None,
            storage_market: Some(c.storage_market.address.to_string()),
            start_block: 0,
            confirmations: 0,
            image: "base".into(),
            grace_secs: 60,
            reconnect_grace_secs: 0,
            sla_window_secs: 1800,
        }),
        ..Config::default()
    }
}

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    };
    let res = router.clone().oneshot(req.unwrap()).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn sign_in(router: &Router, signer: &PrivateKeySigner) -> String {
    let (_, nonce) = call(router, Method::POST, "/api/v1/auth/nonce", None, None).await;
    let issued = OffsetDateTime::from_unix_timestamp(now())
        .unwrap()
        .format(&Rfc3339)
        .unwrap();
    let message = format!(
        "{DOMAIN} wants you to sign in with your Ethereum account:\n{}\n\nSign in to DeCloud.\n\nURI: {URI}\n\
         Version: 1\nChain ID: 31337\nNonce: {}\nIssued At: {issued}",
        signer.address().to_checksum(None),
        nonce["nonce"].as_str().unwrap()
    );
    let sig = signer.sign_message(message.as_bytes()).await.unwrap();
    let (status, body) = call(
        router,
        Method::POST,
        "/api/v1/auth/verify",
        Some(json!({ "message": message, "signature": format!("0x{}", hex::encode(sig.as_bytes())) })),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_string()
}

async fn register_node(system: &TestSystem, who: usize, machine: &str) -> B256 {
    let p = system.provider(who);
    let registry = NodeRegistry::new(system.deployment.contracts.node_registry.address, &p);
    let machine = agent_protocol::machine_id(machine);
    registry
        .register(
            machine,
            system.address(who),
            "eu-west".into(),
            INodeRegistry::Capabilities {
                vcpus: 8,
                memoryGiB: 32,
                diskGiB: 2000,
                gpus: 0,
                bandwidthMbps: 1000,
                architecture: 0,
                flags: 0,
            },
            "wss://node".into(),
            "bafy".into(),
            INodeRegistry::Prices {
                cpuPerHour: 0,
                memoryGiBPerHour: 0,
                storageGiBPerHour: 0,
                gpuPerHour: 0,
            },
        )
        .send_ok()
        .await;
    registry
        .computeNodeId(machine, system.address(who))
        .call()
        .await
        .unwrap()
}

/// Deals 1 (naming the repairer), 2 (naming none) and 3 (naming the repairer, settled) of
/// OWNER, on two registered nodes.
async fn open_deals(system: &TestSystem) {
    let market_address = system.deployment.contracts.storage_market.address;
    let a = register_node(system, 2, "registration-a").await;
    let b = register_node(system, 3, "registration-b").await;
    let market = StorageMarket::new(market_address, system.provider(OWNER));
    MockUSDC::new(system.deployment.usdc, system.provider(OWNER))
        .approve(market_address, U256::MAX)
        .send_ok()
        .await;
    for (deal, epochs) in [(1u64, 10), (2, 10), (3, 1)] {
        market
            .createDeal(
                vec![a, b],
                vec![U256::from(deal * 10 + 1), U256::from(deal * 10 + 2)],
                4,
                1_000,
                epochs,
            )
            .send_ok()
            .await;
    }
    for deal in [1u64, 3] {
        market
            .setRepairer(U256::from(deal), system.address(REPAIR_KEY))
            .send_ok()
            .await;
    }
    let epoch_blocks = market.epochBlocks().call().await.unwrap();
    for _ in 0..=epoch_blocks {
        decloud_sdk::testing::mine(&system.provider(0))
            .await
            .unwrap();
    }
    market.settle(U256::from(3)).send_ok().await;
}

async fn stored_rows(store: &Store, deal: u64) -> bool {
    store.repair_secret(deal).await.unwrap().is_some()
}

async fn registration_on(system: &TestSystem, database_url: &str) {
    let chain_id = system.provider(0).get_chain_id().await.unwrap();
    let market = system.deployment.contracts.storage_market.address;
    let store = Store::connect(database_url).await.unwrap();

    // Without a repair key, nothing is offered.
    let bare = app(AppState::new(store.clone(), config(system)).unwrap());
    let (status, body) = call(&bare, Method::GET, "/api/v1/storage/repairer", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "repair_not_offered");

    let desk = RepairDesk::new(Repairer::new(
        system.provider(REPAIR_KEY),
        system.signer(REPAIR_KEY),
        market,
        chain_id,
    ));
    let state = AppState::new(store.clone(), config(system)).unwrap();
    state.set_repair(desk.clone());
    let router = app(state);

    let (status, body) = call(&router, Method::GET, "/api/v1/storage/repairer", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["address"],
        system.address(REPAIR_KEY).to_checksum(None)
    );
    assert_eq!(body["chain_id"], chain_id);
    assert_eq!(body["storage_market"], market.to_checksum(None));

    let owner = sign_in(&router, &system.signer(OWNER)).await;
    let stranger = sign_in(&router, &system.signer(STRANGER)).await;
    let register = |deal: &str, secret: &str, token: Option<String>| {
        let router = router.clone();
        let uri = format!("/api/v1/storage/deals/{deal}/repair");
        let body = json!({ "secret": secret });
        async move { call(&router, Method::POST, &uri, Some(body), token.as_deref()).await }
    };

    // Refusals, each with nothing stored.
    let refusals: [(&str, &str, Option<String>, StatusCode, &str); 9] = [
        (
            "1",
            SECRET,
            None,
            StatusCode::UNAUTHORIZED,
            "missing_session",
        ),
        (
            "1",
            SECRET,
            Some(stranger.clone()),
            StatusCode::FORBIDDEN,
            "not_owner",
        ),
        (
            "1",
            "0x1234",
            Some(owner.clone()),
            StatusCode::BAD_REQUEST,
            "invalid_secret",
        ),
        (
            "1",
            &"zz".repeat(32),
            Some(owner.clone()),
            StatusCode::BAD_REQUEST,
            "invalid_secret",
        ),
        (
            "99",
            SECRET,
            Some(owner.clone()),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "2",
            SECRET,
            Some(owner.clone()),
            StatusCode::CONFLICT,
            "not_repairer",
        ),
        (
            "3",
            SECRET,
            Some(owner.clone()),
            StatusCode::CONFLICT,
            "deal_settled",
        ),
        (
            "x",
            SECRET,
            Some(owner.clone()),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            "18446744073709551615",
            SECRET,
            Some(owner.clone()),
            StatusCode::BAD_REQUEST,
            "invalid_deal_id",
        ),
    ];
    for (deal, secret, token, want, code) in refusals {
        let (status, body) = register(deal, secret, token).await;
        assert_eq!(status, want, "deal {deal}: {body}");
        assert_eq!(body["error"]["code"], code, "deal {deal}: {body}");
    }
    let (_, body) = register("2", SECRET, Some(owner.clone())).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("setRepairer")
            && message.contains(&system.address(REPAIR_KEY).to_string()),
        "{message}"
    );
    for deal in [1, 2, 3, 99] {
        assert!(!stored_rows(&store, deal).await, "deal {deal}");
    }

    // The owner registers; the database holds the secret sealed, which only the desk opens.
    let (status, body) = register("1", &format!("0x{SECRET}"), Some(owner.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["deal_id"], 1);
    assert_eq!(body["owner"], format!("{:#x}", system.address(OWNER)));
    assert_eq!(
        body["repairer"],
        system.address(REPAIR_KEY).to_checksum(None)
    );
    assert!(!body.to_string().contains(SECRET));
    let row = store.repair_secret(1).await.unwrap().unwrap();
    assert_eq!(row.owner, format!("{:#x}", system.address(OWNER)));
    assert!(!row.sealed.contains(SECRET));
    let opened = desk
        .unseal(1, &row.sealed)
        .expect("the desk opens its own seal");
    let mut expected = [0u8; 32];
    hex::decode_to_slice(SECRET, &mut expected).unwrap();
    assert_eq!(
        opened,
        decloud_orchestrator::repair::RepairSecret::from_bytes(expected)
    );
    assert!(desk.unseal(2, &row.sealed).is_none());

    // A stranger cannot overwrite it; the owner can replace it.
    let (status, _) = register("1", &"11".repeat(32), Some(stranger)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        store.repair_secret(1).await.unwrap().unwrap().sealed,
        row.sealed
    );
    let (status, _) = register("1", &"11".repeat(32), Some(owner)).await;
    assert_eq!(status, StatusCode::CREATED);
    let replaced = store.repair_secret(1).await.unwrap().unwrap();
    assert_eq!(
        desk.unseal(1, &replaced.sealed).unwrap(),
        decloud_orchestrator::repair::RepairSecret::from_bytes([0x11; 32])
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_registers_a_repair_secret_and_it_is_stored_sealed() {
    let system = TestSystem::start().await.unwrap();
    open_deals(&system).await;
    let (sqlite, _dir) = support::sqlite_database();
    registration_on(&system, &sqlite).await;
    registration_on(&system, &support::postgres_database().await).await;
}
