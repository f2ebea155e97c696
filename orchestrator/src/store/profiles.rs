//! Node profiles: the tags and description a node's on-chain `metadataCid` names, as last read.

use super::{Store, StoreError, named};
use decloud_sdk::NodeId;
use sqlx::Row;
use std::collections::BTreeMap;

impl Store {
    /// Nodes whose `metadataCid` was not read yet (or changed since): (node id, metadata CID).
    pub async fn profiles_to_fetch(&self) -> Result<Vec<(NodeId, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT n.node_id, n.metadata_cid FROM nodes n \
             LEFT JOIN node_profiles p ON p.node_id = n.node_id \
             WHERE n.metadata_cid <> '' AND (p.cid IS NULL OR p.cid <> n.metadata_cid) \
             ORDER BY n.node_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((named(r, "node_id")?, r.try_get("metadata_cid")?)))
            .collect()
    }

    /// Records what the profile at `cid` of a node came to: its tags (into the node's tags, which
    /// the marketplace filters on) and description, or, with `error`, that it is ignored (no tags,
    /// no description). A node whose metadata changed meanwhile is left to be read again.
    pub async fn set_node_profile(
        &self,
        node_id: NodeId,
        cid: &str,
        tags: &[String],
        description: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let tags = tags
            .iter()
            .filter(|t| !t.is_empty() && !t.contains(','))
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        let mut tx = self.begin_write().await?;
        let changed =
            sqlx::query("UPDATE nodes SET tags = $1 WHERE node_id = $2 AND metadata_cid = $3")
                .bind(tags)
                .bind(node_id.to_string())
                .bind(cid.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if changed == 1 {
            sqlx::query(
                "INSERT INTO node_profiles (node_id, cid, description, error, fetched_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (node_id) DO UPDATE SET \
                 cid = excluded.cid, description = excluded.description, \
                 error = excluded.error, fetched_at = excluded.fetched_at",
            )
            .bind(node_id.to_string())
            .bind(cid.to_string())
            .bind(description.to_string())
            .bind(error.map(str::to_string))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The description of every node whose profile was read, by node id.
    pub async fn node_descriptions(&self) -> Result<BTreeMap<NodeId, String>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.node_id, p.description FROM node_profiles p \
             JOIN nodes n ON n.node_id = p.node_id AND n.metadata_cid = p.cid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((named(r, "node_id")?, r.try_get("description")?)))
            .collect()
    }
}
