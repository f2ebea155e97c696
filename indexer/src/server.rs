//! The HTTP server: GraphQL (GraphiQL on GET, queries on POST, subscriptions over WebSocket),
//! `/healthz` and `/metrics`; and [`run`], the binary's whole life.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use alloy::providers::{Provider, ProviderBuilder};
use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQL, GraphQLSubscription};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use decloud_runtime::LogFormat;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::trace::TraceLayer;
use tracing::{error, info};

use crate::config::{Args, Config, ContractEntry};
use crate::db::{Database, redact};
use crate::events::{ContractKind, EventDecoder};
use crate::follower::{Follower, ensure_follower_schema};
use crate::graphql::{ApiState, schema};
use crate::handler::IndexerHandler;
use crate::metrics::Metrics;

/// The cursor name of the indexer's own follower.
pub const CURSOR: &str = "indexer";

/// Builds the router over a GraphQL schema built from `state`.
pub fn app(state: ApiState) -> Result<Router, async_graphql::dynamic::SchemaError> {
    let schema = schema(state.clone())?;
    Ok(Router::new()
        .route(
            "/graphql",
            get(graphiql).post_service(GraphQL::new(schema.clone())),
        )
        .route_service("/graphql/ws", GraphQLSubscription::new(schema))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(TraceLayer::new_for_http())
        // Public, read-only chain data: the web app reads it from the browser on any origin.
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([header::CONTENT_TYPE]),
        )
        .with_state(state))
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

async fn healthz(State(state): State<ApiState>) -> Response {
    let db_ok = sqlx::query("SELECT 1")
        .execute(&state.db.pool)
        .await
        .is_ok();
    let indexing_ok = !state.metrics.indexing_error.load(Ordering::Relaxed);
    let body = serde_json::json!({
        "database": db_ok,
        "indexing": indexing_ok,
        "head_block": state.metrics.head_block.load(Ordering::Relaxed),
        "indexed_block": state.metrics.indexed_block.load(Ordering::Relaxed),
    });
    let status = if db_ok && indexing_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render("decloud_indexer"),
    )
        .into_response()
}

/// A running indexer: its follower and its HTTP server.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP server listens.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    follower: JoinHandle<()>,
    server: JoinHandle<std::io::Result<()>>,
    db: Database,
}

impl Running {
    /// The GraphQL endpoint.
    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// Stops the follower (an uncommitted range is rolled back) and the server (in-flight requests
    /// finish), then closes the database.
    pub async fn stop(self) -> eyre::Result<()> {
        let _ = self.stop.send(true);
        let _ = self.follower.await;
        self.server.await??;
        self.db.pool.close().await;
        Ok(())
    }
}

/// Migrates the database, then starts following the chain and serving the API.
pub async fn start(
    config: &Config,
    contracts: &[(ContractKind, ContractEntry)],
) -> eyre::Result<Running> {
    let db = Database::connect(&config.database_url).await?;
    db.migrate().await?;
    ensure_follower_schema(&db).await?;
    let provider = ProviderBuilder::new()
        .connect_http(config.rpc_url.parse()?)
        .erased();
    let chain_id = provider.get_chain_id().await?;
    if chain_id != config.chain_id {
        eyre::bail!(
            "rpc {} is chain {chain_id}, configured chain is {}",
            config.rpc_url,
            config.chain_id
        );
    }
    let decoder = EventDecoder::new(contracts.iter().map(|(k, e)| (*k, e.address)));
    let handler = IndexerHandler::new(decoder, db.backend);
    let metrics = Arc::new(Metrics::default());
    let state = ApiState {
        db: db.clone(),
        cursor: CURSOR.into(),
        metrics: metrics.clone(),
        notices: handler.notices(),
    };
    let follower_config = config.follower(CURSOR, contracts);
    let mut follower =
        Follower::new(provider, db.clone(), follower_config, handler).with_metrics(metrics);

    let (stop, stop_rx) = watch::channel(false);
    let follower_stop = stop_rx.clone();
    let follower = tokio::spawn(async move {
        if let Err(e) = follower.run(follower_stop).await {
            error!(target: "indexer::follower", error = %e,
                source = ?std::error::Error::source(&e), "indexing stopped");
        }
    });
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    info!(target: "indexer::server", %addr, database = %redact(&config.database_url),
        rpc = %config.rpc_url, chain_id, "serving GraphQL at http://{addr}/graphql");
    let mut server_stop = stop_rx;
    let server = axum::serve(listener, app(state)?).with_graceful_shutdown(async move {
        let _ = server_stop.wait_for(|s| *s).await;
    });
    let server = tokio::spawn(async move { server.await });
    Ok(Running {
        addr,
        stop,
        follower,
        server,
        db,
    })
}

/// Resolves the configuration, migrates the database, follows the chain and serves the API until
/// SIGINT or SIGTERM, then stops both gracefully.
pub async fn run(args: Args) -> eyre::Result<()> {
    let config = Config::resolve(&args)?;
    decloud_runtime::init_logging(if config.log_format == "json" {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    // Listening before anything starts: a signal during startup also stops gracefully rather than
    // killing the process with the default action.
    let shutdown = decloud_runtime::shutdown_signal()?;
    let contracts = config.contracts()?;
    let running = start(&config, &contracts).await?;
    shutdown.await;
    running.stop().await
}
