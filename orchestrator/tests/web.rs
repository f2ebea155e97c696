//! The web app served beside the API: its files, its client-side routes, `/config.json` written
//! from the configuration and the deployment record, and the API's namespace kept apart.

mod support;

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use decloud_orchestrator::{AppState, Config, Store, app, config::WebConfig};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn get(router: &Router, method: Method, path: &str) -> (StatusCode, String, String, String) {
    let response = router
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let header_of = |name| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (content_type, cache) = (
        header_of(header::CONTENT_TYPE),
        header_of(header::CACHE_CONTROL),
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        cache,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn router(web: Option<WebConfig>) -> (Router, tempfile::TempDir) {
    let (url, dir) = support::sqlite_database();
    let store = Store::connect(&url).await.unwrap();
    let config = Config {
        web,
        ..Config::default()
    };
    (app(AppState::new(store, config).unwrap()), dir)
}

#[tokio::test]
async fn serves_the_app_its_routes_and_its_config() {
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir(site.path().join("assets")).unwrap();
    std::fs::write(site.path().join("index.html"), "<!doctype html>app").unwrap();
    std::fs::write(site.path().join("assets/index-abc123.js"), "console.log(1)").unwrap();
    let deployment = site.path().join("31337.json");
    std::fs::write(
        &deployment,
        r#"{"chainId":31337,"contracts":{"leaseEscrow":{"address":"0x00000000000000000000000000000000000000aa"}}}"#,
    )
    .unwrap();
    let (router, _db) = router(Some(WebConfig {
        dir: site.path().to_path_buf(),
        chain_id: 31337,
        rpc_url: "http://127.0.0.1:8545".into(),
        indexer_url: Some("http://127.0.0.1:8000/graphql".into()),
        walletconnect_project_id: None,
        deployment: deployment.clone(),
    }))
    .await;

    let (status, content_type, cache, body) = get(&router, Method::GET, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert_eq!(
        cache, "no-cache",
        "the page is fetched again after a deploy"
    );
    assert_eq!(body, "<!doctype html>app");

    // A route of the app itself loads the page, which routes in the browser.
    let (status, _, _, body) = get(&router, Method::GET, "/leases/3").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "<!doctype html>app")
    );

    let (status, content_type, cache, body) =
        get(&router, Method::GET, "/assets/index-abc123.js").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/javascript; charset=utf-8");
    assert_eq!(cache, "public, max-age=31536000, immutable");
    assert_eq!(body, "console.log(1)");

    // A missing file is a 404, not the page: a stale asset name must not parse HTML as script.
    let (status, _, _, _) = get(&router, Method::GET, "/assets/index-gone.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, content_type, _, body) = get(&router, Method::GET, "/config.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["chainId"], 31337);
    assert_eq!(config["rpcUrl"], "http://127.0.0.1:8545");
    assert_eq!(config["indexerUrl"], "http://127.0.0.1:8000/graphql");
    assert_eq!(config["walletConnectProjectId"], serde_json::Value::Null);
    assert_eq!(
        config["deployment"]["contracts"]["leaseEscrow"]["address"],
        "0x00000000000000000000000000000000000000aa"
    );

    // The API's namespace never falls through to the app, and the app is read-only.
    let (status, content_type, _, body) = get(&router, Method::GET, "/api/v1/no-such-thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type, "application/json");
    assert!(body.contains("not_found"), "{body}");
    let (status, _, _, _) = get(&router, Method::POST, "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nothing outside the app's directory is served.
    let (status, _, _, _) = get(&router, Method::GET, "/../31337.json").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A deployment record that cannot be read is a server error, with no detail leaked.
    std::fs::remove_file(&deployment).unwrap();
    let (status, _, _, body) = get(&router, Method::GET, "/config.json").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!body.contains("31337.json"), "{body}");
}

#[tokio::test]
async fn without_a_web_app_only_the_api_is_served() {
    let (router, _db) = router(None).await;
    for path in ["/", "/config.json", "/index.html"] {
        let (status, _, _, _) = get(&router, Method::GET, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}
