//! Configuration of the `decloud-indexer` binary, resolved in one place with one precedence:
//! defaults → file → environment → flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::Address;
use clap::Parser;
use decloud_runtime::config::{EnvVar, Layers};
use serde::{Deserialize, Serialize};

use decloud_sdk::deployments::{Deployment, Networks};

use crate::events::ContractKind;
use crate::follower::FollowerConfig;

/// Errors of configuration and deployments loading.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The deployments file is not what the indexer expects.
    #[error("invalid deployments file {path}: {message}")]
    Deployments {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A value is out of range or missing.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<decloud_runtime::config::ConfigError> for ConfigError {
    fn from(e: decloud_runtime::config::ConfigError) -> Self {
        use decloud_runtime::config::ConfigError as Resolver;
        match e {
            Resolver::Read { path, source } => Self::Read { path, source },
            Resolver::Parse { path, source } => Self::Parse {
                path,
                message: source.to_string(),
            },
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// Command-line flags; each has an environment variable of the same name in
/// `DECLOUD_INDEXER_*` ([`Config::resolve`] reads them). Unset flags leave the environment's, the
/// file's or the default value in place.
#[derive(Debug, Clone, Default, Parser, Serialize)]
#[command(
    name = "decloud-indexer",
    version,
    about = "Index DeCloud's contracts and serve them over GraphQL"
)]
pub struct Args {
    /// TOML config file [env: DECLOUD_INDEXER_CONFIG].
    #[arg(long)]
    // Not a setting: it names the file layer.
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://FILE or postgres://USER@HOST/DB. [env: DECLOUD_INDEXER_DATABASE_URL]
    #[arg(long)]
    pub database_url: Option<String>,
    /// JSON-RPC URL of the chain. [env: DECLOUD_INDEXER_RPC_URL]
    #[arg(long)]
    pub rpc_url: Option<String>,
    /// Chain id; selects deployments/<chainId>.json and the network's finality defaults. [env: DECLOUD_INDEXER_CHAIN_ID]
    #[arg(long)]
    pub chain_id: Option<u64>,
    /// Address the HTTP server listens on. [env: DECLOUD_INDEXER_LISTEN]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory holding <chainId>.json deployment files. [env: DECLOUD_INDEXER_DEPLOYMENTS_DIR]
    #[arg(long)]
    pub deployments_dir: Option<PathBuf>,
    /// Blocks below the head before a block is indexed. [env: DECLOUD_INDEXER_CONFIRMATIONS]
    #[arg(long)]
    pub confirmations: Option<u64>,
    /// Blocks that may still be reorganised. [env: DECLOUD_INDEXER_REORG_WINDOW]
    #[arg(long)]
    pub reorg_window: Option<u64>,
    /// Log format: text or json. [env: DECLOUD_INDEXER_LOG_FORMAT]
    #[arg(long)]
    pub log_format: Option<String>,
}

/// The config file's schema; every key is optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Config::database_url`].
    pub database_url: Option<String>,
    /// See [`Config::rpc_url`].
    pub rpc_url: Option<String>,
    /// See [`Config::chain_id`].
    pub chain_id: Option<u64>,
    /// See [`Config::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`Config::deployments_dir`].
    pub deployments_dir: Option<PathBuf>,
    /// See [`Config::confirmations`].
    pub confirmations: Option<u64>,
    /// See [`Config::reorg_window`].
    pub reorg_window: Option<u64>,
    /// See [`Config::poll_interval_ms`].
    pub poll_interval_ms: Option<u64>,
    /// See [`Config::max_range`].
    pub max_range: Option<u64>,
    /// See [`Config::log_format`].
    pub log_format: Option<String>,
    /// Contracts to index instead of the deployments file: name → address and start block.
    pub contracts: Option<BTreeMap<String, ContractEntry>>,
}

/// A contract's address and the block to start reading it from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct ContractEntry {
    /// The contract's address.
    pub address: Address,
    /// Its deploy block.
    #[serde(
        default,
        alias = "blockNumber",
        alias = "deployBlock",
        alias = "startBlock"
    )]
    pub start_block: u64,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Database URL.
    pub database_url: String,
    /// JSON-RPC URL.
    pub rpc_url: String,
    /// Chain id.
    pub chain_id: u64,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Where `<chainId>.json` deployment files are.
    pub deployments_dir: PathBuf,
    /// Confirmation depth.
    pub confirmations: u64,
    /// Reorg window.
    pub reorg_window: u64,
    /// Poll interval once caught up, milliseconds.
    pub poll_interval_ms: u64,
    /// Largest `eth_getLogs` range.
    pub max_range: u64,
    /// `text` or `json`.
    pub log_format: String,
    /// Contracts given in the config file (otherwise read from the deployments file).
    pub contracts: Option<BTreeMap<String, ContractEntry>>,
}

