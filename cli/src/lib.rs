//! `decloud`: DeCloud's command line for every role (deploy the contracts, rent, operate,
//! publish). It builds without the services: `decloud dev` runs the separate `decloud-dev`
//! binary, which holds the indexer, the orchestrator and the node agent.

mod access;
mod attest;

use std::{path::PathBuf, process::ExitCode};

use alloy::{
    primitives::{Address, B256, U256},
    providers::Provider,
};
use clap::{Args, Parser, Subcommand};
use decloud_runtime::{LogFormat, init_logging_with};
use tracing::info;
use url::Url;

use decloud_sdk::{
    Error,
    deploy::{
        DEFAULT_PREMIUM_THRESHOLD, DEFAULT_STORAGE_EPOCH_BLOCKS, DEFAULT_STORAGE_FEE_BPS,
        DEFAULT_UNBONDING_PERIOD, DeployConfig, UsdcSource, VerifierSource, deploy_system,
    },
    deployments::{DeploymentsError, Network, Networks},
    paths, tx, wallet,
};

mod author;
mod console;
mod context;
mod dev;
mod ingress;
mod operator;
mod profile;
mod review;
mod storage;
mod tenant;

/// DeCloud: rent VMs and storage from independent operators, paid in USDC on Polygon.
#[derive(Debug, Parser)]
#[command(name = "decloud", version, about)]
pub struct Cli {
    /// Log filter (`RUST_LOG` syntax), e.g. `info` or `decloud=debug` [default: $DECLOUD_LOG,
    /// else info].
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Deploy the contracts to a network and write deployments/<chainId>.json. The key comes from
    /// DECLOUD_PRIVATE_KEY or --keystore (password from DECLOUD_KEYSTORE_PASSWORD or a prompt).
    // Boxed: the deploy arguments are several times the size of the others.
    Deploy(Box<DeployArgs>),
    /// Run the local network until Ctrl-C: anvil with everything deployed and funded, the indexer,
    /// the orchestrator and a registered node agent (more storage nodes with --storage-nodes N).
    /// Runs the decloud-dev binary (beside decloud or on PATH; scripts/dev builds it): `decloud dev
    /// --help` shows its options.
    // Its own `--help` is decloud-dev's, so it is passed on with the rest.
    #[command(disable_help_flag = true)]
    Dev(dev::DevCommand),
    #[command(flatten)]
    Tenant(tenant::TenantCommand),
    /// Node operators: register nodes, set prices, stake, claim earnings.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Template authors: publish, update and deprecate templates, collect earnings.
    #[command(subcommand)]
    Template(author::TemplateCommand),
    /// Attestations: verify what an orchestrator signed against the chain.
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Reviews: rate the node or template of your lease (signed with your wallet), or verify a
    /// review offline.
    #[command(subcommand)]
    Review(review::ReviewCommand),
    /// Storage: files encrypted on this machine, replicated on storage nodes, proven on-chain.
    #[command(subcommand)]
    Storage(storage::StorageCommand),
}

