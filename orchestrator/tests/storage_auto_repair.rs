//! The storage network end to end, on anvil with the real contracts (development circuit, 20-block
//! epochs), four node agents in the storage role on loopback connected to the real orchestrator
//! with a repair key, and the owner's client from the SDK (what `decloud storage` runs).
//!
//! The owner asks the orchestrator where to put a file, puts it with three replicas, names the
//! orchestrator's repairer on-chain and registers the deal's repair secret over HTTP. For three
//! epochs every replica is proven on-chain by its own node; `get` returns identical bytes. Then a
//! replica fails (bytes flipped in one chunk on its node's disk, or its node killed): it is not
//! proven and earns nothing, and the orchestrator alone rebuilds it on the fourth node, which
//! proves it from then on (a client that cannot reach the chain still gets identical bytes from
//! the nodes in its record). A client that cannot ask the orchestrator skips the moved replica and
//! still gets identical bytes from the others; the owner's own client follows the deal on-chain,
//! finds the new node's chunk API at the orchestrator (`GET /storage/nodes/{id}`), saves it in
//! its record and gets identical bytes from the rebuilt replica alone. The owner follows the
//! repair through `GET /storage/deals/{id}/repairs`, and the failing node's storage proof rate,
//! counted by the orchestrator from StorageMarket's proofs, drops below the healthy nodes' and
//! keeps it out of the featured nodes.
//!
//! The owner's `rm` (as `decloud storage rm` runs it) of a deal proven in part refunds exactly
//! the replica-epochs no node proved, by arithmetic from the deal's terms and the chain's
//! EpochProven events; a deal whose paid epochs are used up refuses more uploads, still serves
//! `get`, and settles on `rm`.
//!
//! The file is small in CI; `scripts/test --long` runs the 100 MiB variants (`#[ignore]`d here).

use std::{sync::Arc, time::Duration};

use alloy::{
    primitives::{Address, B256, U256},
    providers::{Provider, ext::AnvilApi},
    rpc::types::Filter,
    signers::Signer as _,
    sol_types::SolEvent,
};
use decloud_node_agent::{
    ConfigLayer, DomainType, Identity, NetworkConfig, RunningAgent, StorageLayer,
};
use decloud_orchestrator::{
    Config,
    config::{ChainConfig, RepairConfig, SiweConfig},
};
use decloud_sdk::{
    agent_protocol::{self, NodeResources},
    bindings::{MockUSDC, NodeRegistry, StorageMarket, node_registry::INodeRegistry},
    storage::{
        FileRecord, FollowNote, NodeClient, NodeSource, Progress, ProgressFn, PutOptions,
        RepairSetup, StorageClient, StorageCoordinator, StorageError,
        encoding::{FileId, MasterKey},
    },
    testing::{SendOk as _, TestSystem},
};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

const OWNER: usize = 5;
const STRANGER: usize = 6;
const REPAIR_KEY: usize = 7;
/// Each node has its own operator, so each node's earnings are its own.
const OPERATORS: [usize; 4] = [1, 2, 3, 4];
const DOMAIN: &str = "app.decloud.test";
const URI: &str = "https://app.decloud.test";
const PRICE: u64 = 1_000;
/// A CI-sized file: three full 1 MiB chunks and a short one.
const SMALL_FILE: usize = 3 * (1 << 20) + 12_345;
const LARGE_FILE: usize = 100 << 20;

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

/// Waits (at most `secs` seconds) until `check` holds.
async fn until<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..secs * 2 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A free loopback port (the chunk API's URL must be known before the agent starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    id: B256,
    operator: Address,
    url: url::Url,
    agent: Option<RunningAgent>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn agent(&self) -> &RunningAgent {
        self.agent.as_ref().expect("the agent runs")
    }

    async fn stop(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
    }
}

struct Network {
    system: TestSystem,
    nodes: Vec<Node>,
    orchestrator: Option<decloud_orchestrator::Running>,
    api: String,
    http: reqwest::Client,
    work: tempfile::TempDir,
    owner: StorageClient,
    _db: tempfile::TempDir,
}

