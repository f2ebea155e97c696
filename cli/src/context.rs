//! What every role command shares: the global options (network, RPC URL, orchestrator, key,
//! output), their resolution (defaults → config file → environment → flags, in
//! [`Settings::resolve`] and nowhere else, through the resolver every DeCloud binary shares),
//! exact USDC amounts, the chain connection, and the
//! one path every transaction takes (preview with cost → confirmation → mined → report).

use std::{
    collections::BTreeMap,
    io::{BufRead as _, IsTerminal as _, Write as _},
    path::{Path, PathBuf},
};

use alloy::{
    network::TransactionBuilder as _,
    primitives::{Address, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::{TransactionReceipt, TransactionRequest},
    signers::local::PrivateKeySigner,
    sol_types::SolEvent,
};
use clap::Args;
use decloud_runtime::config::{ConfigError, EnvVar, Layers};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use decloud_sdk::{
    Error,
    deployments::{Deployment, DeploymentsError, Networks},
    paths, wallet,
};

/// Environment variables read by [`Settings::resolve`] (each below the matching flag).
pub(crate) mod env {
    /// Network name from networks.toml.
    pub(crate) const NETWORK: &str = "DECLOUD_NETWORK";
    /// RPC URL.
    pub(crate) const RPC_URL: &str = "DECLOUD_RPC_URL";
    /// Orchestrator base URL.
    pub(crate) const ORCHESTRATOR: &str = "DECLOUD_ORCHESTRATOR";
    /// Directory of networks.toml and the deployment records.
    pub(crate) const DEPLOYMENTS_DIR: &str = "DECLOUD_DEPLOYMENTS_DIR";
    /// Encrypted JSON keystore.
    pub(crate) const KEYSTORE: &str = "DECLOUD_KEYSTORE";
    /// Configuration file.
    pub(crate) const CONFIG: &str = "DECLOUD_CONFIG";
    /// Base of the per-user configuration directory (XDG).
    pub(crate) const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
}

/// The orchestrator a fresh install talks to: the local one `decloud dev` serves.
pub(crate) const DEFAULT_ORCHESTRATOR: &str = "http://127.0.0.1:8080";
/// The network used when neither a network nor an RPC URL is configured anywhere.
pub(crate) const DEFAULT_NETWORK: &str = "anvil";

/// Everything that can stop a role command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The chain, a contract or the configuration failed (reverts are decoded here).
    #[error(transparent)]
    Sdk(#[from] Error),
    /// An argument is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A transaction needs confirmation and there is no terminal to ask on.
    #[error(
        "refusing to send a transaction without confirmation: stdin is not a terminal (pass --yes)"
    )]
    NeedsConfirmation,
    /// The user answered no.
    #[error("cancelled: nothing was sent")]
    Cancelled,
    /// The orchestrator answered with an error or could not be reached.
    #[error("orchestrator: {0}")]
    Api(String),
    /// A storage command failed.
    #[error(transparent)]
    Storage(#[from] decloud_sdk::storage::StorageError),
    /// A local file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid.
    #[error("invalid config file {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl From<DeploymentsError> for CliError {
    fn from(e: DeploymentsError) -> Self {
        Self::Sdk(e.into())
    }
}

impl From<wallet::WalletError> for CliError {
    fn from(e: wallet::WalletError) -> Self {
        Self::Sdk(e.into())
    }
}

impl From<CliError> for Error {
    fn from(e: CliError) -> Self {
        match e {
            CliError::Sdk(e) => e,
            other => Error::Chain(other.to_string()),
        }
    }
}

/// Options every role command takes.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct GlobalArgs {
    /// Network name from networks.toml (default: anvil) [env: DECLOUD_NETWORK].
    #[arg(long)]
    pub(crate) network: Option<String>,
    /// RPC URL (overrides the network's) [env: DECLOUD_RPC_URL].
    #[arg(long)]
    pub(crate) rpc_url: Option<Url>,
    /// Orchestrator base URL (default: http://127.0.0.1:8080) [env: DECLOUD_ORCHESTRATOR].
    #[arg(long)]
    pub(crate) orchestrator: Option<Url>,
    /// Encrypted JSON keystore (password from DECLOUD_KEYSTORE_PASSWORD or a prompt); without
    /// it the key comes from DECLOUD_PRIVATE_KEY [env: DECLOUD_KEYSTORE].
    #[arg(long)]
    pub(crate) keystore: Option<PathBuf>,
    /// Directory of networks.toml and <chainId>.json (default: the repository's deployments/)
    /// [env: DECLOUD_DEPLOYMENTS_DIR].
    #[arg(long)]
    pub(crate) deployments_dir: Option<PathBuf>,
    /// Configuration file (default: $XDG_CONFIG_HOME/decloud/config.toml) [env: DECLOUD_CONFIG].
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Send transactions without asking for confirmation.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

