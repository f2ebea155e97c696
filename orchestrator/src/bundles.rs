//! Bundles of templates published on TemplateMarket by anyone: fetched by their on-chain content
//! id from the content store (the embedded store, or Kubo's HTTP API when configured), checked
//! against that id, validated with the platform's rules and cached in the catalog under the
//! template's id, so a lease on any published template renders it like a seed.
//!
//! A bundle whose bytes do not match its id, that is not a bundle or that breaks a rule is
//! refused for good (the publication says why, the verdict is attested, and a lease on it fails
//! its VM with those reasons); content the store cannot reach now is retried on the next pass.

use std::{sync::Arc, time::Duration};

use decloud_content::{ContentError, ContentStore, EmbeddedStore, KuboStore, parse_cid};
use decloud_sdk::TemplateId;
use decloud_templates::{BUNDLE_CID_OPTIONS, Bundle, MAX_CONTENT_SIZE};

use crate::{
    catalog::{self, CatalogError},
    config::ContentConfig,
    store::{FetchState, Publication, Store, StoreError},
};

/// Opens the content store `config` names: Kubo when `ipfs_api` is set, else the embedded store
/// in `dir`.
/// Objects over a bundle's size limit are refused by the store itself, so a hostile CID cannot
/// make the orchestrator read more than that.
pub async fn open(config: &ContentConfig) -> Result<Arc<dyn ContentStore>, ContentError> {
    let limit = MAX_CONTENT_SIZE as u64;
    match (&config.ipfs_api, &config.dir) {
        (Some(url), _) => Ok(Arc::new(KuboStore::with(
            url,
            BUNDLE_CID_OPTIONS,
            limit,
            Duration::from_secs(30),
        )?)),
        (None, Some(dir)) => Ok(Arc::new(
            EmbeddedStore::open_with(dir, BUNDLE_CID_OPTIONS, limit).await?,
        )),
        // Refused by the configuration's validation before anything starts.
        (None, None) => Err(ContentError::Kubo(
            "[content] names no store: set dir or ipfs_api".into(),
        )),
    }
}

/// What fetching one bundle came to, before it is recorded.
enum Outcome {
    /// In the catalog under the template's id.
    Fetched,
    /// Refused for good, with every reason.
    Refused(String),
    /// The content store could not answer now.
    Unavailable(String),
}

/// Fetches the bundle of every publication still pending; returns how many were settled
/// (fetched or refused). Content the store cannot reach stays pending, with the reason noted.
pub async fn pass(
    store: &Store,
    content: &dyn ContentStore,
    now: i64,
) -> Result<usize, StoreError> {
    let mut settled = 0;
    for publication in store.pending_publications().await? {
        let outcome = fetch(store, content, &publication, now).await?;
        let subject = format!("template:{}", publication.template_id);
        match outcome {
            Outcome::Fetched => {
                store
                    .set_fetch_state(
                        publication.template_id,
                        &publication.cid,
                        FetchState::Fetched,
                        None,
                    )
                    .await?;
                settled += 1;
            }
            Outcome::Refused(reason) => {
                tracing::warn!(target: "orchestrator::bundles", template_id = %publication.template_id, cid = %publication.cid, %reason, "published bundle refused");
                let verdict = serde_json::json!({
                    "template_id": publication.template_id, "cid": publication.cid,
                    "verdict": "rejected", "reason": reason,
                });
                store
                    .attest(&subject, "template.validated", &verdict, now)
                    .await?;
                store
                    .set_fetch_state(
                        publication.template_id,
                        &publication.cid,
                        FetchState::Refused,
                        Some(&reason),
                    )
                    .await?;
                settled += 1;
            }
            Outcome::Unavailable(reason) => {
                tracing::info!(target: "orchestrator::bundles", template_id = %publication.template_id, cid = %publication.cid, %reason, "published bundle not fetched yet; retrying");
                store
                    .set_fetch_state(
                        publication.template_id,
                        &publication.cid,
                        FetchState::Pending,
                        Some(&reason),
                    )
                    .await?;
            }
        }
    }
    Ok(settled)
}

async fn fetch(
    store: &Store,
    content: &dyn ContentStore,
    publication: &Publication,
    now: i64,
) -> Result<Outcome, StoreError> {
    // A bundle the catalog already holds (a seed of `templates_dir`) got its id from the chain
    // follower: nothing to fetch.
    if let Some(t) = store.template_by_id(publication.template_id).await?
        && t.cid == publication.cid
    {
        return Ok(Outcome::Fetched);
    }
    let cid = match parse_cid(&publication.cid) {
        Ok(cid) => cid,
        Err(e) => return Ok(Outcome::Refused(e.to_string())),
    };
    // The store verifies the bytes against the content id before returning them.
    let bytes = match content.get(&cid).await {
        Ok(bytes) => bytes,
        Err(
            e @ (ContentError::NotFound(_)
            | ContentError::Io { .. }
            | ContentError::Kubo(_)
            | ContentError::Task(_)),
        ) => return Ok(Outcome::Unavailable(e.to_string())),
        Err(e) => return Ok(Outcome::Refused(e.to_string())),
    };
    let bundle = match Bundle::from_content(&bytes) {
        Ok(bundle) => bundle,
        Err(e) => return Ok(Outcome::Refused(format!("not a template bundle: {e}"))),
    };
    let mut record = match catalog::record_of(
        &bundle,
        Some(publication.template_id),
        publication.price,
        now,
    ) {
        Ok(record) => record,
        Err(CatalogError::Rejected { reasons, .. }) => return Ok(Outcome::Refused(reasons)),
        Err(CatalogError::Store(e)) => return Err(e),
        Err(e) => return Ok(Outcome::Refused(e.to_string())),
    };
    // Slugs are chosen by authors: one taken by other content (a seed, or another author's
    // bundle) is kept apart by the template id, so no publication replaces another's row.
    if store.slug_taken_by_other(&record.slug, &record.cid).await? {
        record.slug = format!("{}-{}", record.slug, publication.template_id);
    }
    store.upsert_template(&record).await?;
    let verdict = serde_json::json!({
        "template_id": publication.template_id, "slug": record.slug, "cid": record.cid,
        "verdict": "accepted",
    });
    store
        .attest(
            &format!("template:{}", publication.template_id),
            "template.validated",
            &verdict,
            now,
        )
        .await?;
    tracing::info!(target: "orchestrator::bundles", template_id = %publication.template_id, slug = %record.slug, cid = %record.cid, "published bundle fetched and validated");
    Ok(Outcome::Fetched)
}

