//! HTTPS names of the caller's VMs' ports: whether this orchestrator gives any, naming a port
//! (or renaming it) and removing its name.

use super::tenant::{detail, owned_vm};
use super::{ApiError, ApiJson, ApiPath, AppState, ErrorBody, Session};
use crate::ingress::{self, IngressError};
use axum::{Json, extract::State, http::StatusCode};
use decloud_sdk::api::{ExposeRequest, IngressInfo, VmDetail};
use utoipa_axum::{router::OpenApiRouter, routes};

/// Whether this orchestrator names VMs' HTTP ports, and under which domain.
#[utoipa::path(get, path = "/ingress", tag = "tenant",
    responses((status = 200, body = IngressInfo)))]
async fn ingress_info(State(state): State<AppState>) -> Json<IngressInfo> {
    let config = state.inner.config.ingress.as_ref();
    Json(IngressInfo {
        domain: config.map(|c| c.domain.clone()),
        https_port: config.map(|c| c.https_port),
    })
}

fn refused(e: IngressError) -> ApiError {
    match e {
        IngressError::Disabled => {
            ApiError::new(StatusCode::CONFLICT, "ingress_disabled", e.to_string())
        }
        IngressError::InvalidName(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", e.to_string())
        }
        IngressError::InvalidPort => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_port", e.to_string())
        }
        IngressError::Taken(_) => ApiError::new(StatusCode::CONFLICT, "name_taken", e.to_string()),
        IngressError::TooMany => {
            ApiError::new(StatusCode::CONFLICT, "too_many_names", e.to_string())
        }
        IngressError::NotNamed(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_named", e.to_string())
        }
        IngressError::Ended(_) => {
            ApiError::new(StatusCode::CONFLICT, "invalid_state", e.to_string())
        }
        IngressError::Store(e) => e.into(),
    }
}

fn port(text: &str) -> Result<u16, ApiError> {
    text.parse::<u16>().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_port",
            format!("{text:?} is not a port: use 1 to 65535"),
        )
    })
}

/// Serves guest port `port` of one of the caller's VMs at `https://<name>.<domain>`: the name
/// given, else the port's current name, else one derived from the VM and port (`vm-7-8080`).
/// A name is one lowercase DNS label, not reserved, unique on this orchestrator; refused with
/// the reason and nothing changed otherwise. A VM its node has gets the change at once.
#[utoipa::path(put, path = "/vms/{vm_id}/ingress/{port}", tag = "tenant", security(("session" = [])),
    params(("vm_id" = String, Path, description = "VM id: vm- and the decimal lease id", pattern = r"^vm-[0-9]+$"),
        ("port" = u16, Path, description = "guest port that speaks HTTP")),
    request_body = ExposeRequest,
    responses((status = 200, body = VmDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn expose(
    State(state): State<AppState>,
    session: Session,
    ApiPath((vm_id, guest)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<ExposeRequest>,
) -> Result<Json<VmDetail>, ApiError> {
    let vm = owned_vm(&state, &session, &vm_id).await?;
    let guest = port(&guest)?;
    ingress::expose(
        &state.inner.store,
        &state.inner.agents,
        state.inner.config.ingress.as_ref(),
        &vm,
        guest,
        request.name.as_deref(),
    )
    .await
    .map_err(refused)?;
    Ok(Json(detail(&state, vm).await?))
}

/// Stops serving guest port `port` of one of the caller's VMs by name; the name is free again.
#[utoipa::path(delete, path = "/vms/{vm_id}/ingress/{port}", tag = "tenant", security(("session" = [])),
    params(("vm_id" = String, Path, description = "VM id: vm- and the decimal lease id", pattern = r"^vm-[0-9]+$"),
        ("port" = u16, Path, description = "guest port")),
    responses((status = 200, body = VmDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn unexpose(
    State(state): State<AppState>,
    session: Session,
    ApiPath((vm_id, guest)): ApiPath<(String, String)>,
) -> Result<Json<VmDetail>, ApiError> {
    let vm = owned_vm(&state, &session, &vm_id).await?;
    let guest = port(&guest)?;
    ingress::unexpose(
        &state.inner.store,
        &state.inner.agents,
        state.inner.config.ingress.as_ref(),
        &vm,
        guest,
    )
    .await
    .map_err(refused)?;
    Ok(Json(detail(&state, vm).await?))
}

/// The ingress routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ingress_info))
        .routes(routes!(expose, unexpose))
}
