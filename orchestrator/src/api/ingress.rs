//! HTTPS names of the caller's VMs' ports: whether this orchestrator gives any, naming a port
//! (or renaming it) and removing its name.

use super::tenant::{detail, owned_vm};
use super::{ApiError, ApiJson, ApiPath, AppState, ErrorBody, Session};
use crate::ingress::{self, IngressError, LeaseReadError, VmRef};
use axum::{Json, extract::State, http::StatusCode};
use decloud_sdk::api::{ExposeRequest, IngressInfo, IngressNameFree, IngressUrl, VmDetail};
use decloud_sdk::types::VmState;
use decloud_sdk::{LeaseId, VmId};
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
        IngressError::NoIngress(_) => {
            ApiError::new(StatusCode::CONFLICT, "node_without_ingress", e.to_string())
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

/// Whether `name` is free to give a port now: 200 with the URL it would have, or the refusal a
/// naming request would get (400 `invalid_name`, 409 `name_taken`, 409 `ingress_disabled`).
/// Nothing is reserved; `decloud lease open --expose` asks before the lease is paid for.
#[utoipa::path(get, path = "/ingress/names/{name}", tag = "tenant",
    params(("name" = String, Path, description = "one lowercase DNS label")),
    responses((status = 200, body = IngressNameFree), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn name_free(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<IngressNameFree>, ApiError> {
    let config = state.inner.config.ingress.as_ref();
    ingress::check_available(&state.inner.store, config, &name)
        .await
        .map_err(refused)?;
    let url = config.map(|c| ingress::url(&name, c)).unwrap_or_default();
    Ok(Json(IngressNameFree { name, url }))
}

fn unreadable(e: LeaseReadError) -> ApiError {
    match e {
        LeaseReadError::NoChain => ApiError::new(StatusCode::CONFLICT, "no_chain", e.to_string()),
        LeaseReadError::NoSuchLease(_) => ApiError::not_found("lease"),
        LeaseReadError::Chain(_) => {
            tracing::warn!(target: "orchestrator::ingress", error = %e, "lease read failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "chain_unavailable",
                "the chain did not answer; try again",
            )
        }
    }
}

/// Serves guest port `port` of the VM of one of the caller's leases by name, also before the
/// orchestrator has followed the lease (the lease is then read from the chain: its tenant must
/// be the caller and it must be active): the VM is created with the name. Otherwise exactly
/// `PUT /vms/{id}/ingress/{port}`: same checks, same refusals, nothing changed on refusal.
/// Answers the VM's URLs.
#[utoipa::path(put, path = "/leases/{lease_id}/ingress/{port}", tag = "tenant", security(("session" = [])),
    params(("lease_id" = String, Path, description = "lease id (decimal)"),
        ("port" = u16, Path, description = "guest port that speaks HTTP")),
    request_body = ExposeRequest,
    responses((status = 200, body = Vec<IngressUrl>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
async fn expose_lease(
    State(state): State<AppState>,
    session: Session,
    ApiPath((lease_id, guest)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<ExposeRequest>,
) -> Result<Json<Vec<IngressUrl>>, ApiError> {
    let lease_id: LeaseId = lease_id.parse()?;
    let guest = port(&guest)?;
    let vm_id = VmId::for_lease(lease_id);
    let store = &state.inner.store;
    let config = state.inner.config.ingress.as_ref();
    let name = request.name.as_deref();
    let followed = match store.vm(vm_id).await? {
        Some(vm) => {
            if vm.tenant != session.address {
                return Err(ApiError::forbidden("lease"));
            }
            Some(vm)
        }
        None => None,
    };
    let target = match &followed {
        Some(vm) => VmRef::from(vm),
        None => {
            let lease = ingress::lease_on_chain(state.inner.config.chain.as_ref(), lease_id)
                .await
                .map_err(unreadable)?;
            if !lease.tenant.eq_ignore_ascii_case(&session.address) {
                return Err(ApiError::forbidden("lease"));
            }
            if !lease.active {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "invalid_state",
                    format!("lease {lease_id} has ended: its vm gets no names"),
                ));
            }
            VmRef {
                vm_id,
                node_id: lease.node_id,
                state: VmState::Pending,
            }
        }
    };
    ingress::expose(store, &state.inner.agents, config, target, guest, name)
        .await
        .map_err(refused)?;
    if followed.is_none()
        && let Some(vm) = store.vm(vm_id).await?
        && vm.state != VmState::Pending
    {
        // The VM was placed while the name was being given, perhaps without it: its node gets
        // the VM's names now (the same name again changes nothing else).
        ingress::expose(store, &state.inner.agents, config, &vm, guest, name)
            .await
            .map_err(refused)?;
    }
    Ok(Json(ingress::urls(store, config, vm_id).await?))
}

/// The ingress routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ingress_info))
        .routes(routes!(name_free))
        .routes(routes!(expose_lease))
        .routes(routes!(expose, unexpose))
}
