//! Every role's daily work through the real `decloud` binary against anvil with the whole system
//! deployed: an operator registers a node, prices and stakes it; an author publishes a template;
//! a tenant deposits, opens a lease with that template, tops it up, closes it and withdraws; the
//! operator claims, the author withdraws. Every balance is checked against the contracts to the
//! micro-USDC. Reverting and unconfirmed commands change nothing.

mod support;

use std::path::Path;

use alloy::{
    primitives::{Address, B256, U256},
    providers::Provider,
};
use decloud_content::{ContentStore as _, EmbeddedStore, parse_cid};
use decloud_sdk::{
    USDC, agent_protocol,
    bindings::{LeaseEscrow, MockUSDC, NodeRegistry, OperatorStaking, TemplateMarket},
    deploy::DEFAULT_UNBONDING_PERIOD,
    testing::{TEST_FUNDS, increase_time},
    tx,
};
use decloud_templates::Bundle;
use support::{Cli, micro};

const OPERATOR: usize = 1;
const AUTHOR: usize = 2;
const TENANT: usize = 3;

fn seed(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../templates/seed")
        .join(name)
        .display()
        .to_string()
}

/// Reads the contracts as an observer.
struct Chain<'a> {
    cli: &'a Cli,
    provider: alloy::providers::DynProvider,
}

impl<'a> Chain<'a> {
    fn new(cli: &'a Cli) -> Self {
        Self {
            cli,
            provider: cli.system.provider(0),
        }
    }

    fn escrow(&self) -> LeaseEscrow::LeaseEscrowInstance<&alloy::providers::DynProvider> {
        LeaseEscrow::new(
            self.cli.system.deployment.contracts.lease_escrow.address,
            &self.provider,
        )
    }

    fn market(&self) -> TemplateMarket::TemplateMarketInstance<&alloy::providers::DynProvider> {
        TemplateMarket::new(
            self.cli.system.deployment.contracts.template_market.address,
            &self.provider,
        )
    }

    fn staking(&self) -> OperatorStaking::OperatorStakingInstance<&alloy::providers::DynProvider> {
        OperatorStaking::new(
            self.cli
                .system
                .deployment
                .contracts
                .operator_staking
                .address,
            &self.provider,
        )
    }

    async fn wallet(&self, account: usize) -> U256 {
        let usdc = MockUSDC::new(self.cli.system.deployment.usdc, &self.provider);
        tx::read("MockUSDC", usdc.balanceOf(self.cli.system.address(account)))
            .await
            .unwrap()
    }

    async fn escrow_free(&self, account: usize) -> U256 {
        tx::read(
            "LeaseEscrow",
            self.escrow().balanceOf(self.cli.system.address(account)),
        )
        .await
        .unwrap()
    }

    async fn nonce(&self, account: usize) -> u64 {
        self.provider
            .get_transaction_count(self.cli.system.address(account))
            .await
            .unwrap()
    }
}

fn usdc(amount: u64) -> U256 {
    U256::from(amount)
}

