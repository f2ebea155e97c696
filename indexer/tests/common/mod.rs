//! Test helpers: the real contracts on anvil driven by their users ([`system`]); anvil with the
//! EventSource test fixture deployed once per contract role (for the GraphQL filter tests, which
//! need rows with chosen values); SQLite and PostgreSQL databases; table dumps for comparisons.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod system;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use alloy::network::TransactionBuilder;
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolCall;
use decloud_indexer::{
    ContractKind, Database, ENTITIES, EventDecoder, Follower, FollowerConfig, IndexerHandler,
};
use sqlx::{AssertSqlSafe, Row};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

sol! {
    /// The fixture's functions; struct layouts match the interfaces, so the selectors do too.
    interface IEventSource {
        struct Capabilities { uint32 vcpus; uint32 memoryGiB; uint32 diskGiB; uint16 gpus; uint32 bandwidthMbps; uint8 architecture; uint32 flags; }
        struct Prices { uint64 cpuPerHour; uint64 memoryGiBPerHour; uint64 storageGiBPerHour; uint64 gpuPerHour; }
        struct Resources { uint32 vcpus; uint32 memoryGiB; uint32 storageGiB; uint16 gpus; }
        function anchorMany(uint256 firstId, uint256 n, bytes32 salt) external;
        function nodeRegistered(bytes32 nodeId, address operator, bytes32 machineId, address nodeKey, string region, Capabilities capabilities, string endpoint, string metadataCid) external;
        function nodeUpdated(bytes32 nodeId, address nodeKey, string region, Capabilities capabilities, string endpoint, string metadataCid) external;
        function nodePricesSet(bytes32 nodeId, Prices requested, Prices stored) external;
        function nodeStatusChanged(bytes32 nodeId, uint8 status) external;
        function staked(address operator, uint256 amount, uint256 activeStake) external;
        function unstakeRequested(address operator, uint256 requestId, uint256 amount, uint64 unlockAt, uint256 activeStake) external;
        function stakeWithdrawn(address operator, uint256 requestId, uint256 amount) external;
        function deposited(address account, uint256 amount, uint256 balance) external;
        function escrowWithdrawn(address account, uint256 amount, uint256 balance) external;
        function leaseOpened(uint256 leaseId, address tenant, bytes32 nodeId, address operator, Resources resources, uint256 templateId, uint64 ratePerHour, uint256 funding) external;
        function leaseToppedUp(uint256 leaseId, address from, uint256 amount, uint256 funded, uint64 accrualStart, uint256 accruedBefore) external;
        function leaseClaimed(uint256 leaseId, address operator, uint256 settled, uint256 operatorAmount, uint256 platformFee) external;
        function leaseClosed(uint256 leaseId, uint256 settled, uint256 refund) external;
        function leaseTerminated(uint256 leaseId, uint64 failedAt, uint256 settled, uint256 refund) external;
        function templatePublished(uint256 templateId, address author, string cid, uint256 price) external;
        function templateUpdated(uint256 templateId, string cid, uint256 price) external;
        function templateDeprecated(uint256 templateId) external;
        function templatePurchased(uint256 templateId, address buyer, address payer, uint256 purchaseId, uint256 price, uint256 authorShare, uint256 platformShare) external;
    }
}

pub use IEventSource::*;

/// The fixture's creation bytecode, compiled once per test binary by solc 0.8.30 (the npm build
/// behind contracts/bin/solc).
pub fn bytecode() -> &'static Bytes {
    static CODE: OnceLock<Bytes> = OnceLock::new();
    CODE.get_or_init(|| {
        decloud_sdk::testing::compile_fixture(
            "indexer/tests/fixtures/EventSource.sol",
            "EventSource",
        )
    })
}

pub fn anvil_bin() -> PathBuf {
    root().join("contracts/node_modules/.bin/anvil")
}

