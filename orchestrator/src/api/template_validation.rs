//! `POST /api/v1/templates/validate`: the template validator's verdict on a bundle, before its
//! author signs anything. It stores nothing and needs no session: it runs the same validator
//! the catalog applies ([`decloud_templates::validate`]) and returns, for a bundle that passes,
//! its canonical published bytes, their CID and the on-chain metadata, exactly what
//! `TemplateMarket.publish` is then called with (as `decloud template publish` does).

use super::{ApiError, ApiJson, AppState, ErrorBody};
use axum::{Json, http::StatusCode};
use decloud_templates::{Bundle, Manifest, validate};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

/// A bundle to validate: either its two files as text (`manifest` is `template.toml`,
/// `user_data` is `user-data`), or `content`, a published bundle (its canonical JSON).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ValidateRequest {
    /// `template.toml`.
    #[serde(default)]
    manifest: Option<String>,
    /// `user-data` (cloud-init).
    #[serde(default)]
    user_data: Option<String>,
    /// A published bundle file.
    #[serde(default)]
    content: Option<String>,
}

/// One rule a bundle breaks.
#[derive(Debug, Serialize, ToSchema)]
struct RejectionView {
    /// The rule's id, e.g. `pipe-to-shell`.
    rule: String,
    /// Why, in words.
    reason: String,
    /// `template.toml` or `user-data`.
    file: String,
    /// 1-based line, when known.
    line: Option<usize>,
    /// Path inside the document, e.g. `runcmd[2]`.
    path: Option<String>,
}

/// The validator's verdict.
#[derive(Debug, Serialize, ToSchema)]
struct Verdict {
    /// Whether the bundle passes every rule; only then may it be published.
    valid: bool,
    /// Every rule it breaks (empty when valid).
    rejections: Vec<RejectionView>,
    /// Template name.
    name: String,
    /// Template slug.
    slug: String,
    /// Template category.
    category: String,
    /// CID of the published bytes (CIDv1, as `ipfs add --cid-version=1`): the `cid` argument of
    /// `TemplateMarket.publish`.
    cid: String,
    /// The published bytes (canonical JSON), to store under that CID.
    content: String,
    /// The on-chain metadata: the `metadata` argument of `TemplateMarket.publish`.
    metadata: String,
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_bundle", message)
}

/// The bundle a request names; a file that does not parse is refused with the parser's reason.
fn bundle_of(request: ValidateRequest) -> Result<Bundle, ApiError> {
    match request {
        ValidateRequest {
            content: Some(content),
            manifest: None,
            user_data: None,
        } => Bundle::from_content(content.as_bytes())
            .map_err(|e| invalid(format!("the bundle file is not a published bundle: {e}"))),
        ValidateRequest {
            content: None,
            manifest: Some(manifest),
            user_data: Some(user_data),
        } => {
            let manifest: Manifest = toml::from_str(&manifest)
                .map_err(|e| invalid(format!("template.toml does not parse: {e}")))?;
            Ok(Bundle {
                manifest,
                user_data,
            })
        }
        _ => Err(invalid(
            "send either `content` (a published bundle) or both `manifest` (template.toml) and \
             `user_data` (user-data)"
                .into(),
        )),
    }
}

/// The validator's verdict on a template bundle, and the CID and metadata it would be published
/// with. Stores nothing.
#[utoipa::path(post, path = "/templates/validate", tag = "templates", request_body = ValidateRequest,
    responses((status = 200, body = Verdict), (status = 400, body = ErrorBody)))]
async fn validate_bundle(
    ApiJson(request): ApiJson<ValidateRequest>,
) -> Result<Json<Verdict>, ApiError> {
    let bundle = bundle_of(request)?;
    let rejections = match validate(&bundle) {
        Ok(()) => Vec::new(),
        Err(rejections) => rejections
            .into_iter()
            .map(|r| RejectionView {
                rule: r.rule.id().to_string(),
                reason: r.reason,
                file: r.location.file.to_string(),
                line: r.location.line,
                path: r.location.path,
            })
            .collect(),
    };
    let m = &bundle.manifest;
    // The same metadata `decloud template publish` writes on-chain, so the marketplace lists a
    // template the same way whichever client published it.
    let metadata = json!({ "name": m.name, "slug": m.slug, "category": m.category }).to_string();
    let category = serde_json::to_value(m.category)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(Json(Verdict {
        valid: rejections.is_empty(),
        rejections,
        name: m.name.clone(),
        slug: m.slug.clone(),
        category,
        cid: bundle.cid().to_string(),
        content: String::from_utf8(bundle.to_content()).expect("a published bundle is JSON text"),
        metadata,
    }))
}

/// The template validation route.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(validate_bundle))
}