/// The configuration file: every key optional, each overridden by the environment and flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// Network name.
    pub(crate) network: Option<String>,
    /// RPC URL.
    pub(crate) rpc_url: Option<String>,
    /// Orchestrator base URL.
    pub(crate) orchestrator: Option<String>,
    /// Deployments directory.
    pub(crate) deployments_dir: Option<PathBuf>,
    /// Keystore.
    pub(crate) keystore: Option<PathBuf>,
}

/// The resolved settings of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Network name; `None` with an RPC URL means "find the network by chain id".
    pub(crate) network: Option<String>,
    /// RPC URL, when given anywhere (else the network's).
    pub(crate) rpc_url: Option<Url>,
    /// Orchestrator base URL.
    pub(crate) orchestrator: Url,
    /// Deployments directory, when given anywhere (else the repository's).
    pub(crate) deployments_dir: Option<PathBuf>,
    /// Keystore, when given anywhere (else DECLOUD_PRIVATE_KEY).
    pub(crate) keystore: Option<PathBuf>,
    /// The per-user configuration directory (session file, content store).
    pub(crate) config_dir: PathBuf,
}

/// The per-user configuration directory: `$XDG_CONFIG_HOME/decloud`, else `$HOME/.config/decloud`.
pub(crate) fn config_dir(env: &impl Fn(&str) -> Option<String>) -> Result<PathBuf, CliError> {
    let non_empty = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(base) = non_empty(env::XDG_CONFIG_HOME) {
        return Ok(PathBuf::from(base).join("decloud"));
    }
    match non_empty("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".config").join("decloud")),
        None => Err(CliError::Invalid(
            "cannot find a configuration directory: set XDG_CONFIG_HOME or HOME".into(),
        )),
    }
}

fn parse_url(what: &str, text: &str) -> Result<Url, CliError> {
    Url::parse(text.trim()).map_err(|e| CliError::Invalid(format!("invalid {what} {text:?}: {e}")))
}

/// The environment variables of [`Settings::resolve`] and the keys they set.
const ENV: &[EnvVar] = &[
    EnvVar::string(env::NETWORK, "network"),
    EnvVar::with(env::RPC_URL, "rpc_url", url_value),
    EnvVar::with(env::ORCHESTRATOR, "orchestrator", url_value),
    EnvVar::string(env::DEPLOYMENTS_DIR, "deployments_dir"),
    EnvVar::string(env::KEYSTORE, "keystore"),
];

fn url_value(text: &str) -> Result<toml::Value, String> {
    Url::parse(text.trim())
        .map(|url| url.to_string().into())
        .map_err(|e| format!("not a URL: {e}"))
}

/// The flags that were given, as a layer of settings.
#[derive(Serialize)]
struct FlagLayer<'a> {
    network: &'a Option<String>,
    rpc_url: Option<&'a str>,
    orchestrator: Option<&'a str>,
    deployments_dir: &'a Option<PathBuf>,
    keystore: &'a Option<PathBuf>,
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Read { path, source } => Self::Io { path, source },
            ConfigError::Parse { path, source } => Self::Config {
                path,
                message: source.to_string(),
            },
            other => Self::Invalid(other.to_string()),
        }
    }
}

