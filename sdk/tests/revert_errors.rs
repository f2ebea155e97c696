//! Reverts come back as typed custom errors of the contract that declares them, with their
//! arguments decoded, on a real anvil.

use alloy::primitives::{Address, U256, keccak256};
use decloud_sdk::{
    Error, RevertError,
    bindings::{
        CONTRACT_NAMES, LeaseEscrow, NodeRegistry, TemplateMarket,
        lease_escrow::{ILeaseEscrow, LeaseEscrow::LeaseEscrowErrors},
        node_registry::{INodeRegistry, NodeRegistry::NodeRegistryErrors},
        template_market::TemplateMarket::TemplateMarketErrors,
    },
    testing::TestSystem,
    tx,
    types::{Architecture, BandwidthTier, QualityTier},
};

#[test]
fn every_contract_of_contracts_src_has_bindings() {
    for name in [
        "AttestationAnchor",
        "LeaseEscrow",
        "MockUSDC",
        "NodeRegistry",
        "OperatorStaking",
        "TemplateMarket",
    ] {
        assert!(
            CONTRACT_NAMES.contains(&name),
            "{name} has no bindings: {CONTRACT_NAMES:?}"
        );
    }
    assert!(!NodeRegistry::BYTECODE.is_empty() && !LeaseEscrow::DEPLOYED_BYTECODE.is_empty());
}

#[tokio::test]
async fn reverts_decode_into_the_declaring_contracts_errors() {
    let system = TestSystem::start().await.unwrap();
    let d = &system.deployment;
    let (operator, stranger) = (system.provider(1), system.provider(2));
    let (operator_addr, stranger_addr) = (system.address(1), system.address(2));

    let registry = NodeRegistry::new(d.contracts.node_registry.address, operator.clone());
    let machine_id = keccak256("machine-rev");
    let capabilities = INodeRegistry::Capabilities {
        vcpus: 4,
        memoryGiB: 8,
        diskGiB: 100,
        gpus: 0,
        bandwidthMbps: 100,
        architecture: Architecture::X86_64.into(),
        flags: 0,
    };
    let prices = INodeRegistry::Prices {
        cpuPerHour: 0,
        memoryGiBPerHour: 0,
        storageGiBPerHour: 0,
        gpuPerHour: 0,
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
            prices,
        ),
    )
    .await
    .unwrap();
    let node_id = keccak256([machine_id.as_slice(), operator_addr.as_slice()].concat());

    // A stranger cannot pause someone else's node: NodeRegistry::NotNodeOperator { nodeId, caller }.
    let as_stranger = NodeRegistry::new(d.contracts.node_registry.address, stranger.clone());
    let err = tx::send("NodeRegistry", as_stranger.pause(node_id))
        .await
        .unwrap_err();
    match &err {
        Error::Revert(RevertError::NodeRegistry(NodeRegistryErrors::NotNodeOperator(e))) => {
            assert_eq!((e.nodeId, e.caller), (node_id, stranger_addr));
        }
        other => panic!("expected NotNodeOperator, got {other:?}"),
    }
    assert_eq!(err.revert().unwrap().contract(), "NodeRegistry");
    assert_eq!(
        err.revert().unwrap().signature(),
        "NotNodeOperator(bytes32,address)"
    );
    assert!(
        err.to_string()
            .starts_with("NodeRegistry reverted with NotNodeOperator(bytes32,address)"),
        "{err}"
    );

    // Reads decode too: LeaseEscrow::LeaseNotFound(99).
    let escrow = LeaseEscrow::new(d.contracts.lease_escrow.address, stranger.clone());
    let err = tx::read("LeaseEscrow", escrow.getLease(U256::from(99)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Revert(RevertError::LeaseEscrow(LeaseEscrowErrors::LeaseNotFound(e))) if e.leaseId == U256::from(99)),
        "{err:?}"
    );

    // Withdrawing more than the free balance: InsufficientBalance { requested, available }.
    let err = tx::send("LeaseEscrow", escrow.withdraw(U256::from(5)))
        .await
        .unwrap_err();
    match err {
        Error::Revert(RevertError::LeaseEscrow(LeaseEscrowErrors::InsufficientBalance(e))) => {
            assert_eq!((e.requested, e.available), (U256::from(5), U256::ZERO));
        }
        other => panic!("expected InsufficientBalance, got {other:?}"),
    }

    // OpenZeppelin's AccessControl errors are part of each contract's ABI: a stranger cannot pause.
    let err = tx::send("LeaseEscrow", escrow.pause()).await.unwrap_err();
    match err {
        Error::Revert(RevertError::LeaseEscrow(
            LeaseEscrowErrors::AccessControlUnauthorizedAccount(e),
        )) => {
            assert_eq!(e.account, stranger_addr);
            assert_eq!(e.neededRole, keccak256("PAUSER_ROLE"));
        }
        other => panic!("expected AccessControlUnauthorizedAccount, got {other:?}"),
    }

    // An error bubbling up from a nested call is found in the contract that declares it: the
    // escrow calls TemplateMarket.purchase, which reverts with PriceAboveMax.
    let author = TemplateMarket::new(d.contracts.template_market.address, system.provider(3));
    tx::send(
        "TemplateMarket",
        author.publish("bafy-template".into(), U256::from(2_000_000), "".into()),
    )
    .await
    .unwrap();
    let usdc = decloud_sdk::bindings::MockUSDC::new(d.usdc, stranger.clone());
    tx::send(
        "MockUSDC",
        usdc.approve(d.contracts.lease_escrow.address, U256::from(10_000_000)),
    )
    .await
    .unwrap();
    tx::send("LeaseEscrow", escrow.deposit(U256::from(10_000_000)))
        .await
        .unwrap();
    let open = escrow.openLease(
        node_id,
        ILeaseEscrow::Resources {
            vcpus: 1,
            memoryGiB: 1,
            storageGiB: 1,
            gpus: 0,
        },
        QualityTier::Standard.into(),
        BandwidthTier::Standard.into(),
        U256::from(1),
        U256::from(1_999_999),
        u64::MAX,
        U256::from(1_000_000),
    );
    let err = tx::send("LeaseEscrow", open).await.unwrap_err();
    match err {
        Error::Revert(RevertError::TemplateMarket(TemplateMarketErrors::PriceAboveMax(e))) => {
            assert_eq!(
                (e.price, e.maxPrice),
                (U256::from(2_000_000), U256::from(1_999_999))
            );
        }
        other => panic!("expected TemplateMarket PriceAboveMax, got {other:?}"),
    }

    // Nothing changed: the failed calls left the tenant's balance and the lease count alone.
    assert_eq!(
        tx::read("LeaseEscrow", escrow.balanceOf(stranger_addr))
            .await
            .unwrap(),
        U256::from(10_000_000)
    );
    assert_eq!(
        tx::read("LeaseEscrow", escrow.leaseCount()).await.unwrap(),
        U256::ZERO
    );
}
