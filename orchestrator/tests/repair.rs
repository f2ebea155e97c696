//! Rebuilding a lost replica on the real contracts and real node agents in the storage role.
//!
//! Three nodes registered on anvil: agents A and C serve the chunk API, node B never comes up.
//! The owner opens a two-replica deal (replica 0 on A, replica 1 on B) with each replica's
//! masked ciphertext committed by its prover root, uploads replica 0 to A and names the
//! orchestrator's repair key as the deal's repairer. B's operator pauses it; the repairer then
//! rebuilds replica 1 on C from replica 0 without the owner. C must hold exactly the replica the
//! owner would have uploaded, the chain must place it on C with its root, and a second run must
//! change nothing. A wrong repair secret, a replica whose node is healthy and a healthy replica
//! served damaged are refused with nothing moved.

use std::collections::BTreeMap;

use alloy::{
    primitives::{Address, B256, U256},
    providers::Provider,
};
use decloud_node_agent::{
    ConfigLayer, DomainType, Identity, ImageConfig, NetworkConfig, RunningAgent, StorageLayer,
    create_blank_qcow2,
};
use decloud_orchestrator::repair::{RepairError, RepairSecret, Repairer, ReplicaRepair};
use decloud_prover::{MerkleTree, fr_to_be_bytes};
use decloud_sdk::{
    agent_protocol::{self, NodeResources},
    bindings::{MockUSDC, NodeRegistry, StorageMarket, node_registry::INodeRegistry},
    storage::NodeClient,
    testing::{SendOk as _, TestSystem},
};
use url::Url;

const OWNER: usize = 5;
const REPAIR_KEY: usize = 7;
/// Three chunks of 16 KiB and a short last one.
const CHUNK: usize = 16 << 10;
const CHUNK_SIZES: [usize; 4] = [CHUNK, CHUNK, CHUNK, 5000];

async fn register(system: &TestSystem, who: usize, machine: &str, key: Address) -> B256 {
    let p = system.provider(who);
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
        .computeNodeId(machine, system.address(who))
        .call()
        .await
        .unwrap()
}

/// A storage agent of operator account `who` on libvirt's in-process test driver; its node id
/// (registered) and the running agent.
async fn storage_agent(
    system: &TestSystem,
    dir: &std::path::Path,
    who: usize,
    machine: &str,
) -> (B256, RunningAgent) {
    let dir = dir.join(machine);
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("base.qcow2");
    create_blank_qcow2(&image, 16).unwrap();
    let config = decloud_node_agent::Config::resolve(
        None,
        ConfigLayer::default(),
        ConfigLayer {
            data_dir: Some(dir.join("data")),
            libvirt_uri: Some("test:///default".into()),
            domain_type: Some(DomainType::Qemu),
            operator: Some(system.address(who)),
            machine_id: Some(machine.into()),
            shutdown_timeout_secs: Some(2),
            network: Some(NetworkConfig::Network {
                name: format!("repair-{machine}"),
            }),
            images: BTreeMap::from([(
                "blank".to_string(),
                ImageConfig {
                    base: image,
                    kernel: None,
                    initrd: None,
                    cmdline: None,
                },
            )]),
            storage: Some(StorageLayer {
                listen: Some("127.0.0.1:0".into()),
                quota_bytes: Some(1 << 20),
                dir: None,
                rpc_url: Some(system.rpc_url().to_string()),
                storage_market: Some(system.deployment.contracts.storage_market.address),
                public_url: None,
                proving_keys: None,
                drain: None,
            }),
            ..Default::default()
        },
    )
    .unwrap();
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    let node = register(system, who, machine, identity.address()).await;
    assert_eq!(node, identity.node_id);
    let resources = NodeResources {
        arch: std::env::consts::ARCH.into(),
        cpu_model: "test".into(),
        cpu_cores: 2,
        memory_mib: 2048,
        disks: vec![],
        vm_storage_free_bytes: 1 << 30,
        gpus: vec![],
        compute_points: 100,
    };
    let running = RunningAgent::start_with(config, identity, resources)
        .await
        .unwrap();
    (node, running)
}

fn url(agent: &RunningAgent) -> Url {
    format!("http://{}", agent.storage_address().unwrap())
        .parse()
        .unwrap()
}

/// Replica `replica`'s stored chunks: the ciphertext masked with its key.
fn masked(secret: &RepairSecret, ciphertext: &[Vec<u8>], replica: u32) -> Vec<Vec<u8>> {
    ciphertext
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut chunk = chunk.clone();
            secret.mask_key(replica).apply(i as u32, &mut chunk);
            chunk
        })
        .collect()
}

