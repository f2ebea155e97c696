//! The local development network behind `decloud dev`.
//!
//! `decloud dev` runs a list of [`DevService`]s in order and stops them in reverse order on
//! Ctrl-C or SIGTERM. Each service sees a [`DevContext`] that the services before it filled in:
//! the [`ChainService`] starts anvil, deploys the system, funds the accounts and records the RPC
//! URL, the deployment and the accounts; services added later (indexer, orchestrator, node
//! agent) read them from the context and add their own endpoints to it, which `decloud dev`
//! prints once everything runs.

use std::{fmt::Write as _, future::Future, path::PathBuf, pin::Pin};

use alloy::{
    node_bindings::{Anvil, AnvilInstance},
    primitives::{Address, B256, U256, hex},
    providers::Provider,
    signers::local::PrivateKeySigner,
};
use tracing::{info, warn};
use url::Url;

use crate::{
    Error, USDC,
    deploy::{DeployConfig, LOCAL_STORAGE_EPOCH_BLOCKS, UsdcSource, deploy_system, mint_mock_usdc},
    deployments::Deployment,
    tx,
};

/// A boxed future, as [`DevService`] returns them (object-safe async methods).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An anvil account of the local network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevAccount {
    /// Its address.
    pub address: Address,
    /// Its private key, hex (anvil's public test keys: never use them elsewhere).
    pub private_key: String,
}

/// What the running services know about the local network.
#[derive(Debug, Default, Clone)]
pub struct DevContext {
    /// JSON-RPC endpoint of the chain.
    pub rpc_url: Option<Url>,
    /// The deployed system.
    pub deployment: Option<Deployment>,
    /// Where the deployment record was written.
    pub deployment_path: Option<PathBuf>,
    /// Funded accounts.
    pub accounts: Vec<DevAccount>,
    /// Endpoints of the running services, by name, for the summary.
    pub endpoints: Vec<(String, String)>,
    /// The WebSocket URL node agents connect to, once an orchestrator runs.
    pub agent_ws_url: Option<Url>,
    /// Nodes registered on the chain by the running services.
    pub nodes: Vec<DevNode>,
    /// Things the user must know about how the network runs (printed prominently).
    pub warnings: Vec<String>,
    /// The HTTPS ingress (a Caddy) the node agent drives and the orchestrator names under, once
    /// one runs.
    pub ingress: Option<DevIngress>,
}

/// The local network's HTTPS ingress: a Caddy with its local CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevIngress {
    /// `host:port` of Caddy's admin API.
    pub admin: String,
    /// Address Caddy serves HTTPS on (`127.0.0.1:8443`).
    pub listen: String,
    /// The domain names live under (`apps.decloud.localhost`).
    pub domain: String,
}

/// A node that a service of the local network registered and runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevNode {
    /// The on-chain node id.
    pub node_id: B256,
    /// The operator that registered it.
    pub operator: Address,
    /// The node key the agent signs with.
    pub node_key: Address,
    /// Where the agent runs its VMs.
    pub libvirt_uri: String,
    /// The agent's data directory.
    pub data_dir: PathBuf,
    /// The agent's storage chunk API, when it runs the storage role.
    pub storage_url: Option<url::Url>,
}

/// One part of the local network.
pub trait DevService: Send {
    /// Short name for logs.
    fn name(&self) -> &'static str;
    /// Starts the service; it may read and extend the context.
    fn start<'a>(&'a mut self, ctx: &'a mut DevContext) -> BoxFuture<'a, Result<(), Error>>;
    /// Stops the service and releases everything it started. Called once, also after a failed start.
    fn stop(&mut self) -> BoxFuture<'_, ()>;
}

/// Options of the local chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainOptions {
    /// The anvil binary.
    pub anvil_path: PathBuf,
    /// Host to listen on.
    pub host: String,
    /// Port to listen on (0 for any free port).
    pub port: u16,
    /// How many accounts anvil creates and funds.
    pub accounts: u32,
    /// USDC minted to each account, whole USDC.
    pub mint_usdc: u64,
    /// Where `31337.json` is written.
    pub deployments_dir: PathBuf,
    /// Seconds between blocks mined besides the one each transaction gets (anvil's mixed
    /// mining), so that block-counted periods such as storage epochs pass on an idle chain;
    /// `None` mines only with transactions.
    pub block_time: Option<u64>,
}

