//! The attestation and hosting endpoints through the router, without a socket: the published
//! signer, attestations by id and by subject, the network's nodes, attesting a service's state
//! and recording a distribution intent, with their auth and validation errors.

mod support;

use alloy::primitives::B256;
use alloy::{
    primitives::Address,
    signers::{Signer, local::PrivateKeySigner},
};
use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use decloud_orchestrator::{
    AppState, Config, Store, app,
    attestation::Attestor,
    clock::now,
    config::SiweConfig,
    scheduler::{Prices, QualityTier},
    store::{NodeRecord, NodeStatus, VmRecord},
};
use decloud_sdk::{
    attestation::{self, SignedAttestation},
    types::VmState,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tower::ServiceExt;

const DOMAIN: &str = "app.decloud.test";
const URI: &str = "https://app.decloud.test";

fn config() -> Config {
    Config {
        siwe: SiweConfig {
            domains: vec![DOMAIN.into()],
            uris: vec![URI.into()],
            chain_ids: vec![31337],
            ..SiweConfig::default()
        },
        signin_burst: 1_000,
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

fn node(n: u8, region: &str, status: NodeStatus) -> NodeRecord {
    NodeRecord {
        node_id: B256::with_last_byte(n).into(),
        operator: format!("0x{:040x}", 0xbeef),
        node_key: format!("0x{:040x}", 0x1000 + u32::from(n)),
        status,
        region: region.into(),
        endpoint: "https://node.example".into(),
        metadata_cid: "bafy".into(),
        tags: vec![],
        vcpus: 8,
        memory_gib: 32,
        disk_gib: 500,
        gpus: 1,
        bandwidth_mbps: 1000,
        compute_points: 8000,
        prices: Prices {
            cpu_per_hour: 10_000,
            memory_gib_per_hour: 2_000,
            storage_gib_per_hour: 100,
            gpu_per_hour: 0,
        },
        registered_at: 1,
        updated_at: 1,
    }
}

fn vm(id: &str, tenant: Address) -> VmRecord {
    VmRecord {
        vm_id: id.parse().unwrap(),
        lease_id: id.trim_start_matches("vm-").parse().unwrap(),
        tenant: format!("{tenant:#x}"),
        node_id: B256::with_last_byte(1).into(),
        state: VmState::Running,
        tier: QualityTier::Standard,
        vcpus: 2,
        memory_gib: 4,
        disk_gib: 20,
        gpus: 0,
        created_at: 10,
        updated_at: 10,
        failure: None,
    }
}

#[tokio::test]
async fn hosting_endpoints_attest_what_tenants_ask_about_their_own_services() {
    let (url, _dir) = support::sqlite_database();
    let key = PrivateKeySigner::random();
    let anchor = Address::repeat_byte(0x42);
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_attestor(Attestor::new(key.clone(), 31337, anchor));
    let router = app(AppState::new(store.clone(), config()).unwrap());
    let (alice, bob) = (PrivateKeySigner::random(), PrivateKeySigner::random());
    store
        .upsert_node(&node(1, "eu-west", NodeStatus::Active))
        .await
        .unwrap();
    store
        .upsert_node(&node(2, "us-east", NodeStatus::Paused))
        .await
        .unwrap();
    store.insert_vm(&vm("vm-1", alice.address())).await.unwrap();
    store.insert_vm(&vm("vm-2", bob.address())).await.unwrap();

    // The network's nodes: public, with region, capabilities, public key and status.
    let (status, nodes) = call(
        &router,
        Method::GET,
        "/api/v1/hosting/network/nodes",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(nodes.as_array().unwrap().len(), 2, "{nodes}");
    assert_eq!(nodes[0]["region"], "eu-west");
    assert_eq!(nodes[0]["status"], "active");
    assert_eq!(nodes[0]["public_key"], format!("0x{:040x}", 0x1001));
    assert_eq!(nodes[0]["capabilities"]["gpus"], 1);
    assert_eq!(nodes[1]["status"], "paused");

    // The published signer and domain.
    let (status, signer) = call(
        &router,
        Method::GET,
        "/api/v1/attestations/signer",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let info: attestation::SignerInfo = serde_json::from_value(signer).unwrap();
    assert_eq!(
        (info.signer, info.verifying_contract, info.chain_id),
        (key.address(), anchor, 31337)
    );

    // Attest a service's state: only its tenant may.
    let path = "/api/v1/hosting/services/vm-1/attest";
    let (status, _) = call(&router, Method::POST, path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (a, b) = (sign_in(&router, &alice).await, sign_in(&router, &bob).await);
    let (status, body) = call(&router, Method::POST, path, None, Some(&b)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::FORBIDDEN, &json!("forbidden"))
    );
    let (status, _) = call(
        &router,
        Method::POST,
        "/api/v1/hosting/services/vm-9/attest",
        None,
        Some(&a),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(
        &router,
        Method::POST,
        "/api/v1/hosting/services/service-1/attest",
        None,
        Some(&a),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_vm_id"))
    );
    assert_eq!(
        store.attestation_count().await.unwrap(),
        0,
        "refusals attest nothing"
    );
    let (status, created) = call(&router, Method::POST, path, None, Some(&a)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["attestation_id"], 0);

    // A distribution intent: validated, then attested.
    let dist = "/api/v1/hosting/services/vm-1/distribute";
    let sha = "ab".repeat(32);
    let intent = |sha: &str, regions: Value| json!({ "kind": "artifact", "artifact": "site.tar", "sha256": sha, "regions": regions });
    for (body, status, code) in [
        (
            intent("abc", json!(["eu-west"])),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            intent(&sha, json!([])),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            intent(&sha, json!(["eu-west", "eu-west"])),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        // us-east has only a paused node; mars has none.
        (
            intent(&sha, json!(["eu-west", "us-east"])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_region",
        ),
        (
            intent(&sha, json!(["mars"])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_region",
        ),
        (
            json!({ "kind": "artifact", "artifact": "x", "sha256": sha }),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ] {
        let (got, reply) = call(&router, Method::POST, dist, Some(body), Some(&a)).await;
        assert_eq!(got, status, "{reply}");
        assert_eq!(reply["error"]["code"], code, "{reply}");
    }
    let (status, _) = call(
        &router,
        Method::POST,
        "/api/v1/hosting/services/vm-2/distribute",
        Some(intent(&sha, json!(["eu-west"]))),
        Some(&a),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        store.attestation_count().await.unwrap(),
        1,
        "refusals attest nothing"
    );
    let (status, created) = call(
        &router,
        Method::POST,
        dist,
        Some(intent(&sha.to_uppercase(), json!(["eu-west"]))),
        Some(&a),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["attestation_id"], 1);

    // Both by subject, in order, signed by the published signer and chained.
    let (status, list) = call(
        &router,
        Method::GET,
        "/api/v1/attestations?subject=vm:vm-1",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let list: Vec<SignedAttestation> = serde_json::from_value(list).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0].kind.as_str(), list[1].kind.as_str()),
        ("service.state", "service.distribution")
    );
    let payload: Value = serde_json::from_str(&list[1].payload).unwrap();
    assert_eq!(payload["sha256"], sha);
    assert_eq!(payload["regions"], json!(["eu-west"]));
    for a in &list {
        attestation::check_record(a, &info.domain(), info.signer).unwrap();
    }
    attestation::check_link(&list[0], 0, None).unwrap();
    attestation::check_link(&list[1], 1, Some(&list[0])).unwrap();
    let (_, page) = call(
        &router,
        Method::GET,
        "/api/v1/attestations?subject=vm:vm-1&after=0",
        None,
        None,
    )
    .await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    let (status, _) = call(
        &router,
        Method::GET,
        "/api/v1/attestations?subject=vm:vm-1&limit=0",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // By id: not batched yet, then with its proof once sealed.
    let (status, e) = call(&router, Method::GET, "/api/v1/attestations/1", None, None).await;
    assert_eq!(
        (status, &e["inclusion"]),
        (StatusCode::OK, &Value::Null),
        "{e}"
    );
    store.seal_batch(2, 3600, 0).await.unwrap().unwrap();
    let (_, e) = call(&router, Method::GET, "/api/v1/attestations/1", None, None).await;
    let evidence: attestation::Evidence = serde_json::from_value(e).unwrap();
    attestation::check_inclusion(&evidence.attestation, evidence.inclusion.as_ref().unwrap())
        .unwrap();
    let (status, _) = call(&router, Method::GET, "/api/v1/attestations/7", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&router, Method::GET, "/api/v1/attestations/x", None, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Documented like every other endpoint.
    let (_, doc) = call(&router, Method::GET, "/api/v1/openapi.json", None, None).await;
    for p in [
        "/api/v1/attestations/signer",
        "/api/v1/attestations/{id}",
        "/api/v1/attestations",
        "/api/v1/hosting/network/nodes",
        "/api/v1/hosting/services/{id}/attest",
        "/api/v1/hosting/services/{id}/distribute",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn without_a_key_nothing_is_attested_and_the_endpoints_say_so() {
    let (url, _dir) = support::sqlite_database();
    let store = Store::connect(&url).await.unwrap();
    let router = app(AppState::new(store.clone(), config()).unwrap());
    let alice = PrivateKeySigner::random();
    store.insert_vm(&vm("vm-1", alice.address())).await.unwrap();
    assert!(
        store
            .transition_vm(
                "vm-1".parse().unwrap(),
                VmState::Running,
                VmState::Stopping,
                None,
                None,
                1
            )
            .await
            .unwrap()
    );
    assert_eq!(store.attestation_count().await.unwrap(), 0);
    let (status, body) = call(
        &router,
        Method::GET,
        "/api/v1/attestations/signer",
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("attestations_disabled"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not attest"),
        "{body}"
    );
    let a = sign_in(&router, &alice).await;
    let (status, body) = call(
        &router,
        Method::POST,
        "/api/v1/hosting/services/vm-1/attest",
        None,
        Some(&a),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("attestations_disabled"))
    );
}

#[tokio::test]
async fn a_vm_transition_and_its_attestation_commit_together() {
    let (url, _dir) = support::sqlite_database();
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_attestor(Attestor::new(
            PrivateKeySigner::random(),
            31337,
            Address::ZERO,
        ));
    store
        .insert_vm(&vm("vm-1", Address::repeat_byte(1)))
        .await
        .unwrap();
    assert!(
        store
            .transition_vm(
                "vm-1".parse().unwrap(),
                VmState::Running,
                VmState::Stopping,
                None,
                Some(("c1", "{}")),
                5
            )
            .await
            .unwrap()
    );
    // A transition that does not happen (the VM is no longer running) attests nothing.
    assert!(
        !store
            .transition_vm(
                "vm-1".parse().unwrap(),
                VmState::Running,
                VmState::Stopping,
                None,
                None,
                6
            )
            .await
            .unwrap()
    );
    let list = store.attestations_of("vm:vm-1", None, 10).await.unwrap();
    assert_eq!(list.len(), 1);
    let payload: Value = serde_json::from_str(&list[0].payload).unwrap();
    assert_eq!(
        (
            payload["from"].as_str(),
            payload["to"].as_str(),
            payload["command_id"].as_str()
        ),
        (Some("running"), Some("stopping"), Some("c1"))
    );
}

#[tokio::test]
async fn template_validation_verdicts_are_attested() {
    let (url, _dir) = support::sqlite_database();
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_attestor(Attestor::new(
            PrivateKeySigner::random(),
            31337,
            Address::ZERO,
        ));
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/seed");
    let loaded = decloud_orchestrator::catalog::load_dir(&store, &seeds, 7)
        .await
        .unwrap();
    assert!(loaded > 0);
    let verdicts = store
        .attestations_of("template:postgresql", None, 10)
        .await
        .unwrap();
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].kind, "template.validated");
    let payload: Value = serde_json::from_str(&verdicts[0].payload).unwrap();
    assert_eq!(payload["verdict"], "accepted");
    assert_eq!(store.attestation_count().await.unwrap(), loaded as u64);

    // A bundle that cannot be loaded is refused, and the refusal is attested too.
    let bad = tempfile::tempdir().unwrap();
    std::fs::create_dir(bad.path().join("broken")).unwrap();
    assert!(
        decloud_orchestrator::catalog::load_dir(&store, bad.path(), 8)
            .await
            .is_err()
    );
    let all = store.attestation_count().await.unwrap();
    let last = store.attestation(all - 1).await.unwrap().unwrap();
    let payload: Value = serde_json::from_str(&last.payload).unwrap();
    assert_eq!(
        (last.kind.as_str(), &payload["verdict"]),
        ("template.validated", &json!("rejected"))
    );
}
