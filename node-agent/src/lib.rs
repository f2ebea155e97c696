//! DeCloud node agent: runs on an operator's host, runs tenants' VMs through libvirt with
//! cloud-init NoCloud seeds, keeps its state in SQLite so VMs survive agent restarts,
//! discovers the host's resources and rates its CPU in compute points, and keeps an
//! outbound WebSocket link to the orchestrator (works behind NAT and CGNAT).
//!
//! Guests sit on a libvirt NAT network where the kernel enforces each lease's bandwidth;
//! each port a VM exposes gets a public port of the node, forwarded by iptables DNAT rules
//! that the agent records before it makes them and reconciles when it starts. HTTP ports
//! named in a spec's `ingress` are served over HTTPS by host name through a Caddy on the node,
//! driven through its admin API ([`Ingress`]).
//!
//! In the storage role (a `[storage]` section in the configuration) it also keeps a chunk
//! store on disk and serves deal owners' replicas over an HTTP chunk API, and proves every
//! replica it holds each epoch on StorageMarket with `decloud-prover` ([`Prover`]).
//!
//! In the relay role (a `[relay]` section) it publishes the ports and HTTPS names of nodes
//! behind NAT, which dial it and hold a WireGuard tunnel ([`Relay`], [`Tunnel`]).
//!
//! The binary's subcommands: `init` creates the node key and prints what to register
//! on-chain, `run` runs the agent, `resources` prints the discovered resources, `chunks list`
//! lists the chunk store, `drain` / `undrain` turn the storage role's drain mode on and off.

mod agent;
mod cli;
mod config;
mod console;
pub mod dev;
mod domain_xml;
mod error;
mod firewall;
mod guest_exec;
mod hypervisor;
mod identity;
mod ingress;
mod link;
mod network;
mod readiness;
mod relay;
mod resources;
mod seed;
mod shaping;
mod storage;
mod store;
pub mod test_guest;

pub use agent::{
    Agent, MAX_USER_DATA_BYTES, MIN_MEMORY_MIB, ReconcileReport, create_blank_qcow2,
    image_virtual_size, validate_id,
};
pub use cli::{
    ChunksCommand, Cli, DEFAULT_CONFIG_FILE, OBSERVE_INTERVAL, RunningAgent, Subcommands, main, run,
};
pub use config::{
    BandwidthShaping, Config, ConfigLayer, DEFAULT_DATA_DIR, DEFAULT_LIBVIRT_URI,
    DEFAULT_NETWORK_NAME, DEFAULT_NETWORK_SUBNET, DEFAULT_PUBLIC_PORT_RANGE, DomainType,
    ImageConfig, Ipv4Subnet, NetworkConfig, PortRange, parse_address,
};
pub use console::{CONSOLE_SOCKET, Consoles, socket_path as console_socket_path};
pub use dev::NodeAgentService;
pub use domain_xml::{
    CPU_PERIOD_US, DOMAIN_PREFIX, DomainPlan, METADATA_NS, bandwidth_kbytes, cpu_quota_us,
    domain_name, mac_address, owned_vm_id, pci_address_parts, render as render_domain_xml,
};
pub use error::{Error, Result};
pub use firewall::{
    COMMENT_PREFIX, DNAT_CHAIN, FORWARD_CHAIN, Firewall, FirewallReport, ForwardRule, FoundRule,
    parse_rules, redirected_ports,
};
pub use guest_exec::{ExecOutcome, run as run_guest_command};
pub use hypervisor::{Hypervisor, OwnedDomain, StopOutcome};
pub use identity::{Identity, KEY_FILE, load_or_create_key, node_tag};
pub use ingress::{
    Ingress, IngressConfig, IngressReport, IngressRule, IngressTls, ServedRoute, valid_host,
};
pub use link::{Backoff, HANDSHAKE_TIMEOUT, run as run_link};
pub use network::{
    DhcpHost, NatNetwork, network_xml, parse_network, reservation_name, reservation_prefix,
};
pub use readiness::{
    PROBE_TIMEOUT, check as check_readiness, cloud_init_finished, http_probe, tcp_probe,
};
pub use relay::{
    KEEPALIVE_SECS, PeerStatus, RELAY_COMMENT_PREFIX, RELAY_KEY_FILE, Relay, RelayConfig,
    TUNNEL_KEY_FILE, Tunnel, TunnelKeys, WgInterface, tunnel_binding,
};
pub use resources::{
    BASELINE_HASHES_PER_SEC, BENCH_ROUND_MILLIS, BENCH_ROUNDS, SYSFS_ROOT, compute_points,
    discover, discover_disks, discover_gpus, free_bytes, passable_gpus, single_core_rate,
};
pub use seed::{SeedFiles, VOLUME_ID, write_iso};
pub use shaping::{IFB_PREFIX, ifb_name};
pub use storage::{
    ChunkStore, DEFAULT_CHUNKS_DIR, DRAIN_FLAG_FILE, DealInfo, Drain, Market, PROOF_JOURNAL_FILE,
    PROVE_POLL_INTERVAL, PROVER_CACHE_DIR, ProofLog, Prover, PutOutcome, ReplicaKey, StorageConfig,
    StorageError, StorageLayer, StorageService, app as storage_app, select_keys,
    serve as serve_storage, sha256,
};
pub use store::{Attachment, Desired, MIGRATIONS, Store, VmRecord};
