//! The template catalog: validated bundles by slug, with the on-chain id and price a
//! publication gave them.

use super::{Store, StoreError, i, named, u};
use decloud_sdk::TemplateId;
pub use decloud_sdk::api::TemplateRecord;
use sqlx::{AnyConnection, Row, any::AnyRow};

fn template_from_row(row: &AnyRow) -> Result<TemplateRecord, StoreError> {
    let tags: String = row.try_get("tags")?;
    let manifest: String = row.try_get("manifest")?;
    Ok(TemplateRecord {
        slug: row.try_get("slug")?,
        template_id: match row.try_get::<Option<String>, _>("template_id")? {
            Some(_) => Some(named(row, "template_id")?),
            None => None,
        },
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
        rating: Default::default(),
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
        .bind(t.template_id.map(|id| id.to_string()))
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

    /// A template by its on-chain template id.
    pub async fn template_by_id(
        &self,
        template_id: TemplateId,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM templates WHERE template_id = $1 LIMIT 1")
            .bind(template_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(template_from_row).transpose()
    }

    /// A template by slug or by on-chain template id, as a user names it.
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

/// Gives the catalog bundle with content id `cid` its on-chain template id and price, and records
/// the publication so that a bundle the catalog does not hold is fetched by its content id
/// ([`crate::bundles`]). A publication whose content id changed (an update) is fetched again.
pub async fn template_published(
    conn: &mut AnyConnection,
    template_id: TemplateId,
    price: u64,
    cid: &str,
) -> Result<(), StoreError> {
    // An update to other content: the bundle cached for the old content no longer is the
    // template, so no lease renders it.
    sqlx::query("UPDATE templates SET template_id = NULL WHERE template_id = $1 AND cid <> $2")
        .bind(template_id.to_string())
        .bind(cid.to_string())
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE templates SET template_id = $1, price = $2 WHERE cid = $3")
        .bind(template_id.to_string())
        .bind(i(price))
        .bind(cid.to_string())
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO template_publications (template_id, cid, price, fetch_state, reason) \
         VALUES ($1, $2, $3, 'pending', NULL) \
         ON CONFLICT (template_id) DO UPDATE SET price = excluded.price, \
         fetch_state = CASE WHEN template_publications.cid = excluded.cid \
           THEN template_publications.fetch_state ELSE 'pending' END, \
         reason = CASE WHEN template_publications.cid = excluded.cid \
           THEN template_publications.reason ELSE NULL END, \
         cid = excluded.cid",
    )
    .bind(template_id.to_string())
    .bind(cid.to_string())
    .bind(i(price))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What fetching a published template's bundle came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchState {
    /// Not fetched yet, or the content store could not be reached (retried).
    Pending,
    /// Validated and in the catalog under the template's id.
    Fetched,
    /// The content does not match its id, is not a bundle, or fails validation.
    Refused,
}

impl FetchState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Fetched => "fetched",
            Self::Refused => "refused",
        }
    }
}

impl std::str::FromStr for FetchState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "pending" => Ok(Self::Pending),
            "fetched" => Ok(Self::Fetched),
            "refused" => Ok(Self::Refused),
            _ => Err(()),
        }
    }
}

/// A template published on TemplateMarket and where fetching its bundle stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// On-chain template id.
    pub template_id: TemplateId,
    /// Content id of the bundle, as published.
    pub cid: String,
    /// Price per deploy, micro-USDC.
    pub price: u64,
    /// Where fetching stands.
    pub state: FetchState,
    /// Why the bundle was refused, or why the last fetch failed.
    pub reason: Option<String>,
}

fn publication_from_row(row: &AnyRow) -> Result<Publication, StoreError> {
    Ok(Publication {
        template_id: named(row, "template_id")?,
        cid: row.try_get("cid")?,
        price: u(row, "price")?,
        state: super::named(row, "fetch_state")?,
        reason: row.try_get("reason")?,
    })
}

impl Store {
    /// The publication of template `template_id`, if the chain published it.
    pub async fn publication(
        &self,
        template_id: TemplateId,
    ) -> Result<Option<Publication>, StoreError> {
        let row = sqlx::query("SELECT * FROM template_publications WHERE template_id = $1")
            .bind(template_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(publication_from_row).transpose()
    }

    /// Publications whose bundle is still to be fetched, oldest id first.
    pub async fn pending_publications(&self) -> Result<Vec<Publication>, StoreError> {
        sqlx::query(
            "SELECT * FROM template_publications WHERE fetch_state = 'pending' ORDER BY template_id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(publication_from_row)
        .collect()
    }

    /// Records what fetching the bundle `cid` of template `template_id` came to. A publication
    /// whose content id changed meanwhile (an update) is left pending for its new content.
    pub async fn set_fetch_state(
        &self,
        template_id: TemplateId,
        cid: &str,
        state: FetchState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE template_publications SET fetch_state = $1, reason = $2 \
             WHERE template_id = $3 AND cid = $4",
        )
        .bind(state.as_str())
        .bind(reason.map(str::to_string))
        .bind(template_id.to_string())
        .bind(cid.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether a catalog slug is taken by a bundle other than content `cid`.
    pub async fn slug_taken_by_other(&self, slug: &str, cid: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT cid FROM templates WHERE slug = $1")
            .bind(slug.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<String, _>("cid")? != cid,
            None => false,
        })
    }
}
