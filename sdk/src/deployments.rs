//! Where DeCloud runs: `deployments/networks.toml` (one entry per network) and
//! `deployments/<chainId>.json` (what was deployed there).
//!
//! `networks.toml`:
//! ```toml
//! [networks.amoy]
//! chain_id = 80002
//! rpc_url_env = "DECLOUD_AMOY_RPC_URL"   # the RPC URL comes from this variable…
//! # rpc_url = "https://…"                # …or is written here (the variable wins)
//! usdc = "0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582"  # or `mock_usdc = true` on local chains
//! confirmations = 16   # blocks an event must be buried under before services act on it
//! reorg_window = 256   # recent block hashes the chain follower keeps to detect reorgs
//! storage_epoch_blocks = 1800   # optional: StorageMarket epoch length in blocks (default 43200)
//! ```

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use alloy::primitives::{Address, B256, TxHash};
use serde::{Deserialize, Serialize};
use url::Url;

/// Errors reading or writing the deployment configuration and records.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentsError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `networks.toml` is not valid.
    #[error("invalid {path}: {message}")]
    InvalidNetworks {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A deployment record is not valid JSON of the expected shape.
    #[error("invalid deployment record {path}: {source}")]
    InvalidDeployment {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// No network of that name is configured.
    #[error("unknown network {name:?}; configured networks: {known}")]
    UnknownNetwork {
        /// The name asked for.
        name: String,
        /// The configured names, comma separated.
        known: String,
    },
    /// The network's RPC URL is neither configured nor set in its environment variable.
    #[error("no RPC URL for network {network:?}: set {env}")]
    MissingRpcUrl {
        /// The network.
        network: String,
        /// The environment variable to set.
        env: String,
    },
    /// An RPC URL does not parse.
    #[error("invalid RPC URL {url:?}: {source}")]
    InvalidRpcUrl {
        /// The URL.
        url: String,
        /// The cause.
        source: url::ParseError,
    },
    /// Nothing was deployed on that chain yet.
    #[error("no deployment for chain {chain_id}: {path} does not exist (run `decloud deploy`)")]
    NotDeployed {
        /// The chain.
        chain_id: u64,
        /// The file looked for.
        path: PathBuf,
    },
    /// A deployment record belongs to another chain than its file name says.
    #[error("{path} records chain {found}, expected {expected}")]
    ChainMismatch {
        /// The file.
        path: PathBuf,
        /// The chain its name says.
        expected: u64,
        /// The chain it records.
        found: u64,
    },
}

/// One network DeCloud can be deployed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Chain id (31337 anvil, 80002 Polygon Amoy, 137 Polygon).
    pub chain_id: u64,
    /// RPC URL written in the file (public endpoints, or the local anvil).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_url: Option<String>,
    /// Environment variable holding the RPC URL; it wins over `rpc_url` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_url_env: Option<String>,
    /// The USDC token of the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usdc: Option<Address>,
    /// Deploy a MockUSDC instead (local chains only).
    #[serde(default)]
    pub mock_usdc: bool,
    /// Blocks an event must be buried under before services act on it.
    pub confirmations: u64,
    /// How many recent block hashes a chain follower keeps to detect and undo reorgs.
    pub reorg_window: u64,
    /// Length of a StorageMarket epoch in blocks (how often storage nodes prove and get paid);
    /// absent: [`crate::deploy::DEFAULT_STORAGE_EPOCH_BLOCKS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_epoch_blocks: Option<u64>,
    /// The Groth16 verifier StorageMarket trusts on this network: one generated from the keys of a
    /// setup ceremony and deployed before the system (see `prover/README.md`). Local chains may
    /// leave it out and get the development verifier; every other chain must name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<Address>,
    /// keccak256 of that verifier's runtime code, published by the ceremony: the deployment
    /// refuses a verifier whose code differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_code_hash: Option<B256>,
}

impl Network {
    /// The RPC URL: the environment variable `rpc_url_env` when set and not empty, else `rpc_url`.
    pub fn rpc_url(&self, name: &str) -> Result<Url, DeploymentsError> {
        self.rpc_url_with(name, |var| std::env::var(var).ok())
    }