#[tokio::test]
async fn operator_author_and_tenant_do_their_daily_work() {
    let cli = Cli::start().await;
    let chain = Chain::new(&cli);
    let operator = cli.system.address(OPERATOR);

    // Operator: register the node the agent's `init` printed, then reprice and stake it.
    let machine_id = agent_protocol::machine_id("machine-under-test");
    let node_id = agent_protocol::node_id(machine_id, operator);
    let node_key = Address::repeat_byte(0x42);
    let registered = cli.ok(
        OPERATOR,
        &[
            "operator",
            "register",
            "--machine-id",
            &machine_id.to_string(),
            "--node-key",
            &node_key.to_string(),
            "--node-id",
            &node_id.to_string(),
            "--region",
            "eu-west",
            "--endpoint",
            "https://node.example:8443",
            "--vcpus",
            "8",
            "--memory",
            "16",
            "--disk",
            "200",
            "--cpu-price",
            "0.006",
            "--memory-price",
            "0.003",
            "--public-ipv4",
        ],
    );
    assert_eq!(registered["action"], "operator register");
    assert_eq!(registered["node"], node_id.to_string());
    assert!(registered["block"].as_u64().unwrap() > 0);
    assert!(registered["tx_hash"].as_str().unwrap().starts_with("0x"));
    let registry = NodeRegistry::new(
        cli.system.deployment.contracts.node_registry.address,
        &chain.provider,
    );
    let node = tx::read("NodeRegistry", registry.getNode(node_id))
        .await
        .unwrap();
    assert_eq!(node.operator, operator);
    assert_eq!(node.nodeKey, node_key);
    assert_eq!(node.region, "eu-west");
    assert_eq!(node.capabilities.vcpus, 8);
    assert_eq!(node.capabilities.flags, 1);
    assert_eq!(node.prices.cpuPerHour, 6_000);
    assert_eq!(node.prices.memoryGiBPerHour, 3_000);
    assert_eq!(
        micro(&registered["stored_prices"]["cpu_per_hour"]),
        6_000,
        "the report shows what the registry stored"
    );

    // A node id printed for another operator is refused before anything is sent.
    let wrong = cli.run(
        OPERATOR,
        &[
            "operator",
            "register",
            "--machine-id",
            &B256::repeat_byte(1).to_string(),
            "--node-key",
            &node_key.to_string(),
            "--node-id",
            &node_id.to_string(),
            "--region",
            "x",
            "--vcpus",
            "1",
            "--memory",
            "1",
            "--disk",
            "1",
            "--yes",
        ],
    );
    assert!(
        wrong.failure().contains("is not this machine's id"),
        "{wrong:#?}"
    );

    let priced = cli.ok(
        OPERATOR,
        &[
            "operator",
            "pricing",
            &node_id.to_string(),
            "--cpu-price",
            "0.007",
            "--memory-price",
            "0.003",
        ],
    );
    assert_eq!(micro(&priced["stored_prices"]["cpu_per_hour"]), 7_000);
    let node = tx::read("NodeRegistry", registry.getNode(node_id))
        .await
        .unwrap();
    assert_eq!(node.prices.cpuPerHour, 7_000);

    let operator_wallet = chain.wallet(OPERATOR).await;
    assert_eq!(operator_wallet, usdc(TEST_FUNDS));
    let staked = cli.ok(OPERATOR, &["operator", "stake", "100.5"]);
    assert_eq!(micro(&staked["amount"]), 100_500_000);
    assert_eq!(micro(&staked["active_stake"]), 100_500_000);
    assert_eq!(
        tx::read("OperatorStaking", chain.staking().activeStakeOf(operator))
            .await
            .unwrap(),
        usdc(100_500_000)
    );
    assert_eq!(chain.wallet(OPERATOR).await, usdc(TEST_FUNDS - 100_500_000));

    // Author: publish a seed template at 2.5 USDC per deploy.
    let content = tempfile::tempdir().unwrap();
    let published = cli.ok(
        AUTHOR,
        &[
            "template",
            "publish",
            &seed("postgresql"),
            "--price",
            "2.5",
            "--content-dir",
            &content.path().display().to_string(),
        ],
    );
    let template_id = published["template"].as_str().unwrap().to_string();
    assert_eq!(template_id, "1");
    let bundle = Bundle::load_dir(seed("postgresql")).unwrap();
    let cid = bundle.cid().to_string();
    assert_eq!(published["cid"], cid);
    let template = tx::read("TemplateMarket", chain.market().getTemplate(U256::from(1)))
        .await
        .unwrap();
    assert_eq!(template.author, cli.system.address(AUTHOR));
    assert_eq!(template.cid, cid);
    assert_eq!(template.price, usdc(2_500_000));
    let store = EmbeddedStore::open_with(
        content.path(),
        decloud_templates::BUNDLE_CID_OPTIONS,
        decloud_content::DEFAULT_MAX_OBJECT_SIZE,
    )
    .await
    .unwrap();
    let stored = store.get(&parse_cid(&cid).unwrap()).await.unwrap();
    assert_eq!(
        Bundle::from_content(&stored).unwrap(),
        bundle,
        "the bundle the template names is stored under its CID"
    );

    // Tenant: deposit, open a lease with the template, top up, close, withdraw.
    let deposited = cli.ok(TENANT, &["deposit", "50"]);
    assert_eq!(micro(&deposited["amount"]), 50 * USDC);
    assert_eq!(chain.escrow_free(TENANT).await, usdc(50 * USDC));
    assert_eq!(chain.wallet(TENANT).await, usdc(TEST_FUNDS - 50 * USDC));

    let opened = cli.ok(
        TENANT,
        &[
            "lease",
            "open",
            "--node",
            &node_id.to_string(),
            "--vcpus",
            "2",
            "--memory",
            "2",
            "--storage",
            "20",
            "--tier",
            "dedicated",
            "--template",
            &template_id,
            "--funding",
            "10",
        ],
    );
    assert_eq!(opened["lease"], "1");
    let rate = micro(&opened["rate_per_hour"]);
    let quoted = tx::read("LeaseEscrow", chain.escrow().getLease(U256::from(1)))
        .await
        .unwrap();
    assert_eq!(
        quoted.ratePerHour, rate,
        "the preview's rate is the lease's"
    );
    assert_eq!(micro(&opened["template_price"]), 2_500_000);
    assert_eq!(micro(&opened["total"]), 12_500_000);
    assert_eq!(quoted.funded, usdc(10 * USDC));
    assert_eq!(quoted.templateId, U256::from(1));
    assert_eq!(
        chain.escrow_free(TENANT).await,
        usdc(50 * USDC - 10 * USDC - 2_500_000)
    );
    let (author_share, platform_share) = {
        let split = tx::read("TemplateMarket", chain.market().splitPrice(usdc(2_500_000)))
            .await
            .unwrap();
        (split.authorShare, split.platformShare)
    };
    assert_eq!(author_share + platform_share, usdc(2_500_000));
    assert_eq!(
        tx::read(
            "TemplateMarket",
            chain
                .market()
                .purchasesOf(U256::from(1), cli.system.address(TENANT))
        )
        .await
        .unwrap(),
        U256::from(1),
        "opening the lease bought one deploy of the template"
    );

    let topped = cli.ok(TENANT, &["lease", "topup", "1", "5.25"]);
    assert_eq!(micro(&topped["funded"]), 15_250_000);
    let free_before_close = usdc(50 * USDC - 10 * USDC - 2_500_000 - 5_250_000);
    assert_eq!(chain.escrow_free(TENANT).await, free_before_close);

    increase_time(&chain.provider, 3_600).await.unwrap();
    let shown = cli.ok(TENANT, &["lease", "show", "1"]);
    assert_eq!(shown["status"], "active");
    let closed = cli.ok(TENANT, &["lease", "close", "1"]);
    assert_eq!(cli.ok(TENANT, &["lease", "show", "1"])["status"], "closed");
    let lease = tx::read("LeaseEscrow", chain.escrow().getLease(U256::from(1)))
        .await
        .unwrap();
    let refund = micro(&closed["refund"]);
    assert_eq!(U256::from(refund), lease.funded - lease.settled);
    assert_eq!(U256::from(micro(&closed["settled"])), lease.settled);
    assert!(
        lease.settled >= U256::from(rate),
        "at least an hour was paid"
    );
    let free = chain.escrow_free(TENANT).await;
    assert_eq!(free, free_before_close + U256::from(refund));

    // Operator: claim the closed lease.
    let claimed = cli.ok(OPERATOR, &["operator", "claim", "1"]);
    let lease = tx::read("LeaseEscrow", chain.escrow().getLease(U256::from(1)))
        .await
        .unwrap();
    assert_eq!(U256::from(micro(&claimed["paid"])), lease.operatorPaid);
    assert!(lease.operatorPaid > U256::ZERO);
    assert_eq!(
        chain.wallet(OPERATOR).await,
        usdc(TEST_FUNDS - 100_500_000) + lease.operatorPaid
    );

    // Tenant withdraws everything left, to the micro-USDC.
    let tenant_wallet = chain.wallet(TENANT).await;
    let all = format!(
        "{}.{:06}",
        free / U256::from(USDC),
        (free % U256::from(USDC)).to::<u64>()
    );
    let withdrawn = cli.ok(TENANT, &["withdraw", &all]);
    assert_eq!(U256::from(micro(&withdrawn["amount"])), free);
    assert_eq!(micro(&withdrawn["escrow_free"]), 0);
    assert_eq!(chain.escrow_free(TENANT).await, U256::ZERO);
    assert_eq!(chain.wallet(TENANT).await, tenant_wallet + free);
    assert_eq!(
        chain.wallet(TENANT).await,
        usdc(TEST_FUNDS - 2_500_000) - lease.settled,
        "the tenant paid exactly the template and the time used"
    );

    // Author: earnings are the author's share of the purchase; withdraw them.
    let earnings = cli.ok(AUTHOR, &["template", "earnings"]);
    assert_eq!(U256::from(micro(&earnings["earnings"])), author_share);
    let author_wallet = chain.wallet(AUTHOR).await;
    let paid = cli.ok(AUTHOR, &["template", "withdraw"]);
    assert_eq!(U256::from(micro(&paid["withdrawn"])), author_share);
    assert_eq!(chain.wallet(AUTHOR).await, author_wallet + author_share);
    assert_eq!(
        tx::read(
            "TemplateMarket",
            chain.market().earningsOf(cli.system.address(AUTHOR))
        )
        .await
        .unwrap(),
        U256::ZERO
    );

    // Operator: unstake part, withdraw after the unbonding period (and not before).
    let unstaked = cli.ok(OPERATOR, &["operator", "unstake", "40"]);
    assert_eq!(unstaked["request"], "0");
    assert_eq!(micro(&unstaked["active_stake"]), 60_500_000);
    let early = cli.run(OPERATOR, &["operator", "withdraw", "0", "--yes"]);
    assert!(early.failure().contains("StillUnbonding"), "{early:#?}");
    increase_time(&chain.provider, DEFAULT_UNBONDING_PERIOD)
        .await
        .unwrap();
    let before = chain.wallet(OPERATOR).await;
    let out = cli.ok(OPERATOR, &["operator", "withdraw", "0"]);
    assert_eq!(micro(&out["withdrawn"]), 40 * USDC);
    assert_eq!(chain.wallet(OPERATOR).await, before + usdc(40 * USDC));
    let new_key = Address::repeat_byte(0x43);
    cli.ok(
        OPERATOR,
        &[
            "operator",
            "update",
            &node_id.to_string(),
            "--node-key",
            &new_key.to_string(),
            "--region",
            "us-east",
            "--vcpus",
            "16",
            "--memory",
            "32",
            "--disk",
            "400",
            "--endpoint",
            "https://moved.example",
            "--ipv6",
        ],
    );
    let node = tx::read("NodeRegistry", registry.getNode(node_id))
        .await
        .unwrap();
    assert_eq!(node.nodeKey, new_key);
    assert_eq!(node.region, "us-east");
    assert_eq!(node.capabilities.vcpus, 16);
    assert_eq!(node.capabilities.flags, 4);
    assert_eq!(node.endpoint, "https://moved.example");
    assert_eq!(node.prices.cpuPerHour, 7_000, "an update keeps the prices");
    let foreign = cli.run(
        TENANT,
        &["operator", "retire", &node_id.to_string(), "--yes"],
    );
    assert!(
        foreign.failure().contains("NotNodeOperator"),
        "{foreign:#?}"
    );
    let paused = cli.ok(OPERATOR, &["operator", "pause", &node_id.to_string()]);
    assert_eq!(paused["status"], "paused");
    let closed_node = cli.run(
        TENANT,
        &[
            "lease",
            "open",
            "--node",
            &node_id.to_string(),
            "--funding",
            "1",
            "--yes",
        ],
    );
    assert!(
        closed_node.failure().contains("NodeNotActive"),
        "{closed_node:#?}"
    );
    let resumed = cli.ok(OPERATOR, &["operator", "resume", &node_id.to_string()]);
    assert_eq!(resumed["status"], "active");
    let approved = cli.ok(OPERATOR, &["operator", "stake", "0.5", "--approve"]);
    assert!(
        approved["approval_tx_hash"]
            .as_str()
            .unwrap()
            .starts_with("0x")
    );
    assert_eq!(micro(&approved["active_stake"]), 61_000_000);
    let status = cli.ok(OPERATOR, &["operator", "status"]);
    assert_eq!(micro(&status["active_stake"]), 61_000_000);
    assert_eq!(micro(&status["unbonding"]), 0);

    // Author replaces the bundle and the price; someone else cannot.
    let updated = cli.ok(
        AUTHOR,
        &[
            "template",
            "update",
            "1",
            &seed("shadowsocks"),
            "--price",
            "3",
            "--content-dir",
            &content.path().display().to_string(),
        ],
    );
    let new_cid = Bundle::load_dir(seed("shadowsocks"))
        .unwrap()
        .cid()
        .to_string();
    assert_eq!(updated["cid"], new_cid);
    let template = tx::read("TemplateMarket", chain.market().getTemplate(U256::from(1)))
        .await
        .unwrap();
    assert_eq!((template.cid, template.price), (new_cid, usdc(3 * USDC)));
    let foreign = cli.run(
        TENANT,
        &[
            "template",
            "update",
            "1",
            &seed("postgresql"),
            "--price",
            "0",
            "--yes",
        ],
    );
    assert!(
        foreign.failure().contains("NotTemplateAuthor"),
        "{foreign:#?}"
    );

    // Author deprecates the template; a lease naming it is refused with the decoded error.
    cli.ok(AUTHOR, &["template", "deprecate", "1"]);
    cli.ok(TENANT, &["deposit", "20"]);
    let refused = cli.run(
        TENANT,
        &[
            "lease",
            "open",
            "--node",
            &node_id.to_string(),
            "--template",
            "1",
            "--funding",
            "5",
            "--max-template-price",
            "2.5",
            "--yes",
        ],
    );
    assert!(
        refused.failure().contains("TemplateIsDeprecated"),
        "{refused:#?}"
    );
    assert_eq!(chain.escrow_free(TENANT).await, usdc(20 * USDC));
}

