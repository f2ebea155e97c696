//! Rebuilding a lost replica of a storage deal on another node, as the deal's repairer.
//!
//! A replica's stored bytes are the owner's AES-256-GCM ciphertext XORed chunk by chunk with a
//! ChaCha20 keystream keyed by the replica's mask key, which derives from the deal's repair
//! secret R. Holding R, the repairer turns a healthy replica into the lost one without ever
//! seeing plaintext: it downloads the healthy replica with its own key (the nodes let the
//! repairer a deal names on-chain read and write), checks it against the replica's on-chain
//! root, re-masks every chunk to the lost replica's index, checks the result against the lost
//! replica's root (the replica keeps its index, so its bytes and root are the same as before),
//! moves the replica to the new node with `StorageMarket.replaceReplica`, uploads it there and
//! checks what the node holds.
//!
//! Every step can run again: a replica already moved to the new node is not moved twice, and
//! the upload resumes from the chunks the new node already holds.

use std::fmt;

use alloy::{
    primitives::{Address, B256, U256},
    providers::DynProvider,
    signers::local::PrivateKeySigner,
};
/// A deal's repair secret R: the storage encoding's (see `decloud_sdk::storage::encoding`).
pub use decloud_sdk::storage::encoding::RepairSecret;
use decloud_sdk::{
    bindings::StorageMarket,
    storage::{NodeClient, SEGMENT_BYTES, StorageClientError, sha256},
};
use hkdf::Hkdf;
use sha2::Sha256;
use tracing::info;
use url::Url;

/// One replica to rebuild.
#[derive(Debug, Clone)]
pub struct ReplicaRepair {
    /// The deal.
    pub deal: u64,
    /// The lost replica's index.
    pub replica: u32,
    /// A healthy replica of the deal to rebuild from.
    pub source: u32,
    /// The chunk API of the healthy replica's node.
    pub source_url: Url,
    /// The node the replica moves to: registered, Active, holding nothing of the deal.
    pub target: B256,
    /// The new node's chunk API.
    pub target_url: Url,
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairOutcome {
    /// The replica's root on the new node (the same as before the move).
    pub root: U256,
    /// Chunks of the replica.
    pub chunks: u32,
    /// Bytes of the replica.
    pub bytes: u64,
    /// Whether this run moved the replica on-chain (`false`: an earlier run had).
    pub moved: bool,
    /// Chunks this run uploaded (the others the new node already held).
    pub sent_chunks: u64,
}

/// Why a rebuild stopped. Nothing is moved on-chain before the rebuilt replica is known to match
/// the deal's commitment.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// A chain read or the move transaction failed (a revert is decoded into its error).
    #[error("{0}")]
    Chain(#[from] decloud_sdk::Error),
    /// The deal has no replica of that index.
    #[error("deal {deal} has no replica {replica}")]
    NoReplica {
        /// The deal.
        deal: u64,
        /// The index asked for.
        replica: u32,
    },
    /// The healthy replica named is the one to rebuild.
    #[error("replica {0} cannot be rebuilt from itself")]
    SameReplica(u32),
    /// A node refused or failed a request, or served a chunk that does not match its hash.
    #[error(transparent)]
    Node(#[from] StorageClientError),
    /// The healthy replica's node does not hold the whole replica.
    #[error("replica {replica} of deal {deal} is incomplete on its node: {reason}")]
    SourceIncomplete {
        /// The deal.
        deal: u64,
        /// The healthy replica.
        replica: u32,
        /// What is missing.
        reason: String,
    },
    /// The healthy replica's bytes do not match its on-chain root.
    #[error("replica {replica} of deal {deal} served by its node does not match its on-chain root")]
    SourceRoot {
        /// The deal.
        deal: u64,
        /// The healthy replica.
        replica: u32,
    },
    /// The re-masked bytes do not match the lost replica's root: the secret is not the deal's.
    #[error(
        "the repair secret does not rebuild replica {replica} of deal {deal}: its root would be \
         {got:#x}, the deal commits to {want:#x}"
    )]
    WrongSecret {
        /// The deal.
        deal: u64,
        /// The lost replica.
        replica: u32,
        /// Root of the rebuilt bytes.
        got: U256,
        /// The replica's on-chain root.
        want: U256,
    },
    /// The replica does not fit the market's circuit.
    #[error("committing to the replica: {0}")]
    Commit(#[from] decloud_prover::Error),
    /// After the upload, the new node's manifest is not the rebuilt replica.
    #[error(
        "node {node} holds {held} chunks of replica {replica} of deal {deal} after the upload, not the {want} rebuilt"
    )]
    Verify {
        /// The deal.
        deal: u64,
        /// The replica.
        replica: u32,
        /// The new node.
        node: B256,
        /// Chunks it lists that match.
        held: usize,
        /// Chunks rebuilt.
        want: usize,
    },
}

