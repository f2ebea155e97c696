//! `/health` says `degraded`, naming anchoring, while anchoring passes fail, and `ok` again
//! once one succeeds. On anvil with the real AttestationAnchor: the orchestrator's key loses
//! ANCHOR_ROLE (its anchor transactions revert), then gets it back.

use decloud_orchestrator::{
    Config, Store, attestation::Attestor, config::AttestationConfig, start_with_attestation_key,
};
use decloud_sdk::{bindings::AttestationAnchor, testing::TestSystem, tx};
use serde_json::Value;
use std::time::{Duration, Instant};

async fn health(base: &str) -> Value {
    reqwest_get(&format!("{base}/health")).await
}

async fn reqwest_get(url: &str) -> Value {
    alloy::transports::http::reqwest::get(url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_for_health(base: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = health(base).await;
        if h["status"] == status {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "health never became {status}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_anchoring_fails() {
    let system = TestSystem::start()
        .await
        .expect("anvil with the system deployed (run scripts/setup)");
    let anchor = system.deployment.contracts.attestation_anchor.address;
    let key = system.signer(0);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("o.db").display());
    let config = Config {
        database_url: url.clone(),
        attestation: Some(AttestationConfig {
            rpc_url: system.rpc_url().to_string(),
            anchor: anchor.to_string(),
            keystore: None,
            batch_size: 1,
            batch_interval_secs: 1,
            confirm_timeout_secs: 10,
        }),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = start_with_attestation_key(config, listener, Some(key.clone()))
        .await
        .unwrap();
    let base = running.api_url();
    assert_eq!(health(&base).await["status"], "ok");

    // Something to anchor, appended beside the server as any attested change is.
    let attest = async |n: u64| {
        let store = Store::connect(&url)
            .await
            .unwrap()
            .with_attestor(Attestor::new(key.clone(), system.anvil.chain_id(), anchor));
        store
            .attest(
                "test:health",
                "test.event",
                &serde_json::json!({ "n": n }),
                1,
            )
            .await
            .unwrap();
        store.close().await;
    };

    // The key loses ANCHOR_ROLE: the anchor transaction reverts, pass after pass.
    let contract = AttestationAnchor::new(anchor, system.provider(0));
    let role = tx::read("AttestationAnchor", contract.ANCHOR_ROLE())
        .await
        .unwrap();
    tx::send(
        "AttestationAnchor",
        contract.revokeRole(role, key.address()),
    )
    .await
    .unwrap();
    attest(1).await;
    let degraded = wait_for_health(&base, "degraded").await;
    let problems = degraded["problems"].to_string();
    assert!(problems.contains("anchoring"), "{degraded}");

    // The role is back: the batch is anchored and health recovers.
    tx::send("AttestationAnchor", contract.grantRole(role, key.address()))
        .await
        .unwrap();
    let ok = wait_for_health(&base, "ok").await;
    assert!(ok.get("problems").is_none(), "{ok}");
    running.stop().await.unwrap();
}