/// A chain with the fixture deployed once per contract role.
pub struct Chain {
    pub anvil: AnvilInstance,
    pub provider: DynProvider,
    pub reader: DynProvider,
    pub from: Address,
    pub contracts: Vec<(ContractKind, Address)>,
    pub deploy_block: u64,
}

impl Chain {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(args: &[&str]) -> Self {
        let anvil = Anvil::at(anvil_bin()).args(args.iter().copied()).spawn();
        let signer: PrivateKeySigner = anvil.keys()[0].clone().into();
        let from = signer.address();
        let provider = decloud_sdk::tx::signing_provider(anvil.endpoint_url(), signer);
        let reader = ProviderBuilder::new()
            .connect_http(anvil.endpoint_url())
            .erased();
        let deploy_block = provider.get_block_number().await.unwrap() + 1;
        let mut contracts = Vec::new();
        for kind in ContractKind::ALL {
            let tx = TransactionRequest::default().with_deploy_code(bytecode().clone());
            let receipt = provider
                .send_transaction(tx)
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
            contracts.push((kind, receipt.contract_address.unwrap()));
        }
        Self {
            anvil,
            provider,
            reader,
            from,
            contracts,
            deploy_block,
        }
    }

    pub fn address(&self, kind: ContractKind) -> Address {
        self.contracts.iter().find(|(k, _)| *k == kind).unwrap().1
    }

    pub fn decoder(&self) -> EventDecoder {
        EventDecoder::new(self.contracts.clone())
    }

    pub fn follower_config(&self, name: &str) -> FollowerConfig {
        let mut c = FollowerConfig::new(
            name,
            self.contracts.iter().map(|(_, a)| *a).collect(),
            self.deploy_block,
        );
        c.reorg_window = 128;
        c.initial_range = 16;
        c
    }

    /// Sends a call to the fixture of `kind` and waits for it to be mined.
    pub async fn send(&self, kind: ContractKind, call: impl SolCall) {
        let tx = TransactionRequest::default()
            .with_to(self.address(kind))
            .with_input(call.abi_encode())
            .with_gas_limit(25_000_000);
        let receipt = self
            .provider
            .send_transaction(tx)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status(), "fixture call reverted");
    }

    /// Runs a scenario that produces every entity: nodes with price changes, stakes and unstake
    /// requests, escrow accounts, leases with top-ups, claims, a close and a termination, templates
    /// with purchases, anchors. `salt` varies amounts so two runs differ.
    pub async fn scenario(&self, salt: u64) {
        for (kind, call) in scenario_calls(self, salt) {
            self.send_raw(kind, call).await;
        }
    }

    pub async fn send_raw(&self, kind: ContractKind, input: Bytes) {
        let tx = TransactionRequest::default()
            .with_to(self.address(kind))
            .with_input(input)
            .with_gas_limit(25_000_000);
        let receipt = self
            .provider
            .send_transaction(tx)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status(), "fixture call reverted");
    }

    /// Emits `total` anchor events, `per_tx` per transaction, ids from `first_id`.
    pub async fn anchors(&self, first_id: u64, total: u64, per_tx: u64) {
        let mut id = first_id;
        let end = first_id + total;
        let mut pending = Vec::new();
        while id < end {
            let n = per_tx.min(end - id);
            let call = anchorManyCall {
                firstId: U256::from(id),
                n: U256::from(n),
                salt: B256::from(U256::from(id)),
            };
            let tx = TransactionRequest::default()
                .with_to(self.address(ContractKind::AttestationAnchor))
                .with_input(call.abi_encode())
                .with_gas_limit(29_000_000);
            pending.push(self.provider.send_transaction(tx).await.unwrap());
            id += n;
            if pending.len() >= 16 {
                for p in pending.drain(..) {
                    assert!(p.get_receipt().await.unwrap().status());
                }
            }
        }
        for p in pending {
            assert!(p.get_receipt().await.unwrap().status());
        }
    }
}