/// The repairer: the orchestrator's repair key, its wallet on the chain and the market.
#[derive(Debug, Clone)]
pub struct Repairer {
    provider: DynProvider,
    key: PrivateKeySigner,
    market: Address,
    chain_id: u64,
}

impl Repairer {
    /// A repairer signing chunk requests and transactions with `key` through `provider` (a
    /// provider with `key`'s wallet, e.g. [`decloud_sdk::tx::signing_provider`]), for deals on
    /// `market` of chain `chain_id`.
    pub fn new(
        provider: DynProvider,
        key: PrivateKeySigner,
        market: Address,
        chain_id: u64,
    ) -> Self {
        Self {
            provider,
            key,
            market,
            chain_id,
        }
    }

    /// The repair key's address, which deal owners name with `StorageMarket.setRepairer`.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// The provider the repairer reads the chain and sends its transactions through.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The market whose deals it repairs.
    pub fn market(&self) -> Address {
        self.market
    }

    fn client(&self, url: Url, node: B256) -> NodeClient {
        NodeClient::new(url, self.chain_id, self.market, node, self.key.clone())
    }

    /// Rebuilds `job.replica` on `job.target` from `job.source` (see the module docs).
    pub async fn rebuild(
        &self,
        job: &ReplicaRepair,
        secret: &RepairSecret,
    ) -> Result<RepairOutcome, RepairError> {
        let (deal, replica) = (job.deal, job.replica);
        if job.source == replica {
            return Err(RepairError::SameReplica(replica));
        }
        let market = StorageMarket::new(self.market, &self.provider);
        let id = U256::from(deal);
        let terms = decloud_sdk::tx::read("StorageMarket", market.getDeal(id)).await?;
        let replicas = decloud_sdk::tx::read("StorageMarket", market.getReplicas(id)).await?;
        let max_segments = decloud_sdk::tx::read("StorageMarket", market.maxSegmentCount()).await?;
        let depth = max_segments.trailing_zeros() as usize;
        let replica_at = |index: u32| {
            replicas
                .get(index as usize)
                .cloned()
                .ok_or(RepairError::NoReplica {
                    deal,
                    replica: index,
                })
        };
        let lost = replica_at(replica)?;
        let healthy = replica_at(job.source)?;

        // The healthy replica, checked chunk by chunk against its node's manifest and as a
        // whole against its on-chain root.
        let from = self.client(job.source_url.clone(), healthy.nodeId);
        let manifest = from.manifest(deal, job.source).await?;
        let incomplete = |reason: String| RepairError::SourceIncomplete {
            deal,
            replica: job.source,
            reason,
        };
        if manifest.chunks.is_empty() {
            return Err(incomplete("its node holds no chunk".into()));
        }
        let mut chunks = Vec::with_capacity(manifest.chunks.len());
        for (position, entry) in manifest.chunks.iter().enumerate() {
            if entry.index as usize != position {
                return Err(incomplete(format!("chunk {position} is missing")));
            }
            chunks.push(
                from.get_chunk(deal, job.source, entry.index, entry.sha256)
                    .await?,
            );
        }
        let bytes: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        if bytes.div_ceil(SEGMENT_BYTES) != terms.segmentCount {
            return Err(incomplete(format!(
                "it holds {bytes} bytes, the deal commits to {} segments of {SEGMENT_BYTES}",
                terms.segmentCount
            )));
        }
        if root(&chunks, depth)? != healthy.root {
            return Err(RepairError::SourceRoot {
                deal,
                replica: job.source,
            });
        }

        // Re-masked to the lost replica's index, it must be the lost replica again.
        for (index, chunk) in chunks.iter_mut().enumerate() {
            secret.remask(job.source, replica, index as u32, chunk);
        }
        let rebuilt = root(&chunks, depth)?;
        if rebuilt != lost.root {
            return Err(RepairError::WrongSecret {
                deal,
                replica,
                got: rebuilt,
                want: lost.root,
            });
        }

        let moved = lost.nodeId != job.target;
        if moved {
            decloud_sdk::tx::send(
                "StorageMarket",
                market.replaceReplica(id, U256::from(replica), job.target, rebuilt),
            )
            .await?;
            info!(target: "orchestrator::repair", deal, replica, from = %lost.nodeId, to = %job.target, "replica moved on-chain");
        }
        let to = self.client(job.target_url.clone(), job.target);
        let count = chunks.len() as u32;
        let stats = to
            .upload_replica(
                deal,
                replica,
                count,
                |index| chunks[index as usize].clone(),
                |_| {},
            )
            .await?;
        let held = to.manifest(deal, replica).await?;
        let matching = held
            .chunks
            .iter()
            .filter(|c| {
                chunks
                    .get(c.index as usize)
                    .is_some_and(|chunk| sha256(chunk) == c.sha256)
            })
            .count();
        if matching != chunks.len() || held.chunks.len() != chunks.len() {
            return Err(RepairError::Verify {
                deal,
                replica,
                node: job.target,
                held: matching,
                want: chunks.len(),
            });
        }
        info!(target: "orchestrator::repair", deal, replica, node = %job.target, chunks = count, bytes, sent = stats.sent_chunks, "replica rebuilt");
        Ok(RepairOutcome {
            root: rebuilt,
            chunks: count,
            bytes,
            moved,
            sent_chunks: stats.sent_chunks,
        })
    }
}

