//! The HTTP API under `/api/v1`: router, shared state, the one error shape, extractors,
//! sessions, and the OpenAPI document generated from the handlers.

use crate::{
    auth::{AuthError, Siwe, token_hash},
    catalog::{self, TemplateSearch},
    config::Config,
    marketplace::{self, NodeListing, NodeSearch, SearchError},
    metrics::Metrics,
    ratelimit::RateLimiter,
    scheduler::{self, NoFit, Placement, Request as PlacementRequest},
    store::{LeaseRecord, Store, StoreError, TemplateRecord, VmRecord},
};
use axum::{
    Json, Router,
    extract::{
        ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request, State,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{HeaderName, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};
use tower::ServiceBuilder;
use tower_http::{
    cors::{AllowOrigin, Any, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

// ---------------------------------------------------------------------------------------------
// State

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    agents: crate::agent::AgentHub,
    siwe: Siwe,
    limiter: RateLimiter,
    metrics: Metrics,
    config: Config,
}

impl AppState {
    /// State over an opened store and a resolved configuration.
    pub fn new(store: Store, config: Config) -> Result<Self, crate::config::ConfigError> {
        let siwe = Siwe::new(config.siwe.clone())?;
        let limiter = RateLimiter::new(config.signin_burst, config.signin_per_minute);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                agents: crate::agent::AgentHub::default(),
                siwe,
                limiter,
                metrics: Metrics::default(),
                config,
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Connections of node agents.
    pub fn agents(&self) -> &crate::agent::AgentHub {
        &self.inner.agents
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The body of every error response: `{"error":{"code":"…","message":"…"}}`, with `details`
/// only where a machine-readable explanation helps (e.g. why no node fits).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code, message and optional details of an error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `nonce_used`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Structured explanation, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// An error on its way to becoming a response; the mapping to status and body happens here
/// and nowhere else.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<serde_json::Value>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn internal(err: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            err.to_string(),
        )
    }

    fn forbidden(what: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this {what} belongs to another address"),
        )
    }

    fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status.is_server_error() {
            // The real cause goes to the log; clients get nothing they could probe with.
            tracing::error!(target: "orchestrator::api", status = self.status.as_u16(), code = self.code, error = %self.message, "request failed");
            "internal server error".to_string()
        } else {
            self.message
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message,
                details: self.details,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::not_found(what),
            other => Self::internal(other),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = match &e {
            AuthError::MalformedMessage(_) | AuthError::MalformedSignature(_) => {
                StatusCode::BAD_REQUEST
            }
            AuthError::Chain(_) => StatusCode::BAD_GATEWAY,
            AuthError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = if matches!(r, JsonRejection::MissingJsonContentType(_)) {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::new(status, "invalid_body", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
    }
}

/// `axum::Json` whose rejections use the API's error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Query` whose rejections use the API's error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `axum::extract::Path` whose rejections use the API's error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

// ---------------------------------------------------------------------------------------------
// Sessions

/// A signed-in caller, from `Authorization: Bearer <token>`.
#[derive(Clone, Debug)]
pub struct Session {
    /// Address the session is bound to, lowercase hex.
    pub address: String,
    /// Chain id of the sign-in message.
    pub chain_id: u64,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    token_hash: String,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let missing = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_session",
                "sign in first: no bearer token",
            )
        };
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(missing)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(missing)?;
        let hash = token_hash(token);
        let record = state
            .inner
            .store
            .session(&hash, now())
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_session",
                    "session is unknown, expired or revoked",
                )
            })?;
        Ok(Self {
            address: record.address,
            chain_id: record.chain_id,
            expires_at: record.expires_at,
            token_hash: hash,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Middleware

fn client_ip(req: &Request, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for
        && let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Without a peer address (in-process tests), every caller shares one bucket: stricter, never looser.
    let ip = client_ip(&req, state.inner.config.trust_forwarded_for)
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    match state.inner.limiter.check(ip, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            state.inner.metrics.record_sign_in("rate_limited");
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many sign-in requests; retry later",
            );
            e.retry_after = Some(wait.as_secs().max(1));
            e.into_response()
        }
    }
}

async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let response = next.run(req).await;
    let route = route.unwrap_or_else(|| "unmatched".into());
    state.inner.metrics.record_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

fn cors(config: &Config) -> CorsLayer {
    let origins: Vec<HeaderValue> = config
        .cors_origins
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
        .expose_headers([REQUEST_ID, header::RETRY_AFTER]);
    if origins.is_empty() {
        layer.allow_origin(Any)
    } else {
        layer.allow_origin(AllowOrigin::list(origins))
    }
}

// ---------------------------------------------------------------------------------------------
// Router and OpenAPI

#[derive(OpenApi)]
#[openapi(
    info(title = "DeCloud orchestrator API", description = "Wallet sign-in, node marketplace, scheduling, leases and VMs, signed attestations, hosting."),
    modifiers(&SessionAuth),
    components(schemas(ErrorBody, ErrorDetail))
)]
struct ApiDoc;

