//! Proving: every epoch, each replica this node holds and StorageMarket still places on it is
//! proven with `decloud-prover` and the proof is sent with `submitProof`, from the node key.
//!
//! Per replica and epoch, once the epoch's first block is mined:
//!
//! 1. the placement is read again (a replica moved to another node is no longer proven here);
//! 2. every chunk of the replica is read back and checked against its SHA-256 (the chunk store's
//!    read check): a damaged or missing chunk means the replica cannot be proven, which is
//!    reported (heartbeat, log) instead of being hidden until a challenge happens to land on it;
//! 3. the Poseidon leaves of the replica come from a cache (`<data_dir>/prover-cache/`), keyed by
//!    the digest of the replica's chunk hashes and rebuilt when the chunks change; the tree built
//!    from them must have the replica's on-chain root;
//! 4. the epoch's randomness is recorded on-chain if nobody has yet (`recordEpochRandomness`), so
//!    a slow proof never outlives the 256 blocks `blockhash` can see;
//! 5. the seed is read (`epochSeed`), the challenged segments are proven, and the proof is sent.
//!
//! Never twice: `isProven` is read before proving, and a sent proof's transaction is written to
//! the journal (`<data_dir>/storage-proofs.json`) before its receipt is awaited, so a restarted
//! agent waits for that transaction instead of sending another. Chain errors are retried at the
//! next round; a proof the verifier rejects, or a damaged replica, is not retried within the
//! epoch.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use alloy::{
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider},
};
use decloud_prover::{
    CircuitParams, Fr, Keys, MerkleTree, SEGMENT_BYTES, challenged_indices, fr_from_be_bytes,
    fr_to_be_bytes, hash_segment, hash_segments, proof_to_solidity,
};
use decloud_sdk::{
    Error as SdkError, RevertError,
    bindings::{
        DevGroth16Verifier, StorageMarket, storage_market::StorageMarket::StorageMarketErrors,
    },
    storage::{ReplicaManifest, ReplicaProofs},
    tx,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::{ChunkStore, ReplicaKey, StorageError};

/// How often the prover looks at the chain (Polygon makes a block every 2 s).
pub const PROVE_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The proof journal in the data directory.
pub const PROOF_JOURNAL_FILE: &str = "storage-proofs.json";
/// The leaf cache directory in the data directory.
pub const PROVER_CACHE_DIR: &str = "prover-cache";

const SEGMENT: u64 = SEGMENT_BYTES as u64;

fn chain(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Chain(format!("{what}: {e}"))
}

/// Picks the proving keys for the market's verifier: the development circuit's keys (derived
/// from the public development seed in a few seconds) when the market verifies with
/// `DevGroth16Verifier`, else the keys in `configured` (`storage.proving_keys`), which must be of
/// the market's depth.
pub async fn select_keys(
    provider: &DynProvider,
    market: Address,
    configured: Option<&Path>,
) -> Result<Keys, StorageError> {
    let contract = StorageMarket::new(market, provider);
    let verifier = tx::read("StorageMarket", contract.verifier())
        .await
        .map_err(|e| chain(&format!("reading StorageMarket {market}'s verifier"), e))?;
    let max_segments = tx::read("StorageMarket", contract.maxSegmentCount())
        .await
        .map_err(|e| chain("reading StorageMarket's maxSegmentCount", e))?;
    let code = provider
        .get_code_at(verifier)
        .await
        .map_err(|e| chain(&format!("reading the verifier at {verifier}"), e))?;
    let keys = if code == DevGroth16Verifier::DEPLOYED_BYTECODE {
        if let Some(dir) = configured {
            warn!(target: "agent::prove", dir = %dir.display(), "StorageMarket verifies the DEVELOPMENT circuit: storage.proving_keys is not used");
        }
        info!(target: "agent::prove", %verifier, "StorageMarket verifies the DEVELOPMENT circuit: deriving its development keys");
        tokio::task::spawn_blocking(|| Keys::dev_setup(CircuitParams::DEVELOPMENT))
            .await
            .map_err(|e| StorageError::Prover(e.to_string()))?
            .map_err(|e| StorageError::Prover(format!("development keys: {e}")))?
    } else {
        let Some(dir) = configured else {
            return Err(StorageError::Prover(format!(
                "storage.proving_keys is required: StorageMarket {market}'s verifier {verifier} is not \
                 the development-circuit verifier, so the node needs the proving keys of its circuit \
                 (the ceremony's key directory; on a local chain, `decloud-prover setup --keys DIR`)"
            )));
        };
        let path = dir.to_path_buf();
        info!(target: "agent::prove", dir = %path.display(), "loading the proving keys");
        tokio::task::spawn_blocking(move || Keys::load(&path))
            .await
            .map_err(|e| StorageError::Prover(e.to_string()))?
            .map_err(|e| {
                StorageError::Prover(format!(
                    "storage.proving_keys {}: cannot load the keys: {e}",
                    dir.display()
                ))
            })?
    };
    if keys.params.max_segments() != max_segments {
        return Err(StorageError::Prover(format!(
            "the proving keys are for {} (at most {} segments) but StorageMarket {market} takes at \
             most {max_segments}: they are not the keys of its verifier",
            keys.params,
            keys.params.max_segments()
        )));
    }
    info!(target: "agent::prove", params = %keys.params, "proving keys ready");
    Ok(keys)
}

/// A proof sent and not yet known to be mined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    epoch: u32,
    tx: B256,
}

