//! `decloud-dev` (what `decloud dev` runs) end to end: it starts anvil, deploys and funds
//! everything, writes the record, runs the indexer, the orchestrator and one node agent whose node
//! it registers on-chain, prints the summary, and on SIGINT or SIGTERM stops everything and exits
//! cleanly.

use std::{
    future::Future,
    io::{BufRead as _, BufReader},
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use alloy::signers::local::PrivateKeySigner;
use alloy::{
    primitives::{B256, U256},
    providers::{Provider, ProviderBuilder},
    transports::http::reqwest,
};
use decloud_sdk::{
    agent_protocol,
    bindings::{LeaseEscrow, MockUSDC, StorageMarket, lease_escrow::ILeaseEscrow},
    deployments::{Deployment, Networks},
    storage::{NodeSource, Progress, PutOptions, StorageClient, StorageCoordinator},
    testing::TEST_FUNDS,
    tx,
    types::{BandwidthTier, QualityTier},
};
use serde_json::{Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 200 ms until it gives a value; fails after 60 s.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ports `decloud dev` listens on in one test.
struct Ports {
    chain: u16,
    indexer: u16,
    orchestrator: u16,
}

/// `decloud dev` as a child process. A test that ends without stopping it (a failed assertion)
/// stops it on drop, so that no local network outlives its test.
struct Dev(Option<Child>);

impl Drop for Dev {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        // SIGTERM lets it stop anvil, Caddy and the agent's VMs; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Starts `decloud dev` on free ports, with `extra` flags, and returns it with its summary once
/// it runs.
async fn start_dev(dir: &std::path::Path, extra: &[&str]) -> (Dev, Ports, String) {
    let ports = Ports {
        chain: free_port(),
        indexer: free_port(),
        orchestrator: free_port(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_decloud-dev"))
        .args(["--accounts", "3"])
        .args(["--port", &ports.chain.to_string()])
        .args(["--indexer-port", &ports.indexer.to_string()])
        .args(["--orchestrator-port", &ports.orchestrator.to_string()])
        .arg("--deployments-dir")
        .arg(dir)
        .args(extra)
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
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("decloud dev did not come up");
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("decloud dev exited early with {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary = reader.join().unwrap().join("\n");
    (Dev(Some(child)), ports, summary)
}

/// Sends `signal` and checks that `decloud dev` exits with 0 and frees every port it held.
async fn stop_dev(mut dev: Dev, signal: &str, ports: &Ports) {
    let mut child = dev.0.take().expect("running");
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "decloud dev did not stop on {signal}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{signal}: {status}");
    for (name, port) in [
        ("anvil", ports.chain),
        ("indexer", ports.indexer),
        ("orchestrator", ports.orchestrator),
    ] {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "{name}'s port {port} is still taken after {signal}"
        );
    }
}

/// The node ids printed in the summary, in order.
fn summary_node_ids(summary: &str) -> Vec<B256> {
    summary
        .lines()
        .filter_map(|l| l.trim().strip_prefix("node id"))
        .map(|id| id.trim().parse().unwrap())
        .collect()
}

/// The (first) node id printed in the summary.
fn summary_node_id(summary: &str) -> B256 {
    summary_node_ids(summary)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no node id in {summary}"))
}

/// Signs in to the orchestrator at `api` with SIWE as `key`; returns the session token.
async fn sign_in(http: &reqwest::Client, api: &str, port: u16, key: &PrivateKeySigner) -> String {
    use alloy::signers::Signer as _;
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};
    let nonce: Value = http
        .post(format!("{api}/auth/nonce"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let message = format!(
        "127.0.0.1:{port} wants you to sign in with your Ethereum account:\n{}\n\n\
         Sign in to DeCloud.\n\nURI: http://127.0.0.1:{port}\nVersion: 1\nChain ID: 31337\n\
         Nonce: {}\nIssued At: {}\nExpiration Time: {}",
        key.address().to_checksum(None),
        nonce["nonce"].as_str().unwrap(),
        now.format(&Rfc3339).unwrap(),
        (now + time::Duration::hours(1)).format(&Rfc3339).unwrap(),
    );
    let signature = key.sign_message(message.as_bytes()).await.unwrap();
    let session: Value = http
        .post(format!("{api}/auth/verify"))
        .json(&json!({
            "message": message,
            "signature": alloy::hex::encode_prefixed(signature.as_bytes()),
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    session["token"]
        .as_str()
        .unwrap_or_else(|| panic!("sign-in: {session}"))
        .to_string()
}

async fn graphql(http: &reqwest::Client, url: &str, query: &str) -> Value {
    http.post(url)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn dev_runs_the_local_network_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let (child, ports, summary) = start_dev(dir.path(), &[]).await;
    let port = ports.chain;

    let deployment = Deployment::load(dir.path(), 31337).expect("31337.json written");
    let url: url::Url = format!("http://127.0.0.1:{port}").parse().unwrap();
    assert!(summary.contains(url.as_str()), "{summary}");
    // The directory is one the CLI can be pointed at: it names the network and where it runs,
    // as the CLI resolves `--deployments-dir DIR --network anvil`.
    let networks =
        Networks::load(&dir.path().join("networks.toml")).expect("networks.toml written");
    let anvil = networks.get("anvil").expect("the anvil network");
    assert_eq!(anvil.chain_id, deployment.chain_id);
    assert_eq!(anvil.rpc_url("anvil").unwrap(), url);
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
    for &account in &accounts {
        assert_eq!(
            tx::read("MockUSDC", usdc.balanceOf(account))
                .await
                .unwrap()
                .to::<u64>(),
            TEST_FUNDS
        );
    }

    // The node: operated by account 1, its id derived from the agent's machine id.
    let node_id = summary_node_id(&summary);
    let operator = accounts[1];
    assert_eq!(
        node_id,
        agent_protocol::node_id(agent_protocol::machine_id("decloud-dev-node"), operator)
    );
    assert!(
        summary
            .lines()
            .any(|l| l.contains("operator") && l.contains(&operator.to_string())),
        "{summary}"
    );
    assert!(summary.contains("TEST DRIVER"), "{summary}");

    // The indexer reaches the chain head and lists the registered node.
    let http = reqwest::Client::new();
    let graphql_url = format!("http://127.0.0.1:{}/graphql", ports.indexer);
    assert!(summary.contains(&graphql_url), "{summary}");
    let head = provider.get_block_number().await.unwrap();
    let nodes = wait_for("the indexer to reach the chain head", || async {
        let body = graphql(
            &http,
            &graphql_url,
            "{ _meta { block { number } } nodes { id operator } }",
        )
        .await;
        let number: u64 = body["data"]["_meta"]["block"]["number"]
            .as_str()?
            .parse()
            .ok()?;
        (number >= head).then(|| body["data"]["nodes"].clone())
    })
    .await;
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(nodes[0]["id"], json!(node_id.to_string()), "{nodes}");
    assert_eq!(
        nodes[0]["operator"],
        json!(operator.to_string().to_lowercase()),
        "{nodes}"
    );

    // The orchestrator follows the chain and sees the node's agent online.
    let api = format!("http://127.0.0.1:{}/api/v1", ports.orchestrator);
    assert!(summary.contains(&api), "{summary}");
    assert!(
        summary.contains(&format!("{api}/openapi.json")),
        "{summary}"
    );
    let node = wait_for("the orchestrator to see the agent online", || async {
        let response = http
            .get(format!("{api}/nodes/{node_id}"))
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        (body["reputation"]["online"] == json!(true)).then_some(body)
    })
    .await;
    assert_eq!(node["status"], json!("active"), "{node}");

    // The six seed templates are published on TemplateMarket, so a newcomer can deploy any of
    // them at once: each is listed with its on-chain id, the summary names the ids, and the
    // chain holds each seed's content id.
    let templates = wait_for("the orchestrator to list the seeds on-chain", || async {
        let body: Value = http
            .get(format!("{api}/templates?limit=100"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let list = body["templates"].as_array()?.clone();
        (list.len() == 6 && list.iter().all(|t| t["template_id"].is_string())).then_some(list)
    })
    .await;
    let market = decloud_sdk::bindings::TemplateMarket::new(c.template_market.address, &provider);
    for t in &templates {
        let id: u64 = t["template_id"].as_str().unwrap().parse().unwrap();
        assert!(
            summary.lines().any(|l| l
                .contains(&format!("template {}", t["slug"].as_str().unwrap()))
                && l.contains(&format!("template id {id}"))),
            "{summary}"
        );
        let on_chain = tx::read("TemplateMarket", market.getTemplate(U256::from(id)))
            .await
            .unwrap();
        assert_eq!(json!(on_chain.cid), t["cid"], "template {id}");
        assert_eq!(on_chain.price, U256::ZERO, "the seeds are free");
    }

    // A newcomer deploys one at once: account 2 opens a lease on the node with the shadowsocks
    // seed, and its VM runs the seed.
    let shadowsocks = templates
        .iter()
        .find(|t| t["slug"] == "shadowsocks")
        .expect("the shadowsocks seed");
    let template_id: U256 = shadowsocks["template_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let tenant_key: PrivateKeySigner =
        "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
            .parse()
            .unwrap();
    assert_eq!(tenant_key.address(), accounts[2]);
    let tenant = ProviderBuilder::new()
        .wallet(alloy::network::EthereumWallet::from(tenant_key.clone()))
        .connect_http(format!("http://127.0.0.1:{port}").parse().unwrap());
    let escrow_address = c.lease_escrow.address;
    tx::send(
        "MockUSDC",
        MockUSDC::new(deployment.usdc, &tenant).approve(escrow_address, U256::from(10_000_000u64)),
    )
    .await
    .unwrap();
    let escrow = LeaseEscrow::new(escrow_address, &tenant);
    tx::send("LeaseEscrow", escrow.deposit(U256::from(10_000_000u64)))
        .await
        .unwrap();
    tx::send(
        "LeaseEscrow",
        escrow.openLease(
            node_id,
            ILeaseEscrow::Resources {
                vcpus: 1,
                memoryGiB: 1,
                storageGiB: 5,
                gpus: 0,
            },
            QualityTier::Standard.into(),
            BandwidthTier::Basic.into(),
            template_id,
            U256::ZERO,
            u64::MAX,
            U256::from(5_000_000u64),
        ),
    )
    .await
    .expect("the newcomer opens a lease on a seed template");
    let token = sign_in(&http, &api, ports.orchestrator, &tenant_key).await;
    let vm = wait_for("the seed's VM to run", || async {
        let body: Value = http
            .get(format!("{api}/vms/vm-1"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        assert_ne!(body["state"], "failed", "{body}");
        (body["state"] == "running").then_some(body)
    })
    .await;
    assert_eq!(vm["node_id"], json!(node_id.to_string()), "{vm}");
    let openapi = http
        .get(format!("{api}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert!(openapi.status().is_success());

    stop_dev(child, "-INT", &ports).await;
    assert!(
        provider.get_block_number().await.is_err(),
        "anvil is still answering on port {port}"
    );
}

#[tokio::test]
async fn dev_stops_everything_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (child, ports, summary) = start_dev(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let node_id = summary_node_id(&summary);
    let api = format!("http://127.0.0.1:{}/api/v1", ports.orchestrator);
    wait_for("the orchestrator to see the agent online", || async {
        let body: Value = http
            .get(format!("{api}/nodes/{node_id}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["reputation"]["online"] == json!(true)).then_some(())
    })
    .await;
    stop_dev(child, "-TERM", &ports).await;
}

/// A newcomer's storage path on `decloud dev --storage-nodes 3`: a file is put through the
/// orchestrator's placement (no node named) as the summary says, one replica on each of the three
/// nodes, read back identical, and proven by every node on its own, epoch after epoch, while
/// nobody sends a transaction (the chain mines a block every 2 s).
#[tokio::test]
async fn dev_storage_nodes_store_and_prove_a_file_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let (child, ports, summary) =
        start_dev(dir.path(), &["--storage-nodes", "3", "--ingress-port", "0"]).await;
    let mut node_ids = summary_node_ids(&summary);
    node_ids.sort();
    assert_eq!(node_ids.len(), 3, "{summary}");
    assert!(
        summary.contains("decloud storage put FILE --replicas 3\n"),
        "{summary}"
    );
    let deployment = Deployment::load(dir.path(), 31337).unwrap();
    // Account (2), a tenant: anvil's third public test key, as the summary prints it.
    let key: PrivateKeySigner = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("(2) "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no account (2) in {summary}"))
        .parse()
        .unwrap();
    let chain: url::Url = format!("http://127.0.0.1:{}", ports.chain).parse().unwrap();
    let coordinator = StorageCoordinator::new(
        format!("http://127.0.0.1:{}/", ports.orchestrator)
            .parse()
            .unwrap(),
    );
    let client = StorageClient::new(
        tx::signing_provider(chain.clone(), key.clone()),
        key,
        &deployment,
        dir.path().join("index"),
    )
    .await
    .unwrap()
    .with_coordinator(coordinator.clone());

    let file = dir.path().join("notes.bin");
    let bytes: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let options = PutOptions {
        name: None,
        replicas: 3,
        epochs: 10,
        price_per_epoch: 10_000,
    };
    let quiet = || std::sync::Arc::new(|_: Progress| {});
    // The agents announce their storage role in their first heartbeats: until the orchestrator
    // has them, its placement finds too few storage nodes.
    let record = wait_for("a placement on the dev nodes", || async {
        client
            .put_with(
                &file,
                &options,
                NodeSource::Placement {
                    coordinator: &coordinator,
                    region: None,
                },
                quiet(),
            )
            .await
            .ok()
    })
    .await;
    let mut placed: Vec<B256> = record.replicas.iter().map(|r| r.node).collect();
    placed.sort();
    assert_eq!(placed, node_ids, "one replica on each node");

    let back = dir.path().join("back.bin");
    client.get(&record.name, &back, quiet()).await.unwrap();
    assert!(
        std::fs::read(&back).unwrap() == bytes,
        "get returned other bytes"
    );

    // Epochs are 20 blocks: two proven epochs need blocks that no transaction of ours mines.
    let deal_id = U256::from(record.deal.expect("the deal is open"));
    let market = StorageMarket::new(
        deployment.contracts.storage_market.address,
        ProviderBuilder::new().connect_http(chain.clone()),
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    for epoch in 0..2u32 {
        for replica in 0..3u64 {
            while !market
                .isProven(deal_id, U256::from(replica), epoch)
                .call()
                .await
                .unwrap()
            {
                assert!(
                    Instant::now() < deadline,
                    "replica {replica}'s epoch {epoch} is not proven after 5 minutes"
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    stop_dev(child, "-INT", &ports).await;
}
