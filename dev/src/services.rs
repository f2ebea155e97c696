//! The services `decloud dev` runs after the chain: the indexer, the orchestrator and one node
//! agent, each optional.

use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
};

use clap::Args;
use decloud_indexer::IndexerService;
use decloud_node_agent::{
    ImageConfig, NodeAgentService,
    dev::{DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_STORAGE_QUOTA_BYTES, TEST_DRIVER_URI},
};
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
    /// qemu:///system (libvirtd running) for real QEMU guests, or --real-vms.
    #[arg(long, default_value = TEST_DRIVER_URI)]
    agent_libvirt_uri: String,
    /// Image the node agent offers for VMs: a directory built by scripts/guest-image, or a
    /// bootable qcow2 disk (default: an empty disk, or the Debian image with --real-vms).
    #[arg(long)]
    agent_image: Option<PathBuf>,
    /// Run real QEMU guests: the agent uses qemu:///system and, without --agent-image, the
    /// Debian 12 guest image (scripts/guest-image builds it on first use, then reuses it).
    #[arg(long, conflicts_with = "agent_libvirt_uri")]
    real_vms: bool,
    /// Start libvirtd and virtlogd first when they are not running (for --real-vms or a
    /// qemu:// --agent-libvirt-uri on a machine where nothing starts them).
    #[arg(long)]
    start_libvirtd: bool,
    /// Seconds a stopping guest has to shut down before the node agent powers it off (a real
    /// OS needs tens of seconds under emulation; the busybox test guest ignores the request and
    /// always waits this long).
    #[arg(long, default_value_t = DEFAULT_SHUTDOWN_TIMEOUT.as_secs())]
    agent_shutdown_timeout: u64,
    /// Which funded account operates the node (anvil's account index).
    #[arg(long, default_value_t = 1)]
    agent_operator_account: usize,
    /// Run the node agent in the storage role too (a 2 GiB chunk store, proving every epoch with
    /// the development circuit, whose keys the agent derives at start in a few seconds). Anvil
    /// then also mines a block every 2 s (see --block-time), so that epochs pass.
    #[arg(long)]
    storage_node: bool,
    /// Run N storage nodes, so that deals can have up to N replicas (and N - 1 leaves a node free
    /// to repair onto): the node agent as with --storage-node, and N - 1 more agents in the
    /// storage role on libvirt's test driver (their VMs are simulated), operated by the same
    /// account. Implies --storage-node.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=8))]
    storage_nodes: Option<u8>,
    /// Do not run the HTTPS ingress (a Caddy that serves VMs' HTTP ports by name under
    /// apps.decloud.localhost; run only when `caddy` is on PATH and the node agent runs).
    #[arg(long)]
    no_ingress: bool,
    /// Port the ingress serves HTTPS on (0 for any free port).
    #[arg(long, default_value_t = 8443)]
    ingress_port: u16,
    /// The built web app the orchestrator serves at its origin (default: web/dist when built).
    #[arg(long)]
    web_dir: Option<PathBuf>,
}