/// What the node knows of its proofs of one replica; survives restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ReplicaJournal {
    deal: u64,
    replica: u32,
    proven_epochs: u32,
    missed_epochs: u32,
    #[serde(default)]
    last_proven_epoch: Option<u32>,
    #[serde(default)]
    last_proof_at: Option<u64>,
    #[serde(default)]
    last_proof_tx: Option<B256>,
    /// Epochs below this one are counted as proven or missed. Counting starts at the epoch in
    /// which the node first found the replica placed on it.
    #[serde(default)]
    counted_to: Option<u32>,
    #[serde(default)]
    pending: Option<Pending>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct JournalFile {
    replicas: Vec<ReplicaJournal>,
}

/// The proof journal: per replica, proven and missed epochs, the last proof, a proof in flight
/// and why the current epoch cannot be proven. Written atomically after each change.
#[derive(Debug)]
pub struct ProofLog {
    path: PathBuf,
    replicas: Mutex<BTreeMap<ReplicaKey, ReplicaJournal>>,
}

impl ProofLog {
    /// Opens (or starts) the journal at `path`.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let replicas = match fs::read(path) {
            Ok(bytes) => {
                let file: JournalFile = serde_json::from_slice(&bytes).map_err(|e| {
                    StorageError::Prover(format!(
                        "the proof journal {} is corrupt: {e}",
                        path.display()
                    ))
                })?;
                file.replicas
                    .into_iter()
                    .map(|j| ((j.deal, j.replica), j))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(StorageError::Io {
                    action: "reading",
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            replicas: Mutex::new(replicas),
        })
    }

    fn get(&self, key: ReplicaKey) -> ReplicaJournal {
        self.replicas
            .lock()
            .expect("proof log lock")
            .get(&key)
            .cloned()
            .unwrap_or(ReplicaJournal {
                deal: key.0,
                replica: key.1,
                ..Default::default()
            })
    }

    /// Applies `change` to a replica's entry and writes the journal if anything changed.
    fn update(
        &self,
        key: ReplicaKey,
        change: impl FnOnce(&mut ReplicaJournal),
    ) -> Result<(), StorageError> {
        let mut replicas = self.replicas.lock().expect("proof log lock");
        let entry = replicas.entry(key).or_insert_with(|| ReplicaJournal {
            deal: key.0,
            replica: key.1,
            ..Default::default()
        });
        let before = entry.clone();
        change(entry);
        if *entry == before {
            return Ok(());
        }
        let file = JournalFile {
            replicas: replicas.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| StorageError::Prover(format!("encoding the proof journal: {e}")))?;
        let tmp = self.path.with_extension("json.tmp");
        let io = |action, path: &Path, e| StorageError::Io {
            action,
            path: path.to_path_buf(),
            source: e,
        };
        {
            use std::io::Write as _;
            let mut f = fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
            f.write_all(&bytes).map_err(|e| io("writing", &tmp, e))?;
            f.sync_all().map_err(|e| io("flushing", &tmp, e))?;
        }
        fs::rename(&tmp, &self.path).map_err(|e| io("renaming", &self.path, e))
    }

