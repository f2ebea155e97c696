//! UnixFS file DAGs exactly as Kubo's `ipfs add` builds them, and CID verification.
//!
//! Kubo's defaults: fixed-size chunks of 262144 bytes (`size-262144`), the balanced
//! layout with at most 174 links per node, sha2-256. Each chunk becomes a leaf; with
//! dag-pb leaves (the CIDv0 default) a leaf is a dag-pb node whose UnixFS data holds
//! the chunk, with raw leaves (the default once `--cid-version=1` is given) the leaf is
//! the chunk itself under the `raw` codec. A file of one chunk is that leaf; otherwise
//! leaves are grouped 174 at a time into internal nodes, those again 174 at a time,
//! until one root remains. Every internal node records the file size below it and the
//! size of each child, and every link carries the child's cumulative block size
//! (`Tsize`), so the root's CID commits to the whole byte stream.

use cid::Cid;
use multihash::Multihash;
use sha2::{Digest, Sha256};

use crate::ContentError;

/// Chunk size of Kubo's default chunker (`size-262144`).
pub const CHUNK_SIZE: usize = 262_144;
/// Most links Kubo's balanced layout puts in one node.
pub const MAX_LINKS: usize = 174;

/// Multicodec of dag-pb blocks.
pub const DAG_PB: u64 = 0x70;
/// Multicodec of raw blocks.
pub const RAW: u64 = 0x55;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;

/// UnixFS `Data.DataType.File`.
const UNIXFS_FILE: u64 = 2;

/// The CID version of a DAG's nodes and links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CidVersion {
    /// `Qm…` CIDs: bare sha2-256 multihashes of dag-pb blocks.
    V0,
    /// Self-describing CIDs (`bafy…` for dag-pb, `bafk…` for raw), printed in base32.
    V1,
}

/// How a byte stream is turned into a DAG: the `ipfs add` options that change the CID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddOptions {
    /// CID version of every node and link.
    pub cid_version: CidVersion,
    /// Leaves as raw blocks instead of UnixFS dag-pb nodes (needs CIDv1).
    pub raw_leaves: bool,
}

impl AddOptions {
    /// `ipfs add` with no options: CIDv0, dag-pb leaves.
    pub const KUBO_DEFAULT: Self = Self {
        cid_version: CidVersion::V0,
        raw_leaves: false,
    };
    /// `ipfs add --cid-version=1`: CIDv1, and Kubo then turns raw leaves on by default.
    pub const KUBO_CID_V1: Self = Self {
        cid_version: CidVersion::V1,
        raw_leaves: true,
    };
    /// `ipfs add --cid-version=1 --raw-leaves=false`: CIDv1 links, dag-pb leaves.
    pub const KUBO_CID_V1_DAG_PB_LEAVES: Self = Self {
        cid_version: CidVersion::V1,
        raw_leaves: false,
    };

    /// Kubo refuses raw leaves with CIDv0 (a v0 CID can only name dag-pb); so do we.
    fn effective_raw_leaves(self) -> bool {
        self.raw_leaves && self.cid_version == CidVersion::V1
    }
}

impl Default for AddOptions {
    /// The store default is CIDv1, the form template bundles are published under.
    fn default() -> Self {
        Self::KUBO_CID_V1
    }
}

/// A node of the DAG as its parent sees it.
#[derive(Debug, Clone)]
struct Entry {
    cid: Cid,
    /// Bytes of this block plus the `Tsize` of every child: what the parent link says.
    tsize: u64,
    /// File bytes under this node.
    filesize: u64,
}

/// Computes the root CID of a byte stream incrementally, in memory bounded by the
/// chunk size and the tree depth (not the file size).
#[derive(Debug)]
pub struct FileHasher {
    options: AddOptions,
    pending: Vec<u8>,
    /// `levels[0]` holds leaves not yet grouped, `levels[i]` nodes of height `i`.
    levels: Vec<Vec<Entry>>,
    total: u64,
}

