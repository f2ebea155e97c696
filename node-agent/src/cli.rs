//! Command line: flags over environment over config file over defaults, and the `run`
//! loop that ties identity, resources, the VM manager and the link together.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use decloud_sdk::agent_protocol::NodeResources;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{
    agent::Agent,
    config::{Config, ConfigLayer, DomainType},
    error::{Error, Result},
    identity::Identity,
    link::{self, Backoff},
    resources,
    storage::{ChunkStore, Drain, Market, Prover, StorageService, select_keys},
};

/// Default config file, read when it exists and no other is named.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/decloud/node-agent.toml";
/// Seconds between two observation rounds (states and readiness).
pub const OBSERVE_INTERVAL: Duration = Duration::from_secs(5);

/// DeCloud node agent.
#[derive(Debug, Parser)]
#[command(name = "decloud-node-agent", version, about)]
pub struct Cli {
    /// TOML config file (default: $DECLOUD_AGENT_CONFIG, then /etc/decloud/node-agent.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (database, node key, VM disks).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// libvirt URI, e.g. qemu:///system.
    #[arg(long, global = true)]
    pub libvirt_uri: Option<String>,
    /// Domain type: kvm or qemu.
    #[arg(long, global = true, value_parser = ["kvm", "qemu"])]
    pub domain_type: Option<String>,
    /// Orchestrator WebSocket URL.
    #[arg(long, global = true)]
    pub orchestrator_url: Option<String>,
    /// Operator address the node is registered under.
    #[arg(long, global = true)]
    pub operator: Option<String>,
    /// Machine id text (default: /etc/machine-id).
    #[arg(long, global = true)]
    pub machine_id: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Subcommands,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Subcommands {
    /// Create the node key if needed and print the node id and key address to register.
    Init,
    /// Run the agent until SIGINT or SIGTERM.
    Run,
    /// Discover the host's resources (with the CPU benchmark) and print them as JSON.
    Resources,
    /// The chunk store of the storage role.
    Chunks {
        /// What to do with it.
        #[command(subcommand)]
        action: ChunksCommand,
    },
    /// Drain mode on: the chunk API takes no new replicas, the agent keeps proving the ones it
    /// holds (a running agent follows at once).
    Drain,
    /// Drain mode off: the chunk API takes new replicas again.
    Undrain,
}

/// `chunks` subcommands.
#[derive(Debug, Subcommand)]
pub enum ChunksCommand {
    /// Print every stored chunk: deal, replica, index, bytes, SHA-256 (read-only; safe beside a
    /// running agent).
    List {
        /// Print the replicas' manifests as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Cli {
    fn flags(&self) -> Result<ConfigLayer> {
        Ok(ConfigLayer {
            data_dir: self.data_dir.clone(),
            libvirt_uri: self.libvirt_uri.clone(),
            domain_type: self.domain_type.as_deref().map(|t| {
                if t == "kvm" {
                    DomainType::Kvm
                } else {
                    DomainType::Qemu
                }
            }),
            orchestrator_url: self.orchestrator_url.clone(),
            operator: self
                .operator
                .as_deref()
                .map(crate::config::parse_address)
                .transpose()?,
            machine_id: self.machine_id.clone(),
            ..Default::default()
        })
    }

    /// Resolves the configuration from the file, the process environment and the flags.
    pub fn config(&self) -> Result<Config> {
        let named = self
            .config
            .clone()
            .or_else(|| std::env::var_os("DECLOUD_AGENT_CONFIG").map(PathBuf::from));
        let file = match named {
            Some(path) => Some(ConfigLayer::from_file(&path)?),
            None if std::path::Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Some(ConfigLayer::from_file(DEFAULT_CONFIG_FILE.as_ref())?)
            }
            None => None,
        };
        let env = ConfigLayer::from_env(|name| std::env::var(name).ok())?;
        Config::resolve(file, env, self.flags()?)
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let config = cli.config()?;
    decloud_runtime::init_logging(if config.json_logs {
        decloud_runtime::LogFormat::Json
    } else {
        decloud_runtime::LogFormat::Text
    });
    match cli.command {
        Subcommands::Init => {
            let (identity, created) = Identity::load_or_create(&config)?;
            if created {
                eprintln!("created node key {}", identity.key_path.display());
            }
            println!("node_id:    {}", identity.node_id);
            println!("node_key:   {}", identity.address());
            println!("operator:   {}", identity.operator);
            println!("machine_id: {}", identity.machine_id);
            Ok(())
        }
        Subcommands::Resources => {
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|e| Error::io("creating", &config.data_dir, e))?;
            let data_dir = config.data_dir.clone();
            let found = tokio::task::spawn_blocking(move || resources::discover(&data_dir))
                .await
                .map_err(|e| Error::Config(e.to_string()))??;
            println!(
                "{}",
                serde_json::to_string_pretty(&found).map_err(|e| Error::Corrupt(e.to_string()))?
            );
            Ok(())
        }
        Subcommands::Run => run_agent(config).await,
        Subcommands::Drain | Subcommands::Undrain => {
            let on = matches!(cli.command, Subcommands::Drain);
            let storage = config.storage.as_ref().ok_or_else(|| {
                Error::Config("the storage role is off: the configuration has no [storage]".into())
            })?;
            let drain = Drain::new(&config.data_dir, storage.drain);
            if !on && drain.is_forced() {
                return Err(Error::Config(
                    "drain = true in the configuration's [storage] section keeps the node draining: \
                     remove it and restart the agent"
                        .into(),
                ));
            }
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|e| Error::io("creating", &config.data_dir, e))?;
            let changed = drain.set(on)?;
            match (on, changed) {
                (true, true) => println!(
                    "draining: the node takes no new replicas and keeps proving the ones it holds"
                ),
                (true, false) => println!("already draining"),
                (false, true) => println!("not draining: the node takes new replicas again"),
                (false, false) => println!("was not draining"),
            }
            if on {
                eprintln!(
                    "next: pause the node on-chain (`decloud operator pause <node id>`) so that the \
                     repairer may move its replicas; keep the agent running until `chunks list` \
                     shows none left"
                );
            }
            Ok(())
        }
        Subcommands::Chunks {
            action: ChunksCommand::List { json },
        } => {
            let storage = config.storage.as_ref().ok_or_else(|| {
                Error::Config("the storage role is off: the configuration has no [storage]".into())
            })?;
            let store = ChunkStore::inspect(&storage.dir, storage.quota_bytes)?;
            let manifests = store.manifests();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&manifests)
                        .map_err(|e| Error::Corrupt(e.to_string()))?
                );
                return Ok(());
            }
            println!("deal\treplica\tchunk\tbytes\tsha256");
            for manifest in &manifests {
                for chunk in &manifest.chunks {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        manifest.deal, manifest.replica, chunk.index, chunk.bytes, chunk.sha256
                    );
                }
            }
            let report = store.report();
            eprintln!(
                "replicas: {}, bytes stored: {} of a {} byte quota",
                report.replicas.len(),
                report.stored_bytes,
                report.quota_bytes
            );
            Ok(())
        }
    }
}

