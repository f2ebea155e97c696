//! The web app, served as static files beside the API, and the `/config.json` it reads at start
//! (configured by [`WebConfig`]). Serving the app from the API's origin also makes that origin the
//! Sign-In with Ethereum domain the orchestrator already accepts.

use std::path::{Component, Path, PathBuf};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{ApiError, AppState};
use crate::config::WebConfig;

/// Answers every request no API route matched: the app's files when a web app is configured,
/// else the API's 404.
pub(crate) async fn fallback(State(state): State<AppState>, req: Request) -> Response {
    let path = req.uri().path();
    let Some(web) = state.config().web.as_ref() else {
        return not_found();
    };
    // The API's own namespace never falls through to the app: a mistyped endpoint stays a 404.
    if path.starts_with("/api/") || !matches!(*req.method(), Method::GET | Method::HEAD) {
        return not_found();
    }
    if path == "/config.json" {
        return app_config(web).await;
    }
    match asset_path(&web.dir, path) {
        Some(file) => match tokio::fs::read(&file).await {
            Ok(bytes) => file_response(&file, bytes),
            // A client-side route (`/leases/3`) is the app's page: it routes in the browser.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !looks_like_file(path) => {
                index(&web.dir).await
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => not_found(),
            // A directory or an unreadable file.
            Err(_) => index(&web.dir).await,
        },
        None => not_found(),
    }
}

fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
}

/// The file under `dir` that `path` names, or `None` when the path tries to leave `dir`.
fn asset_path(dir: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    if path.contains('\\')
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return None;
    }
    Some(dir.join(relative))
}

fn looks_like_file(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'))
}

async fn index(dir: &Path) -> Response {
    let file = dir.join("index.html");
    match tokio::fs::read(&file).await {
        Ok(bytes) => file_response(&file, bytes),
        Err(e) => {
            tracing::error!(target: "orchestrator::web", error = %e, file = %file.display(), "the web app is configured but its index.html cannot be read");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
            .into_response()
        }
    }
}

fn file_response(file: &Path, bytes: Vec<u8>) -> Response {
    let extension = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let content_type = match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    // Vite names built assets by their content hash: they never change under one name. The page
    // itself must be fetched again after a deploy to pick the new names up.
    let immutable = file
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|d| d == "assets");
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        Body::from(bytes),
    )
        .into_response()
}

/// `/config.json`: the network the app talks to. The deployment record is read on each request,
/// so a redeployment shows without a restart.
async fn app_config(web: &WebConfig) -> Response {
    let deployment = match tokio::fs::read(&web.deployment).await {
        Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(value) => value,
            Err(e) => return config_error(web, &e),
        },
        Err(e) => return config_error(web, &e),
    };
    let body = serde_json::json!({
        "chainId": web.chain_id,
        "rpcUrl": web.rpc_url,
        "indexerUrl": web.indexer_url,
        "walletConnectProjectId": web.walletconnect_project_id,
        "deployment": deployment,
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        axum::Json(body),
    )
        .into_response()
}

fn config_error(web: &WebConfig, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(target: "orchestrator::web", error = %e, file = %web.deployment.display(), "cannot read the deployment record for /config.json");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_paths_stay_inside_the_app_directory() {
        let dir = Path::new("/srv/app");
        assert_eq!(
            asset_path(dir, "/assets/index-abc.js"),
            Some(PathBuf::from("/srv/app/assets/index-abc.js"))
        );
        assert_eq!(asset_path(dir, "/../etc/passwd"), None);
        assert_eq!(asset_path(dir, "/assets/../../etc/passwd"), None);
        assert_eq!(asset_path(dir, "/./index.html"), None);
        assert_eq!(asset_path(dir, "/a\\..\\b"), None);
    }

    #[test]
    fn client_side_routes_are_told_from_files() {
        assert!(looks_like_file("/assets/index-abc.js"));
        assert!(!looks_like_file("/leases/3"));
        assert!(!looks_like_file("/"));
    }
}