struct SessionAuth;

impl Modify for SessionAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

fn api_routes(state: &AppState) -> OpenApiRouter<AppState> {
    let sign_in = OpenApiRouter::new()
        .routes(routes!(issue_nonce))
        .routes(routes!(verify))
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    OpenApiRouter::new()
        .merge(sign_in)
        .routes(routes!(health))
        .routes(routes!(logout))
        .routes(routes!(current_session))
        .routes(routes!(search_nodes))
        .routes(routes!(featured_nodes))
        .routes(routes!(node_detail))
        .routes(routes!(plan))
        .routes(routes!(search_templates))
        .routes(routes!(template_detail))
        .routes(routes!(my_leases))
        .routes(routes!(my_lease))
        .routes(routes!(my_vms))
        .routes(routes!(my_vm))
        .routes(routes!(my_nodes))
        .routes(routes!(my_node))
        .routes(routes!(attestation_signer))
        .routes(routes!(attestation_by_id))
        .routes(routes!(attestations_by_subject))
        .routes(routes!(network_nodes))
        .routes(routes!(attest_service))
        .routes(routes!(distribute_service))
}

/// The whole application: `/api/v1/…`, `/api/v1/openapi.json` and `/metrics`, with request
/// ids, tracing, CORS and metrics around every route.
pub fn app(state: AppState) -> Router {
    let (api, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", api_routes(&state))
        .split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let doc = Arc::new(doc);
    let config = state.inner.config.clone();
    api.route("/api/v1/openapi.json", get(move || async move { Json(doc.as_ref().clone()) }))
        .route("/api/v1/agent/ws", get(crate::agent::ws_handler))
        .route("/metrics", get(metrics))
        .fallback(crate::web::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!(target: "orchestrator::http", "request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(cors(&config)),
        )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.inner.metrics.render(),
    )
}

// ---------------------------------------------------------------------------------------------
// Handlers: health and sign-in

/// Liveness and database reachability.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Health: the server answers and its database answers.
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, body = Health), (status = 500, body = ErrorBody)))]
async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.inner.store.ping().await?;
    Ok(Json(Health {
        status: "ok".into(),
    }))
}

/// A nonce to sign in with.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NonceResponse {
    /// Put this in the EIP-4361 message's `Nonce` field.
    pub nonce: String,
    /// Issue time, unix seconds.
    pub issued_at: i64,
    /// The nonce cannot be used after this, unix seconds.
    pub expires_at: i64,
    /// Domains a message may name.
    pub domains: Vec<String>,
    /// Chain ids a message may name.
    pub chain_ids: Vec<u64>,
}

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

/// A signed EIP-4361 message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The message exactly as signed.
    pub message: String,
    /// The signature, hex (65 bytes for an EOA; any length for a contract wallet).
    pub signature: String,
}

/// A new session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionResponse {
    /// Bearer token for `Authorization: Bearer …`; shown only here.
    pub token: String,
    /// Address the session is bound to.
    pub address: String,
    /// Chain id of the message.
    pub chain_id: u64,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// Whether the signature was checked through EIP-1271.
    pub contract_wallet: bool,
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

