//! StorageMarket's entities from the real contracts and real proofs, on SQLite and PostgreSQL.
//!
//! Two nodes register in the SDK's deployment; a StorageMarket is wired to a Groth16 verifier
//! generated from a small circuit (depth 6, 4 challenges) so that proving takes seconds, as in the
//! prover's own anvil test. An owner funds a 3-epoch deal with two replicas: replica 0 proves
//! epochs 0 and 1, replica 1 proves epoch 0, epoch 2's randomness is recorded without a proof; the
//! deal ends and is settled (the unproven epochs refunded) and an operator claims. A second deal is
//! never proven. The indexed deals, replicas, epochs, proofs and payees must equal the market's
//! own view functions, and every entity answers GraphQL with every `where` suffix.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use async_graphql::dynamic::Schema;
use common::{Kind, TestDb};
use decloud_indexer::graphql::{ApiState, schema};
use decloud_indexer::schema::{
    DEAL_EPOCHS, DEAL_REPLICAS, DEALS, EntityDef, PROOFS, REPLICA_MOVES, STORAGE_PAYEES,
};
use decloud_indexer::{
    ContractKind, Database, EventDecoder, Follower, FollowerConfig, IndexerHandler, Metrics,
    deployment_contracts,
};
use decloud_prover::{
    CircuitParams, Keys, MerkleTree, SEGMENT_BYTES, epoch_seed, fr_to_be_bytes, generate_verifier,
    proof_to_solidity, prove, split_segments,
};
use decloud_sdk::bindings::{MockUSDC, NodeRegistry, StorageMarket, node_registry::INodeRegistry};
use decloud_sdk::testing::{SendOk as _, TestSystem};
use serde_json::{Value, json};
use sqlx::Row;

/// The entities derived from StorageMarket's events.
const STORAGE_ENTITIES: [&EntityDef; 6] = [
    &DEALS,
    &DEAL_REPLICAS,
    &REPLICA_MOVES,
    &DEAL_EPOCHS,
    &PROOFS,
    &STORAGE_PAYEES,
];

const PARAMS: CircuitParams = CircuitParams {
    depth: 6,
    challenges: 4,
};
const EPOCH_BLOCKS: u64 = 20;
const PRICE: u128 = 2_500_000;
const FEE_BPS: u16 = 500;

fn word(bytes: [u8; 32]) -> U256 {
    U256::from_be_bytes(bytes)
}

async fn mine_to(provider: &DynProvider, block: u64) {
    let now = provider.get_block_number().await.unwrap();
    if block > now {
        provider.anvil_mine(Some(block - now), None).await.unwrap();
    }
}

/// The chain after the storage scenario.
struct Storage {
    system: TestSystem,
    market: Address,
    contracts: Vec<(ContractKind, Address)>,
    nodes: [B256; 2],
    /// Where deal 2's replica moved.
    node_c: B256,
}

async fn register(system: &TestSystem, who: usize, machine: &str) -> B256 {
    let p = system.provider(who);
    let registry = NodeRegistry::new(system.deployment.contracts.node_registry.address, &p);
    let caps = INodeRegistry::Capabilities {
        vcpus: 8,
        memoryGiB: 32,
        diskGiB: 2000,
        gpus: 0,
        bandwidthMbps: 1000,
        architecture: 0,
        flags: 0,
    };
    let prices = INodeRegistry::Prices {
        cpuPerHour: 0,
        memoryGiBPerHour: 0,
        storageGiBPerHour: 0,
        gpuPerHour: 0,
    };
    registry
        .register(
            keccak256(machine),
            system.address(who),
            "eu-west".into(),
            caps,
            "wss://node".into(),
            "bafy".into(),
            prices,
        )
        .send_ok()
        .await;
    registry
        .computeNodeId(keccak256(machine), system.address(who))
        .call()
        .await
        .unwrap()
}

