//! The template catalog: validated bundles (`decloud-templates`) with their content id, searchable
//! by category, GPU, tags and text, and found by slug or on-chain template id.

use crate::store::{Store, StoreError, TemplateRecord};
use decloud_sdk::TemplateId;
pub use decloud_sdk::api::{TemplateSearch, TemplateSort};
use decloud_templates::{Bundle, validate};
use std::path::Path;

/// Largest page of template search results.
pub const MAX_PAGE: usize = 100;

/// Errors of loading bundles into the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A bundle could not be read.
    #[error("cannot load template bundle {path}: {message}")]
    Load {
        /// Bundle directory.
        path: String,
        /// Why.
        message: String,
    },
    /// A bundle breaks the platform's security rules; nothing of it was stored.
    #[error("template {slug} rejected: {reasons}")]
    Rejected {
        /// The bundle's slug.
        slug: String,
        /// Every rule it breaks.
        reasons: String,
    },
    /// The store failed, or the validation verdict could not be attested.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The catalog row of a validated bundle.
pub fn record_of(
    bundle: &Bundle,
    template_id: Option<TemplateId>,
    price: u64,
    now: i64,
) -> Result<TemplateRecord, CatalogError> {
    let m = &bundle.manifest;
    if let Err(rejections) = validate(bundle) {
        let reasons = rejections
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(CatalogError::Rejected {
            slug: m.slug.clone(),
            reasons,
        });
    }
    let category = serde_json::to_value(m.category)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "other".into());
    Ok(TemplateRecord {
        slug: m.slug.clone(),
        template_id,
        cid: bundle.cid().to_string(),
        name: m.name.clone(),
        category,
        description: m.description.clone(),
        tags: m.tags.iter().map(|t| t.to_lowercase()).collect(),
        min_vcpus: m.min_specs.vcpus.into(),
        min_memory_gib: m.min_specs.memory_gib.into(),
        min_disk_gib: m.min_specs.disk_gib.into(),
        gpus: m.min_specs.gpus.into(),
        price,
        manifest: serde_json::to_value(m).expect("manifests serialize"),
        added_at: now,
        content: Some(String::from_utf8(bundle.to_content()).expect("bundle content is JSON text")),
        // Filled in by the API from the reviews.
        rating: Default::default(),
    })
}

/// Loads every bundle directory under `dir` into the catalog. A bundle that cannot be read or
/// breaks a security rule is not stored, and the first such error is returned after the
/// valid ones were stored.
pub async fn load_dir(store: &Store, dir: &Path, now: i64) -> Result<usize, CatalogError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CatalogError::Load {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    paths.sort();
    let mut loaded = 0;
    let mut first_error = None;
    for path in paths {
        let result = Bundle::load_dir(&path)
            .map_err(|e| CatalogError::Load {
                path: path.display().to_string(),
                message: e.to_string(),
            })
            .and_then(|bundle| record_of(&bundle, None, 0, now));
        match result {
            Ok(record) => {
                store.upsert_template(&record).await?;
                let verdict = serde_json::json!({
                    "slug": record.slug, "cid": record.cid, "verdict": "accepted",
                });
                store
                    .attest(
                        &format!("template:{}", record.slug),
                        "template.validated",
                        &verdict,
                        now,
                    )
                    .await?;
                loaded += 1;
            }
            Err(e) => {
                tracing::warn!(target: "orchestrator::catalog", error = %e, "template bundle not loaded");
                let subject = match &e {
                    CatalogError::Rejected { slug, .. } => format!("template:{slug}"),
                    _ => format!("template-bundle:{}", path.display()),
                };
                let verdict = serde_json::json!({
                    "path": path.display().to_string(), "verdict": "rejected", "reason": e.to_string(),
                });
                store
                    .attest(&subject, "template.validated", &verdict, now)
                    .await?;
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(loaded),
    }
}

/// Whether a template passes every filter of `q`.
pub fn matches(t: &TemplateRecord, q: &TemplateSearch) -> bool {
    if q.category
        .as_ref()
        .is_some_and(|c| !c.eq_ignore_ascii_case(&t.category))
    {
        return false;
    }
    if q.gpu.is_some_and(|g| g != (t.gpus > 0)) {
        return false;
    }
    if let Some(tags) = &q.tags
        && !tags
            .split(',')
            .map(|x| x.trim().to_lowercase())
            .filter(|x| !x.is_empty())
            .all(|x| t.tags.contains(&x))
    {
        return false;
    }
    if let Some(text) = &q.q {
        let haystack = format!("{} {} {}", t.name, t.description, t.tags.join(" ")).to_lowercase();
        if !text
            .split_whitespace()
            .all(|w| haystack.contains(&w.to_lowercase()))
        {
            return false;
        }
    }
    true
}

/// The page of templates `q` selects, sorted (ties by slug), with the number of matches.
pub fn search(
    mut all: Vec<TemplateRecord>,
    q: &TemplateSearch,
) -> Result<(usize, Vec<TemplateRecord>), String> {
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(format!("limit must be between 1 and {MAX_PAGE}"));
    }
    all.retain(|t| matches(t, q));
    match q.sort.unwrap_or_default() {
        TemplateSort::Name => all.sort_by(|a, b| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then(a.slug.cmp(&b.slug))
        }),
        TemplateSort::Newest => {
            all.sort_by(|a, b| b.added_at.cmp(&a.added_at).then(a.slug.cmp(&b.slug)))
        }
        TemplateSort::Price => all.sort_by(|a, b| a.price.cmp(&b.price).then(a.slug.cmp(&b.slug))),
    }
    let total = all.len();
    Ok((
        total,
        all.into_iter()
            .skip(q.offset.unwrap_or(0))
            .take(limit)
            .collect(),
    ))
}