impl FileHasher {
    /// A hasher for the given options.
    pub fn new(options: AddOptions) -> Self {
        Self {
            options,
            pending: Vec::with_capacity(CHUNK_SIZE),
            levels: Vec::new(),
            total: 0,
        }
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        while !data.is_empty() {
            let take = (CHUNK_SIZE - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == CHUNK_SIZE {
                self.flush_chunk();
            }
        }
    }

    fn flush_chunk(&mut self) {
        let leaf = leaf_entry(&self.pending, self.options);
        self.pending.clear();
        self.push(0, leaf);
    }

    /// Adds a node at `level`, closing the level's group as soon as it holds the
    /// maximum number of links: a full group never changes, whatever follows.
    fn push(&mut self, level: usize, entry: Entry) {
        if self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        self.levels[level].push(entry);
        if self.levels[level].len() == MAX_LINKS {
            let children = std::mem::take(&mut self.levels[level]);
            let node = internal_entry(&children, self.options);
            self.push(level + 1, node);
        }
    }

    /// Finishes the DAG and returns its root CID.
    pub fn finish(mut self) -> Cid {
        if !self.pending.is_empty() {
            self.flush_chunk();
        }
        if self.levels.is_empty() {
            // An empty file is one empty leaf, exactly as Kubo writes it.
            return leaf_entry(&[], self.options).cid;
        }
        let mut level = 0;
        loop {
            let highest = self.levels[level + 1..].iter().all(Vec::is_empty);
            if highest && self.levels[level].len() == 1 {
                return self.levels[level].remove(0).cid;
            }
            if !self.levels[level].is_empty() {
                // Kubo keeps every leaf at the same depth: a partial group, even of a
                // single child, becomes a node of its own under the next level.
                let children = std::mem::take(&mut self.levels[level]);
                let node = internal_entry(&children, self.options);
                self.push(level + 1, node);
            }
            level += 1;
        }
    }
}

/// The root CID Kubo's `ipfs add` gives these bytes with these options.
pub fn cid_of(bytes: &[u8], options: AddOptions) -> Cid {
    let mut hasher = FileHasher::new(options);
    hasher.update(bytes);
    hasher.finish()
}

fn sha256_multihash(block: &[u8]) -> Multihash<64> {
    let digest = Sha256::digest(block);
    Multihash::wrap(SHA2_256, &digest).expect("a 32-byte digest fits a 64-byte multihash")
}

fn block_cid(codec: u64, block: &[u8], version: CidVersion) -> Cid {
    let hash = sha256_multihash(block);
    match version {
        CidVersion::V0 => Cid::new_v0(hash).expect("sha2-256 dag-pb is a valid CIDv0"),
        CidVersion::V1 => Cid::new_v1(codec, hash),
    }
}

fn leaf_entry(chunk: &[u8], options: AddOptions) -> Entry {
    if options.effective_raw_leaves() {
        return Entry {
            cid: block_cid(RAW, chunk, CidVersion::V1),
            tsize: chunk.len() as u64,
            filesize: chunk.len() as u64,
        };
    }
    let mut unixfs = Vec::with_capacity(chunk.len() + 16);
    put_varint_field(&mut unixfs, 1, UNIXFS_FILE);
    // Kubo leaves the data field out of an empty leaf (a nil slice), keeps it otherwise.
    if !chunk.is_empty() {
        put_bytes_field(&mut unixfs, 2, chunk);
    }
    put_varint_field(&mut unixfs, 3, chunk.len() as u64);
    let block = pb_node(&[], &unixfs, options.cid_version);
    Entry {
        cid: block_cid(DAG_PB, &block, options.cid_version),
        tsize: block.len() as u64,
        filesize: chunk.len() as u64,
    }
}

fn internal_entry(children: &[Entry], options: AddOptions) -> Entry {
    let filesize: u64 = children.iter().map(|c| c.filesize).sum();
    let mut unixfs = Vec::new();
    put_varint_field(&mut unixfs, 1, UNIXFS_FILE);
    put_varint_field(&mut unixfs, 3, filesize);
    for child in children {
        put_varint_field(&mut unixfs, 4, child.filesize);
    }
    let block = pb_node(children, &unixfs, options.cid_version);
    Entry {
        cid: block_cid(DAG_PB, &block, options.cid_version),
        tsize: block.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>(),
        filesize,
    }
}

/// Encodes a dag-pb `PBNode`: links (field 2) before data (field 1), as the dag-pb
/// spec's canonical form requires; each link with hash, an empty name and `Tsize`,
/// all three always present as Kubo writes them.
fn pb_node(links: &[Entry], data: &[u8], version: CidVersion) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + links.len() * 48 + 8);
    for link in links {
        let hash = match version {
            // A CIDv0's binary form is its bare multihash.
            CidVersion::V0 => link.cid.hash().to_bytes(),
            CidVersion::V1 => link.cid.to_bytes(),
        };
        let mut encoded = Vec::with_capacity(hash.len() + 16);
        put_bytes_field(&mut encoded, 1, &hash);
        put_bytes_field(&mut encoded, 2, b"");
        put_varint_field(&mut encoded, 3, link.tsize);
        put_bytes_field(&mut out, 2, &encoded);
    }
    put_bytes_field(&mut out, 1, data);
    out
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, value: u64) {
    put_varint(out, field << 3);
    put_varint(out, value);
}

