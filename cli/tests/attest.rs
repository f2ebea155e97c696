//! `decloud attest verify` against a real orchestrator API over HTTP and the real
//! AttestationAnchor on anvil: untouched attestations pass; a changed byte, a reordered log, a
//! forged proof and a root that is not on-chain each fail, naming the reason.

use std::process::Command;

use alloy::{
    primitives::Address,
    providers::{Provider, ext::AnvilApi},
};
use decloud_orchestrator::{
    AppState, Config, Store,
    attestation::{Anchorer, Attestor},
    scheduler::QualityTier,
    store::VmRecord,
};
use decloud_sdk::{testing::TestSystem, types::VmState};
use serde_json::Value;
use sqlx::AnyPool;

struct Verifier {
    orchestrator: String,
    rpc: String,
}

impl Verifier {
    /// Runs `decloud attest verify <id> --json [extra…]`; returns the exit code and the verdict.
    fn verify(&self, id: u64, extra: &[&str]) -> (i32, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_decloud"))
            .args(["attest", "verify", &id.to_string(), "--json"])
            .args(["--orchestrator", &self.orchestrator, "--rpc-url", &self.rpc])
            .args(extra)
            .env_remove("DECLOUD_ORCHESTRATOR")
            .env_remove("DECLOUD_RPC_URL")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let verdict: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "verdict is JSON ({e}): {stdout} / {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap(), verdict)
    }

    fn assert_valid(&self, id: u64) {
        let (code, v) = self.verify(id, &[]);
        assert_eq!((code, &v["valid"]), (0, &Value::Bool(true)), "{v}");
    }

    /// Asserts verification fails in `check` with a reason containing `reason`.
    fn assert_fails(&self, id: u64, check: &str, reason: &str) {
        let (code, v) = self.verify(id, &[]);
        assert_eq!(code, 1, "{v}");
        assert_eq!(v["valid"], Value::Bool(false), "{v}");
        assert_eq!(v["check"], check, "{v}");
        assert!(
            v["reason"].as_str().unwrap().contains(reason),
            "reason should mention {reason:?}: {v}"
        );
    }
}

async fn exec(pool: &AnyPool, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .unwrap();
}

