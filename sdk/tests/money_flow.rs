//! The whole money flow on a real anvil, driven through the SDK: an operator registers a node with
//! prices below the floor, an author publishes a paid template, a tenant deposits with an
//! EIP-2612 permit signed in Rust and opens a lease, one hour passes, the operator claims and the
//! tenant closes; then everyone withdraws. Every balance is checked to the micro-USDC against
//! values computed here from the documented formulas, not read back from the contracts.
//! Finally an attestation root is anchored and a proof built in Rust verifies on-chain.

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    providers::{DynProvider, Provider, ext::AnvilApi as _},
};
use decloud_sdk::{
    USDC,
    bindings::{
        AttestationAnchor, LeaseEscrow, MockUSDC, NodeRegistry, TemplateMarket,
        lease_escrow::ILeaseEscrow, node_registry::INodeRegistry,
    },
    merkle::{MerkleTree, leaf_hash_of},
    permit::sign_permit,
    testing::{self, TEST_FUNDS, TestSystem},
    tx,
    types::{Architecture, BandwidthTier, LeaseStatus, QualityTier},
};

// Documented constants (ILeaseEscrow, ITemplateMarket, INodeRegistry, CONVENTIONS).
const CPU_FLOOR: u64 = 5_000;
const MEMORY_FLOOR: u64 = 2_500;
const STORAGE_FLOOR: u64 = 50;
const GPU_FLOOR: u64 = 50_000;
const PLATFORM_FEE_BPS: u64 = 500;
const TEMPLATE_PLATFORM_SHARE_BPS: u64 = 1_500;

/// The documented hourly rate for Dedicated (1:1) quality and Basic bandwidth (×1, +$0.005/h):
/// Σ price × amount + 5_000.
fn dedicated_basic_rate(prices: [u64; 4], resources: [u64; 4]) -> u64 {
    prices
        .iter()
        .zip(resources)
        .map(|(p, r)| p * r)
        .sum::<u64>()
        + 5_000
}

async fn usdc_balance(usdc: &MockUSDC::MockUSDCInstance<DynProvider>, who: Address) -> u64 {
    tx::read("MockUSDC", usdc.balanceOf(who))
        .await
        .unwrap()
        .to::<u64>()
}