impl ServiceArgs {
    /// How many node agents run in the storage role: `--storage-nodes`, else 1 with
    /// `--storage-node`, else none.
    pub(crate) fn storage_nodes(&self) -> u8 {
        self.storage_nodes.unwrap_or(u8::from(self.storage_node))
    }
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
    if !args.no_orchestrator && !args.no_agent && !args.no_ingress {
        services.push(Box::new(crate::ingress::IngressService::new(
            ip,
            args.ingress_port,
        )));
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
            let libvirt_uri = if args.real_vms {
                QEMU_SYSTEM_URI.to_owned()
            } else {
                args.agent_libvirt_uri.clone()
            };
            let storage_nodes = args.storage_nodes();
            if storage_nodes > 1 && libvirt_uri != TEST_DRIVER_URI {
                // The extra agents cannot share a real hypervisor's NAT network and forwards
                // with the first, and simulated VMs beside real ones would surprise a tenant.
                return Err(Error::Tool(format!(
                    "--storage-nodes {storage_nodes} runs its extra nodes on libvirt's test \
                     driver, so the node agent must run there too: drop --real-vms or \
                     --agent-libvirt-uri, or use --storage-node (one storage node)"
                )));
            }
            if args.start_libvirtd {
                start_libvirtd()?;
            }
            let image = match (&args.agent_image, args.real_vms) {
                (Some(path), _) => Some(agent_image(path)?),
                (None, true) => Some(agent_image(&build_guest_image(root)?)?),
                (None, false) => None,
            };
            let storage_quota = (storage_nodes > 0).then_some(DEFAULT_STORAGE_QUOTA_BYTES);
            let mut agent = NodeAgentService::new(libvirt_uri, DEV_IMAGE);
            agent.image = image;
            agent.operator_account = args.agent_operator_account;
            agent.shutdown_timeout = std::time::Duration::from_secs(args.agent_shutdown_timeout);
            agent.storage_quota_bytes = storage_quota;
            services.push(Box::new(agent));
            for number in 2..=storage_nodes {
                let mut agent = NodeAgentService::new(TEST_DRIVER_URI, DEV_IMAGE);
                agent.machine_id = format!("decloud-dev-node-{number}");
                agent.operator_account = args.agent_operator_account;
                agent.shutdown_timeout =
                    std::time::Duration::from_secs(args.agent_shutdown_timeout);
                agent.storage_quota_bytes = storage_quota;
                services.push(Box::new(agent));
            }
        }
    }
    Ok(services)
}

/// libvirt's system connection, where real QEMU guests run.
const QEMU_SYSTEM_URI: &str = "qemu:///system";

/// The image of `--agent-image`: a `scripts/guest-image` directory (disk, kernel, initramfs and
/// command line) or a qcow2 disk booted by its own boot loader.
fn agent_image(path: &Path) -> Result<ImageConfig, Error> {
    if path.is_dir() {
        let (_, image) = ImageConfig::from_guest_image_dir(path)
            .map_err(|e| Error::Tool(format!("--agent-image: {e}")))?;
        return Ok(image);
    }
    if !path.is_file() {
        return Err(Error::Tool(format!(
            "--agent-image {}: no such file or directory",
            path.display()
        )));
    }
    Ok(ImageConfig {
        base: path.to_path_buf(),
        kernel: None,
        initrd: None,
        cmdline: None,
    })
}

/// Runs `scripts/guest-image` (which reuses its cached build) and returns the image directory.
fn build_guest_image(root: &Path) -> Result<PathBuf, Error> {
    let script = root.join("scripts/guest-image");
    tracing::info!(target: "decloud::dev", "preparing the Debian guest image ({}; the first build takes a few minutes)", script.display());
    // Its progress goes straight to our stderr; stdout carries the image directory.
    let output = std::process::Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::Tool(format!("cannot run {}: {e}", script.display())))?;
    if !output.status.success() {
        return Err(Error::Tool(format!(
            "{} failed ({}); see its messages above",
            script.display(),
            output.status
        )));
    }
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(PathBuf::from(dir))
}