/// The caller's session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// Address the session is bound to.
    pub address: String,
    /// Chain id of the sign-in message.
    pub chain_id: u64,
    /// Expiry, unix seconds.
    pub expires_at: i64,
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

// ---------------------------------------------------------------------------------------------
// Handlers: marketplace and scheduler

async fn listings(store: &Store, now: i64) -> Result<Vec<NodeListing>, ApiError> {
    let nodes = store.nodes().await?;
    let mut reputations = store.reputations(now).await?;
    let usage = store.usage_by_node().await?;
    Ok(nodes
        .into_iter()
        .map(|n| {
            let rep = reputations
                .remove(&n.node_id)
                .unwrap_or_else(|| crate::store::Reputation {
                    online: false,
                    last_heartbeat: None,
                    uptime_bps: None,
                    failed_by_day: Vec::new(),
                    vms_hosted: 0,
                    vms_completed: 0,
                });
            let used = usage.get(&n.node_id).copied().unwrap_or_default();
            NodeListing::new(n, rep, used)
        })
        .collect())
}

/// A page of node search results.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeSearchResponse {
    /// Nodes matching the filters, before paging.
    pub total: usize,
    /// This page.
    pub nodes: Vec<NodeListing>,
}

/// Searches active nodes by tags, region, price, uptime, compute points, GPU and liveness.
#[utoipa::path(get, path = "/nodes", tag = "marketplace", params(NodeSearch),
    responses((status = 200, body = NodeSearchResponse), (status = 400, body = ErrorBody)))]
async fn search_nodes(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<NodeSearch>,
) -> Result<Json<NodeSearchResponse>, ApiError> {
    let all = listings(&state.inner.store, now()).await?;
    let (total, nodes) = marketplace::search(all, &q).map_err(|e: SearchError| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string())
    })?;
    Ok(Json(NodeSearchResponse { total, nodes }))
}

/// The top ten active nodes above 95% 30-day uptime.
#[utoipa::path(get, path = "/nodes/featured", tag = "marketplace",
    responses((status = 200, body = Vec<NodeListing>)))]
async fn featured_nodes(State(state): State<AppState>) -> Result<Json<Vec<NodeListing>>, ApiError> {
    Ok(Json(marketplace::featured(
        listings(&state.inner.store, now()).await?,
    )))
}

fn check_node_id(id: &str) -> Result<String, ApiError> {
    let hex = id.strip_prefix("0x").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_node_id",
            "node id must be 0x and 64 hex digits",
        ));
    }
    Ok(id.to_lowercase())
}

async fn node_listing(store: &Store, node_id: &str) -> Result<NodeListing, ApiError> {
    let node = store
        .node(node_id)
        .await?
        .ok_or_else(|| ApiError::not_found("node"))?;
    let rep = store.reputation(node_id, now()).await?;
    let used = store
        .usage_by_node()
        .await?
        .get(node_id)
        .copied()
        .unwrap_or_default();
    Ok(NodeListing::new(node, rep, used))
}

