//! Storage client benchmark (not a test): `StorageClient::put` and `get` of a file with three
//! replicas on three node agents in the storage role on loopback, the deal on anvil. Put is
//! split into its phases: encrypt and commit (AES-256-GCM once, then per replica the ChaCha20
//! mask, SHA-256 and the Poseidon leaf hashes, then each replica's Merkle tree), the deal's
//! transactions, and the upload.
//!
//! Run: `cargo run --release -p decloud-cli --example storage_client_bench -- 100 max`
//! (sizes in MiB, or `max` for the largest file one deal holds, 16 KiB under 1 GiB; default
//! 100).

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use alloy::primitives::Address;
use decloud_node_agent::{
    ConfigLayer, DomainType, Identity, NetworkConfig, RunningAgent, StorageLayer,
};
use decloud_sdk::{
    agent_protocol::{self, NodeResources},
    bindings::{NodeRegistry, node_registry::INodeRegistry},
    deploy::STORAGE_MAX_SEGMENTS,
    storage::{
        Phase, Progress, ProgressFn, PutOptions, StorageClient, StorageNode,
        encoding::max_file_bytes,
    },
    testing::{SendOk as _, TestSystem},
};

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

async fn register(system: &TestSystem, machine: &str, key: Address) -> alloy::primitives::B256 {
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

/// A file of `bytes` bytes (a multiple of 8) of xorshift bytes.
fn write_file(path: &std::path::Path, bytes: u64) {
    use std::io::Write as _;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..bytes / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        file.write_all(&x.to_le_bytes()).unwrap();
    }
    file.flush().unwrap();
}

#[tokio::main]
async fn main() {
    // (bytes, how the table names the size)
    let sizes: Vec<(u64, String)> = std::env::args()
        .skip(1)
        .map(|a| {
            if a == "max" {
                let bytes = max_file_bytes(STORAGE_MAX_SEGMENTS);
                let under = ((1 << 30) - bytes) >> 10;
                (
                    bytes,
                    format!("1 GiB − {under} KiB (the most a deal holds)"),
                )
            } else {
                let mib: u64 = a.parse().expect("sizes in MiB, or max");
                (mib << 20, format!("{mib} MiB"))
            }
        })
        .collect();
    let sizes = if sizes.is_empty() {
        vec![(100 << 20, "100 MiB".to_owned())]
    } else {
        sizes
    };
    let system = TestSystem::start()
        .await
        .expect("anvil with the system deployed");
    let market = system.deployment.contracts.storage_market.address;
    let work = tempfile::Builder::new()
        .prefix("decloud-sclient-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let mut agents = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let machine = format!("sclient-bench-{i}");
        let layer = ConfigLayer {
            data_dir: Some(work.path().join(format!("node-{i}"))),
            libvirt_uri: Some("test:///default".into()),
            domain_type: Some(DomainType::Qemu),
            operator: Some(system.address(OPERATOR)),
            machine_id: Some(machine.clone()),
            network: Some(NetworkConfig::User),
            storage: Some(StorageLayer {
                listen: Some("127.0.0.1:0".into()),
                quota_bytes: Some(4 << 30),
                dir: None,
                rpc_url: Some(system.rpc_url().to_string()),
                storage_market: Some(market),
                public_url: None,
                proving_keys: None,
                drain: None,
            }),
            ..Default::default()
        };
        let config = decloud_node_agent::Config::resolve(None, layer, ConfigLayer::default())
            .expect("bench config");
        let (identity, _) = Identity::load_or_create(&config).unwrap();
        let node = register(&system, &machine, identity.address()).await;
        let agent = RunningAgent::start_with(config, identity, resources())
            .await
            .expect("agent in the storage role");
        nodes.push(StorageNode {
            node,
            url: format!("http://{}", agent.storage_address().unwrap())
                .parse()
                .unwrap(),
        });
        agents.push(agent);
    }
    let client = StorageClient::new(
        system.provider(OWNER),
        system.signer(OWNER),
        &system.deployment,
        work.path().join("index"),
    )
    .await
    .unwrap();

    println!(
        "| file | replicas | put (s) | put (MB/s of file) | of which encrypt + commit (s) | deal txs (s) | upload (s) | get (s) | get (MB/s) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (bytes, label) in sizes {
        let path = work.path().join(format!("file-{bytes}.bin"));
        write_file(&path, bytes);
        // When each phase was first and last seen.
        let marks: Arc<Mutex<Vec<(Phase, Instant)>>> = Arc::default();
        let seen = marks.clone();
        let progress: ProgressFn = Arc::new(move |p: Progress| {
            seen.lock().unwrap().push((p.phase, Instant::now()));
        });
        let options = PutOptions {
            name: None,
            replicas: 3,
            epochs: 1000,
            price_per_epoch: 1,
        };
        let started = Instant::now();
        let record = client
            .put(&path, &options, &nodes, progress)
            .await
            .expect("put");
        let put = started.elapsed().as_secs_f64();
        let marks = marks.lock().unwrap().clone();
        let last = |phase| {
            marks
                .iter()
                .rev()
                .find(|(p, _)| *p == phase)
                .map(|(_, t)| *t)
        };
        let first = |phase| marks.iter().find(|(p, _)| *p == phase).map(|(_, t)| *t);
        let commit_end = last(Phase::Tree).unwrap();
        let upload_start = first(Phase::Upload).unwrap();
        let commit = (commit_end - started).as_secs_f64();
        let upload = (last(Phase::Upload).unwrap() - upload_start).as_secs_f64();
        let deal_txs = put - commit - upload;

        let out = work.path().join(format!("back-{bytes}.bin"));
        let started = Instant::now();
        client
            .get(&record.name, &out, Arc::new(|_: Progress| {}))
            .await
            .expect("get");
        let get = started.elapsed().as_secs_f64();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), bytes);
        let mb = bytes as f64 / 1e6;
        println!(
            "| {label} | 3 | {put:.1} | {:.1} | {commit:.1} | {deal_txs:.1} | {upload:.1} | {get:.2} | {:.0} |",
            mb / put,
            mb / get
        );
        client.remove(&record.name).await.expect("remove");
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&out).unwrap();
    }
    for agent in agents {
        agent.stop().await;
    }
}