pub fn node_id(n: u64) -> B256 {
    keccak256(format!("node-{n}"))
}

pub fn user(n: u64) -> Address {
    Address::from_word(keccak256(format!("user-{n}")))
}

pub fn prices(base: u64) -> Prices {
    Prices {
        cpuPerHour: 5_000 + base,
        memoryGiBPerHour: 2_000 + base,
        storageGiBPerHour: 10 + base,
        gpuPerHour: base,
    }
}

pub fn caps(vcpus: u32) -> Capabilities {
    Capabilities {
        vcpus,
        memoryGiB: vcpus * 4,
        diskGiB: 200,
        gpus: 0,
        bandwidthMbps: 1000,
        architecture: 0,
        flags: 1,
    }
}

/// The scenario's calls (see [`Chain::scenario`]).
pub fn scenario_calls(chain: &Chain, salt: u64) -> Vec<(ContractKind, Bytes)> {
    use ContractKind::*;
    let s = salt;
    let escrow = chain.address(LeaseEscrow);
    let mut calls: Vec<(ContractKind, Bytes)> = Vec::new();
    let mut push = |k: ContractKind, c: Vec<u8>| calls.push((k, c.into()));
    for n in 0..3u64 {
        push(
            NodeRegistry,
            nodeRegisteredCall {
                nodeId: node_id(n + 10 * s),
                operator: user(100 + n),
                machineId: keccak256(format!("machine-{n}-{s}")),
                nodeKey: user(200 + n),
                region: format!("eu-west-{n}"),
                capabilities: caps(4 + n as u32),
                endpoint: format!("https://node{n}.example"),
                metadataCid: "bafymeta".into(),
            }
            .abi_encode(),
        );
        push(
            NodeRegistry,
            nodePricesSetCall {
                nodeId: node_id(n + 10 * s),
                requested: prices(0),
                stored: prices(n + s),
            }
            .abi_encode(),
        );
    }
    push(
        NodeRegistry,
        nodePricesSetCall {
            nodeId: node_id(10 * s),
            requested: prices(7),
            stored: prices(9 + s),
        }
        .abi_encode(),
    );
    push(
        NodeRegistry,
        nodeUpdatedCall {
            nodeId: node_id(1 + 10 * s),
            nodeKey: user(300),
            region: "us-east-1".into(),
            capabilities: caps(16),
            endpoint: "https://moved.example".into(),
            metadataCid: "bafynew".into(),
        }
        .abi_encode(),
    );
    push(
        NodeRegistry,
        nodeStatusChangedCall {
            nodeId: node_id(2 + 10 * s),
            status: 2,
        }
        .abi_encode(),
    );
    let op = user(100);
    push(
        OperatorStaking,
        stakedCall {
            operator: op,
            amount: U256::from(1_000 + s),
            activeStake: U256::from(1_000 + s),
        }
        .abi_encode(),
    );
    push(
        OperatorStaking,
        unstakeRequestedCall {
            operator: op,
            requestId: U256::ZERO,
            amount: U256::from(400),
            unlockAt: 1_000_000,
            activeStake: U256::from(600 + s),
        }
        .abi_encode(),
    );
    push(
        OperatorStaking,
        stakeWithdrawnCall {
            operator: op,
            requestId: U256::ZERO,
            amount: U256::from(400),
        }
        .abi_encode(),
    );
    let tenant = user(1);
    push(
        LeaseEscrow,
        depositedCall {
            account: tenant,
            amount: U256::from(10_000_000 + s),
            balance: U256::from(10_000_000 + s),
        }
        .abi_encode(),
    );
    push(
        TemplateMarket,
        templatePublishedCall {
            templateId: U256::from(1),
            author: user(50),
            cid: "bafytemplate".into(),
            price: U256::from(1_000_000),
        }
        .abi_encode(),
    );
    push(
        TemplateMarket,
        templateUpdatedCall {
            templateId: U256::from(1),
            cid: "bafytemplate2".into(),
            price: U256::from(2_000_000),
        }
        .abi_encode(),
    );
    push(
        TemplateMarket,
        templatePublishedCall {
            templateId: U256::from(2),
            author: user(51),
            cid: "bafyfree".into(),
            price: U256::ZERO,
        }
        .abi_encode(),
    );
    push(
        TemplateMarket,
        templateDeprecatedCall {
            templateId: U256::from(2),
        }
        .abi_encode(),
    );
    for lease in 1..=2u64 {
        push(
            LeaseEscrow,
            leaseOpenedCall {
                leaseId: U256::from(lease + 10 * s),
                tenant,
                nodeId: node_id(lease - 1 + 10 * s),
                operator: user(100 + lease - 1),
                resources: Resources {
                    vcpus: 2,
                    memoryGiB: 4,
                    storageGiB: 50,
                    gpus: 0,
                },
                templateId: U256::from(1),
                ratePerHour: 30_000 + s,
                funding: U256::from(1_000_000),
            }
            .abi_encode(),
        );
        push(
            TemplateMarket,
            templatePurchasedCall {
                templateId: U256::from(1),
                buyer: tenant,
                payer: escrow,
                purchaseId: U256::from(lease + 10 * s),
                price: U256::from(2_000_000),
                authorShare: U256::from(1_700_000),
                platformShare: U256::from(300_000),
            }
            .abi_encode(),
        );
    }
    push(
        LeaseEscrow,
        leaseToppedUpCall {
            leaseId: U256::from(1 + 10 * s),
            from: tenant,
            amount: U256::from(500_000),
            funded: U256::from(1_500_000),
            accrualStart: 1_700_000_000,
            accruedBefore: U256::ZERO,
        }
        .abi_encode(),
    );
    push(
        LeaseEscrow,
        leaseClaimedCall {
            leaseId: U256::from(1 + 10 * s),
            operator: user(100),
            settled: U256::from(60_000),
            operatorAmount: U256::from(57_000),
            platformFee: U256::from(3_000),
        }
        .abi_encode(),
    );
    push(
        LeaseEscrow,
        leaseClosedCall {
            leaseId: U256::from(1 + 10 * s),
            settled: U256::from(90_000),
            refund: U256::from(1_410_000),
        }
        .abi_encode(),
    );
    push(
        LeaseEscrow,
        leaseTerminatedCall {
            leaseId: U256::from(2 + 10 * s),
            failedAt: 1_700_000_100,
            settled: U256::from(10_000),
            refund: U256::from(990_000),
        }
        .abi_encode(),
    );
    push(
        LeaseEscrow,
        escrowWithdrawnCall {
            account: tenant,
            amount: U256::from(1_000),
            balance: U256::from(123_456 + s),
        }
        .abi_encode(),
    );
    push(
        AttestationAnchor,
        anchorManyCall {
            firstId: U256::from(100 * s),
            n: U256::from(3),
            salt: B256::from(U256::from(s)),
        }
        .abi_encode(),
    );
    calls
}

