//! Storage nodes prove their replicas on their own, on the real contracts: anvil with
//! StorageMarket verifying the development circuit, a real agent in the storage role, chunks
//! uploaded with the SDK's `NodeClient`, real Groth16 proofs. The test only moves the chain
//! forward (anvil makes blocks on demand); everything else is the agent's doing.

mod common;

use std::{path::Path, process::Command, time::Duration};

use alloy::{
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider, ext::AnvilApi},
};
use decloud_node_agent::{ConfigLayer, Identity, RunningAgent, StorageLayer};
use decloud_prover::{CircuitParams, Keys, MerkleTree, fr_to_be_bytes};
use decloud_sdk::{
    agent_protocol,
    bindings::{MockUSDC, NodeRegistry, StorageMarket, node_registry::INodeRegistry},
    deploy::VerifierSource,
    storage::{NodeClient, ReplicaProofs, StorageClientError, StorageReport},
    testing::{SendOk as _, TestSystem},
};
use reqwest::StatusCode;

const OPERATOR: usize = 3;
const OWNER: usize = 5;
/// Stored chunks are 1 MiB (AES-GCM ciphertext of 1 MiB − 16 bytes plus its tag), the last
/// one shorter.
const CHUNK: usize = 1 << 20;
const PRICE: u128 = 1_000_000;
const FEE_BPS: u128 = 500;

/// Replica bytes as a client would store them: two full chunks and a short last one (not a
/// multiple of the 1 KiB segment).
fn replica_chunks(salt: u8) -> Vec<Vec<u8>> {
    [CHUNK, CHUNK, 300 * 1024 + 5]
        .iter()
        .enumerate()
        .map(|(c, &len)| {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 10) as u8 ^ (c as u8 * 7) ^ salt)
                .collect()
        })
        .collect()
}

fn commitment(chunks: &[Vec<u8>]) -> (U256, u64) {
    let data = chunks.concat();
    let tree = MerkleTree::from_data(&data, CircuitParams::PRODUCTION.depth).unwrap();
    (
        U256::from_be_bytes(fr_to_be_bytes(&tree.root())),
        tree.segment_count(),
    )
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
                vcpus: 8,
                memoryGiB: 32,
                diskGiB: 2000,
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

/// Opens a one-replica deal on `node` for these chunks; its id.
async fn open_deal(system: &TestSystem, node: B256, chunks: &[Vec<u8>], epochs: u32) -> u64 {
    let owner = system.provider(OWNER);
    let market_address = system.deployment.contracts.storage_market.address;
    MockUSDC::new(system.deployment.usdc, &owner)
        .approve(market_address, U256::MAX)
        .send_ok()
        .await;
    let market = StorageMarket::new(market_address, &owner);
    let (root, segments) = commitment(chunks);
    market
        .createDeal(vec![node], vec![root], segments, PRICE, epochs)
        .send_ok()
        .await;
    market.dealCount().call().await.unwrap().to::<u64>()
}

struct Node {
    system: TestSystem,
    dir: tempfile::TempDir,
    layer: StorageLayer,
    machine: String,
    node: B256,
    node_key: Address,
    market: Address,
}

impl Node {
    async fn new(system: TestSystem, machine: &str, proving_keys: Option<&Path>) -> Self {
        let dir = common::data_dir();
        let market = system.deployment.contracts.storage_market.address;
        let layer = StorageLayer {
            listen: Some("127.0.0.1:0".into()),
            quota_bytes: Some(64 << 20),
            dir: None,
            rpc_url: Some(system.rpc_url().to_string()),
            storage_market: Some(market),
            public_url: None,
            proving_keys: proving_keys.map(Path::to_path_buf),
            drain: None,
        };
        let mut node = Self {
            system,
            dir,
            layer,
            machine: machine.into(),
            node: B256::ZERO,
            node_key: Address::ZERO,
            market,
        };
        let config = node.config();
        let (identity, _) = Identity::load_or_create(&config).unwrap();
        node.node_key = identity.address();
        node.node = register(&node.system, machine, identity.address()).await;
        assert_eq!(node.node, identity.node_id);
        // The node key pays the gas of its proofs.
        node.system
            .provider(0)
            .anvil_set_balance(identity.address(), U256::from(10u128.pow(20)))
            .await
            .unwrap();
        node
    }

    fn config(&self) -> decloud_node_agent::Config {
        let mut config = common::test_driver_config(self.dir.path(), &self.machine);
        config.operator = Some(self.system.address(OPERATOR));
        config.storage = Some(self.layer.clone().resolve(&config.data_dir).unwrap());
        config
    }

    async fn start(&self) -> RunningAgent {
        let config = self.config();
        let (identity, _) = Identity::load_or_create(&config).unwrap();
        RunningAgent::start_with(config, identity, common::resources())
            .await
            .unwrap()
    }

    async fn client(&self, agent: &RunningAgent) -> NodeClient {
        let url: url::Url = format!("http://{}", agent.storage_address().unwrap())
            .parse()
            .unwrap();
        NodeClient::new(
            url,
            self.system.provider(0).get_chain_id().await.unwrap(),
            self.market,
            self.node,
            self.system.signer(OWNER),
        )
    }

    fn reader(&self) -> DynProvider {
        self.system.provider(0)
    }

    async fn is_proven(&self, deal: u64, epoch: u32) -> bool {
        StorageMarket::new(self.market, self.reader())
            .isProven(U256::from(deal), U256::ZERO, epoch)
            .call()
            .await
            .unwrap()
    }

    /// Mines until epoch `epoch` of the deal has begun and its first block is readable.
    async fn enter_epoch(&self, deal: u64, epoch: u32) {
        let start: u64 = StorageMarket::new(self.market, self.reader())
            .epochStartBlock(U256::from(deal), epoch)
            .call()
            .await
            .unwrap()
            .to();
        let now = self.reader().get_block_number().await.unwrap();
        if start + 1 > now {
            self.reader()
                .anvil_mine(Some(start + 1 - now), None)
                .await
                .unwrap();
        }
    }

    async fn nonce(&self) -> u64 {
        self.reader()
            .get_transaction_count(self.node_key)
            .await
            .unwrap()
    }

    async fn earnings(&self) -> U256 {
        StorageMarket::new(self.market, self.reader())
            .earningsOf(self.system.address(OPERATOR))
            .call()
            .await
            .unwrap()
    }

    /// Runs the agent binary with this node's configuration.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let config = self.config();
        let file = self.dir.path().join("agent.toml");
        let layer = ConfigLayer {
            data_dir: Some(config.data_dir.clone()),
            operator: Some(self.system.address(OPERATOR)),
            machine_id: Some(self.machine.clone()),
            storage: Some(self.layer.clone()),
            ..Default::default()
        };
        std::fs::write(&file, toml::to_string(&layer).unwrap()).unwrap();
        Command::new(env!("CARGO_BIN_EXE_decloud-node-agent"))
            .arg("--config")
            .arg(&file)
            .args(args)
            .output()
            .unwrap()
    }
}