/// Finality defaults of a network: (confirmations, reorg window). Polygon PoS saw a 157-block reorg
/// in 2023, hence its 256-block window; a local anvil chain reorganises only when told to.
pub fn network_defaults(chain_id: u64) -> (u64, u64) {
    match chain_id {
        137 | 80002 => (32, 256),
        1 => (12, 64),
        _ => (0, 128),
    }
}

/// The indexer's environment variables and the keys they set (the flags' names).
const ENV: &[EnvVar] = &[
    EnvVar::string("DECLOUD_INDEXER_DATABASE_URL", "database_url"),
    EnvVar::string("DECLOUD_INDEXER_RPC_URL", "rpc_url"),
    EnvVar::unsigned("DECLOUD_INDEXER_CHAIN_ID", "chain_id"),
    EnvVar::with("DECLOUD_INDEXER_LISTEN", "listen", |v| {
        v.parse::<SocketAddr>()
            .map(|a| a.to_string().into())
            .map_err(|_| "expected an address such as 127.0.0.1:8000".into())
    }),
    EnvVar::string("DECLOUD_INDEXER_DEPLOYMENTS_DIR", "deployments_dir"),
    EnvVar::unsigned("DECLOUD_INDEXER_CONFIRMATIONS", "confirmations"),
    EnvVar::unsigned("DECLOUD_INDEXER_REORG_WINDOW", "reorg_window"),
    EnvVar::string("DECLOUD_INDEXER_LOG_FORMAT", "log_format"),
];

/// Names the config file when `--config` does not.
const CONFIG_ENV: &str = "DECLOUD_INDEXER_CONFIG";

impl Config {
    /// Resolves defaults (the network's finality from `deployments/networks.toml`, else
    /// [`network_defaults`]) → file (`--config`, else `DECLOUD_INDEXER_CONFIG`) → environment →
    /// flags, from the process environment.
    pub fn resolve(args: &Args) -> Result<Self, ConfigError> {
        Self::resolve_with(args, |name| std::env::var(name).ok())
    }

    /// [`Self::resolve`] with the environment seen through `env`. An empty variable counts as
    /// unset.
    pub fn resolve_with(
        args: &Args,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let mut layers = Layers::new();
        if let Some(path) = args
            .config
            .clone()
            .or_else(|| env(CONFIG_ENV).map(PathBuf::from))
        {
            layers = layers.file(&path)?;
        }
        let settings: FileConfig = layers.env(ENV, env)?.layer(args)?.extract()?;
        let chain_id = settings.chain_id.unwrap_or(31337);
        let dir = settings
            .deployments_dir
            .clone()
            .unwrap_or_else(|| "deployments".into());
        let finality =
            network_finality(&dir, chain_id)?.unwrap_or_else(|| network_defaults(chain_id));
        Self::merge(settings, &Args::default(), finality)
    }

