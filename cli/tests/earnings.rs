//! An operator's earnings through the real `decloud` binary against anvil with the whole system
//! deployed: an operator with two nodes earns from three leases (another operator from a
//! fourth), closed by their tenant or terminated by the arbiter (whose `lease show` says why); `decloud operator earnings` lists what each lease and each node can claim, equal to
//! the operator's share of what the contract settled; `decloud operator claim --all` claims them
//! all in one `claim(uint256[])` transaction, paying exactly the listed total; a second
//! `claim --all` is refused with nothing to claim and sends nothing.

mod support;

use alloy::{
    primitives::{Address, B256, U256},
    providers::Provider,
};
use decloud_sdk::{
    agent_protocol,
    bindings::{LeaseEscrow, MockUSDC, NodeRegistry, node_registry::INodeRegistry},
    testing::increase_time,
    tx,
    types::Architecture,
};
use support::{Cli, micro};

const OPERATOR: usize = 1;
const OTHER_OPERATOR: usize = 2;
const TENANT: usize = 3;

/// Registers a node of `account` named `machine` and returns its id.
async fn register(cli: &Cli, account: usize, machine: &str) -> B256 {
    let operator = cli.system.address(account);
    let machine_id = agent_protocol::machine_id(machine);
    let registry = NodeRegistry::new(
        cli.system.deployment.contracts.node_registry.address,
        cli.system.provider(account),
    );
    tx::send(
        "NodeRegistry",
        registry.register(
            machine_id,
            Address::repeat_byte(0x42),
            "eu-west".into(),
            INodeRegistry::Capabilities {
                vcpus: 8,
                memoryGiB: 16,
                diskGiB: 200,
                gpus: 0,
                bandwidthMbps: 1_000,
                architecture: Architecture::X86_64.into(),
                flags: 1,
            },
            "https://node.example:8443".into(),
            "".into(),
            INodeRegistry::Prices {
                cpuPerHour: 6_000,
                memoryGiBPerHour: 3_000,
                storageGiBPerHour: 50,
                gpuPerHour: 0,
            },
        ),
    )
    .await
    .expect("the node registers");
    agent_protocol::node_id(machine_id, operator)
}