/// A fresh database of the given backend.
pub struct TestDb {
    pub db: Database,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

impl TestDb {
    pub async fn new(kind: Kind) -> Self {
        let (url, dir) = match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                (
                    format!("sqlite://{}", dir.path().join("index.db").display()),
                    Some(dir),
                )
            }
            Kind::Postgres => (postgres_database().await, None),
        };
        let db = Database::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        Self { db, url, _dir: dir }
    }
}

/// The PostgreSQL server for tests: `DECLOUD_TEST_POSTGRES_URL` (scripts/test starts one), or else
/// a throwaway cluster this test process starts on a free loopback port and a watchdog stops when
/// the process exits.
pub fn postgres_server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DECLOUD_TEST_POSTGRES_URL") {
            return url;
        }
        let out = Command::new(root().join("indexer/scripts/postgres-test-cluster"))
            .arg("start")
            .arg(std::process::id().to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/postgres-test-cluster runs");
        assert!(
            out.status.success(),
            "cannot start a PostgreSQL test cluster"
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

/// A new, empty database on the test server.
pub async fn postgres_database() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let server = postgres_server();
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
            % 1_000_000
    );
    let admin = Database::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin.pool)
        .await
        .unwrap();
    admin.pool.close().await;
    format!("{server}/{name}")
}

