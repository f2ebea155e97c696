//! The template catalog: validated bundles by slug, with the on-chain id and price a
//! publication gave them.

use super::{Store, StoreError, i, u};
pub use decloud_sdk::api::TemplateRecord;
use sqlx::{AnyConnection, Row, any::AnyRow};

fn template_from_row(row: &AnyRow) -> Result<TemplateRecord, StoreError> {
    let tags: String = row.try_get("tags")?;
    let manifest: String = row.try_get("manifest")?;
    Ok(TemplateRecord {
        slug: row.try_get("slug")?,
        template_id: row.try_get("template_id")?,
        cid: row.try_get("cid")?,
        name: row.try_get("name")?,
        category: row.try_get("category")?,
        description: row.try_get("description")?,
        tags: tags
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        min_vcpus: u(row, "min_vcpus")?,
        min_memory_gib: u(row, "min_memory_gib")?,
        min_disk_gib: u(row, "min_disk_gib")?,
        gpus: u(row, "gpus")?,
        price: u(row, "price")?,
        manifest: serde_json::from_str(&manifest).map_err(|_| StoreError::Corrupt {
            column: "manifest",
            value: manifest.clone(),
        })?,
        added_at: row.try_get("added_at")?,
        content: row.try_get("content")?,
    })
}

impl Store {
    /// Inserts a template or replaces the one with the same slug. A record without an on-chain
    /// id (the catalog loaded again at start) keeps the id and price the chain gave the same
    /// content, since the chain follower does not read those events again.
    pub async fn upsert_template(&self, t: &TemplateRecord) -> Result<(), StoreError> {
        let tags = t
            .tags
            .iter()
            .filter(|x| !x.is_empty() && !x.contains(','))
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query(
            "INSERT INTO templates (slug, template_id, cid, name, category, description, tags, min_vcpus, \
             min_memory_gib, min_disk_gib, gpus, price, manifest, added_at, content) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (slug) DO UPDATE SET \
             template_id = CASE WHEN excluded.template_id IS NULL AND templates.cid = excluded.cid \
               THEN templates.template_id ELSE excluded.template_id END, \
             price = CASE WHEN excluded.template_id IS NULL AND templates.cid = excluded.cid \
               THEN templates.price ELSE excluded.price END, \
             cid = excluded.cid, \
             name = excluded.name, category = excluded.category, description = excluded.description, \
             tags = excluded.tags, min_vcpus = excluded.min_vcpus, min_memory_gib = excluded.min_memory_gib, \
             min_disk_gib = excluded.min_disk_gib, gpus = excluded.gpus, \
             manifest = excluded.manifest, content = excluded.content",
        )
        .bind(t.slug.clone())
        .bind(t.template_id.clone())
        .bind(t.cid.clone())
        .bind(t.name.clone())
        .bind(t.category.clone())
        .bind(t.description.clone())
        .bind(tags)
        .bind(i(t.min_vcpus))
        .bind(i(t.min_memory_gib))
        .bind(i(t.min_disk_gib))
        .bind(i(t.gpus))
        .bind(i(t.price))
        .bind(t.manifest.to_string())
        .bind(t.added_at)
        .bind(t.content.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every template, by slug.
    pub async fn templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        sqlx::query("SELECT * FROM templates ORDER BY slug")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(template_from_row)
            .collect()
    }

    /// A template by slug or by on-chain template id.
    pub async fn template(&self, slug_or_id: &str) -> Result<Option<TemplateRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM templates WHERE slug = $1 OR template_id = $1 ORDER BY slug LIMIT 1",
        )
        .bind(slug_or_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(template_from_row).transpose()
    }
}

/// Gives the catalog bundle with content id `cid` its on-chain template id and price. Content
/// the catalog does not hold names no bundle, and nothing changes.
pub async fn template_published(
    conn: &mut AnyConnection,
    template_id: &str,
    price: u64,
    cid: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE templates SET template_id = $1, price = $2 WHERE cid = $3")
        .bind(template_id.to_string())
        .bind(i(price))
        .bind(cid.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
