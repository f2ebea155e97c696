//! Tenant commands: sign in to the orchestrator, fund the escrow, find nodes and templates, open,
//! top up and close leases, look at VMs.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use alloy::{
    primitives::{Address, B256, U256},
    signers::Signer as _,
    transports::http::reqwest,
};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::json;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use url::Url;

use decloud_sdk::{
    Error, RevertError, VmId,
    api::{
        ErrorBody, NodeSearchResponse, NonceResponse, Placement, PlacementRequest, SessionResponse,
        TemplateSearchResponse, VerifyRequest, VmDetail, VmRecord,
    },
    bindings::{
        LeaseEscrow::{self, LeaseEscrowErrors},
        MockUSDC, TemplateMarket,
        lease_escrow::ILeaseEscrow,
    },
    permit, tx,
    types::{BandwidthTier, LeaseStatus, QualityTier},
};

use crate::access::{self, ProfileCommand, VmIdArgs};
use crate::context::{
    Chain, CliError, GlobalArgs, Plan, Report, Settings, execute, format_usdc, money, usdc_arg,
};

/// Tenant commands (top level: `decloud deposit …`).
#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Sign in to the orchestrator with your wallet (Sign-In with Ethereum); the session is kept
    /// in $XDG_CONFIG_HOME/decloud/sessions.json (mode 0600).
    Login(LoginArgs),
    /// Revoke the orchestrator session and forget it.
    Logout(GlobalOnly),
    /// Your USDC: in the wallet and free in the escrow.
    Balance(GlobalOnly),
    /// Deposit USDC into the escrow (one transaction with an EIP-2612 permit, or approve +
    /// deposit with --approve).
    Deposit(DepositArgs),
    /// Withdraw unspent USDC from the escrow to the wallet.
    Withdraw(AmountArgs),
    /// Search the node marketplace.
    Nodes(NodesArgs),
    /// Search the template catalog.
    Templates(TemplatesArgs),
    /// Open, top up, close or show a lease.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Your VMs, from the orchestrator (needs `decloud login`).
    #[command(subcommand)]
    Vm(VmCommand),
    /// What your new VMs are set up with: SSH keys, the key passwords are sealed to (needs
    /// `decloud login`).
    #[command(subcommand)]
    Profile(ProfileCommand),
}

