//! One node agent as a service of the local development network (`decloud dev`): it creates the
//! node's identity in a fresh temp directory, registers the node on the local chain from one of
//! anvil's funded accounts, and runs the agent linked to the orchestrator the context names, in
//! the storage role too (a chunk store under its data directory, proving every epoch of the
//! local chain's short epochs with the development circuit).

use std::collections::BTreeMap;
use std::time::Duration;

use alloy::{primitives::U256, providers::ext::AnvilApi as _, signers::local::PrivateKeySigner};
use decloud_sdk::{
    Error,
    agent_protocol::NodeResources,
    bindings::{NodeRegistry, node_registry::INodeRegistry},
    dev::{BoxFuture, DevContext, DevNode, DevService},
    tx,
    types::Architecture,
};
use tracing::{info, warn};

use crate::{
    Identity, RunningAgent,
    config::{Config, ConfigLayer, DomainType, ImageConfig, NetworkConfig},
};

/// libvirt's in-process test driver: VMs are simulated, nothing boots.
pub const TEST_DRIVER_URI: &str = "test:///default";

/// The node agent's own default: a graceful shutdown under emulation (TCG) takes tens of seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// The local node's chunk store quota: room for a few files of tens of MiB.
pub const DEFAULT_STORAGE_QUOTA_BYTES: u64 = 2 << 30;

/// Gas for the node key's `submitProof` transactions on the local chain (100 ETH).
const NODE_KEY_GAS_WEI: u128 = 100 * 10u128.pow(18);

/// A free loopback port for the chunk API: its URL must be known before the agent starts, since
/// the agent reports it in heartbeats (where the orchestrator's placement finds it).
fn free_loopback_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs one node agent inside `decloud dev`. Needs the chain and the orchestrator services before
/// it in the service list.
#[derive(Debug)]
pub struct NodeAgentService {
    /// Where the agent runs VMs: `test:///default` (simulated VMs) or e.g. `qemu:///system`.
    pub libvirt_uri: String,
    /// Which of anvil's funded accounts operates the node.
    pub operator_account: usize,
    /// The machine id text the node id derives from.
    pub machine_id: String,
    /// Region registered on-chain.
    pub region: String,
    /// Image offered under the orchestrator's image name (a qcow2 disk, with a kernel and
    /// initramfs for direct boot when it is a `scripts/guest-image` build); an empty qcow2 disk
    /// when unset.
    pub image: Option<ImageConfig>,
    /// The name the orchestrator asks VMs to boot from.
    pub image_name: String,
    /// How long a stopping guest has to shut down before it is powered off. A real OS needs
    /// time to write its file systems back (a Debian guest cut off seconds after its first boot
    /// can lose the files it just wrote); a guest that ignores the ACPI power button (the busybox
    /// test guest) always waits this long.
    pub shutdown_timeout: Duration,
    /// Bytes the storage role's chunk store may hold; `None` (the default) runs no storage role.
    pub storage_quota_bytes: Option<u64>,
    running: Option<RunningAgent>,
    temp: Option<tempfile::TempDir>,
}

impl NodeAgentService {
    /// An agent on `libvirt_uri` operated by anvil's account 1, offering `image_name`.
    pub fn new(libvirt_uri: impl Into<String>, image_name: impl Into<String>) -> Self {
        Self {
            libvirt_uri: libvirt_uri.into(),
            operator_account: 1,
            machine_id: "decloud-dev-node".into(),
            region: "local".into(),
            image: None,
            image_name: image_name.into(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            storage_quota_bytes: None,
            running: None,
            temp: None,
        }
    }

    fn is_test_driver(&self) -> bool {
        self.libvirt_uri.starts_with("test://")
    }
}

/// The address this host sends from towards other hosts (no packet is sent: connecting a UDP
/// socket only picks the route); `None` on a host without a route.
fn outbound_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // TEST-NET-1: never routed anywhere, only used to choose the default route's source.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// The capabilities registered on-chain for discovered resources.
pub fn capabilities(found: &NodeResources) -> INodeRegistry::Capabilities {
    let gib = |bytes: u64| u32::try_from(bytes >> 30).unwrap_or(u32::MAX);
    let architecture = match found.arch.as_str() {
        "aarch64" => Architecture::Aarch64,
        "riscv64" => Architecture::Riscv64,
        _ => Architecture::X86_64,
    };
    INodeRegistry::Capabilities {
        vcpus: found.cpu_cores,
        memoryGiB: gib(found.memory_mib << 20).max(1),
        diskGiB: gib(found.vm_storage_free_bytes),
        gpus: u16::try_from(found.gpus.len()).unwrap_or(u16::MAX),
        bandwidthMbps: 1_000,
        architecture: architecture.into(),
        // The agent dials out, so a local node needs no public address.
        flags: 0,
    }
}

impl DevService for NodeAgentService {
    fn name(&self) -> &'static str {
        "node agent"
    }