async fn scenario() -> Storage {
    let system = TestSystem::start().await.unwrap();
    let deployer = system.provider(0);
    let owner = system.provider(1);
    let usdc = system.deployment.usdc;
    let nodes = [
        register(&system, 2, "storage-a").await,
        register(&system, 3, "storage-b").await,
    ];
    let node_c = register(&system, 4, "storage-c").await;

    // The market, wired to the small circuit's verifier (compiled by the repository's solc).
    let keys = Keys::dev_setup(PARAMS).unwrap();
    let code: Bytes = decloud_sdk::testing::compile_source(
        "contracts/src/Groth16Verifier.sol",
        &generate_verifier(keys.vk(), &PARAMS),
        "Groth16Verifier",
    );
    let receipt = deployer
        .send_transaction(TransactionRequest::default().with_deploy_code(code))
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status());
    let market = StorageMarket::deploy(
        &deployer,
        usdc,
        system.deployment.contracts.node_registry.address,
        receipt.contract_address.unwrap(),
        PARAMS.max_segments(),
        EPOCH_BLOCKS,
        system.address(0),
        system.address(9),
        FEE_BPS,
    )
    .await
    .unwrap();
    let market_at = *market.address();

    // Each replica commits to its own copy (different data, different roots).
    let copies: Vec<Vec<u8>> = (0..2u8)
        .map(|r| {
            (0..40 * SEGMENT_BYTES - 5)
                .map(|i| ((i * 7 + i / 333) as u8).wrapping_add(r))
                .collect()
        })
        .collect();
    let trees: Vec<MerkleTree> = copies
        .iter()
        .map(|d| MerkleTree::from_data(d, PARAMS.depth).unwrap())
        .collect();
    MockUSDC::new(usdc, &owner)
        .approve(market_at, U256::MAX)
        .send_ok()
        .await;
    let as_owner = StorageMarket::new(market_at, &owner);
    as_owner
        .createDeal(
            nodes.to_vec(),
            trees
                .iter()
                .map(|t| word(fr_to_be_bytes(&t.root())))
                .collect(),
            trees[0].segment_count(),
            PRICE,
            3,
        )
        .send_ok()
        .await;
    as_owner
        .createDeal(
            vec![nodes[1]],
            vec![word(fr_to_be_bytes(&trees[1].root()))],
            trees[1].segment_count(),
            PRICE / 2,
            5,
        )
        .send_ok()
        .await;

    // Deal 1: replica 0 proves epochs 0 and 1, replica 1 proves epoch 0.
    let deal = U256::from(1);
    for (epoch, replicas) in [(0u32, &[0usize, 1][..]), (1, &[0][..])] {
        let start: u64 = market
            .epochStartBlock(deal, epoch)
            .call()
            .await
            .unwrap()
            .to();
        mine_to(&deployer, start + 1).await;
        for &r in replicas {
            let prover = system.provider(2 + r);
            // The proof records the epoch's randomness; a static call tells which it will be.
            let randomness = market
                .recordEpochRandomness(deal, epoch)
                .call()
                .await
                .unwrap();
            let seed = epoch_seed(randomness.0, 1, r as u64, u64::from(epoch));
            let proof = prove(&keys, &trees[r], &split_segments(&copies[r]), seed).unwrap();
            StorageMarket::new(market_at, &prover)
                .submitProof(
                    deal,
                    U256::from(r),
                    epoch,
                    proof_to_solidity(&proof).map(word),
                )
                .send_ok()
                .await;
        }
    }
    // Epoch 2: randomness recorded by someone, no proof.
    let start: u64 = market.epochStartBlock(deal, 2).call().await.unwrap().to();
    mine_to(&deployer, start + 1).await;
    StorageMarket::new(market_at, &deployer)
        .recordEpochRandomness(deal, 2)
        .send_ok()
        .await;
    // The deal ends; anyone settles; the first replica's operator claims.
    mine_to(&deployer, start + EPOCH_BLOCKS).await;
    StorageMarket::new(market_at, &deployer)
        .settle(deal)
        .send_ok()
        .await;
    StorageMarket::new(market_at, &system.provider(2))
        .claim()
        .send_ok()
        .await;
    // Deal 2: the owner names a repairer, moves the replica to node C, then ends the deal early.
    let deal2 = U256::from(2);
    as_owner
        .setRepairer(deal2, system.address(5))
        .send_ok()
        .await;
    as_owner
        .replaceReplica(
            deal2,
            U256::ZERO,
            node_c,
            word(fr_to_be_bytes(&trees[0].root())),
        )
        .send_ok()
        .await;
    as_owner.endDeal(deal2).send_ok().await;

    let mut contracts: Vec<(ContractKind, Address)> = deployment_contracts(&system.deployment)
        .into_iter()
        .map(|(name, e)| (name.parse().unwrap(), e.address))
        .filter(|(k, _)| *k != ContractKind::StorageMarket)
        .collect();
    contracts.push((ContractKind::StorageMarket, market_at));
    Storage {
        system,
        market: market_at,
        contracts,
        nodes,
        node_c,
    }
}

async fn index(s: &Storage, db: &Database) -> Schema {
    let config = FollowerConfig::new(
        "indexer",
        s.contracts.iter().map(|(_, a)| *a).collect(),
        s.system.deployment.deploy_block,
    );
    let handler = IndexerHandler::new(EventDecoder::new(s.contracts.clone()), db.backend);
    let notices = handler.notices();
    Follower::new(s.system.provider(0), db.clone(), config, handler)
        .sync_to_head()
        .await
        .unwrap();
    schema(ApiState {
        db: db.clone(),
        cursor: "indexer".into(),
        metrics: Arc::new(Metrics::default()),
        notices,
    })
    .unwrap()
}