fn put_bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The layouts that could have produced `cid`, to recompute it from the content.
///
/// A CIDv0 names a DAG of dag-pb leaves and v0 links. A dag-pb CIDv1 may come from
/// `--cid-version=1` (raw leaves), from `--raw-leaves=false` (v1 links), or be a CIDv0
/// re-encoded as v1 (same blocks, v0 links inside): all three are tried. A raw CIDv1
/// is a single block, the content itself.
fn candidate_layouts(cid: &Cid) -> Result<Vec<Layout>, ContentError> {
    if cid.hash().code() != SHA2_256 || cid.hash().size() != 32 {
        return Err(ContentError::Unverifiable {
            cid: *cid,
            reason: format!("multihash code {:#x} is not sha2-256", cid.hash().code()),
        });
    }
    match (cid.version(), cid.codec()) {
        (cid::Version::V0, _) => Ok(vec![Layout::Dag(AddOptions::KUBO_DEFAULT)]),
        (cid::Version::V1, DAG_PB) => Ok(vec![
            Layout::Dag(AddOptions::KUBO_CID_V1),
            Layout::Dag(AddOptions::KUBO_CID_V1_DAG_PB_LEAVES),
            Layout::Dag(AddOptions::KUBO_DEFAULT),
        ]),
        (cid::Version::V1, RAW) => Ok(vec![Layout::RawBlock]),
        (_, codec) => Err(ContentError::Unverifiable {
            cid: *cid,
            reason: format!("codec {codec:#x} is neither dag-pb nor raw"),
        }),
    }
}

#[derive(Debug, Clone, Copy)]
enum Layout {
    Dag(AddOptions),
    RawBlock,
}

/// Recomputes a CID from content fed piece by piece and compares it with the
/// expected one; the content is accepted only when a layout reproduces the same
/// multihash under the same codec.
#[derive(Debug)]
pub struct Verifier {
    expected: Cid,
    dags: Vec<FileHasher>,
    raw: Option<Sha256>,
}

impl Verifier {
    /// A verifier for content expected to hash to `expected`.
    pub fn new(expected: &Cid) -> Result<Self, ContentError> {
        let mut dags = Vec::new();
        let mut raw = None;
        for layout in candidate_layouts(expected)? {
            match layout {
                Layout::Dag(options) => dags.push(FileHasher::new(options)),
                Layout::RawBlock => raw = Some(Sha256::new()),
            }
        }
        Ok(Self {
            expected: *expected,
            dags,
            raw,
        })
    }