    fn start<'a>(&'a mut self, ctx: &'a mut DevContext) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let tool = |e: &dyn std::fmt::Display| Error::Tool(format!("node agent: {e}"));
            let rpc = ctx
                .rpc_url
                .clone()
                .ok_or_else(|| tool(&"no chain is running (start the chain service first)"))?;
            let deployment = ctx
                .deployment
                .clone()
                .ok_or_else(|| tool(&"no deployment recorded by the chain service"))?;
            let ws = ctx.agent_ws_url.clone().ok_or_else(|| {
                tool(&"no orchestrator is running (start the orchestrator service first)")
            })?;
            let account = ctx.accounts.get(self.operator_account).ok_or_else(|| {
                tool(&format!(
                    "the chain has no account {} to operate the node",
                    self.operator_account
                ))
            })?;
            let operator: PrivateKeySigner = account
                .private_key
                .parse()
                .map_err(|e| tool(&format!("account key: {e}")))?;

            let temp = tempfile::Builder::new()
                .prefix("decloud-dev-agent-")
                .tempdir()
                .map_err(|e| tool(&e))?;
            let data_dir = temp.path().join("data");
            let image = match &self.image {
                Some(image) => image.clone(),
                None => {
                    let path = temp.path().join(format!("{}.qcow2", self.image_name));
                    crate::create_blank_qcow2(&path, 1024).map_err(|e| tool(&e))?;
                    ImageConfig {
                        base: path,
                        kernel: None,
                        initrd: None,
                        cmdline: None,
                    }
                }
            };
            self.temp = Some(temp);
            let (network, subnet, public_address) = if self.is_test_driver() {
                // The test driver ships a network named `default`.
                let network = NetworkConfig::Network {
                    name: "default".into(),
                };
                (network, None, None)
            } else {
                // Real guests get the agent's NAT network (its own name and subnet, beside any
                // production agent on the machine), so forwarded ports and bandwidth work as on
                // an operator's host. Forwards answer on the host's own addresses but not on
                // 127.0.0.1 (see the node agent's README): the address advertised to tenants is
                // the one the host reaches the outside from.
                let network = NetworkConfig::Network {
                    name: "decloud-dev".into(),
                };
                let subnet = "192.168.124.0/24".to_owned();
                (
                    network,
                    Some(subnet),
                    outbound_address().map(|ip| ip.to_string()),
                )
            };
            let storage = match self.storage_quota_bytes {
                Some(quota) => {
                    let port = free_loopback_port().map_err(|e| tool(&e))?;
                    Some(crate::StorageLayer {
                        listen: Some(format!("127.0.0.1:{port}")),
                        quota_bytes: Some(quota),
                        dir: None,
                        rpc_url: Some(rpc.to_string()),
                        storage_market: Some(deployment.contracts.storage_market.address),
                        public_url: Some(format!("http://127.0.0.1:{port}")),
                        // The local market verifies the development circuit, whose keys the
                        // agent derives itself.
                        proving_keys: None,
                        drain: None,
                    })
                }
                None => None,
            };
            let mut config = Config::resolve(
                None,
                ConfigLayer::default(),
                ConfigLayer {
                    data_dir: Some(data_dir.clone()),
                    libvirt_uri: Some(self.libvirt_uri.clone()),
                    // KVM is not assumed on a development machine; QEMU emulates.
                    domain_type: Some(DomainType::Qemu),
                    orchestrator_url: Some(ws.to_string()),
                    operator: Some(operator.address()),
                    machine_id: Some(self.machine_id.clone()),
                    shutdown_timeout_secs: Some(self.shutdown_timeout.as_secs()),
                    network: Some(network),
                    network_subnet: subnet,
                    public_address,
                    images: BTreeMap::from([(self.image_name.clone(), image)]),
                    storage,
                    ..Default::default()
                },
            )
            .map_err(|e| tool(&e))?;
            // The local ingress's Caddy serves the VMs' names (internal CA).
            config.ingress = ctx.ingress.as_ref().map(|i| crate::IngressConfig {
                admin: i.admin.clone(),
                listen: i.listen.clone(),
                tls: crate::IngressTls::Internal,
                acme_email: None,
                acme_ca: None,
            });
            let (identity, _) = Identity::load_or_create(&config).map_err(|e| tool(&e))?;
            let found = crate::cli::discover(&config).await.map_err(|e| tool(&e))?;