/// Arguments of `decloud deploy`.
#[derive(Debug, Clone, Default, Args)]
struct DeployArgs {
    /// Network name from deployments/networks.toml (anvil, amoy, polygon).
    #[arg(long, required_unless_present = "rpc_url")]
    network: Option<String>,
    /// RPC URL (overrides the network's; alone, the chain is matched to a network by its chain id).
    #[arg(long)]
    rpc_url: Option<Url>,
    /// Encrypted JSON keystore of the deployer.
    #[arg(long)]
    keystore: Option<PathBuf>,
    /// USDC address (overrides the network's).
    #[arg(long, env = "DECLOUD_USDC")]
    usdc: Option<Address>,
    /// Treasury (default: the deployer).
    #[arg(long, env = "DECLOUD_TREASURY")]
    treasury: Option<Address>,
    /// Holder of LeaseEscrow's ARBITER_ROLE (default: the deployer).
    #[arg(long, env = "DECLOUD_ARBITER")]
    arbiter: Option<Address>,
    /// Holder of AttestationAnchor's ANCHOR_ROLE (default: the deployer).
    #[arg(long, env = "DECLOUD_ANCHOR")]
    anchor: Option<Address>,
    /// Holder of LeaseEscrow's PAUSER_ROLE (default: the deployer).
    #[arg(long, env = "DECLOUD_PAUSER")]
    pauser: Option<Address>,
    /// OperatorStaking unbonding period in seconds.
    #[arg(long, default_value_t = DEFAULT_UNBONDING_PERIOD)]
    unbonding_period: u64,
    /// OperatorStaking premium threshold in micro-USDC.
    #[arg(long, default_value_t = DEFAULT_PREMIUM_THRESHOLD)]
    premium_threshold: u64,
    /// StorageMarket epoch length in blocks (default: the network's storage_epoch_blocks, else
    /// 43200).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    storage_epoch_blocks: Option<u64>,
    /// StorageMarket initial platform fee in basis points (at most 2000).
    #[arg(long, default_value_t = DEFAULT_STORAGE_FEE_BPS)]
    storage_fee_bps: u16,
    /// The Groth16 verifier generated from the ceremony keys, already deployed (default: the
    /// network's `verifier`). Required off local chains, where the development verifier is refused.
    #[arg(long, requires = "verifier_code_hash")]
    verifier: Option<Address>,
    /// keccak256 of that verifier's runtime code, as the ceremony published it (default: the
    /// network's `verifier_code_hash`).
    #[arg(long, requires = "verifier")]
    verifier_code_hash: Option<B256>,
    /// Directory of networks.toml and the deployment records (default: the repository's deployments/).
    #[arg(long)]
    deployments_dir: Option<PathBuf>,
}

