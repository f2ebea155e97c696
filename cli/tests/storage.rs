//! `decloud storage` and the SDK's `StorageClient` against the real contracts on anvil and real
//! node agents in the storage role on loopback: identical bytes back from three replicas, no
//! plaintext on any node's disk, a damaged or stopped node skipped, and every bad input refused
//! with a clear error and nothing lost.

mod support;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use alloy::{
    primitives::{Address, B256, U256},
    providers::ext::AnvilApi,
};
use decloud_node_agent::{
    ConfigLayer, DomainType, Identity, NetworkConfig, RunningAgent, StorageLayer,
};
use decloud_sdk::{
    agent_protocol::{self, NodeResources},
    bindings::{NodeRegistry, StorageMarket, node_registry::INodeRegistry},
    storage::{
        FileIndex, Phase, Progress, ProgressFn, PutOptions, StorageClient, StorageError,
        StorageNode, encoding::MasterKey,
    },
    testing::{SendOk as _, TestSystem},
};
use support::Cli;

const OPERATOR: usize = 3;
const OWNER: usize = 5;
/// A text no ciphertext contains by chance; the test file repeats it.
const PATTERN: &[u8] = b"DECLOUD-PLAINTEXT-PATTERN-0123456789";

fn resources() -> NodeResources {
    NodeResources {
        arch: std::env::consts::ARCH.into(),
        cpu_model: "test".into(),
        cpu_cores: 2,
        memory_mib: 2048,
        disks: vec![],
        vm_storage_free_bytes: 1 << 30,
        gpus: vec![],
        compute_points: 100,
    }
}

/// One storage node: its agent (while running), directory and config.
struct Node {
    id: B256,
    dir: tempfile::TempDir,
    agent: Option<RunningAgent>,
    url: url::Url,
}

impl Node {
    fn target(&self) -> StorageNode {
        StorageNode {
            node: self.id,
            url: self.url.clone(),
        }
    }

    fn arg(&self) -> String {
        format!("{}={}", self.id, self.url)
    }

    async fn stop(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
    }

    /// The stored chunk file of `sha256` on this node's disk.
    fn chunk_path(&self, sha256: &B256) -> PathBuf {
        self.agent
            .as_ref()
            .unwrap()
            .agent()
            .chunk_store()
            .unwrap()
            .chunk_path(sha256)
    }
}