impl Network {
    /// Anvil, the orchestrator (repairing with REPAIR_KEY, watching every second) and four
    /// storage agents connected to it, each with `quota` bytes; returns once the orchestrator has
    /// every node's storage report.
    async fn start(quota: u64) -> Self {
        // The repair watcher's and the agents' words, shown when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "warn,orchestrator::repair=info,decloud_node_agent=info",
            ))
            .with_test_writer()
            .try_init();
        let system = TestSystem::start().await.unwrap();
        let c = &system.deployment.contracts;
        let db = tempfile::tempdir().unwrap();
        let config = Config {
            database_url: format!("sqlite:{}", db.path().join("o.db").display()),
            siwe: SiweConfig {
                domains: vec![DOMAIN.into()],
                uris: vec![URI.into()],
                chain_ids: vec![31337],
                ..SiweConfig::default()
            },
            signin_burst: 1_000,
            chain: Some(ChainConfig {
                rpc_url: system.rpc_url().to_string(),
                node_registry: c.node_registry.address.to_string(),
                lease_escrow: c.lease_escrow.address.to_string(),
                template_market: None,
                storage_market: Some(c.storage_market.address.to_string()),
                start_block: 0,
                confirmations: 0,
                image: "base".into(),
                grace_secs: 60,
                reconnect_grace_secs: 0,
                sla_window_secs: 1800,
            }),
            repair: Some(RepairConfig {
                watch_interval_secs: 1,
                offline_after_secs: 20,
                retry_base_secs: 1,
                retry_max_secs: 4,
                ..RepairConfig::default()
            }),
            ..Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let orchestrator = decloud_orchestrator::start_with_keys(
            config,
            listener,
            None,
            Some(system.signer(REPAIR_KEY)),
        )
        .await
        .unwrap();
        let api = orchestrator.api_url();
        let ws = orchestrator.agent_ws_url();
        let mut nodes = Vec::new();
        for (i, &operator) in OPERATORS.iter().enumerate() {
            nodes
                .push(start_node(&system, &ws, operator, &format!("auto-repair-{i}"), quota).await);
        }
        let work = tempfile::tempdir().unwrap();
        // The owner's client asks the orchestrator where a moved replica's node serves.
        let owner = StorageClient::new(
            system.provider(OWNER),
            system.signer(OWNER),
            &system.deployment,
            work.path().join("index"),
        )
        .await
        .unwrap()
        .with_coordinator(StorageCoordinator::new(
            api.trim_end_matches("/api/v1").parse().unwrap(),
        ));
        let net = Self {
            system,
            nodes,
            orchestrator: Some(orchestrator),
            api,
            http: reqwest::Client::new(),
            work,
            owner,
            _db: db,
        };
        until("the orchestrator knows every storage node", 120, || async {
            net.get_json("/storage/placement?replicas=4&bytes=1", None)
                .await
                .0
                == 200
        })
        .await;
        // Bad questions are refused clearly; more replicas than nodes is a conflict that says why.
        for bad in [
            "replicas=0&bytes=1",
            "replicas=2&bytes=x",
            "replicas=2&bytes=1&exclude=0x12",
        ] {
            let (status, body) = net
                .get_json(&format!("/storage/placement?{bad}"), None)
                .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (400, Some("invalid_query")),
                "{bad}: {body}"
            );
        }
        let (status, body) = net
            .get_json("/storage/placement?replicas=5&bytes=1", None)
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "not_enough_storage_nodes");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("4 can take one"), "{message}");
        // Each storage node's chunk API and state, over HTTP; unknown and malformed ids refused.
        for node in &net.nodes {
            let (status, view) = net
                .get_json(&format!("/storage/nodes/{}", node.id), None)
                .await;
            assert_eq!(status, 200, "{view}");
            assert_eq!(view["node_id"], node.id.to_string());
            let url: url::Url = view["url"].as_str().unwrap().parse().unwrap();
            assert_eq!(url, node.url, "{view}");
            assert_eq!(view["status"], "active");
            assert_eq!(view["online"], true);
            assert_eq!(view["draining"], false);
        }
        let (status, body) = net
            .get_json(&format!("/storage/nodes/{}", B256::repeat_byte(0x5a)), None)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{body}"
        );
        let (status, body) = net.get_json("/storage/nodes/0x12", None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_node_id")),
            "{body}"
        );
        let (status, body) = net
            .get_json(
                &format!("/storage/placement?replicas=2&bytes={}", quota + 1),
                None,
            )
            .await;
        assert_eq!(status, 409, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("4 too little free space"),
            "{body}"
        );
        net
    }

    async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.api));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post_json(&self, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.api))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Signs in with SIWE as anvil account `who`; the bearer token.
    async fn sign_in(&self, who: usize) -> String {
        let signer = self.system.signer(who);
        let (_, nonce) = self.post_json("/auth/nonce", json!({}), None).await;
        let issued = OffsetDateTime::now_utc().format(&Rfc3339).unwrap();
        let message = format!(
            "{DOMAIN} wants you to sign in with your Ethereum account:\n{}\n\nSign in to DeCloud.\n\n\
             URI: {URI}\nVersion: 1\nChain ID: 31337\nNonce: {}\nIssued At: {issued}",
            signer.address().to_checksum(None),
            nonce["nonce"].as_str().unwrap()
        );
        let sig = signer.sign_message(message.as_bytes()).await.unwrap();
        let (status, body) = self
            .post_json(
                "/auth/verify",
                json!({ "message": message, "signature": format!("0x{}", hex::encode(sig.as_bytes())) }),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    fn market(&self) -> StorageMarket::StorageMarketInstance<alloy::providers::DynProvider> {
        StorageMarket::new(
            self.system.deployment.contracts.storage_market.address,
            self.system.provider(0),
        )
    }

    async fn replica_node(&self, deal: u64, replica: usize) -> B256 {
        self.market()
            .getReplicas(U256::from(deal))
            .call()
            .await
            .unwrap()[replica]
            .nodeId
    }

    async fn is_proven(&self, deal: u64, replica: usize, epoch: u32) -> bool {
        self.market()
            .isProven(U256::from(deal), U256::from(replica), epoch)
            .call()
            .await
            .unwrap()
    }

    async fn earnings(&self, payee: Address) -> U256 {
        self.market().earningsOf(payee).call().await.unwrap()
    }

    /// Mines until epoch `epoch` of the deal has begun and its first block is readable.
    async fn enter_epoch(&self, deal: u64, epoch: u32) {
        let start: u64 = self
            .market()
            .epochStartBlock(U256::from(deal), epoch)
            .call()
            .await
            .unwrap()
            .to();
        let reader = self.system.provider(0);
        let now = reader.get_block_number().await.unwrap();
        if start + 1 > now {
            reader
                .anvil_mine(Some(start + 1 - now), None)
                .await
                .unwrap();
        }
    }

    /// Waits until each of `replicas` is proven for `epoch`, by its node alone.
    async fn proven_by_their_nodes(&self, deal: u64, replicas: &[usize], epoch: u32) {
        for &replica in replicas {
            until(
                &format!("replica {replica} is proven for epoch {epoch}"),
                120,
                || self.is_proven(deal, replica, epoch),
            )
            .await;
        }
    }

    /// Flips a byte of chunk `chunk` of `replica` on its node's disk.
    fn flip_chunk(&self, record: &FileRecord, replica: usize, chunk: usize) {
        let index = self.node_index(record.replicas[replica].node);
        let store = self.nodes[index]
            .agent()
            .agent()
            .chunk_store()
            .unwrap()
            .clone();
        let path = store.chunk_path(&record.replicas[replica].chunk_sha256[chunk]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[777] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
    }

    /// Waits until node `index` reports that it cannot prove its replica of `deal` because a
    /// chunk is corrupt.
    async fn reports_corrupt(&self, index: usize, deal: u64) {
        let agent = self.nodes[index].agent();
        until(
            "the damaged node reports why it cannot prove",
            120,
            || async {
                agent
                    .agent()
                    .heartbeat(1)
                    .await
                    .unwrap()
                    .storage
                    .unwrap()
                    .proofs
                    .iter()
                    .any(|p| {
                        p.deal == deal && p.error.as_deref().is_some_and(|e| e.contains("corrupt"))
                    })
            },
        )
        .await;
    }

    /// Puts `data` as `name` with three replicas as `decloud storage put` does without `--node`:
    /// the client asks the orchestrator's placement for the nodes, then names the orchestrator's
    /// repairer on-chain and registers the deal's repair secret with it. Returns the record.
    async fn put(&self, name: &str, data: &[u8], epochs: u32, price: u64) -> FileRecord {
        let file = self.work.path().join(name);
        std::fs::write(&file, data).unwrap();
        let base = self.api.trim_end_matches("/api/v1");
        let token = self.sign_in(OWNER).await;
        let coordinator = StorageCoordinator::new(base.parse().unwrap()).with_session(token);
        let record = self
            .owner
            .put_with(
                &file,
                &PutOptions {
                    name: Some(name.into()),
                    replicas: 3,
                    epochs,
                    price_per_epoch: price,
                },
                NodeSource::Placement {
                    coordinator: &coordinator,
                    region: None,
                },
                no_progress(),
            )
            .await
            .unwrap();
        std::fs::remove_file(&file).unwrap();
        let deal = record.deal.unwrap();
        assert_eq!(record.replicas.len(), 3, "{record:?}");

        let record = self.owner.set_up_repair(name, &coordinator).await.unwrap();
        let repairer = self.system.address(REPAIR_KEY);
        assert_eq!(
            record.repair,
            RepairSetup::Registered { repairer },
            "{record:?}"
        );
        // On-chain, the deal names the orchestrator's repairer.
        let named = self
            .market()
            .repairerOf(U256::from(deal))
            .call()
            .await
            .unwrap();
        assert_eq!(named, repairer);
        // The registration is the orchestrator's: a second one by the owner is accepted again
        // or refused, but never by a stranger.
        let stranger = self.sign_in(STRANGER).await;
        let chain_id = self.system.provider(0).get_chain_id().await.unwrap();
        let secret = MasterKey::derive(&self.system.signer(OWNER), chain_id)
            .unwrap()
            .repair_secret(&FileId(record.file_id));
        let (status, body) = self
            .post_json(
                &format!("/storage/deals/{deal}/repair"),
                json!({ "secret": hex::encode(secret.to_bytes()) }),
                Some(&stranger),
            )
            .await;
        assert!((400..500).contains(&status), "{status} {body}");
        record
    }

    /// `get` of the file into a fresh path; its bytes.
    async fn get(&self, name: &str) -> Vec<u8> {
        let out = self.work.path().join(format!("{name}.out"));
        let _ = std::fs::remove_file(&out);
        self.owner.get(name, &out, no_progress()).await.unwrap();
        let bytes = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        bytes
    }

    fn node_index(&self, id: B256) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    /// The owner's repair jobs of `deal`.
    async fn repairs(&self, deal: u64, token: &str) -> Vec<Value> {
        let (status, body) = self
            .get_json(&format!("/storage/deals/{deal}/repairs"), Some(token))
            .await;
        assert_eq!(status, 200, "{body}");
        body["jobs"].as_array().unwrap().clone()
    }

    /// Waits for the orchestrator to move `replica` off `from` on its own; the new node, which
    /// must be the one node that held nothing of the deal.
    async fn repaired(&self, deal: u64, replica: usize, from: B256, spare: B256) {
        until(
            &format!("replica {replica} moves off its failed node"),
            240,
            || async { self.replica_node(deal, replica).await != from },
        )
        .await;
        assert_eq!(self.replica_node(deal, replica).await, spare);
        let token = self.sign_in(OWNER).await;
        until("the repair job is done", 60, || async {
            self.repairs(deal, &token)
                .await
                .first()
                .is_some_and(|j| j["state"] == "done")
        })
        .await;
        let jobs = self.repairs(deal, &token).await;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0]["replica"], replica);
        assert_eq!(jobs[0]["from_node"], from.to_string());
        assert_eq!(jobs[0]["to_node"], spare.to_string());
        assert!(jobs[0]["attempts"].as_u64().unwrap() >= 1);
        // Another wallet learns nothing of the deal's repairs.
        let stranger = self.sign_in(STRANGER).await;
        let (status, _) = self
            .get_json(&format!("/storage/deals/{deal}/repairs"), Some(&stranger))
            .await;
        assert_eq!(status, 404);
    }

    /// Right after the repair, a client of the same wallet and index that cannot ask an
    /// orchestrator sees the moved replica on-chain, skips it with a clear reason, and gets `data`
    /// from the other replicas; the record still names the node the replica left.
    async fn get_without_the_orchestrator(&self, name: &str, replica: usize, data: &[u8]) {
        let left = self.owner.find(name).unwrap().replicas[replica].node;
        let deal = self.owner.find(name).unwrap().deal.unwrap();
        let moved_to = self.replica_node(deal, replica).await;
        assert_ne!(left, moved_to);
        let unaided = StorageClient::new(
            self.system.provider(OWNER),
            self.system.signer(OWNER),
            &self.system.deployment,
            self.work.path().join("index"),
        )
        .await
        .unwrap();
        let listed = unaided.list().await.unwrap();
        let status = listed.iter().find(|f| f.record.name == name).unwrap();
        assert_eq!(status.nodes[replica], moved_to);
        assert!(
            status.notes.iter().any(|n| matches!(
                n,
                FollowNote::Unresolved { replica: r, to, reason }
                    if *r == replica as u32 && *to == moved_to && reason.contains("no orchestrator")
            )),
            "{:?}",
            status.notes
        );
        let out = self.work.path().join(format!("{name}.unaided"));
        unaided.get(name, &out, no_progress()).await.unwrap();
        assert!(
            std::fs::read(&out).unwrap() == data,
            "the other replicas return other bytes"
        );
        std::fs::remove_file(&out).unwrap();
        assert_eq!(self.owner.find(name).unwrap().replicas[replica].node, left);
    }

    /// With every other node stopped, the owner's own `get` follows the deal on-chain, finds the
    /// rebuilt replica's node at the orchestrator and returns `data` from it alone (it holds the
    /// whole file); the saved record names the new node from then on.
    async fn get_from_rebuilt_replica_alone(&mut self, name: &str, replica: usize, data: &[u8]) {
        let record = self.owner.find(name).unwrap();
        let deal = record.deal.unwrap();
        let node = self.replica_node(deal, replica).await;
        assert_ne!(
            record.replicas[replica].node, node,
            "the record already names the new node before any get followed the deal"
        );
        let index = self.node_index(node);
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if i != index {
                n.stop().await;
            }
        }
        assert!(
            self.get(name).await == data,
            "the rebuilt replica returns other bytes"
        );
        let saved = self.owner.find(name).unwrap();
        assert_eq!(saved.replicas[replica].node, node);
        assert_eq!(saved.replicas[replica].url, self.nodes[index].url);
        // The next get needs no lookup: the stored record names the node.
        assert!(self.get(name).await == data);
    }

    async fn stop(mut self) {
        for node in &mut self.nodes {
            node.stop().await;
        }
        if let Some(o) = self.orchestrator.take() {
            o.stop().await.unwrap();
        }
    }
}

