//! `decloud-dev`: DeCloud's local network in one process. It starts anvil with every contract
//! deployed and the accounts funded, then the indexer, the orchestrator and one node agent
//! registered on-chain, prints where everything is, and stops them all on SIGINT or SIGTERM.
//!
//! It is a binary of its own so that the `decloud` command line of tenants, operators and
//! template authors builds without the services (libvirt, GraphQL, the servers): `decloud dev`
//! runs this binary, found beside `decloud` or on `PATH`.

mod ingress;
mod services;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser};
use decloud_runtime::{LogFormat, init_logging_with, shutdown_signal};
use decloud_sdk::{
    Error,
    dev::{ChainOptions, ChainService, run_services},
    paths,
};

/// Run the DeCloud local network until Ctrl-C: anvil with everything deployed and funded, the
/// indexer, the orchestrator and a registered node agent (more storage nodes with
/// --storage-nodes N).
#[derive(Debug, Parser)]
#[command(name = "decloud-dev", version, about)]
pub struct Cli {
    /// Log filter (`RUST_LOG` syntax), e.g. `info` or `decloud=debug` [default: $DECLOUD_LOG,
    /// else info].
    #[arg(long)]
    log: Option<String>,
    #[command(flatten)]
    dev: DevArgs,
}

/// Where the chain runs and what it holds.
#[derive(Debug, Clone, Args)]
struct DevArgs {
    /// The anvil binary (default: contracts/node_modules/.bin/anvil).
    #[arg(long)]
    anvil_path: Option<PathBuf>,
    /// Host anvil listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port anvil listens on.
    #[arg(long, default_value_t = 8545)]
    port: u16,
    /// Number of funded accounts.
    #[arg(long, default_value_t = 10)]
    accounts: u32,
    /// USDC minted to each account.
    #[arg(long, default_value_t = 1_000_000)]
    mint_usdc: u64,
    /// Where 31337.json is written (default: the repository's deployments/).
    #[arg(long)]
    deployments_dir: Option<PathBuf>,
    /// Mine a block every SECONDS besides the one each transaction gets, as a live chain does
    /// (default: 2 with storage nodes, so that their epochs pass; otherwise blocks come only
    /// with transactions). 0 mines only with transactions.
    #[arg(long, value_name = "SECONDS")]
    block_time: Option<u64>,
    #[command(flatten)]
    services: services::ServiceArgs,
}

/// Runs the local network until SIGINT or SIGTERM; returns the process exit code. Errors go to
/// stderr.
pub fn run(cli: Cli) -> ExitCode {
    // The orchestrator runs in this process: its pinned directives keep passwords out of the log.
    init_logging_with(
        cli.log.as_deref(),
        LogFormat::Text,
        decloud_orchestrator::access::LOG_PINNED,
    );
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
    match runtime.block_on(dev(cli.dev)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dev(args: DevArgs) -> Result<(), Error> {
    // Listening before anything starts: a signal during startup stops what has started.
    let shutdown = shutdown_signal()
        .map_err(|e| Error::Tool(format!("cannot listen for SIGINT and SIGTERM: {e}")))?;
    let root = paths::repo_root()?;
    let anvil_path = match args.anvil_path {
        Some(path) => path,
        None => paths::anvil_path(&root)?,
    };
    let deployments_dir = args
        .deployments_dir
        .unwrap_or_else(|| paths::deployments_dir(&root));
    let chain = ChainService::new(ChainOptions {
        anvil_path,
        host: args.host.clone(),
        port: args.port,
        accounts: args.accounts,
        mint_usdc: args.mint_usdc,
        deployments_dir,
        block_time: block_time(args.block_time, args.services.storage_nodes() > 0),
    });
    let mut services = services::services(Box::new(chain), &args.host, &args.services, &root)?;
    run_services(&mut services, shutdown).await.map(drop)
}

/// Seconds between blocks besides those of transactions: the flag's, else 2 for a storage node
/// (whose epochs are counted in blocks), else none; 0 means none.
fn block_time(flag: Option<u64>, storage_node: bool) -> Option<u64> {
    match flag {
        Some(0) => None,
        Some(seconds) => Some(seconds),
        None => storage_node.then_some(2),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_storage_node_gets_blocks_between_transactions_unless_told_otherwise() {
        assert_eq!(block_time(None, false), None);
        assert_eq!(block_time(None, true), Some(2));
        assert_eq!(block_time(Some(0), true), None);
        assert_eq!(block_time(Some(5), false), Some(5));
    }
}