impl Settings {
    /// Resolves the settings: defaults, then the config file, then the environment, then flags.
    /// `read_file` returns the text of the config file, or `None` when it does not exist.
    pub(crate) fn resolve(
        args: &GlobalArgs,
        env: impl Fn(&str) -> Option<String>,
        read_file: impl Fn(&Path) -> Result<Option<String>, std::io::Error>,
    ) -> Result<Self, CliError> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let config_dir = config_dir(&env)?;
        let file_path = args
            .config
            .clone()
            .or_else(|| var(env::CONFIG).map(PathBuf::from))
            .unwrap_or_else(|| config_dir.join("config.toml"));
        let explicit_file = args.config.is_some() || var(env::CONFIG).is_some();
        let mut layers = Layers::new();
        match read_file(&file_path).map_err(|source| CliError::Io {
            path: file_path.clone(),
            source,
        })? {
            Some(text) => layers = layers.file_text(&file_path, &text)?,
            None if explicit_file => {
                return Err(CliError::Io {
                    path: file_path,
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
            None => {}
        }
        let settings: FileConfig = layers
            .env(ENV, var)?
            .layer(&FlagLayer {
                network: &args.network,
                rpc_url: args.rpc_url.as_ref().map(Url::as_str),
                orchestrator: args.orchestrator.as_ref().map(Url::as_str),
                deployments_dir: &args.deployments_dir,
                keystore: &args.keystore,
            })?
            .extract()?;

        let network = settings.network;
        // Environment values and flags are URLs already; a file's is checked here.
        let rpc_url = settings
            .rpc_url
            .map(|url| parse_url("rpc_url", &url))
            .transpose()?;
        // The default network applies only when nothing names a chain: with only an RPC URL the
        // chain itself says which network it is.
        let network = match (network, &rpc_url) {
            (None, None) => Some(DEFAULT_NETWORK.to_string()),
            (network, _) => network,
        };
        let orchestrator = parse_url(
            "orchestrator",
            settings
                .orchestrator
                .as_deref()
                .unwrap_or(DEFAULT_ORCHESTRATOR),
        )?;
        Ok(Self {
            network,
            rpc_url,
            orchestrator,
            deployments_dir: settings.deployments_dir,
            keystore: settings.keystore,
            config_dir,
        })
    }

    /// [`Self::resolve`] with the process environment and file system.
    pub(crate) fn from_process(args: &GlobalArgs) -> Result<Self, CliError> {
        Self::resolve(
            args,
            |name| std::env::var(name).ok(),
            |path| match std::fs::read_to_string(path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        )
    }

    fn deployments_dir(&self) -> Result<PathBuf, CliError> {
        match &self.deployments_dir {
            Some(dir) => Ok(dir.clone()),
            None => Ok(paths::deployments_dir(&paths::repo_root()?)),
        }
    }

    /// The chain id the settings name without asking the chain (the network's), if any.
    pub(crate) fn configured_chain_id(&self) -> Result<Option<u64>, CliError> {
        match &self.network {
            Some(name) => {
                let networks = Networks::load(&self.deployments_dir()?.join("networks.toml"))?;
                Ok(Some(networks.get(name)?.chain_id))
            }
            None => Ok(None),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// USDC amounts

/// Micro-USDC in one USDC.
const MICRO: u64 = decloud_sdk::USDC;

/// Parses a decimal USDC amount (`12.5`, `0.000001`, `3`) into micro-USDC, exactly: more than 6
/// decimals, a sign, anything but digits and one point, or more than `u64::MAX` micro-USDC is an
/// error.
pub(crate) fn parse_usdc(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if text.starts_with('-') {
        return Err(format!("{text:?}: amounts cannot be negative"));
    }
    if (whole.is_empty() && fraction.is_none_or(str::is_empty))
        || !digits(whole)
        || !fraction.is_none_or(digits)
    {
        return Err(format!(
            "{text:?} is not a USDC amount (e.g. 12.5 or 0.000001)"
        ));
    }
    let fraction = fraction.unwrap_or("");
    if fraction.len() > 6 {
        return Err(format!(
            "{text:?} has more than 6 decimals: USDC's smallest unit is 0.000001"
        ));
    }
    let overflow = || format!("{text:?} is too large");
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| overflow())?
    };
    let micro_fraction: u64 = format!("{fraction:0<6}").parse().expect("six digits");
    whole
        .checked_mul(MICRO)
        .and_then(|w| w.checked_add(micro_fraction))
        .ok_or_else(overflow)
}

/// clap value parser for USDC amounts.
pub(crate) fn usdc_arg(text: &str) -> Result<u64, String> {
    parse_usdc(text)
}

/// Formats micro-USDC as `12.500000 USDC`.
pub(crate) fn format_usdc(micro: U256) -> String {
    let micro_u = U256::from(MICRO);
    format!(
        "{}.{:06} USDC",
        micro / micro_u,
        (micro % micro_u).to::<u64>()
    )
}

/// [`format_usdc`] for a `u64`.
pub(crate) fn usdc(micro: u64) -> String {
    format_usdc(U256::from(micro))
}

/// Formats wei with 18 decimals, trailing zeros trimmed, e.g. `0.00012 ETH`.
pub(crate) fn format_native(wei: U256, symbol: &str) -> String {
    let unit = U256::from(10u64).pow(U256::from(18));
    let fraction = format!("{:018}", wei % unit);
    let fraction = fraction.trim_end_matches('0');
    let fraction = if fraction.is_empty() { "0" } else { fraction };
    format!("{}.{fraction} {symbol}", wei / unit)
}

// ---------------------------------------------------------------------------------------------
// Chain

/// A connection to the chain with the deployment record of that chain and, for transactions,
/// the signer.
#[derive(Debug)]
pub(crate) struct Chain {
    /// Provider (signing when a key was loaded).
    pub(crate) provider: DynProvider,
    /// The signer's address, when a key was loaded.
    pub(crate) from: Option<Address>,
    /// The signer, when a key was loaded.
    pub(crate) signer: Option<PrivateKeySigner>,
    /// What is deployed on this chain.
    pub(crate) deployment: Deployment,
    /// Chain id.
    pub(crate) chain_id: u64,
}

impl Chain {
    /// Connects as the configured key's owner.
    pub(crate) async fn with_key(settings: &Settings) -> Result<Self, CliError> {
        let signer = wallet::load_signer(settings.keystore.as_deref())?;
        Self::connect(settings, Some(signer)).await
    }

    /// Connects without a key (read-only).
    pub(crate) async fn read_only(settings: &Settings) -> Result<Self, CliError> {
        Self::connect(settings, None).await
    }

    async fn connect(
        settings: &Settings,
        signer: Option<PrivateKeySigner>,
    ) -> Result<Self, CliError> {
        let dir = settings.deployments_dir()?;
        let networks = Networks::load(&dir.join("networks.toml"))?;
        let network = match &settings.network {
            Some(name) => Some((name.clone(), networks.get(name)?.clone())),
            None => None,
        };
        let url = match (&settings.rpc_url, &network) {
            (Some(url), _) => url.clone(),
            (None, Some((name, network))) => network.rpc_url(name)?,
            (None, None) => {
                return Err(CliError::Invalid("no network and no RPC URL".into()));
            }
        };
        let from = signer.as_ref().map(PrivateKeySigner::address);
        let provider = match &signer {
            Some(signer) => decloud_sdk::tx::signing_provider(url.clone(), signer.clone()),
            None => ProviderBuilder::new().connect_http(url.clone()).erased(),
        };
        let chain_id = provider.get_chain_id().await.map_err(Error::from)?;
        if let Some((name, network)) = &network
            && network.chain_id != chain_id
        {
            return Err(CliError::Invalid(format!(
                "network {name} is chain {}, but {url} is chain {chain_id}",
                network.chain_id
            )));
        }
        let deployment = Deployment::load(&dir, chain_id)?;
        Ok(Self {
            provider,
            from,
            signer,
            deployment,
            chain_id,
        })
    }

    /// The signer's address (only called on connections made [`Chain::with_key`]).
    pub(crate) fn sender(&self) -> Address {
        self.from.expect("connected with a key")
    }

    /// The signer (only on connections made [`Chain::with_key`]).
    pub(crate) fn signer(&self) -> &PrivateKeySigner {
        self.signer.as_ref().expect("connected with a key")
    }

    /// The native token's symbol.
    pub(crate) fn native_symbol(&self) -> &'static str {
        match self.chain_id {
            137 | 80_002 => "POL",
            _ => "ETH",
        }
    }

    /// The latest block's timestamp.
    pub(crate) async fn now(&self) -> Result<u64, CliError> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| CliError::Invalid("the chain has no latest block".into()))?;
        Ok(block.header.timestamp)
    }
}

// ---------------------------------------------------------------------------------------------
// Transactions

/// One transaction a command wants to send, with what it means in words.
#[derive(Debug)]
pub(crate) struct Plan {
    /// What the command does, e.g. `deposit`.
    pub(crate) action: &'static str,
    /// The called contract's name (its custom errors are tried first when decoding a revert).
    pub(crate) contract: &'static str,
    /// The transaction.
    pub(crate) request: TransactionRequest,
    /// What it moves or changes, for the preview and the report (e.g. `amount` → `12.5 USDC`).
    pub(crate) details: Vec<(&'static str, Value)>,
}

impl Plan {
    /// A plan for the call `call` on `contract`.
    pub(crate) fn new<P, D>(
        action: &'static str,
        contract: &'static str,
        call: alloy::contract::CallBuilder<P, D>,
    ) -> Self
    where
        P: Provider,
        D: alloy::contract::CallDecoder,
    {
        Self {
            action,
            contract,
            request: call.into_transaction_request(),
            details: Vec::new(),
        }
    }