#[tokio::test]
async fn reverts_refusals_and_bad_input_change_nothing() {
    let cli = Cli::start().await;
    let chain = Chain::new(&cli);
    cli.ok(TENANT, &["deposit", "3"]);
    let nonce = chain.nonce(TENANT).await;
    let wallet = chain.wallet(TENANT).await;

    // More than the balance: the decoded custom error, a non-zero exit, no transaction.
    let over = cli.run(TENANT, &["withdraw", "3.000001", "--yes"]);
    let stderr = over.failure();
    assert!(
        stderr.contains("LeaseEscrow reverted with InsufficientBalance"),
        "{stderr}"
    );
    assert!(
        stderr.contains("3000001") && stderr.contains("3000000"),
        "{stderr}"
    );
    assert!(over.stdout.is_empty(), "{over:#?}");

    // Without --yes and without a terminal: refused before sending.
    let unconfirmed = cli.run(TENANT, &["withdraw", "1"]);
    assert!(
        unconfirmed.failure().contains("pass --yes"),
        "{unconfirmed:#?}"
    );
    assert!(
        unconfirmed.stderr.contains("1.000000 USDC")
            && unconfirmed.stderr.contains("estimated gas"),
        "the cost is shown before asking: {unconfirmed:#?}"
    );

    // Amounts that are not exact USDC are refused by the parser.
    for bad in ["0.0000001", "-1", "1e3", "18446744073709551616"] {
        let run = cli.run(TENANT, &["withdraw", bad, "--yes"]);
        assert_eq!(run.code, Some(2), "{bad}: {run:#?}");
    }

    // Closing someone else's lease and operator calls on unknown nodes revert, decoded.
    let not_found = cli.run(TENANT, &["lease", "close", "9", "--yes"]);
    assert!(
        not_found.failure().contains("LeaseNotFound"),
        "{not_found:#?}"
    );
    let not_operator = cli.run(
        OPERATOR,
        &[
            "operator",
            "pricing",
            &B256::repeat_byte(9).to_string(),
            "--cpu-price",
            "1",
            "--yes",
        ],
    );
    assert!(
        not_operator
            .failure()
            .contains("NodeRegistry reverted with"),
        "{not_operator:#?}"
    );
    let nothing = cli.run(AUTHOR, &["template", "withdraw", "--yes"]);
    assert!(
        nothing.failure().contains("NothingToWithdraw"),
        "{nothing:#?}"
    );

    assert_eq!(chain.nonce(TENANT).await, nonce, "no transaction was sent");
    assert_eq!(chain.escrow_free(TENANT).await, usdc(3 * USDC));
    assert_eq!(chain.wallet(TENANT).await, wallet);

    // On a terminal the answer decides: anything but yes sends nothing, "y" sends.
    let declined = cli.on_terminal(TENANT, &["withdraw", "1"], "n\n");
    assert_ne!(declined.code, Some(0), "{declined:#?}");
    assert!(
        declined.stdout.contains("Send this transaction? [y/N]"),
        "{declined:#?}"
    );
    assert!(
        declined.stdout.contains("cancelled: nothing was sent"),
        "{declined:#?}"
    );
    assert_eq!(chain.nonce(TENANT).await, nonce);
    assert_eq!(chain.escrow_free(TENANT).await, usdc(3 * USDC));
    let accepted = cli.on_terminal(TENANT, &["withdraw", "1"], "y\n");
    assert_eq!(accepted.code, Some(0), "{accepted:#?}");
    assert_eq!(chain.escrow_free(TENANT).await, usdc(2 * USDC));
    assert_eq!(chain.wallet(TENANT).await, wallet + usdc(USDC));
    cli.ok(TENANT, &["deposit", "1"]);
    let wallet = chain.wallet(TENANT).await;

    // The approve + deposit path: two transactions, the second only once the first is mined.
    let approved = cli.ok(TENANT, &["deposit", "0.75", "--approve"]);
    assert!(
        approved["approval_tx_hash"]
            .as_str()
            .unwrap()
            .starts_with("0x")
    );
    assert_eq!(micro(&approved["escrow_free"]), 3_750_000);
    assert_eq!(chain.escrow_free(TENANT).await, usdc(3_750_000));
    assert_eq!(chain.wallet(TENANT).await, wallet - usdc(750_000));
    cli.ok(TENANT, &["withdraw", "0.75"]);

    // Human-readable output names the amounts in USDC.
    let text = cli.run(TENANT, &["withdraw", "1.5", "--yes"]);
    assert_eq!(text.code, Some(0), "{text:#?}");
    assert!(text.stdout.contains("amount: 1.500000 USDC"), "{text:#?}");
    assert!(
        text.stdout.contains("escrow_free: 1.500000 USDC"),
        "{text:#?}"
    );
    assert!(text.stdout.contains("tx_hash: 0x"), "{text:#?}");
    let balance = cli.ok(TENANT, &["balance"]);
    assert_eq!(micro(&balance["escrow_free"]), 1_500_000);
    assert_eq!(
        U256::from(micro(&balance["wallet"])),
        wallet + usdc(1_500_000)
    );
}