/// A chain the indexer follows: the fixture [`Chain`] or the real [`system::System`].
pub trait Indexed {
    fn reader(&self) -> &DynProvider;
    fn contract_list(&self) -> Vec<(ContractKind, Address)>;
    fn config(&self, name: &str) -> FollowerConfig;
}

impl Indexed for Chain {
    fn reader(&self) -> &DynProvider {
        &self.reader
    }
    fn contract_list(&self) -> Vec<(ContractKind, Address)> {
        self.contracts.clone()
    }
    fn config(&self, name: &str) -> FollowerConfig {
        self.follower_config(name)
    }
}

impl Indexed for system::System {
    fn reader(&self) -> &DynProvider {
        &self.reader
    }
    fn contract_list(&self) -> Vec<(ContractKind, Address)> {
        self.contracts.clone()
    }
    fn config(&self, name: &str) -> FollowerConfig {
        self.follower_config(name)
    }
}

pub fn follower(chain: &impl Indexed, db: &Database, name: &str) -> Follower<IndexerHandler> {
    Follower::new(
        chain.reader().clone(),
        db.clone(),
        chain.config(name),
        IndexerHandler::new(EventDecoder::new(chain.contract_list()), db.backend),
    )
}

/// Every entity table and the raw events, as sorted rows of text, for equality checks.
pub async fn dump(db: &Database) -> Vec<(String, Vec<Vec<String>>)> {
    let mut out = Vec::new();
    for def in ENTITIES {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY id",
            def.select_list(),
            def.table
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("dump of {}: {e}", def.table));
        let rows = rows
            .iter()
            .map(|r| {
                def.columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        if c.ty.is_integer() {
                            format!("{:?}", r.try_get::<Option<i64>, _>(i).unwrap())
                        } else {
                            format!("{:?}", r.try_get::<Option<String>, _>(i).unwrap())
                        }
                    })
                    .collect()
            })
            .collect();
        out.push((def.table.to_owned(), rows));
    }
    out
}

/// The events table must equal the decoded `eth_getLogs` of the whole chain (the logs of events the
/// indexer does not know, such as OpenZeppelin's role events, aside).
pub async fn assert_events_match_chain(chain: &impl Indexed, db: &Database) {
    let reader = chain.reader();
    let head = reader.get_block_number().await.unwrap();
    let contracts = chain.contract_list();
    let filter = Filter::new()
        .address(contracts.iter().map(|(_, a)| *a).collect::<Vec<_>>())
        .from_block(0)
        .to_block(head);
    let logs = reader.get_logs(&filter).await.unwrap();
    let decoder = EventDecoder::new(contracts);
    let mut truth: Vec<(String, i64, String, String, String)> = logs
        .iter()
        .filter_map(|l| {
            let d = decoder.decode(l)?;
            Some((
                format!("{}-{}", l.transaction_hash.unwrap(), l.log_index.unwrap()),
                l.block_number.unwrap() as i64,
                l.block_hash.unwrap().to_string(),
                d.name,
                d.args.to_string(),
            ))
        })
        .collect();
    truth.sort();
    let rows =
        sqlx::query("SELECT id, block_number, block_hash, name, args FROM events ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let stored: Vec<(String, i64, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        stored.len(),
        truth.len(),
        "event count differs from eth_getLogs"
    );
    assert_eq!(stored, truth, "events differ from eth_getLogs");
}