/// Anvil with the system deployed and every account funded with MockUSDC.
#[derive(Debug)]
pub struct ChainService {
    options: ChainOptions,
    anvil: Option<AnvilInstance>,
}

impl ChainService {
    /// A chain service that starts when [`DevService::start`] is called.
    pub fn new(options: ChainOptions) -> Self {
        Self {
            options,
            anvil: None,
        }
    }
}

impl DevService for ChainService {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn start<'a>(&'a mut self, ctx: &'a mut DevContext) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let o = &self.options;
            let mut anvil = Anvil::at(&o.anvil_path)
                .host(o.host.clone())
                .port(o.port)
                .chain_id(31337)
                .arg("--accounts")
                .arg(o.accounts.to_string());
            if let Some(seconds) = o.block_time {
                anvil = anvil
                    .args(["--block-time", &seconds.to_string()])
                    .arg("--mixed-mining");
            }
            let anvil = anvil.try_spawn().map_err(|e| {
                Error::Tool(format!(
                    "cannot start anvil ({}) on {}:{}: {e}",
                    o.anvil_path.display(),
                    o.host,
                    o.port
                ))
            })?;
            let url: Url = format!("http://{}:{}", o.host, anvil.port())
                .parse()
                .map_err(|e| Error::Tool(format!("bad anvil endpoint: {e}")))?;
            info!(target: "decloud::dev", %url, "anvil is running");
            let signers: Vec<PrivateKeySigner> = anvil
                .keys()
                .iter()
                .cloned()
                .map(PrivateKeySigner::from)
                .collect();
            let addresses: Vec<Address> = signers.iter().map(PrivateKeySigner::address).collect();
            ctx.accounts = signers
                .iter()
                .map(|s| DevAccount {
                    address: s.address(),
                    private_key: hex::encode_prefixed(s.to_bytes()),
                })
                .collect();
            self.anvil = Some(anvil);

            let deployer = signers
                .first()
                .cloned()
                .ok_or_else(|| Error::Tool("anvil has no accounts".into()))?;
            let deployer_address = deployer.address();
            let provider = tx::signing_provider(url.clone(), deployer);
            let mut config = DeployConfig::new(UsdcSource::Mock);
            config.network = Some("anvil".into());
            config.storage_epoch_blocks = LOCAL_STORAGE_EPOCH_BLOCKS;
            let deployment = deploy_system(&provider, deployer_address, &config).await?;
            let amount = U256::from(o.mint_usdc) * U256::from(USDC);
            mint_mock_usdc(&provider, deployment.usdc, &addresses, amount).await?;
            let path = deployment.save(&o.deployments_dir)?;
            info!(target: "decloud::dev", path = %path.display(), "deployment written");
            // A directory of its own also needs the network's name and RPC URL for the CLI.
            if let Some(networks) = crate::deployments::ensure_local_networks(
                &o.deployments_dir,
                &url,
                LOCAL_STORAGE_EPOCH_BLOCKS,
            )? {
                info!(target: "decloud::dev", path = %networks.display(), "networks written");
            }
            let block = provider.get_block_number().await?;
            info!(target: "decloud::dev", block, "system deployed and funded");

            ctx.endpoints
                .push(("chain (anvil JSON-RPC)".into(), url.to_string()));
            ctx.rpc_url = Some(url);
            ctx.deployment = Some(deployment);
            ctx.deployment_path = Some(path);
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(anvil) = self.anvil.take() {
                // Dropping the instance stops the anvil process and waits for it.
                drop(anvil);
                info!(target: "decloud::dev", "anvil stopped");
            }
        })
    }
}

