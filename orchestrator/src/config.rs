//! Configuration, resolved in one place with one precedence:
//! defaults → TOML file → environment (`DECLOUD_ORCHESTRATOR_*`) → command-line flags.

use clap::Parser;
use decloud_runtime::config::{EnvVar, Layers};
use serde::{Deserialize, Serialize};
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

/// Errors while resolving the configuration: the resolver's, shared by every binary.
pub use decloud_runtime::config::ConfigError;

/// Everything the orchestrator needs to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// `sqlite:path` (default) or `postgres://…`.
    pub database_url: String,
    /// Logs as JSON lines instead of text.
    pub log_json: bool,
    /// Origins a browser dApp may call from; empty allows any origin (sessions are bearer
    /// tokens, never cookies, so no ambient credential is exposed).
    pub cors_origins: Vec<String>,
    /// Take the client IP for rate limits from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Sign-in requests one IP may burst.
    pub signin_burst: u32,
    /// Sign-in requests one IP regains per minute.
    pub signin_per_minute: u32,
    /// Seconds after which a command a node agent has not acknowledged is sent again.
    pub agent_resend_secs: i64,
    /// Directory of template bundles (one subdirectory each) loaded into the catalog at start.
    pub templates_dir: Option<PathBuf>,
    /// Where template bundles published on TemplateMarket (and drafts) are fetched from and
    /// stored; without it only the bundles of `templates_dir` deploy.
    pub content: Option<ContentConfig>,
    /// Sign-In with Ethereum.
    pub siwe: SiweConfig,
    /// The chain whose lease events drive VMs; without it the orchestrator only serves the API.
    pub chain: Option<ChainConfig>,
    /// Signed attestations and their anchoring; without it nothing is attested.
    pub attestation: Option<AttestationConfig>,
    /// The web app served beside the API; without it only the API is served.
    pub web: Option<WebConfig>,
    /// HTTPS names for VMs' HTTP ports (`https://<name>.<domain>`); without it no names are
    /// given and HTTP ports are forwarded directly like any other port.
    pub ingress: Option<IngressConfig>,
    /// Repair of lost storage replicas (`[repair]`): deal owners name this orchestrator's repair
    /// key as their deals' repairer and register their repair secrets with it. Needs `[chain]`
    /// with `storage_market`; without it nothing is repaired.
    pub repair: Option<RepairConfig>,
    /// Relays for nodes that accept no inbound connections (`[relays]`).
    pub relays: RelaysConfig,
}

/// How the orchestrator uses relays (`[relays]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaysConfig {
    /// Seconds a relay may be without a live session (or without heartbeats) before its nodes
    /// are moved to another relay. A relay's agent reconnects within a few seconds after a
    /// blip, so this is short; together with the nodes' tunnel setup it keeps a relayed VM's
    /// outage well under a minute.
    pub failover_secs: u64,
}

impl Default for RelaysConfig {
    fn default() -> Self {
        Self { failover_secs: 20 }
    }
}

/// The orchestrator's repair key (`[repair]`). The key comes from `DECLOUD_REPAIR_PRIVATE_KEY`
/// (hex) or from `key_file` (a file holding the hex key, mode 0600): never from this file itself
/// or a flag. It signs the repairer's chunk requests and `replaceReplica` transactions, so its
/// account needs gas, and it seals the registered repair secrets at rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairConfig {
    /// File holding the repair key in hex (else `DECLOUD_REPAIR_PRIVATE_KEY`).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// How often the repair watcher looks at the deals it repairs, seconds.
    #[serde(default = "default_repair_watch_secs")]
    pub watch_interval_secs: u64,
    /// A replica whose node sent no heartbeat for this long gets a repair job (the market still
    /// lets the repairer move it only once its node is no longer Active or missed the last two
    /// closed epochs), seconds.
    #[serde(default = "default_repair_offline_secs")]
    pub offline_after_secs: u64,
    /// Wait after a repair job's first failed attempt; it doubles with each failure, seconds.
    #[serde(default = "default_repair_retry_secs")]
    pub retry_base_secs: u64,
    /// The longest wait between two attempts of a failing repair job, seconds.
    #[serde(default = "default_repair_retry_max_secs")]
    pub retry_max_secs: u64,
}