    /// [`Self::rpc_url`] with an explicit environment lookup (for tests).
    pub fn rpc_url_with(
        &self,
        name: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Url, DeploymentsError> {
        let from_env = self
            .rpc_url_env
            .as_deref()
            .and_then(&env)
            .filter(|v| !v.trim().is_empty());
        let url = from_env.or_else(|| self.rpc_url.clone()).ok_or_else(|| {
            DeploymentsError::MissingRpcUrl {
                network: name.to_string(),
                env: self
                    .rpc_url_env
                    .clone()
                    .unwrap_or_else(|| "rpc_url in networks.toml".to_string()),
            }
        })?;
        let trimmed = url.trim();
        Url::parse(trimmed).map_err(|source| DeploymentsError::InvalidRpcUrl {
            url: trimmed.to_string(),
            source,
        })
    }
}

/// The contents of `deployments/networks.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Networks {
    /// Networks by name.
    pub networks: BTreeMap<String, Network>,
}

impl Networks {
    /// Only the local development chain, `anvil`, at `rpc_url`: what `decloud dev` runs.
    pub fn local(rpc_url: &Url, storage_epoch_blocks: u64) -> Self {
        let anvil = Network {
            chain_id: 31337,
            rpc_url: Some(rpc_url.to_string()),
            rpc_url_env: None,
            usdc: None,
            mock_usdc: true,
            confirmations: 0,
            reorg_window: 64,
            storage_epoch_blocks: Some(storage_epoch_blocks),
            verifier: None,
            verifier_code_hash: None,
        };
        Self {
            networks: BTreeMap::from([("anvil".to_string(), anvil)]),
        }
    }

