//! Storage repair: the orchestrator's repairer address, and deal owners registering their deals'
//! repair secrets with it.

use super::{ApiError, ApiJson, ApiPath, AppState, ErrorBody, Session};
use crate::{clock::now, repair::RegistrationRefusal};
use axum::{Json, extract::State, http::StatusCode};
use decloud_sdk::api::{RepairRegistered, RepairRegistration, RepairerView};
use utoipa_axum::{router::OpenApiRouter, routes};

impl From<RegistrationRefusal> for ApiError {
    fn from(e: RegistrationRefusal) -> Self {
        let (status, code) = match &e {
            RegistrationRefusal::MalformedSecret => (StatusCode::BAD_REQUEST, "invalid_secret"),
            RegistrationRefusal::DealOutOfRange(_) => (StatusCode::BAD_REQUEST, "invalid_deal_id"),
            RegistrationRefusal::NoDeal(_) => (StatusCode::NOT_FOUND, "not_found"),
            RegistrationRefusal::NotOwner { .. } => (StatusCode::FORBIDDEN, "not_owner"),
            RegistrationRefusal::Settled(_) => (StatusCode::CONFLICT, "deal_settled"),
            RegistrationRefusal::NotOurs { .. } => (StatusCode::CONFLICT, "not_repairer"),
            RegistrationRefusal::Chain(_) => (StatusCode::BAD_GATEWAY, "chain_unavailable"),
            RegistrationRefusal::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn no_repair() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "repair_not_offered",
        "this orchestrator repairs no storage deals (no [repair] key)",
    )
}

/// The address deal owners name with `StorageMarket.setRepairer` to have this orchestrator
/// repair their deals.
#[utoipa::path(get, path = "/storage/repairer", tag = "storage",
    responses((status = 200, body = RepairerView), (status = 404, body = ErrorBody)))]
async fn repairer(State(state): State<AppState>) -> Result<Json<RepairerView>, ApiError> {
    let desk = state.repair().ok_or_else(no_repair)?;
    Ok(Json(RepairerView {
        address: desk.repairer().address().to_checksum(None),
        chain_id: desk.chain_id(),
        storage_market: desk.market().to_checksum(None),
    }))
}

/// Registers a deal's repair secret. The caller must own the deal on-chain, and the deal must
/// name this orchestrator's repairer; the secret is stored sealed and never returned. It is not
/// checked against the replicas here: a rebuild checks it against the lost replica's on-chain
/// root before anything moves. Registering again replaces the secret.
#[utoipa::path(post, path = "/storage/deals/{deal_id}/repair", tag = "storage", security(("session" = [])),
    params(("deal_id" = u64, Path, description = "StorageMarket deal id")),
    request_body = RepairRegistration,
    responses((status = 201, body = RepairRegistered), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    session: Session,
    ApiPath(deal_id): ApiPath<u64>,
    ApiJson(body): ApiJson<RepairRegistration>,
) -> Result<(StatusCode, Json<RepairRegistered>), ApiError> {
    let desk = state.repair().ok_or_else(no_repair)?;
    let record = desk
        .register(
            state.store(),
            &session.address,
            deal_id,
            &body.secret,
            now(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RepairRegistered {
            deal_id: record.deal_id,
            owner: record.owner,
            repairer: desk.repairer().address().to_checksum(None),
            registered_at: record.registered_at,
        }),
    ))
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(repairer))
        .routes(routes!(register))
}
