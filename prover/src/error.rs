use std::path::PathBuf;

/// Everything that can go wrong while committing to data, proving or verifying.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data to commit to is empty; a commitment needs at least one segment.
    #[error("cannot commit to empty data")]
    EmptyData,
    /// The data has more segments than a tree of the configured depth can hold.
    #[error("data has {segments} segments but a tree of depth {depth} holds at most {max}")]
    TooManySegments {
        /// Segments in the data.
        segments: u64,
        /// Tree depth.
        depth: usize,
        /// Leaves in a tree of that depth.
        max: u64,
    },
    /// A tree depth outside the supported range.
    #[error("tree depth {0} is outside the supported range 1..=32")]
    InvalidDepth(usize),
    /// A challenge count of zero.
    #[error("the number of challenges must be at least 1")]
    NoChallenges,
    /// A segment index past the end of the committed data.
    #[error("segment index {index} is out of range for {segments} segments")]
    SegmentOutOfRange {
        /// The requested index.
        index: u64,
        /// Segments in the commitment.
        segments: u64,
    },
    /// The prover does not hold a segment that the seed challenges.
    #[error("challenged segment {0} is missing from the local store")]
    MissingSegment(u64),
    /// A segment held locally does not match the committed tree.
    #[error("segment {0} does not match the commitment")]
    SegmentMismatch(u64),
    /// The witness does not satisfy the circuit (wrong data, root or seed).
    #[error("the witness does not satisfy the storage circuit")]
    Unsatisfied,
    /// The proof does not verify against the public inputs.
    #[error("proof is invalid for the given public inputs")]
    InvalidProof,
    /// A hex string could not be parsed.
    #[error("invalid hex value {value:?}: {reason}")]
    InvalidHex {
        /// The offending text.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A field element that is not canonical (not below the BN254 scalar modulus).
    #[error("value {0} is not a canonical BN254 scalar")]
    NonCanonicalScalar(String),
    /// Key parameters on disk do not match what was asked for.
    #[error("key directory {dir} holds parameters {found}, expected {expected}")]
    ParamsMismatch {
        /// Key directory.
        dir: PathBuf,
        /// Parameters found in the directory.
        found: String,
        /// Parameters expected by the caller.
        expected: String,
    },
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A key or proof could not be (de)serialised.
    #[error("serialisation failed: {0}")]
    Serialization(#[from] ark_serialize::SerializationError),
    /// Constraint synthesis failed.
    #[error("constraint synthesis failed: {0}")]
    Synthesis(#[from] ark_relations::r1cs::SynthesisError),
    /// A JSON document could not be (de)serialised.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