#[tokio::test]
async fn money_flows_exactly_from_tenant_to_operator_author_and_treasury() {
    let system = TestSystem::start()
        .await
        .expect("anvil with the system deployed");
    let d = &system.deployment;
    let (governance, operator, tenant, author) = (
        system.provider(0),
        system.provider(1),
        system.provider(2),
        system.provider(3),
    );
    let (treasury_addr, operator_addr, tenant_addr, author_addr) = (
        d.roles.treasury,
        system.address(1),
        system.address(2),
        system.address(3),
    );
    assert_eq!(
        treasury_addr,
        system.address(0),
        "the treasury defaults to the deployer"
    );

    let usdc = MockUSDC::new(d.usdc, governance.clone());
    let escrow_addr = d.contracts.lease_escrow.address;
    let market_addr = d.contracts.template_market.address;
    let treasury_before = usdc_balance(&usdc, treasury_addr).await;
    for who in [operator_addr, tenant_addr, author_addr] {
        assert_eq!(usdc_balance(&usdc, who).await, TEST_FUNDS);
    }

    // 1. The operator registers a node asking less than every floor: stored clamped up to the floors.
    let registry = NodeRegistry::new(d.contracts.node_registry.address, operator.clone());
    let machine_id = keccak256("machine-0001");
    let capabilities = INodeRegistry::Capabilities {
        vcpus: 16,
        memoryGiB: 64,
        diskGiB: 1_000,
        gpus: 0,
        bandwidthMbps: 1_000,
        architecture: Architecture::X86_64.into(),
        flags: 1,
    };
    let asked = INodeRegistry::Prices {
        cpuPerHour: 1_000,
        memoryGiBPerHour: 1_000,
        storageGiBPerHour: 10,
        gpuPerHour: 1,
    };
    tx::send(
        "NodeRegistry",
        registry.register(
            machine_id,
            Address::repeat_byte(0x4e),
            "eu-west".into(),
            capabilities,
            "wss://node-1".into(),
            "".into(),
            asked,
        ),
    )
    .await
    .unwrap();
    // Node id = keccak256(abi.encodePacked(machineId, operator)), computed here independently.
    let node_id = keccak256([machine_id.as_slice(), operator_addr.as_slice()].concat());
    assert_eq!(
        tx::read(
            "NodeRegistry",
            registry.computeNodeId(machine_id, operator_addr)
        )
        .await
        .unwrap(),
        node_id
    );
    let node = tx::read("NodeRegistry", registry.getNode(node_id))
        .await
        .unwrap();
    assert_eq!(node.operator, operator_addr);
    assert_eq!(
        (
            node.prices.cpuPerHour,
            node.prices.memoryGiBPerHour,
            node.prices.storageGiBPerHour,
            node.prices.gpuPerHour
        ),
        (CPU_FLOOR, MEMORY_FLOOR, STORAGE_FLOOR, GPU_FLOOR),
        "prices below the floor are stored clamped to the floor"
    );

    // 2. The author publishes a paid template; the price is chosen so the 85/15 split rounds.
    let template_price: u64 = 2_345_679;
    let market = TemplateMarket::new(market_addr, author.clone());
    tx::send(
        "TemplateMarket",
        market.publish(
            "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi".into(),
            U256::from(template_price),
            "{}".into(),
        ),
    )
    .await
    .unwrap();
    let template_id = U256::from(1);
    // Platform share rounds down (against the platform); the author gets the exact remainder.
    let template_platform = template_price * TEMPLATE_PLATFORM_SHARE_BPS / 10_000;
    let template_author = template_price - template_platform;
    assert_eq!((template_platform, template_author), (351_851, 1_993_828));

    // 3. The tenant deposits 100 USDC with a permit signed here (no approve transaction).
    let deposit: u64 = 100 * USDC;
    let now = testing::latest_timestamp(&tenant).await.unwrap();
    let permit = sign_permit(
        &tenant,
        &system.signer(2),
        d.usdc,
        escrow_addr,
        U256::from(deposit),
        U256::from(now + 3_600),
    )
    .await
    .unwrap();
    let escrow = LeaseEscrow::new(escrow_addr, tenant.clone());
    tx::send(
        "LeaseEscrow",
        escrow.depositWithPermit(permit.value, permit.deadline, permit.v, permit.r, permit.s),
    )
    .await
    .unwrap();
    assert_eq!(
        tx::read("MockUSDC", usdc.nonces(tenant_addr))
            .await
            .unwrap(),
        U256::from(1),
        "the permit was used"
    );
    assert_eq!(
        tx::read("MockUSDC", usdc.allowance(tenant_addr, escrow_addr))
            .await
            .unwrap(),
        U256::ZERO
    );
    assert_eq!(
        tx::read("LeaseEscrow", escrow.balanceOf(tenant_addr))
            .await
            .unwrap(),
        U256::from(deposit)
    );

    // 4. The tenant opens a lease on the node with the template: 1 vCPU, 1 GiB, 1 GiB disk.
    let resources = ILeaseEscrow::Resources {
        vcpus: 1,
        memoryGiB: 1,
        storageGiB: 1,
        gpus: 0,
    };
    let rate = dedicated_basic_rate(
        [CPU_FLOOR, MEMORY_FLOOR, STORAGE_FLOOR, GPU_FLOOR],
        [1, 1, 1, 0],
    );
    assert_eq!(rate, 12_550);
    let funding: u64 = USDC;
    let opened = tx::send(
        "LeaseEscrow",
        escrow.openLease(
            node_id,
            resources,
            QualityTier::Dedicated.into(),
            BandwidthTier::Basic.into(),
            template_id,
            U256::from(template_price),
            u64::MAX,
            U256::from(funding),
        ),
    )
    .await
    .unwrap();
    let lease_id = U256::from(1);
    let lease = tx::read("LeaseEscrow", escrow.getLease(lease_id))
        .await
        .unwrap();
    assert_eq!(lease.ratePerHour, rate);
    assert_eq!(lease.operator, operator_addr);
    assert_eq!(lease.feeBps, PLATFORM_FEE_BPS as u16);
    let opened_at = lease.openedAt;
    let open_block = governance
        .get_block_by_number(opened.block_number.unwrap().into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(open_block.header.timestamp, opened_at);
    assert_eq!(usdc_balance(&usdc, market_addr).await, template_price);

    // 5. Exactly one hour later, in one block, the operator claims and the tenant closes.
    let escrow_as_operator = LeaseEscrow::new(escrow_addr, operator.clone());
    governance.anvil_set_auto_mine(false).await.unwrap();
    // Gas is estimated now, an hour before the block: give both calls room for the transfers they will make.
    let claim = escrow_as_operator.claim(vec![lease_id]).gas(500_000);
    let pending_claim = claim.send().await.unwrap();
    let close = escrow.closeLease(lease_id).gas(500_000);
    let pending_close = close.send().await.unwrap();
    testing::set_next_block_timestamp(&governance, opened_at + 3_600)
        .await
        .unwrap();
    testing::mine(&governance).await.unwrap();
    governance.anvil_set_auto_mine(true).await.unwrap();
    let claim_receipt = pending_claim.get_receipt().await.unwrap();
    let close_receipt = pending_close.get_receipt().await.unwrap();
    assert!(claim_receipt.status(), "claim failed");
    assert!(close_receipt.status(), "close failed");
    assert_eq!(claim_receipt.block_number, close_receipt.block_number);

    // Accrued = floor(rate × 3600 / 3600); the operator's share rounds down, the fee is the rest.
    let accrued = rate * 3_600 / 3_600;
    let operator_share = accrued * (10_000 - PLATFORM_FEE_BPS) / 10_000;
    let platform_fee = accrued - operator_share;
    assert_eq!(
        (accrued, operator_share, platform_fee),
        (12_550, 11_922, 628)
    );
    let refund = funding - accrued;
    let tenant_free = deposit - funding - template_price + refund;

    assert_eq!(
        usdc_balance(&usdc, operator_addr).await,
        TEST_FUNDS + operator_share
    );
    assert_eq!(usdc_balance(&usdc, tenant_addr).await, TEST_FUNDS - deposit);
    assert_eq!(
        tx::read("LeaseEscrow", escrow.balanceOf(tenant_addr))
            .await
            .unwrap(),
        U256::from(tenant_free)
    );
    assert_eq!(
        tx::read("LeaseEscrow", escrow.platformFees())
            .await
            .unwrap(),
        U256::from(platform_fee)
    );
    assert_eq!(
        tx::read("TemplateMarket", market.earningsOf(author_addr))
            .await
            .unwrap(),
        U256::from(template_author)
    );
    assert_eq!(
        tx::read("TemplateMarket", market.platformEarnings())
            .await
            .unwrap(),
        U256::from(template_platform)
    );
    // The escrow holds exactly the tenant's free balance and the unsent fee: nothing more, nothing less.
    assert_eq!(
        usdc_balance(&usdc, escrow_addr).await,
        tenant_free + platform_fee
    );
    let closed = tx::read("LeaseEscrow", escrow.getLease(lease_id))
        .await
        .unwrap();
    assert_eq!(
        LeaseStatus::try_from(closed.status).unwrap(),
        LeaseStatus::Closed
    );
    assert_eq!(closed.settled, U256::from(accrued));
    assert_eq!(closed.operatorPaid, U256::from(operator_share));

    // 6. Everyone takes their money out.
    tx::send("LeaseEscrow", escrow.withdraw(U256::from(tenant_free)))
        .await
        .unwrap();
    tx::send("TemplateMarket", market.withdrawEarnings(author_addr))
        .await
        .unwrap();
    tx::send(
        "LeaseEscrow",
        LeaseEscrow::new(escrow_addr, governance.clone()).withdrawPlatformFees(),
    )
    .await
    .unwrap();
    tx::send(
        "TemplateMarket",
        TemplateMarket::new(market_addr, governance.clone()).withdrawPlatformEarnings(),
    )
    .await
    .unwrap();

    assert_eq!(
        usdc_balance(&usdc, tenant_addr).await,
        TEST_FUNDS - template_price - accrued
    );
    assert_eq!(
        usdc_balance(&usdc, operator_addr).await,
        TEST_FUNDS + operator_share
    );
    assert_eq!(
        usdc_balance(&usdc, author_addr).await,
        TEST_FUNDS + template_author
    );
    assert_eq!(
        usdc_balance(&usdc, treasury_addr).await,
        treasury_before + platform_fee + template_platform
    );
    assert_eq!(usdc_balance(&usdc, escrow_addr).await, 0);
    assert_eq!(usdc_balance(&usdc, market_addr).await, 0);
    // Nothing was created or lost: what the tenant paid is what the others received.
    assert_eq!(
        template_price + accrued,
        operator_share + template_author + platform_fee + template_platform
    );

    // 7. An attestation batch is anchored; a proof built in Rust verifies on-chain, a tampered one does not.
    let attestations: Vec<B256> = (0u64..5)
        .map(|sequence| {
            leaf_hash_of(&(
                sequence,
                lease_id,
                format!("lease {lease_id} event {sequence}"),
            ))
        })
        .collect();
    let tree = MerkleTree::new(attestations.clone()).unwrap();
    let anchor = AttestationAnchor::new(d.contracts.attestation_anchor.address, governance.clone());
    tx::send(
        "AttestationAnchor",
        anchor.anchor(tree.root(), 5, 0, "ipfs://batch-0".into()),
    )
    .await
    .unwrap();
    let batch_id = U256::ZERO;
    for leaf in &attestations {
        let proof = tree.proof(leaf).unwrap();
        assert!(
            tx::read(
                "AttestationAnchor",
                anchor.verify(batch_id, *leaf, proof.clone())
            )
            .await
            .unwrap()
        );
    }
    let leaf = attestations[3];
    let mut tampered = tree.proof(&leaf).unwrap();
    tampered[0].0[0] ^= 1;
    assert!(
        !tx::read("AttestationAnchor", anchor.verify(batch_id, leaf, tampered))
            .await
            .unwrap()
    );
    let forged = leaf_hash_of(&(3u64, lease_id, "lease 1 event 3, edited".to_string()));
    assert!(
        !tx::read(
            "AttestationAnchor",
            anchor.verify(batch_id, forged, tree.proof(&leaf).unwrap())
        )
        .await
        .unwrap()
    );
}