/// One node with pricing, capacity and reputation (including missed heartbeats per day).
#[utoipa::path(get, path = "/nodes/{node_id}", tag = "marketplace",
    params(("node_id" = String, Path, description = "0x-prefixed 32-byte node id", pattern = r"^0x[0-9a-fA-F]{64}$")),
    responses((status = 200, body = NodeListing), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn node_detail(
    State(state): State<AppState>,
    ApiPath(node_id): ApiPath<String>,
) -> Result<Json<NodeListing>, ApiError> {
    let node_id = check_node_id(&node_id)?;
    Ok(Json(node_listing(&state.inner.store, &node_id).await?))
}

/// Where a VM with these needs would be placed now, or why it fits nowhere (422 with details).
#[utoipa::path(post, path = "/scheduler/plan", tag = "scheduler", request_body = PlacementRequest,
    responses((status = 200, body = Placement), (status = 400, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn plan(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PlacementRequest>,
) -> Result<Json<Placement>, ApiError> {
    if let Some(id) = &req.node_id {
        check_node_id(id)?;
    }
    let candidates: Vec<_> = listings(&state.inner.store, now())
        .await?
        .iter()
        .map(NodeListing::candidate)
        .collect();
    scheduler::schedule(&candidates, &req)
        .map(Json)
        .map_err(|no_fit| {
            let status = if matches!(no_fit, NoFit::InvalidRequest { .. }) {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let code = if status == StatusCode::BAD_REQUEST {
                "invalid_request"
            } else {
                "no_fit"
            };
            let mut e = ApiError::new(status, code, no_fit.to_string());
            e.details = serde_json::to_value(&no_fit).ok();
            e
        })
}

// ---------------------------------------------------------------------------------------------
// Handlers: templates

/// A page of template search results.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TemplateSearchResponse {
    /// Templates matching the filters, before paging.
    pub total: usize,
    /// This page.
    pub templates: Vec<TemplateRecord>,
}

/// Searches the template catalog by category, GPU, tags and text.
#[utoipa::path(get, path = "/templates", tag = "templates", params(TemplateSearch),
    responses((status = 200, body = TemplateSearchResponse), (status = 400, body = ErrorBody)))]
async fn search_templates(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TemplateSearch>,
) -> Result<Json<TemplateSearchResponse>, ApiError> {
    let all = state.inner.store.templates().await?;
    let (total, templates) = catalog::search(all, &q)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e))?;
    Ok(Json(TemplateSearchResponse { total, templates }))
}

/// One template by slug or on-chain template id.
#[utoipa::path(get, path = "/templates/{key}", tag = "templates",
    params(("key" = String, Path, description = "slug (e.g. `postgresql`) or on-chain template id")),
    responses((status = 200, body = TemplateRecord), (status = 404, body = ErrorBody)))]
async fn template_detail(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<TemplateRecord>, ApiError> {
    let t = state
        .inner
        .store
        .template(&key)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))?;
    Ok(Json(t))
}

// ---------------------------------------------------------------------------------------------
// Handlers: the caller's own leases, VMs and nodes

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

/// One of the caller's nodes, with the VMs placed on it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OperatorNode {
    /// The node as listed in the marketplace.
    pub node: NodeListing,
    /// VMs placed on it, newest first.
    pub vms: Vec<VmRecord>,
}

/// The nodes the caller operates, with reputation and capacity.
#[utoipa::path(get, path = "/operator/nodes", tag = "operator", security(("session" = [])),
    responses((status = 200, body = Vec<NodeListing>), (status = 401, body = ErrorBody)))]
async fn my_nodes(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<Vec<NodeListing>>, ApiError> {
    let store = &state.inner.store;
    let now = now();
    let usage = store.usage_by_node().await?;
    let mut out = Vec::new();
    for node in store.nodes_of_operator(&session.address).await? {
        let rep = store.reputation(&node.node_id, now).await?;
        let used = usage.get(&node.node_id).copied().unwrap_or_default();
        out.push(NodeListing::new(node, rep, used));
    }
    Ok(Json(out))
}

/// One node the caller operates, with the VMs placed on it.
#[utoipa::path(get, path = "/operator/nodes/{node_id}", tag = "operator", security(("session" = [])),
    params(("node_id" = String, Path, description = "0x-prefixed 32-byte node id", pattern = r"^0x[0-9a-fA-F]{64}$")),
    responses((status = 200, body = OperatorNode), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn my_node(
    State(state): State<AppState>,
    session: Session,
    ApiPath(node_id): ApiPath<String>,
) -> Result<Json<OperatorNode>, ApiError> {
    let node_id = check_node_id(&node_id)?;
    let node = node_listing(&state.inner.store, &node_id).await?;
    if node.node.operator != session.address {
        return Err(ApiError::forbidden("node"));
    }
    let vms = state.inner.store.vms_on_node(&node_id).await?;
    Ok(Json(OperatorNode { node, vms }))
}

// ---------------------------------------------------------------------------------------------
// Handlers: attestations and hosting

/// An orchestrator without an `[attestation]` section attests nothing: a client error with the
/// reason, not a server failure (a 5xx would hide the message and invite retries that cannot
/// succeed).
fn attestations_disabled() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "attestations_disabled",
        "this orchestrator does not attest (it has no attestation key configured)",
    )
}