    /// The merge itself, separated from file reading for tests; `finality` is the network's
    /// default (confirmations, reorg window).
    pub fn merge(file: FileConfig, args: &Args, finality: (u64, u64)) -> Result<Self, ConfigError> {
        let chain_id = args.chain_id.or(file.chain_id).unwrap_or(31337);
        let (confirmations, reorg_window) = finality;
        let config = Self {
            database_url: args
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or_else(|| "sqlite://decloud-indexer.db".into()),
            rpc_url: args
                .rpc_url
                .clone()
                .or(file.rpc_url)
                .unwrap_or_else(|| "http://127.0.0.1:8545".into()),
            chain_id,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8000))),
            deployments_dir: args
                .deployments_dir
                .clone()
                .or(file.deployments_dir)
                .unwrap_or_else(|| "deployments".into()),
            confirmations: args
                .confirmations
                .or(file.confirmations)
                .unwrap_or(confirmations),
            reorg_window: args
                .reorg_window
                .or(file.reorg_window)
                .unwrap_or(reorg_window),
            poll_interval_ms: file.poll_interval_ms.unwrap_or(if chain_id == 31337 {
                200
            } else {
                2_000
            }),
            max_range: file.max_range.unwrap_or(100_000),
            log_format: args
                .log_format
                .clone()
                .or(file.log_format)
                .unwrap_or_else(|| "text".into()),
            contracts: file.contracts,
        };
        if config.reorg_window < config.confirmations.max(1) {
            return Err(ConfigError::Invalid(format!(
                "reorg_window ({}) must be at least 1 and at least confirmations ({})",
                config.reorg_window, config.confirmations
            )));
        }
        if config.reorg_window == 0 {
            return Err(ConfigError::Invalid(
                "reorg_window must be at least 1".into(),
            ));
        }
        if config.max_range == 0 {
            return Err(ConfigError::Invalid("max_range must be at least 1".into()));
        }
        if !matches!(config.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(format!(
                "log_format must be text or json, not {:?}",
                config.log_format
            )));
        }
        Ok(config)
    }

    /// The contracts to index with their start blocks: from the config file, or else from
    /// `<deployments_dir>/<chainId>.json`.
    pub fn contracts(&self) -> Result<Vec<(ContractKind, ContractEntry)>, ConfigError> {
        let entries = match &self.contracts {
            Some(c) => c.clone(),
            None => load_deployments(&self.deployments_dir, self.chain_id)?,
        };
        let mut out = Vec::new();
        for (name, entry) in entries {
            if let Ok(kind) = name.parse::<ContractKind>() {
                out.push((kind, entry));
            }
        }
        if out.is_empty() {
            return Err(ConfigError::Invalid("no DeCloud contract to index".into()));
        }
        Ok(out)
    }

    /// The follower configuration for these contracts.
    pub fn follower(
        &self,
        name: &str,
        contracts: &[(ContractKind, ContractEntry)],
    ) -> FollowerConfig {
        let start = contracts
            .iter()
            .map(|(_, e)| e.start_block)
            .min()
            .unwrap_or(0);
        let mut f = FollowerConfig::new(
            name,
            contracts.iter().map(|(_, e)| e.address).collect(),
            start,
        );
        f.confirmations = self.confirmations;
        f.reorg_window = self.reorg_window;
        f.poll_interval = Duration::from_millis(self.poll_interval_ms);
        f.max_range = self.max_range;
        f
    }
}

/// The contracts of `deployments/<chainId>.json` (the SDK's deployment record), each starting at
/// the deployment's first block.
pub fn load_deployments(
    dir: &Path,
    chain_id: u64,
) -> Result<BTreeMap<String, ContractEntry>, ConfigError> {
    let deployment = Deployment::load(dir, chain_id).map_err(|e| ConfigError::Deployments {
        path: Deployment::path(dir, chain_id),
        message: e.to_string(),
    })?;
    Ok(deployment_contracts(&deployment))
}

/// The DeCloud contracts of a deployment record, by name.
pub fn deployment_contracts(deployment: &Deployment) -> BTreeMap<String, ContractEntry> {
    let c = &deployment.contracts;
    [
        (ContractKind::NodeRegistry, c.node_registry),
        (ContractKind::OperatorStaking, c.operator_staking),
        (ContractKind::LeaseEscrow, c.lease_escrow),
        (ContractKind::TemplateMarket, c.template_market),
        (ContractKind::AttestationAnchor, c.attestation_anchor),
        (ContractKind::StorageMarket, c.storage_market),
    ]
    .into_iter()
    .map(|(kind, d)| {
        let entry = ContractEntry {
            address: d.address,
            start_block: d.block,
        };
        (kind.name().to_owned(), entry)
    })
    .collect()
}

