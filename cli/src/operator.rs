//! Node operator commands: register a node with the id and key its agent printed, set prices,
//! stake and unstake, list and claim lease earnings.

use alloy::primitives::{Address, B256, U256};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use decloud_sdk::{
    agent_protocol,
    bindings::{
        LeaseEscrow, MockUSDC, NodeRegistry, OperatorStaking, node_registry::INodeRegistry,
    },
    permit, tx,
    types::{Architecture, LeaseStatus},
};

use crate::context::{
    Chain, CliError, GlobalArgs, Plan, Report, Settings, execute, format_usdc, money, usdc_arg,
};

/// `decloud operator …`.
#[derive(Debug, Subcommand)]
pub(crate) enum OperatorCommand {
    /// Register a node on-chain with what `decloud-node-agent init` printed.
    Register(Box<RegisterArgs>),
    /// Change a node's key, region, capabilities, endpoint and metadata.
    Update(Box<UpdateArgs>),
    /// Set a node's hourly prices (0 means the platform default; the floor always applies).
    Pricing(PricingArgs),
    /// Add stake (one transaction with an EIP-2612 permit, or approve + stake with --approve).
    Stake(StakeInArgs),
    /// Move stake into the unbonding queue.
    Unstake(StakeArgs),
    /// Withdraw an unbonded request to the wallet.
    Withdraw(WithdrawArgs),
    /// Claim what your leases have earned: listed leases, or all of them with --all.
    Claim(ClaimArgs),
    /// What your leases have earned and you can claim now, per node and per lease.
    Earnings(EarningsArgs),
    /// Your stake: active, unbonding, requests.
    Status(StatusArgs),
    /// Pause an active node: it takes no new leases, and its leases stop accruing now, for good
    /// (their tenants get the rest back when they close them).
    Pause(NodeArgs),
    /// Resume a paused node: it takes new leases again (leases it had stay ended).
    Resume(NodeArgs),
    /// Retire a node for good; its leases stop accruing now.
    Retire(NodeArgs),
    /// Publish the node's profile (tags and description) and set it as its metadata on-chain.
    Profile(Box<crate::profile::ProfileArgs>),
}

/// A node id.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// Node id.
    node: B256,
    #[command(flatten)]
    global: GlobalArgs,
}

/// CPU architectures as flags.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    Aarch64,
    Riscv64,
}

impl From<Arch> for Architecture {
    fn from(a: Arch) -> Self {
        match a {
            Arch::X86_64 => Self::X86_64,
            Arch::Aarch64 => Self::Aarch64,
            Arch::Riscv64 => Self::Riscv64,
        }
    }
}

/// Hourly prices in USDC; 0 (the default) means the platform default price.
#[derive(Debug, Clone, Args)]
pub(crate) struct PriceArgs {
    /// USDC per vCPU-hour, e.g. 0.006.
    #[arg(long, value_parser = usdc_arg, default_value = "0")]
    cpu_price: u64,
    /// USDC per GiB-hour of memory.
    #[arg(long, value_parser = usdc_arg, default_value = "0")]
    memory_price: u64,
    /// USDC per GiB-hour of disk.
    #[arg(long, value_parser = usdc_arg, default_value = "0")]
    storage_price: u64,
    /// USDC per GPU-hour.
    #[arg(long, value_parser = usdc_arg, default_value = "0")]
    gpu_price: u64,
}

impl PriceArgs {
    fn prices(&self) -> INodeRegistry::Prices {
        INodeRegistry::Prices {
            cpuPerHour: self.cpu_price,
            memoryGiBPerHour: self.memory_price,
            storageGiBPerHour: self.storage_price,
            gpuPerHour: self.gpu_price,
        }
    }
}

fn prices_json(p: &INodeRegistry::Prices) -> serde_json::Value {
    json!({
        "cpu_per_hour": money(U256::from(p.cpuPerHour)),
        "memory_gib_per_hour": money(U256::from(p.memoryGiBPerHour)),
        "storage_gib_per_hour": money(U256::from(p.storageGiBPerHour)),
        "gpu_per_hour": money(U256::from(p.gpuPerHour)),
    })
}