async fn run_agent(config: Config) -> Result<()> {
    // Listening before the agent starts: a signal during startup also stops it gracefully.
    let shutdown = decloud_runtime::shutdown_signal()
        .map_err(|e| Error::io("handling", "SIGINT and SIGTERM", e))?;
    let running = RunningAgent::start(config).await?;
    shutdown.await;
    info!(target: "agent", "shutting down; VMs keep running");
    running.stop().await;
    Ok(())
}

/// Discovers the host's resources (CPU benchmark included) off the async runtime.
pub(crate) async fn discover(config: &Config) -> Result<NodeResources> {
    let data_dir = config.data_dir.clone();
    tokio::task::spawn_blocking(move || resources::discover(&data_dir))
        .await
        .map_err(|e| Error::Config(e.to_string()))?
}

/// An agent running in this process: its observation loop and, with an orchestrator URL, its
/// link. Stopping it leaves its VMs running.
#[derive(Debug)]
pub struct RunningAgent {
    agent: Agent,
    stop: watch::Sender<bool>,
    observer: tokio::task::JoinHandle<()>,
    link: Option<tokio::task::JoinHandle<()>>,
    /// The chunk API's task and address, in the storage role.
    storage: Option<(tokio::task::JoinHandle<()>, std::net::SocketAddr)>,
    /// The prover's task, in the storage role.
    prover: Option<tokio::task::JoinHandle<()>>,
}

