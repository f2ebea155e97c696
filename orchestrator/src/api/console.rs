//! `GET /api/v1/vms/{vm_id}/console`: the VM's serial console as a WebSocket, for its tenant.
//!
//! The session token comes as `Authorization: Bearer <token>` (the CLI) or, for browsers,
//! whose WebSocket API cannot set headers, as the `access_token` query parameter (the request
//! log records paths without their query, so the token does not land there). Everything is
//! checked before the upgrade, and a refusal is an ordinary response in the API's JSON error
//! shape: no session (401), a VM of another address (403), no such VM (404), a VM that is not
//! running or a node whose agent is not connected here (409), not a WebSocket request (400).
//!
//! After the upgrade, binary (or text) messages from the client are typed into the console as
//! raw bytes, and binary messages to the client carry what the guest prints. The server ends
//! the socket with a close frame whose reason says why (the VM stopped, a newer session
//! replaced this one, the node disconnected, the client did not read fast enough); the client
//! ends the session by closing the socket. One session per VM: a newer one replaces the older.

use super::{ApiError, ApiPath, AppState, ErrorBody, Session};
use crate::console::{ConsoleEvent, ConsoleSession};
use axum::{
    extract::{
        FromRequestParts, Query, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code},
    },
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::Response,
};
use decloud_sdk::{VmId, types::VmState};
use serde::Deserialize;

/// Largest message a console client may send (a paste); it is split into agent frames.
const MAX_INPUT_MESSAGE: usize = 64 * 1024;
/// A close frame's reason is at most 123 bytes (RFC 6455, section 5.5).
const MAX_CLOSE_REASON: usize = 123;

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

/// A session from the `Authorization` header or, failing that, the `access_token` query
/// parameter.
struct ConsoleCaller(Session);

impl FromRequestParts<AppState> for ConsoleCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION)
            && let Ok(Query(TokenQuery {
                access_token: Some(token),
            })) = Query::<TokenQuery>::try_from_uri(&parts.uri)
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            parts.headers.insert(header::AUTHORIZATION, value);
        }
        Ok(Self(Session::from_request_parts(parts, state).await?))
    }
}

/// Attach to the VM's serial console (WebSocket).
#[utoipa::path(get, path = "/vms/{vm_id}/console", tag = "tenant", security(("session" = [])),
    params(("vm_id" = String, Path, description = "VM id: vm- and the decimal lease id", pattern = r"^vm-[0-9]+$"),
        ("access_token" = Option<String>, Query, description = "session token, for clients that cannot send an Authorization header")),
    responses((status = 101, description = "switching to the console WebSocket"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn console(
    State(state): State<AppState>,
    ConsoleCaller(session): ConsoleCaller,
    ApiPath(vm_id): ApiPath<String>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // A malformed id is refused (400) before any lookup.
    let vm_id = vm_id.parse::<VmId>()?;
    let vm = state
        .store()
        .vm(vm_id)
        .await?
        .ok_or_else(|| ApiError::not_found("vm"))?;
    if vm.tenant != session.address {
        return Err(ApiError::forbidden("vm"));
    }
    if vm.state != VmState::Running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "vm_not_running",
            format!(
                "vm {vm_id} is {}; its console is available while it runs",
                vm.state
            ),
        ));
    }
    let ws = ws.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "websocket_required",
            format!("this endpoint speaks WebSocket only: {}", e.body_text()),
        )
    })?;
    let relay = state.agents().consoles().clone();
    let console = relay
        .open(vm.node_id, vm_id)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "node_unreachable", e.to_string()))?;
    tracing::info!(target: "orchestrator::console", vm = %vm_id, node = %vm.node_id, tenant = %session.address, session = %console.id(), "console attached");
    Ok(ws
        .max_message_size(MAX_INPUT_MESSAGE)
        .on_upgrade(move |socket| relay_socket(socket, console, vm_id)))
}

/// Copies between the tenant's socket and the agent session until either ends.
async fn relay_socket(mut socket: WebSocket, mut console: ConsoleSession, vm_id: VmId) {
    let reason = loop {
        tokio::select! {
            frame = socket.recv() => {
                let data = match frame {
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Text(t))) => t.as_str().as_bytes().to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // The tenant left: dropping the session closes it on the agent.
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                };
                if let Err(e) = console.input(&data) {
                    break Some(e.to_string());
                }
            }
            event = console.next() => match event {
                Some(ConsoleEvent::Output(data)) => {
                    if socket.send(Message::Binary(data.into())).await.is_err() {
                        break None;
                    }
                }
                Some(ConsoleEvent::Closed(reason)) => break Some(reason),
                None => break Some("the console's output was not read fast enough; session dropped".into()),
            },
        }
    };
    tracing::info!(target: "orchestrator::console", vm = %vm_id, session = %console.id(), reason = reason.as_deref().unwrap_or("client left"), "console detached");
    drop(console);
    if let Some(reason) = reason {
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code: close_code::NORMAL,
                reason: truncate(&reason, MAX_CLOSE_REASON).into(),
            })))
            .await;
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The console route.
pub(super) fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(console))
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn close_reasons_are_cut_on_character_boundaries() {
        assert_eq!(truncate("short", 123), "short");
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate(&"x".repeat(200), 123).len(), 123);
    }
}