    /// Writes the file (through a temporary file, so a reader never sees half of it).
    pub fn save(&self, path: &Path) -> Result<(), DeploymentsError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DeploymentsError::Io { path, source }
        };
        let text = format!(
            "# Written by `decloud dev` for the chain it runs; the CLI reads it with \
             --deployments-dir.\n{}",
            toml::to_string(self).expect("networks always serialize")
        );
        let tmp = path.with_extension("toml.tmp");
        fs::write(&tmp, text).map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))
    }

    /// Reads and validates a `networks.toml`.
    pub fn load(path: &Path) -> Result<Self, DeploymentsError> {
        let text = fs::read_to_string(path).map_err(|source| DeploymentsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates the text of a `networks.toml`; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, DeploymentsError> {
        let invalid = |message: String| DeploymentsError::InvalidNetworks {
            path: path.to_path_buf(),
            message,
        };
        let networks: Self = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut chain_ids = BTreeMap::new();
        for (name, network) in &networks.networks {
            if let Some(other) = chain_ids.insert(network.chain_id, name) {
                return Err(invalid(format!(
                    "networks {other:?} and {name:?} share chain id {}",
                    network.chain_id
                )));
            }
            match (network.usdc, network.mock_usdc) {
                (Some(_), true) => {
                    return Err(invalid(format!(
                        "network {name:?} sets both usdc and mock_usdc"
                    )));
                }
                (None, false) => {
                    return Err(invalid(format!(
                        "network {name:?} needs usdc or mock_usdc = true"
                    )));
                }
                _ => {}
            }
            if network.rpc_url.is_none() && network.rpc_url_env.is_none() {
                return Err(invalid(format!(
                    "network {name:?} needs rpc_url or rpc_url_env"
                )));
            }
            if network.reorg_window < network.confirmations {
                return Err(invalid(format!(
                    "network {name:?}: reorg_window ({}) is below confirmations ({})",
                    network.reorg_window, network.confirmations
                )));
            }
            if network.storage_epoch_blocks == Some(0) {
                return Err(invalid(format!(
                    "network {name:?}: storage_epoch_blocks must be at least 1"
                )));
            }
        }
        Ok(networks)
    }

    /// The network called `name`.
    pub fn get(&self, name: &str) -> Result<&Network, DeploymentsError> {
        self.networks
            .get(name)
            .ok_or_else(|| DeploymentsError::UnknownNetwork {
                name: name.to_string(),
                known: self.networks.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// The network with chain id `chain_id`, with its name.
    pub fn by_chain_id(&self, chain_id: u64) -> Option<(&str, &Network)> {
        self.networks
            .iter()
            .find(|(_, n)| n.chain_id == chain_id)
            .map(|(name, n)| (name.as_str(), n))
    }
}

/// One deployed contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContractDeployment {
    /// Its address.
    #[serde(with = "checksummed")]
    pub address: Address,
    /// The transaction that created it.
    pub tx_hash: TxHash,
    /// The block that transaction is in.
    pub block: u64,
}

/// The deployed contracts of one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Contracts {
    /// The MockUSDC, on local chains only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock_usdc: Option<ContractDeployment>,
    /// NodeRegistry.
    pub node_registry: ContractDeployment,
    /// OperatorStaking.
    pub operator_staking: ContractDeployment,
    /// TemplateMarket.
    pub template_market: ContractDeployment,
    /// LeaseEscrow.
    pub lease_escrow: ContractDeployment,
    /// AttestationAnchor.
    pub attestation_anchor: ContractDeployment,
    /// Groth16Verifier: the storage-proof verifier StorageMarket calls.
    pub groth16_verifier: ContractDeployment,
    /// StorageMarket.
    pub storage_market: ContractDeployment,
}

/// Who holds the roles granted at deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Roles {
    /// DEFAULT_ADMIN_ROLE of every contract (governance).
    #[serde(with = "checksummed")]
    pub admin: Address,
    /// Receives platform fees and template platform earnings.
    #[serde(with = "checksummed")]
    pub treasury: Address,
    /// LeaseEscrow ARBITER_ROLE (terminates leases of failed nodes).
    #[serde(with = "checksummed")]
    pub arbiter: Address,
    /// AttestationAnchor ANCHOR_ROLE.
    #[serde(with = "checksummed")]
    pub anchor: Address,
    /// LeaseEscrow PAUSER_ROLE.
    #[serde(with = "checksummed")]
    pub pauser: Address,
}

/// Makes `dir` a deployments directory the CLI can use for the local chain at `rpc_url`: writes
/// its `networks.toml` (naming only `anvil`) when it has none; an existing one is kept as it is
/// (the repository's own names anvil at its default port). Returns the path when it wrote one.
pub fn ensure_local_networks(
    dir: &Path,
    rpc_url: &Url,
    storage_epoch_blocks: u64,
) -> Result<Option<PathBuf>, DeploymentsError> {
    let path = dir.join("networks.toml");
    if path.exists() {
        return Ok(None);
    }
    fs::create_dir_all(dir).map_err(|source| DeploymentsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Networks::local(rpc_url, storage_epoch_blocks).save(&path)?;
    Ok(Some(path))
}

/// `deployments/<chainId>.json`: what was deployed on one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    /// The chain.
    pub chain_id: u64,
    /// The network's name in `networks.toml`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Who sent the deployment transactions.
    #[serde(with = "checksummed")]
    pub deployer: Address,
    /// The USDC the contracts use.
    #[serde(with = "checksummed")]
    pub usdc: Address,
    /// The first block of the deployment: where a chain follower starts.
    pub deploy_block: u64,
    /// The contracts.
    pub contracts: Contracts,
    /// The role holders.
    pub roles: Roles,
    /// Deployment transactions that are not contract creations (role grants), in order.
    #[serde(default)]
    pub setup_txs: Vec<TxHash>,
}

impl Deployment {
    /// The path of the record of `chain_id` in `dir`.
    pub fn path(dir: &Path, chain_id: u64) -> PathBuf {
        dir.join(format!("{chain_id}.json"))
    }

    /// Reads the record of `chain_id` from `dir`.
    pub fn load(dir: &Path, chain_id: u64) -> Result<Self, DeploymentsError> {
        let path = Self::path(dir, chain_id);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DeploymentsError::NotDeployed { chain_id, path });
            }
            Err(source) => return Err(DeploymentsError::Io { path, source }),
        };
        let deployment: Self =
            serde_json::from_str(&text).map_err(|source| DeploymentsError::InvalidDeployment {
                path: path.clone(),
                source,
            })?;
        if deployment.chain_id != chain_id {
            return Err(DeploymentsError::ChainMismatch {
                path,
                expected: chain_id,
                found: deployment.chain_id,
            });
        }
        Ok(deployment)
    }

    /// Writes the record to `dir/<chainId>.json` atomically (a crash leaves the old file or the new
    /// one, never half of one) and returns its path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, DeploymentsError> {
        fs::create_dir_all(dir).map_err(|source| DeploymentsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = Self::path(dir, self.chain_id);
        let tmp = dir.join(format!(".{}.json.tmp", self.chain_id));
        let mut json = serde_json::to_string_pretty(self).expect("a deployment always serializes");
        json.push('\n');
        fs::write(&tmp, json).map_err(|source| DeploymentsError::Io {
            path: tmp.clone(),
            source,
        })?;
        fs::rename(&tmp, &path).map_err(|source| DeploymentsError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// Addresses in deployment records are written EIP-55 checksummed, for people who read them.
mod checksummed {
    use alloy::primitives::Address;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        address: &Address,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&address.to_checksum(None))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Address, D::Error> {
        Address::deserialize(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_networks() -> Networks {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployments/networks.toml");
        Networks::load(&path).expect("the committed networks.toml is valid")
    }

    #[test]
    fn a_local_networks_file_is_written_once_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let url: Url = "http://127.0.0.1:18545".parse().unwrap();
        let written = ensure_local_networks(dir.path(), &url, 20).unwrap();
        let path = dir.path().join("networks.toml");
        assert_eq!(written.as_deref(), Some(path.as_path()));
        let networks = Networks::load(&path).unwrap();
        let anvil = networks.get("anvil").unwrap();
        assert_eq!(anvil.chain_id, 31337);
        assert_eq!(anvil.rpc_url("anvil").unwrap(), url);
        // An existing file is the operator's: left alone.
        std::fs::write(&path, "# mine\n").unwrap();
        assert_eq!(ensure_local_networks(dir.path(), &url, 20).unwrap(), None);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
    }

    #[test]
    fn committed_networks_toml_has_the_three_networks() {
        let networks = repo_networks();
        let anvil = networks.get("anvil").unwrap();
        assert_eq!(anvil.chain_id, 31337);
        assert!(anvil.mock_usdc);
        assert_eq!(
            anvil.rpc_url_with("anvil", |_| None).unwrap().as_str(),
            "http://127.0.0.1:8545/"
        );

        let amoy = networks.get("amoy").unwrap();
        assert_eq!(amoy.chain_id, 80002);
        assert_eq!(
            amoy.usdc,
            Some(
                "0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582"
                    .parse()
                    .unwrap()
            )
        );
        assert_eq!(amoy.rpc_url_env.as_deref(), Some("DECLOUD_AMOY_RPC_URL"));

        let polygon = networks.get("polygon").unwrap();
        assert_eq!(polygon.chain_id, 137);
        assert_eq!(
            polygon.usdc,
            Some(
                "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359"
                    .parse()
                    .unwrap()
            )
        );
        assert_eq!(polygon.reorg_window, 256);
        assert_eq!(
            anvil.storage_epoch_blocks,
            Some(crate::deploy::LOCAL_STORAGE_EPOCH_BLOCKS),
            "decloud dev deploys with the anvil network's epoch"
        );
        assert_eq!(amoy.storage_epoch_blocks, Some(1_800));
        assert_eq!(polygon.storage_epoch_blocks, Some(43_200));
        assert_eq!(networks.by_chain_id(137).unwrap().0, "polygon");
    }

    #[test]
    fn rpc_url_comes_from_env_first_then_file() {
        let networks = repo_networks();
        let polygon = networks.get("polygon").unwrap();
        let err = polygon.rpc_url_with("polygon", |_| None).unwrap_err();
        assert!(err.to_string().contains("DECLOUD_POLYGON_RPC_URL"), "{err}");
        let url = polygon
            .rpc_url_with("polygon", |v| {
                (v == "DECLOUD_POLYGON_RPC_URL").then(|| "http://10.0.0.1:8545".into())
            })
            .unwrap();
        assert_eq!(url.as_str(), "http://10.0.0.1:8545/");
        let bad = polygon
            .rpc_url_with("polygon", |_| Some("not a url".into()))
            .unwrap_err();
        assert!(matches!(bad, DeploymentsError::InvalidRpcUrl { .. }));
    }

    #[test]
    fn invalid_networks_are_rejected_with_a_reason() {
        let path = Path::new("networks.toml");
        let cases = [
            (
                "[networks.a]\nchain_id = 1\nrpc_url = \"http://x\"\nconfirmations = 1\nreorg_window = 2\n",
                "usdc",
            ),
            (
                "[networks.a]\nchain_id = 1\nmock_usdc = true\nconfirmations = 1\nreorg_window = 2\n",
                "rpc_url",
            ),
            (
                "[networks.a]\nchain_id = 1\nrpc_url = \"http://x\"\nmock_usdc = true\nconfirmations = 5\nreorg_window = 2\n",
                "reorg_window",
            ),
            (
                "[networks.a]\nchain_id = 1\nrpc_url = \"http://x\"\nmock_usdc = true\nconfirmations = 1\nreorg_window = 2\n\
                 [networks.b]\nchain_id = 1\nrpc_url = \"http://x\"\nmock_usdc = true\nconfirmations = 1\nreorg_window = 2\n",
                "share chain id",
            ),
            ("[networks.a]\nchain_id = \"x\"\n", "invalid"),
            (
                "[networks.a]\nchain_id = 1\nrpc_url = \"http://x\"\nmock_usdc = true\nconfirmations = 1\nreorg_window = 2\ntypo = 1\n",
                "typo",
            ),
            (
                "[networks.a]\nchain_id = 1\nrpc_url = \"http://x\"\nmock_usdc = true\nconfirmations = 1\nreorg_window = 2\nstorage_epoch_blocks = 0\n",
                "storage_epoch_blocks",
            ),
        ];
        for (text, expected) in cases {
            let err = Networks::parse(text, path).unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{expected:?} not in {err}"
            );
        }
        let err = repo_networks().get("mainnet").unwrap_err();
        assert!(err.to_string().contains("amoy, anvil, polygon"), "{err}");
    }

    fn sample() -> Deployment {
        let c = |n: u8| ContractDeployment {
            address: Address::repeat_byte(n),
            tx_hash: TxHash::repeat_byte(n),
            block: u64::from(n),
        };
        Deployment {
            chain_id: 31337,
            network: Some("anvil".into()),
            deployer: Address::repeat_byte(9),
            usdc: Address::repeat_byte(1),
            deploy_block: 1,
            contracts: Contracts {
                mock_usdc: Some(c(1)),
                node_registry: c(2),
                operator_staking: c(3),
                template_market: c(4),
                lease_escrow: c(5),
                attestation_anchor: c(6),
                groth16_verifier: c(7),
                storage_market: c(8),
            },
            roles: Roles {
                admin: Address::repeat_byte(9),
                treasury: Address::repeat_byte(9),
                arbiter: Address::repeat_byte(10),
                anchor: Address::repeat_byte(11),
                pauser: Address::repeat_byte(12),
            },
            setup_txs: vec![TxHash::repeat_byte(20)],
        }
    }

    #[test]
    fn deployment_round_trips_and_reports_missing_or_wrong_files() {
        let dir = tempfile::tempdir().unwrap();
        let deployment = sample();
        let path = deployment.save(dir.path()).unwrap();
        assert_eq!(path, dir.path().join("31337.json"));
        assert_eq!(Deployment::load(dir.path(), 31337).unwrap(), deployment);
        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert!(json["contracts"]["leaseEscrow"]["address"].is_string());
        assert_eq!(
            json["contracts"]["groth16Verifier"]["address"],
            Address::repeat_byte(7).to_checksum(None)
        );
        assert_eq!(
            json["contracts"]["storageMarket"]["address"],
            Address::repeat_byte(8).to_checksum(None)
        );
        assert_eq!(json["deployBlock"], 1);
        assert_eq!(json["deployer"], Address::repeat_byte(9).to_checksum(None));
        let lowercase = format!(
            "{{\"address\":\"0x{}\",\"txHash\":\"0x{}\",\"block\":2}}",
            "ab".repeat(20),
            "cd".repeat(32)
        );
        let parsed: ContractDeployment =
            serde_json::from_str(&lowercase).expect("lowercase addresses load too");
        assert_eq!(parsed.address, Address::repeat_byte(0xab));

        assert!(matches!(
            Deployment::load(dir.path(), 1),
            Err(DeploymentsError::NotDeployed { .. })
        ));
        fs::copy(&path, dir.path().join("5.json")).unwrap();
        assert!(matches!(
            Deployment::load(dir.path(), 5),
            Err(DeploymentsError::ChainMismatch { .. })
        ));
        fs::write(dir.path().join("6.json"), "{\"chainId\": 6}").unwrap();
        let err = Deployment::load(dir.path(), 6).unwrap_err();
        assert!(
            matches!(err, DeploymentsError::InvalidDeployment { .. }),
            "{err}"
        );
    }
}