    /// Adds a line to the preview and the report.
    pub(crate) fn detail(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.details.push((key, value.into()));
        self
    }
}

/// A mined, successful transaction.
#[derive(Debug)]
pub(crate) struct Sent {
    /// Its receipt.
    pub(crate) receipt: TransactionReceipt,
    /// The plan's details, for the report.
    details: Vec<(&'static str, Value)>,
    action: &'static str,
    symbol: &'static str,
}

impl Sent {
    /// The first log of event `E` in the receipt.
    pub(crate) fn event<E: SolEvent>(&self) -> Option<E> {
        self.receipt
            .inner
            .logs()
            .iter()
            .find_map(|log| log.log_decode::<E>().ok().map(|l| l.inner.data))
    }

    /// The report of this transaction, with `extra` facts learnt from its events.
    pub(crate) fn report(self, extra: Vec<(&'static str, Value)>) -> Report {
        let fee = U256::from(self.receipt.gas_used) * U256::from(self.receipt.effective_gas_price);
        let mut fields: Vec<(&'static str, Value)> = self.details;
        fields.extend(extra);
        fields.push((
            "tx_hash",
            json!(format!("{}", self.receipt.transaction_hash)),
        ));
        fields.push(("block", json!(self.receipt.block_number)));
        fields.push(("gas_used", json!(self.receipt.gas_used)));
        fields.push(("fee", json!(format_native(fee, self.symbol))));
        Report {
            action: self.action,
            fields,
        }
    }
}

/// Decodes a failed transport call as a revert of `contract` when it carries revert data.
fn transport_error(e: alloy::transports::TransportError, contract: &str) -> Error {
    match e.as_error_resp().and_then(|r| r.as_revert_data()) {
        Some(data) => Error::from_revert_data(Some(contract), data),
        None => Error::Rpc(e),
    }
}

/// Runs a plan: [`prepare`], then [`Ready::send`].
pub(crate) async fn execute(
    chain: &Chain,
    args: &GlobalArgs,
    plan: Plan,
) -> Result<Sent, CliError> {
    prepare(chain, args, plan).await?.send().await
}

/// A transaction estimated, shown and confirmed, not sent yet.
#[derive(Debug)]
pub(crate) struct Ready<'a> {
    chain: &'a Chain,
    request: TransactionRequest,
    plan: Plan,
}

/// Estimates a plan (a revert stops here, before anything is asked or sent), shows what it moves
/// and what it will cost, and asks for confirmation unless `--yes`.
pub(crate) async fn prepare<'a>(
    chain: &'a Chain,
    args: &GlobalArgs,
    plan: Plan,
) -> Result<Ready<'a>, CliError> {
    let request = plan.request.clone().with_from(chain.sender());
    let gas = chain
        .provider
        .estimate_gas(request.clone())
        .await
        .map_err(|e| transport_error(e, plan.contract))?;
    tracing::debug!(target: "decloud::tx", action = plan.action, gas, "estimated");
    let fees = chain
        .provider
        .estimate_eip1559_fees()
        .await
        .map_err(Error::from)?;
    let gas_limit = decloud_sdk::tx::gas_limit_with_margin(gas);
    let max_fee = U256::from(gas_limit) * U256::from(fees.max_fee_per_gas);
    let typical = U256::from(gas) * U256::from(fees.max_fee_per_gas);
    let symbol = chain.native_symbol();

