//! The nodes the caller operates.

use super::{ApiError, ApiPath, AppState, ErrorBody, Session, marketplace::node_listing};
use crate::{clock::now, marketplace::NodeListing};
use axum::{Json, extract::State};
use decloud_sdk::{
    NodeId,
    api::{NodeReachability, OperatorNode, RelayEndpoint, RelayedVmTraffic},
};
use utoipa_axum::{router::OpenApiRouter, routes};

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
        let rep = store.reputation(node.node_id, now).await?;
        let used = usage.get(&node.node_id).copied().unwrap_or_default();
        out.push(crate::marketplace::listing(node, rep, used));
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
    let node_id: NodeId = node_id.parse()?;
    let node = node_listing(&state.inner.store, node_id).await?;
    if node.node.operator != session.address {
        return Err(ApiError::forbidden("node"));
    }
    let vms = state.inner.store.vms_on_node(node_id).await?;
    let store = &state.inner.store;
    let assignment = store.relay_assignment(node_id).await?;
    let reachability = NodeReachability {
        behind_nat: state
            .agents()
            .links()
            .get(&node_id)
            .is_some_and(|l| l.tunnel.is_some()),
        tunnel_address: assignment.as_ref().map(|a| a.tunnel_address.to_string()),
        relay: assignment.map(|a| RelayEndpoint {
            relay_node_id: a.relay_node_id.to_string(),
            address: a.relay_address,
            forwards: Vec::new(),
        }),
        relayed: store
            .relay_traffic_of(node_id)
            .await?
            .into_iter()
            .map(|(vm_id, traffic)| RelayedVmTraffic { vm_id, traffic })
            .collect(),
    };
    Ok(Json(OperatorNode {
        node,
        vms,
        reachability,
    }))
}

/// The operator routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(my_nodes))
        .routes(routes!(my_node))
}