/// Where the repair key is taken from: `DECLOUD_REPAIR_PRIVATE_KEY` (hex) in the environment,
/// else the configured key file (hex, readable by its owner only). Never a flag or a setting.
pub const REPAIR_KEY_ENV: &str = "DECLOUD_REPAIR_PRIVATE_KEY";

/// Why the repair key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RepairKeyError {
    /// Neither the environment nor the configuration gives a key.
    #[error("[repair] needs a key: set {REPAIR_KEY_ENV} or [repair] key_file")]
    Missing,
    /// The key file cannot be read.
    #[error("reading the repair key file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is readable by others than its owner.
    #[error("the repair key file {0} is readable by its group or others: chmod 600 it")]
    Exposed(std::path::PathBuf),
    /// The key is not 32 bytes of hex.
    #[error("the repair key is not a 32-byte hex private key")]
    Malformed,
}

/// Loads the repair key: `env(REPAIR_KEY_ENV)` when set, else the hex key in `key_file`.
pub fn load_repair_key(
    key_file: Option<&std::path::Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<PrivateKeySigner, RepairKeyError> {
    let text = match (env(REPAIR_KEY_ENV), key_file) {
        (Some(key), _) => key,
        (None, Some(path)) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let meta = std::fs::metadata(path).map_err(|source| RepairKeyError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(RepairKeyError::Exposed(path.to_path_buf()));
                }
            }
            std::fs::read_to_string(path).map_err(|source| RepairKeyError::Read {
                path: path.to_path_buf(),
                source,
            })?
        }
        (None, None) => return Err(RepairKeyError::Missing),
    };
    let hex = text.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    if hex.len() != 64 {
        return Err(RepairKeyError::Malformed);
    }
    hex.parse::<PrivateKeySigner>()
        .map_err(|_| RepairKeyError::Malformed)
}

/// Why a deal's owner could not register its repair secret. Nothing is stored on any of them.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationRefusal {
    /// The secret is not 32 bytes of hex.
    #[error("the repair secret must be 32 bytes of hex (64 hex digits)")]
    MalformedSecret,
    /// The deal id is not one the market can hold here.
    #[error("deal id {0} is out of range")]
    DealOutOfRange(u64),
    /// The market has no such deal.
    #[error("deal {0} does not exist")]
    NoDeal(u64),
    /// The caller does not own the deal.
    #[error("deal {deal} belongs to {owner}, not to {caller}")]
    NotOwner {
        /// The deal.
        deal: u64,
        /// Its owner on-chain.
        owner: Address,
        /// The signed-in caller.
        caller: String,
    },
    /// The deal is settled: nothing is left to repair.
    #[error("deal {0} is settled: nothing is left to repair")]
    Settled(u64),
    /// The deal names another repairer (or none).
    #[error(
        "deal {deal} names {named} as its repairer, not this orchestrator's {ours}: call \
         StorageMarket.setRepairer({deal}, {ours}) first"
    )]
    NotOurs {
        /// The deal.
        deal: u64,
        /// The repairer the deal names (zero: none).
        named: Address,
        /// This orchestrator's repair key.
        ours: Address,
    },
    /// Reading the market failed.
    #[error("reading the storage market: {0}")]
    Chain(decloud_sdk::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The orchestrator's repair desk: its repairer, and the repair secrets deal owners register,
/// sealed at rest with ChaCha20-Poly1305 under a key derived from the repair key.
#[derive(Clone)]
pub struct RepairDesk {
    repairer: Repairer,
    seal_key: [u8; 32],
}

impl fmt::Debug for RepairDesk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepairDesk")
            .field("repairer", &self.repairer.address())
            .field("market", &self.repairer.market)
            .finish_non_exhaustive()
    }
}

