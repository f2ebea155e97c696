//! The HTTP API through the router, without a socket: every endpoint's success and error paths.

mod support;

use alloy::primitives::B256;
use alloy::{
    primitives::Address,
    signers::{Signer, local::PrivateKeySigner},
};
use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderMap, Method, Request, StatusCode},
};
use decloud_orchestrator::{
    AppState, Config, Store, app,
    auth::Siwe,
    clock::now,
    config::SiweConfig,
    scheduler::{Prices, QualityTier},
    store::{LeaseRecord, NodeRecord, NodeStatus, VmRecord},
};
use decloud_sdk::NodeId;
use decloud_sdk::types::{LeaseStatus, VmState};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tower::ServiceExt;

const DOMAIN: &str = "app.decloud.test";
const URI: &str = "https://app.decloud.test";
const CHAIN: u64 = 31337;

fn config() -> Config {
    Config {
        siwe: SiweConfig {
            domains: vec![DOMAIN.into()],
            uris: vec![URI.into()],
            chain_ids: vec![CHAIN, 137],
            ..SiweConfig::default()
        },
        signin_burst: 1_000,
        ..Config::default()
    }
}

struct TestApp {
    router: Router,
    store: Store,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

impl TestApp {
    async fn new() -> Self {
        Self::with_config(config()).await
    }

