//! The DeCloud content store.
//!
//! Template bundles and other published artifacts are IPFS content: they are named by
//! the CID that Kubo's `ipfs add` would give them, so the same bytes have the same name
//! whether they sit in this crate's embedded store, in an operator's Kubo node or on a
//! public gateway.
//!
//! - [`cid_of`] and [`FileHasher`] compute those CIDs (UnixFS, dag-pb, 256 KiB chunks,
//!   balanced layout with 174 links per node, sha2-256) for [`AddOptions::KUBO_DEFAULT`]
//!   (CIDv0, `Qm…`) and [`AddOptions::KUBO_CID_V1`] (CIDv1 with raw leaves, `bafy…`).
//! - [`ContentStore`] is the storage abstraction. Content read back is always verified
//!   against its CID before it is returned; a mismatch is [`ContentError::Mismatch`].
//! - [`EmbeddedStore`] keeps content in files under a data directory (the default).
//! - [`KuboStore`] talks to an operator's Kubo node through its HTTP API.
//!
//! ```
//! use decloud_content::{AddOptions, cid_of};
//!
//! let cid = cid_of(b"hello\n", AddOptions::KUBO_DEFAULT);
//! assert_eq!(cid.to_string(), "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN");
//! ```

mod embedded;
mod error;
mod kubo;
mod store;
mod unixfs;

pub use cid::Cid;
pub use embedded::EmbeddedStore;
pub use error::{ContentError, parse_cid};
pub use kubo::{KuboStore, kubo_add_request};
pub use store::{ContentStore, DEFAULT_MAX_OBJECT_SIZE};
pub use unixfs::{
    AddOptions, CHUNK_SIZE, CidVersion, DAG_PB, FileHasher, MAX_LINKS, RAW, SHA2_256, Verifier,
    cid_of, verify,
};
