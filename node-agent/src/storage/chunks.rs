//! The chunk store: replicas' chunks on disk, addressed by their SHA-256.
//!
//! ```text
//! <dir>/objects/ab/cd/abcd…        a chunk, named by the hex of its SHA-256 (two-level fan-out)
//! <dir>/replicas/<deal>/<replica>/<index>   the hex hash of the replica's chunk `index`
//! <dir>/tmp/                       files being written; emptied when the store opens
//! ```
//!
//! Every file is written to `tmp/`, flushed to disk, then renamed into place (and the directory
//! flushed), so a crash leaves either the old state or the new one, never a half-written chunk
//! under its final name. A chunk is written before the manifest entry naming it; objects that no
//! entry names (a crash between the two) are removed when the store opens. The hash is checked
//! when a chunk is written (against the hash the owner signed) and again on every read, so a
//! chunk damaged on disk is never served.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File},
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use alloy::primitives::B256;
use decloud_sdk::storage::{ChunkInfo, ReplicaManifest, ReplicaSummary, StorageReport, sha256};
use tracing::warn;

use super::StorageError;

/// A replica: (deal id, replica index).
pub type ReplicaKey = (u64, u32);

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The chunk was written.
    Stored,
    /// The replica already held this chunk at this index (a resumed upload); nothing changed.
    AlreadyStored,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes of distinct objects on disk.
    used: u64,
    /// Each replica's chunks by index: (hash, length).
    replicas: BTreeMap<ReplicaKey, BTreeMap<u32, (B256, u64)>>,
    /// Manifest entries naming each object.
    refs: HashMap<B256, u32>,
}

/// Chunks on disk with a byte quota; safe to share between threads.
#[derive(Debug)]
pub struct ChunkStore {
    root: PathBuf,
    quota: u64,
    state: Mutex<State>,
    tmp_counter: AtomicU64,
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> StorageError {
    StorageError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Flushes a directory so that a rename inside it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing", dir, e))
}

fn parse_hash(text: &str) -> Option<B256> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    text.parse().ok()
}

fn hex_of(hash: &B256) -> String {
    hex::encode(hash.as_slice())
}

impl ChunkStore {
    /// Opens (creating it if needed) the store in `root`, with `quota` bytes. Rebuilds the index
    /// from the manifests, drops entries whose chunk is missing, removes unreferenced chunks and
    /// leftovers of interrupted writes.
    pub fn open(root: &Path, quota: u64) -> Result<Self, StorageError> {
        Self::open_with(root, quota, true)
    }

    /// Reads the store in `root` without changing anything on disk (for `chunks list` beside a
    /// running agent, whose writes in progress must not be disturbed). Its index may show the
    /// entries of a damaged store as they are; use it only to look.
    pub fn inspect(root: &Path, quota: u64) -> Result<Self, StorageError> {
        if !root.is_dir() {
            return Err(io_error(
                "reading",
                root,
                io::Error::new(io::ErrorKind::NotFound, "no chunk store here"),
            ));
        }
        Self::open_with(root, quota, false)
    }

