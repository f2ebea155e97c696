//! The orchestrator's storage endpoints a deal's owner uses: where to place replicas
//! (`GET /api/v1/storage/placement`), where one node's chunk API is
//! (`GET /api/v1/storage/nodes/{node_id}`), which repairer it offers
//! (`GET /api/v1/storage/repairer`) and registering a deal's repair secret
//! (`POST /api/v1/storage/deals/{id}/repair`, signed in).

use alloy::primitives::B256;
use reqwest::StatusCode;
use url::Url;

use super::{StorageNode, encoding::RepairSecret};
use crate::api::{
    ErrorBody, RepairRegistered, RepairRegistration, RepairerView, StorageNodeView,
    StoragePlacement, StoragePlacementRequest,
};

/// What can go wrong asking the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The orchestrator could not be reached or the answer broke off.
    #[error("orchestrator {url}: {source}")]
    Transport {
        /// The request's URL.
        url: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// The orchestrator refused; `code` is its stable error code.
    #[error("orchestrator {url} answered {status} {code}: {message}")]
    Refused {
        /// The request's URL.
        url: String,
        /// HTTP status.
        status: StatusCode,
        /// The API's error code, e.g. `not_enough_storage_nodes`.
        code: String,
        /// Its explanation.
        message: String,
    },
    /// The answer is not what the API promises.
    #[error("orchestrator {url} answered something unexpected: {message}")]
    Unexpected {
        /// The request's URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// Registering a repair secret needs a session.
    #[error("not signed in to the orchestrator {0}: run `decloud login`")]
    NotSignedIn(String),
}

impl CoordinatorError {
    /// The API's error code of a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client of one orchestrator's storage endpoints, optionally with a session token.
#[derive(Debug, Clone)]
pub struct StorageCoordinator {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl StorageCoordinator {
    /// The orchestrator at `base` (e.g. `http://127.0.0.1:8080`), without a session.
    pub fn new(base: Url) -> Self {
        Self {
            http: reqwest::Client::new(),
            base,
            token: None,
        }
    }

    /// The same client with a session's bearer token (from `POST /auth/verify`).
    pub fn with_session(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The orchestrator's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn endpoint(&self, path: &str) -> Url {
        let base = self.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/api/v1{path}")).expect("a URL with a path appended parses")
    }

    /// The URL of a placement query: `replicas`, `bytes`, and `region` and `exclude` (node ids,
    /// comma-separated) when given.
    pub fn placement_url(&self, request: &StoragePlacementRequest) -> Url {
        let mut url = self.endpoint("/storage/placement");
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("replicas", &request.replicas.to_string())
                .append_pair("bytes", &request.bytes.to_string());
            if let Some(region) = request.region.as_deref().filter(|r| !r.is_empty()) {
                query.append_pair("region", region);
            }
            if let Some(exclude) = request.exclude.as_deref().filter(|e| !e.is_empty()) {
                query.append_pair("exclude", exclude);
            }
        }
        url
    }

    async fn send(
        &self,
        url: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<String, CoordinatorError> {
        let transport = |source| CoordinatorError::Transport {
            url: url.to_string(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = response.text().await.map_err(transport)?;
        if status.is_success() {
            return Ok(body);
        }
        let (code, message) = match serde_json::from_str::<ErrorBody>(&body) {
            Ok(e) => (e.error.code, e.error.message),
            // Not the API's shape (a proxy's page, an older orchestrator): show what came.
            Err(_) => ("error".to_owned(), body.trim().to_owned()),
        };
        Err(CoordinatorError::Refused {
            url: url.to_string(),
            status,
            code,
            message,
        })
    }

    fn parse<T: serde::de::DeserializeOwned>(url: &Url, body: &str) -> Result<T, CoordinatorError> {
        serde_json::from_str(body).map_err(|e| CoordinatorError::Unexpected {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    /// Nodes for `request.replicas` replicas of `request.bytes` bytes each, best first. A 409
    /// `not_enough_storage_nodes` comes back as [`CoordinatorError::Refused`] with that code.
    pub async fn placement(
        &self,
        request: &StoragePlacementRequest,
    ) -> Result<Vec<StorageNode>, CoordinatorError> {
        let url = self.placement_url(request);
        let body = self.send(&url, self.http.get(url.clone())).await?;
        parse_placement(&url, &body, request.replicas)
    }

    /// What the orchestrator knows of storage node `node` (its chunk API and state), or `None`
    /// when it knows no storage node of that id (404 `not_found`).
    pub async fn storage_node(
        &self,
        node: B256,
    ) -> Result<Option<StorageNodeView>, CoordinatorError> {
        let url = self.endpoint(&format!("/storage/nodes/{node}"));
        match self.send(&url, self.http.get(url.clone())).await {
            Ok(body) => {
                let view: StorageNodeView = Self::parse(&url, &body)?;
                if view.node_id.as_b256() != node {
                    return Err(CoordinatorError::Unexpected {
                        url: url.to_string(),
                        message: format!("asked for node {node}, answered for {}", view.node_id),
                    });
                }
                Ok(Some(view))
            }
            Err(e) if e.code() == Some("not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The repairer the orchestrator offers, or `None` when it repairs no deals (404
    /// `repair_not_offered`).
    pub async fn repairer(&self) -> Result<Option<RepairerView>, CoordinatorError> {
        let url = self.endpoint("/storage/repairer");
        match self.send(&url, self.http.get(url.clone())).await {
            Ok(body) => Self::parse(&url, &body).map(Some),
            Err(e) if e.code() == Some("repair_not_offered") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Hands deal `deal`'s repair secret to the orchestrator (the deal must name its repairer
    /// on-chain, and the session must be the deal's owner's).
    pub async fn register_repair(
        &self,
        deal: u64,
        secret: &RepairSecret,
    ) -> Result<RepairRegistered, CoordinatorError> {
        let token = self
            .token
            .as_deref()
            .ok_or_else(|| CoordinatorError::NotSignedIn(self.base.to_string()))?;
        let url = self.endpoint(&format!("/storage/deals/{deal}/repair"));
        let body = RepairRegistration {
            secret: format!("0x{}", hex::encode(secret.to_bytes())),
        };
        let text = self
            .send(
                &url,
                self.http.post(url.clone()).bearer_auth(token).json(&body),
            )
            .await?;
        Self::parse(&url, &text)
    }
}

/// The nodes of a placement answer, checked: exactly `replicas` distinct nodes with valid ids and
/// URLs.
fn parse_placement(
    url: &Url,
    body: &str,
    replicas: u32,
) -> Result<Vec<StorageNode>, CoordinatorError> {
    let unexpected = |message: String| CoordinatorError::Unexpected {
        url: url.to_string(),
        message,
    };
    let placement: StoragePlacement = StorageCoordinator::parse(url, body)?;
    let mut nodes: Vec<StorageNode> = Vec::with_capacity(placement.nodes.len());
    for node in placement.nodes {
        let id: B256 = node
            .node_id
            .parse()
            .map_err(|e| unexpected(format!("node id {:?}: {e}", node.node_id)))?;
        let chunk_api: Url = node
            .url
            .parse()
            .map_err(|e| unexpected(format!("node {id} has no valid URL {:?}: {e}", node.url)))?;
        if nodes.iter().any(|n| n.node == id) {
            return Err(unexpected(format!("node {id} placed twice")));
        }
        nodes.push(StorageNode {
            node: id,
            url: chunk_api,
        });
    }
    if nodes.len() != replicas as usize {
        return Err(unexpected(format!(
            "{} nodes for {replicas} replicas",
            nodes.len()
        )));
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator() -> StorageCoordinator {
        StorageCoordinator::new("http://127.0.0.1:8080/".parse().unwrap())
    }

    #[test]
    fn placement_urls_carry_the_query_the_api_takes() {
        let c = coordinator();
        let mut request = StoragePlacementRequest {
            replicas: 3,
            bytes: 3 << 20,
            region: None,
            exclude: None,
        };
        assert_eq!(
            c.placement_url(&request).as_str(),
            "http://127.0.0.1:8080/api/v1/storage/placement?replicas=3&bytes=3145728"
        );
        let a = format!("0x{}", "ab".repeat(32));
        let b = format!("0x{}", "cd".repeat(32));
        request.region = Some("eu west".into());
        request.exclude = Some(format!("{a},{b}"));
        let url = c.placement_url(&request);
        // What a server reads back is what was asked.
        let back: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            back,
            vec![
                ("replicas".into(), "3".into()),
                ("bytes".into(), "3145728".into()),
                ("region".into(), "eu west".into()),
                ("exclude".into(), format!("{a},{b}")),
            ]
        );
        // An orchestrator behind a path prefix keeps it.
        let prefixed = StorageCoordinator::new("https://example.org/decloud".parse().unwrap());
        request.region = Some(String::new());
        request.exclude = None;
        assert_eq!(
            prefixed.placement_url(&request).as_str(),
            "https://example.org/decloud/api/v1/storage/placement?replicas=3&bytes=3145728"
        );
    }

    #[test]
    fn placement_answers_parse_or_say_what_is_wrong() {
        let url = coordinator().placement_url(&StoragePlacementRequest::default());
        let node = |id: &str, url: &str| {
            serde_json::json!({ "node_id": id, "url": url, "free_bytes": 1u64 << 30,
                "region": "eu-west", "proof_rate_bps": 10_000, "reason": "most free space" })
        };
        let a = format!("0x{}", "ab".repeat(32));
        let b = format!("0x{}", "cd".repeat(32));
        let body = serde_json::json!({ "nodes": [node(&a, "http://10.0.0.1:7700"), node(&b, "http://10.0.0.2:7700")] });
        let nodes = parse_placement(&url, &body.to_string(), 2).unwrap();
        assert_eq!(nodes[0].node, B256::repeat_byte(0xab));
        assert_eq!(nodes[1].url.as_str(), "http://10.0.0.2:7700/");

        let wrong_count = parse_placement(&url, &body.to_string(), 3).unwrap_err();
        assert!(
            wrong_count.to_string().contains("2 nodes for 3 replicas"),
            "{wrong_count}"
        );
        let twice = serde_json::json!({ "nodes": [node(&a, "http://x"), node(&a, "http://y")] });
        assert!(
            parse_placement(&url, &twice.to_string(), 2)
                .unwrap_err()
                .to_string()
                .contains("placed twice")
        );
        let bad_id = serde_json::json!({ "nodes": [node("0x12", "http://x")] });
        assert!(
            parse_placement(&url, &bad_id.to_string(), 1)
                .unwrap_err()
                .to_string()
                .contains("node id")
        );
        let bad_url = serde_json::json!({ "nodes": [node(&a, "not a url")] });
        assert!(
            parse_placement(&url, &bad_url.to_string(), 1)
                .unwrap_err()
                .to_string()
                .contains("no valid URL")
        );
        assert!(matches!(
            parse_placement(&url, "<html>", 1),
            Err(CoordinatorError::Unexpected { .. })
        ));
    }
}