async fn report(agent: &RunningAgent) -> StorageReport {
    agent.agent().heartbeat(1).await.unwrap().storage.unwrap()
}

async fn proofs(agent: &RunningAgent, deal: u64) -> ReplicaProofs {
    report(agent)
        .await
        .proofs
        .into_iter()
        .find(|p| p.deal == deal && p.replica == 0)
        .unwrap_or_default()
}

/// Waits (at most two minutes) until `check` holds.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..240 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn the_node_proves_every_epoch_itself_survives_restarts_drains_and_reports_damage() {
    let system = TestSystem::start().await.unwrap();
    let node = Node::new(system, "storage-prove-a", None).await;
    let agent = node.start().await;
    let chunks = replica_chunks(1);
    let deal = open_deal(&node.system, node.node, &chunks, 8).await;
    let client = node.client(&agent).await;
    let copy = chunks.clone();
    client
        .upload_replica(deal, 0, 3, |i| copy[i as usize].clone(), |_| {})
        .await
        .unwrap();

    // Epochs 0, 1, 2: the agent proves each one by itself, exactly once.
    let paid = |epochs: u64| U256::from(epochs as u128 * (PRICE - PRICE * FEE_BPS / 10_000));
    for epoch in 0..3u32 {
        node.enter_epoch(deal, epoch).await;
        until(&format!("epoch {epoch} is proven"), || {
            node.is_proven(deal, epoch)
        })
        .await;
        until("the journal has the proof", || async {
            proofs(&agent, deal).await.last_proven_epoch == Some(epoch)
        })
        .await;
    }
    assert_eq!(node.earnings().await, paid(3), "three epochs credited");
    let seen = proofs(&agent, deal).await;
    assert_eq!(seen.proven_epochs, 3);
    assert_eq!(seen.missed_epochs, 0);
    assert!(seen.last_proof_tx.is_some() && seen.last_proof_at.is_some());
    assert_eq!(seen.error, None);
    assert_eq!(report(&agent).await.proof_rate_bps(), Some(10_000));
    let tx = seen.last_proof_tx.unwrap();
    let receipt = node
        .reader()
        .get_transaction_receipt(tx)
        .await
        .unwrap()
        .unwrap();
    assert!(receipt.status());
    assert_eq!(receipt.from, node.node_key, "sent from the node key");

    // Restart in the middle of epoch 2 (already proven): the new agent sends nothing.
    let nonce = node.nonce().await;
    agent.stop().await;
    let agent = node.start().await;
    // Give the restarted prover several rounds to (wrongly) act.
    tokio::time::sleep(decloud_node_agent::PROVE_POLL_INTERVAL * 4).await;
    assert_eq!(node.nonce().await, nonce, "no second proof of epoch 2");
    assert_eq!(proofs(&agent, deal).await.proven_epochs, 3);
    assert_eq!(node.earnings().await, paid(3));

    // Drain mode through the command line: new replicas are refused, an upload the node holds
    // part of may resume, heartbeats say so, and proving goes on.
    let output = node.cli(&["drain"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("decloud operator pause"));
    assert!(report(&agent).await.draining);
    let other = replica_chunks(2);
    let deal2 = open_deal(&node.system, node.node, &other, 8).await;
    let client = node.client(&agent).await;
    match client.put_chunk(deal2, 0, 0, other[0].clone()).await {
        Err(StorageClientError::Refused { status, error, .. }) => {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(error.contains("draining"), "{error}");
        }
        other => panic!("a draining node took a new replica: {other:?}"),
    }
    assert!(client.manifest(deal2, 0).await.unwrap().chunks.is_empty());
    assert!(
        !client
            .put_chunk(deal, 0, 1, chunks[1].clone())
            .await
            .unwrap(),
        "a held replica's write is answered (already stored)"
    );
    node.enter_epoch(deal, 3).await;
    until("epoch 3 is proven while draining", || {
        node.is_proven(deal, 3)
    })
    .await;
    let output = node.cli(&["undrain"]);
    assert!(output.status.success());
    assert!(!report(&agent).await.draining);

    // Bytes flipped in a chunk on disk: epoch 4 cannot be proven, the agent says why, nothing
    // is paid, and the epoch counts as missed once it closes.
    until("epoch 3 is in the journal", || async {
        proofs(&agent, deal).await.proven_epochs == 4
    })
    .await;
    let store = agent.agent().chunk_store().unwrap().clone();
    let path = store.chunk_path(&decloud_node_agent::sha256(&chunks[2]));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let nonce = node.nonce().await;
    node.enter_epoch(deal, 4).await;
    until("the damage is reported", || async {
        proofs(&agent, deal)
            .await
            .error
            .is_some_and(|e| e.contains("corrupt"))
    })
    .await;
    assert!(!node.is_proven(deal, 4).await);
    assert_eq!(
        node.nonce().await,
        nonce,
        "nothing sent for a damaged replica"
    );
    node.enter_epoch(deal, 5).await;
    until("epoch 4 counts as missed", || async {
        proofs(&agent, deal).await.missed_epochs == 1
    })
    .await;
    assert!(!node.is_proven(deal, 4).await);
    assert_eq!(
        node.earnings().await,
        paid(4),
        "the damaged epoch earned nothing"
    );
    assert_eq!(report(&agent).await.proof_rate_bps(), Some(8_000));
    agent.stop().await;
}

