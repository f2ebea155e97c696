//! Chunk API benchmark (not a test): three node agents in the storage role on loopback, each
//! holding one replica of a StorageMarket deal on anvil; the deal's owner uploads the three
//! replicas in parallel with the SDK's `NodeClient` (1 MiB chunks, each signed and hashed) and
//! reads one replica back, every chunk checked against its hash. Sizes: 100 MiB and 1 GiB.
//! The chunks are not encrypted: this measures the nodes and the transport, not the client's
//! cipher.
//!
//! Run: `cargo run --release -p decloud-node-agent --example storage_bench`

use std::time::Instant;

use alloy::{
    primitives::{B256, U256},
    providers::Provider,
};
use decloud_node_agent::{
    ConfigLayer, DomainType, Identity, NetworkConfig, RunningAgent, StorageLayer,
};
use decloud_sdk::{
    agent_protocol::{self, NodeResources},
    bindings::{MockUSDC, NodeRegistry, StorageMarket, node_registry::INodeRegistry},
    storage::{NodeClient, SEGMENT_BYTES, sha256},
    testing::{SendOk as _, TestSystem},
};

const CHUNK: usize = 1 << 20;
const SIZES_MIB: [u32; 2] = [100, 1024];
const OPERATOR: usize = 3;
const OWNER: usize = 5;

fn resources() -> NodeResources {
    NodeResources {
        arch: std::env::consts::ARCH.into(),
        cpu_model: "bench".into(),
        cpu_cores: 2,
        memory_mib: 2048,
        disks: vec![],
        vm_storage_free_bytes: 1 << 30,
        gpus: vec![],
        compute_points: 100,
    }
}

/// Chunk `index` of the benchmark file: bytes from a xorshift stream seeded by the index.
fn chunk(index: u32) -> Vec<u8> {
    let mut x = u64::from(index) * 0x9e37_79b9_7f4a_7c15 + 1;
    let mut out = Vec::with_capacity(CHUNK);
    while out.len() < CHUNK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

async fn register(system: &TestSystem, machine: &str, key: alloy::primitives::Address) -> B256 {
    let p = system.provider(OPERATOR);
    let registry = NodeRegistry::new(system.deployment.contracts.node_registry.address, &p);
    let machine = agent_protocol::machine_id(machine);
    registry
        .register(
            machine,
            key,
            "bench".into(),
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

#[tokio::main]
async fn main() {
    let system = TestSystem::start()
        .await
        .expect("anvil with the system deployed");
    let market_address = system.deployment.contracts.storage_market.address;
    let chain_id = system.provider(0).get_chain_id().await.unwrap();
    let dirs: Vec<_> = (0..3)
        .map(|_| {
            tempfile::Builder::new()
                .prefix("decloud-storage-bench-")
                .tempdir_in("/var/tmp")
                .unwrap()
        })
        .collect();
    let mut agents = Vec::new();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let machine = format!("storage-bench-{i}");
        let layer = ConfigLayer {
            data_dir: Some(dir.path().join("data")),
            libvirt_uri: Some("test:///default".into()),
            domain_type: Some(DomainType::Qemu),
            operator: Some(system.address(OPERATOR)),
            machine_id: Some(machine.clone()),
            network: Some(NetworkConfig::User),
            storage: Some(StorageLayer {
                listen: Some("127.0.0.1:0".into()),
                quota_bytes: Some(2 << 30),
                dir: None,
                rpc_url: Some(system.rpc_url().to_string()),
                storage_market: Some(market_address),
                public_url: None,
                proving_keys: None,
                drain: None,
            }),
            ..Default::default()
        };
        let config = decloud_node_agent::Config::resolve(None, layer, ConfigLayer::default())
            .expect("bench config");
        let (identity, _) = Identity::load_or_create(&config).unwrap();
        nodes.push(register(&system, &machine, identity.address()).await);
        agents.push(
            RunningAgent::start_with(config, identity, resources())
                .await
                .expect("agent in the storage role"),
        );
    }
    let owner = system.provider(OWNER);
    MockUSDC::new(system.deployment.usdc, &owner)
        .approve(market_address, U256::MAX)
        .send_ok()
        .await;
    let market = StorageMarket::new(market_address, &owner);
    let clients: Vec<NodeClient> = agents
        .iter()
        .zip(&nodes)
        .map(|(agent, node)| {
            NodeClient::new(
                format!("http://{}", agent.storage_address().unwrap())
                    .parse()
                    .unwrap(),
                chain_id,
                market_address,
                *node,
                system.signer(OWNER),
            )
        })
        .collect();

    println!("| file | replicas | put (s) | put (MB/s of file) | get (s) | get (MB/s) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (run, mib) in SIZES_MIB.into_iter().enumerate() {
        let bytes = u64::from(mib) << 20;
        let roots: Vec<U256> = (1..=3u64)
            .map(|r| U256::from(100 * run as u64 + r))
            .collect();
        market
            .createDeal(nodes.clone(), roots, bytes / SEGMENT_BYTES, 1, 1000)
            .send_ok()
            .await;
        let deal: u64 = market.dealCount().call().await.unwrap().to();
        let hashes: Vec<B256> = (0..mib).map(|i| sha256(&chunk(i))).collect();

        let started = Instant::now();
        let uploads = clients.iter().enumerate().map(|(replica, client)| {
            client.upload_replica(deal, replica as u32, mib, chunk, |_| {})
        });
        for stats in futures_util::future::join_all(uploads).await {
            assert_eq!(stats.expect("upload").sent_chunks, u64::from(mib));
        }
        let put = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut read = 0u64;
        for (index, hash) in hashes.iter().enumerate() {
            read += clients[0]
                .get_chunk(deal, 0, index as u32, *hash)
                .await
                .expect("chunk")
                .len() as u64;
        }
        let get = started.elapsed().as_secs_f64();
        assert_eq!(read, bytes);
        let mb = bytes as f64 / 1e6;
        println!(
            "| {mib} MiB | 3 | {put:.2} | {:.0} | {get:.2} | {:.0} |",
            mb / put,
            mb / get
        );
        for (replica, client) in clients.iter().enumerate() {
            client.delete_replica(deal, replica as u32).await.unwrap();
        }
    }
    for agent in agents {
        agent.stop().await;
    }
}
