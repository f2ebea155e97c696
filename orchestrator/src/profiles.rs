//! Node profiles: the tags and description a node's on-chain `metadataCid` names, fetched from the
//! content store (which checks the bytes against the CID), size-limited and parsed. The tags go
//! where the marketplace filters on them; the description is shown with the node.
//!
//! A profile that is too large, is not JSON of the [`NodeProfile`] shape, or breaks its limits is
//! ignored (no tags, no description) with the reason logged and kept, until the node names other
//! metadata; content the store cannot reach now is read again on the next pass.

use decloud_content::{ContentError, ContentStore, parse_cid};
use decloud_sdk::api::NodeProfile;

use crate::store::{Store, StoreError};

/// Parses a profile document: at most [`NodeProfile::MAX_SIZE`] bytes of JSON, normalized.
pub fn parse(bytes: &[u8]) -> Result<NodeProfile, String> {
    if bytes.len() > NodeProfile::MAX_SIZE {
        return Err(format!(
            "{} bytes exceeds the {}-byte profile limit",
            bytes.len(),
            NodeProfile::MAX_SIZE
        ));
    }
    let profile: NodeProfile =
        serde_json::from_slice(bytes).map_err(|e| format!("not a node profile: {e}"))?;
    profile.normalized()
}

/// The canonical document of a profile: what is stored and named by a node's `metadataCid`.
pub fn document(profile: &NodeProfile) -> Vec<u8> {
    serde_json::to_vec(profile).expect("profiles serialize")
}

/// Reads the profile of every node whose `metadataCid` is new; returns how many were settled
/// (read or ignored).
pub async fn pass(
    store: &Store,
    content: &dyn ContentStore,
    now: i64,
) -> Result<usize, StoreError> {
    let mut settled = 0;
    for (node_id, metadata_cid) in store.profiles_to_fetch().await? {
        let fetched = match parse_cid(&metadata_cid) {
            Err(e) => Err(e.to_string()),
            Ok(cid) => match content.get(&cid).await {
                Ok(bytes) => parse(&bytes),
                Err(
                    e @ (ContentError::NotFound(_)
                    | ContentError::Io { .. }
                    | ContentError::Kubo(_)
                    | ContentError::Task(_)),
                ) => {
                    tracing::info!(target: "orchestrator::profiles", %node_id, cid = %metadata_cid, error = %e, "node profile not readable yet; retrying");
                    continue;
                }
                Err(e) => Err(e.to_string()),
            },
        };
        match fetched {
            Ok(profile) => {
                store
                    .set_node_profile(
                        node_id,
                        &metadata_cid,
                        &profile.tags,
                        &profile.description,
                        None,
                        now,
                    )
                    .await?;
                tracing::info!(target: "orchestrator::profiles", %node_id, cid = %metadata_cid, tags = profile.tags.len(), "node profile read");
            }
            Err(reason) => {
                tracing::warn!(target: "orchestrator::profiles", %node_id, cid = %metadata_cid, %reason, "node profile ignored");
                store
                    .set_node_profile(node_id, &metadata_cid, &[], "", Some(&reason), now)
                    .await?;
            }
        }
        settled += 1;
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NodeRecord, NodeStatus};

    fn node(id: u8, metadata_cid: &str) -> NodeRecord {
        NodeRecord {
            node_id: alloy::primitives::B256::with_last_byte(id).into(),
            operator: "0x01".into(),
            node_key: "0x02".into(),
            status: NodeStatus::Active,
            region: "eu-west".into(),
            endpoint: String::new(),
            metadata_cid: metadata_cid.into(),
            tags: Vec::new(),
            vcpus: 8,
            memory_gib: 16,
            disk_gib: 100,
            gpus: 0,
            bandwidth_mbps: 100,
            compute_points: 100,
            prices: Default::default(),
            registered_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn documents_are_limited_and_normalized() {
        let p = parse(br#"{"tags":[" SSD ","nvme","ssd"],"description":" Fast disks. "}"#).unwrap();
        assert_eq!(p.tags, vec!["ssd", "nvme"]);
        assert_eq!(p.description, "Fast disks.");
        assert_eq!(parse(&document(&p)).unwrap(), p);
        assert!(
            parse(b"not json")
                .unwrap_err()
                .contains("not a node profile")
        );
        assert!(parse(br#"{"tags":["a,b"]}"#).unwrap_err().contains("tag"));
        let huge = vec![b' '; NodeProfile::MAX_SIZE + 1];
        assert!(parse(&huge).unwrap_err().contains("profile limit"));
    }

    #[tokio::test]
    async fn profiles_are_read_once_per_cid_and_bad_ones_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("o.db").display());
        let store = Store::connect(&url).await.unwrap();
        let content = crate::bundles::open(&crate::config::ContentConfig {
            dir: Some(dir.path().join("content")),
            ipfs_api: None,
        })
        .await
        .unwrap();
        let good = NodeProfile {
            tags: vec!["ssd".into(), "gpu".into()],
            description: "Two A100s in Frankfurt.".into(),
        };
        let good_cid = content.put(document(&good).into()).await.unwrap();
        let bad_cid = content.put(b"{\"tags\": 7}".to_vec().into()).await.unwrap();
        let missing =
            decloud_content::cid_of(b"never stored", decloud_templates::BUNDLE_CID_OPTIONS);
        store
            .upsert_node(&node(1, &good_cid.to_string()))
            .await
            .unwrap();
        store
            .upsert_node(&node(2, &bad_cid.to_string()))
            .await
            .unwrap();
        store
            .upsert_node(&node(3, &missing.to_string()))
            .await
            .unwrap();
        store.upsert_node(&node(4, "")).await.unwrap();

        assert_eq!(pass(&store, content.as_ref(), 1).await.unwrap(), 2);
        let one = store.node(node(1, "").node_id).await.unwrap().unwrap();
        assert_eq!(one.tags, vec!["ssd", "gpu"]);
        let descriptions = store.node_descriptions().await.unwrap();
        assert_eq!(
            descriptions.get(&one.node_id).map(String::as_str),
            Some("Two A100s in Frankfurt.")
        );
        let two = store.node(node(2, "").node_id).await.unwrap().unwrap();
        assert!(two.tags.is_empty());
        assert_eq!(descriptions.get(&two.node_id).map(String::as_str), Some(""));
        // Read once per CID; the missing one is tried again on every pass.
        assert_eq!(store.profiles_to_fetch().await.unwrap().len(), 1);
        assert_eq!(pass(&store, content.as_ref(), 2).await.unwrap(), 0);
        assert_eq!(
            store.profiles_to_fetch().await.unwrap()[0].1,
            missing.to_string()
        );
        store.close().await;
    }
}