async fn data(schema: &Schema, query: &str) -> Value {
    let r = schema.execute(query).await;
    assert!(r.errors.is_empty(), "{query}: {:?}", r.errors);
    r.data.into_json().unwrap()
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect()
}

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.into_iter().map(str::to_owned).collect()
}

fn big(v: impl std::fmt::Display) -> Value {
    json!(v.to_string())
}

/// The entities equal the market's view functions.
async fn matches_contract_state(s: &Storage, schema: &Schema) {
    let reader = s.system.provider(0);
    let market = StorageMarket::new(s.market, &reader);
    for id in [1u64, 2] {
        let deal = market.getDeal(U256::from(id)).call().await.unwrap();
        let d = data(
            schema,
            &format!(
                r#"{{ deal(id: "{id}") {{ dealId owner segmentCount pricePerEpoch epochs startBlock feeBps
                     replicaCount remaining provenEpochs settled nodePaid feesPaid deposit refund }} }}"#
            ),
        )
        .await;
        let row = &d["deal"];
        assert_eq!(row["dealId"], big(id));
        assert_eq!(row["owner"], json!(format!("{:#x}", deal.owner)));
        assert_eq!(row["segmentCount"], big(deal.segmentCount));
        assert_eq!(row["pricePerEpoch"], big(deal.pricePerEpoch));
        assert_eq!(row["epochs"], big(deal.epochs));
        assert_eq!(row["startBlock"], big(deal.startBlock));
        assert_eq!(row["feeBps"], json!(deal.feeBps));
        assert_eq!(row["remaining"], big(deal.remaining));
        assert_eq!(row["provenEpochs"], big(deal.provenEpochs));
        assert_eq!(row["settled"], json!(deal.settled));
        let replicas = market.getReplicas(U256::from(id)).call().await.unwrap();
        assert_eq!(row["replicaCount"], json!(replicas.len()));
        // Whatever was deposited was paid out per proof, refunded at settlement, or is still held.
        let deposit: U256 = row["deposit"].as_str().unwrap().parse().unwrap();
        let paid: U256 = row["nodePaid"].as_str().unwrap().parse::<U256>().unwrap()
            + row["feesPaid"].as_str().unwrap().parse::<U256>().unwrap();
        let refund: U256 = row["refund"].as_str().unwrap().parse().unwrap();
        assert_eq!(deposit, paid + refund + deal.remaining);
        // What the owner bought at creation: deal 2 was ended early, which leaves the deposit as is.
        let bought = [3u32, 5][id as usize - 1];
        assert_eq!(
            deposit,
            U256::from(deal.pricePerEpoch) * U256::from(bought) * U256::from(replicas.len())
        );
        for (i, replica) in replicas.iter().enumerate() {
            let d = data(
                schema,
                &format!(
                    r#"{{ dealReplica(id: "{id}-{i}") {{ deal replica node payee root provenEpochs earned }} }}"#
                ),
            )
            .await;
            let r = &d["dealReplica"];
            assert_eq!(r["deal"], json!(id.to_string()));
            assert_eq!(r["replica"], json!(i));
            assert_eq!(r["node"], json!(replica.nodeId.to_string()));
            assert_eq!(r["payee"], json!(format!("{:#x}", replica.payee)));
            assert_eq!(r["root"], json!(B256::from(replica.root).to_string()));
            let mut proven = 0u64;
            for epoch in 0..deal.epochs {
                let is = market
                    .isProven(U256::from(id), U256::from(i), epoch)
                    .call()
                    .await
                    .unwrap();
                let d = data(
                    schema,
                    &format!(r#"{{ proof(id: "{id}-{i}-{epoch}") {{ payee nodeAmount fee }} }}"#),
                )
                .await;
                assert_eq!(d["proof"].is_null(), !is, "proof {id}-{i}-{epoch}");
                if is {
                    proven += 1;
                    let fee = deal.pricePerEpoch * u128::from(FEE_BPS) / 10_000;
                    assert_eq!(d["proof"]["fee"], big(fee));
                    assert_eq!(d["proof"]["nodeAmount"], big(deal.pricePerEpoch - fee));
                }
            }
            assert_eq!(r["provenEpochs"], big(proven));
        }
        for epoch in 0..deal.epochs {
            let randomness = market
                .epochRandomness(U256::from(id), epoch)
                .call()
                .await
                .unwrap();
            let d = data(
                schema,
                &format!(r#"{{ dealEpoch(id: "{id}-{epoch}") {{ randomness }} }}"#),
            )
            .await;
            if randomness.is_zero() {
                assert!(d["dealEpoch"].is_null());
            } else {
                assert_eq!(d["dealEpoch"]["randomness"], json!(randomness.to_string()));
            }
        }
    }
    // Deal 2's repairer, early end and replica move.
    let d = data(
        schema,
        r#"{ deal(id: "2") { repairer endedBlock epochs } deals(where: { endedBlock: null }) { id }
             dealReplica(id: "2-0") { moves node }
             replicaMove(id: "2-0-1") { deal replica oldNode newNode newRoot payee } }"#,
    )
    .await;
    assert_eq!(
        d["deal"]["repairer"],
        json!(format!("{:#x}", s.system.address(5)))
    );
    assert!(!d["deal"]["endedBlock"].is_null());
    assert_eq!(ids(&d["deals"]), set(["1"]));
    assert_eq!(d["dealReplica"]["moves"], big(1));
    assert_eq!(d["dealReplica"]["node"], json!(s.node_c.to_string()));
    let moved = market.getReplicas(U256::from(2)).call().await.unwrap();
    assert_eq!(
        d["replicaMove"],
        json!({
            "deal": "2",
            "replica": 0,
            "oldNode": s.nodes[1].to_string(),
            "newNode": s.node_c.to_string(),
            "newRoot": B256::from(moved[0].root).to_string(),
            "payee": format!("{:#x}", s.system.address(4)),
        })
    );
    for who in [2usize, 3] {
        let payee = s.system.address(who);
        let d = data(
            schema,
            &format!(r#"{{ storagePayee(id: "{payee:#x}") {{ earned claimed unclaimed }} }}"#),
        )
        .await;
        assert_eq!(
            d["storagePayee"]["unclaimed"],
            big(market.earningsOf(payee).call().await.unwrap())
        );
    }
    let d = data(
        schema,
        &format!(
            r#"{{ storagePayee(id: "{:#x}") {{ earned claimed unclaimed proofCount }} }}"#,
            s.system.address(2)
        ),
    )
    .await;
    let node_amount = PRICE - PRICE * u128::from(FEE_BPS) / 10_000;
    assert_eq!(
        d["storagePayee"],
        json!({"earned": big(2 * node_amount), "claimed": big(2 * node_amount), "unclaimed": "0", "proofCount": "2"})
    );
}

