//! The services `decloud dev` runs after the chain: the indexer, the orchestrator and one node
//! agent, each optional.

use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
};

use clap::Args;
use decloud_indexer::IndexerService;
use decloud_node_agent::{NodeAgentService, dev::TEST_DRIVER_URI};
use decloud_orchestrator::{OrchestratorService, dev::DEV_IMAGE};
use decloud_sdk::{Error, dev::DevService};

/// Flags of the services after the chain.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServiceArgs {
    /// Do not run the indexer.
    #[arg(long)]
    no_indexer: bool,
    /// Port the indexer's GraphQL listens on (0 for any free port).
    #[arg(long, default_value_t = 8000)]
    indexer_port: u16,
    /// Do not run the orchestrator (nor, then, the node agent).
    #[arg(long)]
    no_orchestrator: bool,
    /// Port the orchestrator's API listens on (0 for any free port).
    #[arg(long, default_value_t = 8080)]
    orchestrator_port: u16,
    /// Do not run the node agent.
    #[arg(long)]
    no_agent: bool,
    /// libvirt URI of the node agent. The default, libvirt's test driver, SIMULATES VMs; use
    /// qemu:///system (libvirtd running) for real QEMU guests.
    #[arg(long, default_value = TEST_DRIVER_URI)]
    agent_libvirt_uri: String,
    /// Bootable qcow2 image the node agent offers for VMs (default: an empty disk).
    #[arg(long)]
    agent_image: Option<PathBuf>,
    /// Which funded account operates the node (anvil's account index).
    #[arg(long, default_value_t = 1)]
    agent_operator_account: usize,
    /// The built web app the orchestrator serves at its origin (default: web/dist when built).
    #[arg(long)]
    web_dir: Option<PathBuf>,
}

/// The services after `chain`, in start order.
pub(crate) fn services(
    chain: Box<dyn DevService>,
    host: &str,
    args: &ServiceArgs,
    root: &Path,
) -> Result<Vec<Box<dyn DevService>>, Error> {
    let ip: IpAddr = (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|addr| addr.ip())
        .ok_or_else(|| Error::Tool(format!("--host {host} is not an address of this machine")))?;
    if args.no_orchestrator && !args.no_agent {
        tracing::info!(target: "decloud::dev", "no orchestrator: the node agent does not run either");
    }
    let mut services = vec![chain];
    if !args.no_indexer {
        let mut indexer = IndexerService::default();
        indexer.listen = SocketAddr::new(ip, args.indexer_port);
        services.push(Box::new(indexer));
    }
    if !args.no_orchestrator {
        let seeds = root.join("templates/seed");
        let mut orchestrator = OrchestratorService::default();
        orchestrator.listen = SocketAddr::new(ip, args.orchestrator_port);
        orchestrator.templates_dir = seeds.is_dir().then_some(seeds);
        let built_app = root.join("web/dist");
        orchestrator.web_dir = args
            .web_dir
            .clone()
            .or_else(|| built_app.join("index.html").is_file().then_some(built_app));
        services.push(Box::new(orchestrator));
        if !args.no_agent {
            let mut agent = NodeAgentService::new(args.agent_libvirt_uri.clone(), DEV_IMAGE);
            agent.image = args.agent_image.clone();
            agent.operator_account = args.agent_operator_account;
            services.push(Box::new(agent));
        }
    }
    Ok(services)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        services: ServiceArgs,
    }

    fn names(flags: &[&str]) -> Vec<&'static str> {
        let flags =
            Flags::try_parse_from(std::iter::once("dev").chain(flags.iter().copied())).unwrap();
        let chain = Box::new(decloud_sdk::dev::ChainService::new(
            decloud_sdk::dev::ChainOptions {
                anvil_path: "anvil".into(),
                host: "127.0.0.1".into(),
                port: 0,
                accounts: 1,
                mint_usdc: 0,
                deployments_dir: "d".into(),
            },
        ));
        services(chain, "127.0.0.1", &flags.services, Path::new("."))
            .unwrap()
            .iter()
            .map(|s| s.name())
            .collect()
    }

    #[test]
    fn flags_choose_the_services() {
        assert_eq!(
            names(&[]),
            ["chain", "indexer", "orchestrator", "node agent"]
        );
        assert_eq!(names(&["--no-agent"]), ["chain", "indexer", "orchestrator"]);
        assert_eq!(
            names(&["--no-indexer"]),
            ["chain", "orchestrator", "node agent"]
        );
        assert_eq!(names(&["--no-orchestrator"]), ["chain", "indexer"]);
        let flags = Flags::try_parse_from(["dev"]).unwrap();
        assert_eq!(flags.services.agent_libvirt_uri, TEST_DRIVER_URI);
        assert_eq!(
            (
                flags.services.indexer_port,
                flags.services.orchestrator_port
            ),
            (8000, 8080)
        );
    }

    #[test]
    fn host_must_resolve() {
        let flags = Flags::try_parse_from(["dev"]).unwrap();
        let chain = Box::new(decloud_sdk::dev::ChainService::new(
            decloud_sdk::dev::ChainOptions {
                anvil_path: "anvil".into(),
                host: "no such host!".into(),
                port: 0,
                accounts: 1,
                mint_usdc: 0,
                deployments_dir: "d".into(),
            },
        ));
        let err = services(chain, "no such host!", &flags.services, Path::new("."))
            .err()
            .unwrap();
        assert!(err.to_string().contains("--host"), "{err}");
    }
}