    /// Drops the entries of replicas the store no longer holds.
    fn retain(&self, held: &[ReplicaKey]) {
        self.replicas
            .lock()
            .expect("proof log lock")
            .retain(|key, _| held.contains(key));
    }

    /// The heartbeat's view of every replica in the journal.
    pub fn reports(&self) -> Vec<ReplicaProofs> {
        self.replicas
            .lock()
            .expect("proof log lock")
            .values()
            .map(|j| ReplicaProofs {
                deal: j.deal,
                replica: j.replica,
                proven_epochs: j.proven_epochs,
                missed_epochs: j.missed_epochs,
                last_proven_epoch: j.last_proven_epoch,
                last_proof_at: j.last_proof_at,
                last_proof_tx: j.last_proof_tx,
                error: j.error.clone(),
            })
            .collect()
    }
}

/// Why an epoch of a replica could not be proven.
#[derive(Debug)]
enum Failure {
    /// The replica's data cannot give a valid proof this epoch (damaged, not matching its root,
    /// rejected by the verifier): not retried until the next epoch.
    Replica(String),
    /// Not yet possible (an upload still running): retried at the next round.
    NotReady(String),
    /// The chain or the disk failed: retried at the next round.
    Transient(StorageError),
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Corrupt { .. } | StorageError::ChunkNotFound { .. } => {
                Self::Replica(e.to_string())
            }
            other => Self::Transient(other),
        }
    }
}

/// The deal's schedule and this replica's placement, as read this round.
#[derive(Debug, Clone, Copy)]
struct Placement {
    segment_count: u64,
    root: U256,
    epoch: u32,
}

/// Proves the node's replicas every epoch (see the module docs).
#[derive(Debug)]
pub struct Prover {
    store: Arc<ChunkStore>,
    log: Arc<ProofLog>,
    provider: DynProvider,
    market: Address,
    node: B256,
    keys: Arc<Keys>,
    epoch_blocks: u64,
    cache_dir: PathBuf,
    /// Replicas whose current epoch failed for good: (replica, epoch).
    failed: HashMap<ReplicaKey, u32>,
}

impl Prover {
    /// A prover sending from `provider`'s signer (the node key) for node `node`.
    pub async fn new(
        store: Arc<ChunkStore>,
        log: Arc<ProofLog>,
        provider: DynProvider,
        market: Address,
        node: B256,
        keys: Keys,
        data_dir: &Path,
    ) -> Result<Self, StorageError> {
        let epoch_blocks = tx::read(
            "StorageMarket",
            StorageMarket::new(market, &provider).epochBlocks(),
        )
        .await
        .map_err(|e| chain("reading StorageMarket's epoch length", e))?;
        let cache_dir = data_dir.join(PROVER_CACHE_DIR);
        fs::create_dir_all(&cache_dir).map_err(|e| StorageError::Io {
            action: "creating",
            path: cache_dir.clone(),
            source: e,
        })?;
        Ok(Self {
            store,
            log,
            provider,
            market,
            node,
            keys: Arc::new(keys),
            epoch_blocks,
            cache_dir,
            failed: HashMap::new(),
        })
    }