#[tokio::test]
async fn operator_lists_earnings_per_node_and_lease_and_claims_them_all_at_once() {
    let cli = Cli::start().await;
    let observer = cli.system.provider(0);
    let escrow = LeaseEscrow::new(
        cli.system.deployment.contracts.lease_escrow.address,
        &observer,
    );
    let node_a = register(&cli, OPERATOR, "earnings-a").await;
    let node_b = register(&cli, OPERATOR, "earnings-b").await;
    let elsewhere = register(&cli, OTHER_OPERATOR, "earnings-c").await;

    // Nothing earned yet: claiming everything is refused, and nothing is sent.
    let nonce = |account: usize| {
        let observer = observer.clone();
        let address = cli.system.address(account);
        async move { observer.get_transaction_count(address).await.unwrap() }
    };
    let before = nonce(OPERATOR).await;
    let refused = cli.run(OPERATOR, &["operator", "claim", "--all", "--yes"]);
    assert!(
        refused.failure().contains("nothing to claim"),
        "{refused:#?}"
    );
    assert_eq!(nonce(OPERATOR).await, before, "nothing was sent");

    // Leases 1 and 2 on node A, 3 on node B (the operator's), 4 on the other operator's node.
    cli.ok(TENANT, &["deposit", "50"]);
    for (node, vcpus) in [
        (node_a, "1"),
        (node_a, "2"),
        (node_b, "3"),
        (elsewhere, "1"),
    ] {
        cli.ok(
            TENANT,
            &[
                "lease",
                "open",
                "--node",
                &node.to_string(),
                "--vcpus",
                vcpus,
                "--funding",
                "5",
            ],
        );
    }
    // Two hours later the tenant closes three of them and the arbiter terminates the one on node
    // B (its node went silent): what they settled no longer moves.
    increase_time(&observer, 7_200).await.unwrap();
    for lease in ["1", "2", "4"] {
        cli.ok(TENANT, &["lease", "close", lease]);
    }
    let now = observer
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap()
        .header
        .timestamp;
    tx::send("LeaseEscrow", escrow.terminateLease(U256::from(3), now))
        .await
        .expect("the arbiter (account 0) terminates lease 3");
    // The tenant sees why it ended, and when.
    let shown = cli.ok(TENANT, &["lease", "show", "3"]);
    assert_eq!(shown["status"], "terminated", "{shown}");
    assert_eq!(shown["ended_at"], now, "{shown}");
    assert!(
        shown["why"].as_str().unwrap().contains("node went silent"),
        "{shown}"
    );
    let closed = cli.ok(TENANT, &["lease", "show", "1"]);
    assert_eq!(closed["status"], "closed", "{closed}");
    assert!(closed["ended_at"].as_u64().unwrap() > 0, "{closed}");
    assert!(closed.get("why").is_none(), "{closed}");

    // Our own arithmetic: the operator's share of each settled amount, rounded down.
    let mut expected = Vec::new();
    for id in 1..=3u64 {
        let lease = tx::read("LeaseEscrow", escrow.getLease(U256::from(id)))
            .await
            .unwrap();
        assert!(lease.settled > U256::ZERO, "lease {id} accrued");
        let share = lease.settled * U256::from(10_000 - lease.feeBps) / U256::from(10_000);
        expected.push((id, lease.nodeId, share.to::<u64>()));
    }
    let total: u64 = expected.iter().map(|(_, _, s)| s).sum();

    let listed = cli.ok(OPERATOR, &["operator", "earnings"]);
    assert_eq!(micro(&listed["claimable"]), total, "{listed}");
    let leases = listed["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 3, "only this operator's leases: {listed}");
    for ((id, node, share), shown) in expected.iter().zip(leases) {
        assert_eq!(shown["lease"], id.to_string(), "{listed}");
        assert_eq!(shown["node"], node.to_string(), "{listed}");
        let status = if *id == 3 { "terminated" } else { "closed" };
        assert_eq!(shown["status"], status, "{listed}");
        assert_eq!(micro(&shown["claimable"]), *share, "lease {id}: {listed}");
    }
    let per_node = |node: B256| -> u64 {
        expected
            .iter()
            .filter(|(_, n, _)| *n == node)
            .map(|(_, _, s)| s)
            .sum()
    };
    let nodes = listed["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{listed}");
    for shown in nodes {
        let node: B256 = shown["node"].as_str().unwrap().parse().unwrap();
        assert!(node == node_a || node == node_b, "{listed}");
        assert_eq!(micro(&shown["claimable"]), per_node(node), "{listed}");
    }
    // Text output names both nodes and every lease.
    let text = cli.run(OPERATOR, &["operator", "earnings"]);
    assert_eq!(text.code, Some(0), "{text:#?}");
    for needle in [node_a.to_string(), node_b.to_string(), "lease 3".into()] {
        assert!(text.stdout.contains(&needle), "{needle}: {}", text.stdout);
    }

    // Claim everything: one transaction, exactly the listed total.
    let usdc = MockUSDC::new(cli.system.deployment.usdc, &observer);
    let operator = cli.system.address(OPERATOR);
    let wallet_before = tx::read("MockUSDC", usdc.balanceOf(operator))
        .await
        .unwrap();
    let before = nonce(OPERATOR).await;
    let claimed = cli.ok(OPERATOR, &["operator", "claim", "--all"]);
    assert_eq!(nonce(OPERATOR).await, before + 1, "one transaction");
    assert_eq!(claimed["leases"], serde_json::json!(["1", "2", "3"]));
    assert_eq!(micro(&claimed["paid"]), total, "{claimed}");
    let wallet_after = tx::read("MockUSDC", usdc.balanceOf(operator))
        .await
        .unwrap();
    assert_eq!(wallet_after - wallet_before, U256::from(total));
    for (id, _, share) in &expected {
        let lease = tx::read("LeaseEscrow", escrow.getLease(U256::from(*id)))
            .await
            .unwrap();
        assert_eq!(lease.operatorPaid, U256::from(*share), "lease {id}");
    }
    // The other operator's lease is untouched.
    let theirs = tx::read("LeaseEscrow", escrow.getLease(U256::from(4)))
        .await
        .unwrap();
    assert_eq!(theirs.operatorPaid, U256::ZERO);

    // Everything claimed: listing shows zero, claiming again is refused and sends nothing.
    let listed = cli.ok(OPERATOR, &["operator", "earnings"]);
    assert_eq!(micro(&listed["claimable"]), 0, "{listed}");
    let before = nonce(OPERATOR).await;
    let refused = cli.run(OPERATOR, &["operator", "claim", "--all", "--yes"]);
    assert!(
        refused.failure().contains("nothing to claim"),
        "{refused:#?}"
    );
    assert_eq!(nonce(OPERATOR).await, before, "nothing was sent");
}