    /// Feeds the next bytes of the content.
    pub fn update(&mut self, data: &[u8]) {
        for dag in &mut self.dags {
            dag.update(data);
        }
        if let Some(raw) = &mut self.raw {
            raw.update(data);
        }
    }

    /// Checks the content fed so far against the expected CID.
    pub fn finish(self) -> Result<(), ContentError> {
        let expected = self.expected;
        let same = |cid: &Cid| cid.codec() == expected.codec() && cid.hash() == expected.hash();
        if let Some(raw) = self.raw {
            let digest = raw.finalize();
            if expected.hash().digest() == digest.as_slice() {
                return Ok(());
            }
        }
        for dag in self.dags {
            if same(&dag.finish()) {
                return Ok(());
            }
        }
        Err(ContentError::Mismatch { cid: expected })
    }
}

/// Verifies that `bytes` are the content `cid` names; a mismatch is an error.
pub fn verify(cid: &Cid, bytes: &[u8]) -> Result<(), ContentError> {
    let mut verifier = Verifier::new(cid)?;
    verifier.update(bytes);
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_matches_kubo_default() {
        assert_eq!(
            cid_of(b"hello\n", AddOptions::KUBO_DEFAULT).to_string(),
            "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
        );
    }

    #[test]
    fn empty_file_matches_kubo() {
        assert_eq!(
            cid_of(b"", AddOptions::KUBO_DEFAULT).to_string(),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
        );
        // With raw leaves the empty file is the empty raw block.
        assert_eq!(
            cid_of(b"", AddOptions::KUBO_CID_V1).to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn varint_encodes_multibyte_values() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        out.clear();
        put_varint(&mut out, 262_144);
        assert_eq!(out, [0x80, 0x80, 0x10]);
    }

    #[test]
    fn single_chunk_file_is_its_leaf() {
        let data = vec![7u8; CHUNK_SIZE];
        let raw = cid_of(&data, AddOptions::KUBO_CID_V1);
        assert_eq!(raw.codec(), RAW);
        let plus_one = cid_of(&[data.as_slice(), &[1]].concat(), AddOptions::KUBO_CID_V1);
        assert_eq!(plus_one.codec(), DAG_PB);
    }

    #[test]
    fn streaming_matches_one_shot_at_every_split() {
        let data: Vec<u8> = (0..(CHUNK_SIZE * 2 + 17)).map(|i| (i * 31) as u8).collect();
        let whole = cid_of(&data, AddOptions::KUBO_DEFAULT);
        for split in [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, data.len()] {
            let mut hasher = FileHasher::new(AddOptions::KUBO_DEFAULT);
            hasher.update(&data[..split]);
            hasher.update(&data[split..]);
            assert_eq!(hasher.finish(), whole, "split at {split}");
        }
    }

    #[test]
    fn verify_accepts_every_kubo_form_and_rejects_changes() {
        let data = b"decloud template bundle".repeat(20_000);
        for options in [
            AddOptions::KUBO_DEFAULT,
            AddOptions::KUBO_CID_V1,
            AddOptions::KUBO_CID_V1_DAG_PB_LEAVES,
        ] {
            let cid = cid_of(&data, options);
            verify(&cid, &data).unwrap();
            let mut changed = data.clone();
            changed[CHUNK_SIZE + 3] ^= 1;
            assert!(matches!(
                verify(&cid, &changed),
                Err(ContentError::Mismatch { .. })
            ));
        }
        // A v0 CID written as v1 names the same blocks.
        let v0 = cid_of(&data, AddOptions::KUBO_DEFAULT);
        verify(&v0.into_v1().unwrap(), &data).unwrap();
    }

    #[test]
    fn verify_refuses_other_hashes() {
        let hash = Multihash::<64>::wrap(0x13, &[0u8; 64]).unwrap();
        let cid = Cid::new_v1(RAW, hash);
        assert!(matches!(
            verify(&cid, b"x"),
            Err(ContentError::Unverifiable { .. })
        ));
    }
}