/// The finality settings of `deployments/networks.toml` for a chain, if the file lists it.
pub fn network_finality(dir: &Path, chain_id: u64) -> Result<Option<(u64, u64)>, ConfigError> {
    let path = dir.join("networks.toml");
    if !path.is_file() {
        return Ok(None);
    }
    let networks = Networks::load(&path).map_err(|e| ConfigError::Deployments {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(networks
        .by_chain_id(chain_id)
        .map(|(_, n)| (n.confirmations, n.reorg_window)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_defaults_file_then_env_and_flags() {
        let file: FileConfig = toml::from_str(
            r#"
            database_url = "sqlite://file.db"
            rpc_url = "http://file:8545"
            chain_id = 137
            reorg_window = 300
            "#,
        )
        .unwrap();
        let args = Args {
            rpc_url: Some("http://flag:8545".into()),
            ..Args::default()
        };
        let c = Config::merge(file, &args, network_defaults(137)).unwrap();
        assert_eq!(c.database_url, "sqlite://file.db");
        assert_eq!(c.rpc_url, "http://flag:8545");
        assert_eq!(c.chain_id, 137);
        assert_eq!(c.reorg_window, 300);
        // Polygon's confirmation default applies where nothing overrides it.
        assert_eq!(c.confirmations, 32);
        let d = Config::merge(
            FileConfig::default(),
            &Args::default(),
            network_defaults(31337),
        )
        .unwrap();
        assert_eq!(d.chain_id, 31337);
        assert_eq!(d.confirmations, 0);
        assert_eq!(d.listen, SocketAddr::from(([127, 0, 0, 1], 8000)));
    }

    #[test]
    fn env_sits_between_the_file_and_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("indexer.toml");
        std::fs::write(
            &file,
            "rpc_url = \"http://file:8545\"\ndatabase_url = \"sqlite://file.db\"\nmax_range = 7\n",
        )
        .unwrap();
        let no_networks = dir.path().display().to_string();
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            let no_networks = no_networks.clone();
            let file = file.display().to_string();
            move |name: &str| match name {
                "DECLOUD_INDEXER_DEPLOYMENTS_DIR" => Some(no_networks.clone()),
                "DECLOUD_INDEXER_CONFIG" => Some(file.clone()),
                _ => pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string()),
            }
        };
        let vars = &[
            ("DECLOUD_INDEXER_RPC_URL", "http://env:8545"),
            ("DECLOUD_INDEXER_CHAIN_ID", "80002"),
            ("DECLOUD_INDEXER_LISTEN", ""),
        ];
        let c = Config::resolve_with(&Args::default(), env(vars)).unwrap();
        assert_eq!(c.rpc_url, "http://env:8545"); // env over file
        assert_eq!(c.database_url, "sqlite://file.db"); // file (named by DECLOUD_INDEXER_CONFIG)
        assert_eq!(c.max_range, 7); // file only
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8000))); // empty env: default
        // Amoy's finality defaults follow the chain id the environment chose.
        assert_eq!((c.confirmations, c.reorg_window), (32, 256));
        let args = Args::try_parse_from(["decloud-indexer", "--rpc-url", "http://flag:1"]).unwrap();
        let c = Config::resolve_with(&args, env(vars)).unwrap();
        assert_eq!(c.rpc_url, "http://flag:1"); // flag over env
        let e = Config::resolve_with(&Args::default(), env(&[("DECLOUD_INDEXER_CHAIN_ID", "x")]))
            .unwrap_err();
        assert!(e.to_string().contains("DECLOUD_INDEXER_CHAIN_ID"), "{e}");
        std::fs::write(&file, "unknown_key = 1\n").unwrap();
        let e = Config::resolve_with(&Args::default(), env(&[])).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
    }

    #[test]
    fn rejects_bad_values() {
        let args = Args {
            reorg_window: Some(0),
            ..Args::default()
        };
        assert!(Config::merge(FileConfig::default(), &args, (0, 128)).is_err());
        let args = Args {
            reorg_window: Some(10),
            ..Args::default()
        };
        assert!(Config::merge(FileConfig::default(), &args, (32, 256)).is_err());
        let args = Args {
            log_format: Some("xml".into()),
            ..Args::default()
        };
        assert!(Config::merge(FileConfig::default(), &args, (0, 128)).is_err());
        assert!(toml::from_str::<FileConfig>("unknown_key = 1").is_err());
    }

    #[test]
    fn reads_the_repository_networks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployments");
        assert_eq!(network_finality(&dir, 137).unwrap(), Some((32, 256)));
        assert_eq!(
            network_finality(&dir, 31337).unwrap().map(|f| f.1),
            Some(64)
        );
        assert_eq!(network_finality(&dir, 5).unwrap(), None);
        let missing = tempfile::tempdir().unwrap();
        assert_eq!(network_finality(missing.path(), 137).unwrap(), None);
        assert!(load_deployments(missing.path(), 31337).is_err());
    }
}
