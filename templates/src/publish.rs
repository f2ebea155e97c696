//! Publishing bundles to, and fetching them from, a content store.

use decloud_content::{Cid, ContentError, ContentStore};

use crate::{Bundle, Policy, Rejection, TemplateError, validate_with};

/// Publishing or fetching a bundle failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The bundle breaks validation rules; nothing was stored or returned.
    #[error("bundle rejected: {}", summarize(.0))]
    Rejected(Vec<Rejection>),
    /// The content store failed (including content that does not match its CID).
    #[error(transparent)]
    Store(#[from] ContentError),
    /// The stored bytes are not a bundle.
    #[error(transparent)]
    Bundle(#[from] TemplateError),
    /// The store named the content differently from the bundle's CID (it computes
    /// CIDs with other options than [`crate::BUNDLE_CID_OPTIONS`]).
    #[error("store returned cid {stored}, the bundle's cid is {expected}")]
    CidMismatch {
        /// What the store returned.
        stored: Cid,
        /// The bundle's CID.
        expected: Cid,
    },
}

fn summarize(rejections: &[Rejection]) -> String {
    let shown: Vec<String> = rejections.iter().take(3).map(|r| r.to_string()).collect();
    let more = rejections.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} (and {more} more)", shown.join("; "))
    } else {
        shown.join("; ")
    }
}

impl Bundle {
    /// Validates the bundle under `policy` and stores its published form; returns
    /// its CID. An invalid bundle is never stored.
    pub async fn publish(
        &self,
        store: &dyn ContentStore,
        policy: &Policy,
    ) -> Result<Cid, PublishError> {
        validate_with(self, policy).map_err(PublishError::Rejected)?;
        let expected = self.cid();
        let stored = store.put(self.to_content().into()).await?;
        if stored != expected {
            return Err(PublishError::CidMismatch { stored, expected });
        }
        Ok(stored)
    }

    /// Fetches the bundle `cid` names (verified against the CID by the store),
    /// decodes it and validates it under `policy`.
    pub async fn fetch(
        store: &dyn ContentStore,
        cid: &Cid,
        policy: &Policy,
    ) -> Result<Self, PublishError> {
        let bytes = store.get(cid).await?;
        let bundle = Self::from_content(&bytes)?;
        validate_with(&bundle, policy).map_err(PublishError::Rejected)?;
        Ok(bundle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::tests::sample;
    use decloud_content::{AddOptions, EmbeddedStore};

    #[tokio::test]
    async fn publish_then_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let bundle = sample();
        let cid = bundle.publish(&store, &Policy::default()).await.unwrap();
        assert_eq!(cid, bundle.cid());
        let fetched = Bundle::fetch(&store, &cid, &Policy::default())
            .await
            .unwrap();
        assert_eq!(fetched, bundle);
    }

    #[tokio::test]
    async fn invalid_bundles_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let mut bundle = sample();
        bundle.user_data = "#cloud-config\nruncmd:\n  - rm -rf /\n".into();
        let err = bundle
            .publish(&store, &Policy::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("rm-rf-root"), "{err}");
        assert!(!store.has(&bundle.cid()).await.unwrap());
    }

    #[tokio::test]
    async fn fetch_revalidates_and_checks_the_format() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        // Stored behind validation's back, e.g. by another tool.
        let mut bad = sample();
        bad.manifest.min_specs.memory_gib = 0;
        let cid = store.put(bad.to_content().into()).await.unwrap();
        assert!(matches!(
            Bundle::fetch(&store, &cid, &Policy::default()).await,
            Err(PublishError::Rejected(_))
        ));
        let cid = store.put(b"not a bundle".to_vec().into()).await.unwrap();
        assert!(matches!(
            Bundle::fetch(&store, &cid, &Policy::default()).await,
            Err(PublishError::Bundle(_))
        ));
    }

    #[tokio::test]
    async fn a_store_with_other_cid_options_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with(dir.path(), AddOptions::KUBO_DEFAULT, 1 << 20)
            .await
            .unwrap();
        assert!(matches!(
            sample().publish(&store, &Policy::default()).await,
            Err(PublishError::CidMismatch { .. })
        ));
    }
}