fn root(chunks: &[Vec<u8>], depth: usize) -> U256 {
    let tree = MerkleTree::from_data(&chunks.concat(), depth).unwrap();
    U256::from_be_bytes(fr_to_be_bytes(&tree.root()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repairer_rebuilds_a_lost_replica_on_another_node_without_the_owner() {
    let system = TestSystem::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let market_address = system.deployment.contracts.storage_market.address;
    let chain_id = system.provider(0).get_chain_id().await.unwrap();
    let (node_a, agent_a) = storage_agent(&system, work.path(), 2, "repair-a").await;
    let node_b = register(&system, 3, "repair-b", system.address(3)).await;
    let (node_c, agent_c) = storage_agent(&system, work.path(), 4, "repair-c").await;

    // The owner's side: AES-GCM ciphertext stands in as pseudo-random bytes (the repair never
    // decrypts), masked into two distinct replicas with the deal's repair secret.
    let secret = RepairSecret::from_bytes([0x5a; 32]);
    let ciphertext: Vec<Vec<u8>> = CHUNK_SIZES
        .iter()
        .enumerate()
        .map(|(c, &len)| {
            (0..len)
                .map(|i| ((i * 131 + c * 17) ^ (i >> 7)) as u8)
                .collect()
        })
        .collect();
    let owner_market = StorageMarket::new(market_address, system.provider(OWNER));
    let depth = owner_market
        .maxSegmentCount()
        .call()
        .await
        .unwrap()
        .trailing_zeros() as usize;
    let replicas = [
        masked(&secret, &ciphertext, 0),
        masked(&secret, &ciphertext, 1),
    ];
    let roots = [root(&replicas[0], depth), root(&replicas[1], depth)];
    assert_ne!(roots[0], roots[1]);
    let bytes: usize = CHUNK_SIZES.iter().sum();
    MockUSDC::new(system.deployment.usdc, system.provider(OWNER))
        .approve(market_address, U256::MAX)
        .send_ok()
        .await;
    owner_market
        .createDeal(
            vec![node_a, node_b],
            roots.to_vec(),
            bytes.div_ceil(1024) as u64,
            1_000,
            100,
        )
        .send_ok()
        .await;
    let deal = 1u64;
    let owner_a = NodeClient::new(
        url(&agent_a),
        chain_id,
        market_address,
        node_a,
        system.signer(OWNER),
    );
    owner_a
        .upload_replica(deal, 0, 4, |i| replicas[0][i as usize].clone(), |_| {})
        .await
        .unwrap();
    owner_market
        .setRepairer(U256::from(deal), system.address(REPAIR_KEY))
        .send_ok()
        .await;

    let repairer = Repairer::new(
        system.provider(REPAIR_KEY),
        system.signer(REPAIR_KEY),
        market_address,
        chain_id,
    );
    assert_eq!(repairer.address(), system.address(REPAIR_KEY));
    let job = ReplicaRepair {
        deal,
        replica: 1,
        source: 0,
        source_url: url(&agent_a),
        target: node_c,
        target_url: url(&agent_c),
    };
    let on_chain = |index: usize| {
        let market = StorageMarket::new(market_address, system.provider(0));
        async move { market.getReplicas(U256::from(deal)).call().await.unwrap()[index].clone() }
    };

    // Node B is Active and has missed nothing yet: the market refuses the move, nothing changes.
    let error = repairer.rebuild(&job, &secret).await.unwrap_err();
    assert!(matches!(error, RepairError::Chain(_)), "{error}");
    assert!(error.to_string().contains("ReplicaHealthy"), "{error}");
    assert_eq!(on_chain(1).await.nodeId, node_b);

    // B's operator pauses it. A wrong secret is caught before anything moves.
    NodeRegistry::new(
        system.deployment.contracts.node_registry.address,
        system.provider(3),
    )
    .pause(node_b)
    .send_ok()
    .await;
    let error = repairer
        .rebuild(&job, &RepairSecret::from_bytes([0x5b; 32]))
        .await
        .unwrap_err();
    assert!(matches!(error, RepairError::WrongSecret { .. }), "{error}");
    assert_eq!(on_chain(1).await.nodeId, node_b);

    // The rebuild: C holds exactly the replica the owner would have uploaded.
    let outcome = repairer.rebuild(&job, &secret).await.unwrap();
    assert!(outcome.moved);
    assert_eq!((outcome.chunks, outcome.sent_chunks), (4, 4));
    assert_eq!(outcome.bytes, bytes as u64);
    assert_eq!(outcome.root, roots[1]);
    let placed = on_chain(1).await;
    assert_eq!((placed.nodeId, placed.root), (node_c, roots[1]));
    assert_eq!(placed.payee, system.address(4));
    let owner_c = NodeClient::new(
        url(&agent_c),
        chain_id,
        market_address,
        node_c,
        system.signer(OWNER),
    );
    let manifest = owner_c.manifest(deal, 1).await.unwrap();
    assert_eq!(manifest.chunks.len(), 4);
    for (i, entry) in manifest.chunks.iter().enumerate() {
        let chunk = owner_c
            .get_chunk(deal, 1, i as u32, entry.sha256)
            .await
            .unwrap();
        assert_eq!(chunk, replicas[1][i], "chunk {i}");
        // Unmasked with replica 1's key, it is the ciphertext again.
        let mut unmasked = chunk;
        secret.mask_key(1).apply(i as u32, &mut unmasked);
        assert_eq!(unmasked, ciphertext[i]);
    }

    // Run again (as after a crash): nothing moves, nothing is sent.
    let again = repairer.rebuild(&job, &secret).await.unwrap();
    assert!(!again.moved);
    assert_eq!(again.sent_chunks, 0);

    // A healthy replica served damaged is refused before anything moves: replica 0 damaged on
    // A's disk cannot rebuild replica 1 anywhere.
    let store = agent_a.agent().chunk_store().unwrap().clone();
    let path = store.chunk_path(&manifest_hash(&owner_a, deal).await);
    let mut damaged = std::fs::read(&path).unwrap();
    damaged[10] ^= 0x01;
    std::fs::write(&path, &damaged).unwrap();
    let error = repairer.rebuild(&job, &secret).await.unwrap_err();
    assert!(matches!(error, RepairError::Node(_)), "{error}");
    assert_eq!(on_chain(1).await.nodeId, node_c);

    agent_a.stop().await;
    agent_c.stop().await;
}

/// The hash of replica 0's first chunk on its node.
async fn manifest_hash(client: &NodeClient, deal: u64) -> B256 {
    client.manifest(deal, 0).await.unwrap().chunks[0].sha256
}