/// `decloud operator register`.
#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    /// The machine id `decloud-node-agent init` printed (0x and 64 hex digits).
    #[arg(long)]
    machine_id: B256,
    /// The node key address `decloud-node-agent init` printed.
    #[arg(long)]
    node_key: Address,
    /// The node id the agent printed: checked against the id the registry will give.
    #[arg(long)]
    node_id: Option<B256>,
    #[command(flatten)]
    spec: NodeSpecArgs,
    #[command(flatten)]
    prices: PriceArgs,
    #[command(flatten)]
    global: GlobalArgs,
}

/// What a node is and offers: set at registration, changed with `operator update`.
#[derive(Debug, Args)]
pub(crate) struct NodeSpecArgs {
    /// Region, e.g. eu-west.
    #[arg(long)]
    region: String,
    /// Public endpoint, e.g. https://node.example:8443.
    #[arg(long, default_value = "")]
    endpoint: String,
    /// IPFS CID of the node's metadata (tags, description).
    #[arg(long, default_value = "")]
    metadata_cid: String,
    /// vCPUs offered.
    #[arg(long)]
    vcpus: u32,
    /// Memory offered, GiB.
    #[arg(long)]
    memory: u32,
    /// Disk offered, GiB.
    #[arg(long)]
    disk: u32,
    /// GPUs offered.
    #[arg(long, default_value_t = 0)]
    gpus: u16,
    /// Uplink, Mbit/s.
    #[arg(long, default_value_t = 1_000)]
    bandwidth_mbps: u32,
    /// CPU architecture.
    #[arg(long, value_enum, default_value = "x86_64")]
    arch: Arch,
    /// The node has a public IPv4 address.
    #[arg(long)]
    public_ipv4: bool,
    /// The node is behind CGNAT.
    #[arg(long)]
    cgnat: bool,
    /// The node has IPv6.
    #[arg(long)]
    ipv6: bool,
    /// The node offers to relay for nodes behind NAT (its agent has a `[relay]` section).
    #[arg(long)]
    relay: bool,
}

impl NodeSpecArgs {
    fn capabilities(&self) -> INodeRegistry::Capabilities {
        INodeRegistry::Capabilities {
            vcpus: self.vcpus,
            memoryGiB: self.memory,
            diskGiB: self.disk,
            gpus: self.gpus,
            bandwidthMbps: self.bandwidth_mbps,
            architecture: Architecture::from(self.arch).into(),
            flags: flags(self.public_ipv4, self.cgnat, self.ipv6, self.relay),
        }
    }

    fn offers(&self) -> serde_json::Value {
        json!(format!(
            "{} vCPU, {} GiB RAM, {} GiB disk, {} GPU, {} Mbps",
            self.vcpus, self.memory, self.disk, self.gpus, self.bandwidth_mbps
        ))
    }
}

/// `decloud operator update`.
#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// Node id.
    node: B256,
    /// The node key (a new one after the agent's key was rotated).
    #[arg(long)]
    node_key: Address,
    #[command(flatten)]
    spec: NodeSpecArgs,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud operator pricing`.
#[derive(Debug, Args)]
pub(crate) struct PricingArgs {
    /// Node id.
    node: B256,
    #[command(flatten)]
    prices: PriceArgs,
    #[command(flatten)]
    global: GlobalArgs,
}

/// A stake amount.
#[derive(Debug, Args)]
pub(crate) struct StakeArgs {
    /// Amount in USDC.
    #[arg(value_parser = usdc_arg)]
    amount: u64,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud operator stake`.