    let mut preview = format!("{} on chain {}:\n", plan.action, chain.chain_id);
    preview.push_str(&format!("  from: {}\n", chain.sender()));
    for (key, value) in &plan.details {
        preview.push_str(&format!("  {key}: {}\n", text(value)));
    }
    preview.push_str(&format!(
        "  estimated gas: {gas} (limit {gas_limit}), estimated fee {} (at most {})\n",
        format_native(typical, symbol),
        format_native(max_fee, symbol)
    ));
    eprint!("{preview}");
    confirm(args.yes)?;
    let request = request
        .with_gas_limit(gas_limit)
        .with_max_fee_per_gas(fees.max_fee_per_gas)
        .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
    Ok(Ready {
        chain,
        request,
        plan,
    })
}

impl Ready<'_> {
    /// Sends the transaction and waits until it is mined; a failed transaction is an error.
    pub(crate) async fn send(self) -> Result<Sent, CliError> {
        let pending = self
            .chain
            .provider
            .send_transaction(self.request)
            .await
            .map_err(|e| transport_error(e, self.plan.contract))?;
        eprintln!("  sent {}, waiting until it is mined…", pending.tx_hash());
        tracing::debug!(target: "decloud::tx", action = self.plan.action, tx = %pending.tx_hash(), "sent");
        let receipt = pending.get_receipt().await.map_err(Error::from)?;
        tracing::debug!(
            target: "decloud::tx",
            action = self.plan.action,
            block = ?receipt.block_number,
            gas_used = receipt.gas_used,
            success = receipt.status(),
            "mined"
        );
        if !receipt.status() {
            return Err(Error::TransactionFailed(receipt.transaction_hash).into());
        }
        Ok(Sent {
            receipt,
            details: self.plan.details,
            action: self.plan.action,
            symbol: self.chain.native_symbol(),
        })
    }
}

/// Asks on the terminal; refuses without one.
pub(crate) fn confirm(yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::NeedsConfirmation);
    }
    eprint!("Send this transaction? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|source| CliError::Io {
            path: PathBuf::from("<stdin>"),
            source,
        })?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CliError::Cancelled),
    }
}

