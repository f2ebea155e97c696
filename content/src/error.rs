//! The one error type of the content store.

use cid::Cid;

/// Everything that can go wrong when adding, reading or verifying content.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The bytes read back do not hash to the CID they were asked for.
    #[error("content does not match its cid {cid}: refusing to return it")]
    Mismatch {
        /// The CID that was asked for.
        cid: Cid,
    },
    /// The CID uses a codec or hash this store cannot verify.
    #[error("cid {cid} cannot be verified: {reason}")]
    Unverifiable {
        /// The CID that was asked for.
        cid: Cid,
        /// Which part of the CID is not supported.
        reason: String,
    },
    /// No content is stored under this CID.
    #[error("content {0} not found")]
    NotFound(Cid),
    /// The content is larger than the configured limit.
    #[error("content of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the content (or a lower bound, when the read was cut short).
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A string is not a valid CID.
    #[error("invalid cid {input:?}: {source}")]
    InvalidCid {
        /// The string that failed to parse.
        input: String,
        /// Why it failed.
        #[source]
        source: cid::Error,
    },
    /// Reading or writing the embedded store's files failed.
    #[error("content store i/o at {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The Kubo HTTP API failed or answered something unexpected.
    #[error("kubo: {0}")]
    Kubo(String),
    /// Kubo computed a different CID for content than this crate did.
    #[error("kubo returned cid {kubo} but the content hashes to {expected}")]
    KuboCidDisagrees {
        /// The CID Kubo answered.
        kubo: String,
        /// The CID computed locally.
        expected: Cid,
    },
    /// A blocking hashing task panicked or was cancelled.
    #[error("hashing task failed: {0}")]
    Task(String),
}

impl ContentError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// Parses a CID string (`Qm…` or multibase such as `bafy…`).
pub fn parse_cid(input: &str) -> Result<Cid, ContentError> {
    Cid::try_from(input.trim()).map_err(|source| ContentError::InvalidCid {
        input: input.to_owned(),
        source,
    })
}