fn no_progress() -> ProgressFn {
    Arc::new(|_: Progress| {})
}

async fn register(system: &TestSystem, operator: usize, machine: &str, key: Address) -> B256 {
    let p = system.provider(operator);
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
        .computeNodeId(machine, system.address(operator))
        .call()
        .await
        .unwrap()
}

/// A storage agent of `operator`, registered on-chain, connected to the orchestrator at `ws`.
async fn start_node(
    system: &TestSystem,
    ws: &str,
    operator: usize,
    machine: &str,
    quota: u64,
) -> Node {
    let dir = tempfile::Builder::new()
        .prefix("decloud-auto-repair-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let port = free_port();
    let layer = ConfigLayer {
        data_dir: Some(dir.path().join("data")),
        libvirt_uri: Some("test:///default".into()),
        domain_type: Some(DomainType::Qemu),
        operator: Some(system.address(operator)),
        machine_id: Some(machine.into()),
        network: Some(NetworkConfig::User),
        orchestrator_url: Some(ws.to_string()),
        storage: Some(StorageLayer {
            listen: Some(format!("127.0.0.1:{port}")),
            quota_bytes: Some(quota),
            dir: None,
            rpc_url: Some(system.rpc_url().to_string()),
            storage_market: Some(system.deployment.contracts.storage_market.address),
            public_url: Some(format!("http://127.0.0.1:{port}")),
            proving_keys: None,
            drain: None,
        }),
        ..Default::default()
    };
    let config = decloud_node_agent::Config::resolve(None, layer, ConfigLayer::default()).unwrap();
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    let id = register(system, operator, machine, identity.address()).await;
    assert_eq!(id, identity.node_id);
    // The node key pays the gas of its proofs.
    system
        .provider(0)
        .anvil_set_balance(identity.address(), U256::from(10u128.pow(20)))
        .await
        .unwrap();
    let agent = RunningAgent::start_with(config, identity, resources())
        .await
        .unwrap();
    Node {
        id,
        operator: system.address(operator),
        url: format!("http://127.0.0.1:{port}").parse().unwrap(),
        agent: Some(agent),
        _dir: dir,
    }
}

/// A TCP relay to anvil that can be cut: the chain as a client behind a failing link sees it.
struct ChainLink {
    url: url::Url,
    relay: tokio::task::JoinHandle<()>,
}

impl ChainLink {
    async fn open(to: &url::Url) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = format!("{}:{}", to.host_str().unwrap(), to.port().unwrap());
        let relay = tokio::spawn(async move {
            // Dropped with the task when the link is cut: every connection through it closes.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}").parse().unwrap(),
            relay,
        }
    }

    /// Cuts the link: nothing through it reaches the chain any more.
    async fn cut(self) {
        self.relay.abort();
        let _ = self.relay.await;
    }
}

/// A file of `bytes` pseudo-random bytes.
fn file_bytes(bytes: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Puts a file and sees three epochs proven by the nodes themselves and identical bytes back.
/// Returns the network, the record and the data; the fourth node is the spare.
async fn stored_and_proven(size: usize, name: &str) -> (Network, FileRecord, Vec<u8>, B256) {
    let quota = (size as u64 + (8 << 20)) * 2;
    let net = Network::start(quota).await;
    let data = file_bytes(size);
    let record = net.put(name, &data, 40, PRICE).await;
    let deal = record.deal.unwrap();
    let placed: Vec<B256> = record.replicas.iter().map(|r| r.node).collect();
    let spare = net
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| !placed.contains(id))
        .unwrap();
    for epoch in 0..3u32 {
        net.enter_epoch(deal, epoch).await;
        net.proven_by_their_nodes(deal, &[0, 1, 2], epoch).await;
    }
    // Proven by each node's own key: every replica's node holds an earning for three epochs.
    for node in &placed {
        let payee = net.nodes[net.node_index(*node)].operator;
        assert!(net.earnings(payee).await > U256::ZERO);
    }
    assert!(net.get(name).await == data, "get returned other bytes");

    // Where the chain cannot be read, get still works from the nodes in the record.
    let link = ChainLink::open(&net.system.rpc_url()).await;
    let cut_off = StorageClient::new(
        decloud_sdk::tx::signing_provider(link.url.clone(), net.system.signer(OWNER)),
        net.system.signer(OWNER),
        &net.system.deployment,
        net.work.path().join("index"),
    )
    .await
    .unwrap();
    link.cut().await;
    // The chain really is out of its reach: ls, which needs the deal's state, fails.
    assert!(cut_off.list().await.is_err());
    let out = net.work.path().join(format!("{name}.cut-off"));
    cut_off.get(name, &out, no_progress()).await.unwrap();
    assert!(
        std::fs::read(&out).unwrap() == data,
        "get without the chain returned other bytes"
    );
    std::fs::remove_file(&out).unwrap();
    (net, record, data, spare)
}

async fn flipped_chunk_is_repaired_to_the_spare_node(size: usize) {
    let (mut net, record, data, spare) = stored_and_proven(size, "flipped.bin").await;
    let deal = record.deal.unwrap();
    let failing = record.replicas[0].node;
    let failing_index = net.node_index(failing);
    let payee = net.nodes[failing_index].operator;

    // Flip bytes of one chunk of replica 0 on its node's disk.
    net.flip_chunk(&record, 0, 1);
    let earned = net.earnings(payee).await;

    // Epoch 3: the other replicas are proven, the damaged one is not, and its node says why.
    net.enter_epoch(deal, 3).await;
    net.proven_by_their_nodes(deal, &[1, 2], 3).await;
    net.reports_corrupt(failing_index, deal).await;
    assert!(!net.is_proven(deal, 0, 3).await);

    // Epochs 4 and 5: once two closed epochs are missed the market lets the repairer move the
    // replica, and the orchestrator rebuilds it on the spare node by itself.
    net.enter_epoch(deal, 4).await;
    net.proven_by_their_nodes(deal, &[1, 2], 4).await;
    assert!(!net.is_proven(deal, 0, 4).await);
    net.enter_epoch(deal, 5).await;
    net.repaired(deal, 0, failing, spare).await;
    assert_eq!(
        net.earnings(payee).await,
        earned,
        "a missed epoch earned nothing"
    );
    net.get_without_the_orchestrator("flipped.bin", 0, &data)
        .await;

    // The spare node proves the replica from then on, with its own key.
    net.proven_by_their_nodes(deal, &[1, 2], 5).await;
    let spare_payee = net.nodes[net.node_index(spare)].operator;
    net.enter_epoch(deal, 6).await;
    net.proven_by_their_nodes(deal, &[0, 1, 2], 6).await;
    let replicas = net
        .market()
        .getReplicas(U256::from(deal))
        .call()
        .await
        .unwrap();
    assert_eq!(replicas[0].payee, spare_payee);
    let spare_earned = net.earnings(spare_payee).await;
    assert!(
        spare_earned > U256::ZERO,
        "the spare node's operator {spare_payee} earned nothing; replicas {replicas:?}"
    );
    assert_eq!(net.earnings(payee).await, earned);

    // The orchestrator counts each node's proof record from the market's proofs: the failing
    // node proved epochs 0 to 2 and missed 3 and 4 before its replica moved (3 of 5), the
    // healthy nodes proved every epoch due. Its own heartbeat report has no say in it.
    until(
        "the failing node's proof rate counted from the chain is in its reputation",
        60,
        || async {
            let (_, listing) = net.get_json(&format!("/nodes/{failing}"), None).await;
            listing["reputation"]["storage_proof_rate_bps"].as_u64() == Some(6_000)
        },
    )
    .await;
    let (_, view) = net
        .get_json(&format!("/storage/nodes/{failing}"), None)
        .await;
    assert_eq!(view["proof_rate_bps"], 6_000, "{view}");
    for healthy in [record.replicas[1].node, record.replicas[2].node] {
        let (_, listing) = net.get_json(&format!("/nodes/{healthy}"), None).await;
        assert_eq!(
            listing["reputation"]["storage_proof_rate_bps"], 10_000,
            "{listing}"
        );
    }
    // A node that misses its proofs is not featured, however long it stays online.
    let (status, featured) = net.get_json("/nodes/featured", None).await;
    assert_eq!(status, 200, "{featured}");
    let featured: Vec<&str> = featured
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["node_id"].as_str())
        .collect();
    assert!(
        !featured.contains(&failing.to_string().as_str()),
        "{featured:?}"
    );

    net.get_from_rebuilt_replica_alone("flipped.bin", 0, &data)
        .await;
    net.stop().await;
}