impl RepairConfig {
    /// Defaults, reading the key from `key_file` when given.
    pub fn with_key_file(key_file: Option<PathBuf>) -> Self {
        Self {
            key_file,
            watch_interval_secs: default_repair_watch_secs(),
            offline_after_secs: default_repair_offline_secs(),
            retry_base_secs: default_repair_retry_secs(),
            retry_max_secs: default_repair_retry_max_secs(),
        }
    }
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self::with_key_file(None)
    }
}

fn default_repair_watch_secs() -> u64 {
    30
}

fn default_repair_offline_secs() -> u64 {
    // Two missed epochs of a production deal are needed anyway; half an hour of silence is
    // enough to prepare the move without chasing short restarts.
    1800
}

fn default_repair_retry_secs() -> u64 {
    30
}

fn default_repair_retry_max_secs() -> u64 {
    3600
}

/// The domain VMs' HTTP ports are named under (`[ingress]`). Each node serves the names of its
/// own VMs through its Caddy (the node agent's `[ingress]`), so every name must resolve to the
/// node that runs its VM: with `dns_listen` the orchestrator is the zone's authoritative DNS
/// server and answers each name with its node's address (`dns.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// The domain, e.g. `apps.example.org`: lowercase, at least two labels.
    pub domain: String,
    /// The port the nodes' ingress serves HTTPS on, as URLs name it (443 is left out of them).
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// Where the authoritative DNS server of `domain` listens, on UDP and TCP (`0.0.0.0:53`);
    /// no DNS server without it.
    #[serde(default)]
    pub dns_listen: Option<SocketAddr>,
    /// The DNS server's own name, as the zone's NS record and the parent zone's delegation
    /// name it (`ns1.apps.example.org`); required with `dns_listen`.
    #[serde(default)]
    pub dns_nameserver: Option<String>,
    /// The addresses of `dns_nameserver` when it lies inside `domain` (the glue the parent
    /// zone also holds); the DNS server answers them as its A/AAAA records.
    #[serde(default)]
    pub dns_nameserver_addresses: Vec<IpAddr>,
    /// Time to live of the answers, in seconds: short, because a name's address changes when
    /// its VM's node (or, later, relay) changes.
    #[serde(default = "default_dns_ttl")]
    pub dns_ttl_secs: u32,
}

fn default_https_port() -> u16 {
    443
}

fn default_dns_ttl() -> u32 {
    30
}

/// Most seconds a DNS answer may be cached: an hour, since addresses change on failover.
const MAX_DNS_TTL_SECS: u32 = 3600;

/// The DNS server's settings: a nameserver name that is a host name, its addresses when it
/// lies inside the zone (else nobody can find it), a TTL of 1 s to an hour.
fn check_dns(ingress: &IngressConfig) -> Result<(), ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(format!("ingress.{m}"));
    let nameserver = ingress.dns_nameserver.as_deref().ok_or_else(|| {
        invalid("dns_nameserver is required with dns_listen: the zone's NS record names it".into())
    })?;
    decloud_sdk::api::check_ingress_domain(nameserver)
        .map_err(|e| invalid(format!("dns_nameserver: {e}")))?;
    let inside = nameserver
        .strip_suffix(&ingress.domain)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
    if inside {
        // One reserved label (ns1, ns, dns …): no tenant can name a VM's port after it.
        let label = nameserver
            .strip_suffix(&ingress.domain)
            .and_then(|rest| rest.strip_suffix('.'))
            .unwrap_or_default();
        if !decloud_sdk::api::RESERVED_INGRESS_NAMES.contains(&label) {
            return Err(invalid(format!(
                "dns_nameserver: inside {} it must be a reserved name such as ns1.{}, which no vm can take",
                ingress.domain, ingress.domain
            )));
        }
    }
    if inside && ingress.dns_nameserver_addresses.is_empty() {
        return Err(invalid(format!(
            "dns_nameserver_addresses: {nameserver} lies inside {}, so its addresses (the glue) are required",
            ingress.domain
        )));
    }
    if ingress.dns_ttl_secs == 0 || ingress.dns_ttl_secs > MAX_DNS_TTL_SECS {
        return Err(invalid(format!(
            "dns_ttl_secs must be 1 to {MAX_DNS_TTL_SECS}"
        )));
    }
    Ok(())
}