/// Starts `count` agents in the storage role with `quota` bytes each, registered on-chain.
async fn start_nodes(system: &TestSystem, prefix: &str, quotas: &[u64]) -> Vec<Node> {
    let market = system.deployment.contracts.storage_market.address;
    let mut nodes = Vec::new();
    for (i, quota) in quotas.iter().enumerate() {
        let dir = tempfile::Builder::new()
            .prefix("decloud-sclient-test-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let machine = format!("{prefix}-{i}");
        let layer = ConfigLayer {
            data_dir: Some(dir.path().join("data")),
            libvirt_uri: Some("test:///default".into()),
            domain_type: Some(DomainType::Qemu),
            operator: Some(system.address(OPERATOR)),
            machine_id: Some(machine.clone()),
            network: Some(NetworkConfig::User),
            storage: Some(StorageLayer {
                listen: Some("127.0.0.1:0".into()),
                quota_bytes: Some(*quota),
                dir: None,
                rpc_url: Some(system.rpc_url().to_string()),
                storage_market: Some(market),
                public_url: None,
                proving_keys: None,
                drain: None,
            }),
            ..Default::default()
        };
        let config =
            decloud_node_agent::Config::resolve(None, layer, ConfigLayer::default()).unwrap();
        let (identity, _) = Identity::load_or_create(&config).unwrap();
        let id = register(system, &machine, identity.address()).await;
        let agent = RunningAgent::start_with(config, identity, resources())
            .await
            .unwrap();
        let url = format!("http://{}", agent.storage_address().unwrap())
            .parse()
            .unwrap();
        nodes.push(Node {
            id,
            dir,
            agent: Some(agent),
            url,
        });
    }
    nodes
}

async fn register(system: &TestSystem, machine: &str, key: Address) -> B256 {
    let p = system.provider(OPERATOR);
    let registry = NodeRegistry::new(system.deployment.contracts.node_registry.address, &p);
    let machine = agent_protocol::machine_id(machine);
    registry
        .register(
            machine,
            key,
            "eu-west".into(),
            INodeRegistry::Capabilities {
                vcpus: 2,
                memoryGiB: 2,
                diskGiB: 100,
                gpus: 0,
                bandwidthMbps: 1000,
                architecture: 0,
                flags: 0,
            },
            "wss://node".into(),
            "bafy".into(),
            INodeRegistry::Prices {
                cpuPerHour: 0,
                memoryGiBPerHour: 0,
                storageGiBPerHour: 0,
                gpuPerHour: 0,
            },
        )
        .send_ok()
        .await;
    registry
        .computeNodeId(machine, system.address(OPERATOR))
        .call()
        .await
        .unwrap()
}

/// A file of `bytes` bytes: the pattern, repeated, with a running counter so chunks differ.
fn write_pattern_file(path: &Path, bytes: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(bytes + PATTERN.len() + 8);
    let mut n = 0u64;
    while data.len() < bytes {
        data.extend_from_slice(PATTERN);
        data.extend_from_slice(&n.to_be_bytes());
        n += 1;
    }
    data.truncate(bytes);
    std::fs::write(path, &data).unwrap();
    data
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

fn no_progress() -> ProgressFn {
    Arc::new(|_: Progress| {})
}

async fn deal_count(system: &TestSystem) -> u64 {
    let p = system.provider(0);
    StorageMarket::new(system.deployment.contracts.storage_market.address, &p)
        .dealCount()
        .call()
        .await
        .unwrap()
        .to::<u64>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_through_the_cli_with_three_replicas_skipping_a_damaged_and_a_stopped_node() {
    let mut cli = Cli::start().await;
    // An orchestrator that does not answer (a port just freed): placement and repair fail.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cli.orchestrator = Some(format!("http://{closed}"));
    let system = &cli.system;
    let mut nodes = start_nodes(system, "sclient-cli", &[64 << 20; 4]).await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("report.bin");
    // Two full chunks and a partial third.
    let data = write_pattern_file(&file, 2 * (1 << 20) + 12_345);

    let mut put = vec![
        "storage",
        "put",
        file.to_str().unwrap(),
        "--replicas",
        "3",
        "--epochs",
        "10",
        "--price",
        "0.01",
    ];
    let args: Vec<String> = nodes.iter().map(Node::arg).collect();
    for arg in &args {
        put.extend(["--node", arg]);
    }
    // Without --yes and without a terminal nothing is sent.
    let refused = cli.run(OWNER, &put);
    assert!(
        refused.failure().contains("without confirmation"),
        "{refused:#?}"
    );
    assert_eq!(deal_count(system).await, 0);

    // Without --node the orchestrator's placement picks the nodes: unreachable, nothing is sent.
    let unplaced = cli.run(
        OWNER,
        &[
            "storage",
            "put",
            file.to_str().unwrap(),
            "--replicas",
            "3",
            "--yes",
        ],
    );
    let error = unplaced.failure();
    assert!(
        error.contains("could not place 3 replicas") && error.contains(&closed.to_string()),
        "{error}"
    );
    assert_eq!(deal_count(system).await, 0);

    // The deal's repair cannot be handed to an orchestrator that does not answer: the put
    // says so, and keeps the deal and the uploads.
    let mut put_and_ok = put.clone();
    put_and_ok.push("--yes");
    let unrepaired = cli.run(OWNER, &put_and_ok);
    let error = unrepaired.failure();
    assert!(
        error.contains("setting up repair failed") && error.contains("run put again"),
        "{error}"
    );
    // Progress on stderr, phase by phase, each to its end: the Merkle trees have one of their own.
    for phase in [
        "encrypting and hashing",
        "building commitments",
        "uploading replicas",
    ] {
        assert!(error.contains(&format!("{phase}: 100%")), "{error}");
    }
    assert_eq!(deal_count(system).await, 1);
    let listed = cli.ok(OWNER, &["storage", "ls"]);
    assert_eq!(listed["files"][0]["uploaded"], true, "{listed}");
    assert_eq!(listed["files"][0]["repair"]["state"], "pending", "{listed}");
    let text = cli.run(OWNER, &["storage", "ls"]);
    assert!(
        text.stdout.contains("repair not set up: run put again"),
        "{text:#?}"
    );
    // Run again without repair: the same deal, finished, nothing uploaded twice.
    put.push("--no-repair");
    let stored = cli.ok(OWNER, &put);
    assert_eq!(deal_count(system).await, 1);
    assert_eq!(stored["repair"]["state"], "declined", "{stored}");
    assert_eq!(stored["name"], "report.bin");
    assert_eq!(stored["bytes"], data.len() as u64);
    assert_eq!(stored["chunks"], 3);
    let deal = stored["deal"].as_u64().unwrap();
    // 3 replicas × 10 epochs × 0.01 USDC.
    assert_eq!(support::micro(&stored["deposit"]), 300_000);
    let replicas = stored["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 3);
    // The first three nodes, in order, each with its own root.
    for (replica, node) in replicas.iter().zip(&nodes) {
        assert_eq!(replica["node"], node.id.to_string());
    }
    assert_ne!(replicas[0]["root"], replicas[1]["root"]);
    assert_ne!(replicas[1]["root"], replicas[2]["root"]);
    // The deal on-chain holds those roots.
    let p = system.provider(0);
    let market = StorageMarket::new(system.deployment.contracts.storage_market.address, &p);
    let on_chain = market.getReplicas(U256::from(deal)).call().await.unwrap();
    for (replica, ours) in on_chain.iter().zip(replicas) {
        assert_eq!(
            format!("{:#066x}", replica.root),
            ours["root"].as_str().unwrap()
        );
    }

    // Identical bytes back.
    let out = work.path().join("back.bin");
    let fetched = cli.ok(
        OWNER,
        &["storage", "get", "report.bin", "-o", out.to_str().unwrap()],
    );
    assert_eq!(fetched["deal"], deal);
    assert_eq!(std::fs::read(&out).unwrap(), data);

    // No node's disk holds plaintext; the client's own file does.
    assert_eq!(files_containing(work.path(), PATTERN).len(), 2);
    for node in &nodes {
        let found = files_containing(node.dir.path(), PATTERN);
        assert!(found.is_empty(), "plaintext on a node: {found:?}");
    }

    // Damage chunk 0 of replica 0 on its node's disk, stop replica 1's node: get uses replica 2
    // for chunk 0, and still returns identical bytes.
    let index = FileIndex::new(cli.decloud_config_dir().join("storage"));
    let record = index.list().unwrap().pop().unwrap();
    let damaged = nodes[0].chunk_path(&record.replicas[0].chunk_sha256[0]);
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[4096] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();
    nodes[1].stop().await;
    std::fs::remove_file(&out).unwrap();
    let fetched = cli.run(
        OWNER,
        &[
            "storage",
            "get",
            &deal.to_string(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(fetched.code, Some(0), "{fetched:#?}");
    assert_eq!(std::fs::read(&out).unwrap(), data);

    // Every replica unavailable for chunk 0: a clear error and no output file.
    nodes[2].stop().await;
    std::fs::remove_file(&out).unwrap();
    let failed = cli.run(
        OWNER,
        &["storage", "get", "report.bin", "-o", out.to_str().unwrap()],
    );
    let error = failed.failure();
    assert!(error.contains("no replica served chunk 0"), "{error}");
    assert!(
        error.contains("replica 0") && error.contains("replica 2"),
        "{error}"
    );
    assert!(!out.exists());

    // ls: the file, its replicas and funds left (nothing proven yet: the whole deposit).
    let listed = cli.ok(OWNER, &["storage", "ls"]);
    let files = listed["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["deal"], deal);
    assert_eq!(files[0]["replicas"], 3);
    assert_eq!(files[0]["proven_epochs"], 0);
    assert_eq!(support::micro(&files[0]["funds_left"]), 300_000);
    // Each replica's node as the deal names it on-chain now (no repair moved any).
    let on_chain: Vec<String> = market
        .getReplicas(U256::from(deal))
        .call()
        .await
        .unwrap()
        .iter()
        .map(|r| r.nodeId.to_string())
        .collect();
    let listed_nodes: Vec<&str> = files[0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(listed_nodes, on_chain);
    let text = cli.run(OWNER, &["storage", "ls"]);
    assert!(
        text.stdout
            .contains(&format!("replica 2: node {}", on_chain[2])),
        "{text:#?}"
    );

    // rm: the running node deletes, the stopped ones are reported; the refund comes when the deal
    // settles, and the record stays (marked removed) until then.
    let removed = cli.run(OWNER, &["storage", "rm", "report.bin", "--yes", "--json"]);
    assert_ne!(removed.code, Some(0));
    assert!(removed.stderr.contains("did not delete"), "{removed:#?}");
    let report: serde_json::Value = serde_json::from_str(&removed.stdout).unwrap();
    let deletions = report["deletions"].as_array().unwrap();
    assert_eq!(deletions[0]["deleted"], true);
    assert_eq!(deletions[1]["deleted"], false);
    assert!(report["refund"].as_str().unwrap().contains("settle"));
    // The deal was running: rm ended it after the current epoch.
    assert_eq!(report["deal_ended_now"], true);
    let listed = cli.ok(OWNER, &["storage", "ls"]);
    assert_eq!(listed["files"][0]["removed"], true);

    // Once the deal has ended, rm settles it: the whole deposit comes back (nothing was proven).
    let end = 10 * decloud_sdk::deploy::LOCAL_STORAGE_EPOCH_BLOCKS + 10;
    system
        .provider(0)
        .anvil_mine(Some(end), None)
        .await
        .unwrap();
    let usdc = decloud_sdk::bindings::MockUSDC::new(system.deployment.usdc, &p);
    let before = usdc.balanceOf(system.address(OWNER)).call().await.unwrap();
    let removed = cli.run(
        OWNER,
        &["storage", "rm", &deal.to_string(), "--yes", "--json"],
    );
    let report: serde_json::Value = serde_json::from_str(&removed.stdout).unwrap();
    assert_eq!(support::micro(&report["refunded"]), 300_000);
    let after = usdc.balanceOf(system.address(OWNER)).call().await.unwrap();
    assert_eq!(after - before, U256::from(300_000u64));
    assert!(
        cli.ok(OWNER, &["storage", "ls"])["files"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_an_interrupted_put_resumes() {
    let system = TestSystem::start().await.unwrap();
    // Three roomy nodes and one that holds a single chunk.
    let mut nodes = start_nodes(
        &system,
        "sclient-sdk",
        &[64 << 20, 64 << 20, 64 << 20, 1 << 20],
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let owner = StorageClient::new(
        system.provider(OWNER),
        system.signer(OWNER),
        &system.deployment,
        work.path().join("index"),
    )
    .await
    .unwrap();
    let roomy: Vec<StorageNode> = nodes[..3].iter().map(Node::target).collect();
    let options = |name: &str, epochs: u32, price: u64| PutOptions {
        name: Some(name.into()),
        replicas: 3,
        epochs,
        price_per_epoch: price,
    };

    // A deal the wallet cannot pay: refused before any transaction.
    let file = work.path().join("data.bin");
    let data = write_pattern_file(&file, 5 * (1 << 20) + 77);
    let error = owner
        .put(
            &file,
            &options("too-dear", 10, 1_000_000_000_000),
            &roomy,
            no_progress(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, StorageError::InsufficientFunds { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("nothing was sent"), "{error}");
    assert_eq!(deal_count(&system).await, 0);

    // Too few usable nodes: refused, nothing sent.
    let error = owner
        .put(
            &file,
            &options("few", 10, 1_000),
            &roomy[..2],
            no_progress(),
        )
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("3 distinct active storage nodes; usable: 2"),
        "{error}"
    );
    assert_eq!(deal_count(&system).await, 0);

    // An upload interrupted part-way (the put is dropped once some chunks are on the nodes).
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let progress: ProgressFn = Arc::new(move |p: Progress| {
        if p.phase == Phase::Upload && p.done * 3 >= p.total {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let data_options = options("data", 1000, 1_000);
    let put = owner.put(&file, &data_options, &roomy, progress);
    tokio::pin!(put);
    let interrupted = loop {
        tokio::select! {
            result = &mut put => break Some(result),
            () = tokio::time::sleep(std::time::Duration::from_millis(5)) => {
                if stop.load(Ordering::SeqCst) {
                    break None;
                }
            }
        }
    };
    assert!(
        interrupted.is_none(),
        "the put finished before it could be interrupted"
    );
    let partial = owner.find("data").unwrap();
    assert!(!partial.uploaded());
    let deal = partial.deal.expect("the deal was opened before the upload");
    // A get of the incomplete file says so and writes nothing.
    let out = work.path().join("out.bin");
    let error = owner.get("data", &out, no_progress()).await.unwrap_err();
    assert!(error.to_string().contains("not complete"), "{error}");
    assert!(!out.exists());
    // The file changed since: the resume refuses to send anything different.
    let original = std::fs::read(&file).unwrap();
    let mut changed = original.clone();
    changed[3 << 20] ^= 1;
    std::fs::write(&file, &changed).unwrap();
    let error = owner
        .put(&file, &options("data", 1000, 1_000), &roomy, no_progress())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("changed since its interrupted put"),
        "{error}"
    );
    std::fs::write(&file, &original).unwrap();
    // Resumed: the same deal, completed.
    let record = owner
        .put(&file, &options("data", 1000, 1_000), &roomy, no_progress())
        .await
        .unwrap();
    assert_eq!(record.deal, Some(deal));
    assert!(record.uploaded());
    assert_eq!(deal_count(&system).await, 1);
    owner.get("data", &out, no_progress()).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // The same name again: refused, it is stored.
    let error = owner
        .put(&file, &options("data", 1000, 1_000), &roomy, no_progress())
        .await
        .unwrap_err();
    assert!(
        matches!(error, StorageError::AlreadyStored { .. }),
        "{error}"
    );

    // A wrong key: the chunks arrive intact but do not decrypt; nothing is written.
    let wrong = owner
        .clone()
        .with_master_key(MasterKey::from_bytes([7; 32]));
    let wrong_out = work.path().join("wrong.bin");
    let error = wrong
        .get("data", &wrong_out, no_progress())
        .await
        .unwrap_err();
    assert!(
        matches!(error, StorageError::WrongKey { index: 0, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("wrong key"), "{error}");
    assert!(!wrong_out.exists());

    // A node whose chunk API does not answer is left out before the deal, and the next
    // candidate takes its replica.
    let small_file = work.path().join("small.bin");
    let small = write_pattern_file(&small_file, 1000);
    let dead = StorageNode {
        node: roomy[0].node,
        url: "http://127.0.0.1:1".parse().unwrap(),
    };
    let with_dead = vec![dead, roomy[1].clone(), roomy[2].clone(), nodes[3].target()];
    let deals_before = deal_count(&system).await;
    let record = owner
        .put(
            &small_file,
            &options("small", 10, 1_000),
            &with_dead,
            no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(deal_count(&system).await, deals_before + 1);
    let placed: Vec<B256> = record.replicas.iter().map(|r| r.node).collect();
    assert_eq!(placed, vec![roomy[1].node, roomy[2].node, nodes[3].id]);
    let p = system.provider(0);
    let market = StorageMarket::new(system.deployment.contracts.storage_market.address, &p);
    let on_chain = market
        .getReplicas(U256::from(record.deal.unwrap()))
        .call()
        .await
        .unwrap();
    let on_chain: Vec<B256> = on_chain.iter().map(|r| r.nodeId).collect();
    assert_eq!(on_chain, placed);
    let small_out = work.path().join("small-back.bin");
    owner.get("small", &small_out, no_progress()).await.unwrap();
    assert_eq!(std::fs::read(&small_out).unwrap(), small);
    // Only dead candidates: refused with the reason, nothing sent.
    let all_dead: Vec<StorageNode> = nodes[..3]
        .iter()
        .enumerate()
        .map(|(i, n)| StorageNode {
            node: n.id,
            url: format!("http://127.0.0.1:{}", 1 + i).parse().unwrap(),
        })
        .collect();
    let error = owner
        .put(
            &small_file,
            &options("nowhere", 10, 1_000),
            &all_dead,
            no_progress(),
        )
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("usable: 0") && error.to_string().contains("does not answer"),
        "{error}"
    );
    assert_eq!(deal_count(&system).await, deals_before + 1);

    // A node over its quota: its replica fails with the node's reason, the others upload, and
    // the record keeps the deal so nothing is lost.
    let with_small: Vec<StorageNode> = vec![roomy[0].clone(), roomy[1].clone(), nodes[3].target()];
    let error = owner
        .put(
            &file,
            &options("big", 1000, 1_000),
            &with_small,
            no_progress(),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("quota"), "{error}");
    assert!(error.to_string().contains("run put again"), "{error}");
    let big = owner.find("big").unwrap();
    assert_eq!(big.replicas.iter().filter(|r| r.uploaded).count(), 2);

    // A deal that ended before its upload completed: the node refuses, the error says why.
    let short_file = work.path().join("short.bin");
    write_pattern_file(&short_file, 3 * (1 << 20));
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let progress: ProgressFn = Arc::new(move |p: Progress| {
        if p.phase == Phase::Upload && p.done > 0 {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let short_options = options("short", 2, 1_000);
    let put = owner.put(&short_file, &short_options, &roomy, progress);
    tokio::pin!(put);
    let interrupted = loop {
        tokio::select! {
            result = &mut put => break Some(result),
            () = tokio::time::sleep(std::time::Duration::from_millis(1)) => {
                if stop.load(Ordering::SeqCst) {
                    break None;
                }
            }
        }
    };
    assert!(
        interrupted.is_none(),
        "the put finished before it could be interrupted"
    );
    system
        .provider(0)
        .anvil_mine(
            Some(3 * decloud_sdk::deploy::LOCAL_STORAGE_EPOCH_BLOCKS),
            None,
        )
        .await
        .unwrap();
    let error = owner
        .put(
            &short_file,
            &options("short", 2, 1_000),
            &roomy,
            no_progress(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::DealEnded { .. }), "{error}");
    assert!(
        error.to_string().contains("ended at block") && error.to_string().contains("rm"),
        "{error}"
    );
    let listed = owner.list().await.unwrap();
    let short = listed.iter().find(|f| f.record.name == "short").unwrap();
    let state = short.deal.as_ref().unwrap();
    assert!(state.ended() && state.current_epoch >= 2);
    assert_eq!(state.remaining, U256::from(2 * 3 * 1_000u64));
    // Nothing is lost: get says the upload is incomplete and writes nothing, and rm settles the
    // ended deal at once (there is nothing to end) and refunds the whole deposit, since no epoch
    // of an incomplete upload is proven.
    let short_out = work.path().join("short-back.bin");
    let error = owner
        .get("short", &short_out, no_progress())
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::Incomplete { .. }), "{error}");
    assert!(!short_out.exists());
    let usdc = decloud_sdk::bindings::MockUSDC::new(system.deployment.usdc, &p);
    let before = usdc.balanceOf(system.address(OWNER)).call().await.unwrap();
    let removal = owner.remove("short").await.unwrap();
    assert!(!removal.ended, "{removal:?}");
    assert_eq!(removal.refunded, Some(U256::from(2 * 3 * 1_000u64)));
    let after = usdc.balanceOf(system.address(OWNER)).call().await.unwrap();
    assert_eq!(after - before, U256::from(2 * 3 * 1_000u64));
    assert!(owner.live("short").unwrap().is_none());
    for node in &mut nodes {
        node.stop().await;
    }
}
