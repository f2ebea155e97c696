//! SIGKILL the `decloud-orchestrator` binary between sealing an attestation batch and recording
//! its anchor, then start it again: the batch ends up anchored exactly once. On anvil with the
//! real AttestationAnchor, against SQLite and PostgreSQL.
//!
//! Anvil's automine is switched off so the anchor transaction the binary sends stays pending
//! while the binary is killed. Then either the transaction is mined after the kill (the chain
//! has the batch, the database does not know it) or it is dropped (the batch never reached the
//! chain). Both must end with one on-chain batch, recorded with its transaction.

mod support;

use alloy::{
    primitives::{B256, U256},
    providers::{Provider, ext::AnvilApi},
    rpc::types::Filter,
    sol_types::SolEvent,
};
use decloud_orchestrator::{Store, attestation::Attestor};
use decloud_sdk::{bindings::AttestationAnchor, testing::TestSystem};
use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The binary, killed with SIGKILL when dropped (a test failing midway leaves no process).
struct Orchestrator(Child);

impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &std::path::Path, key: &str) -> Orchestrator {
    Orchestrator(
        Command::new(env!("CARGO_BIN_EXE_decloud-orchestrator"))
            .args(["--config", config.to_str().unwrap()])
            .env("DECLOUD_PRIVATE_KEY", key)
            .env("DECLOUD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("orchestrator binary starts"),
    )
}

async fn wait_for<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn anchored_logs(system: &TestSystem) -> Vec<(u64, B256)> {
    let anchor = system.deployment.contracts.attestation_anchor.address;
    let logs = system
        .provider(0)
        .get_logs(
            &Filter::new()
                .address(anchor)
                .event_signature(AttestationAnchor::BatchAnchored::SIGNATURE_HASH)
                .from_block(0),
        )
        .await
        .unwrap();
    logs.iter()
        .map(|l| {
            (
                U256::from_be_bytes(l.topics()[1].0).to::<u64>(),
                l.transaction_hash.unwrap(),
            )
        })
        .collect()
}

async fn crash_between_sealing_and_anchoring(url: String) {
    let system = TestSystem::start().await.unwrap();
    let provider = system.provider(0);
    let anchor_address = system.deployment.contracts.attestation_anchor.address;
    let anchor = AttestationAnchor::new(anchor_address, &provider);
    let key = system.signer(0);
    let key_hex = format!("0x{}", hex::encode(key.to_bytes()));
    let attestor = Attestor::new(key, 31337, anchor_address);
    let store = Store::connect(&url).await.unwrap().with_attestor(attestor);
    for i in 0..10 {
        store
            .attest(
                &format!("vm:vm-{i}"),
                "service.state",
                &serde_json::json!({ "i": i }),
                1_000,
            )
            .await
            .unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orchestrator.toml");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{url}\"\n\
             [attestation]\nrpc_url = \"{}\"\nanchor = \"{anchor_address}\"\nbatch_size = 5\n\
             batch_interval_secs = 86400\nconfirm_timeout_secs = 600\n",
            system.rpc_url()
        ),
    )
    .unwrap();
    let deployer = system.address(0);
    let nonce = |tag: &'static str| {
        let provider = provider.clone();
        async move {
            let call = provider.get_transaction_count(deployer);
            match tag {
                "pending" => call.pending().await.unwrap(),
                _ => call.latest().await.unwrap(),
            }
        }
    };

    // Round 1: the anchor transaction is sent, the binary dies, the transaction is mined after.
    provider.anvil_set_auto_mine(false).await.unwrap();
    let mined_nonce = nonce("latest").await;
    let orchestrator = start(&config, &key_hex);
    wait_for(
        "both batches sealed and an anchor transaction pending",
        || async {
            store.batches().await.unwrap().len() == 2 && nonce("pending").await > mined_nonce
        },
    )
    .await;
    drop(orchestrator); // SIGKILL
    assert!(
        store
            .batches()
            .await
            .unwrap()
            .iter()
            .all(|b| b.tx_hash.is_none()),
        "nothing was recorded as anchored before the kill"
    );
    provider.evm_mine(None).await.unwrap();
    provider.anvil_set_auto_mine(true).await.unwrap();
    let held = anchored_logs(&system).await;
    assert_eq!(held.len(), 1, "the pending anchor was mined after the kill");
    let (first_batch, first_tx) = held[0];
    assert_eq!(first_batch, 0);

    // Round 2: the second batch's transaction is dropped before it reaches a block.
    provider.anvil_set_auto_mine(false).await.unwrap();
    let before = nonce("latest").await;
    let orchestrator = start(&config, &key_hex);
    wait_for("batch 0 recorded from the chain", || async {
        store.batches().await.unwrap()[0].tx_hash.is_some()
    })
    .await;
    wait_for("batch 1's anchor transaction pending", || async {
        nonce("pending").await > before
    })
    .await;
    drop(orchestrator); // SIGKILL
    provider.anvil_drop_all_transactions().await.unwrap();
    provider.anvil_set_auto_mine(true).await.unwrap();
    assert_eq!(
        nonce("latest").await,
        before,
        "round 2 sent nothing that was mined"
    );

    // Restart: batch 1 is anchored now, once; batch 0 is not sent again.
    let orchestrator = start(&config, &key_hex);
    wait_for("batch 1 anchored and recorded", || async {
        store.batches().await.unwrap()[1].tx_hash.is_some()
    })
    .await;
    // A few more passes must change nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(orchestrator);

    let held = anchored_logs(&system).await;
    assert_eq!(held.len(), 2, "each batch anchored exactly once: {held:?}");
    assert_eq!(
        U256::from(2),
        decloud_sdk::tx::read("AttestationAnchor", anchor.batchCount())
            .await
            .unwrap()
    );
    assert_eq!(
        nonce("latest").await,
        before + 1,
        "one transaction after the drop: no second anchor, no reverted retry"
    );
    let batches = store.batches().await.unwrap();
    assert_eq!(
        batches[0].tx_hash.as_deref(),
        Some(first_tx.to_string().as_str())
    );
    assert_eq!(
        batches[1].tx_hash.as_deref(),
        Some(held[1].1.to_string().as_str())
    );
    for (b, local) in batches.iter().enumerate() {
        let onchain = decloud_sdk::tx::read("AttestationAnchor", anchor.getBatch(U256::from(b)))
            .await
            .unwrap();
        assert_eq!(onchain.root.to_string(), local.root);
        assert_eq!(
            (onchain.firstSequence, onchain.count),
            (local.first_sequence, 5)
        );
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_batch_is_anchored_exactly_once_across_kills() {
    let (url, _dir) = support::sqlite_database();
    crash_between_sealing_and_anchoring(url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_batch_is_anchored_exactly_once_across_kills() {
    crash_between_sealing_and_anchoring(support::postgres_database().await).await;
}
