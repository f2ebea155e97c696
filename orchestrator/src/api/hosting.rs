//! Hosting: the network's nodes, and attested state and distribution intents of the caller's
//! services.

use super::{ApiError, ApiJson, ApiPath, AppState, ErrorBody, Session, attestations_disabled};
use crate::{
    clock::now,
    store::{NodeStatus, VmRecord},
};
use axum::{Json, extract::State, http::StatusCode};
use decloud_sdk::{
    VmId,
    api::{AttestationCreated, Capabilities, DistributeRequest, NetworkNode},
};
use utoipa_axum::{router::OpenApiRouter, routes};

/// Every registered node with region, capabilities, public key and status.
#[utoipa::path(get, path = "/hosting/network/nodes", tag = "hosting",
    responses((status = 200, body = Vec<NetworkNode>)))]
async fn network_nodes(State(state): State<AppState>) -> Result<Json<Vec<NetworkNode>>, ApiError> {
    let store = &state.inner.store;
    let reputations = store.reputations(now()).await?;
    let nodes = store.nodes().await?;
    Ok(Json(
        nodes
            .into_iter()
            .map(|n| NetworkNode {
                online: reputations.get(&n.node_id).is_some_and(|r| r.online),
                capabilities: Capabilities {
                    vcpus: n.vcpus,
                    memory_gib: n.memory_gib,
                    disk_gib: n.disk_gib,
                    gpus: n.gpus,
                    bandwidth_mbps: n.bandwidth_mbps,
                    compute_points: n.compute_points,
                },
                node_id: n.node_id.to_string(),
                operator: n.operator,
                region: n.region,
                status: n.status,
                public_key: n.node_key,
            })
            .collect(),
    ))
}

/// The caller's service (VM) or why not.
async fn own_service(state: &AppState, session: &Session, id: &str) -> Result<VmRecord, ApiError> {
    let id: VmId = id.parse()?;
    let vm = state
        .inner
        .store
        .vm(id)
        .await?
        .ok_or_else(|| ApiError::not_found("service"))?;
    if vm.tenant != session.address {
        return Err(ApiError::forbidden("service"));
    }
    Ok(vm)
}

/// Attests the current state of one of the caller's services (a VM and its lease).
#[utoipa::path(post, path = "/hosting/services/{id}/attest", tag = "hosting", security(("session" = [])),
    params(("id" = String, Path, description = "service (VM) id: vm- and the decimal lease id", pattern = r"^vm-[0-9]+$")),
    responses((status = 201, body = AttestationCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn attest_service(
    State(state): State<AppState>,
    session: Session,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<AttestationCreated>), ApiError> {
    let vm = own_service(&state, &session, &id).await?;
    let lease = state.inner.store.lease(vm.lease_id).await?;
    let payload = serde_json::json!({ "vm": vm, "lease": lease, "requested_by": session.address });
    let id = state
        .inner
        .store
        .attest(
            &format!("vm:{}", vm.vm_id),
            "service.state",
            &payload,
            now(),
        )
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(attestations_disabled)?;
    Ok((
        StatusCode::CREATED,
        Json(AttestationCreated { attestation_id: id }),
    ))
}

/// Records (as a signed attestation) the intent to distribute a workload or artifact of one of
/// the caller's services to target regions.
#[utoipa::path(post, path = "/hosting/services/{id}/distribute", tag = "hosting", security(("session" = [])),
    params(("id" = String, Path, description = "service (VM) id: vm- and the decimal lease id", pattern = r"^vm-[0-9]+$")), request_body = DistributeRequest,
    responses((status = 201, body = AttestationCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn distribute_service(
    State(state): State<AppState>,
    session: Session,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<DistributeRequest>,
) -> Result<(StatusCode, Json<AttestationCreated>), ApiError> {
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m.to_string());
    if req.artifact.is_empty()
        || req.artifact.chars().count() > 512
        || req.artifact.chars().any(char::is_control)
    {
        return Err(bad("artifact must be 1 to 512 printable characters"));
    }
    if req.sha256.len() != 64 || !req.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("sha256 must be 64 hex digits"));
    }
    if req.regions.is_empty() || req.regions.len() > 64 {
        return Err(bad("regions must name 1 to 64 regions"));
    }
    let mut regions = req.regions.clone();
    regions.sort();
    regions.dedup();
    if regions.len() != req.regions.len() {
        return Err(bad("regions must not repeat"));
    }
    let vm = own_service(&state, &session, &id).await?;
    let served: std::collections::BTreeSet<String> = state
        .inner
        .store
        .nodes()
        .await?
        .into_iter()
        .filter(|n| n.status == NodeStatus::Active)
        .map(|n| n.region)
        .collect();
    let unknown: Vec<&String> = regions.iter().filter(|r| !served.contains(*r)).collect();
    if !unknown.is_empty() {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_region",
            format!("no active node serves these regions: {unknown:?}"),
        );
        e.details = Some(serde_json::json!({ "unknown": unknown }));
        return Err(e);
    }
    let payload = serde_json::json!({
        "vm_id": vm.vm_id, "lease_id": vm.lease_id, "kind": req.kind, "artifact": req.artifact,
        "sha256": req.sha256.to_lowercase(), "regions": regions, "requested_by": session.address,
    });
    let id = state
        .inner
        .store
        .attest(
            &format!("vm:{}", vm.vm_id),
            "service.distribution",
            &payload,
            now(),
        )
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(attestations_disabled)?;
    Ok((
        StatusCode::CREATED,
        Json(AttestationCreated { attestation_id: id }),
    ))
}

/// The hosting routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(network_nodes))
        .routes(routes!(attest_service))
        .routes(routes!(distribute_service))
}
