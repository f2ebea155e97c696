//! A wallet's files on the storage network: `put` (encode, commit, open the deal, upload every
//! replica, resuming), `get` (any replica, checked, decrypted; the next replica on any failure),
//! `list` (the local index joined with the deals on-chain) and `remove` (nodes delete, the deal
//! ends or settles).
//!
//! `get` and `list` follow the deal on-chain: a replica the orchestrator's repairer moved to
//! another node (`replaceReplica`) is looked up at the orchestrator
//! (`GET /api/v1/storage/nodes/{node_id}`, see [`StorageClient::with_coordinator`]) and the
//! record is updated and saved, so the next `get` needs no lookup. A moved replica whose node
//! cannot be found is skipped (the others serve); when the chain cannot be read, the record's
//! nodes are used as they are. Each such event is a [`FollowNote`].
//!
//! The client keeps one JSON record per file in an index directory ([`FileIndex`]): deal id,
//! name, size, file id, chunk count and, per replica, its node, root and chunk hashes. The file id
//! is what turns the wallet's master key into the file's keys: **losing the index loses access to
//! the files it names** (the deals and the stored ciphertext remain, but cannot be decrypted
//! without the file id), so back up the index directory like any other data.

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use alloy::{
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider},
    signers::local::PrivateKeySigner,
};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{
    NodeClient, StorageClientError,
    client::sha256,
    coordinator::{CoordinatorError, StorageCoordinator},
    encoding::{
        self, CHUNK_PLAINTEXT, Commitment, EncodingError, FileCodec, FileId, MasterKey,
        ReplicaCommitter,
    },
};
use crate::{
    Error,
    bindings::{MockUSDC, NodeRegistry, StorageMarket},
    tx,
};

/// Everything that can stop a storage command.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The chain or a contract failed (reverts decoded).
    #[error(transparent)]
    Chain(#[from] Error),
    /// A storage node failed.
    #[error(transparent)]
    Node(#[from] StorageClientError),
    /// Encoding or decoding failed.
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    /// A local file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An index record is not valid JSON.
    #[error("index record {path} is damaged: {message}")]
    BadRecord {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No file has this name or deal id.
    #[error("no stored file named {0:?} (see `decloud storage ls`)")]
    NotFound(String),
    /// Several files have this name.
    #[error("{name:?} names deals {deals:?}: give the deal id")]
    Ambiguous {
        /// The name.
        name: String,
        /// Its deals.
        deals: Vec<u64>,
    },
    /// The name is already a complete file.
    #[error("{name:?} is already stored as deal {deal}: remove it first or choose another name")]
    AlreadyStored {
        /// The name.
        name: String,
        /// Its deal.
        deal: u64,
    },
    /// The name's deal has ended: its paid epochs are over (proven and paid, or refundable).
    #[error(
        "{name:?} is deal {deal}, which ended at block {end_block} (its paid epochs are over): nothing was sent; \
         remove it (`rm` settles the deal, refunding its unproven epochs), then put again"
    )]
    DealEnded {
        /// The name.
        name: String,
        /// Its deal.
        deal: u64,
        /// The first block after the deal's last epoch.
        end_block: u64,
    },
    /// The file changed since an interrupted put of the same name began.
    #[error(
        "{path} changed since its interrupted put began ({what}): restore it, or remove {name:?} and put again"
    )]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// The name.
        name: String,
        /// What differs.
        what: String,
    },
    /// Not enough usable nodes.
    #[error(
        "{wanted} replicas need {wanted} distinct active storage nodes; usable: {usable} ({reasons})"
    )]
    NotEnoughNodes {
        /// Replicas asked for.
        wanted: usize,
        /// Nodes usable.
        usable: usize,
        /// Why the others were not.
        reasons: String,
    },
    /// The wallet cannot pay the deal.
    #[error("the deal costs {needed} micro-USDC but the wallet holds {held}: nothing was sent")]
    InsufficientFunds {
        /// Deposit needed.
        needed: U256,
        /// Balance.
        held: U256,
    },
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// The upload of a file is not complete.
    #[error("the upload of {name:?} (deal {deal}) is not complete: run put again to resume it")]
    Incomplete {
        /// The name.
        name: String,
        /// The deal.
        deal: u64,
    },
    /// Chunks arrived intact but do not decrypt: the key is not the owner's.
    #[error(
        "chunk {index} of {name:?} arrived intact but does not decrypt: wrong key (not the wallet and chain that stored it); nothing was written"
    )]
    WrongKey {
        /// The name.
        name: String,
        /// Chunk index.
        index: u32,
    },
    /// No replica could serve a chunk.
    #[error("no replica served chunk {index} of {name:?}: {reasons}; nothing was written")]
    NoReplica {
        /// The name.
        name: String,
        /// Chunk index.
        index: u32,
        /// What each replica did.
        reasons: String,
    },
    /// The orchestrator's placement could not place the replicas.
    #[error("the orchestrator could not place {wanted} replicas: {source}{left_out}")]
    Placement {
        /// Replicas asked for.
        wanted: usize,
        /// The nodes left out and why (`; left out: …`), or empty.
        left_out: String,
        /// What the orchestrator said.
        #[source]
        source: CoordinatorError,
    },
    /// Setting up the deal's repair failed; the deal and the uploads are kept.
    #[error(
        "deal {deal}: setting up repair failed: {reason}; run put again to finish (or pass --no-repair)"
    )]
    Repair {
        /// The deal.
        deal: u64,
        /// What failed.
        reason: String,
    },
    /// Some replicas did not upload.
    #[error("deal {deal}: {failures}; run put again to resume")]
    UploadFailed {
        /// The deal.
        deal: u64,
        /// What each failing replica did.
        failures: String,
    },
}

impl StorageError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A storage node a replica may be placed on: its id and chunk API URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageNode {
    /// Node id in the NodeRegistry.
    pub node: B256,
    /// Its chunk API.
    pub url: Url,
}

/// Where a put's replicas go.
#[derive(Debug, Clone, Copy)]
pub enum NodeSource<'a> {
    /// These nodes, in order: the first distinct ones that are Active in the NodeRegistry and
    /// answer.
    Given(&'a [StorageNode]),
    /// The nodes the orchestrator's placement picks (`GET /storage/placement`), asked again
    /// without the nodes that are not Active or do not answer.
    Placement {
        /// The orchestrator.
        coordinator: &'a StorageCoordinator,
        /// The region to prefer.
        region: Option<&'a str>,
    },
}

