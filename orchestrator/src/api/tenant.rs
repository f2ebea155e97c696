//! The caller's own leases and VMs, how to reach and log into them, and their profile.

use super::{ApiError, ApiJson, ApiPath, AppState, ErrorBody, Session};
use crate::{
    access,
    clock::now,
    lifecycle::{self, Control, ControlError, LifecycleError},
    store::{LeaseRecord, Profile, SealedCredentials, VmRecord},
};
use axum::{Json, extract::State, http::StatusCode};
use decloud_sdk::api::{ProfileUpdate, VmDetail, check_ports};
use decloud_sdk::credentials::{parse_sealing_key, parse_ssh_key};
use decloud_sdk::{LeaseId, VmId};
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
    params(("lease_id" = String, Path, description = "on-chain lease id, decimal", pattern = r"^[0-9]+$")),
    responses((status = 200, body = LeaseRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn my_lease(
    State(state): State<AppState>,
    session: Session,
    ApiPath(lease_id): ApiPath<String>,
) -> Result<Json<LeaseRecord>, ApiError> {
    let lease_id: LeaseId = lease_id.parse()?;
    let lease = state
        .inner
        .store
        .lease(lease_id)
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

/// One of the caller's VMs and how to reach it.
#[utoipa::path(get, path = "/vms/{vm_id}", tag = "tenant", security(("session" = [])),
    params(("vm_id" = String, Path, description = "VM id: vm- and the decimal lease id", pattern = r"^vm-[0-9]+$")),
    responses((status = 200, body = VmDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn my_vm(
    State(state): State<AppState>,
    session: Session,
    ApiPath(vm_id): ApiPath<String>,
) -> Result<Json<VmDetail>, ApiError> {
    let vm = owned_vm(&state, &session, &vm_id).await?;
    Ok(Json(detail(&state, vm).await?))
}

pub(super) async fn detail(state: &AppState, vm: VmRecord) -> Result<VmDetail, ApiError> {
    let mut access = state.inner.store.vm_access(vm.vm_id, vm.node_id).await?;
    // A VM of a relayed node is reached at its relay's address and ports.
    if let Some(relay) =
        crate::relay::endpoint(&state.inner.store, vm.node_id, vm.vm_id, &access.forwards).await?
    {
        access.public_address = Some(relay.address.clone());
        access.forwards = relay.forwards.clone();
        access.relay = Some(relay);
    }
    access.relay_traffic = state.inner.store.vm_relay_traffic(vm.vm_id).await?;
    access.ssh_command = access::ssh_command(&access);
    access.urls = crate::ingress::urls(
        &state.inner.store,
        state.inner.config.ingress.as_ref(),
        vm.vm_id,
    )
    .await?;
    let readiness = state.inner.store.vm_readiness(vm.vm_id).await?;
    Ok(VmDetail {
        vm,
        access,
        readiness,
    })
}

/// The VM if the caller is its tenant: 400 when `vm_id` is not a VM id, 404 when it does not
/// exist, 403 when it is another's.
pub(super) async fn owned_vm(
    state: &AppState,
    session: &Session,
    vm_id: &str,
) -> Result<VmRecord, ApiError> {
    let vm_id: VmId = vm_id.parse()?;
    let vm = state
        .inner
        .store
        .vm(vm_id)
        .await?
        .ok_or_else(|| ApiError::not_found("vm"))?;
    if vm.tenant != session.address {
        return Err(ApiError::forbidden("vm"));
    }
    Ok(vm)
}

/// The generated passwords of one of the caller's VMs, sealed to the caller's sealing key: open
/// them with the wallet (`decloud vm credentials`).
#[utoipa::path(get, path = "/vms/{vm_id}/credentials", tag = "tenant", security(("session" = [])),
    params(("vm_id" = String, Path, description = "VM id: vm- and the decimal lease id", pattern = r"^vm-[0-9]+$")),
    responses((status = 200, body = SealedCredentials), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn vm_credentials(
    State(state): State<AppState>,
    session: Session,
    ApiPath(vm_id): ApiPath<String>,
) -> Result<Json<SealedCredentials>, ApiError> {
    let vm = owned_vm(&state, &session, &vm_id).await?;
    let sealed = state
        .inner
        .store
        .vm_credentials(vm.vm_id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_credentials",
                "this vm has no generated password: its tenant had no sealing key when it was \
             created (log in with an SSH key)",
            )
        })?;
    Ok(Json(sealed))
}

async fn control(
    state: &AppState,
    session: &Session,
    vm_id: &str,
    request: Control,
) -> Result<Json<VmDetail>, ApiError> {
    let vm = owned_vm(state, session, vm_id).await?;
    let vm = lifecycle::control(&state.inner.store, &state.inner.agents, vm.vm_id, request)
        .await
        .map_err(|e| match e {
            ControlError::WrongState { .. } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_state", e.to_string())
            }
            ControlError::Unpaid(_) => {
                ApiError::new(StatusCode::CONFLICT, "lease_unpaid", e.to_string())
            }
            ControlError::Lifecycle(LifecycleError::Conflict(_)) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the vm changed meanwhile; look at it again and retry",
            ),
            ControlError::Lifecycle(LifecycleError::InvalidTransition { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_state", e.to_string())
            }
            other => ApiError::internal(other),
        })?;
    Ok(Json(detail(state, vm).await?))
}

/// Stops one of the caller's running VMs (its disk is kept; `start` brings it back).
#[utoipa::path(post, path = "/vms/{vm_id}/stop", tag = "tenant", security(("session" = [])),
    params(("vm_id" = String, Path, description = "VM id: vm- and the decimal lease id", pattern = r"^vm-[0-9]+$")),
    responses((status = 200, body = VmDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn stop_vm(
    State(state): State<AppState>,
    session: Session,
    ApiPath(vm_id): ApiPath<String>,
) -> Result<Json<VmDetail>, ApiError> {
    control(&state, &session, &vm_id, Control::Stop).await
}

/// Starts one of the caller's stopped VMs (its lease must be active and funded).
#[utoipa::path(post, path = "/vms/{vm_id}/start", tag = "tenant", security(("session" = [])),
    params(("vm_id" = String, Path, description = "VM id: vm- and the decimal lease id", pattern = r"^vm-[0-9]+$")),
    responses((status = 200, body = VmDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn start_vm(
    State(state): State<AppState>,
    session: Session,
    ApiPath(vm_id): ApiPath<String>,
) -> Result<Json<VmDetail>, ApiError> {
    control(&state, &session, &vm_id, Control::Start).await
}

/// Reboots one of the caller's running VMs (a power cycle).
#[utoipa::path(post, path = "/vms/{vm_id}/reboot", tag = "tenant", security(("session" = [])),
    params(("vm_id" = String, Path, description = "VM id: vm- and the decimal lease id", pattern = r"^vm-[0-9]+$")),
    responses((status = 200, body = VmDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn reboot_vm(
    State(state): State<AppState>,
    session: Session,
    ApiPath(vm_id): ApiPath<String>,
) -> Result<Json<VmDetail>, ApiError> {
    control(&state, &session, &vm_id, Control::Reboot).await
}

/// The caller's profile: SSH keys and sealing key for their next VMs.
#[utoipa::path(get, path = "/profile", tag = "tenant", security(("session" = [])),
    responses((status = 200, body = Profile), (status = 401, body = ErrorBody)))]
async fn my_profile(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<Profile>, ApiError> {
    Ok(Json(state.inner.store.profile(&session.address).await?))
}

/// Most SSH keys a profile holds.
const MAX_SSH_KEYS: usize = 32;
/// Most extra ports a profile asks for.
const MAX_PORTS: usize = 64;

/// Changes the caller's profile. Every value is checked first: a malformed SSH key, sealing key
/// or port list is refused with the reason, and nothing is stored. VMs already created keep
/// what they were created with.
#[utoipa::path(put, path = "/profile", tag = "tenant", security(("session" = [])),
    request_body = ProfileUpdate,
    responses((status = 200, body = Profile), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn put_profile(
    State(state): State<AppState>,
    session: Session,
    ApiJson(update): ApiJson<ProfileUpdate>,
) -> Result<Json<Profile>, ApiError> {
    let invalid = |code, message: String| ApiError::new(StatusCode::BAD_REQUEST, code, message);
    let mut profile = state.inner.store.profile(&session.address).await?;
    if let Some(keys) = update.ssh_keys {
        if keys.len() > MAX_SSH_KEYS {
            return Err(invalid(
                "invalid_ssh_key",
                format!("at most {MAX_SSH_KEYS} ssh keys"),
            ));
        }
        let mut parsed: Vec<String> = Vec::with_capacity(keys.len());
        for (n, key) in keys.iter().enumerate() {
            let key = parse_ssh_key(key)
                .map_err(|e| invalid("invalid_ssh_key", format!("ssh key {}: {e}", n + 1)))?;
            if !parsed.contains(&key) {
                parsed.push(key);
            }
        }
        profile.ssh_keys = parsed;
    }
    if let Some(key) = update.sealing_key {
        profile.sealing_key = Some(
            parse_sealing_key(&key).map_err(|e| invalid("invalid_sealing_key", e.to_string()))?,
        );
    }
    if let Some(ports) = update.ports {
        if ports.len() > MAX_PORTS {
            return Err(invalid(
                "invalid_ports",
                format!("at most {MAX_PORTS} ports"),
            ));
        }
        check_ports(&ports).map_err(|e| invalid("invalid_ports", e))?;
        profile.ports = ports;
    }
    state
        .inner
        .store
        .put_profile(&session.address, &profile, now())
        .await?;
    Ok(Json(profile))
}

/// The tenant routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(my_leases))
        .routes(routes!(my_lease))
        .routes(routes!(my_vms))
        .routes(routes!(my_vm))
        .routes(routes!(vm_credentials))
        .routes(routes!(stop_vm))
        .routes(routes!(start_vm))
        .routes(routes!(reboot_vm))
        .routes(routes!(my_profile, put_profile))
}
