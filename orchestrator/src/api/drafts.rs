//! Template drafts: an author uploads a bundle and reads the validator's verdict, test-deploys it
//! on a lease of their own, and publishes it on TemplateMarket under the same content id when
//! satisfied (the orchestrator then already holds the content).

use super::{ApiError, ApiPath, AppState, ErrorBody, Session};
use crate::{clock::now, store::StoreError};
use axum::{Json, body::Bytes, extract::State, http::StatusCode};
use decloud_sdk::api::{DraftTest, DraftView};
use decloud_templates::{Bundle, validate};
use utoipa_axum::{router::OpenApiRouter, routes};

/// Uploads a bundle as a draft of the caller: the body is the bundle's published form (what
/// `decloud template draft` sends; its content id is what `TemplateMarket.publish` takes). A
/// bundle the validator accepts is stored and returned; one it rejects is refused with every
/// reason in `details.reasons`, and nothing is stored.
#[utoipa::path(post, path = "/templates/drafts", tag = "templates", security(("session" = [])),
    request_body(content = Object, content_type = "application/json",
        description = "the bundle's published form: {format, manifest, user_data}"),
    responses((status = 201, body = DraftView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn upload_draft(
    State(state): State<AppState>,
    session: Session,
    body: Bytes,
) -> Result<(StatusCode, Json<DraftView>), ApiError> {
    let bundle = Bundle::from_content(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_bundle",
            format!("not a template bundle: {e}"),
        )
    })?;
    if let Err(rejections) = validate(&bundle) {
        let reasons: Vec<String> = rejections.iter().map(ToString::to_string).collect();
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bundle_rejected",
            format!("the bundle is rejected: {}", reasons.join("; ")),
        );
        e.details = Some(serde_json::json!({ "reasons": reasons }));
        return Err(e);
    }
    // Stored by its content id, so that publishing that id on TemplateMarket makes it
    // deployable by anyone without another upload.
    let content = bundle.to_content();
    if let Some(store) = state.content() {
        store
            .put(content.clone().into())
            .await
            .map_err(ApiError::internal)?;
    }
    let m = &bundle.manifest;
    let draft = DraftView {
        cid: bundle.cid().to_string(),
        author: session.address.clone(),
        slug: m.slug.clone(),
        name: m.name.clone(),
        created_at: now(),
    };
    let text = String::from_utf8(content).expect("published bundles are JSON text");
    state.inner.store.insert_draft(&draft, &text).await?;
    let verdict = serde_json::json!({
        "cid": draft.cid, "author": draft.author, "slug": draft.slug, "verdict": "accepted",
    });
    state
        .inner
        .store
        .attest(
            &format!("draft:{}", draft.cid),
            "template.draft_validated",
            &verdict,
            draft.created_at,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(draft)))
}

/// The caller's drafts, newest first.
#[utoipa::path(get, path = "/templates/drafts", tag = "templates", security(("session" = [])),
    responses((status = 200, body = Vec<DraftView>), (status = 401, body = ErrorBody)))]
async fn my_drafts(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<Vec<DraftView>>, ApiError> {
    Ok(Json(state.inner.store.drafts_of(&session.address).await?))
}

/// Arms one of the caller's drafts for their next lease opened without a template (template id
/// 0): that lease's VM runs the draft. Only the draft's author may deploy it.
#[utoipa::path(post, path = "/templates/drafts/{cid}/test", tag = "templates",
    security(("session" = [])),
    params(("cid" = String, Path, description = "the draft's content id")),
    responses((status = 200, body = DraftTest), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn test_draft(
    State(state): State<AppState>,
    session: Session,
    ApiPath(cid): ApiPath<String>,
) -> Result<Json<DraftTest>, ApiError> {
    match state
        .inner
        .store
        .arm_draft_test(&session.address, &cid, now())
        .await
    {
        Ok(()) => Ok(Json(DraftTest {
            cid,
            next: "your next lease opened without a template (template id 0) runs this draft"
                .into(),
        })),
        // Another author's draft is not the caller's to deploy, and is not revealed either.
        Err(StoreError::NotFound(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("you have no draft {cid}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The draft routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_draft, my_drafts))
        .routes(routes!(test_draft))
}