/// How far a stored file's repair is set up: the deal naming the orchestrator's repairer
/// on-chain (`setRepairer`) and the orchestrator holding the deal's repair secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RepairSetup {
    /// Not set up yet: `put` run again does it.
    #[default]
    Pending,
    /// The deal names `repairer` on-chain; the repair secret is not registered yet.
    RepairerSet {
        /// The repairer's address.
        repairer: Address,
    },
    /// The deal names `repairer` and the orchestrator holds the repair secret.
    Registered {
        /// The repairer's address.
        repairer: Address,
    },
    /// The owner chose no repair (`--no-repair`).
    Declined,
    /// The orchestrator repairs no deals.
    NotOffered,
}

impl RepairSetup {
    /// Whether steps are left to do.
    pub fn is_pending(&self) -> bool {
        matches!(self, Self::Pending | Self::RepairerSet { .. })
    }

    /// A word for people and JSON: `pending`, `repairer_set`, `registered`, `declined`,
    /// `not_offered`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::RepairerSet { .. } => "repairer_set",
            Self::Registered { .. } => "registered",
            Self::Declined => "declined",
            Self::NotOffered => "not_offered",
        }
    }
}

/// One replica of a stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// The node holding it.
    pub node: B256,
    /// The node's chunk API.
    pub url: Url,
    /// Its commitment.
    pub root: U256,
    /// SHA-256 of each stored chunk.
    pub chunk_sha256: Vec<B256>,
    /// Whether every chunk is on the node.
    pub uploaded: bool,
}

/// The local record of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The name given at put (the file's name by default).
    pub name: String,
    /// The file that was put, for resuming.
    pub source: PathBuf,
    /// Plaintext bytes.
    pub size: u64,
    /// The file id (with the wallet's master key, the file's keys).
    pub file_id: B256,
    /// Chunks.
    pub chunks: u32,
    /// Proof segments per replica.
    pub segment_count: u64,
    /// Chain id.
    pub chain_id: u64,
    /// The StorageMarket.
    pub market: Address,
    /// The deal, once opened.
    pub deal: Option<u64>,
    /// Micro-USDC per replica per proven epoch.
    pub price_per_epoch: u64,
    /// Epochs paid for.
    pub epochs: u32,
    /// The replicas, in the deal's order.
    pub replicas: Vec<ReplicaRecord>,
    /// Whether `remove` ran (the record stays until the deal settles).
    #[serde(default)]
    pub removed: bool,
    /// How far the deal's repair is set up.
    #[serde(default)]
    pub repair: RepairSetup,
}

impl FileRecord {
    /// Whether every replica is uploaded.
    pub fn uploaded(&self) -> bool {
        self.deal.is_some() && self.replicas.iter().all(|r| r.uploaded)
    }

    fn codec(&self, master: &MasterKey) -> FileCodec {
        FileCodec::new(master, FileId(self.file_id))
    }
}

/// The directory of [`FileRecord`]s, one JSON file each.
#[derive(Debug, Clone)]
pub struct FileIndex {
    dir: PathBuf,
}

impl FileIndex {
    /// The index in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, record: &FileRecord) -> PathBuf {
        self.dir
            .join(format!("{}-{}.json", record.chain_id, record.file_id))
    }

    /// Every record, oldest deal first.
    pub fn list(&self) -> Result<Vec<FileRecord>, StorageError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StorageError::io(&self.dir)(e)),
        };
        let mut records = Vec::new();
        for entry in entries {
            let path = entry.map_err(StorageError::io(&self.dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(StorageError::io(&path))?;
            let record = serde_json::from_str(&text).map_err(|e| StorageError::BadRecord {
                path: path.clone(),
                message: e.to_string(),
            })?;
            records.push(record);
        }
        records.sort_by_key(|r: &FileRecord| (r.deal.unwrap_or(u64::MAX), r.name.clone()));
        Ok(records)
    }

    /// Writes a record (to a temporary file, then renamed over the old one).
    pub fn save(&self, record: &FileRecord) -> Result<(), StorageError> {
        std::fs::create_dir_all(&self.dir).map_err(StorageError::io(&self.dir))?;
        let path = self.path(record);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(record).expect("a record serializes");
        let mut file = File::create(&tmp).map_err(StorageError::io(&tmp))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(StorageError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(StorageError::io(&path))
    }

    /// Deletes a record.
    pub fn delete(&self, record: &FileRecord) -> Result<(), StorageError> {
        let path = self.path(record);
        std::fs::remove_file(&path).map_err(StorageError::io(&path))
    }
}

/// What a put, get or remove is doing, for progress output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Encrypting every replica and hashing its segments.
    Commit,
    /// Building each replica's Merkle tree over its segment hashes; `done` and `total` count
    /// the bytes of every replica (the file's size once per replica).
    Tree,
    /// Uploading replicas.
    Upload,
    /// Downloading and decrypting.
    Download,
}

/// Progress of a phase: `done` of `total` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The phase.
    pub phase: Phase,
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// What a put asks for.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// Name in the index (default: the file's name).
    pub name: Option<String>,
    /// Replicas.
    pub replicas: usize,
    /// Epochs to pay for.
    pub epochs: u32,
    /// Micro-USDC per replica per proven epoch.
    pub price_per_epoch: u64,
}

/// A deal's on-chain state, for `ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealState {
    /// Epochs proven (summed over replicas).
    pub proven_epochs: u32,
    /// Epochs paid for.
    pub epochs: u32,
    /// Funds not yet paid out or refunded.
    pub remaining: U256,
    /// Whether the deal settled.
    pub settled: bool,
    /// The current epoch (may be past the last one).
    pub current_epoch: u64,
    /// First block after the deal's last epoch.
    pub end_block: u64,
}

impl DealState {
    /// Whether the deal has ended (its last epoch is over) or settled: nodes take no more
    /// chunks for it, and `settle` may pay its refund.
    pub fn ended(&self) -> bool {
        self.settled || self.current_epoch >= u64::from(self.epochs)
    }
}

/// A record with its deal's state.
#[derive(Debug, Clone)]
pub struct FileStatus {
    /// The local record.
    pub record: FileRecord,
    /// The deal on-chain, when opened.
    pub deal: Option<DealState>,
    /// The node of each replica on-chain now (the record's nodes when the chain could not be
    /// read).
    pub nodes: Vec<B256>,
    /// What following the deal on-chain found (moved replicas, nodes not found).
    pub notes: Vec<FollowNote>,
}

