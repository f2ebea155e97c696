//! The HTTP and WebSocket layer, the top of the orchestrator: the API under `/api/v1` with its
//! router, shared state, the one error shape, extractors, sessions and the OpenAPI document
//! generated from the handlers. Handlers live by route group ([`auth`], [`marketplace`], [`drafts`], [`profiles`], [`reviews`],
//! [`tenant`], [`operator`], [`attestations`], [`hosting`], [`storage`]) and the node agents' WebSocket in
//! [`agent`]. Nothing below this module imports it.

mod agent;
mod attestations;
mod auth;
mod console;
mod drafts;
mod hosting;
mod ingress;
mod marketplace;
mod operator;
mod profiles;
mod protocol_errors;
mod reviews;
mod storage;
mod template_validation;
mod tenant;
mod web;

pub use protocol_errors::{ApiConnection, ApiListener};

pub use decloud_sdk::api::{
    AttestationCreated, AttestationQuery, AttestationView, Capabilities, DistributeRequest,
    DistributionKind, ErrorBody, ErrorDetail, EvidenceView, Health, InclusionView, NetworkNode,
    NodeSearchResponse, NonceResponse, OperatorNode, SessionInfo, SessionResponse, SignerView,
    TemplateSearchResponse, VerifyRequest,
};

use crate::{
    agent::AgentHub,
    auth::{AuthError, Siwe, token_hash},
    clock::now,
    config::Config,
    metrics::Metrics,
    ratelimit::RateLimiter,
    store::{Store, StoreError},
};
use axum::{
    Json, Router,
    extract::{
        ConnectInfo, FromRef, FromRequest, FromRequestParts, MatchedPath, Request, State,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{HeaderName, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use decloud_sdk::IdError;
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};
use tower::ServiceBuilder;
use tower_http::{
    cors::{AllowOrigin, Any, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

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
    agents: AgentHub,
    siwe: Siwe,
    limiter: RateLimiter,
    metrics: Arc<Metrics>,
    config: Config,
    /// Where template bundles (published ones and drafts) are stored and fetched, once set.
    content: std::sync::OnceLock<Arc<dyn decloud_content::ContentStore>>,
    /// The repairer of storage deals and its registered secrets, once set.
    repair: std::sync::OnceLock<crate::repair::RepairDesk>,
    /// What keeps the orchestrator from doing all it should, by area; `/health` reports them.
    problems: std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>,
}

impl AppState {
    /// State over an opened store and a resolved configuration.
    pub fn new(store: Store, config: Config) -> Result<Self, crate::config::ConfigError> {
        let siwe = Siwe::new(config.siwe.clone())?;
        let limiter = RateLimiter::new(config.signin_burst, config.signin_per_minute);
        let metrics = Arc::new(Metrics::default());
        let agents = AgentHub::new(store.clone(), metrics.clone(), config.agent_resend_secs);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                agents,
                siwe,
                limiter,
                metrics,
                config,
                content: Default::default(),
                repair: Default::default(),
                problems: Default::default(),
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Connections of node agents.
    pub fn agents(&self) -> &AgentHub {
        &self.inner.agents
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Gives the state its content store (once; a second store is ignored).
    pub fn set_content(&self, content: Arc<dyn decloud_content::ContentStore>) {
        let _ = self.inner.content.set(content);
    }

    /// The content store, when one is configured.
    pub fn content(&self) -> Option<&Arc<dyn decloud_content::ContentStore>> {
        self.inner.content.get()
    }

    /// Gives the state its repair desk (once; a second is ignored).
    pub fn set_repair(&self, desk: crate::repair::RepairDesk) {
        let _ = self.inner.repair.set(desk);
    }

    /// The repair desk, when a repair key is configured.
    pub fn repair(&self) -> Option<&crate::repair::RepairDesk> {
        self.inner.repair.get()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Sets (or, with `None`, clears) the problem of one area; while any is set, `/health`
    /// answers `degraded` and lists them.
    pub fn set_problem(&self, area: &'static str, problem: Option<String>) {
        let mut problems = self
            .inner
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match problem {
            Some(p) => problems.insert(area, p),
            None => problems.remove(area),
        };
    }

    fn problems(&self) -> Vec<String> {
        let problems = self
            .inner
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        problems.values().cloned().collect()
    }
}

/// The agent WebSocket runs on the hub's own state, not on the HTTP state.
impl FromRef<AppState> for AgentHub {
    fn from_ref(state: &AppState) -> Self {
        state.inner.agents.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

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

    pub(crate) fn internal(err: impl std::fmt::Display) -> Self {
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

/// A malformed id in a path, query or body: 400 with a code naming the kind of id, so a client
/// learns that the id is wrong rather than that nothing has it (404).
impl From<IdError> for ApiError {
    fn from(e: IdError) -> Self {
        let code = match e.kind {
            "node id" => "invalid_node_id",
            "lease id" => "invalid_lease_id",
            "vm id" => "invalid_vm_id",
            "template id" => "invalid_template_id",
            _ => "invalid_id",
        };
        Self::new(StatusCode::BAD_REQUEST, code, e.to_string())
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
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
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
    info(title = "DeCloud orchestrator API", description = "Wallet sign-in, node marketplace, scheduling, leases and VMs, signed attestations, hosting, storage repair."),
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
    OpenApiRouter::new()
        .routes(routes!(health))
        .merge(auth::routes(state))
        .merge(marketplace::routes())
        .merge(template_validation::routes())
        .merge(drafts::routes())
        .merge(profiles::routes())
        .merge(reviews::routes())
        .merge(tenant::routes())
        .merge(console::routes())
        .merge(operator::routes())
        .merge(attestations::routes())
        .merge(hosting::routes())
        .merge(ingress::routes())
        .merge(storage::routes())
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
        .route("/api/v1/agent/ws", get(agent::ws_handler))
        .route("/metrics", get(metrics))
        .fallback(web::fallback)
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
// Handlers: health

/// Health: the server answers and its database answers (`ok`); `degraded`, with the problems
/// listed, while something it should do keeps failing (anchoring attestations).
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, body = Health), (status = 500, body = ErrorBody)))]
async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.inner.store.ping().await?;
    let problems = state.problems();
    Ok(Json(Health {
        status: if problems.is_empty() {
            "ok"
        } else {
            "degraded"
        }
        .into(),
        problems,
    }))
}

// ---------------------------------------------------------------------------------------------
// Shared by the route groups

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
