//! Acceptance on a real chain: anvil, the real contracts, real proofs. A deal runs four
//! epochs; the node proves three and misses one. It is paid exactly three epochs (minus the
//! platform fee) and the owner gets the fourth back once the deal has ended.
//!
//! The market is wired to a verifier generated from a small circuit (depth 6, k = 4) and
//! compiled with the repository's solc at test time, so the test proves in seconds; the
//! production verifier is checked against prover output in `tests/production.rs` and in
//! `contracts/test/StorageMarket.fixture.t.sol`.

use alloy::network::TransactionBuilder;
use alloy::primitives::{B256, Bytes, U256};
use alloy::providers::{Provider, ext::AnvilApi};
use alloy::rpc::types::TransactionRequest;
use decloud_prover::{
    CircuitParams, Keys, MerkleTree, SEGMENT_BYTES, epoch_seed, fr_to_be_bytes, generate_verifier,
    proof_to_solidity, prove, split_segments,
};
use decloud_sdk::bindings::{MockUSDC, NodeRegistry, StorageMarket, node_registry::INodeRegistry};
use decloud_sdk::testing::{SendOk as _, TestSystem};

const PARAMS: CircuitParams = CircuitParams {
    depth: 6,
    challenges: 4,
};
const EPOCH_BLOCKS: u64 = 20;
const PRICE: u128 = 2_500_000; // 2.5 USDC per epoch
const FEE_BPS: u16 = 500;

/// Compiles the generated verifier (as if it stood at contracts/src/Groth16Verifier.sol, so its
/// interface import resolves) and returns its creation bytecode.
fn compile_verifier(source: &str) -> Bytes {
    decloud_sdk::testing::compile_source(
        "contracts/src/Groth16Verifier.sol",
        source,
        "Groth16Verifier",
    )
}

fn word(bytes: [u8; 32]) -> U256 {
    U256::from_be_bytes(bytes)
}

async fn mine_to<P: Provider>(provider: &P, block: u64) {
    let now = provider.get_block_number().await.unwrap();
    if block > now {
        provider.anvil_mine(Some(block - now), None).await.unwrap();
    }
}