impl RepairDesk {
    /// A desk repairing as `repairer` (its key also derives the sealing key).
    pub fn new(repairer: Repairer) -> Self {
        let mut seal_key = [0u8; 32];
        Hkdf::<Sha256>::new(None, repairer.key.to_bytes().as_slice())
            .expand(b"decloud repair secret seal v1", &mut seal_key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self { repairer, seal_key }
    }

    /// The repairer.
    pub fn repairer(&self) -> &Repairer {
        &self.repairer
    }

    /// The market whose deals this desk repairs.
    pub fn market(&self) -> Address {
        self.repairer.market
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.repairer.chain_id
    }

    /// The associated data binding a sealed secret to its market and deal.
    fn aad(&self, deal: u64) -> Vec<u8> {
        let mut aad = b"decloud repair secret".to_vec();
        aad.extend_from_slice(&self.repairer.chain_id.to_be_bytes());
        aad.extend_from_slice(self.repairer.market.as_slice());
        aad.extend_from_slice(&deal.to_be_bytes());
        aad
    }

    /// `secret` sealed for `deal`: hex of a random 12-byte nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, deal: u64, secret: &RepairSecret) -> String {
        use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _, aead::Aead as _};
        let nonce: [u8; 12] = rand::random();
        let sealed = ChaCha20Poly1305::new(&self.seal_key.into())
            .encrypt(
                &nonce.into(),
                chacha20poly1305::aead::Payload {
                    msg: &secret.to_bytes(),
                    aad: &self.aad(deal),
                },
            )
            .expect("ChaCha20-Poly1305 encrypts 32 bytes");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        hex::encode(out)
    }

    /// The secret sealed for `deal`, or `None` when it was not sealed by this key for that deal.
    pub fn unseal(&self, deal: u64, sealed: &str) -> Option<RepairSecret> {
        use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _, aead::Aead as _};
        let bytes = hex::decode(sealed).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let plain = ChaCha20Poly1305::new(&self.seal_key.into())
            .decrypt(
                &nonce.into(),
                chacha20poly1305::aead::Payload {
                    msg: ciphertext,
                    aad: &self.aad(deal),
                },
            )
            .ok()?;
        Some(RepairSecret::from_bytes(plain.try_into().ok()?))
    }

    /// Registers `secret_hex` as `deal`'s repair secret for the signed-in `caller`: the caller
    /// must own the deal on-chain, the deal must name this orchestrator's repair key as its
    /// repairer and not be settled. The secret itself is not checked against the replicas here
    /// (that needs the replicas' bytes); a rebuild checks the re-masked bytes against the lost
    /// replica's on-chain root before anything moves ([`RepairError::WrongSecret`]).
    pub async fn register(
        &self,
        store: &crate::store::Store,
        caller: &str,
        deal: u64,
        secret_hex: &str,
        now: i64,
    ) -> Result<crate::store::SealedRepairSecret, RegistrationRefusal> {
        let secret = parse_secret(secret_hex)?;
        if i64::try_from(deal).is_err() {
            return Err(RegistrationRefusal::DealOutOfRange(deal));
        }
        let market = StorageMarket::new(self.repairer.market, &self.repairer.provider);
        let id = U256::from(deal);
        let chain = |e: decloud_sdk::Error| match &e {
            decloud_sdk::Error::Revert(r) if r.signature().starts_with("DealNotFound") => {
                RegistrationRefusal::NoDeal(deal)
            }
            _ => RegistrationRefusal::Chain(e),
        };
        let terms = decloud_sdk::tx::read("StorageMarket", market.getDeal(id))
            .await
            .map_err(chain)?;
        if !terms.owner.to_string().eq_ignore_ascii_case(caller) {
            return Err(RegistrationRefusal::NotOwner {
                deal,
                owner: terms.owner,
                caller: caller.to_string(),
            });
        }
        if terms.settled {
            return Err(RegistrationRefusal::Settled(deal));
        }
        let named = decloud_sdk::tx::read("StorageMarket", market.repairerOf(id))
            .await
            .map_err(chain)?;
        let ours = self.repairer.address();
        if named != ours {
            return Err(RegistrationRefusal::NotOurs { deal, named, ours });
        }
        let record = crate::store::SealedRepairSecret {
            deal_id: deal,
            owner: format!("{:#x}", terms.owner),
            sealed: self.seal(deal, &secret),
            registered_at: now,
        };
        store.save_repair_secret(&record).await?;
        info!(target: "orchestrator::repair", deal, owner = %terms.owner, "repair secret registered");
        Ok(record)
    }
}