// ---------------------------------------------------------------------------------------------
// Output

/// The result of a command: text lines, or one JSON object with `--json`.
#[derive(Debug)]
pub(crate) struct Report {
    /// What was done.
    pub(crate) action: &'static str,
    /// Ordered facts.
    pub(crate) fields: Vec<(&'static str, Value)>,
}

impl Report {
    /// A report of facts (no transaction).
    pub(crate) fn new(action: &'static str, fields: Vec<(&'static str, Value)>) -> Self {
        Self { action, fields }
    }

    /// Prints the report on stdout.
    pub(crate) fn print(&self, json: bool) {
        if json {
            let mut object: BTreeMap<&str, Value> = BTreeMap::new();
            object.insert("action", json!(self.action));
            for (key, value) in &self.fields {
                object.insert(key, value.clone());
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&object).expect("JSON values serialize")
            );
        } else {
            println!("{}", self.action);
            for (key, value) in &self.fields {
                println!("  {key}: {}", text(value));
            }
        }
    }
}

/// A JSON value as a person reads it: strings without quotes, money in USDC, lists joined with
/// commas (`none` when empty), other objects as `key=value` pairs (those without a value left
/// out), and a list of objects one per indented line.
pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("usdc") => text(&o["usdc"]),
        // A field without a value (`"error": null`) says nothing to a reader.
        Value::Object(o) => o
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| format!("{key}={}", text(value)))
            .collect::<Vec<_>>()
            .join(" "),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) if items.iter().any(Value::is_object) => items
            .iter()
            .map(|item| format!("\n    {}", text(item)))
            .collect(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// A money field: the exact micro-USDC integer (as a string, for JSON readers without 64-bit
/// integers) in JSON, `12.500000 USDC` in text. Both go into the report.
pub(crate) fn money(micro: U256) -> Value {
    json!({ "micro_usdc": micro.to_string(), "usdc": format_usdc(micro) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_as_text() {
        assert_eq!(text(&json!("stored")), "stored");
        assert_eq!(text(&money(U256::from(1_500_000u64))), "1.500000 USDC");
        assert_eq!(text(&json!(["0xab", "0xcd"])), "0xab, 0xcd");
        assert_eq!(text(&json!([])), "none");
        assert_eq!(
            text(&json!({"state": "registered", "repairer": "0x56"})),
            "repairer=0x56 state=registered"
        );
        assert_eq!(
            text(&json!({"deleted": true, "error": null, "node": "0x1"})),
            "deleted=true node=0x1"
        );
        assert_eq!(
            text(
                &json!([{"node": "0x1", "url": "http://a/"}, {"node": "0x2", "url": "http://b/"}])
            ),
            "\n    node=0x1 url=http://a/\n    node=0x2 url=http://b/"
        );
        assert_eq!(text(&json!(null)), "null");
    }

    #[test]
    fn usdc_amounts_parse_exactly() {
        assert_eq!(parse_usdc("12.5"), Ok(12_500_000));
        assert_eq!(parse_usdc("12.500000"), Ok(12_500_000));
        assert_eq!(parse_usdc("0.000001"), Ok(1));
        assert_eq!(parse_usdc(".5"), Ok(500_000));
        assert_eq!(parse_usdc("3"), Ok(3_000_000));
        assert_eq!(parse_usdc("3."), Ok(3_000_000));
        assert_eq!(parse_usdc("0"), Ok(0));
        assert_eq!(parse_usdc(" 7.25 "), Ok(7_250_000));
        assert_eq!(
            parse_usdc("18446744073709.551615"),
            Ok(u64::MAX),
            "the largest amount"
        );
    }

    #[test]
    fn bad_usdc_amounts_are_rejected() {
        for (input, why) in [
            ("0.0000001", "more than 6 decimals"),
            ("1.1234567", "more than 6 decimals"),
            ("-1", "negative"),
            ("-0.5", "negative"),
            ("18446744073709.551616", "too large"),
            ("99999999999999999999", "too large"),
            ("", "not a USDC amount"),
            (".", "not a USDC amount"),
            ("1.2.3", "not a USDC amount"),
            ("1e6", "not a USDC amount"),
            ("+1", "not a USDC amount"),
            ("1,5", "not a USDC amount"),
            ("0x10", "not a USDC amount"),
        ] {
            let err = parse_usdc(input).unwrap_err();
            assert!(err.contains(why), "{input:?}: {err}");
        }
    }

    #[test]
    fn usdc_amounts_format_with_six_decimals() {
        assert_eq!(usdc(12_500_000), "12.500000 USDC");
        assert_eq!(usdc(1), "0.000001 USDC");
        assert_eq!(usdc(0), "0.000000 USDC");
        assert_eq!(
            format_usdc(U256::from(u64::MAX) * U256::from(10u64)),
            "184467440737095.516150 USDC"
        );
        for micro in [0, 1, 999_999, 1_000_000, 123_456_789, u64::MAX] {
            let shown = usdc(micro);
            assert_eq!(
                parse_usdc(shown.trim_end_matches(" USDC")),
                Ok(micro),
                "{shown}"
            );
        }
    }

    #[test]
    fn native_fees_format_with_eighteen_decimals() {
        assert_eq!(format_native(U256::ZERO, "ETH"), "0.0 ETH");
        assert_eq!(
            format_native(U256::from(1_500_000_000_000_000_000u64), "POL"),
            "1.5 POL"
        );
        assert_eq!(
            format_native(U256::from(1u64), "ETH"),
            "0.000000000000000001 ETH"
        );
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    const FILE: &str = "network = \"amoy\"\nrpc_url = \"http://file:1\"\n\
                        orchestrator = \"http://file-orch:2\"\nkeystore = \"/file/key\"\n\
                        deployments_dir = \"/file/deployments\"\n";

    #[test]
    fn settings_precedence_is_defaults_file_env_flags() {
        let no_file = |_: &Path| Ok(None);
        let home = &[("HOME", "/home/u")];
        let defaults = Settings::resolve(&GlobalArgs::default(), env_of(home), no_file).unwrap();
        assert_eq!(defaults.network.as_deref(), Some(DEFAULT_NETWORK));
        assert_eq!(defaults.rpc_url, None);
        assert_eq!(defaults.orchestrator.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(defaults.keystore, None);
        assert_eq!(
            defaults.config_dir,
            PathBuf::from("/home/u/.config/decloud")
        );

        let with_file = |path: &Path| {
            assert_eq!(path, Path::new("/xdg/decloud/config.toml"));
            Ok(Some(FILE.to_string()))
        };
        let xdg = &[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/xdg")];
        let file = Settings::resolve(&GlobalArgs::default(), env_of(xdg), with_file).unwrap();
        assert_eq!(file.network.as_deref(), Some("amoy"));
        assert_eq!(file.rpc_url.unwrap().as_str(), "http://file:1/");
        assert_eq!(file.orchestrator.as_str(), "http://file-orch:2/");
        assert_eq!(file.keystore, Some(PathBuf::from("/file/key")));
        assert_eq!(
            file.deployments_dir,
            Some(PathBuf::from("/file/deployments"))
        );

        let envs = &[
            ("XDG_CONFIG_HOME", "/xdg"),
            ("DECLOUD_NETWORK", "polygon"),
            ("DECLOUD_RPC_URL", "http://env:1"),
            ("DECLOUD_ORCHESTRATOR", "http://env-orch:2"),
            ("DECLOUD_KEYSTORE", "/env/key"),
            ("DECLOUD_DEPLOYMENTS_DIR", "/env/deployments"),
        ];
        let env = Settings::resolve(&GlobalArgs::default(), env_of(envs), with_file).unwrap();
        assert_eq!(env.network.as_deref(), Some("polygon"));
        assert_eq!(env.rpc_url.unwrap().as_str(), "http://env:1/");
        assert_eq!(env.orchestrator.as_str(), "http://env-orch:2/");
        assert_eq!(env.keystore, Some(PathBuf::from("/env/key")));
        assert_eq!(env.deployments_dir, Some(PathBuf::from("/env/deployments")));

        let flags = GlobalArgs {
            network: Some("anvil".into()),
            rpc_url: Some("http://flag:1".parse().unwrap()),
            orchestrator: Some("http://flag-orch:2".parse().unwrap()),
            keystore: Some("/flag/key".into()),
            deployments_dir: Some("/flag/deployments".into()),
            ..GlobalArgs::default()
        };
        let all = Settings::resolve(&flags, env_of(envs), with_file).unwrap();
        assert_eq!(all.network.as_deref(), Some("anvil"));
        assert_eq!(all.rpc_url.unwrap().as_str(), "http://flag:1/");
        assert_eq!(all.orchestrator.as_str(), "http://flag-orch:2/");
        assert_eq!(all.keystore, Some(PathBuf::from("/flag/key")));
        assert_eq!(
            all.deployments_dir,
            Some(PathBuf::from("/flag/deployments"))
        );
    }

    #[test]
    fn an_rpc_url_alone_does_not_get_the_default_network() {
        let args = GlobalArgs {
            rpc_url: Some("http://x:1".parse().unwrap()),
            ..GlobalArgs::default()
        };
        let s = Settings::resolve(&args, env_of(&[("HOME", "/h")]), |_| Ok(None)).unwrap();
        assert_eq!(s.network, None);
    }

    #[test]
    fn bad_config_is_an_error() {
        let home = &[("HOME", "/h")];
        let typo = |_: &Path| Ok(Some("netwrok = \"x\"\n".to_string()));
        let err = Settings::resolve(&GlobalArgs::default(), env_of(home), typo).unwrap_err();
        assert!(matches!(err, CliError::Config { .. }), "{err}");
        let bad_env = &[("HOME", "/h"), ("DECLOUD_ORCHESTRATOR", "not a url")];
        let err =
            Settings::resolve(&GlobalArgs::default(), env_of(bad_env), |_| Ok(None)).unwrap_err();
        assert!(err.to_string().contains("DECLOUD_ORCHESTRATOR"), "{err}");
        let missing = GlobalArgs {
            config: Some("/nope.toml".into()),
            ..GlobalArgs::default()
        };
        assert!(Settings::resolve(&missing, env_of(home), |_| Ok(None)).is_err());
        assert!(Settings::resolve(&GlobalArgs::default(), |_| None, |_| Ok(None)).is_err());
    }
}