/// Where attestations are anchored and how they are batched. The signing key (which must hold
/// ANCHOR_ROLE on the anchor) comes from `DECLOUD_PRIVATE_KEY`, or from `keystore` with its
/// password in `DECLOUD_KEYSTORE_PASSWORD`: never from a file of this configuration or a flag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// HTTP JSON-RPC URL of the anchor's chain.
    pub rpc_url: String,
    /// AttestationAnchor address.
    pub anchor: String,
    /// Encrypted JSON keystore of the attestation key (else `DECLOUD_PRIVATE_KEY`).
    #[serde(default)]
    pub keystore: Option<PathBuf>,
    /// A batch is sealed once this many attestations wait.
    #[serde(default = "default_batch_size")]
    pub batch_size: u64,
    /// A batch is sealed once its oldest attestation waited this long, seconds.
    #[serde(default = "default_batch_interval")]
    pub batch_interval_secs: i64,
    /// How long to wait for an anchor transaction's confirmation before asking the chain again.
    #[serde(default = "default_confirm_timeout")]
    pub confirm_timeout_secs: u64,
}

fn default_batch_size() -> u64 {
    256
}

fn default_batch_interval() -> i64 {
    600
}

fn default_confirm_timeout() -> u64 {
    120
}

/// The content store template bundles are fetched from by their on-chain CID: a Kubo node's HTTP
/// API when `ipfs_api` is set, else the embedded store in `dir`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentConfig {
    /// Directory of the embedded content store (created if missing).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Kubo HTTP API URL, e.g. `http://127.0.0.1:5001`.
    #[serde(default)]
    pub ipfs_api: Option<String>,
}

/// Where lease and node events come from, and what VMs run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// HTTP JSON-RPC URL.
    pub rpc_url: String,
    /// NodeRegistry address.
    pub node_registry: String,
    /// LeaseEscrow address.
    pub lease_escrow: String,
    /// TemplateMarket address: when set, its publications give catalog bundles their on-chain
    /// template ids.
    #[serde(default)]
    pub template_market: Option<String>,
    /// StorageMarket address: when set, its deals, epoch challenges, accepted proofs and
    /// settlements are attested.
    #[serde(default)]
    pub storage_market: Option<String>,
    /// First block to read (the contracts' deploy block).
    #[serde(default)]
    pub start_block: u64,
    /// Blocks below the head an event must be before it is acted on.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Base image the nodes boot VMs from.
    pub image: String,
    /// How long a VM whose lease ran out of funds stays paused for a top-up before it is
    /// deleted, seconds.
    #[serde(default = "default_grace")]
    pub grace_secs: i64,
    /// After a start, how long node agents are given to reconnect before a VM waiting for its
    /// node says so to its tenant, seconds. Placement always waits for the node's agent to be
    /// connected and to report what it runs; an offline node never fails a VM.
    #[serde(default = "default_reconnect_grace")]
    pub reconnect_grace_secs: i64,
    /// How long a node may stay silent (no heartbeat, its agent's link gone) before the
    /// orchestrator, as LeaseEscrow's arbiter, terminates its active leases on-chain dated back
    /// to its last heartbeat, seconds. Needs the `[attestation]` key to hold ARBITER_ROLE.
    #[serde(default = "default_sla_window")]
    pub sla_window_secs: i64,
}

fn default_sla_window() -> i64 {
    // 30 minutes: long enough for a node's reboot or a network blip, short enough that a tenant
    // is not left on a dead node for long. LeaseEscrow lets the arbiter reach back 2 hours.
    1800
}

fn default_reconnect_grace() -> i64 {
    // The agent's reconnect wait is capped at 60 s; one heartbeat (15 s) more and some slack.
    90
}

fn default_grace() -> i64 {
    86_400
}

fn default_confirmations() -> u64 {
    // Polygon PoS reorganisations stay well under this depth.
    64
}

/// Sign-In with Ethereum settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiweConfig {
    /// Domains (host[:port]) a message may name.
    pub domains: Vec<String>,
    /// URI prefixes a message's URI must start with.
    pub uris: Vec<String>,
    /// Chain ids a message may name.
    pub chain_ids: Vec<u64>,
    /// Lifetime of a nonce, seconds.
    pub nonce_ttl_secs: i64,
    /// Longest session, seconds (shorter if the message expires earlier).
    pub session_ttl_secs: i64,
    /// Tolerated clock difference with the wallet, seconds.
    pub clock_skew_secs: i64,
    /// JSON-RPC endpoints per chain, for EIP-1271 contract-wallet signatures.
    pub rpc: Vec<ChainRpc>,
}