/// Starts `services` in order, prints the summary to stdout, waits for `shutdown`, then stops the
/// services in reverse order. A failed start stops the services already started and returns the
/// error.
pub async fn run_services(
    services: &mut [Box<dyn DevService>],
    shutdown: impl Future<Output = ()>,
) -> Result<DevContext, Error> {
    let mut ctx = DevContext::default();
    let mut started = 0;
    let mut failure = None;
    for service in services.iter_mut() {
        info!(target: "decloud::dev", service = service.name(), "starting");
        // Counted before the start so that a half-started service is stopped as well.
        started += 1;
        if let Err(e) = service.start(&mut ctx).await {
            warn!(target: "decloud::dev", service = service.name(), error = %e, "failed to start");
            failure = Some(e);
            break;
        }
    }
    if failure.is_none() {
        print!("{}", summary(&ctx));
        info!(target: "decloud::dev", "running; press Ctrl-C to stop");
        shutdown.await;
        info!(target: "decloud::dev", "shutting down");
    }
    for service in services[..started].iter_mut().rev() {
        service.stop().await;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(ctx),
    }
}

/// What `decloud dev` prints once everything runs.
pub fn summary(ctx: &DevContext) -> String {
    let mut out = String::new();
    out.push_str("\nDeCloud local network is running.\n\n");
    for (name, endpoint) in &ctx.endpoints {
        let _ = writeln!(out, "  {name:<24} {endpoint}");
    }
    if let Some(d) = &ctx.deployment {
        let _ = writeln!(out, "\nContracts (chain {}):", d.chain_id);
        let c = &d.contracts;
        if let Some(m) = c.mock_usdc {
            let _ = writeln!(out, "  {:<20} {}", "MockUSDC", m.address);
        }
        for (name, contract) in [
            ("NodeRegistry", c.node_registry),
            ("OperatorStaking", c.operator_staking),
            ("TemplateMarket", c.template_market),
            ("LeaseEscrow", c.lease_escrow),
            ("AttestationAnchor", c.attestation_anchor),
            ("DevGroth16Verifier", c.groth16_verifier),
            ("StorageMarket", c.storage_market),
        ] {
            let _ = writeln!(out, "  {name:<20} {}", contract.address);
        }
    }
    if !ctx.nodes.is_empty() {
        out.push_str(
            "\nNodes (registered on-chain; each agent dials the orchestrator's agent WebSocket):\n",
        );
        for (i, n) in ctx.nodes.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "  node id   {}", n.node_id);
            let _ = writeln!(out, "  operator  {}", n.operator);
            let _ = writeln!(out, "  node key  {}", n.node_key);
            let _ = writeln!(out, "  libvirt   {}", n.libvirt_uri);
            let _ = writeln!(out, "  data dir  {}", n.data_dir.display());
            if let Some(url) = &n.storage_url {
                let _ = writeln!(out, "  storage   {url}");
            }
        }
        let storage_nodes = ctx.nodes.iter().filter(|n| n.storage_url.is_some()).count();
        if storage_nodes > 0 {
            let _ = writeln!(
                out,
                "\nStore a file on {} (after `decloud login`; the orchestrator's placement picks the nodes):\n  decloud storage put FILE --replicas {storage_nodes}",
                if storage_nodes == 1 {
                    "the storage node".to_owned()
                } else {
                    format!("the {storage_nodes} storage nodes")
                }
            );
        }
    }
    if let Some(path) = &ctx.deployment_path {
        let _ = writeln!(out, "\nDeployment record: {}", path.display());
    }
    if !ctx.accounts.is_empty() {
        out.push_str("\nAccounts (anvil's public test keys, funded with ETH and MockUSDC; never use them elsewhere):\n");
        for (i, a) in ctx.accounts.iter().enumerate() {
            let _ = writeln!(out, "  ({i}) {} {}", a.address, a.private_key);
        }
    }
    for warning in &ctx.warnings {
        let _ = writeln!(out, "\n!!! {warning}");
    }
    out.push_str("\nPress Ctrl-C to stop.\n");
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records what happens to it; fails to start when told to.
    struct Probe {
        name: &'static str,
        fail: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl DevService for Probe {
        fn name(&self) -> &'static str {
            self.name
        }
        fn start<'a>(&'a mut self, ctx: &'a mut DevContext) -> BoxFuture<'a, Result<(), Error>> {
            Box::pin(async move {
                self.log.lock().unwrap().push(format!(
                    "start {} after {}",
                    self.name,
                    ctx.endpoints.len()
                ));
                if self.fail {
                    return Err(Error::Tool(format!("{} failed", self.name)));
                }
                ctx.endpoints.push((self.name.into(), "http://x".into()));
                Ok(())
            })
        }
        fn stop(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(async move { self.log.lock().unwrap().push(format!("stop {}", self.name)) })
        }
    }

    fn probes(fail_second: bool, log: &Arc<Mutex<Vec<String>>>) -> Vec<Box<dyn DevService>> {
        ["a", "b", "c"]
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                Box::new(Probe {
                    name,
                    fail: fail_second && i == 1,
                    log: log.clone(),
                }) as Box<dyn DevService>
            })
            .collect()
    }

    #[test]
    fn summary_lists_endpoints_nodes_and_warnings() {
        let ctx = DevContext {
            endpoints: vec![(
                "indexer (GraphQL)".into(),
                "http://127.0.0.1:1/graphql".into(),
            )],
            nodes: vec![
                DevNode {
                    node_id: B256::repeat_byte(0xab),
                    operator: Address::repeat_byte(1),
                    node_key: Address::repeat_byte(2),
                    libvirt_uri: "test:///default".into(),
                    data_dir: PathBuf::from("/tmp/agent"),
                    storage_url: Some("http://127.0.0.1:7700".parse().unwrap()),
                },
                DevNode {
                    node_id: B256::repeat_byte(0xcd),
                    operator: Address::repeat_byte(1),
                    node_key: Address::repeat_byte(3),
                    libvirt_uri: "test:///default".into(),
                    data_dir: PathBuf::from("/tmp/agent-2"),
                    storage_url: Some("http://127.0.0.1:7701".parse().unwrap()),
                },
            ],
            warnings: vec!["VMs are SIMULATED".into()],
            ..DevContext::default()
        };
        let out = summary(&ctx);
        assert!(
            out.contains("indexer (GraphQL)        http://127.0.0.1:1/graphql"),
            "{out}"
        );
        assert!(
            out.contains(&format!("node id   {}", B256::repeat_byte(0xab))),
            "{out}"
        );
        assert!(
            out.contains(&format!("operator  {}", Address::repeat_byte(1))),
            "{out}"
        );
        assert!(out.contains("libvirt   test:///default"), "{out}");
        assert!(out.contains("storage   http://127.0.0.1:7700/"), "{out}");
        assert!(out.contains("storage   http://127.0.0.1:7701/"), "{out}");
        // Each node's lines apart from the next's, then how to store on all of them.
        assert!(
            out.contains(&format!(
                "data dir  /tmp/agent\n  storage   http://127.0.0.1:7700/\n\n  node id   {}",
                B256::repeat_byte(0xcd)
            )),
            "{out}"
        );
        assert!(
            out.contains("on the 2 storage nodes (after `decloud login`")
                && out.contains("\n  decloud storage put FILE --replicas 2\n"),
            "{out}"
        );
        assert!(out.contains("!!! VMs are SIMULATED"), "{out}");
        assert!(out.trim_end().ends_with("Press Ctrl-C to stop."), "{out}");
    }

    #[tokio::test]
    async fn services_start_in_order_and_stop_in_reverse() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let ctx = run_services(&mut probes(false, &log), async {})
            .await
            .unwrap();
        assert_eq!(ctx.endpoints.len(), 3);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "start a after 0",
                "start b after 1",
                "start c after 2",
                "stop c",
                "stop b",
                "stop a"
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_start_stops_what_was_started() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let err = run_services(&mut probes(true, &log), async {
            unreachable!("never waits")
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "b failed");
        assert_eq!(
            *log.lock().unwrap(),
            ["start a after 0", "start b after 1", "stop b", "stop a"]
        );
    }
}