/// Every storage entity's list query returns every row with every field, and its single query
/// returns the listed item.
async fn list_and_single(schema: &Schema, db: &Database) {
    for def in STORAGE_ENTITIES {
        let count: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            def.table
        )))
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0);
        assert!(count > 0, "{} has rows", def.table);
        let fields: Vec<&str> = def.columns.iter().map(|c| c.field).collect();
        let d = data(
            schema,
            &format!("{{ {}(first: 1000) {{ {} }} }}", def.list, fields.join(" ")),
        )
        .await;
        let list = d[def.list].as_array().unwrap();
        assert_eq!(list.len() as i64, count, "{}", def.list);
        for item in list {
            let id = item["id"].as_str().unwrap();
            let d = data(
                schema,
                &format!(
                    r#"{{ {}(id: "{id}") {{ {} }} }}"#,
                    def.single,
                    fields.join(" ")
                ),
            )
            .await;
            assert_eq!(&d[def.single], item, "{}", def.single);
        }
    }
}

/// Every `where` suffix on the storage entities.
async fn graphql_filters(s: &Storage, schema: &Schema) {
    let (a, b) = (s.nodes[0].to_string(), s.nodes[1].to_string());
    let owner = format!("{:#x}", s.system.address(1));
    let payee_a = format!("{:#x}", s.system.address(2));
    let payee_b = format!("{:#x}", s.system.address(3));
    let cases: Vec<(&str, String, BTreeSet<String>)> = vec![
        // Deals.
        ("deals", format!(r#"owner: "{owner}""#), set(["1", "2"])),
        ("deals", r#"settled: true"#.into(), set(["1"])),
        ("deals", r#"settled_not: true"#.into(), set(["2"])),
        ("deals", r#"epochs_gte: "3""#.into(), set(["1", "2"])),
        (
            "deals",
            format!(r#"repairer: "{:#x}""#, s.system.address(5)),
            set(["2"]),
        ),
        ("deals", r#"pricePerEpoch_lt: "2500000""#.into(), set(["2"])),
        ("deals", r#"replicaCount_gte: 2"#.into(), set(["1"])),
        ("deals", r#"provenEpochs_lte: "0""#.into(), set(["2"])),
        ("deals", r#"refund_gt: "0""#.into(), set(["1"])),
        ("deals", r#"settledBlock: null"#.into(), set(["2"])),
        // Replicas.
        ("dealReplicas", format!(r#"node: "{a}""#), set(["1-0"])),
        (
            "dealReplicas",
            format!(r#"node_not: "{a}""#),
            set(["1-1", "2-0"]),
        ),
        (
            "dealReplicas",
            format!(r#"payee_in: ["{payee_a}", "{payee_b}"], deal: "1""#),
            set(["1-0", "1-1"]),
        ),
        (
            "dealReplicas",
            r#"earned_gt: "0""#.into(),
            set(["1-0", "1-1"]),
        ),
        (
            "dealReplicas",
            format!(r#"node_starts_with: "{}""#, &b[..10]),
            set(["1-1"]),
        ),
        ("dealReplicas", r#"id_contains: "-1""#.into(), set(["1-1"])),
        ("dealReplicas", r#"moves_gt: "0""#.into(), set(["2-0"])),
        // Replica moves.
        ("replicaMoves", format!(r#"oldNode: "{b}""#), set(["2-0-1"])),
        ("replicaMoves", format!(r#"oldNode: "{a}""#), set([])),
        // Epochs.
        (
            "dealEpochs",
            r#"deal: "1""#.into(),
            set(["1-0", "1-1", "1-2"]),
        ),
        (
            "dealEpochs",
            r#"provenReplicas_gte: 1"#.into(),
            set(["1-0", "1-1"]),
        ),
        ("dealEpochs", r#"provenReplicas_lt: 1"#.into(), set(["1-2"])),
        (
            "dealEpochs",
            r#"epoch_not_in: ["0", "1"]"#.into(),
            set(["1-2"]),
        ),
        (
            "dealEpochs",
            r#"id_starts_with: "1-""#.into(),
            set(["1-0", "1-1", "1-2"]),
        ),
        // Proofs.
        (
            "proofs",
            r#"deal: "1""#.into(),
            set(["1-0-0", "1-0-1", "1-1-0"]),
        ),
        ("proofs", r#"epoch_gt: "0""#.into(), set(["1-0-1"])),
        (
            "proofs",
            r#"replica_lte: 0"#.into(),
            set(["1-0-0", "1-0-1"]),
        ),
        (
            "proofs",
            format!(r#"payee_not: "{payee_a}""#),
            set(["1-1-0"]),
        ),
        (
            "proofs",
            r#"epoch_in: ["0"]"#.into(),
            set(["1-0-0", "1-1-0"]),
        ),
        (
            "proofs",
            r#"id_not_in: ["1-0-0", "1-0-1"]"#.into(),
            set(["1-1-0"]),
        ),
        // Payees.
        (
            "storagePayees",
            r#"claimed_gt: "0""#.into(),
            BTreeSet::from([payee_a.clone()]),
        ),
        (
            "storagePayees",
            r#"unclaimed_gte: "1""#.into(),
            BTreeSet::from([payee_b.clone()]),
        ),
        (
            "storagePayees",
            format!(r#"id_contains: "{}""#, &payee_b[10..20]),
            BTreeSet::from([payee_b.clone()]),
        ),
        (
            "storagePayees",
            r#"proofCount_lt: "2""#.into(),
            BTreeSet::from([payee_b.clone()]),
        ),
    ];
    for (list, w, expected) in cases {
        let d = data(schema, &format!("{{ {list}(where: {{{w}}}) {{ id }} }}")).await;
        assert_eq!(ids(&d[list]), expected, "{list}(where: {{{w}}})");
    }
    // Ordering and keyset paging over proofs.
    let d = data(
        schema,
        r#"{ proofs(orderBy: epoch, orderDirection: desc, first: 1) { id } }"#,
    )
    .await;
    assert_eq!(d["proofs"][0]["id"], json!("1-0-1"));
    let d = data(schema, r#"{ proofs(first: 2, after: "1-0-0") { id } }"#).await;
    assert_eq!(ids(&d["proofs"]), set(["1-0-1", "1-1-0"]));
}

async fn storage_entities(kind: Kind) {
    let s = scenario().await;
    let t = TestDb::new(kind).await;
    let schema = index(&s, &t.db).await;
    matches_contract_state(&s, &schema).await;
    list_and_single(&schema, &t.db).await;
    graphql_filters(&s, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_storage_entities_match_the_market() {
    storage_entities(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_storage_entities_match_the_market() {
    storage_entities(Kind::Postgres).await;
}