    fn open_with(root: &Path, quota: u64, clean: bool) -> Result<Self, StorageError> {
        if !clean {
            let store = Self {
                root: root.to_owned(),
                quota,
                state: Mutex::new(State::default()),
                tmp_counter: AtomicU64::new(0),
            };
            let state = store.scan(false)?;
            *store.state.lock().expect("chunk store lock") = state;
            return Ok(store);
        }
        for sub in ["objects", "replicas", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, e))?;
        }
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(|e| io_error("reading", &tmp, e))? {
            let path = entry.map_err(|e| io_error("reading", &tmp, e))?.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|e| io_error("removing", &path, e))?;
        }
        let store = Self {
            root: root.to_owned(),
            quota,
            state: Mutex::new(State::default()),
            tmp_counter: AtomicU64::new(0),
        };
        let state = store.scan(true)?;
        *store.state.lock().expect("chunk store lock") = state;
        Ok(store)
    }

    /// Rebuilds the index from the disk; with `clean`, drops dangling entries and orphans.
    fn scan(&self, clean: bool) -> Result<State, StorageError> {
        let mut state = State::default();
        let replicas_dir = self.root.join("replicas");
        let mut sizes: HashMap<B256, u64> = HashMap::new();
        for deal in read_dir_named(&replicas_dir)? {
            let Ok(deal_id) = deal.0.parse::<u64>() else {
                continue;
            };
            for replica in read_dir_named(&deal.1)? {
                let Ok(replica_id) = replica.0.parse::<u32>() else {
                    continue;
                };
                let mut chunks = BTreeMap::new();
                for entry in read_dir_named(&replica.1)? {
                    let Ok(index) = entry.0.parse::<u32>() else {
                        continue;
                    };
                    let text = fs::read_to_string(&entry.1)
                        .map_err(|e| io_error("reading", &entry.1, e))?;
                    let Some(hash) = parse_hash(&text) else {
                        if clean {
                            warn!(target: "agent::storage", path = %entry.1.display(), "unreadable manifest entry, dropped");
                            fs::remove_file(&entry.1)
                                .map_err(|e| io_error("removing", &entry.1, e))?;
                        }
                        continue;
                    };
                    let object = self.object_path(&hash);
                    let len = match sizes.get(&hash) {
                        Some(len) => *len,
                        None => match fs::metadata(&object) {
                            Ok(meta) => meta.len(),
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                if clean {
                                    warn!(target: "agent::storage", deal = deal_id, replica = replica_id, index, "chunk missing on disk, entry dropped");
                                    fs::remove_file(&entry.1)
                                        .map_err(|e| io_error("removing", &entry.1, e))?;
                                }
                                continue;
                            }
                            Err(e) => return Err(io_error("reading", &object, e)),
                        },
                    };
                    if sizes.insert(hash, len).is_none() {
                        state.used += len;
                    }
                    *state.refs.entry(hash).or_default() += 1;
                    chunks.insert(index, (hash, len));
                }
                if !chunks.is_empty() {
                    state.replicas.insert((deal_id, replica_id), chunks);
                }
            }
        }
        if !clean {
            return Ok(state);
        }
        // Objects no manifest names: a crash between writing a chunk and its entry, or between
        // dropping a replica's entries and its chunks.
        let objects = self.root.join("objects");
        for first in read_dir_named(&objects)? {
            for second in read_dir_named(&first.1)? {
                for object in read_dir_named(&second.1)? {
                    let named = parse_hash(&object.0).is_some_and(|h| state.refs.contains_key(&h));
                    if !named {
                        fs::remove_file(&object.1)
                            .map_err(|e| io_error("removing", &object.1, e))?;
                    }
                }
            }
        }
        Ok(state)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The byte quota.
    pub fn quota(&self) -> u64 {
        self.quota
    }

    fn object_path(&self, hash: &B256) -> PathBuf {
        let hex = hex_of(hash);
        self.root
            .join("objects")
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(hex)
    }

    fn entry_path(&self, (deal, replica): ReplicaKey, index: u32) -> PathBuf {
        self.replica_dir((deal, replica)).join(index.to_string())
    }

    fn replica_dir(&self, (deal, replica): ReplicaKey) -> PathBuf {
        self.root
            .join("replicas")
            .join(deal.to_string())
            .join(replica.to_string())
    }

    /// Writes `data` to a new file in `tmp/` and flushes it; the file is removed when the
    /// returned guard drops uninstalled.
    fn stage(&self, data: &[u8]) -> Result<Staged, StorageError> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let staged = Staged(Some(
            self.root
                .join("tmp")
                .join(format!("{}-{n}", std::process::id())),
        ));
        let path = staged.path();
        File::create(path)
            .and_then(|mut f| {
                f.write_all(data)?;
                f.sync_all()
            })
            .map_err(|e| io_error("writing", path, e))?;
        Ok(staged)
    }

    /// Writes `data` to `path` through a temporary file, flushed, then renamed into place.
    fn write_atomically(&self, path: &Path, data: &[u8]) -> Result<(), StorageError> {
        self.stage(data)?.install(path)
    }

    /// What the state says of a write before it is made: `Some` when it is already done, an
    /// error when it is refused, `None` when it is to be made.
    fn check_put(
        &self,
        state: &State,
        replica: ReplicaKey,
        index: u32,
        sha256: B256,
        len: u64,
        max_replica_bytes: u64,
    ) -> Result<Option<PutOutcome>, StorageError> {
        let chunks = state.replicas.get(&replica);
        if let Some(&(held, _)) = chunks.and_then(|c| c.get(&index)) {
            if held == sha256 {
                return Ok(Some(PutOutcome::AlreadyStored));
            }
            return Err(StorageError::ChunkConflict {
                deal: replica.0,
                replica: replica.1,
                index,
            });
        }
        let replica_bytes: u64 = chunks.map_or(0, |c| c.values().map(|(_, l)| l).sum());
        if replica_bytes + len > max_replica_bytes {
            return Err(StorageError::ReplicaTooLarge {
                bytes: replica_bytes + len,
                limit: max_replica_bytes,
            });
        }
        if !state.refs.contains_key(&sha256) && state.used + len > self.quota {
            return Err(StorageError::OverQuota {
                needed: len,
                free: self.quota.saturating_sub(state.used),
            });
        }
        Ok(None)
    }

    /// Stores chunk `index` of a replica. `sha256` is the hash the owner signed: the data must
    /// match it. `max_replica_bytes` bounds the replica's total size (what the deal paid for).
    /// Refused writes change nothing.
    ///
    /// The chunk is written and flushed without holding the store's lock, so uploads to
    /// several replicas proceed in parallel; the checks run again under the lock before the
    /// chunk is renamed into place, so a concurrent write can never push the store past its
    /// quota or a replica past its size.
    pub fn put(
        &self,
        replica: ReplicaKey,
        index: u32,
        sha256: B256,
        data: &[u8],
        max_replica_bytes: u64,
    ) -> Result<PutOutcome, StorageError> {
        let actual = decloud_sdk::storage::sha256(data);
        if actual != sha256 {
            return Err(StorageError::HashMismatch {
                expected: sha256,
                actual,
                bytes: data.len() as u64,
            });
        }
        let len = data.len() as u64;
        let held = {
            let state = self.state.lock().expect("chunk store lock");
            if let Some(done) =
                self.check_put(&state, replica, index, sha256, len, max_replica_bytes)?
            {
                return Ok(done);
            }
            state.refs.contains_key(&sha256)
        };
        let mut staged = if held { None } else { Some(self.stage(data)?) };

        let mut state = self.state.lock().expect("chunk store lock");
        if let Some(done) =
            self.check_put(&state, replica, index, sha256, len, max_replica_bytes)?
        {
            return Ok(done);
        }
        let new_object = !state.refs.contains_key(&sha256);
        let object = self.object_path(&sha256);
        if new_object {
            // Staged above unless another replica held the same chunk then and dropped it since.
            let staged = match staged.take() {
                Some(staged) => staged,
                None => self.stage(data)?,
            };
            staged.install(&object)?;
        }
        let entry = self.entry_path(replica, index);
        if let Err(e) = self.write_atomically(&entry, format!("{}\n", hex_of(&sha256)).as_bytes()) {
            if new_object {
                let _ = fs::remove_file(&object);
            }
            return Err(e);
        }
        if new_object {
            state.used += len;
        }
        *state.refs.entry(sha256).or_default() += 1;
        state
            .replicas
            .entry(replica)
            .or_default()
            .insert(index, (sha256, len));
        Ok(PutOutcome::Stored)
    }

    /// Reads chunk `index` of a replica, checking its hash: a chunk damaged on disk is an error,
    /// never returned.
    pub fn get(&self, replica: ReplicaKey, index: u32) -> Result<(B256, Vec<u8>), StorageError> {
        let hash = {
            let state = self.state.lock().expect("chunk store lock");
            state
                .replicas
                .get(&replica)
                .and_then(|c| c.get(&index))
                .map(|(h, _)| *h)
                .ok_or(StorageError::ChunkNotFound {
                    deal: replica.0,
                    replica: replica.1,
                    index,
                })?
        };
        let path = self.object_path(&hash);
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::Corrupt {
                    sha256: hash,
                    reason: "its file is missing".into(),
                });
            }
            Err(e) => return Err(io_error("reading", &path, e)),
        };
        let actual = sha256(&data);
        if actual != hash {
            return Err(StorageError::Corrupt {
                sha256: hash,
                reason: format!("its content hashes to {actual}"),
            });
        }
        Ok((hash, data))
    }

    /// What the store holds of one replica (an empty manifest when nothing).
    pub fn manifest(&self, (deal, replica): ReplicaKey) -> ReplicaManifest {
        let state = self.state.lock().expect("chunk store lock");
        manifest_of(deal, replica, state.replicas.get(&(deal, replica)))
    }

    /// Every replica the store holds, in (deal, replica) order.
    pub fn manifests(&self) -> Vec<ReplicaManifest> {
        let state = self.state.lock().expect("chunk store lock");
        state
            .replicas
            .iter()
            .map(|(&(deal, replica), chunks)| manifest_of(deal, replica, Some(chunks)))
            .collect()
    }

    /// Quota, bytes held and a summary of every replica, for heartbeats.
    pub fn report(&self) -> StorageReport {
        let state = self.state.lock().expect("chunk store lock");
        StorageReport {
            url: None,
            quota_bytes: self.quota,
            stored_bytes: state.used,
            replicas: state
                .replicas
                .iter()
                .map(|(&(deal, replica), chunks)| ReplicaSummary {
                    deal,
                    replica,
                    chunks: chunks.len() as u64,
                    bytes: chunks.values().map(|(_, l)| l).sum(),
                })
                .collect(),
            ..StorageReport::default()
        }
    }

    /// Drops a replica: its manifest entries, then every chunk no other replica names. Returns
    /// whether the store held anything of it.
    pub fn delete_replica(&self, replica: ReplicaKey) -> Result<bool, StorageError> {
        let mut state = self.state.lock().expect("chunk store lock");
        let Some(chunks) = state.replicas.remove(&replica) else {
            return Ok(false);
        };
        // Moving the replica's directory out first makes the drop all-or-nothing for readers
        // of the disk (`chunks list`, a restart): a crash after it leaves only orphans, which
        // the next open removes.
        let dir = self.replica_dir(replica);
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let doomed = self
            .root
            .join("tmp")
            .join(format!("{}-{n}-replica", std::process::id()));
        if let Err(e) = fs::rename(&dir, &doomed) {
            state.replicas.insert(replica, chunks);
            return Err(io_error("moving", &dir, e));
        }
        for (hash, len) in chunks.values() {
            let refs = state.refs.get_mut(hash).expect("indexed chunk has refs");
            *refs -= 1;
            if *refs == 0 {
                state.refs.remove(hash);
                state.used -= len;
                let path = self.object_path(hash);
                if let Err(e) = fs::remove_file(&path)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    warn!(target: "agent::storage", path = %path.display(), error = %e, "cannot remove chunk");
                }
            }
        }
        fs::remove_dir_all(&doomed).map_err(|e| io_error("removing", &doomed, e))?;
        Ok(true)
    }

    /// The file holding a chunk (for tools and tests that inspect the disk).
    pub fn chunk_path(&self, sha256: &B256) -> PathBuf {
        self.object_path(sha256)
    }
}

