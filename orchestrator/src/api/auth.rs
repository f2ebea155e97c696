//! Sign-in with Ethereum: nonces, verification, the caller's session and logout.

use super::{ApiError, ApiJson, AppState, ErrorBody, Session, rate_limit};
use crate::clock::now;
use axum::{Json, extract::State, http::StatusCode, middleware};
use decloud_sdk::api::{NonceResponse, SessionInfo, SessionResponse, VerifyRequest};
use utoipa_axum::{router::OpenApiRouter, routes};

/// Issues a single-use sign-in nonce (valid for 10 minutes by default). Rate-limited per IP.
#[utoipa::path(post, path = "/auth/nonce", tag = "auth",
    responses((status = 200, body = NonceResponse), (status = 429, body = ErrorBody)))]
async fn issue_nonce(State(state): State<AppState>) -> Result<Json<NonceResponse>, ApiError> {
    let issued = state
        .inner
        .siwe
        .issue_nonce(&state.inner.store, now())
        .await?;
    let cfg = state.inner.siwe.config();
    Ok(Json(NonceResponse {
        nonce: issued.nonce,
        issued_at: issued.issued_at,
        expires_at: issued.expires_at,
        domains: cfg.domains.clone(),
        chain_ids: cfg.chain_ids.clone(),
    }))
}

/// Verifies a signed sign-in message and opens a session bound to its address. Rate-limited per IP.
#[utoipa::path(post, path = "/auth/verify", tag = "auth", request_body = VerifyRequest,
    responses((status = 200, body = SessionResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
async fn verify(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let result = state
        .inner
        .siwe
        .sign_in(&state.inner.store, &req.message, &req.signature, now())
        .await;
    state.inner.metrics.record_sign_in(match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    });
    let s = result?;
    tracing::info!(target: "orchestrator::auth", address = %s.address, chain_id = s.chain_id, contract_wallet = s.contract_wallet, "signed in");
    Ok(Json(SessionResponse {
        token: s.token,
        address: s.address,
        chain_id: s.chain_id,
        expires_at: s.expires_at,
        contract_wallet: s.contract_wallet,
    }))
}

/// Revokes the caller's session.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("session" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn logout(State(state): State<AppState>, session: Session) -> Result<StatusCode, ApiError> {
    state
        .inner
        .store
        .revoke_session(&session.token_hash, now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the caller is signed in as.
#[utoipa::path(get, path = "/auth/session", tag = "auth", security(("session" = [])),
    responses((status = 200, body = SessionInfo), (status = 401, body = ErrorBody)))]
async fn current_session(session: Session) -> Json<SessionInfo> {
    Json(SessionInfo {
        address: session.address,
        chain_id: session.chain_id,
        expires_at: session.expires_at,
    })
}

/// The sign-in routes (rate-limited per IP) and the session routes.
pub(super) fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let sign_in = OpenApiRouter::new()
        .routes(routes!(issue_nonce))
        .routes(routes!(verify))
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    OpenApiRouter::new()
        .merge(sign_in)
        .routes(routes!(logout))
        .routes(routes!(current_session))
}
