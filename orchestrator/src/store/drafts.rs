//! Template drafts: bundles their author uploaded to test on their own leases before publishing.

use super::{Store, StoreError};
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
    /// tenant armed, which is then given to it (and disarmed). Returns the draft's content id
    /// and published content. Only the tenant's own drafts are ever given to their leases.
    pub async fn lease_draft(
        &self,
        lease_id: &str,
        tenant: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let mut tx = self.begin_write().await?;
        let given = sqlx::query("SELECT cid FROM lease_drafts WHERE lease_id = $1")
            .bind(lease_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let cid: String = match given {
            Some(row) => row.try_get("cid")?,
            None => {
                let armed = sqlx::query("SELECT cid FROM draft_tests WHERE tenant = $1")
                    .bind(tenant.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(armed) = armed else {
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