/// A flushed file in `tmp/`, removed on drop unless installed.
#[derive(Debug)]
struct Staged(Option<PathBuf>);

impl Staged {
    fn path(&self) -> &Path {
        self.0
            .as_deref()
            .expect("a staged file has a path until installed")
    }

    /// Renames the file to `path` (creating its directory) and flushes the directory.
    fn install(mut self, path: &Path) -> Result<(), StorageError> {
        let dir = path.parent().expect("store paths have a parent");
        fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;
        fs::rename(self.path(), path).map_err(|e| io_error("renaming into", path, e))?;
        self.0 = None;
        sync_dir(dir)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

fn manifest_of(
    deal: u64,
    replica: u32,
    chunks: Option<&BTreeMap<u32, (B256, u64)>>,
) -> ReplicaManifest {
    ReplicaManifest {
        deal,
        replica,
        chunks: chunks
            .into_iter()
            .flatten()
            .map(|(&index, &(sha256, bytes))| ChunkInfo {
                index,
                sha256,
                bytes,
            })
            .collect(),
    }
}

/// The entries of a directory as (file name, path); nothing when it does not exist.
fn read_dir_named(dir: &Path) -> Result<Vec<(String, PathBuf)>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("reading", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("reading", dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_owned(), entry.path()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: u64 = 1 << 30;

    fn open(dir: &Path, quota: u64) -> ChunkStore {
        ChunkStore::open(dir, quota).unwrap()
    }

    #[test]
    fn chunks_round_trip_under_a_two_level_layout_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), BIG);
        let a = b"first chunk".to_vec();
        let b = vec![7u8; 5000];
        assert_eq!(
            store.put((1, 0), 0, sha256(&a), &a, BIG).unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            store.put((1, 0), 1, sha256(&b), &b, BIG).unwrap(),
            PutOutcome::Stored
        );
        // A resumed upload sends the same chunk again: nothing changes.
        assert_eq!(
            store.put((1, 0), 1, sha256(&b), &b, BIG).unwrap(),
            PutOutcome::AlreadyStored
        );
        let hex = hex_of(&sha256(&a));
        let path = dir
            .path()
            .join("objects")
            .join(&hex[..2])
            .join(&hex[2..4])
            .join(&hex);
        assert_eq!(fs::read(&path).unwrap(), a);
        assert_eq!(store.get((1, 0), 0).unwrap().1, a);
        assert_eq!(store.report().stored_bytes, (a.len() + b.len()) as u64);
        drop(store);

        let store = open(dir.path(), BIG);
        assert_eq!(store.get((1, 0), 1).unwrap().1, b);
        let manifest = store.manifest((1, 0));
        assert_eq!(manifest.chunks.len(), 2);
        assert_eq!(manifest.bytes(), (a.len() + b.len()) as u64);
        let report = store.report();
        assert_eq!(report.stored_bytes, manifest.bytes());
        assert_eq!(report.replicas.len(), 1);
        assert_eq!(report.replicas[0].chunks, 2);
    }

