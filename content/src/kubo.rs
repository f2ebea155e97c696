//! The Kubo backend: content in an operator's Kubo node, reached over its HTTP API.
//!
//! Content is added with the same options this crate computes CIDs with, and the CID
//! Kubo answers must equal the one computed locally before it is accepted. Content
//! read back with `cat` is verified against the CID asked for by the same code as the
//! embedded store, so a Kubo node (or anything between it and us) cannot substitute
//! data.

use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures::TryStreamExt;
use ipfs_api_backend_hyper::request::Add;
use ipfs_api_backend_hyper::{
    BackendWithGlobalOptions, GlobalOptions, IpfsApi, IpfsClient, TryFromUri,
};

use crate::embedded::blocking;
use crate::store::check_size;
use crate::{AddOptions, CidVersion, ContentError, ContentStore, DEFAULT_MAX_OBJECT_SIZE, cid_of};

/// The chunker argument matching [`crate::CHUNK_SIZE`].
const CHUNKER: &str = "size-262144";

/// Content in a Kubo node, through its HTTP RPC API (usually `http://127.0.0.1:5001`).
pub struct KuboStore {
    api: String,
    /// For reads, which may fetch from the IPFS network.
    online: BackendWithGlobalOptions<IpfsClient>,
    /// For presence checks, which must answer from the node's own blockstore.
    offline: BackendWithGlobalOptions<IpfsClient>,
    options: AddOptions,
    max_object_size: u64,
}

impl std::fmt::Debug for KuboStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KuboStore")
            .field("api", &self.api)
            .field("options", &self.options)
            .field("max_object_size", &self.max_object_size)
            .finish_non_exhaustive()
    }
}

/// The `/api/v0/add` request that makes Kubo build the DAG `options` describe: the
/// default chunker and hash spelled out, so a node configured otherwise (Kubo's
/// `Import.*` settings) still produces the CID computed locally.
pub fn kubo_add_request(options: AddOptions) -> Add<'static> {
    Add {
        chunker: Some(CHUNKER),
        cid_version: Some(match options.cid_version {
            CidVersion::V0 => 0,
            CidVersion::V1 => 1,
        }),
        raw_leaves: Some(options.raw_leaves && options.cid_version == CidVersion::V1),
        hash: Some("sha2-256"),
        trickle: Some(false),
        inline: Some(false),
        pin: Some(true),
        ..Add::default()
    }
}

impl KuboStore {
    /// A store talking to the Kubo API at `api_url` (scheme, host and port; the
    /// `/api/v0` path is added), with CIDv1 raw-leaf options, the default size limit
    /// and a 60 s request timeout. Nothing is sent until the first call.
    pub fn new(api_url: &str) -> Result<Self, ContentError> {
        Self::with(
            api_url,
            AddOptions::default(),
            DEFAULT_MAX_OBJECT_SIZE,
            Duration::from_secs(60),
        )
    }

    /// A store with explicit CID options, object size limit and request timeout.
    pub fn with(
        api_url: &str,
        options: AddOptions,
        max_object_size: u64,
        timeout: Duration,
    ) -> Result<Self, ContentError> {
        let client = |offline: bool| {
            IpfsClient::from_str(api_url)
                .map(|c| {
                    BackendWithGlobalOptions::new(
                        c,
                        GlobalOptions {
                            offline: Some(offline),
                            timeout: Some(timeout),
                        },
                    )
                })
                .map_err(|e| ContentError::Kubo(format!("invalid api url {api_url:?}: {e}")))
        };
        Ok(Self {
            api: api_url.to_owned(),
            online: client(false)?,
            offline: client(true)?,
            options,
            max_object_size,
        })
    }
}

fn kubo_error(e: impl std::fmt::Display) -> ContentError {
    ContentError::Kubo(e.to_string())
}

/// Reads a byte stream into memory, stopping as soon as it exceeds `limit`.
async fn collect_limited<S, E>(mut stream: S, limit: u64) -> Result<Bytes, ContentError>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut out = BytesMut::new();
    while let Some(piece) = stream.try_next().await.map_err(kubo_error)? {
        check_size(out.len() as u64 + piece.len() as u64, limit)?;
        out.extend_from_slice(&piece);
    }
    Ok(out.freeze())
}

/// Accepts Kubo's answer to an add only if it names the CID computed locally.
fn check_added(kubo_hash: &str, expected: &Cid) -> Result<(), ContentError> {
    match crate::parse_cid(kubo_hash) {
        Ok(cid) if cid == *expected => Ok(()),
        _ => Err(ContentError::KuboCidDisagrees {
            kubo: kubo_hash.to_owned(),
            expected: *expected,
        }),
    }
}