/// Runs the CLI; returns the process exit code. Errors go to stderr.
pub fn run(cli: Cli) -> ExitCode {
    let command = match cli.command {
        // Before logging and the async runtime: this process becomes decloud-dev.
        Command::Dev(command) => return dev::run(command, cli.log.as_deref()),
        other => other,
    };
    init_logging_with(cli.log.as_deref(), LogFormat::Text, &[]);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = match command {
        Command::Attest(command) => return runtime.block_on(attest::run(command)),
        other => other,
    };
    let result = runtime.block_on(async {
        match command {
            Command::Deploy(args) => deploy(*args).await,
            Command::Dev(_) => unreachable!("handled above"),
            Command::Tenant(command) => tenant::run(command).await.map_err(Error::from),
            Command::Operator(command) => operator::run(command).await.map_err(Error::from),
            Command::Template(command) => author::run(command).await.map_err(Error::from),
            Command::Attest(_) => unreachable!("handled above"),
            Command::Review(command) => review::run(command).await.map_err(Error::from),
            Command::Storage(command) => storage::run(command).await.map_err(Error::from),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where a deployment goes: resolved from networks.toml, the environment and the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeployTarget {
    network: Option<(String, Network)>,
    rpc_url: Url,
}

/// Resolves the network and RPC URL: the flag wins over the network's environment variable, which
/// wins over networks.toml.
fn resolve_target(
    args: &DeployArgs,
    networks: &Networks,
    env: impl Fn(&str) -> Option<String>,
) -> Result<DeployTarget, DeploymentsError> {
    let network = match &args.network {
        Some(name) => Some((name.clone(), networks.get(name)?.clone())),
        None => None,
    };
    let rpc_url = match (&args.rpc_url, &network) {
        (Some(url), _) => url.clone(),
        (None, Some((name, network))) => network.rpc_url_with(name, env)?,
        (None, None) => unreachable!("clap requires --network or --rpc-url"),
    };
    Ok(DeployTarget { network, rpc_url })
}

/// Decides the USDC once the chain id is known: the flag, else the network's USDC or MockUSDC,
/// else MockUSDC on anvil's chain id, else an error.
fn resolve_usdc(
    args: &DeployArgs,
    network: Option<&Network>,
    chain_id: u64,
) -> Result<UsdcSource, Error> {
    if let Some(usdc) = args.usdc {
        return Ok(UsdcSource::Existing(usdc));
    }
    match network {
        Some(Network {
            usdc: Some(usdc), ..
        }) => Ok(UsdcSource::Existing(*usdc)),
        Some(Network {
            mock_usdc: true, ..
        }) => Ok(UsdcSource::Mock),
        _ if chain_id == 31337 => Ok(UsdcSource::Mock),
        _ => Err(Error::Chain(format!(
            "no USDC is known for chain {chain_id}: pass --usdc"
        ))),
    }
}

/// The storage-proof verifier: the flags, else the network's pinned verifier, else the development
/// verifier (which `deploy_system` refuses off local chains).
fn resolve_verifier(args: &DeployArgs, network: Option<&Network>) -> Result<VerifierSource, Error> {
    let pinned = network.map(|n| (n.verifier, n.verifier_code_hash));
    match (args.verifier, args.verifier_code_hash, pinned) {
        (Some(address), Some(code_hash), _)
        | (None, None, Some((Some(address), Some(code_hash)))) => {
            Ok(VerifierSource::Production { address, code_hash })
        }
        (None, None, Some((Some(_), None))) => Err(Error::Chain(
            "networks.toml names a verifier without its verifier_code_hash: pin the code hash the \
             ceremony published"
                .into(),
        )),
        _ => Ok(VerifierSource::Development),
    }
}

/// StorageMarket's epoch length: the flag, else the network's `storage_epoch_blocks`, else the
/// default.
fn resolve_storage_epoch_blocks(args: &DeployArgs, network: Option<&Network>) -> u64 {
    args.storage_epoch_blocks
        .or_else(|| network.and_then(|n| n.storage_epoch_blocks))
        .unwrap_or(DEFAULT_STORAGE_EPOCH_BLOCKS)
}

async fn deploy(args: DeployArgs) -> Result<(), Error> {
    let dir = match &args.deployments_dir {
        Some(dir) => dir.clone(),
        None => paths::deployments_dir(&paths::repo_root()?),
    };
    let networks = Networks::load(&dir.join("networks.toml"))?;
    let target = resolve_target(&args, &networks, |name| std::env::var(name).ok())?;
    let signer = wallet::load_signer(args.keystore.as_deref())?;
    let deployer = signer.address();
    let provider = tx::signing_provider(target.rpc_url.clone(), signer);
    let chain_id = provider.get_chain_id().await?;

    // With only --rpc-url, the chain id finds the network; with --network, it must match.
    let network = match target.network {
        Some((name, network)) => {
            if network.chain_id != chain_id {
                return Err(Error::Chain(format!(
                    "network {name} is chain {}, but {} is chain {chain_id}",
                    network.chain_id, target.rpc_url
                )));
            }
            Some((name, network))
        }
        None => networks
            .by_chain_id(chain_id)
            .map(|(name, n)| (name.to_string(), n.clone())),
    };
    let usdc = resolve_usdc(&args, network.as_ref().map(|(_, n)| n), chain_id)?;
    let verifier = resolve_verifier(&args, network.as_ref().map(|(_, n)| n))?;
    let storage_epoch_blocks =
        resolve_storage_epoch_blocks(&args, network.as_ref().map(|(_, n)| n));

    let mut config = DeployConfig::new(usdc);
    config.network = network.map(|(name, _)| name);
    config.treasury = args.treasury;
    config.arbiter = args.arbiter;
    config.anchor = args.anchor;
    config.pauser = args.pauser;
    config.unbonding_period = args.unbonding_period;
    config.premium_threshold = U256::from(args.premium_threshold);
    config.storage_epoch_blocks = storage_epoch_blocks;
    config.storage_fee_bps = args.storage_fee_bps;
    config.verifier = verifier;

    let deployment = deploy_system(&provider, deployer, &config).await?;
    let path = deployment.save(&dir)?;
    info!(target: "decloud::deploy", path = %path.display(), "deployment written");
    println!(
        "{}",
        serde_json::to_string_pretty(&deployment).expect("a deployment always serializes")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::CommandFactory as _;

    use super::*;

    fn networks() -> Networks {
        Networks::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployments/networks.toml"))
            .unwrap()
    }

    fn parse(args: &[&str]) -> Result<DeployArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("decloud").chain(args.iter().copied()))?;
        match cli.command {
            Command::Deploy(args) => Ok(*args),
            _ => panic!("not deploy"),
        }
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn deploy_needs_a_network_or_an_rpc_url_and_no_key_flag() {
        assert!(parse(&["deploy"]).is_err());
        assert!(parse(&["deploy", "--network", "amoy", "--private-key", "0x01"]).is_err());
        let args = parse(&["deploy", "--rpc-url", "http://127.0.0.1:9999"]).unwrap();
        let target = resolve_target(&args, &networks(), |_| None).unwrap();
        assert_eq!(target.rpc_url.as_str(), "http://127.0.0.1:9999/");
        assert_eq!(target.network, None);
    }

    #[test]
    fn rpc_url_precedence_is_file_then_env_then_flag() {
        let networks = networks();
        let args = parse(&["deploy", "--network", "anvil"]).unwrap();
        assert_eq!(
            resolve_target(&args, &networks, |_| None)
                .unwrap()
                .rpc_url
                .as_str(),
            "http://127.0.0.1:8545/"
        );

        let args = parse(&["deploy", "--network", "amoy"]).unwrap();
        let err = resolve_target(&args, &networks, |_| None).unwrap_err();
        assert!(err.to_string().contains("DECLOUD_AMOY_RPC_URL"), "{err}");
        let env = |name: &str| {
            (name == "DECLOUD_AMOY_RPC_URL").then(|| "http://amoy.example:8545".to_string())
        };
        assert_eq!(
            resolve_target(&args, &networks, env)
                .unwrap()
                .rpc_url
                .as_str(),
            "http://amoy.example:8545/"
        );

        let args = parse(&["deploy", "--network", "amoy", "--rpc-url", "http://flag:1"]).unwrap();
        let target = resolve_target(&args, &networks, env).unwrap();
        assert_eq!(target.rpc_url.as_str(), "http://flag:1/");
        assert_eq!(target.network.unwrap().1.chain_id, 80002);

        let args = parse(&["deploy", "--network", "mainnet"]).unwrap();
        assert!(matches!(
            resolve_target(&args, &networks, |_| None),
            Err(DeploymentsError::UnknownNetwork { .. })
        ));
    }

    #[test]
    fn usdc_comes_from_flag_then_network_then_anvil_default() {
        let networks = networks();
        let amoy = networks.get("amoy").unwrap();
        let anvil = networks.get("anvil").unwrap();
        let none = DeployArgs::default();
        assert_eq!(
            resolve_usdc(&none, Some(amoy), 80002).unwrap(),
            UsdcSource::Existing(amoy.usdc.unwrap())
        );
        assert_eq!(
            resolve_usdc(&none, Some(anvil), 31337).unwrap(),
            UsdcSource::Mock
        );
        assert_eq!(resolve_usdc(&none, None, 31337).unwrap(), UsdcSource::Mock);
        assert!(
            resolve_usdc(&none, None, 1)
                .unwrap_err()
                .to_string()
                .contains("--usdc")
        );
        let flag = DeployArgs {
            usdc: Some(Address::repeat_byte(7)),
            ..DeployArgs::default()
        };
        assert_eq!(
            resolve_usdc(&flag, Some(amoy), 80002).unwrap(),
            UsdcSource::Existing(Address::repeat_byte(7))
        );
    }

    #[test]
    fn storage_epoch_comes_from_flag_then_network_then_default() {
        let networks = networks();
        let polygon = networks.get("polygon").unwrap();
        let none = parse(&["deploy", "--network", "polygon"]).unwrap();
        assert_eq!(resolve_storage_epoch_blocks(&none, Some(polygon)), 43_200);
        let mut unset = polygon.clone();
        unset.storage_epoch_blocks = None;
        assert_eq!(
            resolve_storage_epoch_blocks(&none, Some(&unset)),
            DEFAULT_STORAGE_EPOCH_BLOCKS
        );
        assert_eq!(
            resolve_storage_epoch_blocks(&none, None),
            DEFAULT_STORAGE_EPOCH_BLOCKS
        );
        let flag = parse(&[
            "deploy",
            "--network",
            "polygon",
            "--storage-epoch-blocks",
            "7",
        ])
        .unwrap();
        assert_eq!(resolve_storage_epoch_blocks(&flag, Some(polygon)), 7);
        assert!(
            parse(&[
                "deploy",
                "--network",
                "polygon",
                "--storage-epoch-blocks",
                "0"
            ])
            .is_err()
        );
        assert_eq!(none.storage_fee_bps, DEFAULT_STORAGE_FEE_BPS);
    }
}
