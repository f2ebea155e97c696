//! The caller's own leases and VMs.

use super::{ApiError, ApiPath, AppState, ErrorBody, Session};
use crate::store::{LeaseRecord, VmRecord};
use axum::{Json, extract::State};
use utoipa_axum::{router::OpenApiRouter, routes};

/// The caller's leases (as tenant), newest first.
#[utoipa::path(get, path = "/leases", tag = "tenant", security(("session" = [])),
    responses((status = 200, body = Vec<LeaseRecord>), (status = 401, body = ErrorBody)))]
async fn my_leases(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<Vec<LeaseRecord>>, ApiError> {
    Ok(Json(
        state.inner.store.leases_of_tenant(&session.address).await?,
    ))
}

/// One of the caller's leases.
#[utoipa::path(get, path = "/leases/{lease_id}", tag = "tenant", security(("session" = [])),
    params(("lease_id" = String, Path, description = "on-chain lease id")),
    responses((status = 200, body = LeaseRecord), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn my_lease(
    State(state): State<AppState>,
    session: Session,
    ApiPath(lease_id): ApiPath<String>,
) -> Result<Json<LeaseRecord>, ApiError> {
    let lease = state
        .inner
        .store
        .lease(&lease_id)
        .await?
        .ok_or_else(|| ApiError::not_found("lease"))?;
    if lease.tenant != session.address {
        return Err(ApiError::forbidden("lease"));
    }
    Ok(Json(lease))
}

/// The caller's VMs, newest first.
#[utoipa::path(get, path = "/vms", tag = "tenant", security(("session" = [])),
    responses((status = 200, body = Vec<VmRecord>), (status = 401, body = ErrorBody)))]
async fn my_vms(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<Vec<VmRecord>>, ApiError> {
    Ok(Json(
        state.inner.store.vms_of_tenant(&session.address).await?,
    ))
}

/// One of the caller's VMs.
#[utoipa::path(get, path = "/vms/{vm_id}", tag = "tenant", security(("session" = [])),
    params(("vm_id" = String, Path, description = "VM id")),
    responses((status = 200, body = VmRecord), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn my_vm(
    State(state): State<AppState>,
    session: Session,
    ApiPath(vm_id): ApiPath<String>,
) -> Result<Json<VmRecord>, ApiError> {
    let vm = state
        .inner
        .store
        .vm(&vm_id)
        .await?
        .ok_or_else(|| ApiError::not_found("vm"))?;
    if vm.tenant != session.address {
        return Err(ApiError::forbidden("vm"));
    }
    Ok(Json(vm))
}

/// The tenant routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(my_leases))
        .routes(routes!(my_lease))
        .routes(routes!(my_vms))
        .routes(routes!(my_vm))
}
