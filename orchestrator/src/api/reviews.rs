//! Reviews: tenants post EIP-712 signed reviews of their leases' nodes and templates; anyone
//! lists them (each with its signature, to verify offline).

use super::{ApiError, ApiJson, ApiQuery, AppState, ErrorBody};
use crate::{
    clock::now,
    reviews::{self, ReviewRefusal},
};
use axum::{Json, extract::State, http::StatusCode};
use decloud_sdk::{
    NodeId, TemplateId,
    api::{ReviewQuery, ReviewView},
    reviews::{ReviewSubject, SignedReview},
};
use utoipa_axum::{router::OpenApiRouter, routes};

impl From<ReviewRefusal> for ApiError {
    fn from(e: ReviewRefusal) -> Self {
        let (status, code) = match &e {
            ReviewRefusal::Invalid(_) | ReviewRefusal::WrongDomain(_) => {
                (StatusCode::BAD_REQUEST, "invalid_review")
            }
            ReviewRefusal::NoSuchLease(_) => (StatusCode::NOT_FOUND, "not_found"),
            ReviewRefusal::NotTenant { .. } => (StatusCode::FORBIDDEN, "not_eligible"),
            ReviewRefusal::NoTemplate(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not_eligible"),
            ReviewRefusal::Duplicate { .. } => (StatusCode::CONFLICT, "already_reviewed"),
            ReviewRefusal::NoChain => (StatusCode::CONFLICT, "no_chain"),
            ReviewRefusal::Chain(_) => (StatusCode::BAD_GATEWAY, "chain_unavailable"),
            ReviewRefusal::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Posts a review signed by the lease's tenant (EIP-712; the typed data is in the
/// orchestrator's README). The signature names the reviewer: no session is needed. One review
/// per lease and subject.
#[utoipa::path(post, path = "/reviews", tag = "reviews", request_body = SignedReview,
    responses((status = 201, body = ReviewView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn post_review(
    State(state): State<AppState>,
    ApiJson(review): ApiJson<SignedReview>,
) -> Result<(StatusCode, Json<ReviewView>), ApiError> {
    let view = reviews::accept(
        &state.inner.store,
        state.config().chain.as_ref(),
        review,
        now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The reviews of one node (`?node=`) or one template (`?template=`), newest first.
#[utoipa::path(get, path = "/reviews", tag = "reviews", params(ReviewQuery),
    responses((status = 200, body = Vec<ReviewView>), (status = 400, body = ErrorBody)))]
async fn list_reviews(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> Result<Json<Vec<ReviewView>>, ApiError> {
    let (subject, target) = match (q.node, q.template) {
        // Parsed so that a malformed id is a 400 and any spelling of a node id finds its reviews,
        // which are stored under the canonical form.
        (Some(node), None) => (ReviewSubject::Node, node.parse::<NodeId>()?.to_string()),
        (None, Some(template)) => (
            ReviewSubject::Template,
            template.parse::<TemplateId>()?.to_string(),
        ),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "give exactly one of node and template",
            ));
        }
    };
    Ok(Json(state.inner.store.reviews_of(subject, &target).await?))
}

/// The review routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_review, list_reviews))
}
