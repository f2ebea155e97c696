//! Test helpers: the real contracts on anvil driven by their users ([`system`]); anvil with the
//! EventSource test fixture deployed once per contract role (for the benchmark example, which
//! needs 100,000 events fast); SQLite and PostgreSQL databases; table dumps for comparisons.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod system;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use alloy::network::TransactionBuilder;
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, B256, Bytes, U256};
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
    /// The fixture's batch emitter (the only function the benchmark calls).
    interface IEventSource {
        function anchorMany(uint256 firstId, uint256 n, bytes32 salt) external;
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
        // One at a time: anvil automines when a transaction arrives, and transactions that arrive
        // together beyond one block's gas stay in its pool until another one comes.
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
            let pending = self.provider.send_transaction(tx).await.unwrap();
            assert!(pending.get_receipt().await.unwrap().status());
            id += n;
        }
    }
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
