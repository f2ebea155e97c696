//! Storage proof outcomes on the real contracts, attested by the orchestrator's chain follower.
//!
//! A node registers in the SDK's deployment; a StorageMarket is wired to a Groth16 verifier
//! generated from a small circuit (depth 6, 4 challenges) so that proving takes seconds. An owner
//! funds a 2-epoch, one-replica deal; epoch 0 is proven with a real proof, epoch 1 is challenged
//! (its randomness recorded) and never proven; in epoch 1 the owner names a repairer, moves the
//! replica to a second node and ends the deal; the ended deal is settled and refunds epoch 1.
//! The orchestrator's handler follows the chain with an attestor: every outcome must be attested
//! under the deal with the event's data, and the whole log must verify.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use decloud_indexer::{Follower, FollowerConfig};
use decloud_orchestrator::Store;
use decloud_orchestrator::attestation::Attestor;
use decloud_orchestrator::chain::{ChainHandler, Markets};
use decloud_prover::{
    CircuitParams, Keys, MerkleTree, SEGMENT_BYTES, epoch_seed, fr_to_be_bytes, generate_verifier,
    proof_to_solidity, prove, split_segments,
};
use decloud_sdk::bindings::{MockUSDC, NodeRegistry, StorageMarket, node_registry::INodeRegistry};
use decloud_sdk::testing::{SendOk as _, TestSystem};
use serde_json::{Value, json};
use std::sync::Arc;

const PARAMS: CircuitParams = CircuitParams {
    depth: 6,
    challenges: 4,
};
const EPOCH_BLOCKS: u64 = 10;
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