/// A price raise mined between the tenant's quote and the lease (a front-run, or a floor raise):
/// the lease is refused at the quoted maximum rate with words that say why, and nothing moves;
/// the default maximum is the rate quoted when the command runs.
#[tokio::test]
async fn a_price_raise_after_the_quote_is_refused() {
    let cli = Cli::start().await;
    let chain = Chain::new(&cli);
    let operator = cli.system.address(OPERATOR);
    let machine_id = agent_protocol::machine_id("front-run");
    let node_id = agent_protocol::node_id(machine_id, operator);
    let node = node_id.to_string();
    cli.ok(
        OPERATOR,
        &[
            "operator",
            "register",
            "--machine-id",
            &machine_id.to_string(),
            "--node-key",
            &Address::repeat_byte(0x42).to_string(),
            "--region",
            "eu-west",
            "--endpoint",
            "https://node.example:8443",
            "--vcpus",
            "8",
            "--memory",
            "16",
            "--disk",
            "200",
            "--cpu-price",
            "0.006",
        ],
    );
    cli.ok(TENANT, &["deposit", "20"]);
    let open: Vec<&str> = vec![
        "lease",
        "open",
        "--node",
        &node,
        "--vcpus",
        "2",
        "--memory",
        "2",
        "--storage",
        "20",
        "--tier",
        "dedicated",
        "--funding",
        "10",
    ];

    // The quote the tenant saw: at 0.006 USDC per vCPU-hour.
    let resources = decloud_sdk::bindings::lease_escrow::ILeaseEscrow::Resources {
        vcpus: 2,
        memoryGiB: 2,
        storageGiB: 20,
        gpus: 0,
    };
    let quoted = tx::read(
        "LeaseEscrow",
        chain.escrow().quoteRate(node_id, resources.clone(), 0, 0),
    )
    .await
    .unwrap();
    // The operator raises the CPU price a thousandfold before the tenant's transaction lands.
    cli.ok(
        OPERATOR,
        &[
            "operator",
            "pricing",
            &node,
            "--cpu-price",
            "6",
            "--memory-price",
            "0.003",
        ],
    );
    let raised = tx::read(
        "LeaseEscrow",
        chain.escrow().quoteRate(node_id, resources, 0, 0),
    )
    .await
    .unwrap();
    assert!(raised > quoted);

    let nonce = chain.nonce(TENANT).await;
    let quoted_usdc = format!("{}.{:06}", quoted / 1_000_000, quoted % 1_000_000);
    let refused = cli.run(
        TENANT,
        &[open.as_slice(), &["--max-rate", &quoted_usdc, "--yes"]].concat(),
    );
    let stderr = refused.failure();
    assert!(
        stderr.contains("refused: the node's rate is now")
            && stderr.contains("above your maximum")
            && stderr.contains("nothing was spent"),
        "{stderr}"
    );
    assert_eq!(chain.nonce(TENANT).await, nonce, "nothing was sent");
    assert_eq!(chain.escrow_free(TENANT).await, usdc(20 * USDC));
    assert_eq!(
        tx::read("LeaseEscrow", chain.escrow().leaseCount())
            .await
            .unwrap(),
        U256::ZERO
    );

    // Without --max-rate the maximum is today's quote: the tenant sees and accepts the new rate.
    let opened = cli.ok(TENANT, &open);
    assert_eq!(micro(&opened["max_rate_per_hour"]), raised);
    assert_eq!(micro(&opened["rate_per_hour"]), raised);
}
