//! Attestations signed and logged per second, through the store's real append path.
//!
//! ```text
//! cargo run --release -p decloud-orchestrator --example attest_bench -- --count 5000 --writers 4
//! cargo run --release -p decloud-orchestrator --example attest_bench -- --count 5000 --writers 4 \
//!     --database-url postgres://127.0.0.1:5432/bench
//! ```
//!
//! Appends `--count` attestations (each in its own transaction: sign, chain to the previous one,
//! insert, move the head) from `--writers` concurrent tasks into a fresh SQLite database (or the
//! given PostgreSQL database, which must be empty), then seals them into batches of
//! `--batch-size` and reports appends per second, pure signing per second and sealing time.
//! With `--anchor`, the batches are then anchored on a fresh anvil with the real
//! AttestationAnchor and the gas of each anchor transaction is reported.

use clap::Parser;
use decloud_orchestrator::{Store, attestation::Attestor};
use std::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    /// Attestations to append.
    #[arg(long, default_value_t = 5_000)]
    count: u64,
    /// Concurrent appenders.
    #[arg(long, default_value_t = 4)]
    writers: u64,
    /// Attestations per sealed batch.
    #[arg(long, default_value_t = 256)]
    batch_size: u64,
    /// Database (default: a fresh SQLite file in a temporary directory).
    #[arg(long)]
    database_url: Option<String>,
    /// Also anchor the batches on anvil and report gas per anchored batch.
    #[arg(long)]
    anchor: bool,
}

#[tokio::main]
async fn main() -> eyre::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("bench.db").display()));
    let system = if args.anchor {
        Some(decloud_sdk::testing::TestSystem::start().await?)
    } else {
        None
    };
    let (key, anchor) = match &system {
        Some(s) => (
            s.signer(0),
            s.deployment.contracts.attestation_anchor.address,
        ),
        None => (
            alloy::signers::local::PrivateKeySigner::random(),
            alloy::primitives::Address::repeat_byte(7),
        ),
    };
    let attestor = Attestor::new(key.clone(), 31337, anchor);

    // Signing alone: the EIP-712 hash and one secp256k1 signature.
    let domain = attestor.domain().clone();
    let started = Instant::now();
    let n_sign = 2_000u64;
    for i in 0..n_sign {
        let payload = format!("{{\"i\":{i}}}");
        let body = decloud_sdk::attestation::Attestation::new(
            "vm:vm-1",
            "vm.transition",
            &payload,
            i,
            Default::default(),
            i,
        );
        decloud_sdk::attestation::sign(&key, &domain, body, &payload)?;
    }
    let sign_rate = n_sign as f64 / started.elapsed().as_secs_f64();

    let store = Store::connect(&url).await?.with_attestor(attestor);
    let per_writer = args.count / args.writers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let payload = serde_json::json!({ "vm_id": format!("vm-{w}"), "from": "running", "to": "stopping", "i": i });
                store
                    .attest(&format!("vm:vm-{w}"), "vm.transition", &payload, 1_700_000_000)
                    .await?;
            }
            Ok::<_, decloud_orchestrator::attestation::AttestError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    let appended = per_writer * args.writers;
    let started = Instant::now();
    let mut batches = 0;
    while store
        .seal_batch(args.batch_size, 1, 1_800_000_000)
        .await?
        .is_some()
    {
        batches += 1;
    }
    let seal = started.elapsed();
    let backend = if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    println!(
        "backend={backend} writers={} appended={appended} seconds={:.2} appends_per_sec={:.0} \
         signs_per_sec={sign_rate:.0} batches={batches} batch_size={} seal_ms_per_batch={:.1}",
        args.writers,
        elapsed.as_secs_f64(),
        appended as f64 / elapsed.as_secs_f64(),
        args.batch_size,
        seal.as_secs_f64() * 1000.0 / batches.max(1) as f64,
    );
    if let Some(system) = &system {
        use alloy::providers::Provider;
        let anchorer = decloud_orchestrator::attestation::Anchorer {
            provider: system.provider(0),
            anchor,
            confirm_timeout: std::time::Duration::from_secs(60),
        };
        let anchored = anchorer.anchor_pending(&store, 1_800_000_000).await?;
        let mut gas = Vec::new();
        for b in store.batches().await? {
            let tx: alloy::primitives::B256 = b.tx_hash.expect("anchored").parse()?;
            let receipt = system
                .provider(0)
                .get_transaction_receipt(tx)
                .await?
                .expect("receipt");
            gas.push(receipt.gas_used);
        }
        println!(
            "anchored_batches={anchored} gas_per_batch_min={} gas_per_batch_max={} (first batch pays the cold storage slots)",
            gas.iter().min().unwrap_or(&0),
            gas.iter().max().unwrap_or(&0)
        );
    }
    store.close().await;
    Ok(())
}