/// Starts virtlogd and libvirtd (daemonized) unless libvirtd already answers on its socket.
fn start_libvirtd() -> Result<(), Error> {
    const SOCKET: &str = "/run/libvirt/libvirt-sock";
    if std::os::unix::net::UnixStream::connect(SOCKET).is_ok() {
        tracing::info!(target: "decloud::dev", "libvirtd is already running");
        return Ok(());
    }
    for daemon in ["virtlogd", "libvirtd"] {
        let status = std::process::Command::new(daemon)
            .arg("-d")
            .status()
            .map_err(|e| {
                Error::Tool(format!(
                    "cannot start {daemon}: {e} (is libvirt installed? scripts/setup installs it)"
                ))
            })?;
        if !status.success() {
            return Err(Error::Tool(format!("{daemon} -d failed ({status})")));
        }
    }
    // libvirtd daemonizes before it listens: wait for its socket.
    for _ in 0..100 {
        if std::os::unix::net::UnixStream::connect(SOCKET).is_ok() {
            tracing::info!(target: "decloud::dev", "started libvirtd and virtlogd");
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(Error::Tool(format!(
        "libvirtd started but {SOCKET} does not answer"
    )))
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
                block_time: None,
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
            ["chain", "indexer", "ingress", "orchestrator", "node agent"]
        );
        assert_eq!(names(&["--no-agent"]), ["chain", "indexer", "orchestrator"]);
        assert_eq!(
            names(&["--no-indexer", "--no-ingress"]),
            ["chain", "orchestrator", "node agent"]
        );
        assert_eq!(names(&["--no-orchestrator"]), ["chain", "indexer"]);
        assert_eq!(
            names(&["--no-indexer", "--no-ingress", "--storage-nodes", "3"]),
            [
                "chain",
                "orchestrator",
                "node agent",
                "node agent",
                "node agent"
            ]
        );
        let flags = Flags::try_parse_from(["dev"]).unwrap();
        assert_eq!(flags.services.agent_libvirt_uri, TEST_DRIVER_URI);
        assert_eq!(
            (
                flags.services.indexer_port,
                flags.services.orchestrator_port
            ),
            (8000, 8080)
        );
        assert_eq!(flags.services.ingress_port, 8443);
    }

    #[test]
    fn storage_nodes_count_and_their_limits() {
        let parse = |flags: &[&str]| {
            Flags::try_parse_from(std::iter::once("dev").chain(flags.iter().copied()))
        };
        assert_eq!(parse(&[]).unwrap().services.storage_nodes(), 0);
        assert_eq!(
            parse(&["--storage-node"]).unwrap().services.storage_nodes(),
            1
        );
        assert_eq!(
            parse(&["--storage-nodes", "4"])
                .unwrap()
                .services
                .storage_nodes(),
            4
        );
        assert!(parse(&["--storage-nodes", "0"]).is_err());
        assert!(parse(&["--storage-nodes", "9"]).is_err());

        // Extra storage nodes run on the test driver: next to real guests they are refused
        // before anything is built or started.
        let flags = parse(&["--storage-nodes", "2", "--real-vms"]).unwrap();
        let chain = Box::new(decloud_sdk::dev::ChainService::new(
            decloud_sdk::dev::ChainOptions {
                anvil_path: "anvil".into(),
                host: "127.0.0.1".into(),
                port: 0,
                accounts: 1,
                mint_usdc: 0,
                deployments_dir: "d".into(),
                block_time: None,
            },
        ));
        let err = services(
            chain,
            "127.0.0.1",
            &flags.services,
            Path::new("/nonexistent"),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("--storage-nodes 2"), "{err}");
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
                block_time: None,
            },
        ));
        let err = services(chain, "no such host!", &flags.services, Path::new("."))
            .err()
            .unwrap();
        assert!(err.to_string().contains("--host"), "{err}");
    }

    #[test]
    fn agent_image_is_a_guest_image_directory_or_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.qcow2");
        let e = agent_image(&missing).unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
        let e = agent_image(dir.path()).unwrap_err();
        assert!(e.to_string().contains("scripts/guest-image"), "{e}");
        let disk = dir.path().join("disk.qcow2");
        std::fs::write(&disk, b"qcow2").unwrap();
        let image = agent_image(&disk).unwrap();
        assert_eq!((image.base, image.kernel), (disk, None));
        // --real-vms picks the libvirt URI itself.
        assert!(
            Flags::try_parse_from([
                "dev",
                "--real-vms",
                "--agent-libvirt-uri",
                "qemu:///session"
            ])
            .is_err()
        );
    }
}
