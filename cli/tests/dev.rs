//! `decloud dev` end to end: it starts anvil, deploys and funds everything, writes the record,
//! prints the summary, and on SIGINT stops anvil and exits cleanly.

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use alloy::providers::{Provider, ProviderBuilder};
use decloud_sdk::{bindings::MockUSDC, deployments::Deployment, testing::TEST_FUNDS, tx};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn dev_runs_the_local_network_until_interrupted() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_decloud"))
        .args(["dev", "--port", &port.to_string(), "--accounts", "3"])
        .arg("--deployments-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Read the summary until the last line, on a thread: reading blocks.
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("Press Ctrl-C");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let started = Instant::now();
    while !reader.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "decloud dev did not come up"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("decloud dev exited early with {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary = reader.join().unwrap().join("\n");

    let deployment = Deployment::load(dir.path(), 31337).expect("31337.json written");
    let url: url::Url = format!("http://127.0.0.1:{port}").parse().unwrap();
    assert!(summary.contains(url.as_str()), "{summary}");
    for (name, address) in [
        ("LeaseEscrow", deployment.contracts.lease_escrow.address),
        (
            "Groth16Verifier",
            deployment.contracts.groth16_verifier.address,
        ),
        ("StorageMarket", deployment.contracts.storage_market.address),
    ] {
        assert!(
            summary
                .lines()
                .any(|l| l.contains(name) && l.contains(&address.to_string())),
            "{name} {address} not in {summary}"
        );
    }
    assert!(
        summary.contains("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"),
        "{summary}"
    );

    let provider = ProviderBuilder::new().connect_http(url);
    assert_eq!(provider.get_chain_id().await.unwrap(), 31337);
    let c = &deployment.contracts;
    for contract in [
        c.node_registry,
        c.operator_staking,
        c.template_market,
        c.lease_escrow,
        c.attestation_anchor,
        c.groth16_verifier,
        c.storage_market,
    ] {
        assert!(
            !provider
                .get_code_at(contract.address)
                .await
                .unwrap()
                .is_empty()
        );
    }
    let usdc = MockUSDC::new(deployment.usdc, &provider);
    let accounts = provider.get_accounts().await.unwrap();
    assert_eq!(accounts.len(), 3);
    for account in accounts {
        assert_eq!(
            tx::read("MockUSDC", usdc.balanceOf(account))
                .await
                .unwrap()
                .to::<u64>(),
            TEST_FUNDS
        );
    }

    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "decloud dev did not stop on SIGINT"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");
    assert!(
        provider.get_block_number().await.is_err(),
        "anvil is still answering on port {port}"
    );
}