    async fn with_config(config: Config) -> Self {
        let (url, dir) = support::sqlite_database();
        let store = Store::connect(&url).await.unwrap();
        let router = app(AppState::new(store.clone(), config).unwrap());
        Self {
            router,
            store,
            _dir: dir,
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
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
        self.send(req.unwrap()).await
    }

    async fn nonce(&self) -> String {
        let r = self
            .call(Method::POST, "/api/v1/auth/nonce", None, None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body["nonce"].as_str().unwrap().to_string()
    }

    async fn verify(&self, message: &str, signature: &str) -> Reply {
        self.call(
            Method::POST,
            "/api/v1/auth/verify",
            Some(json!({"message": message, "signature": signature})),
            None,
        )
        .await
    }

    async fn sign_in(&self, signer: &PrivateKeySigner) -> String {
        let nonce = self.nonce().await;
        let msg = Msg::new(signer.address(), &nonce).text();
        let r = self.verify(&msg, &sign(signer, &msg).await).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body["token"].as_str().unwrap().to_string()
    }
}

fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// The fields of an EIP-4361 message, rendered in its exact text form.
struct Msg {
    domain: String,
    address: Address,
    uri: String,
    chain_id: u64,
    nonce: String,
    issued_at: i64,
    expiration: Option<i64>,
    not_before: Option<i64>,
}

impl Msg {
    fn new(address: Address, nonce: &str) -> Self {
        Self {
            domain: DOMAIN.into(),
            address,
            uri: URI.into(),
            chain_id: CHAIN,
            nonce: nonce.into(),
            issued_at: now(),
            expiration: Some(now() + 3600),
            not_before: None,
        }
    }

    fn text(&self) -> String {
        let mut s = format!(
            "{} wants you to sign in with your Ethereum account:\n{}\n\nSign in to DeCloud.\n\nURI: {}\nVersion: 1\n\
             Chain ID: {}\nNonce: {}\nIssued At: {}",
            self.domain,
            self.address.to_checksum(None),
            self.uri,
            self.chain_id,
            self.nonce,
            rfc3339(self.issued_at)
        );
        if let Some(e) = self.expiration {
            s.push_str(&format!("\nExpiration Time: {}", rfc3339(e)));
        }
        if let Some(n) = self.not_before {
            s.push_str(&format!("\nNot Before: {}", rfc3339(n)));
        }
        s
    }
}

async fn sign(signer: &PrivateKeySigner, message: &str) -> String {
    let sig = signer.sign_message(message.as_bytes()).await.unwrap();
    format!("0x{}", hex::encode(sig.as_bytes()))
}

fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.body["error"]["code"], code, "{}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        r.text
    );
}

fn node(n: u8, operator: Address) -> NodeRecord {
    NodeRecord {
        node_id: B256::with_last_byte(n).into(),
        operator: format!("{operator:#x}"),
        node_key: format!("0x{:040x}", n),
        status: NodeStatus::Active,
        region: "eu-west".into(),
        endpoint: "https://node.example".into(),
        metadata_cid: "bafy".into(),
        tags: vec!["ssd".into()],
        vcpus: 8,
        memory_gib: 32,
        disk_gib: 500,
        gpus: 0,
        bandwidth_mbps: 1000,
        compute_points: 800,
        prices: Prices {
            cpu_per_hour: 10_000 + n as u64,
            memory_gib_per_hour: 2_000,
            storage_gib_per_hour: 100,
            gpu_per_hour: 0,
        },
        registered_at: 1,
        updated_at: 1,
    }
}

fn vm(id: &str, tenant: Address, node_id: NodeId) -> VmRecord {
    VmRecord {
        vm_id: id.parse().unwrap(),
        lease_id: "1".parse().unwrap(),
        tenant: format!("{tenant:#x}"),
        node_id,
        state: VmState::Running,
        tier: QualityTier::Standard,
        vcpus: 2,
        memory_gib: 4,
        disk_gib: 20,
        gpus: 0,
        created_at: 1,
        updated_at: 1,
        failure: None,
    }
}

/// Heartbeats every 15 s over the last `secs` seconds, so the node is online with full uptime.
async fn heartbeat_history(store: &Store, node_id: NodeId, secs: i64) {
    let end = now();
    let mut t = end - secs;
    while t <= end {
        store.record_heartbeat(node_id, t).await.unwrap();
        t += 15;
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn openapi_document_describes_every_endpoint() {
    let t = TestApp::new().await;
    let r = t
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = r.body["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/health", "get"),
        ("/api/v1/auth/nonce", "post"),
        ("/api/v1/auth/verify", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/auth/session", "get"),
        ("/api/v1/nodes", "get"),
        ("/api/v1/nodes/featured", "get"),
        ("/api/v1/nodes/{node_id}", "get"),
        ("/api/v1/scheduler/plan", "post"),
        ("/api/v1/leases", "get"),
        ("/api/v1/leases/{lease_id}", "get"),
        ("/api/v1/vms", "get"),
        ("/api/v1/vms/{vm_id}", "get"),
        ("/api/v1/vms/{vm_id}/console", "get"),
        ("/api/v1/vms/{vm_id}/credentials", "get"),
        ("/api/v1/vms/{vm_id}/stop", "post"),
        ("/api/v1/vms/{vm_id}/start", "post"),
        ("/api/v1/vms/{vm_id}/reboot", "post"),
        ("/api/v1/vms/{vm_id}/ingress/{port}", "put"),
        ("/api/v1/vms/{vm_id}/ingress/{port}", "delete"),
        ("/api/v1/ingress", "get"),
        ("/api/v1/ingress/names/{name}", "get"),
        ("/api/v1/leases/{lease_id}/ingress/{port}", "put"),
        ("/api/v1/profile", "get"),
        ("/api/v1/profile", "put"),
        ("/api/v1/operator/nodes", "get"),
        ("/api/v1/operator/nodes/{node_id}", "get"),
        ("/api/v1/templates", "get"),
        ("/api/v1/templates/{key}", "get"),
        ("/api/v1/templates/validate", "post"),
        ("/api/v1/templates/drafts", "get"),
        ("/api/v1/templates/drafts", "post"),
        ("/api/v1/templates/drafts/{cid}/test", "post"),
        ("/api/v1/operator/profile", "post"),
        ("/api/v1/reviews", "post"),
        ("/api/v1/reviews", "get"),
        ("/api/v1/attestations", "get"),
        ("/api/v1/attestations/signer", "get"),
        ("/api/v1/attestations/{id}", "get"),
        ("/api/v1/hosting/network/nodes", "get"),
        ("/api/v1/hosting/services/{id}/attest", "post"),
        ("/api/v1/hosting/services/{id}/distribute", "post"),
        ("/api/v1/storage/repairer", "get"),
        ("/api/v1/storage/deals/{deal_id}/repair", "post"),
        ("/api/v1/storage/deals/{deal_id}/repairs", "get"),
        ("/api/v1/storage/placement", "get"),
        ("/api/v1/storage/nodes/{node_id}", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    assert_eq!(
        paths.len(),
        43,
        "an endpoint is undocumented or unexpected: {:?}",
        paths.keys()
    );
    assert!(r.body["components"]["securitySchemes"]["session"].is_object());
    assert!(r.body["components"]["schemas"]["ErrorBody"].is_object());
    for schema in [
        "VmDetail",
        "VmAccess",
        "PortForward",
        "Profile",
        "SealedCredentials",
        "IngressUrl",
        "ExposeRequest",
        "IngressInfo",
    ] {
        assert!(
            r.body["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    assert!(paths["/api/v1/vms"]["get"]["security"].is_array());
}

#[tokio::test]
async fn health_request_ids_and_unknown_routes() {
    let t = TestApp::new().await;
    let r = t.call(Method::GET, "/api/v1/health", None, None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    assert!(r.headers.get("x-request-id").is_some_and(|v| v.len() >= 32));
    let req = Request::get("/api/v1/health")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    assert_eq!(t.send(req).await.headers["x-request-id"], "abc-123");
    assert_error(
        &t.call(Method::GET, "/api/v1/nope", None, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &t.call(Method::DELETE, "/api/v1/nodes", None, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn cors_preflight_allows_browser_dapps() {
    let t = TestApp::new().await;
    let req = Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/v1/auth/nonce")
        .header("origin", "https://dapp.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap();
    let r = t.send(req).await;
    assert!(r.status.is_success());
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert!(
        r.headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
}

#[tokio::test]
async fn sign_in_session_and_logout() {
    let t = TestApp::new().await;
    let signer = PrivateKeySigner::random();
    let nonce = t.nonce().await;
    let msg = Msg::new(signer.address(), &nonce).text();
    let r = t.verify(&msg, &sign(&signer, &msg).await).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.body["token"].as_str().unwrap().to_string();
    let address = format!("{:#x}", signer.address());
    assert_eq!(r.body["address"], address.as_str());
    assert_eq!(r.body["chain_id"], CHAIN);
    assert_eq!(r.body["contract_wallet"], false);
    // The session ends no later than the message's expiration time.
    assert!(r.body["expires_at"].as_i64().unwrap() <= now() + 3600);

    let me = t
        .call(Method::GET, "/api/v1/auth/session", None, Some(&token))
        .await;
    assert_eq!(
        (me.status, me.body["address"].as_str()),
        (StatusCode::OK, Some(address.as_str()))
    );
    let out = t
        .call(Method::POST, "/api/v1/auth/logout", None, Some(&token))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_error(
        &t.call(Method::GET, "/api/v1/auth/session", None, Some(&token))
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_session",
    );
    assert_error(
        &t.call(Method::POST, "/api/v1/auth/logout", None, Some(&token))
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_session",
    );
}

#[tokio::test]
async fn sign_in_rejections_are_clear_and_change_nothing() {
    let t = TestApp::new().await;
    let signer = PrivateKeySigner::random();
    let other = PrivateKeySigner::random();
    let nonce = t.nonce().await;
    let base = || Msg::new(signer.address(), &nonce);

    let cases: Vec<(Msg, Option<&PrivateKeySigner>, StatusCode, &str)> = vec![
        (
            Msg {
                domain: "evil.example".into(),
                ..base()
            },
            None,
            StatusCode::UNAUTHORIZED,
            "domain_not_allowed",
        ),
        (
            Msg {
                uri: "https://evil.example".into(),
                ..base()
            },
            None,
            StatusCode::UNAUTHORIZED,
            "uri_not_allowed",
        ),
        (
            Msg {
                chain_id: 1,
                ..base()
            },
            None,
            StatusCode::UNAUTHORIZED,
            "chain_not_allowed",
        ),
        (
            Msg {
                issued_at: now() - 7200,
                expiration: Some(now() - 10),
                ..base()
            },
            None,
            StatusCode::UNAUTHORIZED,
            "message_expired",
        ),
        (
            Msg {
                not_before: Some(now() + 3600),
                ..base()
            },
            None,
            StatusCode::UNAUTHORIZED,
            "message_not_yet_valid",
        ),
        (
            Msg {
                issued_at: now() + 3600,
                expiration: None,
                ..base()
            },
            None,
            StatusCode::UNAUTHORIZED,
            "issued_at_invalid",
        ),
        (
            Msg {
                issued_at: now() - 3600,
                ..base()
            },
            None,
            StatusCode::UNAUTHORIZED,
            "issued_at_invalid",
        ),
        (
            Msg {
                nonce: "neverissued12345".into(),
                ..base()
            },
            None,
            StatusCode::UNAUTHORIZED,
            "nonce_unknown",
        ),
        // Signed by another key than the address in the message.
        (
            base(),
            Some(&other),
            StatusCode::UNAUTHORIZED,
            "signature_mismatch",
        ),
    ];
    for (msg, by, status, code) in cases {
        let text = msg.text();
        let sig = sign(by.unwrap_or(&signer), &text).await;
        assert_error(&t.verify(&text, &sig).await, status, code);
    }
    let text = base().text();
    assert_error(
        &t.verify("hello", "0x00").await,
        StatusCode::BAD_REQUEST,
        "invalid_message",
    );
    assert_error(
        &t.verify(&text, "0xnothex").await,
        StatusCode::BAD_REQUEST,
        "invalid_signature",
    );
    assert_error(
        &t.verify(&text, &format!("0x{}", "11".repeat(65))).await,
        StatusCode::UNAUTHORIZED,
        "signature_mismatch",
    );
    let r = t
        .call(
            Method::POST,
            "/api/v1/auth/verify",
            Some(json!({"message": text})),
            None,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_body");
    let req = Request::post("/api/v1/auth/verify")
        .body(Body::from("{}"))
        .unwrap();
    assert_error(
        &t.send(req).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_body",
    );

    // None of the refusals used the nonce up: the proper message still signs in, once.
    let sig = sign(&signer, &text).await;
    assert_eq!(t.verify(&text, &sig).await.status, StatusCode::OK);
    assert_error(
        &t.verify(&text, &sig).await,
        StatusCode::UNAUTHORIZED,
        "nonce_used",
    );

    let metrics = t.call(Method::GET, "/metrics", None, None).await;
    assert!(
        metrics
            .text
            .contains("decloud_sign_ins_total{outcome=\"nonce_used\"} 1"),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains("decloud_sign_ins_total{outcome=\"ok\"} 1")
    );
    assert!(
        metrics
            .text
            .contains("route=\"/api/v1/auth/verify\",status=\"401\"")
    );
}

#[tokio::test]
async fn nonces_expire_after_ten_minutes() {
    let (url, _dir) = support::sqlite_database();
    let store = Store::connect(&url).await.unwrap();
    let siwe = Siwe::new(config().siwe).unwrap();
    let signer = PrivateKeySigner::random();
    let t0 = now();
    let issued = siwe.issue_nonce(&store, t0).await.unwrap();
    assert_eq!(issued.expires_at, t0 + 600);
    let msg = Msg {
        expiration: None,
        ..Msg::new(signer.address(), &issued.nonce)
    }
    .text();
    let sig = sign(&signer, &msg).await;
    let late = siwe
        .sign_in(&store, &msg, &sig, t0 + 600)
        .await
        .unwrap_err();
    assert_eq!(late.code(), "nonce_expired");
    let in_time = siwe.sign_in(&store, &msg, &sig, t0 + 599).await.unwrap();
    assert_eq!(in_time.address, format!("{:#x}", signer.address()));
}

#[tokio::test]
async fn sign_in_endpoints_are_rate_limited_per_ip() {
    let mut c = config();
    c.signin_burst = 2;
    c.signin_per_minute = 1;
    let t = TestApp::with_config(c).await;
    let from = |ip: &str| {
        let mut req = Request::post("/api/v1/auth/nonce")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(ip.parse::<SocketAddr>().unwrap()));
        req
    };
    assert_eq!(t.send(from("10.0.0.1:1000")).await.status, StatusCode::OK);
    assert_eq!(t.send(from("10.0.0.1:1001")).await.status, StatusCode::OK);
    let limited = t.send(from("10.0.0.1:1002")).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(
        limited.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(t.send(from("10.0.0.2:1000")).await.status, StatusCode::OK);
    // Other endpoints are not limited.
    assert_eq!(
        t.call(Method::GET, "/api/v1/nodes", None, None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tenant_and_operator_endpoints_need_a_session() {
    let t = TestApp::new().await;
    let node_path = format!("/api/v1/operator/nodes/0x{:064x}", 1);
    for (method, path) in [
        (Method::GET, "/api/v1/auth/session"),
        (Method::POST, "/api/v1/auth/logout"),
        (Method::GET, "/api/v1/leases"),
        (Method::GET, "/api/v1/leases/1"),
        (Method::GET, "/api/v1/vms"),
        (Method::GET, "/api/v1/vms/vm-1"),
        (Method::GET, "/api/v1/vms/vm-1/console"),
        (Method::GET, "/api/v1/operator/nodes"),
        (Method::GET, node_path.as_str()),
    ] {
        assert_error(
            &t.call(method.clone(), path, None, None).await,
            StatusCode::UNAUTHORIZED,
            "missing_session",
        );
        assert_error(
            &t.call(method, path, None, Some("forged")).await,
            StatusCode::UNAUTHORIZED,
            "invalid_session",
        );
    }
}

#[tokio::test]
async fn an_address_sees_only_its_own_leases_vms_and_nodes() {
    let t = TestApp::new().await;
    let alice = PrivateKeySigner::random();
    let bob = PrivateKeySigner::random();
    let a_token = t.sign_in(&alice).await;
    let b_token = t.sign_in(&bob).await;
    let n = node(1, alice.address());
    t.store.upsert_node(&n).await.unwrap();
    t.store
        .upsert_lease(&LeaseRecord {
            lease_id: "1".parse().unwrap(),
            tenant: format!("{:#x}", alice.address()),
            node_id: n.node_id,
            status: LeaseStatus::Active,
            tier: QualityTier::Standard,
            vcpus: 2,
            memory_gib: 4,
            storage_gib: 20,
            gpus: 0,
            rate_per_hour: 30_000,
            opened_at: 1,
        })
        .await
        .unwrap();
    t.store
        .insert_vm(&vm("vm-1", alice.address(), n.node_id))
        .await
        .unwrap();

    let get = |path: String, token: &str| {
        let token = token.to_string();
        let t = &t;
        async move { t.call(Method::GET, &path, None, Some(&token)).await }
    };
    // Alice sees hers.
    assert_eq!(
        get("/api/v1/leases".into(), &a_token)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get("/api/v1/leases/1".into(), &a_token).await.body["rate_per_hour"],
        30_000
    );
    assert_eq!(
        get("/api/v1/vms".into(), &a_token).await.body[0]["vm_id"],
        "vm-1"
    );
    assert_eq!(
        get("/api/v1/vms/vm-1".into(), &a_token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get("/api/v1/operator/nodes".into(), &a_token).await.body[0]["node_id"],
        n.node_id.to_string()
    );
    let mine = get(format!("/api/v1/operator/nodes/{}", n.node_id), &a_token).await;
    assert_eq!(mine.body["vms"][0]["vm_id"], "vm-1", "{}", mine.text);
    assert_eq!(mine.body["node"]["used"]["memory_gib"], 4);

    // Bob sees none of it and cannot read it by id.
    assert_eq!(get("/api/v1/leases".into(), &b_token).await.body, json!([]));
    assert_eq!(get("/api/v1/vms".into(), &b_token).await.body, json!([]));
    assert_eq!(
        get("/api/v1/operator/nodes".into(), &b_token).await.body,
        json!([])
    );
    assert_error(
        &get("/api/v1/leases/1".into(), &b_token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &get("/api/v1/vms/vm-1".into(), &b_token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &get(format!("/api/v1/operator/nodes/{}", n.node_id), &b_token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // Unknown ids are 404; malformed ids are 400 and name the kind of id.
    assert_error(
        &get("/api/v1/vms/vm-999".into(), &a_token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for malformed in ["nope", "vm-", "vm-x", "999"] {
        assert_error(
            &get(format!("/api/v1/vms/{malformed}"), &a_token).await,
            StatusCode::BAD_REQUEST,
            "invalid_vm_id",
        );
        assert_error(
            &get(format!("/api/v1/vms/{malformed}/credentials"), &a_token).await,
            StatusCode::BAD_REQUEST,
            "invalid_vm_id",
        );
    }
    assert_error(
        &get("/api/v1/leases/0x1".into(), &a_token).await,
        StatusCode::BAD_REQUEST,
        "invalid_lease_id",
    );
    assert_error(
        &get("/api/v1/leases/999".into(), &a_token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &get(format!("/api/v1/operator/nodes/0x{:064x}", 9), &a_token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &get("/api/v1/operator/nodes/0x12".into(), &a_token).await,
        StatusCode::BAD_REQUEST,
        "invalid_node_id",
    );
}

#[tokio::test]
async fn marketplace_search_featured_and_detail() {
    let t = TestApp::new().await;
    let op = Address::repeat_byte(0x11);
    let mut gpu = node(1, op);
    gpu.gpus = 2;
    gpu.tags.push("a100".into());
    gpu.region = "us-east".into();
    let plain = node(2, op);
    let mut paused = node(3, op);
    paused.status = NodeStatus::Paused;
    let silent = node(4, op);
    for n in [&gpu, &plain, &paused, &silent] {
        t.store.upsert_node(n).await.unwrap();
    }
    heartbeat_history(&t.store, gpu.node_id, 600).await;
    heartbeat_history(&t.store, plain.node_id, 600).await;
    heartbeat_history(&t.store, paused.node_id, 600).await;

    let search = |q: &str| {
        let path = format!("/api/v1/nodes{q}");
        let t = &t;
        async move { t.call(Method::GET, &path, None, None).await }
    };
    let ids = |r: &Reply| -> Vec<String> {
        r.body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node_id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = search("").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(
        all.body["total"], 3,
        "paused nodes are not listed: {}",
        all.text
    );
    assert_eq!(all.body["nodes"][0]["reputation"]["uptime_bps"], 10_000);
    assert_eq!(
        ids(&search("?gpu=true").await),
        vec![gpu.node_id.to_string()]
    );
    assert_eq!(
        ids(&search("?tags=a100,ssd&region=US-EAST").await),
        vec![gpu.node_id.to_string()]
    );
    assert_eq!(
        ids(&search("?online_only=true&sort=price").await),
        vec![gpu.node_id.to_string(), plain.node_id.to_string()]
    );
    assert_eq!(
        ids(&search("?sort=price&limit=1&offset=1").await),
        vec![plain.node_id.to_string()]
    );
    assert_eq!(search("?min_uptime=9000").await.body["total"], 2);
    assert_eq!(search("?max_price=10001").await.body["total"], 1);
    assert_eq!(search("?min_compute_points=9000").await.body["total"], 0);
    assert_error(
        &search("?sort=cheapest").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &search("?limit=0").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &search("?min_uptime=20000").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &search("?colour=blue").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );

    let featured = t
        .call(Method::GET, "/api/v1/nodes/featured", None, None)
        .await;
    let featured: Vec<&str> = featured
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        featured,
        vec![gpu.node_id.to_string(), plain.node_id.to_string()]
    );

    let detail = t
        .call(
            Method::GET,
            &format!("/api/v1/nodes/{}", gpu.node_id),
            None,
            None,
        )
        .await;
    assert_eq!(detail.status, StatusCode::OK);
    assert_eq!(detail.body["prices"]["cpu_per_hour"], 10_001);
    assert_eq!(detail.body["free"]["gpus"], 2);
    assert_eq!(detail.body["reputation"]["online"], true);
    assert!(
        detail.body["reputation"]["failed_by_day"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let silent_detail = t
        .call(
            Method::GET,
            &format!("/api/v1/nodes/{}", silent.node_id),
            None,
            None,
        )
        .await;
    assert_eq!(silent_detail.body["reputation"]["online"], false);
    assert_eq!(silent_detail.body["reputation"]["uptime_bps"], Value::Null);
    assert_error(
        &t.call(
            Method::GET,
            &format!("/api/v1/nodes/0x{:064x}", 77),
            None,
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/nodes/xyz", None, None).await,
        StatusCode::BAD_REQUEST,
        "invalid_node_id",
    );
}

#[tokio::test]
async fn scheduler_plans_or_explains() {
    let t = TestApp::new().await;
    let op = Address::repeat_byte(0x22);
    let a = node(1, op);
    let b = node(2, op);
    t.store.upsert_node(&a).await.unwrap();
    t.store.upsert_node(&b).await.unwrap();
    heartbeat_history(&t.store, a.node_id, 60).await;
    heartbeat_history(&t.store, b.node_id, 60).await;
    // Node a is nearly full on compute: 6 Dedicated vCPUs of 8.
    let mut big = vm("vm-2", op, a.node_id);
    big.tier = QualityTier::Dedicated;
    big.vcpus = 6;
    t.store.insert_vm(&big).await.unwrap();

    let plan = |body: Value| {
        let t = &t;
        async move {
            t.call(Method::POST, "/api/v1/scheduler/plan", Some(body), None)
                .await
        }
    };
    let r = plan(json!({"vcpus": 2, "memory_gib": 4, "disk_gib": 20, "tier": "dedicated"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["node_id"],
        a.node_id.to_string(),
        "cheaper node a still has 2 vCPUs of points"
    );
    assert_eq!(r.body["price_per_hour"], 2 * 10_001 + 4 * 2_000 + 20 * 100);
    let r = plan(json!({"vcpus": 3, "memory_gib": 4, "disk_gib": 20, "tier": "dedicated"})).await;
    assert_eq!(r.body["node_id"], b.node_id.to_string());
    let r = plan(json!({"vcpus": 3, "memory_gib": 4, "disk_gib": 20, "tier": "dedicated", "node_id": a.node_id})).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "no_fit");
    assert_eq!(
        r.body["error"]["details"]["kind"],
        "requested_node_rejected"
    );
    assert_eq!(
        r.body["error"]["details"]["rejection"]["reason"],
        "insufficient_compute"
    );
    assert_eq!(r.body["error"]["details"]["rejection"]["free"], 200 * 12);
    // Burstable packs four vCPUs into one vCPU's points.
    let r = plan(json!({"vcpus": 8, "memory_gib": 4, "disk_gib": 20, "tier": "burstable", "node_id": a.node_id})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = plan(json!({"vcpus": 2, "memory_gib": 64, "disk_gib": 20, "tier": "standard", "region": "eu-west"})).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "no_fit");
    assert_eq!(
        r.body["error"]["details"]["rejections"]["insufficient_memory"],
        2
    );
    let r = plan(json!({"vcpus": 1, "memory_gib": 1, "disk_gib": 1, "tier": "standard", "node_id": format!("0x{:064x}", 9)})).await;
    assert_eq!(r.body["error"]["details"]["kind"], "unknown_node");
    assert_error(
        &plan(json!({"vcpus": 0, "memory_gib": 1, "disk_gib": 1, "tier": "standard"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_error(
        &plan(json!({"vcpus": 1, "memory_gib": 1, "disk_gib": 1, "tier": "gold"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(&plan(json!({"vcpus": 1, "memory_gib": 1, "disk_gib": 1, "tier": "standard", "node_id": "0x1"})).await, StatusCode::BAD_REQUEST, "invalid_node_id");
}

#[tokio::test]
async fn template_catalog_search_and_detail() {
    let t = TestApp::new().await;
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/seed");
    assert_eq!(
        decloud_orchestrator::catalog::load_dir(&t.store, &seeds, now())
            .await
            .unwrap(),
        6
    );
    let get = |q: &str| {
        let path = format!("/api/v1/templates{q}");
        let t = &t;
        async move { t.call(Method::GET, &path, None, None).await }
    };
    let slugs = |r: &Reply| -> Vec<String> {
        r.body["templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["slug"].as_str().unwrap().to_string())
            .collect()
    };
    let all = get("").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(all.body["total"], 6);
    // Sorted by name: "PostgreSQL 16" before "Private Browser".
    assert_eq!(slugs(&all)[..2], ["postgresql", "private-browser"]);
    assert_eq!(slugs(&get("?category=database").await), ["postgresql"]);
    assert_eq!(slugs(&get("?gpu=true").await), ["stable-diffusion"]);
    assert_eq!(get("?gpu=false").await.body["total"], 5);
    assert_eq!(
        slugs(&get("?tags=privacy,proxy").await),
        ["shadowsocks", "web-proxy-browser"]
    );
    assert_eq!(slugs(&get("?q=VSCODE%20ide").await), ["vscode-server"]);
    assert_eq!(
        get("?category=privacy&limit=1&offset=1").await.body["templates"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_error(
        &get("?sort=popular").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &get("?limit=0").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );

    let detail = get("/postgresql").await;
    assert_eq!(detail.status, StatusCode::OK);
    assert_eq!(detail.body["min_vcpus"], 1, "{}", detail.text);
    assert!(
        detail.body["cid"].as_str().unwrap().starts_with("b"),
        "CIDv1: {}",
        detail.text
    );
    assert!(detail.body["manifest"]["ports"].is_array());
    // Once published on-chain, the same template is found by its id too.
    let mut record = t.store.template("postgresql").await.unwrap().unwrap();
    record.template_id = Some("7".parse().unwrap());
    record.price = 2_500_000;
    t.store.upsert_template(&record).await.unwrap();
    assert_eq!(get("/7").await.body["slug"], "postgresql");
    assert_eq!(
        slugs(&get("?sort=price").await).last().unwrap(),
        "postgresql"
    );
    assert_error(
        &get("/no-such-template").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn unreadable_bundles_are_reported_and_not_stored() {
    let (url, _dir) = support::sqlite_database();
    let store = Store::connect(&url).await.unwrap();
    let seeds = tempfile::tempdir().unwrap();
    let good = seeds.path().join("a-postgresql");
    std::fs::create_dir(&good).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/seed/postgresql");
    for f in ["template.toml", "user-data"] {
        std::fs::copy(src.join(f), good.join(f)).unwrap();
    }
    std::fs::create_dir(seeds.path().join("b-broken")).unwrap();
    std::fs::write(seeds.path().join("b-broken/template.toml"), "name = 1\n").unwrap();
    let err = decloud_orchestrator::catalog::load_dir(&store, seeds.path(), now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("b-broken"), "{err}");
    let stored: Vec<String> = store
        .templates()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.slug)
        .collect();
    assert_eq!(stored, ["postgresql"]);
}