/// 32 bytes of hex, `0x` optional.
fn parse_secret(text: &str) -> Result<RepairSecret, RegistrationRefusal> {
    let text = text.trim();
    let text = text.strip_prefix("0x").unwrap_or(text);
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| RegistrationRefusal::MalformedSecret)?;
    Ok(RepairSecret::from_bytes(bytes))
}

/// The prover's root over a replica's chunks, as the market stores it.
fn root(chunks: &[Vec<u8>], depth: usize) -> Result<U256, decloud_prover::Error> {
    let data = chunks.concat();
    let tree = decloud_prover::MerkleTree::from_data(&data, depth)?;
    Ok(U256::from_be_bytes(decloud_prover::fr_to_be_bytes(
        &tree.root(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_never_printed() {
        let secret = RepairSecret::from_bytes([0xab; 32]);
        assert_eq!(format!("{secret:?}"), "RepairSecret(..)");
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_deal_and_key() {
        use alloy::providers::{Provider as _, ProviderBuilder};
        let provider = ProviderBuilder::new()
            .connect_http("http://127.0.0.1:1".parse().unwrap())
            .erased();
        let desk = |key: u8| {
            RepairDesk::new(Repairer::new(
                provider.clone(),
                PrivateKeySigner::from_bytes(&B256::repeat_byte(key)).unwrap(),
                Address::repeat_byte(9),
                31_337,
            ))
        };
        let (ours, other) = (desk(1), desk(2));
        let secret = RepairSecret::from_bytes([0x3c; 32]);
        let sealed = ours.seal(7, &secret);
        assert!(!sealed.contains(&hex::encode(secret.to_bytes())));
        assert_ne!(sealed, ours.seal(7, &secret), "a fresh nonce each time");
        assert_eq!(ours.unseal(7, &sealed).unwrap(), secret);
        assert!(ours.unseal(8, &sealed).is_none());
        assert!(other.unseal(7, &sealed).is_none());
        let mut tampered = hex::decode(&sealed).unwrap();
        tampered[20] ^= 1;
        assert!(ours.unseal(7, &hex::encode(tampered)).is_none());
        assert!(ours.unseal(7, "zz").is_none());
    }

    #[test]
    fn secrets_and_keys_must_be_32_bytes_of_hex() {
        assert!(parse_secret(&format!("0x{}", "ab".repeat(32))).is_ok());
        assert!(parse_secret(&"ab".repeat(32)).is_ok());
        for bad in [
            "",
            "0x",
            &"ab".repeat(31),
            &"ab".repeat(33),
            &"zz".repeat(32),
        ] {
            assert!(
                matches!(parse_secret(bad), Err(RegistrationRefusal::MalformedSecret)),
                "{bad}"
            );
        }
        let key = format!("0x{}", "11".repeat(32));
        let env = |k: &str| (k == REPAIR_KEY_ENV).then(|| key.clone());
        assert!(load_repair_key(None, env).is_ok());
        assert!(matches!(
            load_repair_key(None, |_| None),
            Err(RepairKeyError::Missing)
        ));
        assert!(matches!(
            load_repair_key(None, |_| Some("0x1234".into())),
            Err(RepairKeyError::Malformed)
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repair.key");
        std::fs::write(&path, format!("{}\n", "22".repeat(32))).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                load_repair_key(Some(&path), |_| None),
                Err(RepairKeyError::Exposed(_))
            ));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(
            load_repair_key(Some(&path), |_| None).unwrap().to_bytes(),
            B256::repeat_byte(0x22)
        );
    }
}
