//! Template drafts: bundles their author uploaded to test on their own leases before publishing.

use super::{Store, StoreError};
use decloud_sdk::LeaseId;
pub use decloud_sdk::api::DraftView;
use sqlx::{Row, any::AnyRow};

fn draft_from_row(row: &AnyRow) -> Result<DraftView, StoreError> {
    Ok(DraftView {
        cid: row.try_get("cid")?,
        author: row.try_get("author")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

/// How far a lease's block time may lag the orchestrator's clock at arming, seconds: a lease
/// opened up to this long before its author armed a draft still takes it.
const ARMING_SKEW_SECS: i64 = 300;

impl Store {
    /// Records a draft of `author` with its published `content`; uploading the same content
    /// again keeps the first record.
    pub async fn insert_draft(&self, draft: &DraftView, content: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO template_drafts (author, cid, slug, name, content, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (author, cid) DO NOTHING",
        )
        .bind(draft.author.clone())
        .bind(draft.cid.clone())
        .bind(draft.slug.clone())
        .bind(draft.name.clone())
        .bind(content.to_string())
        .bind(draft.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The drafts of `author`, newest first.
    pub async fn drafts_of(&self, author: &str) -> Result<Vec<DraftView>, StoreError> {
        sqlx::query("SELECT * FROM template_drafts WHERE author = $1 ORDER BY created_at DESC, cid")
            .bind(author.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(draft_from_row)
            .collect()
    }

    /// Arms draft `cid` of `author` for the author's next lease opened without a template
    /// (replacing a draft armed before). [`StoreError::NotFound`] when `author` has no such draft.
    pub async fn arm_draft_test(
        &self,
        author: &str,
        cid: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let owned = sqlx::query("SELECT cid FROM template_drafts WHERE author = $1 AND cid = $2")
            .bind(author.to_string())
            .bind(cid.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if owned.is_none() {
            return Err(StoreError::NotFound("draft"));
        }
        sqlx::query(
            "INSERT INTO draft_tests (tenant, cid, armed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant) DO UPDATE SET cid = excluded.cid, armed_at = excluded.armed_at",
        )
        .bind(author.to_string())
        .bind(cid.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The draft a lease without a template runs: the one it was given, or else the draft its
    /// tenant armed before opening it, which is then given to it (and disarmed). Returns the
    /// draft's content id and published content. Only the tenant's own drafts are ever given to
    /// their leases.
    pub async fn lease_draft(
        &self,
        lease_id: LeaseId,
        tenant: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        // Nearly every lease without a template has no draft: a read settles those without
        // taking the database's write lock.
        let any = sqlx::query(
            "SELECT 1 FROM lease_drafts WHERE lease_id = $1 \
             UNION ALL SELECT 1 FROM draft_tests WHERE tenant = $2",
        )
        .bind(lease_id.to_string())
        .bind(tenant.to_string())
        .fetch_optional(&self.pool)
        .await?;
        if any.is_none() {
            return Ok(None);
        }
        let mut tx = self.begin_write().await?;
        let given = sqlx::query("SELECT cid FROM lease_drafts WHERE lease_id = $1")
            .bind(lease_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let cid: String = match given {
            Some(row) => row.try_get("cid")?,
            None => {
                let armed = sqlx::query(
                    "SELECT d.cid FROM draft_tests d JOIN leases l ON l.lease_id = $2 \
                     WHERE d.tenant = $1 AND l.opened_at + $3 >= d.armed_at",
                )
                .bind(tenant.to_string())
                .bind(lease_id.to_string())
                .bind(ARMING_SKEW_SECS)
                .fetch_optional(&mut *tx)
                .await?;
                // Only a lease opened after the draft was armed takes it: an older lease of the
                // author whose VM is created again keeps running what it ran.
                let Some(armed) = armed else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                let cid: String = armed.try_get("cid")?;
                sqlx::query("INSERT INTO lease_drafts (lease_id, cid) VALUES ($1, $2)")
                    .bind(lease_id.to_string())
                    .bind(cid.clone())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM draft_tests WHERE tenant = $1")
                    .bind(tenant.to_string())
                    .execute(&mut *tx)
                    .await?;
                cid
            }
        };
        let content =
            sqlx::query("SELECT content FROM template_drafts WHERE author = $1 AND cid = $2")
                .bind(tenant.to_string())
                .bind(cid.clone())
                .fetch_optional(&mut *tx)
                .await?;
        let content: Option<String> = content.map(|r| r.try_get("content")).transpose()?;
        tx.commit().await?;
        Ok(content.map(|c| (cid, c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LeaseRecord;
    use decloud_sdk::types::{LeaseStatus, QualityTier};

    const AUTHOR: &str = "0x00000000000000000000000000000000000000aa";
    const OTHER: &str = "0x00000000000000000000000000000000000000bb";

    fn lease(id: &str, tenant: &str, opened_at: i64) -> LeaseRecord {
        LeaseRecord {
            lease_id: id.parse().unwrap(),
            tenant: tenant.into(),
            node_id: alloy::primitives::B256::with_last_byte(1).into(),
            status: LeaseStatus::Active,
            tier: QualityTier::Standard,
            vcpus: 1,
            memory_gib: 1,
            storage_gib: 5,
            gpus: 0,
            rate_per_hour: 1,
            opened_at,
        }
    }

    #[tokio::test]
    async fn only_the_authors_next_lease_takes_an_armed_draft_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("o.db").display());
        let store = Store::connect(&url).await.unwrap();
        let draft = DraftView {
            cid: "bafkdraft".into(),
            author: AUTHOR.into(),
            slug: "d".into(),
            name: "D".into(),
            created_at: 1_000,
        };
        store.insert_draft(&draft, "{content}").await.unwrap();
        // Nobody but the author arms it.
        assert!(matches!(
            store.arm_draft_test(OTHER, "bafkdraft", 1_000).await,
            Err(StoreError::NotFound("draft"))
        ));
        for l in [
            lease("1", AUTHOR, 100),
            lease("2", OTHER, 2_000),
            lease("3", AUTHOR, 2_000),
            lease("4", AUTHOR, 2_100),
        ] {
            store.upsert_lease(&l).await.unwrap();
        }
        // Not armed: no lease takes it.
        assert_eq!(
            store.lease_draft(LeaseId::from(3), AUTHOR).await.unwrap(),
            None
        );
        store
            .arm_draft_test(AUTHOR, "bafkdraft", 1_000)
            .await
            .unwrap();
        // Another tenant's lease, and the author's lease opened long before arming, do not.
        assert_eq!(
            store.lease_draft(LeaseId::from(2), OTHER).await.unwrap(),
            None
        );
        assert_eq!(
            store.lease_draft(LeaseId::from(1), AUTHOR).await.unwrap(),
            None
        );
        // The author's next lease does, for good; the one after it does not.
        let taken = Some(("bafkdraft".to_string(), "{content}".to_string()));
        assert_eq!(
            store.lease_draft(LeaseId::from(3), AUTHOR).await.unwrap(),
            taken
        );
        assert_eq!(
            store.lease_draft(LeaseId::from(4), AUTHOR).await.unwrap(),
            None
        );
        assert_eq!(
            store.lease_draft(LeaseId::from(3), AUTHOR).await.unwrap(),
            taken
        );
        assert_eq!(store.drafts_of(AUTHOR).await.unwrap(), vec![draft]);
        assert!(store.drafts_of(OTHER).await.unwrap().is_empty());
        store.close().await;
    }
}
