//! Transactions sent through the SDK's signing provider carry a gas limit above the node's
//! estimate: a call whose cost depends on the block it lands in (here a storage write of
//! `block.timestamp`) must not run out of gas because the second turned after estimation.

use alloy::{
    primitives::{Address, keccak256},
    providers::Provider,
};
use decloud_sdk::{
    bindings::{NodeRegistry, node_registry::INodeRegistry},
    testing::TestSystem,
    tx::{self, GAS_ESTIMATE_PERCENT, gas_limit_with_margin},
};

#[test]
fn the_margin_rounds_up() {
    assert_eq!(gas_limit_with_margin(100), 100 * GAS_ESTIMATE_PERCENT / 100);
    assert_eq!(gas_limit_with_margin(101), 132);
    assert_eq!(gas_limit_with_margin(u64::MAX), u64::MAX);
}

#[tokio::test]
async fn sent_transactions_carry_the_margin_over_the_gas_they_use() {
    let system = TestSystem::start().await.unwrap();
    let operator = system.provider(1);
    let registry = NodeRegistry::new(system.deployment.contracts.node_registry.address, &operator);
    let machine_id = keccak256("gas-margin");
    let prices = INodeRegistry::Prices {
        cpuPerHour: 6_000,
        memoryGiBPerHour: 3_000,
        storageGiBPerHour: 60,
        gpuPerHour: 60_000,
    };
    let capabilities = INodeRegistry::Capabilities {
        vcpus: 4,
        memoryGiB: 8,
        diskGiB: 100,
        gpus: 0,
        bandwidthMbps: 100,
        architecture: 0,
        flags: 0,
    };
    tx::send(
        "NodeRegistry",
        registry.register(
            machine_id,
            Address::repeat_byte(1),
            "us".into(),
            capabilities,
            "wss://n".into(),
            "".into(),
            prices.clone(),
        ),
    )
    .await
    .unwrap();
    let node_id = keccak256([machine_id.as_slice(), system.address(1).as_slice()].concat());
    let repriced = INodeRegistry::Prices {
        cpuPerHour: 7_000,
        ..prices
    };
    let receipt = tx::send("NodeRegistry", registry.setPrices(node_id, repriced))
        .await
        .unwrap();
    let sent = operator
        .get_transaction_by_hash(receipt.transaction_hash)
        .await
        .unwrap()
        .unwrap();
    let limit = alloy::consensus::Transaction::gas_limit(&sent);
    // The estimate is at least what the call used; an unpadded limit would sit within a few
    // percent of it.
    assert!(
        limit * 100 >= receipt.gas_used * 125,
        "gas limit {limit} for {} gas used",
        receipt.gas_used
    );
}
