//! Node profiles: an operator stores the profile document their node's `metadataCid` will name
//! (what `decloud operator profile` does before it sets that CID on-chain).

use super::{ApiError, ApiJson, AppState, ErrorBody, Session};
use crate::profiles;
use axum::{Json, extract::State, http::StatusCode};
use decloud_sdk::api::{NodeProfile, ProfileStored};
use utoipa_axum::{router::OpenApiRouter, routes};

/// Stores a node profile (tags and description) in the orchestrator's content store and returns
/// its content id, to be set as the node's `metadataCid` with `NodeRegistry.update`. The
/// marketplace reads it from there once the chain names it.
#[utoipa::path(post, path = "/operator/profile", tag = "operator", security(("session" = [])),
    request_body = NodeProfile,
    responses((status = 201, body = ProfileStored), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody)))]
async fn store_profile(
    State(state): State<AppState>,
    _session: Session,
    ApiJson(profile): ApiJson<NodeProfile>,
) -> Result<(StatusCode, Json<ProfileStored>), ApiError> {
    let profile = profile
        .normalized()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_profile", e))?;
    let Some(content) = state.content() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_content_store",
            "this orchestrator stores no content: publish the profile to IPFS yourself",
        ));
    };
    let cid = content
        .put(profiles::document(&profile).into())
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(ProfileStored {
            cid: cid.to_string(),
            profile,
        }),
    ))
}

/// The profile routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(store_profile))
}
