//! Storage: where a new deal's replicas should go, where one storage node's chunk API is, the
//! orchestrator's repairer address, deal owners registering their deals' repair secrets with it,
//! and the repairs of a deal.

use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState, ErrorBody, Session};
use crate::{
    clock::now,
    placement::{self, PlacementError, PlacementQuery},
    repair::RegistrationRefusal,
};
use axum::{Json, extract::State, http::StatusCode};
use decloud_sdk::{
    NodeId,
    api::{
        RepairRegistered, RepairRegistration, RepairerView, StorageNodeView, StoragePlacement,
        StoragePlacementRequest, StorageRepairs,
    },
};
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

/// Where a new deal's replicas should go: exactly `replicas` distinct storage nodes, best
/// first. A node qualifies when it is registered and Active on-chain, online, not draining,
/// reports a chunk API and has `bytes` free; nodes in `region` come first, then by storage proof
/// rate, free space and storage price. Public: no sign-in.
#[utoipa::path(get, path = "/storage/placement", tag = "storage", params(StoragePlacementRequest),
    responses((status = 200, body = StoragePlacement), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn placement(
    State(state): State<AppState>,
    ApiQuery(req): ApiQuery<StoragePlacementRequest>,
) -> Result<Json<StoragePlacement>, ApiError> {
    let query = PlacementQuery::try_from(&req)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string()))?;
    match placement::place(state.store(), &query).await {
        Ok(nodes) => Ok(Json(StoragePlacement { nodes })),
        Err(e @ PlacementError::NotEnough { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_enough_storage_nodes",
            e.to_string(),
        )),
        Err(PlacementError::Store(e)) => Err(e.into()),
    }
}

/// One storage node: its chunk API as its agent last reported it, its on-chain status, whether
/// it is online and draining, and its storage proof rate counted from StorageMarket. A deal's
/// owner asks it when a replica moved to a node its local record does not name. Public: no
/// sign-in (placement serves the same URLs).
#[utoipa::path(get, path = "/storage/nodes/{node_id}", tag = "storage",
    params(("node_id" = String, Path, description = "0x-prefixed 32-byte node id", pattern = r"^0x[0-9a-fA-F]{64}$")),
    responses((status = 200, body = StorageNodeView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn storage_node(
    State(state): State<AppState>,
    ApiPath(node_id): ApiPath<String>,
) -> Result<Json<StorageNodeView>, ApiError> {
    // Parsed here rather than by the extractor so the 400 names the id (`invalid_node_id`).
    let node_id: NodeId = node_id.parse()?;
    let store = state.store();
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("node {node_id} is not a storage node this orchestrator knows"),
        )
    };
    let report = store.storage_report(node_id).await?.ok_or_else(not_found)?;
    let node = store.node(node_id).await?.ok_or_else(not_found)?;
    let now = now();
    let online = crate::reputation::is_online(
        store
            .liveness(node_id)
            .await?
            .filter(|l| l.heartbeats > 0)
            .map(|l| l.last_heartbeat),
        now,
    );
    let proof_rate_bps = store.storage_proof_rate(node_id).await?;
    Ok(Json(StorageNodeView {
        node_id,
        url: report.url,
        status: node.status,
        online,
        draining: report.draining,
        reported_at: report.reported_at,
        proof_rate_bps,
    }))
}

/// The repair jobs of a deal this orchestrator repairs, newest first: which replica failed on
/// which node and why, where it went, attempts and the latest error. For the owner who
/// registered the deal's repair secret.
#[utoipa::path(get, path = "/storage/deals/{deal_id}/repairs", tag = "storage", security(("session" = [])),
    params(("deal_id" = u64, Path, description = "StorageMarket deal id")),
    responses((status = 200, body = StorageRepairs), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repairs(
    State(state): State<AppState>,
    session: Session,
    ApiPath(deal_id): ApiPath<u64>,
) -> Result<Json<StorageRepairs>, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no repair is registered for deal {deal_id} by {}",
                session.address
            ),
        )
    };
    let registered = state
        .store()
        .repair_secret(deal_id)
        .await?
        .ok_or_else(not_found)?;
    // Another wallet learns nothing, not even that the deal is repaired here.
    if !registered.owner.eq_ignore_ascii_case(&session.address) {
        return Err(not_found());
    }
    let jobs = state.store().repair_jobs_of_deal(deal_id).await?;
    Ok(Json(StorageRepairs { deal_id, jobs }))
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(repairer))
        .routes(routes!(register))
        .routes(routes!(placement))
        .routes(routes!(storage_node))
        .routes(routes!(repairs))
}