#[async_trait]
impl ContentStore for KuboStore {
    fn add_options(&self) -> AddOptions {
        self.options
    }

    fn max_object_size(&self) -> u64 {
        self.max_object_size
    }

    async fn put(&self, bytes: Bytes) -> Result<Cid, ContentError> {
        check_size(bytes.len() as u64, self.max_object_size)?;
        let options = self.options;
        let hashed = bytes.clone();
        let expected = blocking(move || cid_of(&hashed, options)).await?;
        let response = self
            .online
            .add_with_options(std::io::Cursor::new(bytes), kubo_add_request(options))
            .await
            .map_err(kubo_error)?;
        check_added(&response.hash, &expected)?;
        tracing::debug!(target: "content::kubo", cid = %expected, "added to kubo");
        Ok(expected)
    }

    async fn get(&self, cid: &Cid) -> Result<Bytes, ContentError> {
        let path = cid.to_string();
        let bytes = collect_limited(self.online.cat(&path), self.max_object_size).await?;
        let expected = *cid;
        let checked = bytes.clone();
        blocking(move || crate::verify(&expected, &checked)).await??;
        Ok(bytes)
    }

    async fn has(&self, cid: &Cid) -> Result<bool, ContentError> {
        match self.offline.block_stat(&cid.to_string()).await {
            Ok(_) => Ok(true),
            // Offline, Kubo answers an API error for a block it does not hold.
            Err(ipfs_api_backend_hyper::Error::Api(_)) => Ok(false),
            Err(e) => Err(kubo_error(e)),
        }
    }

    async fn pin(&self, cid: &Cid) -> Result<(), ContentError> {
        self.online
            .pin_add(&cid.to_string(), true)
            .await
            .map(drop)
            .map_err(kubo_error)
    }

    async fn unpin(&self, cid: &Cid) -> Result<(), ContentError> {
        match self.online.pin_rm(&cid.to_string(), true).await {
            Ok(_) => Ok(()),
            Err(ipfs_api_backend_hyper::Error::Api(e)) if e.message.contains("not pinned") => {
                Ok(())
            }
            Err(e) => Err(kubo_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_request_pins_kubo_defaults_for_v0() {
        let json = serde_json::to_value(kubo_add_request(AddOptions::KUBO_DEFAULT)).unwrap();
        assert_eq!(json["cid-version"], 0);
        assert_eq!(json["raw-leaves"], false);
        assert_eq!(json["chunker"], "size-262144");
        assert_eq!(json["hash"], "sha2-256");
        assert_eq!(json["trickle"], false);
        assert_eq!(json["pin"], true);
    }

    #[test]
    fn add_request_for_v1_uses_raw_leaves() {
        let json = serde_json::to_value(kubo_add_request(AddOptions::KUBO_CID_V1)).unwrap();
        assert_eq!(json["cid-version"], 1);
        assert_eq!(json["raw-leaves"], true);
        let json = serde_json::to_value(kubo_add_request(AddOptions {
            cid_version: CidVersion::V0,
            raw_leaves: true,
        }))
        .unwrap();
        assert_eq!(json["raw-leaves"], false, "v0 cannot name raw leaves");
    }

    #[test]
    fn added_cid_must_match_local_computation() {
        let expected = cid_of(b"hello\n", AddOptions::KUBO_DEFAULT);
        check_added("QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN", &expected).unwrap();
        assert!(matches!(
            check_added("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", &expected),
            Err(ContentError::KuboCidDisagrees { .. })
        ));
        assert!(check_added("not a cid", &expected).is_err());
    }

    #[tokio::test]
    async fn collect_stops_at_the_limit() {
        let pieces = vec![
            Ok::<_, String>(Bytes::from_static(b"12345")),
            Ok(Bytes::from_static(b"6789")),
        ];
        let all = collect_limited(futures::stream::iter(pieces.clone()), 9)
            .await
            .unwrap();
        assert_eq!(all.as_ref(), b"123456789");
        assert!(matches!(
            collect_limited(futures::stream::iter(pieces), 8).await,
            Err(ContentError::TooLarge { .. })
        ));
        let failing = vec![Err::<Bytes, _>("connection reset".to_owned())];
        assert!(matches!(
            collect_limited(futures::stream::iter(failing), 8).await,
            Err(ContentError::Kubo(_))
        ));
    }

    #[test]
    fn invalid_api_url_is_rejected_without_network() {
        assert!(matches!(
            KuboStore::new("http://exa mple:5001"),
            Err(ContentError::Kubo(_))
        ));
        let store = KuboStore::new("http://127.0.0.1:5001").unwrap();
        assert_eq!(store.add_options(), AddOptions::KUBO_CID_V1);
    }
}