/// What comparing a file's record with its deal on-chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowNote {
    /// The replica moved to `to` (its chunk API at `url`); the record now names it.
    Moved {
        /// Replica index.
        replica: u32,
        /// The node the record named.
        from: B256,
        /// The node holding it on-chain.
        to: B256,
        /// `to`'s chunk API.
        url: Url,
    },
    /// The replica moved to `to`, whose chunk API could not be found: it is skipped.
    Unresolved {
        /// Replica index.
        replica: u32,
        /// The node holding it on-chain.
        to: B256,
        /// Why it could not be used.
        reason: String,
    },
    /// The deal's replicas could not be read on-chain: the record's nodes are used as they are.
    ChainUnreadable {
        /// The deal.
        deal: u64,
        /// What failed.
        reason: String,
    },
}

impl std::fmt::Display for FollowNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Moved {
                replica,
                from,
                to,
                url,
            } => write!(
                f,
                "replica {replica} moved from node {from} to node {to} ({url}); the local record now names it"
            ),
            Self::Unresolved {
                replica,
                to,
                reason,
            } => write!(
                f,
                "replica {replica} moved to node {to}, which cannot be reached ({reason}); skipping it, the other replicas serve"
            ),
            Self::ChainUnreadable { deal, reason } => write!(
                f,
                "cannot read deal {deal}'s replicas on-chain ({reason}); using the nodes in the local record"
            ),
        }
    }
}

/// What [`StorageClient::remove`] did.
#[derive(Debug, Clone)]
pub struct Removal {
    /// The deal.
    pub deal: Option<u64>,
    /// Per replica: the node and the deletion's outcome (`None`: deleted).
    pub deletions: Vec<(B256, Option<String>)>,
    /// Whether `endDeal` cut the deal short now (it had epochs after the current one).
    pub ended: bool,
    /// The refund `settle` paid to the owner, when the deal could settle now: the deposit less
    /// the price of every proven replica-epoch.
    pub refunded: Option<U256>,
    /// When the deal did not settle now: the block from which `settle` (another `remove`)
    /// refunds the rest.
    pub settles_at_block: Option<u64>,
}

/// A wallet's storage client on one chain.
#[derive(Debug, Clone)]
pub struct StorageClient {
    provider: DynProvider,
    signer: PrivateKeySigner,
    chain_id: u64,
    market: Address,
    registry: Address,
    usdc: Address,
    master: MasterKey,
    index: FileIndex,
    /// The orchestrator that tells where a moved replica's node serves its chunks.
    coordinator: Option<StorageCoordinator>,
}