    #[test]
    fn a_chunk_not_matching_its_signed_hash_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), BIG);
        let data = vec![1u8; 100];
        let e = store
            .put((1, 0), 0, sha256(&data), &data[..60], BIG)
            .unwrap_err();
        assert!(
            matches!(e, StorageError::HashMismatch { bytes: 60, .. }),
            "{e}"
        );
        assert_eq!(
            store.report(),
            StorageReport {
                quota_bytes: BIG,
                ..Default::default()
            }
        );
        assert!(
            read_dir_named(&dir.path().join("objects"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_chunk_damaged_on_disk_is_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), BIG);
        let data = vec![3u8; 2048];
        store.put((4, 2), 0, sha256(&data), &data, BIG).unwrap();
        let path = store.chunk_path(&sha256(&data));
        let mut bytes = fs::read(&path).unwrap();
        bytes[1000] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let e = store.get((4, 2), 0).unwrap_err();
        assert!(matches!(e, StorageError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("hashes to"), "{e}");
        fs::remove_file(&path).unwrap();
        let e = store.get((4, 2), 0).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn quota_and_replica_size_refuse_writes_without_changing_anything() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1000);
        let a = vec![1u8; 600];
        let b = vec![2u8; 600];
        store.put((1, 0), 0, sha256(&a), &a, BIG).unwrap();
        let e = store.put((1, 0), 1, sha256(&b), &b, BIG).unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::OverQuota {
                    needed: 600,
                    free: 400
                }
            ),
            "{e}"
        );
        assert_eq!(store.manifest((1, 0)).chunks.len(), 1);
        assert_eq!(store.report().stored_bytes, 600);

        let e = store
            .put((2, 0), 0, sha256(&b[..300]), &b[..300], 200)
            .unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::ReplicaTooLarge {
                    bytes: 300,
                    limit: 200
                }
            ),
            "{e}"
        );
        assert!(store.manifest((2, 0)).chunks.is_empty());

        // Another chunk at a held index is a conflict, not an overwrite.
        let small = vec![9u8; 10];
        let e = store
            .put((1, 0), 0, sha256(&small), &small, BIG)
            .unwrap_err();
        assert!(
            matches!(e, StorageError::ChunkConflict { index: 0, .. }),
            "{e}"
        );
        assert_eq!(store.get((1, 0), 0).unwrap().1, a);
    }

    #[test]
    fn deleting_a_replica_frees_only_chunks_no_other_replica_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), BIG);
        let shared = vec![5u8; 100];
        let own = vec![6u8; 50];
        store.put((1, 0), 0, sha256(&shared), &shared, BIG).unwrap();
        store.put((1, 0), 1, sha256(&own), &own, BIG).unwrap();
        store.put((2, 0), 0, sha256(&shared), &shared, BIG).unwrap();
        assert_eq!(store.report().stored_bytes, 150);
        assert!(store.delete_replica((1, 0)).unwrap());
        assert!(!store.delete_replica((1, 0)).unwrap());
        assert_eq!(store.report().stored_bytes, 100);
        assert!(!store.chunk_path(&sha256(&own)).exists());
        assert_eq!(store.get((2, 0), 0).unwrap().1, shared);
        drop(store);
        let store = open(dir.path(), BIG);
        assert_eq!(store.report().stored_bytes, 100);
        assert_eq!(store.manifests().len(), 1);
    }

    #[test]
    fn concurrent_writes_never_pass_the_quota_and_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(open(dir.path(), 5000));
        let outcomes: Vec<_> = (0..12u8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let data = vec![i; 1000];
                    store.put(
                        (u64::from(i % 3) + 1, 0),
                        u32::from(i),
                        sha256(&data),
                        &data,
                        BIG,
                    )
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(PutOutcome::Stored)))
            .count();
        let refused = outcomes
            .iter()
            .filter(|o| matches!(o, Err(StorageError::OverQuota { .. })))
            .count();
        assert_eq!((stored, refused), (5, 7), "{outcomes:?}");
        assert_eq!(store.report().stored_bytes, 5000);
        assert!(read_dir_named(&dir.path().join("tmp")).unwrap().is_empty());

        // The same chunk at the same index from several requests at once: stored once.
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(open(dir.path(), BIG));
        let data = std::sync::Arc::new(vec![8u8; 4096]);
        let outcomes: Vec<_> = (0..6)
            .map(|_| {
                let (store, data) = (store.clone(), data.clone());
                std::thread::spawn(move || store.put((1, 0), 0, sha256(&data), &data, BIG).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == PutOutcome::Stored)
                .count(),
            1
        );
        assert_eq!(store.report().stored_bytes, 4096);
    }

    #[test]
    fn opening_cleans_up_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), BIG);
        let kept = vec![1u8; 10];
        store.put((1, 0), 0, sha256(&kept), &kept, BIG).unwrap();
        // A chunk whose manifest entry was never written, a half-written temp file, and an
        // entry whose chunk vanished.
        let orphan = vec![2u8; 10];
        store
            .write_atomically(&store.object_path(&sha256(&orphan)), &orphan)
            .unwrap();
        fs::write(dir.path().join("tmp").join("half"), b"partial").unwrap();
        let gone = vec![3u8; 10];
        store
            .write_atomically(
                &store.entry_path((1, 0), 1),
                format!("{}\n", hex_of(&sha256(&gone))).as_bytes(),
            )
            .unwrap();
        drop(store);

        let store = open(dir.path(), BIG);
        assert!(!store.chunk_path(&sha256(&orphan)).exists());
        assert!(read_dir_named(&dir.path().join("tmp")).unwrap().is_empty());
        let manifest = store.manifest((1, 0));
        assert_eq!(manifest.chunks.len(), 1);
        assert_eq!(store.report().stored_bytes, 10);
        // The dropped index can be written again.
        store.put((1, 0), 1, sha256(&gone), &gone, BIG).unwrap();
    }
}
