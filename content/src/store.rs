//! The storage abstraction shared by every backend.

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;

use crate::{AddOptions, ContentError};

/// Default largest object a store accepts or returns in one piece: 1 GiB.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 1 << 30;

/// A content-addressed store of byte objects named by Kubo-compatible CIDs.
///
/// Every implementation verifies content read back against the CID it was asked for
/// and returns [`ContentError::Mismatch`] instead of data that does not match.
#[async_trait]
pub trait ContentStore: Send + Sync + std::fmt::Debug {
    /// The options CIDs of new content are computed with.
    fn add_options(&self) -> AddOptions;

    /// Largest object [`put`](Self::put) accepts and [`get`](Self::get) returns.
    fn max_object_size(&self) -> u64;

    /// Stores `bytes`, pins them, and returns their CID.
    async fn put(&self, bytes: Bytes) -> Result<Cid, ContentError>;

    /// Returns the content named by `cid`, verified against it.
    async fn get(&self, cid: &Cid) -> Result<Bytes, ContentError>;

    /// Whether the store holds content for `cid` (without reading it).
    async fn has(&self, cid: &Cid) -> Result<bool, ContentError>;

    /// Keeps the content of `cid` from garbage collection; it must be present.
    async fn pin(&self, cid: &Cid) -> Result<(), ContentError>;

    /// Allows the content of `cid` to be garbage collected; unpinning content that is
    /// not pinned is not an error.
    async fn unpin(&self, cid: &Cid) -> Result<(), ContentError>;
}

/// Rejects content over `limit` bytes.
pub(crate) fn check_size(size: u64, limit: u64) -> Result<(), ContentError> {
    if size > limit {
        return Err(ContentError::TooLarge { size, limit });
    }
    Ok(())
}