/// A JSON-RPC endpoint of one chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainRpc {
    /// Chain id.
    pub chain_id: u64,
    /// HTTP JSON-RPC URL.
    pub url: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite:decloud-orchestrator.db".into(),
            log_json: false,
            cors_origins: Vec::new(),
            trust_forwarded_for: false,
            signin_burst: 10,
            signin_per_minute: 30,
            agent_resend_secs: 30,
            templates_dir: None,
            content: None,
            siwe: SiweConfig::default(),
            chain: None,
            attestation: None,
            web: None,
            ingress: None,
            repair: None,
            relays: RelaysConfig::default(),
        }
    }
}

impl Default for SiweConfig {
    fn default() -> Self {
        Self {
            domains: vec!["localhost:8080".into(), "127.0.0.1:8080".into()],
            uris: vec![
                "http://localhost:8080".into(),
                "http://127.0.0.1:8080".into(),
            ],
            // Polygon, Polygon Amoy, anvil.
            chain_ids: vec![137, 80_002, 31_337],
            nonce_ttl_secs: 600,
            session_ttl_secs: 86_400,
            clock_skew_secs: 60,
            rpc: Vec::new(),
        }
    }
}

/// Command-line flags; each overrides the file and the environment.
#[derive(Clone, Debug, Default, Parser)]
#[command(
    name = "decloud-orchestrator",
    version,
    about = "DeCloud orchestrator server"
)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Database URL (`sqlite:path` or `postgres://…`).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

/// The environment variables of the orchestrator and the keys they set. The attestation ones
/// adjust an `[attestation]` section of the file and create none.
const ENV: &[EnvVar] = &[
    EnvVar::with("DECLOUD_ORCHESTRATOR_LISTEN", "listen", |v| {
        v.parse::<SocketAddr>()
            .map(|a| a.to_string().into())
            .map_err(|_| "expected an address such as 127.0.0.1:8080".into())
    }),
    EnvVar::string("DECLOUD_ORCHESTRATOR_DATABASE_URL", "database_url"),
    EnvVar::boolean("DECLOUD_ORCHESTRATOR_LOG_JSON", "log_json"),
    EnvVar::string("DECLOUD_ORCHESTRATOR_TEMPLATES_DIR", "templates_dir"),
    EnvVar::list("DECLOUD_ORCHESTRATOR_CORS_ORIGINS", "cors_origins"),
    EnvVar::list("DECLOUD_ORCHESTRATOR_SIWE_DOMAINS", "siwe.domains"),
    EnvVar::list("DECLOUD_ORCHESTRATOR_SIWE_URIS", "siwe.uris"),
    EnvVar::unsigned_list("DECLOUD_ORCHESTRATOR_SIWE_CHAIN_IDS", "siwe.chain_ids"),
    EnvVar::unsigned(
        "DECLOUD_ORCHESTRATOR_ATTESTATION_BATCH_SIZE",
        "attestation.batch_size",
    ),
    EnvVar::integer(
        "DECLOUD_ORCHESTRATOR_ATTESTATION_BATCH_INTERVAL_SECS",
        "attestation.batch_interval_secs",
    ),
];

/// The flags that were given, as a layer of settings.
#[derive(Serialize)]
struct FlagLayer {
    listen: Option<SocketAddr>,
    database_url: Option<String>,
    /// `--log-json` can only turn JSON on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    log_json: bool,
}