/// Only the global options.
#[derive(Debug, Args)]
pub(crate) struct GlobalOnly {
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud login`.
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// Chain id to name in the sign-in message (default: the network's).
    #[arg(long)]
    chain_id: Option<u64>,
    #[command(flatten)]
    global: GlobalArgs,
}

/// A USDC amount.
#[derive(Debug, Args)]
pub(crate) struct AmountArgs {
    /// Amount in USDC, e.g. 12.5 (at most 6 decimals).
    #[arg(value_parser = usdc_arg)]
    amount: u64,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud deposit`.
#[derive(Debug, Args)]
pub(crate) struct DepositArgs {
    /// Amount in USDC, e.g. 12.5 (at most 6 decimals).
    #[arg(value_parser = usdc_arg)]
    amount: u64,
    /// Approve the escrow and deposit in two transactions instead of signing a permit (for a
    /// token or wallet without EIP-2612); no approval is sent when the allowance already covers
    /// the amount.
    #[arg(long)]
    approve: bool,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Sort orders of the node search.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum NodeSort {
    Uptime,
    Price,
    Capacity,
}

/// `decloud nodes`.
#[derive(Debug, Args)]
pub(crate) struct NodesArgs {
    /// Region, e.g. eu-west.
    #[arg(long)]
    region: Option<String>,
    /// Comma-separated tags a node must all have.
    #[arg(long)]
    tags: Option<String>,
    /// Highest CPU price in USDC per vCPU-hour, e.g. 0.01.
    #[arg(long, value_parser = usdc_arg)]
    max_price: Option<u64>,
    /// Lowest 30-day uptime in percent, e.g. 99.5.
    #[arg(long)]
    min_uptime: Option<f64>,
    /// Lowest compute points.
    #[arg(long)]
    min_compute_points: Option<u64>,
    /// Only nodes with a GPU (true) or without (false).
    #[arg(long)]
    gpu: Option<bool>,
    /// Only nodes seen in the last two minutes.
    #[arg(long)]
    online: bool,
    /// Sort order.
    #[arg(long, value_enum)]
    sort: Option<NodeSort>,
    /// Page size (1–100).
    #[arg(long)]
    limit: Option<usize>,
    /// Results to skip.
    #[arg(long)]
    offset: Option<usize>,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Sort orders of the template search.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum TemplateSort {
    Name,
    Newest,
    Price,
}

/// `decloud templates`.
#[derive(Debug, Args)]
pub(crate) struct TemplatesArgs {
    /// Words that must all appear in the name, description or tags.
    query: Option<String>,
    /// Category, e.g. database.
    #[arg(long)]
    category: Option<String>,
    /// Only templates that need a GPU (true) or not (false).
    #[arg(long)]
    gpu: Option<bool>,
    /// Comma-separated tags a template must all have.
    #[arg(long)]
    tags: Option<String>,
    /// Sort order.
    #[arg(long, value_enum)]
    sort: Option<TemplateSort>,
    /// Page size (1–100).
    #[arg(long)]
    limit: Option<usize>,
    /// Results to skip.
    #[arg(long)]
    offset: Option<usize>,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Quality tiers as flags.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Tier {
    Dedicated,
    Standard,
    Balanced,
    Burstable,
}

impl From<Tier> for QualityTier {
    fn from(t: Tier) -> Self {
        match t {
            Tier::Dedicated => Self::Dedicated,
            Tier::Standard => Self::Standard,
            Tier::Balanced => Self::Balanced,
            Tier::Burstable => Self::Burstable,
        }
    }
}

/// Bandwidth tiers as flags.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Bandwidth {
    Basic,
    Standard,
    Performance,
    Unmetered,
}

impl From<Bandwidth> for BandwidthTier {
    fn from(b: Bandwidth) -> Self {
        match b {
            Bandwidth::Basic => Self::Basic,
            Bandwidth::Standard => Self::Standard,
            Bandwidth::Performance => Self::Performance,
            Bandwidth::Unmetered => Self::Unmetered,
        }
    }
}

/// `decloud lease …`.
#[derive(Debug, Subcommand)]
pub(crate) enum LeaseCommand {
    /// Open a lease on a node, funded from your escrow balance.
    Open(LeaseOpenArgs),
    /// Add funds to an active lease from your escrow balance.
    Topup(LeaseTopUpArgs),
    /// Close a lease: accrual stops and the unspent funding returns to your escrow balance.
    Close(LeaseIdArgs),
    /// Show a lease as the contract holds it.
    Show(LeaseIdArgs),
}

/// `decloud lease open`.
#[derive(Debug, Args)]
pub(crate) struct LeaseOpenArgs {
    /// Node id (0x and 64 hex digits), from `decloud nodes`. Without it, the orchestrator's
    /// scheduler chooses the node (and says why).
    #[arg(long)]
    node: Option<B256>,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Memory, GiB.
    #[arg(long, default_value_t = 1)]
    memory: u32,
    /// Disk, GiB.
    #[arg(long, default_value_t = 10)]
    storage: u32,
    /// GPUs.
    #[arg(long, default_value_t = 0)]
    gpus: u16,
    /// Quality tier (CPU overcommit).
    #[arg(long, value_enum, default_value = "standard")]
    tier: Tier,
    /// Bandwidth tier.
    #[arg(long, value_enum, default_value = "basic")]
    bandwidth: Bandwidth,
    /// On-chain template id (0: none).
    #[arg(long, default_value_t = 0)]
    template: u64,
    /// Highest template price you accept in USDC (default: the current price).
    #[arg(long, value_parser = usdc_arg)]
    max_template_price: Option<u64>,
    /// Highest hourly rate you accept in USDC, e.g. 0.1 (default: the rate quoted now). If the node's
    /// prices rise before the lease is mined, the contract refuses it and nothing is spent.
    #[arg(long, value_parser = usdc_arg)]
    max_rate: Option<u64>,
    /// USDC put into the lease, e.g. 5.
    #[arg(long, value_parser = usdc_arg)]
    funding: u64,
    /// SSH public key file to install for the VM's login user (repeatable); saved in your
    /// profile before the lease is opened.
    #[arg(long = "ssh-key", value_name = "FILE")]
    ssh_keys: Vec<PathBuf>,
    /// Guest port to forward beside 22/tcp and the template's: 8080/tcp, 53/udp, 443/tcp+udp
    /// (repeatable). The VM gets exactly these.
    #[arg(long = "port", value_name = "PORT/PROTO")]
    ports: Vec<String>,
    /// Serve a guest port that speaks HTTP at `https://<NAME>.<ingress domain>` (repeatable):
    /// 8080=myapp. The names are checked before anything is paid (validated like `decloud vm
    /// expose`, and free now) and given as soon as the lease is open; a name taken meanwhile
    /// is reported then, with the lease open. Needs a sign-in and an orchestrator with an
    /// ingress domain, and a node that runs an ingress.
    #[arg(long = "expose", value_name = "PORT=NAME", value_parser = crate::ingress::parse_expose)]
    expose: Vec<crate::ingress::ExposeAtOpen>,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud lease topup`.
#[derive(Debug, Args)]
pub(crate) struct LeaseTopUpArgs {
    /// Lease id.
    lease: u64,
    /// USDC to add.
    #[arg(value_parser = usdc_arg)]
    amount: u64,
    #[command(flatten)]
    global: GlobalArgs,
}

/// A lease id.
#[derive(Debug, Args)]
pub(crate) struct LeaseIdArgs {
    /// Lease id.
    lease: u64,
    #[command(flatten)]
    global: GlobalArgs,
}

/// `decloud vm …`.
#[derive(Debug, Subcommand)]
pub(crate) enum VmCommand {
    /// Your VMs, newest first.
    List(GlobalOnly),
    /// One of your VMs, with its address and forwarded ports.
    Show(VmShowArgs),
    /// Attach the terminal to a VM's serial console (detach with Ctrl-]; piped stdin is typed
    /// in as it comes).
    Console(crate::console::VmConsoleArgs),
    /// Open the VM's generated password with your wallet (one signature) and print it.
    Credentials(VmIdArgs),
    /// Stop a running VM (its disk is kept).
    Stop(VmIdArgs),
    /// Start a stopped VM.
    Start(VmIdArgs),
    /// Reboot a running VM.
    Reboot(VmIdArgs),
    /// Serve a guest port over HTTPS at `https://<name>.<ingress domain>`.
    Expose(crate::ingress::VmExposeArgs),
    /// Stop serving a guest port by name (the name is free again).
    Unexpose(crate::ingress::VmUnexposeArgs),
}

/// `decloud vm show`.
#[derive(Debug, Args)]
pub(crate) struct VmShowArgs {
    /// VM id (`vm-<lease id>`); a malformed one is refused before anything is sent.
    vm: VmId,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Runs a tenant command.
pub(crate) async fn run(command: TenantCommand) -> Result<(), CliError> {
    match command {
        TenantCommand::Login(args) => login(args).await,
        TenantCommand::Logout(args) => logout(args.global).await,
        TenantCommand::Balance(args) => balance(args.global).await,
        TenantCommand::Deposit(args) => deposit(args).await,
        TenantCommand::Withdraw(args) => withdraw(args).await,
        TenantCommand::Nodes(args) => nodes(args).await,
        TenantCommand::Templates(args) => templates(args).await,
        TenantCommand::Lease(LeaseCommand::Open(args)) => lease_open(args).await,
        TenantCommand::Lease(LeaseCommand::Topup(args)) => lease_topup(args).await,
        TenantCommand::Lease(LeaseCommand::Close(args)) => lease_close(args).await,
        TenantCommand::Lease(LeaseCommand::Show(args)) => lease_show(args).await,
        TenantCommand::Vm(VmCommand::List(args)) => vm_list(args.global).await,
        TenantCommand::Vm(VmCommand::Show(args)) => vm_show(args).await,
        TenantCommand::Vm(VmCommand::Console(args)) => crate::console::run(args).await,
        TenantCommand::Vm(VmCommand::Credentials(args)) => access::vm_credentials(args).await,
        TenantCommand::Vm(VmCommand::Stop(args)) => access::vm_control(args, "stop").await,
        TenantCommand::Vm(VmCommand::Start(args)) => access::vm_control(args, "start").await,
        TenantCommand::Vm(VmCommand::Reboot(args)) => access::vm_control(args, "reboot").await,
        TenantCommand::Vm(VmCommand::Expose(args)) => crate::ingress::expose(args).await,
        TenantCommand::Vm(VmCommand::Unexpose(args)) => crate::ingress::unexpose(args).await,
        TenantCommand::Profile(command) => access::run_profile(command).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Escrow

fn escrow(chain: &Chain) -> LeaseEscrow::LeaseEscrowInstance<&alloy::providers::DynProvider> {
    LeaseEscrow::new(
        chain.deployment.contracts.lease_escrow.address,
        &chain.provider,
    )
}

async fn balance(global: GlobalArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&global)?;
    let chain = Chain::with_key(&settings).await?;
    let me = chain.sender();
    let wallet = tx::read(
        "MockUSDC",
        MockUSDC::new(chain.deployment.usdc, &chain.provider).balanceOf(me),
    )
    .await?;
    let free = tx::read("LeaseEscrow", escrow(&chain).balanceOf(me)).await?;
    Report::new(
        "balance",
        vec![
            ("account", json!(me.to_string())),
            ("wallet", money(wallet)),
            ("escrow_free", money(free)),
        ],
    )
    .print(global.json);
    Ok(())
}

async fn deposit(args: DepositArgs) -> Result<(), CliError> {
    if args.amount == 0 {
        return Err(CliError::Invalid("the amount must be above zero".into()));
    }
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let amount = U256::from(args.amount);
    let escrow_address = chain.deployment.contracts.lease_escrow.address;
    // Only ERC-20 and ERC-2612 functions are called: the MockUSDC binding fits any USDC.
    let token = MockUSDC::new(chain.deployment.usdc, &chain.provider);
    let held = tx::read("MockUSDC", token.balanceOf(chain.sender())).await?;
    if held < amount {
        return Err(CliError::Invalid(format!(
            "the wallet holds {}, less than {}",
            format_usdc(held),
            format_usdc(amount)
        )));
    }
    let mut extra = Vec::new();
    let plan = if args.approve {
        let allowance =
            tx::read("MockUSDC", token.allowance(chain.sender(), escrow_address)).await?;
        if allowance < amount {
            // The deposit cannot be estimated before the approval exists: it is estimated,
            // shown and confirmed on its own once the approval is mined.
            let approval = Plan::new("approve", "MockUSDC", token.approve(escrow_address, amount))
                .detail("spender", json!(escrow_address.to_string()))
                .detail("amount", money(amount))
                .detail("next", json!("deposit, confirmed separately"));
            let approved = execute(&chain, &args.global, approval).await?;
            extra.push((
                "approval_tx_hash",
                json!(approved.receipt.transaction_hash.to_string()),
            ));
        }
        Plan::new("deposit", "LeaseEscrow", escrow(&chain).deposit(amount))
    } else {
        // A permit valid for an hour of chain time: one transaction instead of approve + deposit.
        let deadline = U256::from(chain.now().await? + 3_600);
        let signed = permit::sign_permit(
            &chain.provider,
            chain.signer(),
            chain.deployment.usdc,
            escrow_address,
            amount,
            deadline,
        )
        .await?;
        Plan::new(
            "deposit",
            "LeaseEscrow",
            escrow(&chain).depositWithPermit(amount, deadline, signed.v, signed.r, signed.s),
        )
    }
    .detail("amount", money(amount))
    .detail("escrow", json!(escrow_address.to_string()));
    let sent = execute(&chain, &args.global, plan).await?;
    let balance = sent
        .event::<LeaseEscrow::Deposited>()
        .map(|e| e.balance)
        .unwrap_or_default();
    extra.push(("escrow_free", money(balance)));
    sent.report(extra).print(args.global.json);
    Ok(())
}

async fn withdraw(args: AmountArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let amount = U256::from(args.amount);
    let plan = Plan::new("withdraw", "LeaseEscrow", escrow(&chain).withdraw(amount))
        .detail("amount", money(amount));
    let sent = execute(&chain, &args.global, plan).await?;
    let balance = sent
        .event::<LeaseEscrow::Withdrawn>()
        .map(|e| e.balance)
        .unwrap_or_default();
    sent.report(vec![("escrow_free", money(balance))])
        .print(args.global.json);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Leases

async fn lease_open(args: LeaseOpenArgs) -> Result<(), CliError> {
    // Keys, ports and the sealing key are saved first: the VM is created from the chain event,
    // with the profile in effect at that moment.
    let settings = Settings::from_process(&args.global)?;
    // Names are checked before anything is saved or paid; giving them needs the session after.
    let naming = if args.expose.is_empty() {
        None
    } else {
        let session = current_session(&settings)?;
        crate::ingress::check_before_open(&settings, &args.expose).await?;
        Some(session)
    };
    access::prepare_lease(&args.global, &args.ssh_keys, &args.ports).await?;
    let (node, placement) = match args.node {
        Some(node) => (node, None),
        None => {
            let placement = place(&settings, &args).await?;
            let node: B256 = placement.node_id.parse().map_err(|_| {
                CliError::Api(format!(
                    "the scheduler chose an invalid node id: {}",
                    placement.node_id
                ))
            })?;
            eprintln!(
                "the scheduler chose node {node}: the cheapest of {} fitting node(s) among {} at {} USDC/h \
                 (uptime {}, {} compute units left free after this VM)",
                placement.why.fitting,
                placement.why.considered,
                format_usdc(U256::from(placement.price_per_hour)),
                placement
                    .why
                    .uptime_bps
                    .map(|b| format!("{}.{:02}%", b / 100, b % 100))
                    .unwrap_or_else(|| "not measured yet".into()),
                placement.why.free_compute_units_after,
            );
            (node, Some(placement))
        }
    };
    let chain = Chain::with_key(&settings).await?;
    let escrow = escrow(&chain);
    let resources = ILeaseEscrow::Resources {
        vcpus: args.vcpus,
        memoryGiB: args.memory,
        storageGiB: args.storage,
        gpus: args.gpus,
    };
    let quality = QualityTier::from(args.tier);
    let bandwidth = BandwidthTier::from(args.bandwidth);
    let rate = tx::read(
        "LeaseEscrow",
        escrow.quoteRate(node, resources.clone(), quality.into(), bandwidth.into()),
    )
    .await?;
    let template_price = if args.template == 0 {
        U256::ZERO
    } else {
        let market = TemplateMarket::new(
            chain.deployment.contracts.template_market.address,
            &chain.provider,
        );
        tx::read(
            "TemplateMarket",
            market.getTemplate(U256::from(args.template)),
        )
        .await?
        .price
    };
    let max_price = args
        .max_template_price
        .map(U256::from)
        .unwrap_or(template_price);
    // The contract checks the rate at the moment the lease is mined against this maximum, so a
    // price raise that lands first (a front-run, or a floor raise) cannot make the tenant pay it.
    let max_rate = args.max_rate.unwrap_or(rate);
    let funding = U256::from(args.funding);
    // Whole seconds the funding lasts at this rate, rounded down (what the tenant can count on).
    let seconds = if rate == 0 {
        0
    } else {
        u128::from(args.funding) * 3_600 / u128::from(rate)
    };
    let plan = Plan::new(
        "lease open",
        "LeaseEscrow",
        escrow.openLease(
            node,
            resources,
            quality.into(),
            bandwidth.into(),
            U256::from(args.template),
            max_price,
            max_rate,
            funding,
        ),
    )
    .detail("node", json!(node.to_string()))
    .detail(
        "placement",
        match &placement {
            None => json!("the node you named"),
            Some(p) => json!({
                "chosen_by": "scheduler",
                "price_per_hour": money(U256::from(p.price_per_hour)),
                "uptime_bps": p.why.uptime_bps,
                "free_compute_units_after": p.why.free_compute_units_after,
                "considered": p.why.considered,
                "fitting": p.why.fitting,
            }),
        },
    )
    .detail(
        "resources",
        json!({"vcpus": args.vcpus, "memory_gib": args.memory, "storage_gib": args.storage, "gpus": args.gpus}),
    )
    .detail("tier", json!(quality))
    .detail("bandwidth", json!(bandwidth))
    .detail("rate_per_hour", money(U256::from(rate)))
    .detail("max_rate_per_hour", money(U256::from(max_rate)))
    .detail("funding", money(funding))
    .detail(
        "runs_for_seconds",
        json!(u64::try_from(seconds).unwrap_or(u64::MAX)),
    )
    .detail("template", json!(args.template))
    .detail("template_price", money(template_price))
    .detail("total", money(funding + template_price));
    let sent = execute(&chain, &args.global, plan)
        .await
        .map_err(explain_rate_above_max)?;
    let lease = sent
        .event::<LeaseEscrow::LeaseOpened>()
        .map(|e| e.leaseId.to_string())
        .unwrap_or_default();
    let named = match &naming {
        Some(session) if !lease.is_empty() => {
            Some(crate::ingress::name_after_open(&settings, session, &lease, &args.expose).await)
        }
        _ => None,
    };
    let mut fields = vec![("lease", json!(lease))];
    if let Some(Ok(urls)) = &named {
        fields.push((
            "urls",
            json!(urls.iter().map(|u| &u.url).collect::<Vec<_>>()),
        ));
    }
    sent.report(fields).print(args.global.json);
    match named {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Asks the orchestrator's scheduler where a lease with these terms goes. A request no node
/// fits is refused before anything is sent, with the scheduler's reasons.
async fn place(settings: &Settings, args: &LeaseOpenArgs) -> Result<Placement, CliError> {
    let request = PlacementRequest {
        vcpus: args.vcpus.into(),
        memory_gib: args.memory.into(),
        disk_gib: args.storage.into(),
        gpus: args.gpus.into(),
        tier: QualityTier::from(args.tier),
        region: None,
        max_price_per_hour: args.max_rate,
        node_id: None,
    };
    call_api_as(
        reqwest::Client::new()
            .post(endpoint(settings, "/scheduler/plan"))
            .json(&request),
        "placement",
    )
    .await
    .map_err(|e| match e {
        CliError::Api(message) if message.contains("no_fit") || message.contains("invalid_request") => {
            CliError::Invalid(format!(
                "no node fits this lease ({message}); nothing was sent. See `decloud nodes`, or name one with --node"
            ))
        }
        other => other,
    })
}

/// Puts a `RateAboveMax` revert into words: the node's prices rose after the quote.
fn explain_rate_above_max(error: CliError) -> CliError {
    match &error {
        CliError::Sdk(Error::Revert(RevertError::LeaseEscrow(
            LeaseEscrowErrors::RateAboveMax(e),
        ))) => CliError::Invalid(format!(
            "refused: the node's rate is now {} USDC/h, above your maximum of {} USDC/h (its prices \
             rose after the quote); nothing was spent. Check `decloud nodes`, then open again or pass \
             a higher --max-rate",
            format_usdc(U256::from(e.ratePerHour)),
            format_usdc(U256::from(e.maxRatePerHour)),
        )),
        _ => error,
    }
}

async fn lease_topup(args: LeaseTopUpArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let amount = U256::from(args.amount);
    let plan = Plan::new(
        "lease topup",
        "LeaseEscrow",
        escrow(&chain).topUp(U256::from(args.lease), amount),
    )
    .detail("lease", json!(args.lease.to_string()))
    .detail("amount", money(amount));
    let sent = execute(&chain, &args.global, plan).await?;
    let funded = sent
        .event::<LeaseEscrow::LeaseToppedUp>()
        .map(|e| e.funded)
        .unwrap_or_default();
    sent.report(vec![("funded", money(funded))])
        .print(args.global.json);
    Ok(())
}

async fn lease_close(args: LeaseIdArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::with_key(&settings).await?;
    let escrow = escrow(&chain);
    let id = U256::from(args.lease);
    let lease = tx::read("LeaseEscrow", escrow.getLease(id)).await?;
    let accrued = tx::read("LeaseEscrow", escrow.accruedOf(id)).await?;
    let plan = Plan::new("lease close", "LeaseEscrow", escrow.closeLease(id))
        .detail("lease", json!(args.lease.to_string()))
        .detail("funded", money(lease.funded))
        .detail("accrued_so_far", money(accrued))
        .detail("refund_about", money(lease.funded.saturating_sub(accrued)));
    let sent = execute(&chain, &args.global, plan).await?;
    let closed = sent.event::<LeaseEscrow::LeaseClosed>();
    let (settled, refund) = closed.map(|e| (e.settled, e.refund)).unwrap_or_default();
    sent.report(vec![("settled", money(settled)), ("refund", money(refund))])
        .print(args.global.json);
    Ok(())
}

async fn lease_show(args: LeaseIdArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let chain = Chain::read_only(&settings).await?;
    let escrow = escrow(&chain);
    let id = U256::from(args.lease);
    let lease = tx::read("LeaseEscrow", escrow.getLease(id)).await?;
    let accrued = tx::read("LeaseEscrow", escrow.accruedOf(id)).await?;
    let depletion = tx::read("LeaseEscrow", escrow.depletionTime(id)).await?;
    let known = LeaseStatus::try_from(lease.status).ok();
    let status = known.map(|s| json!(s)).unwrap_or(json!(lease.status));
    // Why a lease ended and when accrual stopped: only the arbiter terminates, for a node that
    // went silent (the VM's failure says since when).
    let ended = match known {
        Some(LeaseStatus::Terminated) => vec![
            ("ended_at", json!(lease.endedAt)),
            (
                "why",
                json!(
                    "terminated by the arbiter: its node went silent; nothing is charged after ended_at"
                ),
            ),
        ],
        Some(LeaseStatus::Closed) => vec![("ended_at", json!(lease.endedAt))],
        _ => Vec::new(),
    };
    Report::new(
        "lease",
        [
            ("lease", json!(args.lease.to_string())),
            ("status", status),
            ("tenant", json!(lease.tenant.to_string())),
            ("operator", json!(lease.operator.to_string())),
            ("node", json!(lease.nodeId.to_string())),
            ("rate_per_hour", money(U256::from(lease.ratePerHour))),
            ("funded", money(lease.funded)),
            ("accrued", money(accrued)),
            ("operator_paid", money(lease.operatorPaid)),
            ("template", json!(lease.templateId.to_string())),
            ("opened_at", json!(lease.openedAt)),
            ("depletes_at", json!(depletion)),
        ]
        .into_iter()
        .chain(ended)
        .collect(),
    )
    .print(args.global.json);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Orchestrator: sessions, marketplace, VMs

/// A session kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSession {
    /// Bearer token.
    pub(crate) token: String,
    /// Address the session is bound to.
    pub(crate) address: String,
    /// Chain id of the sign-in message.
    pub(crate) chain_id: u64,
    /// Expiry, unix seconds.
    pub(crate) expires_at: i64,
}

/// The session file: one session per orchestrator URL.
pub(crate) fn sessions_path(config_dir: &Path) -> PathBuf {
    config_dir.join("sessions.json")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn load_sessions(path: &Path) -> Result<BTreeMap<String, StoredSession>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| CliError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes the sessions atomically, readable by the owner only (0600, directory 0700): the file
/// holds bearer tokens.
fn save_sessions(path: &Path, sessions: &BTreeMap<String, StoredSession>) -> Result<(), CliError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let dir = path.parent().expect("the sessions file is in a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let tmp = dir.join(".sessions.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    let text = serde_json::to_string_pretty(sessions).expect("sessions serialize");
    file.write_all(text.as_bytes()).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn session_key(orchestrator: &Url) -> String {
    orchestrator.as_str().trim_end_matches('/').to_string()
}

/// The stored session for the configured orchestrator.
pub(crate) fn current_session(settings: &Settings) -> Result<StoredSession, CliError> {
    let sessions = load_sessions(&sessions_path(&settings.config_dir))?;
    let key = session_key(&settings.orchestrator);
    let session = sessions
        .get(&key)
        .cloned()
        .ok_or_else(|| CliError::Invalid(format!("not signed in to {key}: run `decloud login`")))?;
    if session.expires_at <= OffsetDateTime::now_utc().unix_timestamp() {
        return Err(CliError::Invalid(format!(
            "the session with {key} expired: run `decloud login`"
        )));
    }
    Ok(session)
}

pub(crate) fn endpoint(settings: &Settings, path: &str) -> String {
    format!("{}/api/v1{path}", session_key(&settings.orchestrator))
}

/// Sends a request and returns the body of a success, turning the API's error shape
/// ([`ErrorBody`]) into an error.
async fn call_api(request: reqwest::RequestBuilder) -> Result<String, CliError> {
    let response = request
        .send()
        .await
        .map_err(|e| CliError::Api(format!("request failed: {e}")))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| CliError::Api(format!("reading the answer failed: {e}")))?;
    if status.is_success() {
        return Ok(body);
    }
    let (code, message) = match serde_json::from_str::<ErrorBody>(&body) {
        Ok(e) => (e.error.code, e.error.message),
        // Not the API's shape (a proxy's page, say): show what came.
        Err(_) => ("error".to_string(), body.trim().to_string()),
    };
    Err(CliError::Api(format!("{status} {code}: {message}")))
}

/// [`call_api`], reading the answer as the API's reply type `T`.
pub(crate) async fn call_api_as<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, CliError> {
    let body = call_api(request).await?;
    serde_json::from_str(&body).map_err(|e| CliError::Api(format!("unexpected {what} answer: {e}")))
}

/// The EIP-4361 message `decloud login` signs.
pub(crate) fn siwe_message(
    orchestrator: &Url,
    address: Address,
    chain_id: u64,
    nonce: &str,
    issued_at: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<String, CliError> {
    let host = orchestrator
        .host_str()
        .ok_or_else(|| CliError::Invalid(format!("{orchestrator} has no host")))?;
    let domain = match orchestrator.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let time = |t: OffsetDateTime| {
        t.replace_nanosecond(0)
            .expect("zero nanoseconds")
            .format(&Rfc3339)
            .expect("RFC 3339 formats every time")
    };
    Ok(format!(
        "{domain} wants you to sign in with your Ethereum account:\n{}\n\n\
         Sign in to DeCloud.\n\n\
         URI: {}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {}\n\
         Expiration Time: {}",
        address.to_checksum(None),
        session_key(orchestrator),
        time(issued_at),
        time(expires_at),
    ))
}

async fn login(args: LoginArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let signer = decloud_sdk::wallet::load_signer(settings.keystore.as_deref())?;
    let chain_id = match args.chain_id {
        Some(id) => id,
        None => match settings.configured_chain_id()? {
            Some(id) => id,
            None => Chain::read_only(&settings).await?.chain_id,
        },
    };
    let http = reqwest::Client::new();
    let nonce: NonceResponse =
        call_api_as(http.post(endpoint(&settings, "/auth/nonce")), "nonce").await?;
    let nonce = nonce.nonce;
    let now = OffsetDateTime::now_utc();
    let message = siwe_message(
        &settings.orchestrator,
        signer.address(),
        chain_id,
        &nonce,
        now,
        now + time::Duration::days(1),
    )?;
    let signature = signer
        .sign_message(message.as_bytes())
        .await
        .map_err(decloud_sdk::Error::from)?;
    let signature = format!("0x{}", alloy::primitives::hex::encode(signature.as_bytes()));
    let session: SessionResponse = call_api_as(
        http.post(endpoint(&settings, "/auth/verify"))
            .json(&VerifyRequest { message, signature }),
        "sign-in",
    )
    .await?;
    let stored = StoredSession {
        token: session.token,
        address: session.address,
        chain_id: session.chain_id,
        expires_at: session.expires_at,
    };
    let path = sessions_path(&settings.config_dir);
    let mut sessions = load_sessions(&path)?;
    sessions.insert(session_key(&settings.orchestrator), stored.clone());
    save_sessions(&path, &sessions)?;
    Report::new(
        "login",
        vec![
            ("orchestrator", json!(session_key(&settings.orchestrator))),
            ("address", json!(stored.address)),
            ("chain_id", json!(stored.chain_id)),
            ("expires_at", json!(stored.expires_at)),
            ("session_file", json!(path.display().to_string())),
        ],
    )
    .print(args.global.json);
    Ok(())
}

async fn logout(global: GlobalArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&global)?;
    let path = sessions_path(&settings.config_dir);
    let mut sessions = load_sessions(&path)?;
    let key = session_key(&settings.orchestrator);
    let Some(session) = sessions.remove(&key) else {
        return Err(CliError::Invalid(format!("not signed in to {key}")));
    };
    let revoked = call_api(
        reqwest::Client::new()
            .post(endpoint(&settings, "/auth/logout"))
            .bearer_auth(&session.token),
    )
    .await;
    // Forget the token even when the server no longer knows it (expired or revoked elsewhere);
    // any other failure keeps it so that the revocation can be retried.
    match &revoked {
        Ok(_) => {}
        Err(CliError::Api(message)) if message.starts_with("401") => {}
        Err(_) => return revoked.map(drop),
    }
    save_sessions(&path, &sessions)?;
    Report::new(
        "logout",
        vec![
            ("orchestrator", json!(key)),
            ("address", json!(session.address)),
            ("revoked", json!(revoked.is_ok())),
        ],
    )
    .print(global.json);
    Ok(())
}

fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<String>)>) -> Vec<(&'a str, String)> {
    pairs
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// `url` with the query parameters appended, form-encoded.
fn with_query(url: String, params: &[(&str, String)]) -> Result<Url, CliError> {
    let mut url = Url::parse(&url).map_err(|e| CliError::Invalid(format!("{url}: {e}")))?;
    if !params.is_empty() {
        url.query_pairs_mut().extend_pairs(params);
    }
    Ok(url)
}

/// Basis points from a percentage with at most two decimals (99.5 → 9950).
fn percent_to_bps(percent: f64) -> Result<u32, CliError> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(CliError::Invalid(format!(
            "--min-uptime {percent} is not a percentage between 0 and 100"
        )));
    }
    Ok((percent * 100.0).round() as u32)
}

async fn nodes(args: NodesArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let min_uptime = args.min_uptime.map(percent_to_bps).transpose()?;
    let sort = args.sort.map(|s| {
        match s {
            NodeSort::Uptime => "uptime",
            NodeSort::Price => "price",
            NodeSort::Capacity => "capacity",
        }
        .to_string()
    });
    let params = query([
        ("region", args.region),
        ("tags", args.tags),
        ("max_price", args.max_price.map(|p| p.to_string())),
        ("min_uptime", min_uptime.map(|u| u.to_string())),
        (
            "min_compute_points",
            args.min_compute_points.map(|p| p.to_string()),
        ),
        ("gpu", args.gpu.map(|g| g.to_string())),
        ("online_only", args.online.then(|| "true".to_string())),
        ("sort", sort),
        ("limit", args.limit.map(|l| l.to_string())),
        ("offset", args.offset.map(|o| o.to_string())),
    ]);
    let body: NodeSearchResponse = call_api_as(
        reqwest::Client::new().get(with_query(endpoint(&settings, "/nodes"), &params)?),
        "node search",
    )
    .await?;
    if args.global.json {
        println!("{}", serde_json::to_string_pretty(&body).expect("JSON"));
        return Ok(());
    }
    println!("{} node(s) match, {} shown", body.total, body.nodes.len());
    for listing in &body.nodes {
        let n = &listing.node;
        let usdc = crate::context::usdc;
        let uptime = listing
            .reputation
            .uptime_bps
            .map(|b| format!("{}.{:02}%", b / 100, b % 100))
            .unwrap_or_else(|| "no data".into());
        println!("{}", n.node_id);
        println!(
            "  region {}  {} vCPU  {} GiB RAM  {} GiB disk  {} GPU  {} compute points",
            n.region, n.vcpus, n.memory_gib, n.disk_gib, n.gpus, n.compute_points
        );
        println!(
            "  per hour: {} per vCPU, {} per GiB RAM, {} per GiB disk, {} per GPU",
            usdc(n.prices.cpu_per_hour),
            usdc(n.prices.memory_gib_per_hour),
            usdc(n.prices.storage_gib_per_hour),
            usdc(n.prices.gpu_per_hour)
        );
        println!(
            "  uptime (30 d) {uptime}  online {}  operator {}",
            listing.reputation.online, n.operator
        );
    }
    Ok(())
}

async fn templates(args: TemplatesArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let sort = args.sort.map(|s| {
        match s {
            TemplateSort::Name => "name",
            TemplateSort::Newest => "newest",
            TemplateSort::Price => "price",
        }
        .to_string()
    });
    let params = query([
        ("q", args.query),
        ("category", args.category),
        ("gpu", args.gpu.map(|g| g.to_string())),
        ("tags", args.tags),
        ("sort", sort),
        ("limit", args.limit.map(|l| l.to_string())),
        ("offset", args.offset.map(|o| o.to_string())),
    ]);
    let body: TemplateSearchResponse = call_api_as(
        reqwest::Client::new().get(with_query(endpoint(&settings, "/templates"), &params)?),
        "template search",
    )
    .await?;
    if args.global.json {
        println!("{}", serde_json::to_string_pretty(&body).expect("JSON"));
        return Ok(());
    }
    println!(
        "{} template(s) match, {} shown",
        body.total,
        body.templates.len()
    );
    for t in &body.templates {
        let id = t
            .template_id
            .as_ref()
            .map(|id| format!("template {id}"))
            .unwrap_or_else(|| "not on chain".into());
        println!("{} ({}) — {}  [{}]", t.slug, t.name, t.category, id);
        println!(
            "  price {}  needs {} vCPU, {} GiB RAM, {} GiB disk, {} GPU",
            crate::context::usdc(t.price),
            t.min_vcpus,
            t.min_memory_gib,
            t.min_disk_gib,
            t.gpus
        );
        println!("  {}", t.description);
    }
    Ok(())
}

fn print_vm(vm: &VmRecord) {
    println!("{}  {}", vm.vm_id, vm.state);
    println!("  lease {}  node {}", vm.lease_id, vm.node_id);
    println!(
        "  {} vCPU  {} GiB RAM  {} GiB disk  {} GPU  tier {}",
        vm.vcpus, vm.memory_gib, vm.disk_gib, vm.gpus, vm.tier
    );
    if let Some(failure) = &vm.failure {
        println!("  failure: {failure}");
    }
}

async fn vm_list(global: GlobalArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&global)?;
    let session = current_session(&settings)?;
    let vms: Vec<VmRecord> = call_api_as(
        reqwest::Client::new()
            .get(endpoint(&settings, "/vms"))
            .bearer_auth(&session.token),
        "VM list",
    )
    .await?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&vms).expect("JSON"));
        return Ok(());
    }
    println!("{} VM(s)", vms.len());
    vms.iter().for_each(print_vm);
    Ok(())
}

async fn vm_show(args: VmShowArgs) -> Result<(), CliError> {
    let settings = Settings::from_process(&args.global)?;
    let session = current_session(&settings)?;
    let body: VmDetail = call_api_as(
        reqwest::Client::new()
            .get(endpoint(&settings, &format!("/vms/{}", args.vm)))
            .bearer_auth(&session.token),
        "VM",
    )
    .await?;
    if args.global.json {
        println!("{}", serde_json::to_string_pretty(&body).expect("JSON"));
    } else {
        print_vm(&body.vm);
        access::print_access(&body);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        access::print_readiness(&body, now);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    #[test]
    fn the_sign_in_message_is_eip_4361() {
        let url: Url = "http://127.0.0.1:8080".parse().unwrap();
        let address: Address = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
            .parse()
            .unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let text = siwe_message(
            &url,
            address,
            31_337,
            "abcdefgh12345678",
            now,
            now + time::Duration::hours(1),
        )
        .unwrap();
        let parsed = siwe::Message::from_str(&text).unwrap();
        assert_eq!(parsed.domain.to_string(), "127.0.0.1:8080");
        assert_eq!(parsed.address, address.0.0);
        assert_eq!(parsed.chain_id, 31_337);
        assert_eq!(parsed.nonce, "abcdefgh12345678");
        assert_eq!(parsed.uri.to_string(), "http://127.0.0.1:8080");
        assert!(parsed.expiration_time.is_some());
    }

    #[test]
    fn sessions_are_written_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = sessions_path(&dir.path().join("decloud"));
        let mut sessions = BTreeMap::new();
        sessions.insert(
            "http://o".to_string(),
            StoredSession {
                token: "t".into(),
                address: "0xab".into(),
                chain_id: 1,
                expires_at: 2,
            },
        );
        save_sessions(&path, &sessions).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_sessions(&path).unwrap(), sessions);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    fn parse(args: &[&str]) -> Result<crate::Cli, clap::Error> {
        use clap::Parser as _;
        crate::Cli::try_parse_from(std::iter::once("decloud").chain(args.iter().copied()))
    }

    fn tenant(args: &[&str]) -> TenantCommand {
        match parse(args).unwrap().command {
            crate::Command::Tenant(command) => command,
            other => panic!("not a tenant command: {other:?}"),
        }
    }

    #[test]
    fn tenant_arguments_parse() {
        match tenant(&["deposit", "12.5", "--yes", "--json", "--network", "amoy"]) {
            TenantCommand::Deposit(a) => {
                assert_eq!(a.amount, 12_500_000);
                assert!(a.global.yes && a.global.json);
                assert_eq!(a.global.network.as_deref(), Some("amoy"));
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["withdraw", "1.0000001"]).unwrap_err().to_string();
        assert!(err.contains("more than 6 decimals"), "{err}");
        assert!(parse(&["withdraw", "-1"]).is_err());
        assert!(parse(&["deposit"]).is_err(), "an amount is required");

        let node = format!("0x{}", "ab".repeat(32));
        match tenant(&[
            "lease",
            "open",
            "--node",
            &node,
            "--vcpus",
            "2",
            "--memory",
            "4",
            "--tier",
            "burstable",
            "--bandwidth",
            "performance",
            "--template",
            "3",
            "--funding",
            "5",
        ]) {
            TenantCommand::Lease(LeaseCommand::Open(a)) => {
                assert_eq!(a.node.map(|n| n.to_string()), Some(node.clone()));
                assert_eq!((a.vcpus, a.memory, a.storage, a.gpus), (2, 4, 10, 0));
                assert_eq!(QualityTier::from(a.tier), QualityTier::Burstable);
                assert_eq!(BandwidthTier::from(a.bandwidth), BandwidthTier::Performance);
                assert_eq!((a.template, a.funding), (3, 5_000_000));
                assert_eq!(a.max_template_price, None);
            }
            other => panic!("{other:?}"),
        }
        match tenant(&["lease", "open", "--funding", "1"]) {
            TenantCommand::Lease(LeaseCommand::Open(a)) => {
                assert_eq!(a.node, None, "without --node the scheduler chooses")
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["lease", "open", "--node", "0x12", "--funding", "1"]).is_err());
        assert!(
            parse(&["lease", "open", "--node", &node]).is_err(),
            "funding is required"
        );
        assert!(
            parse(&[
                "lease",
                "open",
                "--node",
                &node,
                "--funding",
                "1",
                "--tier",
                "gold"
            ])
            .is_err()
        );
        match tenant(&["lease", "topup", "7", "0.000001"]) {
            TenantCommand::Lease(LeaseCommand::Topup(a)) => assert_eq!((a.lease, a.amount), (7, 1)),
            other => panic!("{other:?}"),
        }
        match tenant(&[
            "nodes",
            "--region",
            "eu-west",
            "--max-price",
            "0.01",
            "--online",
        ]) {
            TenantCommand::Nodes(a) => {
                assert_eq!(a.max_price, Some(10_000));
                assert!(a.online);
            }
            other => panic!("{other:?}"),
        }
        match tenant(&["vm", "console", "vm-2"]) {
            TenantCommand::Vm(VmCommand::Console(a)) => assert_eq!(a.vm.to_string(), "vm-2"),
            other => panic!("{other:?}"),
        }
        match tenant(&["vm", "show", "vm-1", "--orchestrator", "http://o:1"]) {
            TenantCommand::Vm(VmCommand::Show(a)) => {
                assert_eq!(a.vm, VmId::for_lease(1.into()));
                assert_eq!(a.global.orchestrator.unwrap().as_str(), "http://o:1/");
            }
            other => panic!("{other:?}"),
        }
        for bad in ["17", "vm-x", "VM-1", "vm-0x1"] {
            let err = parse(&["vm", "show", bad]).unwrap_err().to_string();
            assert!(err.contains(&format!("invalid vm id {bad:?}")), "{err}");
        }
        assert!(
            parse(&["deposit", "1", "--private-key", "0x01"]).is_err(),
            "keys never come from flags"
        );
    }

    #[test]
    fn uptime_percent_becomes_basis_points() {
        assert_eq!(percent_to_bps(99.5).unwrap(), 9_950);
        assert_eq!(percent_to_bps(100.0).unwrap(), 10_000);
        assert!(percent_to_bps(101.0).is_err());
        assert!(percent_to_bps(-1.0).is_err());
    }
}