/// Registers a node for account `who`; its id.
async fn register(system: &TestSystem, who: usize) -> B256 {
    let p = system.provider(who);
    let registry = NodeRegistry::new(system.deployment.contracts.node_registry.address, &p);
    let machine = keccak256("storage-node");
    registry
        .register(
            machine,
            system.address(who),
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

/// A StorageMarket wired to the small circuit's verifier (compiled by the repository's solc).
async fn deploy_market(system: &TestSystem, keys: &Keys) -> Address {
    let deployer = system.provider(0);
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
    *StorageMarket::deploy(
        &deployer,
        system.deployment.usdc,
        system.deployment.contracts.node_registry.address,
        receipt.contract_address.unwrap(),
        PARAMS.max_segments(),
        EPOCH_BLOCKS,
        system.address(0),
        system.address(9),
        FEE_BPS,
    )
    .await
    .unwrap()
    .address()
}

/// The attestations of `subject` as (kind, event args).
async fn attested(store: &Store, subject: &str) -> Vec<(String, Value)> {
    store
        .attestations_of(subject, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| {
            let p: Value = serde_json::from_str(&a.payload).unwrap();
            (a.kind, p["args"].clone())
        })
        .collect()
}

/// Follows the chain to its head with the orchestrator's handler into a fresh SQLite store.
async fn follow(
    system: &TestSystem,
    markets: Markets,
    attestor: &Attestor,
    dir: &std::path::Path,
) -> Store {
    let url = format!("sqlite:{}", dir.join("o.db").display());
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_attestor(attestor.clone());
    let c = &system.deployment.contracts;
    let handler = ChainHandler::with_markets(
        c.node_registry.address,
        c.lease_escrow.address,
        markets,
        Arc::new(tokio::sync::Notify::new()),
    )
    .with_attestor(attestor.clone());
    let config = FollowerConfig::new(
        "orchestrator",
        handler.addresses(),
        system.deployment.deploy_block,
    );
    Follower::new(
        system.provider(0),
        store.follower_database(),
        config,
        handler,
    )
    .sync_to_head()
    .await
    .unwrap();
    store
}

#[tokio::test]
async fn storage_proof_outcomes_are_attested_per_deal() {
    let system = TestSystem::start().await.unwrap();
    let owner = system.provider(1);
    let node = register(&system, 2).await;
    let keys = Keys::dev_setup(PARAMS).unwrap();
    let market = deploy_market(&system, &keys).await;

    let data: Vec<u8> = (0..40 * SEGMENT_BYTES - 5)
        .map(|i| (i * 7 + i / 333) as u8)
        .collect();
    let tree = MerkleTree::from_data(&data, PARAMS.depth).unwrap();
    MockUSDC::new(system.deployment.usdc, &owner)
        .approve(market, U256::MAX)
        .send_ok()
        .await;
    StorageMarket::new(market, &owner)
        .createDeal(
            vec![node],
            vec![word(fr_to_be_bytes(&tree.root()))],
            tree.segment_count(),
            PRICE,
            2,
        )
        .send_ok()
        .await;

    // Epoch 0: the replica proves; the proof records the epoch's randomness, which a static
    // call tells in advance.
    let deal = U256::from(1);
    let reader = system.provider(0);
    let view = StorageMarket::new(market, &reader);
    let start: u64 = view.epochStartBlock(deal, 0).call().await.unwrap().to();
    mine_to(&reader, start + 1).await;
    let randomness = view.recordEpochRandomness(deal, 0).call().await.unwrap();
    let seed = epoch_seed(randomness.0, 1, 0, 0);
    let proof = prove(&keys, &tree, &split_segments(&data), seed).unwrap();
    StorageMarket::new(market, &system.provider(2))
        .submitProof(deal, U256::ZERO, 0, proof_to_solidity(&proof).map(word))
        .send_ok()
        .await;
    // Epoch 1: challenged (its randomness recorded by anyone) and never proven.
    let start: u64 = view.epochStartBlock(deal, 1).call().await.unwrap().to();
    mine_to(&reader, start + 1).await;
    StorageMarket::new(market, &reader)
        .recordEpochRandomness(deal, 1)
        .send_ok()
        .await;
    let challenge_1 = view.epochRandomness(deal, 1).call().await.unwrap();
    // In its last epoch the owner names a repairer, moves the replica to a second node and ends
    // the deal (already in its last epoch: the end stays).
    let second = register(&system, 3).await;
    let as_owner = StorageMarket::new(market, &owner);
    as_owner
        .setRepairer(deal, system.address(4))
        .send_ok()
        .await;
    as_owner
        .replaceReplica(deal, U256::ZERO, second, U256::from(99))
        .send_ok()
        .await;
    as_owner.endDeal(deal).send_ok().await;
    mine_to(&reader, start + EPOCH_BLOCKS).await;
    StorageMarket::new(market, &reader)
        .settle(deal)
        .send_ok()
        .await;

    let attestor = Attestor::new(
        PrivateKeySigner::random(),
        31337,
        Address::repeat_byte(0xaa),
    );
    let markets = Markets {
        storage_market: Some(market),
        ..Markets::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = follow(&system, markets, &attestor, dir.path()).await;

    let fee = PRICE * u128::from(FEE_BPS) / 10_000;
    let owner_address = format!("{:#x}", system.address(1));
    let payee = format!("{:#x}", system.address(2));
    let outcomes = attested(&store, "deal:1").await;
    let kinds: Vec<&str> = outcomes.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "storage.deal_created",
            "storage.epoch_challenged",
            "storage.epoch_proven",
            "storage.epoch_challenged",
            "storage.repairer_set",
            "storage.replica_replaced",
            "storage.deal_ended",
            "storage.deal_settled",
        ]
    );
    let created = &outcomes[0].1;
    assert_eq!(created["owner"], json!(owner_address));
    assert_eq!(created["epochs"], json!("2"));
    assert_eq!(created["deposit"], json!((PRICE * 2).to_string()));
    assert_eq!(
        created["replicas"][0]["nodeId"],
        json!(format!("{node:#x}"))
    );
    assert_eq!(outcomes[1].1["epoch"], json!("0"));
    assert_eq!(
        outcomes[1].1["randomness"],
        json!(format!("{randomness:#x}")),
        "the challenge is the randomness the proof answered"
    );
    let proven = &outcomes[2].1;
    assert_eq!(
        (
            &proven["replica"],
            &proven["epoch"],
            &proven["payee"],
            &proven["nodeAmount"],
            &proven["fee"]
        ),
        (
            &json!("0"),
            &json!("0"),
            &json!(payee),
            &json!((PRICE - fee).to_string()),
            &json!(fee.to_string())
        )
    );
    assert_eq!(
        (&outcomes[3].1["epoch"], &outcomes[3].1["randomness"]),
        (&json!("1"), &json!(format!("{challenge_1:#x}")))
    );
    assert_eq!(
        outcomes[4].1["repairer"],
        json!(format!("{:#x}", system.address(4)))
    );
    let moved = &outcomes[5].1;
    assert_eq!(
        (
            &moved["replica"],
            &moved["oldNode"],
            &moved["newNode"],
            &moved["newRoot"],
            &moved["payee"]
        ),
        (
            &json!("0"),
            &json!(format!("{node:#x}")),
            &json!(format!("{second:#x}")),
            &json!("99"),
            &json!(format!("{:#x}", system.address(3)))
        )
    );
    assert_eq!(outcomes[6].1["epochs"], json!("2"));
    // The refund is the unproven epoch 1's price.
    assert_eq!(
        (&outcomes[7].1["owner"], &outcomes[7].1["refund"]),
        (&json!(owner_address), &json!(PRICE.to_string()))
    );
    let settled: Value =
        serde_json::from_str(&store.attestations_of("deal:1", None, 100).await.unwrap()[7].payload)
            .unwrap();
    assert_eq!(settled["event"], json!("DealSettled"));
    assert!(settled["transaction_hash"].is_string());

    // The node's registration and the deal's outcomes are one signed, unbroken chain.
    let node_events = attested(&store, &format!("node:{node:#x}")).await;
    assert_eq!(
        node_events.first().map(|(k, _)| k.as_str()),
        Some("node.registered")
    );
    let count = store.attestation_count().await.unwrap();
    let second_events = attested(&store, &format!("node:{second:#x}")).await;
    assert_eq!(
        count,
        node_events.len() as u64 + second_events.len() as u64 + 8
    );
    let mut previous = None;
    for id in 0..count {
        let a = store.attestation(id).await.unwrap().unwrap();
        decloud_sdk::attestation::check_record(&a, attestor.domain(), attestor.address()).unwrap();
        decloud_sdk::attestation::check_link(&a, id, previous.as_ref()).unwrap();
        previous = Some(a);
    }
    store.close().await;

    // Without the market configured, the same chain attests no storage outcome.
    let dir = tempfile::tempdir().unwrap();
    let store = follow(&system, Markets::default(), &attestor, dir.path()).await;
    assert!(attested(&store, "deal:1").await.is_empty());
    assert_eq!(
        store.attestation_count().await.unwrap(),
        node_events.len() as u64 + second_events.len() as u64
    );
    store.close().await;
}