async fn text(pool: &AnyPool, sql: &str) -> String {
    use sqlx::Row;
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_untouched_attestations_and_names_every_tampering() {
    let system = TestSystem::start().await.unwrap();
    let anchor = system.deployment.contracts.attestation_anchor.address;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("o.db").display());
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_attestor(Attestor::new(system.signer(0), 31337, anchor));

    // Attestations through the real code paths: two VM transitions, then attested states.
    store
        .insert_vm(&VmRecord {
            vm_id: "vm-1".parse().unwrap(),
            lease_id: "1".parse().unwrap(),
            tenant: "0x00000000000000000000000000000000000000aa".into(),
            node_id: alloy::primitives::B256::with_last_byte(1).into(),
            state: VmState::Pending,
            tier: QualityTier::Standard,
            vcpus: 2,
            memory_gib: 4,
            disk_gib: 20,
            gpus: 0,
            created_at: 10,
            updated_at: 10,
            failure: None,
        })
        .await
        .unwrap();
    assert!(
        store
            .transition_vm(
                "vm-1".parse().unwrap(),
                VmState::Pending,
                VmState::Provisioning,
                None,
                Some(("c1", "{}")),
                11
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .transition_vm(
                "vm-1".parse().unwrap(),
                VmState::Provisioning,
                VmState::Running,
                None,
                None,
                12
            )
            .await
            .unwrap()
    );
    for i in 0..4 {
        store
            .attest(
                "vm:vm-1",
                "service.state",
                &serde_json::json!({ "i": i }),
                13 + i,
            )
            .await
            .unwrap();
    }
    assert_eq!(store.attestation_count().await.unwrap(), 6);
    let batch = store.seal_batch(4, 3600, 20).await.unwrap().unwrap();
    assert_eq!((batch.first_sequence, batch.count), (0, 4));
    let snapshot = system.provider(0).anvil_snapshot().await.unwrap();
    let anchorer = Anchorer {
        provider: system.provider(0),
        anchor,
        confirm_timeout: std::time::Duration::from_secs(60),
    };
    assert_eq!(anchorer.anchor_pending(&store, 21).await.unwrap(), 1);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = decloud_orchestrator::app(AppState::new(store.clone(), Config::default()).unwrap());
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });
    let v = Verifier {
        orchestrator: format!("http://{addr}"),
        rpc: system.rpc_url().to_string(),
    };
    let verify = |id: u64, extra: Vec<String>| {
        let (orchestrator, rpc) = (v.orchestrator.clone(), v.rpc.clone());
        tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            Verifier { orchestrator, rpc }.verify(id, &extra)
        })
    };
    // The CLI is a blocking child process: run it off the runtime that serves the API.
    macro_rules! blocking {
        ($e:expr) => {{
            let (orchestrator, rpc) = (v.orchestrator.clone(), v.rpc.clone());
            tokio::task::spawn_blocking(move || {
                let v = Verifier { orchestrator, rpc };
                $e(&v)
            })
            .await
            .unwrap()
        }};
    }

    // Untouched: every anchored attestation passes.
    for id in 0..4 {
        blocking!(|v: &Verifier| v.assert_valid(id));
    }
    // The human verdict: one line on stdout, exit code as with --json.
    let (orchestrator, rpc) = (v.orchestrator.clone(), v.rpc.clone());
    let human = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_decloud"))
            .args([
                "attest",
                "verify",
                "3",
                "--orchestrator",
                &orchestrator,
                "--rpc-url",
                &rpc,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("VALID: attestation 3 (service.state of vm:vm-1)")
            && stdout.contains("batch 0"),
        "{stdout}"
    );
    // Not batched yet.
    blocking!(|v: &Verifier| v.assert_fails(4, "merkle_proof", "not in a batch"));
    // A pinned signer that is not the orchestrator's.
    let (code, out) = verify(
        1,
        vec!["--signer".into(), Address::repeat_byte(1).to_string()],
    )
    .await
    .unwrap();
    assert_eq!(
        (code, &out["check"]),
        (1, &Value::from("signature")),
        "{out}"
    );

    let pool = AnyPool::connect(&url).await.unwrap();
    // Any byte changed, column by column: each is caught and the record restored after.
    for (column, check, reason) in [
        ("payload", "integrity", "payload does not match"),
        ("payload_hash", "integrity", "payload does not match"),
        ("subject", "integrity", "fields were altered"),
        ("kind", "integrity", "fields were altered"),
        ("previous", "chain_link", "chain link broken at sequence 2"),
        ("hash", "integrity", "fields were altered"),
        ("signature", "signature", ""),
    ] {
        let original = text(
            &pool,
            &format!("SELECT {column} FROM attestations WHERE sequence = 2"),
        )
        .await;
        // Flip the last character (a hex digit or a JSON/text byte) to another.
        let mut changed = original.clone();
        let last = changed.pop().unwrap();
        changed.push(if last == '1' { '2' } else { '1' });
        exec(
            &pool,
            &format!(
                "UPDATE attestations SET {column} = '{}' WHERE sequence = 2",
                changed.replace('\'', "''")
            ),
        )
        .await;
        blocking!(|v: &Verifier| v.assert_fails(2, check, reason));
        exec(
            &pool,
            &format!(
                "UPDATE attestations SET {column} = '{}' WHERE sequence = 2",
                original.replace('\'', "''")
            ),
        )
        .await;
        blocking!(|v: &Verifier| v.assert_valid(2));
    }
    exec(
        &pool,
        "UPDATE attestations SET time = time + 1 WHERE sequence = 2",
    )
    .await;
    blocking!(|v: &Verifier| v.assert_fails(2, "integrity", "fields were altered"));
    exec(
        &pool,
        "UPDATE attestations SET time = time - 1 WHERE sequence = 2",
    )
    .await;

    // Reordered: attestations 1 and 2 swap places in the log.
    exec(
        &pool,
        "UPDATE attestations SET sequence = -1 WHERE sequence = 1",
    )
    .await;
    exec(
        &pool,
        "UPDATE attestations SET sequence = 1 WHERE sequence = 2",
    )
    .await;
    exec(
        &pool,
        "UPDATE attestations SET sequence = 2 WHERE sequence = -1",
    )
    .await;
    blocking!(|v: &Verifier| v.assert_fails(2, "chain_link", "chain link broken at sequence 2"));
    blocking!(|v: &Verifier| v.assert_fails(3, "chain_link", "chain link broken at sequence 3"));
    exec(
        &pool,
        "UPDATE attestations SET sequence = -1 WHERE sequence = 1",
    )
    .await;
    exec(
        &pool,
        "UPDATE attestations SET sequence = 1 WHERE sequence = 2",
    )
    .await;
    exec(
        &pool,
        "UPDATE attestations SET sequence = 2 WHERE sequence = -1",
    )
    .await;
    blocking!(|v: &Verifier| v.assert_valid(3));

    // A forged proof: the batch is served with another root than the one anchored.
    let root = text(
        &pool,
        "SELECT root FROM attestation_batches WHERE batch_id = 0",
    )
    .await;
    let forged = format!("0x{}", "ab".repeat(32));
    exec(
        &pool,
        &format!("UPDATE attestation_batches SET root = '{forged}'"),
    )
    .await;
    blocking!(|v: &Verifier| v.assert_fails(1, "merkle_proof", "merkle proof is invalid"));
    exec(
        &pool,
        &format!("UPDATE attestation_batches SET root = '{root}'"),
    )
    .await;
    blocking!(|v: &Verifier| v.assert_valid(1));

    // The root is not on-chain: the chain is rolled back to before the anchor transaction.
    assert!(system.provider(0).anvil_revert(snapshot).await.unwrap());
    blocking!(|v: &Verifier| v.assert_fails(0, "on_chain_root", "root is not on-chain"));
    let _ = system.provider(0).get_block_number().await.unwrap();

    // Nothing reachable: exit code 2, not a verdict.
    server.abort();
    let (code, out) = verify(0, vec![]).await.unwrap();
    assert_eq!((code, &out["valid"]), (2, &Value::Null), "{out}");
    pool.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_rebuilt_from_an_empty_database_verifies_from_its_resumption_on() {
    let system = TestSystem::start().await.unwrap();
    let anchor = system.deployment.contracts.attestation_anchor.address;
    let attestor = || Attestor::new(system.signer(0), 31337, anchor);
    let anchorer = Anchorer {
        provider: system.provider(0),
        anchor,
        confirm_timeout: std::time::Duration::from_secs(60),
    };
    let dir = tempfile::tempdir().unwrap();
    let first_url = format!("sqlite:{}", dir.path().join("first.db").display());
    let first = Store::connect(&first_url)
        .await
        .unwrap()
        .with_attestor(attestor());
    for i in 0..4 {
        first
            .attest(
                "vm:vm-1",
                "service.state",
                &serde_json::json!({ "i": i }),
                10 + i,
            )
            .await
            .unwrap();
    }
    first.seal_batch(4, 3600, 20).await.unwrap().unwrap();
    assert_eq!(anchorer.anchor_pending(&first, 21).await.unwrap(), 1);
    first.close().await;

    // The database is lost; a new one continues after the chain's last batch.
    let url = format!("sqlite:{}", dir.path().join("rebuilt.db").display());
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_attestor(attestor());
    assert_eq!(
        anchorer.resume_from_chain(&store, 30).await.unwrap(),
        Some(4)
    );
    assert_eq!(anchorer.resume_from_chain(&store, 31).await.unwrap(), None);
    for i in 0..2 {
        store
            .attest(
                "vm:vm-1",
                "service.state",
                &serde_json::json!({ "after": i }),
                32 + i,
            )
            .await
            .unwrap();
    }
    let batch = store.seal_batch(3, 3600, 40).await.unwrap().unwrap();
    assert_eq!(
        (batch.batch_id, batch.first_sequence, batch.count),
        (1, 4, 3)
    );
    assert_eq!(anchorer.anchor_pending(&store, 41).await.unwrap(), 1);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = decloud_orchestrator::app(AppState::new(store.clone(), Config::default()).unwrap());
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });
    let (orchestrator, rpc) = (format!("http://{addr}"), system.rpc_url().to_string());
    let pool = AnyPool::connect(&url).await.unwrap();
    let outcome = tokio::task::spawn_blocking(move || {
        let v = Verifier { orchestrator, rpc };
        // The resumption links to batch 0's root on-chain; what follows links to it.
        for id in 4..7 {
            v.assert_valid(id);
        }
        // What the lost database held cannot be served any more: not checkable (exit 2).
        let (code, verdict) = v.verify(3, &[]);
        assert_eq!(code, 2, "{verdict}");
        v
    })
    .await
    .unwrap();
    // A resumption whose payload was changed no longer verifies.
    let original = text(&pool, "SELECT payload FROM attestations WHERE sequence = 4").await;
    exec(
        &pool,
        &format!(
            "UPDATE attestations SET payload = '{}' WHERE sequence = 4",
            original.replace("\"batch\":0", "\"batch\":1")
        ),
    )
    .await;
    let (code, verdict) = tokio::task::spawn_blocking(move || outcome.verify(4, &[]))
        .await
        .unwrap();
    assert_eq!(code, 1, "{verdict}");
    assert_eq!(verdict["check"], "integrity", "{verdict}");
    server.abort();
    store.close().await;
}