/// Why a lease's template cannot be rendered, when the catalog does not hold it: what fetching
/// its published bundle came to.
pub async fn missing_reason(store: &Store, template_id: TemplateId) -> Result<String, StoreError> {
    Ok(match store.publication(template_id).await? {
        None => format!("template {template_id} is not in the catalog"),
        Some(p) => match (p.state, p.reason) {
            (FetchState::Refused, Some(reason)) => {
                format!(
                    "template {template_id} (bundle {}) is refused: {reason}",
                    p.cid
                )
            }
            (FetchState::Pending, Some(reason)) => format!(
                "template {template_id}'s bundle {} is not available: {reason}",
                p.cid
            ),
            _ => format!(
                "template {template_id}'s bundle {} is not fetched yet",
                p.cid
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chain::template_published;
    use sqlx::{AnyConnection, Connection};

    fn seed(slug: &str) -> Bundle {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../templates/seed")
            .join(slug);
        Bundle::load_dir(dir).unwrap()
    }

    #[tokio::test]
    async fn content_not_yet_stored_is_retried_and_a_taken_slug_is_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("o.db").display());
        let store = Store::connect(&url).await.unwrap();
        let content = open(&ContentConfig {
            dir: Some(dir.path().join("content")),
            ipfs_api: None,
        })
        .await
        .unwrap();
        // The catalog holds the postgresql seed; an author publishes another bundle that also
        // calls itself "postgresql", and the seed itself.
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/seed");
        crate::catalog::load_dir(&store, &seeds, 0).await.unwrap();
        let mut other = seed("postgresql");
        other.manifest.name = "Another PostgreSQL".into();
        let other_cid = other.cid().to_string();
        let seed_cid = seed("postgresql").cid().to_string();
        let mut conn = AnyConnection::connect(&url).await.unwrap();
        template_published(&mut conn, TemplateId::from(1), 0, &other_cid)
            .await
            .unwrap();
        template_published(&mut conn, TemplateId::from(2), 0, &seed_cid)
            .await
            .unwrap();

        // Not stored yet: the seed is settled from the catalog, the other stays pending with why.
        assert_eq!(pass(&store, content.as_ref(), 1).await.unwrap(), 1);
        let p = store
            .publication(TemplateId::from(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.state, FetchState::Pending);
        assert!(p.reason.unwrap().contains("not found"));
        assert!(store.template("1").await.unwrap().is_none());
        assert_eq!(
            store
                .publication(TemplateId::from(2))
                .await
                .unwrap()
                .unwrap()
                .state,
            FetchState::Fetched
        );

        // Once the content is there, the next pass fetches it, under a slug of its own.
        content.put(other.to_content().into()).await.unwrap();
        assert_eq!(pass(&store, content.as_ref(), 2).await.unwrap(), 1);
        let fetched = store.template("1").await.unwrap().expect("in the catalog");
        assert_eq!(
            (fetched.slug.as_str(), fetched.cid.as_str()),
            ("postgresql-1", other_cid.as_str())
        );
        let seed_row = store.template("postgresql").await.unwrap().unwrap();
        assert_eq!(
            (
                seed_row.template_id.map(|id| id.to_string()).as_deref(),
                seed_row.cid.as_str()
            ),
            (Some("2"), seed_cid.as_str())
        );
        assert_eq!(pass(&store, content.as_ref(), 3).await.unwrap(), 0);

        // An update to content that breaks a rule is fetched again, and refused with the rule.
        let mut broken = other.clone();
        broken.manifest.min_specs.vcpus = 0;
        content.put(broken.to_content().into()).await.unwrap();
        template_published(&mut conn, TemplateId::from(1), 0, &broken.cid().to_string())
            .await
            .unwrap();
        assert!(
            store.template("1").await.unwrap().is_none(),
            "the old content is no longer template 1"
        );
        assert_eq!(pass(&store, content.as_ref(), 4).await.unwrap(), 1);
        let refused = missing_reason(&store, TemplateId::from(1)).await.unwrap();
        assert!(
            refused.contains("is refused") && refused.contains("zero-specs"),
            "{refused}"
        );
        conn.close().await.unwrap();
        store.close().await;
    }
}