async fn killed_node_is_repaired_to_the_spare_node(size: usize) {
    let (mut net, record, data, spare) = stored_and_proven(size, "killed.bin").await;
    let deal = record.deal.unwrap();
    let failing = record.replicas[1].node;
    let failing_index = net.node_index(failing);
    let payee = net.nodes[failing_index].operator;
    let earned = net.earnings(payee).await;

    // Kill replica 1's node.
    net.nodes[failing_index].stop().await;
    for epoch in [3u32, 4] {
        net.enter_epoch(deal, epoch).await;
        net.proven_by_their_nodes(deal, &[0, 2], epoch).await;
        assert!(!net.is_proven(deal, 1, epoch).await);
    }
    net.enter_epoch(deal, 5).await;
    net.repaired(deal, 1, failing, spare).await;
    assert_eq!(
        net.earnings(payee).await,
        earned,
        "a missed epoch earned nothing"
    );
    net.get_without_the_orchestrator("killed.bin", 1, &data)
        .await;
    net.proven_by_their_nodes(deal, &[0, 2], 5).await;
    net.enter_epoch(deal, 6).await;
    net.proven_by_their_nodes(deal, &[0, 1, 2], 6).await;
    let spare_payee = net.nodes[net.node_index(spare)].operator;
    assert!(net.earnings(spare_payee).await > U256::ZERO);

    net.get_from_rebuilt_replica_alone("killed.bin", 1, &data)
        .await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_flipped_chunk_is_repaired_by_the_orchestrator_alone() {
    flipped_chunk_is_repaired_to_the_spare_node(SMALL_FILE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_a_killed_node_is_repaired_by_the_orchestrator_alone() {
    killed_node_is_repaired_to_the_spare_node(SMALL_FILE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "100 MiB with three replicas: minutes of Poseidon commitments; scripts/test --long"]
async fn a_100_mib_replica_with_a_flipped_chunk_is_repaired_by_the_orchestrator_alone() {
    flipped_chunk_is_repaired_to_the_spare_node(LARGE_FILE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "100 MiB with three replicas: minutes of Poseidon commitments; scripts/test --long"]
async fn a_100_mib_replica_on_a_killed_node_is_repaired_by_the_orchestrator_alone() {
    killed_node_is_repaired_to_the_spare_node(LARGE_FILE).await;
}

/// The refund test's price per replica per epoch: 5% of it is 50.45 micro-USDC, so every proof's
/// fee is rounded.
const ODD_PRICE: u64 = 1_009;

/// Every `EpochProven` of `deal` on chain: (replica, epoch, payee, node amount, fee).
async fn proofs_on_chain(net: &Network, deal: u64) -> Vec<(u64, u32, Address, U256, U256)> {
    let logs = net
        .system
        .provider(0)
        .get_logs(
            &Filter::new()
                .address(net.system.deployment.contracts.storage_market.address)
                .event_signature(StorageMarket::EpochProven::SIGNATURE_HASH)
                .from_block(0),
        )
        .await
        .unwrap();
    let mut proofs: Vec<_> = logs
        .iter()
        .map(|log| {
            log.log_decode::<StorageMarket::EpochProven>()
                .unwrap()
                .inner
                .data
        })
        .filter(|e| e.dealId == U256::from(deal))
        .map(|e| (e.replica.to::<u64>(), e.epoch, e.payee, e.nodeAmount, e.fee))
        .collect();
    proofs.sort();
    proofs
}

/// `decloud storage rm` of a deal the nodes proved in part, and of a deal whose paid epochs are
/// used up. The first deal (6 epochs, 3 replicas) is proven by all three nodes for epochs 0 and
/// 1; then a chunk of replica 0 is flipped on its node's disk, so epochs 2 and 3 are proven for
/// replicas 1 and 2 only; in epoch 3 the owner removes the file (the deal ends after epoch 3),
/// and once it has ended removes it again, which settles it. The refund is checked against
/// arithmetic from the deal's terms and the EpochProven events alone, then every unit of both
/// deposits is followed to the owner, the nodes' operators and the treasury.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_refunds_exactly_the_replica_epochs_the_nodes_did_not_prove() {
    let net = Network::start(16 << 20).await;
    let p = net.system.provider(0);
    let usdc = MockUSDC::new(net.system.deployment.usdc, &p);
    let market_address = net.system.deployment.contracts.storage_market.address;
    let owner = net.system.address(OWNER);
    let funded = usdc.balanceOf(owner).call().await.unwrap();
    let market_held = usdc.balanceOf(market_address).call().await.unwrap();

    // Two chunks, so that one can be damaged; and a one-chunk file on a two-epoch deal.
    let data = file_bytes((1 << 20) + 4_321);
    let removed = net.put("removed.bin", &data, 6, ODD_PRICE).await;
    let spent_data = file_bytes(10_000);
    let spent = net.put("spent.bin", &spent_data, 2, ODD_PRICE).await;
    let (deal, spent_deal) = (removed.deal.unwrap(), spent.deal.unwrap());

    // The deal's terms, as StorageMarket holds them.
    let terms = net.market().getDeal(U256::from(deal)).call().await.unwrap();
    let replicas = net
        .market()
        .getReplicas(U256::from(deal))
        .call()
        .await
        .unwrap();
    let epoch_blocks = net.market().epochBlocks().call().await.unwrap();
    let price = U256::from(terms.pricePerEpoch);
    let fee_bps = U256::from(terms.feeBps);
    let (funded_epochs, replica_count) = (u64::from(terms.epochs), replicas.len() as u64);
    assert_eq!(
        (price, funded_epochs, replica_count),
        (U256::from(ODD_PRICE), 6, 3)
    );
    assert!(fee_bps > U256::ZERO, "the market takes a fee");
    // The owner pays the price for every replica of every epoch up front.
    let deposit = price * U256::from(funded_epochs * replica_count);
    let spent_deposit = price * U256::from(2 * 3u64);
    assert_eq!(
        funded - usdc.balanceOf(owner).call().await.unwrap(),
        deposit + spent_deposit
    );
    // What one proven replica-epoch pays: the whole price leaves the deposit, split between the
    // node and the platform. The fee rounds down (StorageMarket computes price × bps / 10 000 in
    // integers), so the node keeps the dust; the owner is charged the whole price either way, so
    // the refund itself involves no rounding at all: it is whole replica-epochs of the price.
    let fee_per_epoch = price * fee_bps / U256::from(10_000u64);
    let node_per_epoch = price - fee_per_epoch;
    assert_eq!(
        (fee_per_epoch, node_per_epoch),
        (U256::from(50u64), U256::from(959u64)),
        "5% of 1009 rounds down to 50"
    );

    // Epochs 0 and 1: every replica of both deals proven by its node.
    for epoch in 0..2u32 {
        net.enter_epoch(deal, epoch).await;
        net.proven_by_their_nodes(deal, &[0, 1, 2], epoch).await;
        net.enter_epoch(spent_deal, epoch).await;
        net.proven_by_their_nodes(spent_deal, &[0, 1, 2], epoch)
            .await;
    }
    // Epochs 2 and 3: replica 0 is damaged and missed; the others are proven.
    net.flip_chunk(&removed, 0, 1);
    net.enter_epoch(deal, 2).await;
    net.proven_by_their_nodes(deal, &[1, 2], 2).await;
    net.reports_corrupt(net.node_index(removed.replicas[0].node), deal)
        .await;
    net.enter_epoch(deal, 3).await;
    net.proven_by_their_nodes(deal, &[1, 2], 3).await;
    assert!(!net.is_proven(deal, 0, 2).await && !net.is_proven(deal, 0, 3).await);

    // rm in epoch 3: the deal ends after it (4 epochs instead of 6), every node deletes its
    // replica, and nothing is refunded yet.
    let first = net.owner.remove("removed.bin").await.unwrap();
    assert!(first.ended, "{first:?}");
    assert!(
        first.deletions.iter().all(|(_, e)| e.is_none()),
        "{first:?}"
    );
    let ended = net.market().getDeal(U256::from(deal)).call().await.unwrap();
    assert_eq!(ended.epochs, 4);
    let end_block = terms.startBlock + 4 * epoch_blocks;
    assert_eq!(
        (first.refunded, first.settles_at_block),
        (None, Some(end_block))
    );
    assert!(net.owner.find("removed.bin").unwrap().removed);
    // rm again before the end: still nothing to settle.
    let early = net.owner.remove("removed.bin").await.unwrap();
    assert_eq!(
        (early.ended, early.refunded, early.settles_at_block),
        (false, None, Some(end_block))
    );

    // The two-epoch deal's paid epochs are used up (all six replica-epochs were proven): its
    // funds ran out. put of the same name refuses, says why and what to do, and sends nothing;
    // a node refuses new chunks for it; get still returns the file, which its nodes keep until
    // the owner removes it.
    let spent_state = net
        .owner
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.record.name == "spent.bin")
        .unwrap()
        .deal
        .unwrap();
    assert!(spent_state.ended(), "{spent_state:?}");
    assert_eq!(
        (spent_state.proven_epochs, spent_state.remaining),
        (6, U256::ZERO)
    );
    let deals = net.market().dealCount().call().await.unwrap();
    let held = usdc.balanceOf(owner).call().await.unwrap();
    let file = net.work.path().join("spent.bin");
    std::fs::write(&file, &spent_data).unwrap();
    let error = net
        .owner
        .put(
            &file,
            &PutOptions {
                name: Some("spent.bin".into()),
                replicas: 3,
                epochs: 2,
                price_per_epoch: ODD_PRICE,
            },
            &[],
            no_progress(),
        )
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, StorageError::DealEnded { deal, .. } if deal == spent_deal),
        "{message}"
    );
    assert!(
        message.contains("ended at block") && message.contains("nothing was sent"),
        "{message}"
    );
    assert_eq!(net.market().dealCount().call().await.unwrap(), deals);
    assert_eq!(usdc.balanceOf(owner).call().await.unwrap(), held);
    let spent_node = &spent.replicas[0];
    let refused = NodeClient::new(
        spent_node.url.clone(),
        31337,
        market_address,
        spent_node.node,
        net.system.signer(OWNER),
    )
    .put_chunk(spent_deal, 0, 1, vec![1; 1000])
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.contains("ended at block"), "{refused}");
    assert!(
        net.get("spent.bin").await == spent_data,
        "get returned other bytes"
    );
    // rm of it: nothing to end, the nodes delete, and settling refunds nothing (all was proven).
    let removal = net.owner.remove("spent.bin").await.unwrap();
    assert!(!removal.ended, "{removal:?}");
    assert!(
        removal.deletions.iter().all(|(_, e)| e.is_none()),
        "{removal:?}"
    );
    assert_eq!(removal.refunded, Some(U256::ZERO));
    assert_eq!(usdc.balanceOf(owner).call().await.unwrap(), held);
    assert!(matches!(
        net.owner.find("spent.bin"),
        Err(StorageError::NotFound(_))
    ));

    // Once the deal has ended, rm settles it and the refund is paid.
    let now = p.get_block_number().await.unwrap();
    assert!(now < end_block, "the removed deal ended too early");
    p.anvil_mine(Some(end_block - now), None).await.unwrap();
    let before = usdc.balanceOf(owner).call().await.unwrap();
    let settled = net.owner.remove("removed.bin").await.unwrap();
    let refund = settled.refunded.expect("the deal settled");
    let after = usdc.balanceOf(owner).call().await.unwrap();
    assert!(matches!(
        net.owner.find("removed.bin"),
        Err(StorageError::NotFound(_))
    ));

    // What was proven, from the chain's EpochProven events: epochs 0 and 1 of every replica,
    // epochs 2 and 3 of replicas 1 and 2; each paid to the operator of the replica's node, the
    // price split as above.
    let proofs = proofs_on_chain(&net, deal).await;
    let proven: Vec<(u64, u32)> = proofs.iter().map(|p| (p.0, p.1)).collect();
    assert_eq!(
        proven,
        vec![
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
            (1, 2),
            (1, 3),
            (2, 0),
            (2, 1),
            (2, 2),
            (2, 3)
        ]
    );
    for &(replica, epoch, payee, node_amount, fee) in &proofs {
        let node = removed.replicas[replica as usize].node;
        assert_eq!(payee, net.nodes[net.node_index(node)].operator);
        assert_eq!(
            (node_amount, fee),
            (node_per_epoch, fee_per_epoch),
            "replica {replica} epoch {epoch}"
        );
    }
    let paid = price * U256::from(proofs.len());

    // The refund is the deposit less what the proven replica-epochs were paid, exactly: the two
    // epochs replica 0 missed, and epochs 4 and 5 of every replica that rm cut off.
    assert_eq!(refund, deposit - paid);
    assert_eq!(refund, price * U256::from(2 + 2 * 3u64));
    assert_eq!(after - before, refund, "the owner received the refund");
    // Over both deals the owner paid exactly the proven replica-epochs.
    let spent_proofs = proofs_on_chain(&net, spent_deal).await;
    assert_eq!(spent_proofs.len(), 6);
    let proven_count = U256::from(proofs.len() + spent_proofs.len());
    assert_eq!(funded - after, price * proven_count);

    // Each node's operator earned its node's share of its own proven replica-epochs, the
    // platform the fees; the deposit is the refund, the nodes' earnings and the fees.
    let mut earned_total = U256::ZERO;
    for node in &net.nodes {
        let proven_here = proofs
            .iter()
            .chain(&spent_proofs)
            .filter(|p| p.2 == node.operator)
            .count();
        let earned = net.earnings(node.operator).await;
        assert_eq!(
            earned,
            node_per_epoch * U256::from(proven_here),
            "node {}",
            node.id
        );
        earned_total += earned;
    }
    let fees = net.market().accruedFees().call().await.unwrap();
    assert_eq!(fees, fee_per_epoch * proven_count);
    assert_eq!(
        deposit,
        refund
            + node_per_epoch * U256::from(proofs.len())
            + fee_per_epoch * U256::from(proofs.len())
    );
    assert_eq!(deposit + spent_deposit, refund + earned_total + fees);

    // Every unit leaves the market: the operators claim, the fees go to the treasury, and the
    // market holds what it held before the two deals.
    for (node, &operator) in net.nodes.iter().zip(&OPERATORS) {
        let earned = net.earnings(node.operator).await;
        if earned == U256::ZERO {
            continue;
        }
        let before = usdc.balanceOf(node.operator).call().await.unwrap();
        StorageMarket::new(market_address, net.system.provider(operator))
            .claim()
            .send_ok()
            .await;
        let after = usdc.balanceOf(node.operator).call().await.unwrap();
        assert_eq!(after - before, earned);
    }
    let treasury = net.market().treasury().call().await.unwrap();
    let before = usdc.balanceOf(treasury).call().await.unwrap();
    net.market().withdrawFees().send_ok().await;
    assert_eq!(
        usdc.balanceOf(treasury).call().await.unwrap() - before,
        fees
    );
    assert_eq!(
        usdc.balanceOf(market_address).call().await.unwrap(),
        market_held
    );
    net.stop().await;
}