impl RunningAgent {
    /// Loads or creates the identity, discovers the host's resources, opens the store,
    /// reconciles with libvirt, then starts observing and (with an orchestrator URL) linking.
    pub async fn start(config: Config) -> Result<Self> {
        let (identity, created) = Identity::load_or_create(&config)?;
        info!(
            target: "agent",
            node_id = %identity.node_id,
            node_key = %identity.address(),
            created_key = created,
            "node identity"
        );
        let found = discover(&config).await?;
        Self::start_with(config, identity, found).await
    }

    /// Starts the agent with an identity and resources already at hand.
    pub async fn start_with(
        config: Config,
        identity: Identity,
        found: NodeResources,
    ) -> Result<Self> {
        info!(target: "agent", cores = found.cpu_cores, memory_mib = found.memory_mib, compute_points = found.compute_points, gpus = found.gpus.len(), "resources");
        let url = config.orchestrator_url.clone();
        let storage_config = config.storage.clone();
        let data_dir = config.data_dir.clone();
        let node_id = identity.node_id;
        let node_key = identity.signer.clone();
        let agent = Agent::open(config, identity, found).await?;
        agent.reconcile().await?;

        let (stop, stop_rx) = watch::channel(false);
        let mut prover_task = None;
        let storage = match (storage_config, agent.chunk_store()) {
            (Some(storage), Some(store)) => {
                let market = Market::connect(&storage.rpc_url, storage.storage_market).await?;
                let listener = tokio::net::TcpListener::bind(storage.listen)
                    .await
                    .map_err(|e| Error::io("listening on", storage.listen.to_string(), e))?;
                let address = listener
                    .local_addr()
                    .map_err(|e| Error::io("listening on", storage.listen.to_string(), e))?;
                info!(target: "agent::storage", %address, quota_bytes = storage.quota_bytes, dir = %storage.dir.display(), market = %storage.storage_market, "chunk API listening");
                let mut service = StorageService::new(store.clone(), Arc::new(market), node_id);
                if let Some(drain) = agent.drain() {
                    service = service.with_drain(drain.clone());
                }
                // Proofs are sent from the node key: the operator keeps it funded for gas.
                let provider = decloud_sdk::tx::signing_provider(storage.rpc_url.clone(), node_key);
                let keys = select_keys(
                    &provider,
                    storage.storage_market,
                    storage.proving_keys.as_deref(),
                )
                .await?;
                let log = agent
                    .proof_log()
                    .cloned()
                    .expect("a storage agent keeps a proof journal");
                let prover = Prover::new(
                    store.clone(),
                    log,
                    provider,
                    storage.storage_market,
                    node_id,
                    keys,
                    &data_dir,
                )
                .await?;
                prover_task = Some(tokio::spawn(prover.run(stop_rx.clone())));
                let mut stop = stop_rx.clone();
                let task = tokio::spawn(async move {
                    let shutdown = async move {
                        let _ = stop.changed().await;
                    };
                    if let Err(e) = crate::storage::serve(listener, service, shutdown).await {
                        error!(target: "agent::storage", error = %e, "chunk API stopped");
                    }
                });
                Some((task, address))
            }
            _ => None,
        };
        let observer = {
            let agent = agent.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(error) = agent.observe().await {
                        warn!(target: "agent", %error, "observation round failed");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(OBSERVE_INTERVAL) => {}
                        _ = stop.changed() => return,
                    }
                }
            })
        };
        let link = match url {
            Some(url) => Some(tokio::spawn(link::run(
                agent.clone(),
                url,
                Backoff::default(),
                stop_rx,
            ))),
            None => {
                warn!(target: "agent", "no orchestrator_url configured: running local VMs only");
                None
            }
        };
        Ok(Self {
            agent,
            stop,
            observer,
            link,
            storage,
            prover: prover_task,
        })
    }

    /// The address the chunk API listens on, in the storage role.
    pub fn storage_address(&self) -> Option<std::net::SocketAddr> {
        self.storage.as_ref().map(|(_, address)| *address)
    }

    /// The running agent.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Closes the link, stops observing and closes the store; VMs keep running.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.link
            && let Err(e) = task.await
        {
            error!(target: "agent", error = %e, "link task failed");
        }
        let _ = self.observer.await;
        if let Some((task, _)) = self.storage {
            let _ = task.await;
        }
        if let Some(task) = self.prover {
            let _ = task.await;
        }
        self.agent.close().await;
    }
}