            // Registered before the agent dials, so the orchestrator can check its key.
            let provider = tx::signing_provider(rpc.clone(), operator.clone());
            let registry = NodeRegistry::new(deployment.contracts.node_registry.address, provider);
            tx::send(
                "NodeRegistry",
                registry.register(
                    identity.machine_id,
                    identity.address(),
                    self.region.clone(),
                    capabilities(&found),
                    String::new(),
                    String::new(),
                    // Zero prices take the registry's defaults.
                    INodeRegistry::Prices {
                        cpuPerHour: 0,
                        memoryGiBPerHour: 0,
                        storageGiBPerHour: 0,
                        gpuPerHour: 0,
                    },
                ),
            )
            .await?;
            info!(target: "agent::dev", node_id = %identity.node_id, operator = %operator.address(), "node registered");
            let storage_url = config.storage.as_ref().and_then(|s| s.public_url.clone());
            if storage_url.is_some() {
                // The node key sends its own proofs.
                let chain = alloy::providers::ProviderBuilder::new().connect_http(rpc.clone());
                chain
                    .anvil_set_balance(identity.address(), U256::from(NODE_KEY_GAS_WEI))
                    .await
                    .map_err(|e| tool(&format!("funding the node key: {e}")))?;
            }

            let node = DevNode {
                node_id: identity.node_id,
                operator: operator.address(),
                node_key: identity.address(),
                libvirt_uri: self.libvirt_uri.clone(),
                data_dir,
                storage_url,
            };
            let running = RunningAgent::start_with(config, identity, found)
                .await
                .map_err(|e| tool(&e))?;
            self.running = Some(running);
            ctx.nodes.push(node);
            let warning = if self.is_test_driver() {
                Some(format!(
                    "The node agent runs on libvirt's TEST DRIVER ({}): its VMs are SIMULATED, \
                     nothing boots. Pass --real-vms for real QEMU guests of the Debian image \
                     (add --start-libvirtd when nothing starts libvirtd here).",
                    self.libvirt_uri
                ))
            } else if self.image.is_none() {
                Some(format!(
                    "The node agent's image {} is an EMPTY disk: VMs start but boot nothing. \
                     Pass --real-vms for the Debian guest image (built by scripts/guest-image), \
                     or --agent-image with a bootable qcow2.",
                    self.image_name
                ))
            } else {
                None
            };
            // Several agents of one kind warn once.
            if let Some(warning) = warning
                && !ctx.warnings.contains(&warning)
            {
                ctx.warnings.push(warning);
            }
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(running) = self.running.take() {
                // An agent keeps its VMs across restarts; the local network's agent does not
                // come back, so its VMs (real QEMU processes outside the test driver) go with it.
                match running.agent().owned_domains().await {
                    Ok(domains) => {
                        for domain in domains {
                            if let Err(e) = running.agent().delete_vm(&domain.vm_id).await {
                                warn!(target: "agent::dev", vm = %domain.vm_id, error = %e, "cannot delete VM");
                            }
                        }
                    }
                    Err(e) => warn!(target: "agent::dev", error = %e, "cannot list VMs"),
                }
                running.stop().await;
                info!(target: "agent::dev", "node agent stopped");
            }
            self.temp.take();
        })
    }
}