fn failures(list: &[(String, String)]) -> String {
    list.iter()
        .map(|(who, why)| format!("{who}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl StorageClient {
    /// A client signing with `signer` through `provider` (a signing provider for the same key),
    /// on the system `deployment`, keeping its index in `index_dir`. Derives the master key.
    pub async fn new(
        provider: DynProvider,
        signer: PrivateKeySigner,
        deployment: &crate::deployments::Deployment,
        index_dir: impl Into<PathBuf>,
    ) -> Result<Self, StorageError> {
        let chain_id = provider.get_chain_id().await.map_err(Error::from)?;
        let master = MasterKey::derive(&signer, chain_id).map_err(Error::from)?;
        Ok(Self {
            provider,
            signer,
            chain_id,
            market: deployment.contracts.storage_market.address,
            registry: deployment.contracts.node_registry.address,
            usdc: deployment.usdc,
            master,
            index: FileIndex::new(index_dir),
            coordinator: None,
        })
    }

    /// The same client decrypting with another master key (a key kept elsewhere).
    pub fn with_master_key(mut self, master: MasterKey) -> Self {
        self.master = master;
        self
    }

    /// The same client asking `coordinator` (the orchestrator) for the chunk API of a node a
    /// replica moved to. Without one, a moved replica is skipped by `get`.
    pub fn with_coordinator(mut self, coordinator: StorageCoordinator) -> Self {
        self.coordinator = Some(coordinator);
        self
    }

    /// The local index.
    pub fn index(&self) -> &FileIndex {
        &self.index
    }

    fn market(&self) -> StorageMarket::StorageMarketInstance<&DynProvider> {
        StorageMarket::new(self.market, &self.provider)
    }

    fn node_client(&self, node: B256, url: &Url) -> NodeClient {
        NodeClient::new(
            url.clone(),
            self.chain_id,
            self.market,
            node,
            self.signer.clone(),
        )
    }

    /// Records of this chain and market.
    fn records(&self) -> Result<Vec<FileRecord>, StorageError> {
        Ok(self
            .index
            .list()?
            .into_iter()
            .filter(|r| r.chain_id == self.chain_id && r.market == self.market)
            .collect())
    }

    /// The record named `key`: a deal id, or a name.
    pub fn find(&self, key: &str) -> Result<FileRecord, StorageError> {
        let records = self.records()?;
        if let Ok(deal) = key.parse::<u64>()
            && let Some(r) = records.iter().find(|r| r.deal == Some(deal))
        {
            return Ok(r.clone());
        }
        let named: Vec<_> = records.into_iter().filter(|r| r.name == key).collect();
        match named.len() {
            0 => Err(StorageError::NotFound(key.to_owned())),
            1 => Ok(named.into_iter().next().expect("one")),
            _ => Err(StorageError::Ambiguous {
                name: key.to_owned(),
                deals: named.iter().filter_map(|r| r.deal).collect(),
            }),
        }
    }

    /// The record of `name` that is not removed: the one a put of that name resumes.
    pub fn live(&self, name: &str) -> Result<Option<FileRecord>, StorageError> {
        Ok(self
            .records()?
            .into_iter()
            .find(|r| r.name == name && !r.removed))
    }

    /// The depth of the market's circuit (`maxSegmentCount` is `2^depth`).
    async fn depth(&self) -> Result<usize, StorageError> {
        let max = tx::read("StorageMarket", self.market().maxSegmentCount()).await?;
        if !max.is_power_of_two() {
            return Err(StorageError::Invalid(format!(
                "the market's maxSegmentCount {max} is not a power of two"
            )));
        }
        Ok(max.trailing_zeros() as usize)
    }

    /// Why `node` cannot take a replica now (not Active in the NodeRegistry, or its chunk API
    /// does not answer), or `None` when it can.
    async fn unusable(&self, node: &StorageNode) -> Result<Option<String>, StorageError> {
        let registry = NodeRegistry::new(self.registry, &self.provider);
        let status = tx::read("NodeRegistry", registry.statusOf(node.node)).await?;
        if crate::types::NodeStatus::try_from(status).ok() != Some(crate::types::NodeStatus::Active)
        {
            return Ok(Some(format!("{} is not active", node.node)));
        }
        let probe = self.node_client(node.node, &node.url).probe().await;
        Ok(probe
            .err()
            .map(|e| format!("{} does not answer: {e}", node.node)))
    }

    /// Fills the empty `slots` with usable nodes from `source` (each checked with
    /// [`Self::unusable`]), distinct from the nodes already in `slots` and from `left_out` (nodes
    /// found unusable, with why; grows). `bytes` is what each replica takes on its node.
    async fn fill_nodes(
        &self,
        source: NodeSource<'_>,
        slots: &mut [Option<StorageNode>],
        bytes: u64,
        left_out: &mut Vec<(B256, String)>,
    ) -> Result<(), StorageError> {
        // The placement is asked again after each unusable node; a bound keeps an orchestrator
        // that keeps offering dead nodes from looping forever.
        const PLACEMENT_ROUNDS: usize = 8;
        let wanted = slots.len();
        let mut next_given = 0usize;
        let mut rounds = 0usize;
        let mut duplicates = Vec::new();
        loop {
            let missing = slots.iter().filter(|s| s.is_none()).count();
            if missing == 0 {
                return Ok(());
            }
            let taken: Vec<B256> = slots.iter().flatten().map(|n| n.node).collect();
            let offered: Vec<StorageNode> = match source {
                NodeSource::Given(candidates) => {
                    let mut offered: Vec<StorageNode> = Vec::new();
                    while offered.len() < missing && next_given < candidates.len() {
                        let candidate = &candidates[next_given];
                        next_given += 1;
                        if taken.contains(&candidate.node)
                            || offered.iter().any(|o| o.node == candidate.node)
                        {
                            duplicates.push(format!("{} listed twice", candidate.node));
                        } else if !left_out.iter().any(|(id, _)| *id == candidate.node) {
                            offered.push(candidate.clone());
                        }
                    }
                    offered
                }
                NodeSource::Placement {
                    coordinator,
                    region,
                } if rounds < PLACEMENT_ROUNDS => {
                    rounds += 1;
                    let exclude: Vec<String> = left_out
                        .iter()
                        .map(|(id, _)| id.to_string())
                        .chain(taken.iter().map(B256::to_string))
                        .collect();
                    let request = crate::api::StoragePlacementRequest {
                        replicas: missing as u32,
                        bytes,
                        region: region.map(str::to_owned),
                        exclude: (!exclude.is_empty()).then(|| exclude.join(",")),
                    };
                    coordinator.placement(&request).await.map_err(|source| {
                        StorageError::Placement {
                            wanted,
                            left_out: if left_out.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    "; left out: {}",
                                    left_out
                                        .iter()
                                        .map(|(_, why)| why.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            },
                            source,
                        }
                    })?
                }
                NodeSource::Placement { .. } => Vec::new(),
            };
            if offered.is_empty() {
                let reasons: Vec<String> = duplicates
                    .iter()
                    .cloned()
                    .chain(left_out.iter().map(|(_, why)| why.clone()))
                    .collect();
                return Err(StorageError::NotEnoughNodes {
                    wanted,
                    usable: wanted - missing,
                    reasons: if reasons.is_empty() {
                        "no more candidates".into()
                    } else {
                        reasons.join(", ")
                    },
                });
            }
            for node in offered {
                match self.unusable(&node).await? {
                    None => {
                        *slots
                            .iter_mut()
                            .find(|s| s.is_none())
                            .expect("no more nodes offered than slots are empty") = Some(node);
                    }
                    Some(why) => {
                        tracing::warn!(target: "decloud::storage", node = %node.node, url = %node.url, why, "node left out");
                        left_out.push((node.node, why));
                    }
                }
            }
        }
    }

    /// Checks the record's nodes again just before its deal is opened, and replaces each one
    /// that is no longer usable with another from `source` (replica roots do not depend on the
    /// node, so nothing is committed again). Saves the record when a node changed.
    async fn recheck_nodes(
        &self,
        record: &mut FileRecord,
        source: NodeSource<'_>,
    ) -> Result<(), StorageError> {
        let mut slots: Vec<Option<StorageNode>> = Vec::with_capacity(record.replicas.len());
        let mut left_out = Vec::new();
        for replica in &record.replicas {
            let node = StorageNode {
                node: replica.node,
                url: replica.url.clone(),
            };
            match self.unusable(&node).await? {
                None => slots.push(Some(node)),
                Some(why) => {
                    tracing::warn!(target: "decloud::storage", node = %node.node, why, "replacing a node before the deal");
                    left_out.push((node.node, why));
                    slots.push(None);
                }
            }
        }
        if left_out.is_empty() {
            return Ok(());
        }
        let bytes = record.segment_count * super::SEGMENT_BYTES;
        self.fill_nodes(source, &mut slots, bytes, &mut left_out)
            .await?;
        for (replica, node) in record.replicas.iter_mut().zip(slots) {
            let node = node.expect("fill_nodes filled every slot");
            replica.node = node.node;
            replica.url = node.url;
        }
        self.index.save(record)
    }

    /// Stores `path` on nodes chosen from `candidates` ([`NodeSource::Given`]); see
    /// [`Self::put_with`].
    pub async fn put(
        &self,
        path: &Path,
        options: &PutOptions,
        candidates: &[StorageNode],
        progress: ProgressFn,
    ) -> Result<FileRecord, StorageError> {
        self.put_with(path, options, NodeSource::Given(candidates), progress)
            .await
    }

    /// Stores `path`: encrypts it, commits to each replica, opens the deal on nodes from
    /// `source` and uploads every replica. A node that is not Active or does not answer is left
    /// out and replaced from `source` before the deal is opened. A put of a name whose earlier
    /// put was interrupted resumes it (same file, same deal, chunks the nodes hold are not sent
    /// again). The deal's repair is set up apart ([`Self::set_up_repair`]).
    pub async fn put_with(
        &self,
        path: &Path,
        options: &PutOptions,
        source: NodeSource<'_>,
        progress: ProgressFn,
    ) -> Result<FileRecord, StorageError> {
        let name = match &options.name {
            Some(name) => name.clone(),
            None => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| {
                    StorageError::Invalid(format!("{} names no file", path.display()))
                })?,
        };
        let size = std::fs::metadata(path)
            .map_err(StorageError::io(path))?
            .len();
        let existing = self.live(&name)?;
        // A deal whose epochs are over takes no more chunks and cannot be extended: the owner
        // removes it (settling the refund) and stores the file anew.
        if let Some(deal) = existing.as_ref().and_then(|r| r.deal) {
            let state = self.deal_state(deal).await?;
            if state.ended() {
                return Err(StorageError::DealEnded {
                    name,
                    deal,
                    end_block: state.end_block,
                });
            }
        }
        let resumed = existing.is_some();
        let mut record = match existing {
            Some(record) if record.uploaded() => {
                return Err(StorageError::AlreadyStored {
                    name,
                    deal: record.deal.expect("uploaded records have a deal"),
                });
            }
            Some(record) => {
                if record.size != size {
                    return Err(StorageError::FileChanged {
                        path: path.to_path_buf(),
                        name,
                        what: format!("{} bytes, was {}", size, record.size),
                    });
                }
                tracing::info!(target: "decloud::storage", name, deal = ?record.deal, "resuming put");
                record
            }
            None => {
                if options.replicas == 0 || options.epochs == 0 || options.price_per_epoch == 0 {
                    return Err(StorageError::Invalid(
                        "replicas, epochs and the price must be above zero".into(),
                    ));
                }
                let depth = self.depth().await?;
                let segments = encoding::segment_count(size)?;
                if segments > 1u64 << depth {
                    return Err(StorageError::Invalid(format!(
                        "{} is {size} bytes: {segments} segments, more than the {} a deal can prove (at most {} bytes per file)",
                        path.display(),
                        1u64 << depth,
                        encoding::max_file_bytes(1u64 << depth)
                    )));
                }
                let mut slots = vec![None; options.replicas];
                self.fill_nodes(
                    source,
                    &mut slots,
                    segments * super::SEGMENT_BYTES,
                    &mut Vec::new(),
                )
                .await?;
                let nodes: Vec<StorageNode> = slots.into_iter().flatten().collect();
                let file_id = FileId::random()
                    .map_err(|e| StorageError::Invalid(format!("no randomness: {e}")))?;
                let codec = FileCodec::new(&self.master, file_id);
                let commitments =
                    commit_file(path, size, &codec, nodes.len(), depth, progress.clone()).await?;
                let record = FileRecord {
                    name: name.clone(),
                    source: path.to_path_buf(),
                    size,
                    file_id: file_id.0,
                    chunks: encoding::chunk_count(size)?,
                    segment_count: segments,
                    chain_id: self.chain_id,
                    market: self.market,
                    deal: None,
                    price_per_epoch: options.price_per_epoch,
                    epochs: options.epochs,
                    replicas: nodes
                        .into_iter()
                        .zip(commitments)
                        .map(|(node, (commitment, hashes))| ReplicaRecord {
                            node: node.node,
                            url: node.url,
                            root: commitment.root,
                            chunk_sha256: hashes,
                            uploaded: false,
                        })
                        .collect(),
                    removed: false,
                    repair: RepairSetup::Pending,
                };
                self.index.save(&record)?;
                record
            }
        };
        if record.deal.is_none() {
            // Only a resumed put can have opened a deal the index does not know.
            let found = if resumed {
                self.find_open_deal(&record).await?
            } else {
                None
            };
            let deal = match found {
                Some(deal) => deal,
                None => {
                    self.recheck_nodes(&mut record, source).await?;
                    self.open_deal(&record).await?
                }
            };
            record.deal = Some(deal);
            self.index.save(&record)?;
        }
        self.upload(&mut record, path, progress).await?;
        Ok(record)
    }

    /// Sets up the repair of `key`'s deal by the orchestrator behind `coordinator`, resuming
    /// where an earlier attempt stopped: asks for its repairer (none offered: recorded, nothing
    /// to do), names it on-chain with `setRepairer` unless the deal already does, then registers
    /// the deal's repair secret (which needs the coordinator's session). Each step is recorded
    /// as it completes; a failure keeps the deal and the uploads.
    pub async fn set_up_repair(
        &self,
        key: &str,
        coordinator: &StorageCoordinator,
    ) -> Result<FileRecord, StorageError> {
        let mut record = self.find(key)?;
        // The nodes holding the replicas now are the ones to ask to delete them.
        for note in self.follow(&mut record).await?.1 {
            log_note(&note);
        }
        let Some(deal) = record.deal else {
            return Err(StorageError::Invalid(format!(
                "{:?} has no deal yet: run put again",
                record.name
            )));
        };
        if record.removed || !record.repair.is_pending() {
            return Ok(record);
        }
        let fail = |reason: String| StorageError::Repair { deal, reason };
        let Some(view) = coordinator
            .repairer()
            .await
            .map_err(|e| fail(e.to_string()))?
        else {
            record.repair = RepairSetup::NotOffered;
            self.index.save(&record)?;
            return Ok(record);
        };
        let repairer: Address = view.address.parse().map_err(|e| {
            fail(format!(
                "the repairer {:?} is no address: {e}",
                view.address
            ))
        })?;
        let market: Option<Address> = view.storage_market.parse().ok();
        if view.chain_id != self.chain_id || market != Some(self.market) {
            return Err(fail(format!(
                "the orchestrator repairs deals of StorageMarket {} on chain {}, not of {} on chain {}",
                view.storage_market, view.chain_id, self.market, self.chain_id
            )));
        }
        let id = U256::from(deal);
        let named = tx::read("StorageMarket", self.market().repairerOf(id)).await?;
        if named != repairer {
            tx::send("StorageMarket", self.market().setRepairer(id, repairer))
                .await
                .map_err(|e| fail(e.to_string()))?;
            tracing::info!(target: "decloud::storage", deal, %repairer, "repairer set");
        }
        record.repair = RepairSetup::RepairerSet { repairer };
        self.index.save(&record)?;
        let secret = record.codec(&self.master).repair_secret().clone();
        coordinator
            .register_repair(deal, &secret)
            .await
            .map_err(|e| fail(e.to_string()))?;
        record.repair = RepairSetup::Registered { repairer };
        self.index.save(&record)?;
        Ok(record)
    }

    /// Records that `key`'s deal is not to be repaired (`--no-repair`); a repair already set up
    /// stays as it is (the owner withdraws it with `setRepairer(deal, 0)`).
    pub fn decline_repair(&self, key: &str) -> Result<FileRecord, StorageError> {
        let mut record = self.find(key)?;
        if record.repair == RepairSetup::Pending {
            record.repair = RepairSetup::Declined;
            self.index.save(&record)?;
        }
        Ok(record)
    }

    /// A deal of this owner with exactly the record's roots (a put interrupted after its deal
    /// was mined but before the index learnt its id), among the latest 256 deals.
    async fn find_open_deal(&self, record: &FileRecord) -> Result<Option<u64>, StorageError> {
        let market = self.market();
        let count = tx::read("StorageMarket", market.dealCount())
            .await?
            .to::<u64>();
        for id in (count.saturating_sub(256) + 1..=count).rev() {
            let deal = tx::read("StorageMarket", market.getDeal(U256::from(id))).await?;
            if deal.owner != self.signer.address() || deal.segmentCount != record.segment_count {
                continue;
            }
            let replicas = tx::read("StorageMarket", market.getReplicas(U256::from(id))).await?;
            if replicas.len() == record.replicas.len()
                && replicas
                    .iter()
                    .zip(&record.replicas)
                    .all(|(on_chain, ours)| {
                        on_chain.root == ours.root && on_chain.nodeId == ours.node
                    })
            {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Approves the deposit (when the allowance is short) and creates the deal.
    async fn open_deal(&self, record: &FileRecord) -> Result<u64, StorageError> {
        let owner = self.signer.address();
        let deposit = U256::from(record.price_per_epoch)
            * U256::from(record.epochs)
            * U256::from(record.replicas.len());
        let usdc = MockUSDC::new(self.usdc, &self.provider);
        let held = tx::read("MockUSDC", usdc.balanceOf(owner)).await?;
        if held < deposit {
            return Err(StorageError::InsufficientFunds {
                needed: deposit,
                held,
            });
        }
        let allowance = tx::read("MockUSDC", usdc.allowance(owner, self.market)).await?;
        if allowance < deposit {
            tx::send("MockUSDC", usdc.approve(self.market, deposit)).await?;
        }
        let receipt = tx::send(
            "StorageMarket",
            self.market().createDeal(
                record.replicas.iter().map(|r| r.node).collect(),
                record.replicas.iter().map(|r| r.root).collect(),
                record.segment_count,
                u128::from(record.price_per_epoch),
                record.epochs,
            ),
        )
        .await?;
        let created = receipt
            .inner
            .logs()
            .iter()
            .find_map(|log| log.log_decode::<StorageMarket::DealCreated>().ok())
            .ok_or_else(|| {
                StorageError::Invalid("createDeal was mined without a DealCreated event".into())
            })?;
        let deal = created.inner.data.dealId.to::<u64>();
        tracing::info!(target: "decloud::storage", deal, name = record.name, "deal opened");
        Ok(deal)
    }

    /// Uploads every replica not yet complete, all at once.
    async fn upload(
        &self,
        record: &mut FileRecord,
        path: &Path,
        progress: ProgressFn,
    ) -> Result<(), StorageError> {
        let deal = record.deal.expect("a deal before the upload");
        let stored = encoding::stored_len(record.size)?;
        let total = stored * record.replicas.len() as u64;
        let done = Arc::new(AtomicU64::new(
            stored * record.replicas.iter().filter(|r| r.uploaded).count() as u64,
        ));
        let codec = record.codec(&self.master);
        let mut tasks = tokio::task::JoinSet::new();
        for (index, replica) in record.replicas.iter().enumerate() {
            if replica.uploaded {
                continue;
            }
            let client = self.node_client(replica.node, &replica.url);
            let replica_record = replica.clone();
            let (codec, path, progress, done) = (
                codec.clone(),
                path.to_path_buf(),
                progress.clone(),
                done.clone(),
            );
            let (name, size) = (record.name.clone(), record.size);
            tasks.spawn(async move {
                let result = upload_replica(
                    &client,
                    deal,
                    index as u32,
                    &replica_record,
                    &codec,
                    (&path, &name, size),
                    |bytes| {
                        let done = done.fetch_add(bytes, Ordering::Relaxed) + bytes;
                        progress(Progress {
                            phase: Phase::Upload,
                            done,
                            total,
                        });
                    },
                )
                .await;
                (index, result)
            });
        }
        let mut failed = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (index, result) = joined.expect("upload tasks do not panic");
            match result {
                Ok(()) => {
                    record.replicas[index].uploaded = true;
                    self.index.save(record)?;
                }
                Err(StorageError::FileChanged { .. }) if failed.is_empty() => {
                    let error = result.expect_err("matched an error");
                    tasks.abort_all();
                    return Err(error);
                }
                Err(e) => failed.push((
                    format!("replica {index} on {}", record.replicas[index].url),
                    e.to_string(),
                )),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(StorageError::UploadFailed {
                deal,
                failures: failures(&failed),
            })
        }
    }

    /// Downloads `key` (a name or deal id) to `out`: each chunk from the first replica that
    /// serves it intact, checked, unmasked and decrypted. `out` is written only when every
    /// chunk arrived (through a temporary file renamed over it). The deal's replicas are
    /// followed on-chain first (see the module docs); what that finds is logged.
    pub async fn get(
        &self,
        key: &str,
        out: &Path,
        progress: ProgressFn,
    ) -> Result<FileRecord, StorageError> {
        let mut record = self.find(key)?;
        let deal = match record.deal {
            Some(deal) if record.uploaded() => deal,
            deal => {
                return Err(StorageError::Incomplete {
                    name: record.name.clone(),
                    deal: deal.unwrap_or_default(),
                });
            }
        };
        let (_, notes) = self.follow(&mut record).await?;
        let mut skipped: Vec<Option<String>> = vec![None; record.replicas.len()];
        for note in &notes {
            log_note(note);
            if let FollowNote::Unresolved { replica, .. } = note {
                skipped[*replica as usize] = Some(note.to_string());
            }
        }
        let codec = record.codec(&self.master);
        let clients: Vec<Result<NodeClient, String>> = record
            .replicas
            .iter()
            .zip(skipped)
            .map(|(r, skip)| match skip {
                Some(why) => Err(why),
                None => Ok(self.node_client(r.node, &r.url)),
            })
            .collect();
        let file_name = out
            .file_name()
            .ok_or_else(|| StorageError::Invalid(format!("{} names no file", out.display())))?;
        let tmp = out.with_file_name(format!(".{}.decloud-partial", file_name.to_string_lossy()));
        let result = self
            .download(&record, deal, &codec, &clients, &tmp, progress)
            .await;
        match result {
            Ok(()) => {
                std::fs::rename(&tmp, out).map_err(StorageError::io(out))?;
                Ok(record)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    async fn download(
        &self,
        record: &FileRecord,
        deal: u64,
        codec: &FileCodec,
        clients: &[Result<NodeClient, String>],
        tmp: &Path,
        progress: ProgressFn,
    ) -> Result<(), StorageError> {
        let mut file = File::create(tmp).map_err(StorageError::io(tmp))?;
        let mut preferred = 0usize;
        let mut done = 0u64;
        for index in 0..record.chunks {
            let mut reasons = Vec::new();
            let mut plaintext = None;
            for attempt in 0..clients.len() {
                let replica = (preferred + attempt) % clients.len();
                let client = match &clients[replica] {
                    Ok(client) => client,
                    Err(why) => {
                        reasons.push((format!("replica {replica}"), why.clone()));
                        continue;
                    }
                };
                let expected = record.replicas[replica].chunk_sha256[index as usize];
                let fetched = client
                    .get_chunk(deal, replica as u32, index, expected)
                    .await;
                match fetched {
                    Ok(stored) => match codec.decode(replica as u32, index, stored) {
                        Ok(data) => {
                            plaintext = Some(data);
                            preferred = replica;
                            break;
                        }
                        // The bytes are the ones stored (their hash matched the record):
                        // only the key can be wrong.
                        Err(EncodingError::Decrypt { index }) => {
                            return Err(StorageError::WrongKey {
                                name: record.name.clone(),
                                index,
                            });
                        }
                        Err(e) => reasons.push((format!("replica {replica}"), e.to_string())),
                    },
                    Err(e) => {
                        tracing::warn!(target: "decloud::storage", deal, replica, index, error = %e, "replica failed; trying the next");
                        reasons.push((format!("replica {replica}"), e.to_string()));
                    }
                }
            }
            let Some(data) = plaintext else {
                return Err(StorageError::NoReplica {
                    name: record.name.clone(),
                    index,
                    reasons: failures(&reasons),
                });
            };
            file.write_all(&data).map_err(StorageError::io(tmp))?;
            done += data.len() as u64;
            progress(Progress {
                phase: Phase::Download,
                done,
                total: record.size,
            });
        }
        file.sync_all().map_err(StorageError::io(tmp))
    }

    /// Compares `record`'s replicas with its deal on-chain. A replica whose node changed (a
    /// repair moved it) gets its new node's chunk API from the orchestrator, and the record is
    /// saved naming it. Returns the nodes on-chain and what was found; a replica in an
    /// [`FollowNote::Unresolved`] note keeps its recorded node. A chain that cannot be read
    /// leaves the record as it is ([`FollowNote::ChainUnreadable`]).
    async fn follow(
        &self,
        record: &mut FileRecord,
    ) -> Result<(Vec<B256>, Vec<FollowNote>), StorageError> {
        let recorded: Vec<B256> = record.replicas.iter().map(|r| r.node).collect();
        let Some(deal) = record.deal else {
            return Ok((recorded, Vec::new()));
        };
        let on_chain =
            match tx::read("StorageMarket", self.market().getReplicas(U256::from(deal))).await {
                Ok(replicas) => replicas,
                Err(e) => {
                    let note = FollowNote::ChainUnreadable {
                        deal,
                        reason: e.to_string(),
                    };
                    return Ok((recorded, vec![note]));
                }
            };
        if on_chain.len() != record.replicas.len() {
            return Err(StorageError::Invalid(format!(
                "deal {deal} has {} replicas on-chain but the local record of {:?} names {}: \
                 the record is not this deal's",
                on_chain.len(),
                record.name,
                record.replicas.len()
            )));
        }
        let mut notes = Vec::new();
        for (index, (held, replica)) in on_chain.iter().zip(&mut record.replicas).enumerate() {
            if held.nodeId == replica.node {
                continue;
            }
            let replica_index = index as u32;
            // A repair rebuilds the same bytes (same root): the recorded chunk hashes still
            // check them. Another root means the record cannot check what the node serves.
            let found = if held.root != replica.root {
                Err(format!(
                    "its commitment on-chain {:#x} is not the recorded {:#x}",
                    held.root, replica.root
                ))
            } else {
                self.chunk_api_of(held.nodeId).await
            };
            match found {
                Ok(url) => {
                    notes.push(FollowNote::Moved {
                        replica: replica_index,
                        from: replica.node,
                        to: held.nodeId,
                        url: url.clone(),
                    });
                    replica.node = held.nodeId;
                    replica.url = url;
                }
                Err(reason) => notes.push(FollowNote::Unresolved {
                    replica: replica_index,
                    to: held.nodeId,
                    reason,
                }),
            }
        }
        if notes.iter().any(|n| matches!(n, FollowNote::Moved { .. })) {
            self.index.save(record)?;
        }
        Ok((on_chain.iter().map(|r| r.nodeId).collect(), notes))
    }

    /// The chunk API of `node`, as the orchestrator knows it.
    async fn chunk_api_of(&self, node: B256) -> Result<Url, String> {
        let Some(coordinator) = &self.coordinator else {
            return Err("no orchestrator is configured to tell where it serves".into());
        };
        match coordinator.storage_node(node).await {
            Ok(Some(view)) => {
                let url = view
                    .url
                    .ok_or("the orchestrator knows no chunk API of it (its agent reports none)")?;
                Url::parse(&url).map_err(|e| {
                    format!("the orchestrator gives a malformed chunk API {url:?}: {e}")
                })
            }
            Ok(None) => Err(format!(
                "the orchestrator {} knows no storage node of that id",
                coordinator.base()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn deal_state(&self, deal: u64) -> Result<DealState, StorageError> {
        let market = self.market();
        let on_chain = tx::read("StorageMarket", market.getDeal(U256::from(deal))).await?;
        let epoch_blocks = tx::read("StorageMarket", market.epochBlocks()).await?;
        let block = self
            .provider
            .get_block_number()
            .await
            .map_err(Error::from)?;
        Ok(DealState {
            proven_epochs: on_chain.provenEpochs,
            epochs: on_chain.epochs,
            remaining: on_chain.remaining,
            settled: on_chain.settled,
            current_epoch: block.saturating_sub(on_chain.startBlock) / epoch_blocks,
            end_block: on_chain.startBlock + u64::from(on_chain.epochs) * epoch_blocks,
        })
    }

    /// Every file of this chain and market with its deal's state and the replicas' nodes
    /// on-chain (records of moved replicas are updated, as by `get`).
    pub async fn list(&self) -> Result<Vec<FileStatus>, StorageError> {
        let mut out = Vec::new();
        for mut record in self.records()? {
            let deal = match record.deal {
                Some(deal) => Some(self.deal_state(deal).await?),
                None => None,
            };
            let (nodes, notes) = self.follow(&mut record).await?;
            out.push(FileStatus {
                record,
                deal,
                nodes,
                notes,
            });
        }
        Ok(out)
    }

    /// Removes `key`: ends the deal after the current epoch (`endDeal`), asks every node to delete its
    /// replica, and settles the deal when it has ended (the refund of unproven epochs goes to
    /// the owner). The record stays in the index, marked removed, until the deal settles.
    pub async fn remove(&self, key: &str) -> Result<Removal, StorageError> {
        let mut record = self.find(key)?;
        // The nodes holding the replicas now are the ones to ask to delete them.
        for note in self.follow(&mut record).await?.1 {
            log_note(&note);
        }
        let Some(deal) = record.deal else {
            self.index.delete(&record)?;
            return Ok(Removal {
                deal: None,
                deletions: Vec::new(),
                ended: false,
                refunded: None,
                settles_at_block: None,
            });
        };
        let mut state = self.deal_state(deal).await?;
        let mut ended = false;
        // A deal with epochs after the current one ends after it, so the unproven rest is
        // refunded once that epoch closes. A deal in its last epoch (or ended by an earlier
        // `rm`) already ends then, and one that has ended cannot be ended again.
        if !state.ended() && state.current_epoch + 1 < u64::from(state.epochs) {
            tx::send("StorageMarket", self.market().endDeal(U256::from(deal))).await?;
            ended = true;
            state = self.deal_state(deal).await?;
        }
        let mut deletions = Vec::new();
        for (index, replica) in record.replicas.iter().enumerate() {
            let outcome = self
                .node_client(replica.node, &replica.url)
                .delete_replica(deal, index as u32)
                .await
                .err()
                .map(|e| e.to_string());
            deletions.push((replica.node, outcome));
        }
        record.removed = true;
        let block = self
            .provider
            .get_block_number()
            .await
            .map_err(Error::from)?;
        let mut refunded = None;
        if state.settled {
            self.index.delete(&record)?;
        } else if block >= state.end_block {
            let receipt = tx::send("StorageMarket", self.market().settle(U256::from(deal))).await?;
            refunded = receipt
                .inner
                .logs()
                .iter()
                .find_map(|log| log.log_decode::<StorageMarket::DealSettled>().ok())
                .map(|e| e.inner.data.refund);
            self.index.delete(&record)?;
        } else {
            self.index.save(&record)?;
        }
        Ok(Removal {
            deal: Some(deal),
            deletions,
            ended,
            settles_at_block: (refunded.is_none() && !state.settled).then_some(state.end_block),
            refunded,
        })
    }
}

/// Logs what following a deal on-chain found (the CLI shows these lines on stderr).
fn log_note(note: &FollowNote) {
    match note {
        FollowNote::Moved { .. } => tracing::info!(target: "decloud::storage", "{note}"),
        FollowNote::Unresolved { .. } | FollowNote::ChainUnreadable { .. } => {
            tracing::warn!(target: "decloud::storage", "{note}")
        }
    }
}

/// Reads plaintext chunk `index` of the file (size `size`).
fn read_chunk(
    file: &mut File,
    path: &Path,
    size: u64,
    index: u32,
) -> Result<Vec<u8>, StorageError> {
    let len = encoding::plaintext_len(size, index);
    let mut data = vec![0u8; len];
    file.seek(SeekFrom::Start(u64::from(index) * CHUNK_PLAINTEXT as u64))
        .and_then(|_| file.read_exact(&mut data))
        .map_err(StorageError::io(path))?;
    Ok(data)
}

/// Encrypts the file once and commits to each of `replicas` replicas: per replica, the
/// commitment and the SHA-256 of each stored chunk. Runs on the blocking pool, one thread per
/// replica for the Poseidon hashing.
async fn commit_file(
    path: &Path,
    size: u64,
    codec: &FileCodec,
    replicas: usize,
    depth: usize,
    progress: ProgressFn,
) -> Result<Vec<(Commitment, Vec<B256>)>, StorageError> {
    let (path, codec) = (path.to_path_buf(), codec.clone());
    tokio::task::spawn_blocking(move || {
        let count = encoding::chunk_count(size)?;
        let mut file = File::open(&path).map_err(StorageError::io(&path))?;
        let mut committers: Vec<ReplicaCommitter> = (0..replicas)
            .map(|_| ReplicaCommitter::new(depth))
            .collect();
        let mut hashes: Vec<Vec<B256>> = vec![Vec::with_capacity(count as usize); replicas];
        let mut done = 0u64;
        for index in 0..count {
            let plaintext = read_chunk(&mut file, &path, size, index)?;
            let sealed = codec.seal(index, &plaintext);
            let results: Vec<(usize, B256, Vec<decloud_prover::Fr>)> =
                std::thread::scope(|scope| {
                    let handles: Vec<_> = (0..replicas)
                        .map(|r| {
                            let (codec, sealed) = (&codec, &sealed);
                            scope.spawn(move || {
                                let stored = codec.mask(r as u32, index, sealed);
                                (
                                    stored.len(),
                                    sha256(&stored),
                                    encoding::leaf_hashes(&stored),
                                )
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("hashing does not panic"))
                        .collect()
                });
            for (r, (bytes, hash, leaves)) in results.into_iter().enumerate() {
                committers[r].push_leaves(bytes, leaves)?;
                hashes[r].push(hash);
            }
            done += plaintext.len() as u64;
            progress(Progress {
                phase: Phase::Commit,
                done,
                total: size,
            });
        }
        let total = size * replicas as u64;
        let mut done = 0;
        let mut commitments = Vec::with_capacity(replicas);
        for (committer, hashes) in committers.into_iter().zip(hashes) {
            commitments.push((committer.finish()?, hashes));
            done += size;
            progress(Progress {
                phase: Phase::Tree,
                done,
                total,
            });
        }
        Ok(commitments)
    })
    .await
    .expect("the commitment task does not panic")
}

/// Uploads one replica, resuming: chunks the node lists with the recorded hash are skipped;
/// every chunk made from the file must hash to the recorded value (else the file changed).
async fn upload_replica(
    client: &NodeClient,
    deal: u64,
    replica: u32,
    record: &ReplicaRecord,
    codec: &FileCodec,
    (path, name, size): (&Path, &str, u64),
    mut progress: impl FnMut(u64),
) -> Result<(), StorageError> {
    let held: std::collections::HashMap<u32, B256> = client
        .manifest(deal, replica)
        .await?
        .chunks
        .into_iter()
        .map(|c| (c.index, c.sha256))
        .collect();
    let mut file = File::open(path).map_err(StorageError::io(path))?;
    for (index, expected) in record.chunk_sha256.iter().enumerate() {
        let index = index as u32;
        let stored_len = (encoding::plaintext_len(size, index) + encoding::TAG_BYTES) as u64;
        if held.get(&index) == Some(expected) {
            progress(stored_len);
            continue;
        }
        let plaintext = read_chunk(&mut file, path, size, index)?;
        let stored = codec.mask(replica, index, &codec.seal(index, &plaintext));
        if sha256(&stored) != *expected {
            return Err(StorageError::FileChanged {
                path: path.to_path_buf(),
                name: name.to_owned(),
                what: format!("chunk {index} differs"),
            });
        }
        client.put_chunk(deal, replica, index, stored).await?;
        progress(stored_len);
    }
    Ok(())
}