/// The key that signs attestations and its EIP-712 domain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignerView {
    /// Address of the signing key.
    pub signer: String,
    /// EIP-712 domain name.
    pub name: String,
    /// EIP-712 domain version.
    pub version: String,
    /// EIP-712 domain chain id.
    pub chain_id: u64,
    /// EIP-712 verifying contract: the AttestationAnchor holding the batch roots.
    pub verifying_contract: String,
}

/// One signed attestation, exactly as stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttestationView {
    /// Position in the log from 0; the attestation's id.
    pub sequence: u64,
    /// What it is about (`vm:…`, `lease:…`, `node:…`, `template:…`).
    pub subject: String,
    /// What happened (`vm.transition`, `lease.opened`, `service.distribution`, …).
    pub kind: String,
    /// The attested data, JSON text; `payload_hash` is keccak256 of these bytes.
    pub payload: String,
    /// keccak256 of `payload`.
    pub payload_hash: String,
    /// Hash of the previous attestation (zero for the first).
    pub previous: String,
    /// Unix seconds.
    pub time: u64,
    /// EIP-712 signing hash of (subject, kind, payload_hash, sequence, previous, time).
    pub hash: String,
    /// 65-byte signature of `hash`, hex.
    pub signature: String,
}

impl From<decloud_sdk::attestation::SignedAttestation> for AttestationView {
    fn from(a: decloud_sdk::attestation::SignedAttestation) -> Self {
        Self {
            sequence: a.sequence,
            subject: a.subject,
            kind: a.kind,
            payload: a.payload,
            payload_hash: a.payload_hash.to_string(),
            previous: a.previous.to_string(),
            time: a.time,
            hash: a.hash.to_string(),
            signature: a.signature.to_string(),
        }
    }
}

/// The batch of an attestation, its Merkle proof and its anchor.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InclusionView {
    /// Batch id on AttestationAnchor.
    pub batch: u64,
    /// First sequence number of the batch.
    pub first_sequence: u64,
    /// Attestations in the batch.
    pub count: u64,
    /// Merkle root (OpenZeppelin layout; leaf = keccak256(keccak256(abi.encode(hash)))).
    pub root: String,
    /// Sibling hashes from the leaf up.
    pub proof: Vec<String>,
    /// The anchoring transaction, once confirmed.
    pub tx_hash: Option<String>,
    /// Its block.
    pub block_number: Option<u64>,
}

/// An attestation with its inclusion proof and anchor.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EvidenceView {
    /// The attestation.
    pub attestation: AttestationView,
    /// Batch, proof and anchor; absent until the attestation is batched.
    pub inclusion: Option<InclusionView>,
}

/// The orchestrator's attestation signer and EIP-712 domain: what verifiers check signatures
/// against.
#[utoipa::path(get, path = "/attestations/signer", tag = "attestations",
    responses((status = 200, body = SignerView), (status = 404, body = ErrorBody)))]
async fn attestation_signer(State(state): State<AppState>) -> Result<Json<SignerView>, ApiError> {
    let info = state
        .inner
        .store
        .attestor()
        .ok_or_else(attestations_disabled)?
        .info();
    Ok(Json(SignerView {
        signer: info.signer.to_string(),
        name: info.name,
        version: info.version,
        chain_id: info.chain_id,
        verifying_contract: info.verifying_contract.to_string(),
    }))
}

