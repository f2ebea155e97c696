//! DeCloud orchestrator: turns on-chain leases into VMs on the right nodes, keeps an honest
//! record of node reliability and serves tenants and operators through an HTTP API.
//!
//! It coordinates and never holds money.
//!
//! The library is the whole server; the `decloud-orchestrator` binary only parses flags and calls
//! [`run`]. Tests build the router with [`app`] and drive it without a socket.

pub mod agent;
pub mod api;
pub mod auth;
pub mod catalog;
pub mod chain;
pub mod config;
pub mod dev;
pub mod lifecycle;
pub mod marketplace;
pub mod metrics;
pub mod ratelimit;
pub mod reputation;
pub mod scheduler;
pub mod store;

pub use api::{AppState, app};
pub use config::{Args, Config, ConfigError};
pub use dev::OrchestratorService;
pub use store::{Store, StoreError};

use std::{future::IntoFuture as _, time::Duration};
use tracing_subscriber::EnvFilter;

/// Runs the server until SIGINT or SIGTERM: resolves the configuration, opens the store,
/// serves the API, then drains in-flight requests before returning.
pub async fn run(args: Args) -> eyre::Result<()> {
    let config = Config::resolve(&args, |k| std::env::var(k).ok())?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if config.log_json {
        logs.json().init()
    } else {
        logs.init()
    }

    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let running = start(config, listener).await?;
    shutdown_signal().await;
    running.stop().await
}

/// A running orchestrator: its server, chain follower, lifecycle driver and housekeeping tasks.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP server listens.
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    chain_tasks: Option<ChainTasks>,
    pruner: tokio::task::JoinHandle<()>,
    store: Store,
}

impl Running {
    /// Base URL of the HTTP API (`…/api/v1`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// The WebSocket URL node agents connect to.
    pub fn agent_ws_url(&self) -> String {
        format!("ws://{}/api/v1/agent/ws", self.addr)
    }

    /// Drains in-flight requests, stops the chain follower and the lifecycle driver, and closes
    /// the store.
    pub async fn stop(self) -> eyre::Result<()> {
        let _ = self.stop.send(true);
        let served = self.server.await;
        if let Some((follower, driver)) = self.chain_tasks {
            driver.abort();
            match follower.await {
                Ok(Err(e)) => {
                    tracing::error!(target: "orchestrator::chain", error = %e, "chain follower stopped with an error")
                }
                Err(e) if !e.is_cancelled() => {
                    tracing::error!(target: "orchestrator::chain", error = %e, "chain follower panicked")
                }
                _ => {}
            }
        }
        self.pruner.abort();
        self.store.close().await;
        tracing::info!(target: "orchestrator", "stopped");
        served??;
        Ok(())
    }
}

/// Opens the store, recovers from a crash, loads the template catalog, starts following the chain
/// (when configured) and serves the API on `listener` until [`Running::stop`].
pub async fn start(config: Config, listener: tokio::net::TcpListener) -> eyre::Result<Running> {
    let store = Store::connect(&config.database_url).await?;
    let recovered = lifecycle::recover(&store).await?;
    if recovered > 0 {
        tracing::info!(target: "orchestrator::lifecycle", recovered, "applied acknowledgements left by a crash");
    }
    if let Some(dir) = &config.templates_dir {
        let loaded = catalog::load_dir(&store, dir, api::now()).await?;
        tracing::info!(target: "orchestrator::catalog", loaded, dir = %dir.display(), "template catalog loaded");
    }
    let addr = listener.local_addr()?;
    tracing::info!(target: "orchestrator", listen = %addr, "serving");
    let state = AppState::new(store.clone(), config)?;

    // Used nonces and dead sessions are only clutter; clear them out every ten minutes.
    let pruner = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                match store.prune_auth(api::now()).await {
                    Ok(n) => {
                        tracing::debug!(target: "orchestrator::auth", pruned = n, "pruned sign-in state")
                    }
                    Err(e) => {
                        tracing::warn!(target: "orchestrator::auth", error = %e, "pruning sign-in state failed")
                    }
                }
            }
        })
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let chain_tasks = match state.config().chain.clone() {
        Some(chain) => Some(spawn_chain(&state, chain, stopped.clone()).await?),
        None => None,
    };
    let mut server_stopped = stopped;
    let server = tokio::spawn(
        axum::serve(
            listener,
            app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = server_stopped.wait_for(|stop| *stop).await;
        })
        .into_future(),
    );
    Ok(Running {
        addr,
        stop,
        server,
        chain_tasks,
        pruner,
        store,
    })
}

type ChainTasks = (
    tokio::task::JoinHandle<Result<(), decloud_indexer::FollowerError>>,
    tokio::task::JoinHandle<()>,
);

/// Starts the chain follower (lease and node events into the store) and the lifecycle driver
/// (acts on them after every batch and every 10 s, so failed side effects are retried).
async fn spawn_chain(
    state: &AppState,
    chain: config::ChainConfig,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> eyre::Result<ChainTasks> {
    use alloy::providers::{Provider, ProviderBuilder};
    let committed = std::sync::Arc::new(tokio::sync::Notify::new());
    let handler = match &chain.template_market {
        Some(market) => chain::ChainHandler::with_template_market(
            chain.node_registry.parse()?,
            chain.lease_escrow.parse()?,
            market.parse()?,
            committed.clone(),
        ),
        None => chain::ChainHandler::new(
            chain.node_registry.parse()?,
            chain.lease_escrow.parse()?,
            committed.clone(),
        ),
    };
    let provider = ProviderBuilder::new()
        .connect_http(chain.rpc_url.parse()?)
        .erased();
    let mut follower_config = decloud_indexer::FollowerConfig::new(
        "orchestrator",
        handler.addresses(),
        chain.start_block,
    );
    follower_config.confirmations = chain.confirmations;
    let mut follower = decloud_indexer::Follower::new(
        provider,
        state.store().follower_database(),
        follower_config,
        handler,
    );
    let follower = tokio::spawn(async move { follower.run(stopped).await });
    let workload = lifecycle::Workload {
        image: chain.image,
        user_data: String::new(),
        bandwidth: decloud_sdk::agent_protocol::BandwidthTier::Basic,
        grace_secs: chain.grace_secs,
    };
    let state = state.clone();
    let driver = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = committed.notified() => {}
                _ = tick.tick() => {}
            }
            if let Err(e) = lifecycle::drive(state.store(), state.agents(), &workload).await {
                tracing::warn!(target: "orchestrator::lifecycle", error = %e, "lifecycle pass failed; retrying on the next");
            }
        }
    });
    Ok((follower, driver))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!(target: "orchestrator", "shutting down");
}