#[tokio::test]
async fn deal_pays_three_proven_epochs_and_refunds_the_missed_one() {
    let system = TestSystem::start().await.unwrap();
    let deployer = system.provider(0);
    let owner = system.provider(1);
    let operator = system.provider(2);
    let (owner_addr, operator_addr, treasury) =
        (system.address(1), system.address(2), system.address(3));
    let usdc_addr = system.deployment.usdc;
    let registry_addr = system.deployment.contracts.node_registry.address;

    // The node registers; its operator is who the market pays.
    let registry = NodeRegistry::new(registry_addr, &operator);
    let machine_id = B256::repeat_byte(0x11);
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
            machine_id,
            operator_addr,
            "eu-west".into(),
            caps,
            "wss://node".into(),
            "bafy".into(),
            prices,
        )
        .send_ok()
        .await;
    let node_id = registry
        .computeNodeId(machine_id, operator_addr)
        .call()
        .await
        .unwrap();

    // Verifier for the test circuit, then the market.
    let keys = Keys::dev_setup(PARAMS).unwrap();
    let bytecode = compile_verifier(&generate_verifier(keys.vk(), &PARAMS));
    let receipt = deployer
        .send_transaction(TransactionRequest::default().with_deploy_code(bytecode))
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let verifier = receipt.contract_address.unwrap();
    let market = StorageMarket::deploy(
        &deployer,
        usdc_addr,
        registry_addr,
        verifier,
        PARAMS.max_segments(),
        EPOCH_BLOCKS,
        system.address(0),
        treasury,
        FEE_BPS,
    )
    .await
    .unwrap();
    let market_addr = *market.address();

    // The owner commits to a file and funds a 4-epoch deal with one replica.
    let data: Vec<u8> = (0..45 * SEGMENT_BYTES - 17)
        .map(|i| ((i * 7 + i / 333) % 256) as u8)
        .collect();
    let tree = MerkleTree::from_data(&data, PARAMS.depth).unwrap();
    let segments = split_segments(&data);
    let usdc_owner = MockUSDC::new(usdc_addr, &owner);
    let owner_before = usdc_owner.balanceOf(owner_addr).call().await.unwrap();
    let operator_before = usdc_owner.balanceOf(operator_addr).call().await.unwrap();
    let treasury_before = usdc_owner.balanceOf(treasury).call().await.unwrap();
    let deposit = U256::from(PRICE * 4);
    usdc_owner.approve(market_addr, deposit).send_ok().await;
    let market_owner = StorageMarket::new(market_addr, &owner);
    market_owner
        .createDeal(
            vec![node_id],
            vec![word(fr_to_be_bytes(&tree.root()))],
            tree.segment_count(),
            PRICE,
            4,
        )
        .send_ok()
        .await;
    let deal_id = 1u64;
    let deal = market.getDeal(U256::from(deal_id)).call().await.unwrap();
    assert_eq!(deal.remaining, deposit);

    // Epochs 0, 1 and 2: the node records the randomness, proves and submits.
    let node_market = StorageMarket::new(market_addr, &operator);
    let mut last_proof = [U256::ZERO; 8];
    for epoch in 0u32..3 {
        let start: u64 = market
            .epochStartBlock(U256::from(deal_id), epoch)
            .call()
            .await
            .unwrap()
            .to();
        mine_to(&deployer, start + 1).await;
        node_market
            .recordEpochRandomness(U256::from(deal_id), epoch)
            .send_ok()
            .await;
        let randomness = market
            .epochRandomness(U256::from(deal_id), epoch)
            .call()
            .await
            .unwrap();
        let seed = epoch_seed(randomness.0, deal_id, 0, u64::from(epoch));
        let on_chain_seed = market
            .epochSeed(U256::from(deal_id), U256::ZERO, epoch)
            .call()
            .await
            .unwrap();
        assert_eq!(
            on_chain_seed,
            word(fr_to_be_bytes(&seed)),
            "Rust and Solidity derive the same seed"
        );

        let proof = prove(&keys, &tree, &segments, seed).unwrap();
        let words = proof_to_solidity(&proof).map(word);
        node_market
            .submitProof(U256::from(deal_id), U256::ZERO, epoch, words)
            .send_ok()
            .await;
        assert!(
            market
                .isProven(U256::from(deal_id), U256::ZERO, epoch)
                .call()
                .await
                .unwrap()
        );
        last_proof = words;
    }

    // Epoch 3: the node does not prove. Replaying epoch 2's proof is refused.
    let start: u64 = market
        .epochStartBlock(U256::from(deal_id), 3)
        .call()
        .await
        .unwrap()
        .to();
    mine_to(&deployer, start + 1).await;
    let replay = node_market
        .submitProof(U256::from(deal_id), U256::ZERO, 3, last_proof)
        .call()
        .await;
    let revert = replay
        .unwrap_err()
        .as_decoded_interface_error::<StorageMarket::StorageMarketErrors>();
    assert!(
        matches!(
            revert,
            Some(StorageMarket::StorageMarketErrors::InvalidProof(_))
        ),
        "{revert:?}"
    );

    // Before the end nothing can be refunded; after it, the owner gets epoch 3 back.
    assert!(
        market_owner
            .settle(U256::from(deal_id))
            .call()
            .await
            .is_err()
    );
    mine_to(&deployer, deal.startBlock + 4 * EPOCH_BLOCKS).await;
    market_owner.settle(U256::from(deal_id)).send_ok().await;
    node_market.claim().send_ok().await;
    market.withdrawFees().send_ok().await;

    let fee = PRICE * u128::from(FEE_BPS) / 10_000;
    let usdc = MockUSDC::new(usdc_addr, &deployer);
    let operator_after = usdc.balanceOf(operator_addr).call().await.unwrap();
    let owner_after = usdc.balanceOf(owner_addr).call().await.unwrap();
    assert_eq!(
        operator_after - operator_before,
        U256::from(3 * (PRICE - fee)),
        "paid exactly three epochs"
    );
    assert_eq!(
        owner_before - owner_after,
        U256::from(3 * PRICE),
        "fourth epoch refunded"
    );
    let treasury_after = usdc.balanceOf(treasury).call().await.unwrap();
    assert_eq!(
        treasury_after - treasury_before,
        U256::from(3 * fee),
        "fees of three epochs"
    );
    assert_eq!(
        usdc.balanceOf(market_addr).call().await.unwrap(),
        U256::ZERO,
        "market holds nothing after"
    );
    let settled = market.getDeal(U256::from(deal_id)).call().await.unwrap();
    assert!(settled.settled);
    assert_eq!(settled.provenEpochs, 3);
}