/// One attestation by id (its sequence number), with its batch, Merkle proof and anchor.
#[utoipa::path(get, path = "/attestations/{id}", tag = "attestations",
    params(("id" = u64, Path, description = "sequence number")),
    responses((status = 200, body = EvidenceView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn attestation_by_id(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<EvidenceView>, ApiError> {
    let e = state
        .inner
        .store
        .evidence(id)
        .await?
        .ok_or_else(|| ApiError::not_found("attestation"))?;
    Ok(Json(EvidenceView {
        attestation: e.attestation.into(),
        inclusion: e.inclusion.map(|i| InclusionView {
            batch: i.batch,
            first_sequence: i.first_sequence,
            count: i.count,
            root: i.root.to_string(),
            proof: i.proof.iter().map(ToString::to_string).collect(),
            tx_hash: i.tx_hash.map(|t| t.to_string()),
            block_number: i.block_number,
        }),
    }))
}

/// Which attestations to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttestationQuery {
    /// Subject, e.g. `vm:vm-7`, `lease:7`, `node:0x…`.
    pub subject: String,
    /// Only attestations after this sequence number (keyset paging).
    pub after: Option<u64>,
    /// At most this many (1–500, default 100).
    pub limit: Option<u32>,
}

/// Attestations about one subject, oldest first.
#[utoipa::path(get, path = "/attestations", tag = "attestations", params(AttestationQuery),
    responses((status = 200, body = Vec<AttestationView>), (status = 400, body = ErrorBody)))]
async fn attestations_by_subject(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AttestationQuery>,
) -> Result<Json<Vec<AttestationView>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) || q.subject.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "subject must not be empty and limit must be 1 to 500",
        ));
    }
    let list = state
        .inner
        .store
        .attestations_of(&q.subject, q.after, limit)
        .await?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

/// What a registered node offers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Capabilities {
    /// Logical CPUs.
    pub vcpus: u64,
    /// Memory, GiB.
    pub memory_gib: u64,
    /// Disk, GiB.
    pub disk_gib: u64,
    /// GPUs.
    pub gpus: u64,
    /// Uplink, Mbit/s.
    pub bandwidth_mbps: u64,
    /// Compute points from the agent's CPU benchmark (0 until measured).
    pub compute_points: u64,
}

/// A registered node of the hosting network.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NetworkNode {
    /// Node id.
    pub node_id: String,
    /// Operator address.
    pub operator: String,
    /// Region.
    pub region: String,
    /// On-chain status.
    pub status: crate::store::NodeStatus,
    /// Whether its agent sent a heartbeat in the last two minutes.
    pub online: bool,
    /// Address of the node's registered public key (what its agent signs with).
    pub public_key: String,
    /// Capabilities.
    pub capabilities: Capabilities,
}

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
                node_id: n.node_id,
                operator: n.operator,
                region: n.region,
                status: n.status,
                public_key: n.node_key,
            })
            .collect(),
    ))
}

/// The id of a new attestation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttestationCreated {
    /// Its sequence number (`GET /attestations/{id}`).
    pub attestation_id: u64,
}

/// The caller's service (VM) or why not.
async fn own_service(state: &AppState, session: &Session, id: &str) -> Result<VmRecord, ApiError> {
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
    params(("id" = String, Path, description = "service (VM) id")),
    responses((status = 201, body = AttestationCreated), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn attest_service(
    State(state): State<AppState>,
    session: Session,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<AttestationCreated>), ApiError> {
    let vm = own_service(&state, &session, &id).await?;
    let lease = state.inner.store.lease(&vm.lease_id).await?;
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

/// What is distributed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DistributionKind {
    /// A workload (VM image, container) to run in the regions.
    Workload,
    /// An artifact (file, bundle) to replicate to the regions.
    Artifact,
}

/// An intent to distribute a workload or artifact to regions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DistributeRequest {
    /// Workload or artifact.
    pub kind: DistributionKind,
    /// Its name or content id (1–512 printable characters).
    pub artifact: String,
    /// SHA-256 of its bytes, 64 hex digits.
    pub sha256: String,
    /// Target regions: each must be the region of a registered active node; no duplicates.
    pub regions: Vec<String>,
}

/// Records (as a signed attestation) the intent to distribute a workload or artifact of one of
/// the caller's services to target regions.
#[utoipa::path(post, path = "/hosting/services/{id}/distribute", tag = "hosting", security(("session" = [])),
    params(("id" = String, Path, description = "service (VM) id")), request_body = DistributeRequest,
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
        .filter(|n| n.status == crate::store::NodeStatus::Active)
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