impl Config {
    /// Resolves the configuration from the file named in `args`, the environment as seen
    /// through `env`, and the flags.
    pub fn resolve(args: &Args, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut layers = Layers::new().layer(&Self::default())?;
        if let Some(path) = &args.config {
            layers = layers.file(path)?;
        }
        let config: Self = layers
            .env(ENV, env)?
            .layer(&FlagLayer {
                listen: args.listen,
                database_url: args.database_url.clone(),
                log_json: args.log_json,
            })?
            .extract()?;
        config.validate()?;
        Ok(config)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let siwe = &self.siwe;
        if siwe.domains.is_empty() || siwe.uris.is_empty() || siwe.chain_ids.is_empty() {
            return Err(ConfigError::Invalid(
                "siwe domains, uris and chain_ids must not be empty".into(),
            ));
        }
        if siwe.nonce_ttl_secs <= 0 || siwe.session_ttl_secs <= 0 || siwe.clock_skew_secs < 0 {
            return Err(ConfigError::Invalid(
                "siwe lifetimes must be positive".into(),
            ));
        }
        if let Some(content) = &self.content
            && content.dir.is_none()
            && content.ipfs_api.is_none()
        {
            return Err(ConfigError::Invalid(
                "[content] needs dir (the embedded store) or ipfs_api (a Kubo node)".into(),
            ));
        }
        if let Some(chain) = &self.chain {
            for (name, value) in [
                ("node_registry", &chain.node_registry),
                ("lease_escrow", &chain.lease_escrow),
            ]
            .into_iter()
            .chain(
                chain
                    .template_market
                    .as_ref()
                    .map(|m| ("template_market", m)),
            )
            .chain(chain.storage_market.as_ref().map(|m| ("storage_market", m)))
            {
                if value.parse::<alloy::primitives::Address>().is_err() {
                    return Err(ConfigError::Invalid(format!(
                        "chain.{name} is not an address: {value}"
                    )));
                }
            }
            if chain.reconnect_grace_secs < 0 {
                return Err(ConfigError::Invalid(
                    "chain.reconnect_grace_secs must not be negative".into(),
                ));
            }
            if chain.sla_window_secs <= 0 {
                return Err(ConfigError::Invalid(
                    "chain.sla_window_secs must be positive".into(),
                ));
            }
            if chain.grace_secs < 0 {
                return Err(ConfigError::Invalid(
                    "chain.grace_secs must not be negative".into(),
                ));
            }
            if chain.image.is_empty() {
                return Err(ConfigError::Invalid(
                    "chain.image must name a base image".into(),
                ));
            }
        }
        if let Some(a) = &self.attestation {
            if a.anchor.parse::<alloy::primitives::Address>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "attestation.anchor is not an address: {}",
                    a.anchor
                )));
            }
            if a.batch_size == 0 || a.batch_interval_secs <= 0 || a.confirm_timeout_secs == 0 {
                return Err(ConfigError::Invalid(
                    "attestation batch_size, batch_interval_secs and confirm_timeout_secs must be positive"
                        .into(),
                ));
            }
        }
        if self.relays.failover_secs == 0 {
            return Err(ConfigError::Invalid(
                "relays.failover_secs must be positive".into(),
            ));
        }
        if self.repair.is_some()
            && self
                .chain
                .as_ref()
                .is_none_or(|c| c.storage_market.is_none())
        {
            return Err(ConfigError::Invalid(
                "[repair] needs [chain] with storage_market (the market whose deals it repairs)"
                    .into(),
            ));
        }
        if let Some(r) = &self.repair
            && (r.watch_interval_secs == 0
                || r.offline_after_secs == 0
                || r.retry_base_secs == 0
                || r.retry_max_secs < r.retry_base_secs)
        {
            return Err(ConfigError::Invalid(
                "[repair] watch_interval_secs, offline_after_secs and retry_base_secs must be \
                 positive, and retry_max_secs at least retry_base_secs"
                    .into(),
            ));
        }
        if let Some(ingress) = &self.ingress {
            decloud_sdk::api::check_ingress_domain(&ingress.domain)
                .map_err(|e| ConfigError::Invalid(format!("ingress.domain: {e}")))?;
            if ingress.https_port == 0 {
                return Err(ConfigError::Invalid(
                    "ingress.https_port must not be 0".into(),
                ));
            }
            if ingress.dns_listen.is_some() {
                check_dns(ingress)?;
            }
        }
        if self.agent_resend_secs <= 0 {
            return Err(ConfigError::Invalid(
                "agent_resend_secs must be positive".into(),
            ));
        }
        if self.signin_burst == 0 || self.signin_per_minute == 0 {
            return Err(ConfigError::Invalid(
                "sign-in rate limits must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// The name under which `decloud dev`'s indexer lists its GraphQL endpoint, which the app reads.
pub const INDEXER_ENDPOINT: &str = "indexer (GraphQL)";

/// The web app served at the API's origin (`[web]`): where its build lives and what its
/// `/config.json` says. One build of the app serves every network: what differs is written into
/// `/config.json` from this section and the deployment record, never baked into the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// The built app (`web/dist`): `index.html` and its assets.
    pub dir: PathBuf,
    /// Chain id the app expects the wallet on.
    pub chain_id: u64,
    /// JSON-RPC URL the browser reads the chain through (reachable from the user's machine).
    pub rpc_url: String,
    /// GraphQL URL of the indexer, if one serves this network.
    #[serde(default)]
    pub indexer_url: Option<String>,
    /// WalletConnect Cloud project id; without one the app offers injected wallets only.
    #[serde(default)]
    pub walletconnect_project_id: Option<String>,
    /// The deployment record (`deployments/<chainId>.json`) whose addresses the app uses.
    pub deployment: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\ndatabase_url = \"sqlite:file.db\"\nsignin_burst = 3\n\
             [siwe]\ndomains = [\"app.example\"]\nchain_ids = [1]\n",
        )
        .unwrap();
        let mut args = Args {
            config: Some(path),
            ..Args::default()
        };
        let env: HashMap<&str, &str> = HashMap::from([
            ("DECLOUD_ORCHESTRATOR_DATABASE_URL", "sqlite:env.db"),
            ("DECLOUD_ORCHESTRATOR_SIWE_CHAIN_IDS", "137, 31337"),
        ]);
        let lookup = |k: &str| env.get(k).map(|v| v.to_string());
        let c = Config::resolve(&args, lookup).unwrap();
        assert_eq!(c.listen.port(), 9000); // file
        assert_eq!(c.signin_burst, 3); // file
        assert_eq!(c.signin_per_minute, 30); // default
        assert_eq!(c.siwe.domains, vec!["app.example"]); // file
        assert_eq!(c.database_url, "sqlite:env.db"); // env over file
        assert_eq!(c.siwe.chain_ids, vec![137, 31337]); // env over file
        args.database_url = Some("postgres://x/y".into());
        assert_eq!(
            Config::resolve(&args, lookup).unwrap().database_url,
            "postgres://x/y"
        ); // flag over env
    }

    #[test]
    fn the_dns_server_needs_a_nameserver_that_can_be_found() {
        let with = |dns: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("o.toml");
            std::fs::write(
                &path,
                format!(
                    "[ingress]\ndomain = \"apps.example.org\"\ndns_listen = \"127.0.0.1:0\"\n{dns}"
                ),
            )
            .unwrap();
            Config::resolve(
                &Args {
                    config: Some(path),
                    ..Args::default()
                },
                |_| None,
            )
        };
        let ok = with("dns_nameserver = \"ns1.apps.example.org\"\ndns_nameserver_addresses = [\"203.0.113.5\"]\n")
            .unwrap()
            .ingress
            .unwrap();
        assert_eq!(ok.dns_ttl_secs, 30);
        assert!(with("dns_nameserver = \"ns.example.net\"\n").is_ok());
        for (bad, says) in [
            ("", "dns_nameserver is required"),
            ("dns_nameserver = \"ns1.apps.example.org\"\n", "glue"),
            (
                "dns_nameserver = \"myapp.apps.example.org\"\ndns_nameserver_addresses = [\"203.0.113.5\"]\n",
                "reserved name",
            ),
            (
                "dns_nameserver = \"ns.example.net\"\ndns_ttl_secs = 0\n",
                "1 to 3600",
            ),
            ("dns_nameserver = \"bad name\"\n", "dns_nameserver"),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::resolve(&Args::default(), |k| {
            (k == "DECLOUD_ORCHESTRATOR_SIWE_CHAIN_IDS").then(|| "137,abc".to_string())
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("DECLOUD_ORCHESTRATOR_SIWE_CHAIN_IDS"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.toml");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let e = Config::resolve(
            &Args {
                config: Some(path),
                ..Args::default()
            },
            |_| None,
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        let e = Config::resolve(&Args::default(), |k| {
            (k == "DECLOUD_ORCHESTRATOR_SIWE_DOMAINS").then(String::new)
        })
        .unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)), "{e}");
    }

    #[test]
    fn attestation_section_is_read_checked_and_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.toml");
        let addr = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        std::fs::write(
            &path,
            format!("[attestation]\nrpc_url = \"http://127.0.0.1:8545\"\nanchor = \"{addr}\"\nbatch_size = 8\n"),
        )
        .unwrap();
        let args = Args {
            config: Some(path.clone()),
            ..Args::default()
        };
        let a = Config::resolve(&args, |_| None)
            .unwrap()
            .attestation
            .unwrap();
        assert_eq!((a.batch_size, a.batch_interval_secs), (8, 600));
        let a = Config::resolve(&args, |k| {
            (k == "DECLOUD_ORCHESTRATOR_ATTESTATION_BATCH_INTERVAL_SECS").then(|| "30".into())
        })
        .unwrap()
        .attestation
        .unwrap();
        assert_eq!((a.batch_size, a.batch_interval_secs), (8, 30));
        let e = Config::resolve(&args, |k| {
            (k == "DECLOUD_ORCHESTRATOR_ATTESTATION_BATCH_SIZE").then(|| "many".into())
        })
        .unwrap_err();
        assert!(e.to_string().contains("ATTESTATION_BATCH_SIZE"), "{e}");
        std::fs::write(&path, "[attestation]\nrpc_url = \"x\"\nanchor = \"0x12\"\n").unwrap();
        let e = Config::resolve(&args, |_| None).unwrap_err();
        assert!(e.to_string().contains("attestation.anchor"), "{e}");
        // The key is never part of the file.
        std::fs::write(
            &path,
            format!(
                "[attestation]\nrpc_url = \"x\"\nanchor = \"{addr}\"\nprivate_key = \"0x01\"\n"
            ),
        )
        .unwrap();
        assert!(matches!(
            Config::resolve(&args, |_| None),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn repair_needs_the_storage_market_and_never_holds_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.toml");
        let args = Args {
            config: Some(path.clone()),
            ..Args::default()
        };
        let chain = |market: &str| {
            format!(
                "[chain]\nrpc_url = \"http://127.0.0.1:1\"\nnode_registry = \"{a}\"\n\
                 lease_escrow = \"{a}\"\nimage = \"base\"\n{market}",
                a = alloy::primitives::Address::repeat_byte(1)
            )
        };
        let market = format!(
            "storage_market = \"{}\"\n",
            alloy::primitives::Address::repeat_byte(2)
        );
        std::fs::write(
            &path,
            format!("{}[repair]\nkey_file = \"/etc/r.key\"\n", chain(&market)),
        )
        .unwrap();
        let repair = Config::resolve(&args, |_| None).unwrap().repair.unwrap();
        assert_eq!(repair.key_file, Some(PathBuf::from("/etc/r.key")));
        assert_eq!(
            (repair.watch_interval_secs, repair.offline_after_secs),
            (30, 1800)
        );
        std::fs::write(
            &path,
            format!(
                "{}[repair]\nwatch_interval_secs = 5\noffline_after_secs = 60\n\
                 retry_base_secs = 2\nretry_max_secs = 10\n",
                chain(&market)
            ),
        )
        .unwrap();
        let repair = Config::resolve(&args, |_| None).unwrap().repair.unwrap();
        assert_eq!(
            (
                repair.watch_interval_secs,
                repair.offline_after_secs,
                repair.retry_base_secs,
                repair.retry_max_secs
            ),
            (5, 60, 2, 10)
        );
        std::fs::write(
            &path,
            format!(
                "{}[repair]\nretry_base_secs = 20\nretry_max_secs = 10\n",
                chain(&market)
            ),
        )
        .unwrap();
        let e = Config::resolve(&args, |_| None).unwrap_err();
        assert!(e.to_string().contains("retry_max_secs"), "{e}");
        std::fs::write(&path, format!("{}[repair]\n", chain(""))).unwrap();
        let e = Config::resolve(&args, |_| None).unwrap_err();
        assert!(e.to_string().contains("storage_market"), "{e}");
        std::fs::write(&path, "[repair]\n").unwrap();
        assert!(Config::resolve(&args, |_| None).is_err());
        // The key itself is never part of the file.
        std::fs::write(
            &path,
            format!("{}[repair]\nprivate_key = \"0x01\"\n", chain(&market)),
        )
        .unwrap();
        assert!(matches!(
            Config::resolve(&args, |_| None),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn content_section_names_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.toml");
        let args = Args {
            config: Some(path.clone()),
            ..Args::default()
        };
        std::fs::write(&path, "[content]\ndir = \"/var/lib/decloud/content\"\n").unwrap();
        let content = Config::resolve(&args, |_| None).unwrap().content.unwrap();
        assert_eq!(
            content.dir.as_deref(),
            Some(std::path::Path::new("/var/lib/decloud/content"))
        );
        std::fs::write(&path, "[content]\n").unwrap();
        let e = Config::resolve(&args, |_| None).unwrap_err();
        assert!(e.to_string().contains("[content] needs dir"), "{e}");
    }

    #[test]
    fn chain_section_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.toml");
        let addr = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        std::fs::write(
            &path,
            format!("[chain]\nrpc_url = \"http://127.0.0.1:8545\"\nnode_registry = \"{addr}\"\nlease_escrow = \"{addr}\"\nimage = \"debian-12\"\n"),
        )
        .unwrap();
        let args = Args {
            config: Some(path.clone()),
            ..Args::default()
        };
        let chain = Config::resolve(&args, |_| None).unwrap().chain.unwrap();
        assert_eq!(
            (chain.confirmations, chain.start_block, chain.image.as_str()),
            (64, 0, "debian-12")
        );
        assert_eq!(
            chain.reconnect_grace_secs, 90,
            "above the agent's 60 s backoff cap"
        );
        assert_eq!(chain.sla_window_secs, 1800, "30 minutes by default");
        for bad in ["0", "-5"] {
            std::fs::write(
                &path,
                format!("[chain]\nrpc_url = \"x\"\nnode_registry = \"{addr}\"\nlease_escrow = \"{addr}\"\nimage = \"i\"\nsla_window_secs = {bad}\n"),
            )
            .unwrap();
            let e = Config::resolve(&args, |_| None).unwrap_err();
            assert!(e.to_string().contains("chain.sla_window_secs"), "{e}");
        }
        std::fs::write(
            &path,
            format!("[chain]\nrpc_url = \"x\"\nnode_registry = \"{addr}\"\nlease_escrow = \"{addr}\"\nimage = \"i\"\nreconnect_grace_secs = -1\n"),
        )
        .unwrap();
        let e = Config::resolve(&args, |_| None).unwrap_err();
        assert!(e.to_string().contains("chain.reconnect_grace_secs"), "{e}");
        std::fs::write(
            &path,
            "[chain]\nrpc_url = \"x\"\nnode_registry = \"0x12\"\nlease_escrow = \"0x12\"\nimage = \"i\"\n",
        )
        .unwrap();
        let e = Config::resolve(&args, |_| None).unwrap_err();
        assert!(e.to_string().contains("chain.node_registry"), "{e}");
        std::fs::write(
            &path,
            format!("[chain]\nrpc_url = \"x\"\nnode_registry = \"{addr}\"\nlease_escrow = \"{addr}\"\ntemplate_market = \"0x12\"\nimage = \"i\"\n"),
        )
        .unwrap();
        let e = Config::resolve(&args, |_| None).unwrap_err();
        assert!(e.to_string().contains("chain.template_market"), "{e}");
        std::fs::write(
            &path,
            format!("[chain]\nrpc_url = \"x\"\nnode_registry = \"{addr}\"\nlease_escrow = \"{addr}\"\nstorage_market = \"0x12\"\nimage = \"i\"\n"),
        )
        .unwrap();
        let e = Config::resolve(&args, |_| None).unwrap_err();
        assert!(e.to_string().contains("chain.storage_market"), "{e}");
        let market = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0";
        std::fs::write(
            &path,
            format!("[chain]\nrpc_url = \"x\"\nnode_registry = \"{addr}\"\nlease_escrow = \"{addr}\"\nstorage_market = \"{market}\"\nimage = \"i\"\n"),
        )
        .unwrap();
        let chain = Config::resolve(&args, |_| None).unwrap().chain.unwrap();
        assert_eq!(
            (chain.storage_market.as_deref(), chain.template_market),
            (Some(market), None)
        );
    }
}