#[derive(Debug, Args)]
pub(crate) struct StakeInArgs {
    /// Amount in USDC.
    #[arg(value_parser = usdc_arg)]
    amount: u64,
    /// Approve the staking contract and stake in two transactions instead of signing a permit;
    /// no approval is sent when the allowance already covers the amount.
    #[arg(long)]
    approve: bool,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud operator withdraw`.
#[derive(Debug, Args)]
pub(crate) struct WithdrawArgs {
    /// The unstake request id `decloud operator unstake` printed.
    request: u64,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud operator claim`.
#[derive(Debug, Args)]
pub(crate) struct ClaimArgs {
    /// Lease ids to claim.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    leases: Vec<u64>,
    /// Claim every lease of yours with something to claim, in one transaction.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud operator earnings`.
#[derive(Debug, Args)]
pub(crate) struct EarningsArgs {
    /// Operator (default: your address).
    #[arg(long)]
    operator: Option<Address>,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud operator status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Operator (default: your address).
    #[arg(long)]
    operator: Option<Address>,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Runs an operator command.
pub(crate) async fn run(command: OperatorCommand) -> Result<(), CliError> {
    match command {
        OperatorCommand::Register(args) => register(*args).await,
        OperatorCommand::Update(args) => update(*args).await,
        OperatorCommand::Pricing(args) => pricing(args).await,
        OperatorCommand::Stake(args) => stake(args).await,
        OperatorCommand::Unstake(args) => unstake(args).await,
        OperatorCommand::Withdraw(args) => withdraw(args).await,
        OperatorCommand::Claim(args) => claim(args).await,
        OperatorCommand::Earnings(args) => earnings(args).await,
        OperatorCommand::Status(args) => status(args).await,
        OperatorCommand::Pause(args) => node_status(NodeChange::Pause, args).await,
        OperatorCommand::Resume(args) => node_status(NodeChange::Resume, args).await,
        OperatorCommand::Retire(args) => node_status(NodeChange::Retire, args).await,
        OperatorCommand::Profile(args) => crate::profile::run(*args).await,
    }
}

fn registry(chain: &Chain) -> NodeRegistry::NodeRegistryInstance<&alloy::providers::DynProvider> {
    NodeRegistry::new(
        chain.deployment.contracts.node_registry.address,
        &chain.provider,
    )
}

fn staking(
    chain: &Chain,
) -> OperatorStaking::OperatorStakingInstance<&alloy::providers::DynProvider> {
    OperatorStaking::new(
        chain.deployment.contracts.operator_staking.address,
        &chain.provider,
    )
}

/// The capability flags bit set (1 public IPv4, 2 CGNAT, 4 IPv6, 8 relay).
fn flags(public_ipv4: bool, cgnat: bool, ipv6: bool, relay: bool) -> u32 {
    let relay = if relay {
        decloud_sdk::relay::RELAY_FLAG
    } else {
        0
    };
    u32::from(public_ipv4) | (u32::from(cgnat) << 1) | (u32::from(ipv6) << 2) | relay
}

async fn register(args: RegisterArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let node_id = agent_protocol::node_id(args.machine_id, chain.sender());
    if let Some(expected) = args.node_id
        && expected != node_id
    {
        return Err(CliError::Invalid(format!(
            "node id {expected} is not this machine's id for operator {}: that is {node_id} \
             (did the agent run `init` with --operator {}?)",
            chain.sender(),
            chain.sender()
        )));
    }
    let spec = &args.spec;
    let prices = args.prices.prices();
    let plan = Plan::new(
        "operator register",
        "NodeRegistry",
        registry(&chain).register(
            args.machine_id,
            args.node_key,
            spec.region.clone(),
            spec.capabilities(),
            spec.endpoint.clone(),
            spec.metadata_cid.clone(),
            prices.clone(),
        ),
    )
    .detail("node", json!(node_id.to_string()))
    .detail("node_key", json!(args.node_key.to_string()))
    .detail("region", json!(spec.region))
    .detail("offers", spec.offers())
    .detail("requested_prices", prices_json(&prices));
    let sent = execute(&chain, &args.global, plan).await?;
    let stored = sent
        .event::<NodeRegistry::NodePricesSet>()
        .map(|e| prices_json(&e.stored));
    sent.report(vec![("stored_prices", stored.unwrap_or_default())])
        .print(args.global.json);
    Ok(())
}

async fn update(args: UpdateArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let spec = &args.spec;
    let plan = Plan::new(
        "operator update",
        "NodeRegistry",
        registry(&chain).update(
            args.node,
            args.node_key,
            spec.region.clone(),
            spec.capabilities(),
            spec.endpoint.clone(),
            spec.metadata_cid.clone(),
        ),
    )
    .detail("node", json!(args.node.to_string()))
    .detail("node_key", json!(args.node_key.to_string()))
    .detail("region", json!(spec.region))
    .detail("offers", spec.offers());
    let sent = execute(&chain, &args.global, plan).await?;
    sent.report(Vec::new()).print(args.global.json);
    Ok(())
}

async fn pricing(args: PricingArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let registry = registry(&chain);
    let floors = tx::read("NodeRegistry", registry.floorPrices()).await?;
    let prices = args.prices.prices();
    let plan = Plan::new(
        "operator pricing",
        "NodeRegistry",
        registry.setPrices(args.node, prices.clone()),
    )
    .detail("node", json!(args.node.to_string()))
    .detail("requested_prices", prices_json(&prices))
    .detail("floor_prices", prices_json(&floors));
    let sent = execute(&chain, &args.global, plan).await?;
    let stored = sent
        .event::<NodeRegistry::NodePricesSet>()
        .map(|e| prices_json(&e.stored));
    sent.report(vec![("stored_prices", stored.unwrap_or_default())])
        .print(args.global.json);
    Ok(())
}

async fn stake(args: StakeInArgs) -> Result<(), CliError> {
    if args.amount == 0 {
        return Err(CliError::Invalid("the amount must be above zero".into()));
    }
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let staking = staking(&chain);
    let amount = U256::from(args.amount);
    let token_address = tx::read("OperatorStaking", staking.token()).await?;
    // Only ERC-20 and ERC-2612 functions are called: the MockUSDC binding fits any USDC.
    let token = MockUSDC::new(token_address, &chain.provider);
    let mut extra = Vec::new();
    let plan = if args.approve {
        let allowance = tx::read(
            "MockUSDC",
            token.allowance(chain.sender(), *staking.address()),
        )
        .await?;
        if allowance < amount {
            // The stake cannot be estimated before the approval exists: it is estimated, shown
            // and confirmed on its own once the approval is mined.
            let approval = Plan::new(
                "approve",
                "MockUSDC",
                token.approve(*staking.address(), amount),
            )
            .detail("spender", json!(staking.address().to_string()))
            .detail("amount", money(amount))
            .detail("next", json!("stake, confirmed separately"));
            let approved = execute(&chain, &args.global, approval).await?;
            extra.push((
                "approval_tx_hash",
                json!(approved.receipt.transaction_hash.to_string()),
            ));
        }
        Plan::new("operator stake", "OperatorStaking", staking.stake(amount))
    } else {
        // A permit valid for an hour of chain time: one transaction instead of approve + stake.
        let deadline = U256::from(chain.now().await? + 3_600);
        let signed = permit::sign_permit(
            &chain.provider,
            chain.signer(),
            token_address,
            *staking.address(),
            amount,
            deadline,
        )
        .await?;
        Plan::new(
            "operator stake",
            "OperatorStaking",
            staking.stakeWithPermit(amount, deadline, signed.v, signed.r, signed.s),
        )
    }
    .detail("amount", money(amount));
    let sent = execute(&chain, &args.global, plan).await?;
    let active = sent
        .event::<OperatorStaking::Staked>()
        .map(|e| e.activeStake)
        .unwrap_or_default();
    extra.push(("active_stake", money(active)));
    sent.report(extra).print(args.global.json);
    Ok(())
}

async fn unstake(args: StakeArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let staking = staking(&chain);
    let amount = U256::from(args.amount);
    let period = tx::read("OperatorStaking", staking.unbondingPeriod()).await?;
    let plan = Plan::new(
        "operator unstake",
        "OperatorStaking",
        staking.requestUnstake(amount),
    )
    .detail("amount", money(amount))
    .detail("unbonding_seconds", json!(period));
    let sent = execute(&chain, &args.global, plan).await?;
    let event = sent.event::<OperatorStaking::UnstakeRequested>();
    let extra = match event {
        Some(e) => vec![
            ("request", json!(e.requestId.to_string())),
            ("unlock_at", json!(e.unlockAt)),
            ("active_stake", money(e.activeStake)),
        ],
        None => Vec::new(),
    };
    sent.report(extra).print(args.global.json);
    Ok(())
}

async fn withdraw(args: WithdrawArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let staking = staking(&chain);
    let id = U256::from(args.request);
    let request = tx::read(
        "OperatorStaking",
        staking.unstakeRequest(chain.sender(), id),
    )
    .await?;
    let plan = Plan::new("operator withdraw", "OperatorStaking", staking.withdraw(id))
        .detail("request", json!(args.request.to_string()))
        .detail("amount", money(U256::from(request.amount)))
        .detail("unlock_at", json!(request.unlockAt));
    let sent = execute(&chain, &args.global, plan).await?;
    let paid = sent
        .event::<OperatorStaking::Withdrawn>()
        .map(|e| e.amount)
        .unwrap_or_default();
    sent.report(vec![("withdrawn", money(paid))])
        .print(args.global.json);
    Ok(())
}

/// A lease an operator earns from, with what it can claim now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Earning {
    lease: u64,
    node: B256,
    status: LeaseStatus,
    claimable: U256,
}

/// Every lease of `operator` on chain and what each can claim now (`claimableOf`: the
/// operator's share of the accrual up to now, less what was paid). Reads each lease once: the
/// escrow has no index by operator.
async fn earnings_of(
    escrow: &LeaseEscrow::LeaseEscrowInstance<&alloy::providers::DynProvider>,
    operator: Address,
) -> Result<Vec<Earning>, CliError> {
    let count = tx::read("LeaseEscrow", escrow.leaseCount()).await?;
    let mut out = Vec::new();
    for id in 1..=count.to::<u64>() {
        let lease = tx::read("LeaseEscrow", escrow.getLease(U256::from(id))).await?;
        if lease.operator != operator {
            continue;
        }
        let claimable = tx::read("LeaseEscrow", escrow.claimableOf(U256::from(id))).await?;
        out.push(Earning {
            lease: id,
            node: lease.nodeId,
            status: LeaseStatus::try_from(lease.status).unwrap_or(LeaseStatus::None),
            claimable,
        });
    }
    Ok(out)
}

/// Claimable totals per node, in node order.
fn per_node(earnings: &[Earning]) -> Vec<(B256, U256)> {
    let mut nodes: std::collections::BTreeMap<B256, U256> = std::collections::BTreeMap::new();
    for e in earnings {
        *nodes.entry(e.node).or_default() += e.claimable;
    }
    nodes.into_iter().collect()
}

async fn earnings(args: EarningsArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let (chain, operator) = match args.operator {
        Some(operator) => (Chain::read_only(&settings).await?, operator),
        None => {
            let chain = Chain::with_key(&settings).await?;
            let me = chain.sender();
            (chain, me)
        }
    };
    let escrow = LeaseEscrow::new(
        chain.deployment.contracts.lease_escrow.address,
        &chain.provider,
    );
    let earnings = earnings_of(&escrow, operator).await?;
    let total: U256 = earnings.iter().map(|e| e.claimable).sum();
    let nodes: Vec<_> = per_node(&earnings)
        .into_iter()
        .map(|(node, claimable)| json!({ "node": node.to_string(), "claimable": money(claimable) }))
        .collect();
    let leases: Vec<_> = earnings
        .iter()
        .map(|e| {
            json!({
                "lease": e.lease.to_string(),
                "node": e.node.to_string(),
                "status": e.status,
                "claimable": money(e.claimable),
            })
        })
        .collect();
    if args.global.json {
        Report::new(
            "operator earnings",
            vec![
                ("operator", json!(operator.to_string())),
                ("claimable", money(total)),
                ("nodes", json!(nodes)),
                ("leases", json!(leases)),
            ],
        )
        .print(true);
        return Ok(());
    }
    println!("operator earnings");
    println!("  operator: {operator}");
    println!("  claimable: {}", format_usdc(total));
    for (node, claimable) in per_node(&earnings) {
        println!("  node {node}: {}", format_usdc(claimable));
        for e in earnings.iter().filter(|e| e.node == node) {
            println!(
                "    lease {} ({}): {}",
                e.lease,
                e.status,
                format_usdc(e.claimable)
            );
        }
    }
    Ok(())
}

async fn claim(args: ClaimArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let escrow = LeaseEscrow::new(
        chain.deployment.contracts.lease_escrow.address,
        &chain.provider,
    );
    let (leases, claimable) = if args.all {
        let due: Vec<Earning> = earnings_of(&escrow, chain.sender())
            .await?
            .into_iter()
            .filter(|e| e.claimable > U256::ZERO)
            .collect();
        if due.is_empty() {
            return Err(CliError::Invalid(format!(
                "nothing to claim: no lease of {} has earned anything unclaimed",
                chain.sender()
            )));
        }
        let total = due.iter().map(|e| e.claimable).sum();
        (due.iter().map(|e| e.lease).collect::<Vec<_>>(), total)
    } else {
        let mut claimable = U256::ZERO;
        for id in &args.leases {
            claimable += tx::read("LeaseEscrow", escrow.claimableOf(U256::from(*id))).await?;
        }
        (args.leases.clone(), claimable)
    };
    let ids: Vec<U256> = leases.iter().copied().map(U256::from).collect();
    let plan = Plan::new("operator claim", "LeaseEscrow", escrow.claim(ids))
        .detail(
            "leases",
            json!(leases.iter().map(u64::to_string).collect::<Vec<_>>()),
        )
        .detail("claimable_now", money(claimable));
    let sent = execute(&chain, &args.global, plan).await?;
    let paid: U256 = sent
        .receipt
        .inner
        .logs()
        .iter()
        .filter_map(|l| l.log_decode::<LeaseEscrow::LeaseClaimed>().ok())
        .map(|l| l.inner.data.operatorAmount)
        .sum();
    sent.report(vec![("paid", money(paid))])
        .print(args.global.json);
    Ok(())
}

/// A change of a node's status.
#[derive(Debug, Clone, Copy)]
enum NodeChange {
    Pause,
    Resume,
    Retire,
}

async fn node_status(change: NodeChange, args: NodeArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let registry = registry(&chain);
    let plan = match change {
        NodeChange::Pause => Plan::new("operator pause", "NodeRegistry", registry.pause(args.node)),
        NodeChange::Resume => Plan::new(
            "operator resume",
            "NodeRegistry",
            registry.resume(args.node),
        ),
        NodeChange::Retire => Plan::new(
            "operator retire",
            "NodeRegistry",
            registry.retire(args.node),
        )
        .detail("warning", json!("retiring is final")),
    }
    .detail("node", json!(args.node.to_string()));
    let sent = execute(&chain, &args.global, plan).await?;
    let status = sent
        .event::<NodeRegistry::NodeStatusChanged>()
        .and_then(|e| decloud_sdk::types::NodeStatus::try_from(e.status).ok())
        .map(|s| json!(s))
        .unwrap_or_default();
    sent.report(vec![("status", status)])
        .print(args.global.json);
    Ok(())
}

async fn status(args: StatusArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let (chain, operator) = match args.operator {
        Some(operator) => (Chain::read_only(&settings).await?, operator),
        None => {
            let chain = Chain::with_key(&settings).await?;
            let me = chain.sender();
            (chain, me)
        }
    };
    let staking = staking(&chain);
    let active = tx::read("OperatorStaking", staking.activeStakeOf(operator)).await?;
    let unbonding = tx::read("OperatorStaking", staking.unbondingOf(operator)).await?;
    let premium = tx::read("OperatorStaking", staking.isPremium(operator)).await?;
    let count = tx::read("OperatorStaking", staking.unstakeRequestCount(operator)).await?;
    let mut requests = Vec::new();
    for id in 0..count.to::<u64>() {
        let r = tx::read(
            "OperatorStaking",
            staking.unstakeRequest(operator, U256::from(id)),
        )
        .await?;
        requests.push(json!({
            "request": id.to_string(),
            "amount": format_usdc(U256::from(r.amount)),
            "unlock_at": r.unlockAt,
            "withdrawn": r.withdrawn,
        }));
    }
    Report::new(
        "operator status",
        vec![
            ("operator", json!(operator.to_string())),
            ("active_stake", money(active)),
            ("unbonding", money(unbonding)),
            ("premium", json!(premium)),
            ("requests", json!(requests)),
        ],
    )
    .print(args.global.json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator(args: &[&str]) -> Result<OperatorCommand, clap::Error> {
        use clap::Parser as _;
        let cli = crate::Cli::try_parse_from(
            ["decloud", "operator"]
                .into_iter()
                .chain(args.iter().copied()),
        )?;
        match cli.command {
            crate::Command::Operator(command) => Ok(command),
            other => panic!("not an operator command: {other:?}"),
        }
    }

    #[test]
    fn operator_arguments_parse() {
        let machine = format!("0x{}", "11".repeat(32));
        let key = "0x2222222222222222222222222222222222222222";
        let register = [
            "register",
            "--machine-id",
            &machine,
            "--node-key",
            key,
            "--region",
            "eu-west",
            "--vcpus",
            "8",
            "--memory",
            "16",
            "--disk",
            "200",
            "--cpu-price",
            "0.006",
            "--public-ipv4",
        ];
        match operator(&register).unwrap() {
            OperatorCommand::Register(a) => {
                assert_eq!(a.machine_id.to_string(), machine);
                assert_eq!(a.prices.prices().cpuPerHour, 6_000);
                assert_eq!(a.prices.prices().memoryGiBPerHour, 0, "0: platform default");
                assert_eq!(a.spec.capabilities().flags, 1);
                assert_eq!(a.spec.capabilities().architecture, 0, "x86_64");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            operator(&register[..register.len() - 5]).is_err(),
            "--disk is required"
        );
        assert!(operator(&["pricing", &machine, "--cpu-price", "0.0000001"]).is_err());
        assert!(operator(&["claim"]).is_err(), "at least one lease");
        match operator(&["claim", "1", "2", "--yes"]).unwrap() {
            OperatorCommand::Claim(a) => assert_eq!((a.leases, a.all), (vec![1, 2], false)),
            other => panic!("{other:?}"),
        }
        match operator(&["claim", "--all", "--yes"]).unwrap() {
            OperatorCommand::Claim(a) => assert!(a.all && a.leases.is_empty()),
            other => panic!("{other:?}"),
        }
        assert!(
            operator(&["claim", "1", "--all"]).is_err(),
            "lease ids or --all, not both"
        );
        match operator(&["stake", "100"]).unwrap() {
            OperatorCommand::Stake(a) => assert_eq!(a.amount, 100_000_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn capability_flags_are_the_registry_bits() {
        assert_eq!(flags(false, false, false, false), 0);
        assert_eq!(flags(true, false, false, false), 1);
        assert_eq!(flags(false, true, false, false), 2);
        assert_eq!(flags(true, false, true, false), 5);
        assert_eq!(flags(true, false, false, true), 9);
    }
}
