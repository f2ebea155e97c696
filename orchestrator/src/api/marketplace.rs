//! The public marketplace: node search, featured nodes, node detail, placement plans and the
//! template catalog.

use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState, ErrorBody};
use crate::{
    catalog::{self, TemplateSearch},
    clock::now,
    marketplace::{self, NodeListing, NodeSearch, SearchError},
    scheduler::{self, NoFit, Placement, Request as PlacementRequest},
    store::{Reputation, Store, TemplateRecord},
};
use axum::{Json, extract::State, http::StatusCode};
use decloud_sdk::{
    NodeId,
    api::{NodeSearchResponse, TemplateSearchResponse},
    reviews::ReviewSubject,
};
use utoipa_axum::{router::OpenApiRouter, routes};

async fn listings(store: &Store, now: i64) -> Result<Vec<NodeListing>, ApiError> {
    let nodes = store.nodes().await?;
    let mut reputations = store.reputations(now).await?;
    let usage = store.usage_by_node().await?;
    let mut descriptions = store.node_descriptions().await?;
    let mut ratings = store.ratings(ReviewSubject::Node).await?;
    Ok(nodes
        .into_iter()
        .map(|n| {
            let description = descriptions.remove(&n.node_id).unwrap_or_default();
            // Ratings are keyed by subject text (node or template id).
            let rating = ratings.remove(&n.node_id.to_string()).unwrap_or_default();
            let rep = reputations
                .remove(&n.node_id)
                .unwrap_or_else(|| Reputation {
                    online: false,
                    last_heartbeat: None,
                    uptime_bps: None,
                    failed_by_day: Vec::new(),
                    vms_hosted: 0,
                    vms_completed: 0,
                    storage_proof_rate_bps: None,
                });
            let used = usage.get(&n.node_id).copied().unwrap_or_default();
            NodeListing {
                description,
                rating,
                ..marketplace::listing(n, rep, used)
            }
        })
        .collect())
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

pub(super) async fn node_listing(store: &Store, node_id: NodeId) -> Result<NodeListing, ApiError> {
    let node = store
        .node(node_id)
        .await?
        .ok_or_else(|| ApiError::not_found("node"))?;
    let rep = store.reputation(node_id, now()).await?;
    let used = store
        .usage_by_node()
        .await?
        .get(&node_id)
        .copied()
        .unwrap_or_default();
    let description = store
        .node_descriptions()
        .await?
        .remove(&node_id)
        .unwrap_or_default();
    let rating = store
        .ratings(ReviewSubject::Node)
        .await?
        .remove(&node_id.to_string())
        .unwrap_or_default();
    Ok(NodeListing {
        description,
        rating,
        ..marketplace::listing(node, rep, used)
    })
}

/// One node with pricing, capacity and reputation (including missed heartbeats per day).
#[utoipa::path(get, path = "/nodes/{node_id}", tag = "marketplace",
    params(("node_id" = String, Path, description = "0x-prefixed 32-byte node id", pattern = r"^0x[0-9a-fA-F]{64}$")),
    responses((status = 200, body = NodeListing), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn node_detail(
    State(state): State<AppState>,
    ApiPath(node_id): ApiPath<String>,
) -> Result<Json<NodeListing>, ApiError> {
    // Parsed here rather than by the extractor so the 400 names the id (`invalid_node_id`).
    let node_id: NodeId = node_id.parse()?;
    Ok(Json(node_listing(&state.inner.store, node_id).await?))
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
        id.parse::<NodeId>()?;
    }
    let candidates: Vec<_> = listings(&state.inner.store, now())
        .await?
        .iter()
        .map(marketplace::candidate)
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

/// The templates with their reviews' aggregates (by on-chain id).
async fn with_ratings(
    store: &Store,
    mut templates: Vec<TemplateRecord>,
) -> Result<Vec<TemplateRecord>, ApiError> {
    let ratings = store.ratings(ReviewSubject::Template).await?;
    for t in &mut templates {
        if let Some(r) = t.template_id.and_then(|id| ratings.get(&id.to_string())) {
            t.rating = *r;
        }
    }
    Ok(templates)
}

/// Searches the template catalog by category, GPU, tags and text.
#[utoipa::path(get, path = "/templates", tag = "templates", params(TemplateSearch),
    responses((status = 200, body = TemplateSearchResponse), (status = 400, body = ErrorBody)))]
async fn search_templates(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TemplateSearch>,
) -> Result<Json<TemplateSearchResponse>, ApiError> {
    let all = with_ratings(&state.inner.store, state.inner.store.templates().await?).await?;
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
    let mut t = with_ratings(&state.inner.store, vec![t]).await?;
    Ok(Json(t.remove(0)))
}

/// The marketplace, scheduler and template routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search_nodes))
        .routes(routes!(featured_nodes))
        .routes(routes!(node_detail))
        .routes(routes!(plan))
        .routes(routes!(search_templates))
        .routes(routes!(template_detail))
}