    /// Proves round after round until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        info!(target: "agent::prove", market = %self.market, params = %self.keys.params, epoch_blocks = self.epoch_blocks, "proving the node's replicas every epoch");
        loop {
            if let Err(e) = self.round().await {
                warn!(target: "agent::prove", error = %e, "proving round failed; retrying");
            }
            tokio::select! {
                () = tokio::time::sleep(PROVE_POLL_INTERVAL) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One look at every replica the store holds.
    pub async fn round(&mut self) -> Result<(), StorageError> {
        let block = self
            .provider
            .get_block_number()
            .await
            .map_err(|e| chain("reading the block number", e))?;
        let manifests = self.store.manifests();
        self.log.retain(
            &manifests
                .iter()
                .map(|m| (m.deal, m.replica))
                .collect::<Vec<_>>(),
        );
        for manifest in manifests {
            let key = (manifest.deal, manifest.replica);
            if let Err(e) = self.replica(&manifest, block).await {
                warn!(target: "agent::prove", deal = key.0, replica = key.1, error = %e, "will retry");
                self.log.update(key, |j| j.error = Some(e.to_string()))?;
            }
        }
        Ok(())
    }

    async fn replica(
        &mut self,
        manifest: &ReplicaManifest,
        block: u64,
    ) -> Result<(), StorageError> {
        let key = (manifest.deal, manifest.replica);
        let (deal_id, replica) = (U256::from(key.0), U256::from(key.1));
        let market = StorageMarket::new(self.market, &self.provider);
        let deal = tx::read("StorageMarket", market.getDeal(deal_id))
            .await
            .map_err(|e| chain(&format!("reading deal {}", key.0), e))?;
        let start = deal.startBlock;
        let end = start + u64::from(deal.epochs) * self.epoch_blocks;
        let current = if block >= end {
            deal.epochs
        } else {
            u32::try_from(block.saturating_sub(start) / self.epoch_blocks).unwrap_or(u32::MAX)
        };
        // Placement is read every round: a replaced replica stops being proven here at once.
        let replicas = tx::read("StorageMarket", market.getReplicas(deal_id))
            .await
            .map_err(|e| chain(&format!("reading the replicas of deal {}", key.0), e))?;
        let Some(placed) = replicas.get(key.1 as usize) else {
            return Ok(());
        };
        if placed.nodeId != self.node {
            return self.log.update(key, |j| {
                j.pending = None;
                j.error = Some(format!(
                    "replica {} of deal {} is placed on node {}: no longer proven here",
                    key.1, key.0, placed.nodeId
                ));
            });
        }

        // A proof sent before (this run or the last): settle it from its receipt first.
        if let Some(pending) = self.log.get(key).pending
            && !self.settle_pending(key, pending).await?
        {
            return Ok(());
        }

        // Closed epochs not yet counted: proven or missed, as the chain says.
        let counted_to = self.log.get(key).counted_to.unwrap_or(current);
        let mut proven = Vec::new();
        let mut missed = 0u32;
        for epoch in counted_to..current {
            if tx::read("StorageMarket", market.isProven(deal_id, replica, epoch))
                .await
                .map_err(|e| chain("reading isProven", e))?
            {
                proven.push(epoch);
            } else {
                missed += 1;
            }
        }
        if missed > 0 {
            warn!(target: "agent::prove", deal = key.0, replica = key.1, missed, "epochs closed unproven");
        }
        self.log.update(key, |j| {
            j.proven_epochs += proven.len() as u32;
            j.missed_epochs += missed;
            if let Some(&last) = proven.last() {
                j.last_proven_epoch = j.last_proven_epoch.max(Some(last));
            }
            j.counted_to = Some(counted_to.max(current));
        })?;

        if current >= deal.epochs {
            return Ok(());
        }
        if self.log.get(key).counted_to.is_some_and(|c| c > current) {
            return Ok(()); // proven this epoch
        }
        if self.failed.get(&key) == Some(&current) {
            return Ok(());
        }
        let epoch_start = start + u64::from(current) * self.epoch_blocks;
        if block <= epoch_start {
            return Ok(()); // the randomness (the first block's hash) is not readable yet
        }
        if tx::read("StorageMarket", market.isProven(deal_id, replica, current))
            .await
            .map_err(|e| chain("reading isProven", e))?
        {
            return self.record_proven(key, current, None).await;
        }
        let placement = Placement {
            segment_count: deal.segmentCount,
            root: placed.root,
            epoch: current,
        };
        match self.prove_and_submit(manifest, placement).await {
            Ok(()) => Ok(()),
            Err(Failure::Replica(why)) => {
                error!(target: "agent::prove", deal = key.0, replica = key.1, epoch = current, reason = %why, "cannot prove this epoch");
                self.failed.insert(key, current);
                self.log.update(key, |j| j.error = Some(why))
            }
            Err(Failure::NotReady(why)) => {
                debug!(target: "agent::prove", deal = key.0, replica = key.1, epoch = current, reason = %why, "not provable yet");
                self.log.update(key, |j| j.error = Some(why))
            }
            Err(Failure::Transient(e)) => Err(e),
        }
    }

    /// Settles a proof sent earlier. Returns whether proving may go on (the transaction failed
    /// or vanished), or `false` while it is still pending or once it was mined.
    async fn settle_pending(
        &self,
        key: ReplicaKey,
        pending: Pending,
    ) -> Result<bool, StorageError> {
        let receipt = self
            .provider
            .get_transaction_receipt(pending.tx)
            .await
            .map_err(|e| chain("reading a proof's receipt", e))?;
        match receipt {
            Some(receipt) if receipt.status() => {
                info!(target: "agent::prove", deal = key.0, replica = key.1, epoch = pending.epoch, tx = %pending.tx, "proof from before the restart was mined");
                self.record_proven(key, pending.epoch, Some((pending.tx, receipt.block_number)))
                    .await?;
                Ok(false)
            }
            Some(_) => {
                warn!(target: "agent::prove", deal = key.0, replica = key.1, epoch = pending.epoch, tx = %pending.tx, "proof transaction reverted");
                // Counted as missed with the closed epochs if it does not get proven after all.
                self.log.update(key, |j| j.pending = None)?;
                Ok(true)
            }
            None => {
                let known = self
                    .provider
                    .get_transaction_by_hash(pending.tx)
                    .await
                    .map_err(|e| chain("reading a pending proof", e))?
                    .is_some();
                if known {
                    return Ok(false); // still in the mempool: wait for it
                }
                warn!(target: "agent::prove", deal = key.0, replica = key.1, epoch = pending.epoch, tx = %pending.tx, "proof transaction unknown to the chain: proving again");
                self.log.update(key, |j| j.pending = None)?;
                Ok(true)
            }
        }
    }

    /// Records epoch `epoch` as proven (by this node's transaction `tx` when known).
    async fn record_proven(
        &self,
        key: ReplicaKey,
        epoch: u32,
        tx: Option<(B256, Option<u64>)>,
    ) -> Result<(), StorageError> {
        let at = match tx.and_then(|(_, block)| block) {
            Some(block) => self
                .provider
                .get_block_by_number(block.into())
                .await
                .map_err(|e| chain("reading a proof's block", e))?
                .map(|b| b.header.timestamp),
            None => None,
        };
        self.log.update(key, |j| {
            if j.counted_to.is_none_or(|c| c <= epoch) {
                j.proven_epochs += 1;
                j.counted_to = Some(epoch + 1);
            }
            j.last_proven_epoch = j.last_proven_epoch.max(Some(epoch));
            if let Some((hash, _)) = tx {
                j.last_proof_tx = Some(hash);
                j.last_proof_at = at.or(j.last_proof_at);
            }
            j.pending = None;
            j.error = None;
        })
    }

    async fn prove_and_submit(
        &mut self,
        manifest: &ReplicaManifest,
        placement: Placement,
    ) -> Result<(), Failure> {
        let key = (manifest.deal, manifest.replica);
        let (deal_id, replica, epoch) = (U256::from(key.0), U256::from(key.1), placement.epoch);

        // Complete? Chunks 0..n without a gap, exactly the deal's segments.
        let bytes = manifest.bytes();
        let contiguous = manifest
            .chunks
            .iter()
            .enumerate()
            .all(|(i, c)| c.index as usize == i);
        if !contiguous || bytes.div_ceil(SEGMENT) != placement.segment_count {
            return Err(Failure::NotReady(format!(
                "the replica is incomplete: {} chunks, {bytes} bytes of the deal's {} segments",
                manifest.chunks.len(),
                placement.segment_count
            )));
        }

        // Every chunk read back and checked; the leaves from the cache or from the chunks.
        let (store, cache_dir, depth) = (
            self.store.clone(),
            self.cache_dir.clone(),
            self.keys.params.depth,
        );
        let owned = manifest.clone();
        let tree =
            tokio::task::spawn_blocking(move || scrub_and_build(&store, &owned, &cache_dir, depth))
                .await
                .map_err(|e| Failure::Transient(StorageError::Prover(e.to_string())))??;
        let root = U256::from_be_bytes(fr_to_be_bytes(&tree.root()));
        if root != placement.root {
            return Err(Failure::Replica(format!(
                "the stored chunks commit to root {root:#x}, not to the replica's on-chain root {:#x}",
                placement.root
            )));
        }

        // The randomness first, so that a long proof never outlives blockhash's window.
        let market = StorageMarket::new(self.market, &self.provider);
        let randomness = tx::read("StorageMarket", market.epochRandomness(deal_id, epoch))
            .await
            .map_err(|e| Failure::Transient(chain("reading the epoch's randomness", e)))?;
        if randomness == B256::ZERO {
            match tx::send(
                "StorageMarket",
                market.recordEpochRandomness(deal_id, epoch),
            )
            .await
            {
                Ok(receipt) => {
                    debug!(target: "agent::prove", deal = key.0, epoch, tx = %receipt.transaction_hash, "epoch randomness recorded");
                }
                Err(e) => return Err(revert_failure("recording the epoch's randomness", e)),
            }
        }
        let seed = tx::read("StorageMarket", market.epochSeed(deal_id, replica, epoch))
            .await
            .map_err(|e| revert_failure("reading the epoch's seed", e))?;
        let seed = fr_from_be_bytes(&seed.to_be_bytes())
            .map_err(|e| Failure::Transient(StorageError::Prover(e.to_string())))?;

        let (store, keys, owned) = (self.store.clone(), self.keys.clone(), manifest.clone());
        let started = std::time::Instant::now();
        let proof =
            tokio::task::spawn_blocking(move || prove_replica(&store, &owned, &keys, &tree, seed))
                .await
                .map_err(|e| Failure::Transient(StorageError::Prover(e.to_string())))??;
        let prove_ms = started.elapsed().as_millis() as u64;
        let words = proof_to_solidity(&proof).map(U256::from_be_bytes);

        let pending = market
            .submitProof(deal_id, replica, epoch, words)
            .send()
            .await
            .map_err(|e| {
                revert_failure(
                    "sending the proof",
                    SdkError::from_contract(e, Some("StorageMarket")),
                )
            })?;
        let hash = *pending.tx_hash();
        self.log
            .update(key, |j| j.pending = Some(Pending { epoch, tx: hash }))
            .map_err(Failure::Transient)?;
        info!(target: "agent::prove", deal = key.0, replica = key.1, epoch, prove_ms, tx = %hash, "proof sent");
        let receipt = pending
            .get_receipt()
            .await
            .map_err(|e| Failure::Transient(chain("waiting for the proof's receipt", e)))?;
        if !receipt.status() {
            // Settled at the next round from the journal's pending entry.
            return Err(Failure::Transient(StorageError::Chain(format!(
                "the proof transaction {hash} reverted"
            ))));
        }
        info!(target: "agent::prove", deal = key.0, replica = key.1, epoch, tx = %hash, gas = receipt.gas_used, "epoch proven");
        self.record_proven(key, epoch, Some((hash, receipt.block_number)))
            .await
            .map_err(Failure::Transient)
    }
}

/// Sorts a failed call: StorageMarket's verdicts on the proof are final for the epoch; the rest
/// is retried.
fn revert_failure(what: &str, e: SdkError) -> Failure {
    match e.revert() {
        Some(RevertError::StorageMarket(StorageMarketErrors::InvalidProof(_))) => Failure::Replica(
            "the verifier rejected the proof: the proving keys do not match StorageMarket's verifier"
                .into(),
        ),
        Some(RevertError::StorageMarket(
            StorageMarketErrors::EpochClosed(_)
            | StorageMarketErrors::RandomnessUnavailable(_)
            | StorageMarketErrors::EpochOutOfRange(_),
        )) => Failure::Replica(format!("{what}: {e}")),
        _ => Failure::Transient(chain(what, e)),
    }
}

/// Digest of a replica's chunk list: the leaf cache is valid while it is unchanged.
fn manifest_digest(manifest: &ReplicaManifest) -> B256 {
    let mut text = Vec::with_capacity(manifest.chunks.len() * 40);
    for chunk in &manifest.chunks {
        text.extend_from_slice(chunk.sha256.as_slice());
        text.extend_from_slice(&chunk.bytes.to_be_bytes());
    }
    decloud_sdk::storage::sha256(&text)
}

fn cache_path(cache_dir: &Path, (deal, replica): ReplicaKey) -> PathBuf {
    cache_dir.join(format!("{deal}-{replica}.leaves"))
}

/// Leaves cached for this chunk list, if any: `digest || leaf_0 || leaf_1 …` (32 bytes each).
fn cached_leaves(path: &Path, digest: B256, segments: u64) -> Option<Vec<Fr>> {
    let bytes = fs::read(path).ok()?;
    if bytes.len() as u64 != 32 * (segments + 1) || bytes[..32] != digest[..] {
        return None;
    }
    bytes[32..]
        .chunks_exact(32)
        .map(|c| fr_from_be_bytes(c.try_into().expect("32-byte chunk")).ok())
        .collect()
}

fn store_leaves(path: &Path, digest: B256, leaves: &[Fr]) {
    let mut bytes = Vec::with_capacity(32 * (leaves.len() + 1));
    bytes.extend_from_slice(digest.as_slice());
    for leaf in leaves {
        bytes.extend_from_slice(&fr_to_be_bytes(leaf));
    }
    let tmp = path.with_extension("tmp");
    if let Err(e) = fs::write(&tmp, &bytes).and_then(|()| fs::rename(&tmp, path)) {
        warn!(target: "agent::prove", path = %path.display(), error = %e, "cannot write the leaf cache");
    }
}

/// Reads every chunk (hash-checked) and returns the replica's Merkle tree, hashing leaves only
/// when the cache does not hold them for this chunk list.
fn scrub_and_build(
    store: &ChunkStore,
    manifest: &ReplicaManifest,
    cache_dir: &Path,
    depth: usize,
) -> Result<MerkleTree, Failure> {
    let key = (manifest.deal, manifest.replica);
    let segments = manifest.bytes().div_ceil(SEGMENT);
    let digest = manifest_digest(manifest);
    let path = cache_path(cache_dir, key);
    let cached = cached_leaves(&path, digest, segments);
    let mut leaves = Vec::with_capacity(if cached.is_some() {
        0
    } else {
        segments as usize
    });
    let mut carry: Vec<u8> = Vec::with_capacity(SEGMENT_BYTES);
    for chunk in &manifest.chunks {
        let (_, data) = store.get(key, chunk.index)?;
        if cached.is_some() {
            continue;
        }
        let mut rest = data.as_slice();
        if !carry.is_empty() {
            let take = (SEGMENT_BYTES - carry.len()).min(rest.len());
            carry.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if carry.len() == SEGMENT_BYTES {
                leaves.push(hash_segment(
                    carry.as_slice().try_into().expect("one segment"),
                ));
                carry.clear();
            }
        }
        let whole = rest.len() / SEGMENT_BYTES * SEGMENT_BYTES;
        leaves.extend(hash_segments(&rest[..whole]));
        carry.extend_from_slice(&rest[whole..]);
    }
    let leaves = match cached {
        Some(leaves) => leaves,
        None => {
            if !carry.is_empty() {
                carry.resize(SEGMENT_BYTES, 0);
                leaves.push(hash_segment(
                    carry.as_slice().try_into().expect("one segment"),
                ));
            }
            store_leaves(&path, digest, &leaves);
            leaves
        }
    };
    MerkleTree::from_leaves(leaves, depth).map_err(|e| Failure::Replica(e.to_string()))
}

/// The challenged segments, read from their chunks (hash-checked), then the proof.
fn prove_replica(
    store: &ChunkStore,
    manifest: &ReplicaManifest,
    keys: &Keys,
    tree: &MerkleTree,
    seed: Fr,
) -> Result<decloud_prover::Proof<decloud_prover::Bn254>, Failure> {
    let key = (manifest.deal, manifest.replica);
    let mut offsets = Vec::with_capacity(manifest.chunks.len());
    let mut at = 0u64;
    for chunk in &manifest.chunks {
        offsets.push((at, chunk.index, chunk.bytes));
        at += chunk.bytes;
    }
    let total = at;
    let mut chunks: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut segments = BTreeMap::new();
    for index in challenged_indices(&keys.params, seed, tree.segment_count()) {
        if segments.contains_key(&index) {
            continue;
        }
        let mut segment = [0u8; SEGMENT_BYTES];
        let (from, to) = (index * SEGMENT, ((index + 1) * SEGMENT).min(total));
        for &(start, chunk, len) in &offsets {
            let (lo, hi) = (from.max(start), to.min(start + len));
            if lo >= hi {
                continue;
            }
            let data = match chunks.entry(chunk) {
                std::collections::hash_map::Entry::Occupied(held) => held.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(store.get(key, chunk)?.1)
                }
            };
            segment[(lo - from) as usize..(hi - from) as usize]
                .copy_from_slice(&data[(lo - start) as usize..(hi - start) as usize]);
        }
        segments.insert(index, segment);
    }
    decloud_prover::prove(keys, tree, &segments, seed).map_err(|e| match e {
        decloud_prover::Error::SegmentMismatch(i) | decloud_prover::Error::MissingSegment(i) => {
            Failure::Replica(format!(
                "segment {i} does not match the replica's commitment"
            ))
        }
        other => Failure::Transient(StorageError::Prover(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use decloud_sdk::storage::ChunkInfo;

    #[test]
    fn the_journal_survives_a_reopen_and_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROOF_JOURNAL_FILE);
        let log = ProofLog::open(&path).unwrap();
        log.update((1, 0), |j| {
            j.proven_epochs = 2;
            j.counted_to = Some(3);
            j.pending = Some(Pending {
                epoch: 3,
                tx: B256::repeat_byte(7),
            });
        })
        .unwrap();
        let reopened = ProofLog::open(&path).unwrap();
        let entry = reopened.get((1, 0));
        assert_eq!(entry.proven_epochs, 2);
        assert_eq!(entry.pending.unwrap().tx, B256::repeat_byte(7));
        assert_eq!(reopened.reports()[0].proven_epochs, 2);
        reopened.retain(&[]);
        assert!(reopened.reports().is_empty());

        std::fs::write(&path, b"{not json").unwrap();
        let e = ProofLog::open(&path).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
    }

    #[test]
    fn the_leaf_cache_follows_the_chunk_list() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = |sha: u8| ReplicaManifest {
            deal: 1,
            replica: 0,
            chunks: vec![ChunkInfo {
                index: 0,
                sha256: B256::repeat_byte(sha),
                bytes: 2048,
            }],
        };
        let path = cache_path(dir.path(), (1, 0));
        let leaves = vec![Fr::from(5u64), Fr::from(6u64)];
        store_leaves(&path, manifest_digest(&manifest(1)), &leaves);
        assert_eq!(
            cached_leaves(&path, manifest_digest(&manifest(1)), 2),
            Some(leaves)
        );
        assert_eq!(cached_leaves(&path, manifest_digest(&manifest(2)), 2), None);
        assert_eq!(cached_leaves(&path, manifest_digest(&manifest(1)), 3), None);
    }
}