/// The production circuit (88 challenges, depth 20): keys from the development setup of the
/// production shape, the committed `Groth16Verifier`; the agent proves two epochs. Prints the
/// proving time and the gas of each proof (BENCHMARKS.md). Minutes: key generation and 88
/// challenges per proof.
#[tokio::test]
#[ignore = "production parameters: minutes of key generation and proving; scripts/test --long"]
async fn the_node_proves_with_the_production_circuit() {
    let keys_dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let keys_path = keys_dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        Keys::dev_setup(CircuitParams::PRODUCTION)
            .unwrap()
            .save(&keys_path, "dev-seeded (test)")
            .unwrap();
    })
    .await
    .unwrap();
    eprintln!("production keys generated in {:?}", started.elapsed());
    let system = TestSystem::start_with_verifier(VerifierSource::DevelopmentProductionCircuit)
        .await
        .unwrap();
    let node = Node::new(system, "storage-prove-prod", Some(keys_dir.path())).await;
    let agent = node.start().await;
    let chunks = replica_chunks(3);
    let deal = open_deal(&node.system, node.node, &chunks, 4).await;
    let client = node.client(&agent).await;
    let copy = chunks.clone();
    client
        .upload_replica(deal, 0, 3, |i| copy[i as usize].clone(), |_| {})
        .await
        .unwrap();
    for epoch in 0..2u32 {
        node.enter_epoch(deal, epoch).await;
        let started = std::time::Instant::now();
        for _ in 0..600 {
            if node.is_proven(deal, epoch).await {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(node.is_proven(deal, epoch).await, "epoch {epoch} proven");
        until("the journal has the proof", || async {
            proofs(&agent, deal).await.last_proven_epoch == Some(epoch)
        })
        .await;
        let tx = proofs(&agent, deal).await.last_proof_tx.unwrap();
        let receipt = node
            .reader()
            .get_transaction_receipt(tx)
            .await
            .unwrap()
            .unwrap();
        eprintln!(
            "production epoch {epoch}: proven {:?} after the epoch began; submitProof gas {}",
            started.elapsed(),
            receipt.gas_used
        );
    }
    assert_eq!(proofs(&agent, deal).await.proven_epochs, 2);
    agent.stop().await;
}
