//! DeCloud orchestrator: turns on-chain leases into VMs on the right nodes, keeps an honest
//! record of node reliability and serves tenants and operators through an HTTP API.
//!
//! It coordinates and never holds money. Everything it does is signed, chained and anchored
//! on-chain ([`attestation`]), so anyone can check what happened to a VM, a lease or a node.
//!
//! The library is the whole server; the `decloud-orchestrator` binary only parses flags and calls
//! [`run`]. Tests build the router with [`app`] and drive it without a socket.

// Layers, bottom to top (each imports only the ones before it; `tests/module_graph.rs` checks
// that no cycle appears):
// - leaves: `clock`, `money`, `reputation`, `scheduler`, `metrics`, `ratelimit`, `config`,
//   `console` (the console relay), `repair` (rebuilding a lost storage replica);
// - storage: `store`, every SQL statement of the crate;
// - services: `agent` (the hub), `auth`, `attestation`, `catalog`, `bundles`, `profiles`,
//   `reviews`, `marketplace`, `lifecycle`, `reconcile`, `sla`, `chain`, `dns` (the ingress
//   domain's authoritative DNS server), `relay` (relay assignment and failover), `placement`
//   (where storage replicas go), `repair_watch` (repairing failing replicas on its own);
// - HTTP and WebSocket: `api`;
// - wiring: this file and `dev`.
pub mod access;
pub mod agent;
pub mod api;
pub mod attestation;
pub mod auth;
pub mod bundles;
pub mod catalog;
pub mod chain;
pub mod clock;
pub mod config;
pub mod console;
pub mod dev;
pub mod dns;
pub mod ingress;
pub mod lifecycle;
pub mod marketplace;
pub mod metrics;
pub mod money;
pub mod placement;
pub mod profiles;
pub mod ratelimit;
pub mod reconcile;
pub mod relay;
pub mod repair;
pub mod repair_watch;
pub mod reputation;
pub mod reviews;
pub mod scheduler;
pub mod sla;
pub mod store;

pub use api::{AppState, app};
pub use config::{Args, Config, ConfigError};
pub use dev::OrchestratorService;
pub use store::{Store, StoreError};

use decloud_runtime::{LogFormat, Tasks};
use std::{future::IntoFuture as _, time::Duration};

/// The problem `/health` reports while anchoring passes fail.
const ANCHORING: &str = "anchoring";

/// Runs the server until SIGINT or SIGTERM: resolves the configuration, opens the store,
/// serves the API, then drains in-flight requests before returning.
pub async fn run(args: Args) -> eyre::Result<()> {
    let config = Config::resolve(&args, |k| std::env::var(k).ok())?;
    decloud_runtime::init_logging_with(
        None,
        if config.log_json {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
        access::LOG_PINNED,
    );
    // Listening before anything starts: a signal during startup also stops gracefully.
    let shutdown = decloud_runtime::shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let running = start(config, listener).await?;
    shutdown.await;
    running.stop().await
}

/// A running orchestrator: its server, chain follower, lifecycle driver and housekeeping tasks.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP server listens.
    pub addr: std::net::SocketAddr,
    /// Where the ingress domain's DNS server listens (UDP and TCP), with `[ingress] dns_listen`.
    pub dns_addr: Option<std::net::SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    follower: Option<Follower>,
    /// The lifecycle driver, the sign-in pruner and the anchoring loop: each stops between two
    /// passes, so no pass is cut in the middle of its writes.
    tasks: Tasks,
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

    /// Drains in-flight requests, stops the chain follower, lets the background tasks finish the
    /// pass they are in, and closes the store.
    pub async fn stop(self) -> eyre::Result<()> {
        let _ = self.stop.send(true);
        let served = self.server.await;
        if let Some(follower) = self.follower {
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
        self.tasks.stop().await;
        self.store.close().await;
        tracing::info!(target: "orchestrator", "stopped");
        served??;
        Ok(())
    }
}

/// Opens the store, recovers from a crash, loads the template catalog, starts following the chain
/// (when configured) and serves the API on `listener` until [`Running::stop`].
pub async fn start(config: Config, listener: tokio::net::TcpListener) -> eyre::Result<Running> {
    start_with_attestation_key(config, listener, None).await
}

/// [`start`], signing attestations with `key` when given instead of the key from
/// `DECLOUD_PRIVATE_KEY` or the configured keystore (for the local development network, whose
/// keys are anvil's public test keys).
pub async fn start_with_attestation_key(
    config: Config,
    listener: tokio::net::TcpListener,
    key: Option<alloy::signers::local::PrivateKeySigner>,
) -> eyre::Result<Running> {
    start_with_keys(config, listener, key, None).await
}

/// [`start_with_attestation_key`], repairing storage deals with `repair_key` when given instead
/// of the key from `DECLOUD_REPAIR_PRIVATE_KEY` or `[repair] key_file` (only read when the
/// configuration has a `[repair]` section).
pub async fn start_with_keys(
    config: Config,
    listener: tokio::net::TcpListener,
    key: Option<alloy::signers::local::PrivateKeySigner>,
    repair_key: Option<alloy::signers::local::PrivateKeySigner>,
) -> eyre::Result<Running> {
    // A repair key that cannot be loaded stops the start before anything else happens.
    let repair_desk = match &config.repair {
        Some(r) => Some(repair_setup(&config, r, repair_key).await?),
        None => None,
    };
    let mut store = Store::connect(&config.database_url).await?;
    // The attestation key is also the one LeaseEscrow's arbiter role is granted to.
    let mut arbiter_key = None;
    let anchorer = match &config.attestation {
        Some(a) => {
            let (attestor, anchorer, key) = attestation_setup(a, key).await?;
            arbiter_key = Some(key);
            tracing::info!(target: "orchestrator::attestation", signer = %attestor.address(), anchor = %attestor.anchor(), "attesting");
            store = store.with_attestor(attestor);
            Some((anchorer, a.clone()))
        }
        None => {
            tracing::warn!(target: "orchestrator::attestation", "no [attestation] section: actions are not attested");
            None
        }
    };
    if let Some((anchorer, _)) = &anchorer {
        // Before anything is attested: a rebuilt database continues the anchored log.
        anchorer.resume_from_chain(&store, clock::now()).await?;
    }
    let recovered = lifecycle::recover(&store).await?;
    if recovered > 0 {
        tracing::info!(target: "orchestrator::lifecycle", recovered, "applied acknowledgements left by a crash");
    }
    if let Some(dir) = &config.templates_dir {
        let loaded = catalog::load_dir(&store, dir, clock::now()).await?;
        tracing::info!(target: "orchestrator::catalog", loaded, dir = %dir.display(), "template catalog loaded");
    }
    let addr = listener.local_addr()?;
    tracing::info!(target: "orchestrator", listen = %addr, "serving");
    // Bound before anything runs, so a taken port stops the start with its reason.
    let dns = match config.ingress.as_ref() {
        Some(ingress) => match ingress.dns_listen {
            Some(listen) => Some((
                dns::Zone::new(ingress)?,
                dns::Listeners::bind(listen)
                    .await
                    .map_err(|e| eyre::eyre!("[ingress] dns_listen {listen}: {e}"))?,
            )),
            None => None,
        },
        None => None,
    };
    let state = AppState::new(store.clone(), config)?;
    if let Some(desk) = repair_desk {
        tracing::info!(target: "orchestrator::repair", repairer = %desk.repairer().address(), market = %desk.market(), "repairing storage deals that name this repairer");
        state.set_repair(desk);
    }
    if let Some(c) = &state.config().content {
        state.set_content(bundles::open(c).await?);
    }

    let mut tasks = Tasks::new();
    let mut dns_addr = None;
    if let Some((zone, listeners)) = dns {
        let listening = listeners.local_addr()?;
        dns_addr = Some(listening);
        tracing::info!(target: "orchestrator::dns", listen = %listening, domain = %state.config().ingress.as_ref().map(|i| i.domain.as_str()).unwrap_or_default(), "serving the ingress domain's DNS (udp and tcp)");
        let store = store.clone();
        tasks.spawn("dns server", move |stop| {
            dns::serve(store, zone, listeners, stop)
        });
    }
    // Used nonces and dead sessions are only clutter; clear them out every ten minutes.
    {
        let store = store.clone();
        tasks.every("auth pruner", Duration::from_secs(600), move || {
            let store = store.clone();
            async move {
                match store.prune_auth(clock::now()).await {
                    Ok(n) => {
                        tracing::debug!(target: "orchestrator::auth", pruned = n, "pruned sign-in state")
                    }
                    Err(e) => {
                        tracing::warn!(target: "orchestrator::auth", error = %e, "pruning sign-in state failed")
                    }
                }
            }
        });
    }
    // Relays: assignments, publications and failover follow the heartbeats.
    {
        let state = state.clone();
        let memory = relay::RelayMemory::default();
        tasks.every("relays", Duration::from_secs(2), move || {
            let (state, memory) = (state.clone(), memory.clone());
            async move {
                let config = state.config();
                if let Err(e) = relay::pass(
                    state.store(),
                    state.agents(),
                    config.ingress.as_ref(),
                    &config.relays,
                    &memory,
                    clock::now(),
                )
                .await
                {
                    tracing::warn!(target: "orchestrator::relay", error = %e, "relay pass failed; retrying on the next");
                }
            }
        });
    }
    // The repair watcher: failing replicas of the deals registered here are rebuilt elsewhere.
    if let (Some(desk), Some(r)) = (state.repair().cloned(), state.config().repair.clone()) {
        let watcher = std::sync::Arc::new(repair_watch::RepairWatcher::new(
            desk,
            store.clone(),
            (&r).into(),
        ));
        tasks.every(
            "storage repair",
            Duration::from_secs(r.watch_interval_secs),
            move || {
                let watcher = watcher.clone();
                async move {
                    match watcher.pass(clock::now()).await {
                        Ok(s) if s != Default::default() => {
                            tracing::info!(target: "orchestrator::repair", opened = s.opened, repaired = s.repaired, failed = s.failed, "repair pass")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(target: "orchestrator::repair", error = %e, "repair pass failed; retrying")
                        }
                    }
                }
            },
        );
    }
    if let Some((anchorer, a)) = anchorer {
        let store = store.clone();
        let anchorer = std::sync::Arc::new(anchorer);
        let health = state.clone();
        // Sealing is cheap; checking every few seconds keeps the interval honest.
        tasks.every("anchoring", Duration::from_secs(2), move || {
            let (store, anchorer, health) = (store.clone(), anchorer.clone(), health.clone());
            let (batch_size, batch_interval_secs) = (a.batch_size, a.batch_interval_secs);
            async move {
                match attestation::pass(&store, &anchorer, batch_size, batch_interval_secs, clock::now()).await {
                    Ok(_) => health.set_problem(ANCHORING, None),
                    Err(e) => {
                        tracing::warn!(target: "orchestrator::attestation", error = %e, "anchoring pass failed; retrying");
                        // /health says degraded until a pass succeeds again.
                        health.set_problem(ANCHORING, Some(format!("anchoring: {e}")));
                    }
                }
            }
        });
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = match state.config().chain.clone() {
        Some(chain) => {
            Some(spawn_chain(&state, chain, arbiter_key, stopped.clone(), &mut tasks).await?)
        }
        None => None,
    };
    let mut server_stopped = stopped;
    let server = tokio::spawn(
        axum::serve(
            // hyper's own refusals (a URI too long to parse) in the API's error shape; tap_io
            // keeps the peer address for ConnectInfo.
            axum::serve::ListenerExt::tap_io(api::ApiListener(listener), |_| ()),
            app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = server_stopped.wait_for(|stop| *stop).await;
        })
        .into_future(),
    );
    Ok(Running {
        addr,
        dns_addr,
        stop,
        server,
        follower,
        tasks,
        store,
    })
}

/// Loads the attestation key (environment or keystore, never a flag), learns the chain id and
/// prepares the anchorer. Returns the key too.
async fn attestation_setup(
    a: &config::AttestationConfig,
    key: Option<alloy::signers::local::PrivateKeySigner>,
) -> eyre::Result<(
    attestation::Attestor,
    attestation::Anchorer,
    alloy::signers::local::PrivateKeySigner,
)> {
    use alloy::providers::Provider;
    let key = match key {
        Some(key) => key,
        None => decloud_sdk::wallet::load_signer_with(
            a.keystore.as_deref(),
            |k| std::env::var(k).ok(),
            || {
                Err(decloud_sdk::wallet::WalletError::Prompt(
                    std::io::Error::other("a server does not prompt"),
                ))
            },
        )?,
    };
    let provider = decloud_sdk::tx::signing_provider(a.rpc_url.parse()?, key.clone());
    let chain_id = provider.get_chain_id().await?;
    let anchor: alloy::primitives::Address = a.anchor.parse()?;
    Ok((
        attestation::Attestor::new(key.clone(), chain_id, anchor),
        attestation::Anchorer {
            provider,
            anchor,
            confirm_timeout: Duration::from_secs(a.confirm_timeout_secs),
        },
        key,
    ))
}

/// Loads the repair key and builds the repair desk over `[chain]`'s StorageMarket.
async fn repair_setup(
    config: &Config,
    r: &config::RepairConfig,
    key: Option<alloy::signers::local::PrivateKeySigner>,
) -> eyre::Result<repair::RepairDesk> {
    use alloy::providers::Provider;
    let chain = config
        .chain
        .as_ref()
        .ok_or_else(|| eyre::eyre!("[repair] needs a [chain] section"))?;
    let market = chain
        .storage_market
        .as_deref()
        .ok_or_else(|| eyre::eyre!("[repair] needs [chain] storage_market"))?
        .parse()?;
    let key = match key {
        Some(key) => key,
        None => repair::load_repair_key(r.key_file.as_deref(), |k| std::env::var(k).ok())?,
    };
    let provider = decloud_sdk::tx::signing_provider(chain.rpc_url.parse()?, key.clone());
    let chain_id = provider.get_chain_id().await?;
    Ok(repair::RepairDesk::new(repair::Repairer::new(
        provider, key, market, chain_id,
    )))
}

/// The chain follower's task; it stops at a committed range when told through its watch channel.
type Follower = tokio::task::JoinHandle<Result<(), decloud_indexer::FollowerError>>;

/// Starts the chain follower (lease and node events into the store) and, among `tasks`, the
/// lifecycle driver (acts on them after every batch and every 10 s, so failed side effects are
/// retried) and, with `arbiter_key`, the SLA terminations of silent nodes' leases.
async fn spawn_chain(
    state: &AppState,
    chain: config::ChainConfig,
    arbiter_key: Option<alloy::signers::local::PrivateKeySigner>,
    stopped: tokio::sync::watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> eyre::Result<Follower> {
    use alloy::providers::{Provider, ProviderBuilder};
    let committed = std::sync::Arc::new(tokio::sync::Notify::new());
    let markets = chain::Markets {
        template_market: chain
            .template_market
            .as_deref()
            .map(str::parse)
            .transpose()?,
        storage_market: chain
            .storage_market
            .as_deref()
            .map(str::parse)
            .transpose()?,
    };
    let handler = chain::ChainHandler::with_markets(
        chain.node_registry.parse()?,
        chain.lease_escrow.parse()?,
        markets,
        committed.clone(),
    );
    let provider = ProviderBuilder::new()
        .connect_http(chain.rpc_url.parse()?)
        .erased();
    let handler = match state.store().attestor() {
        Some(attestor) => handler.with_attestor(attestor.clone()),
        None => handler,
    };
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
        reconnect_grace_until: clock::now().saturating_add(chain.reconnect_grace_secs),
        ingress: state.config().ingress.clone(),
    };
    let arbiter = match arbiter_key {
        Some(key) => {
            let account = key.address();
            let arbiter = sla::Arbiter::new(
                chain.lease_escrow.parse()?,
                decloud_sdk::tx::signing_provider(chain.rpc_url.parse()?, key),
                chain.sla_window_secs,
            );
            match arbiter.holds_the_role(account).await {
                Ok(true) => Some(arbiter),
                Ok(false) => {
                    tracing::warn!(target: "orchestrator::sla", %account, "the attestation key does not hold LeaseEscrow's ARBITER_ROLE: leases of silent nodes are not terminated");
                    None
                }
                // The chain is not reachable now: try anyway, each pass reports its own error.
                Err(e) => {
                    tracing::warn!(target: "orchestrator::sla", error = %e, "cannot check ARBITER_ROLE; terminating leases of silent nodes regardless");
                    Some(arbiter)
                }
            }
        }
        None => {
            tracing::warn!(target: "orchestrator::sla", "no [attestation] key: leases of silent nodes are not terminated");
            None
        }
    };
    // Published bundles are fetched before the lifecycle pass of the same batch, so a lease on
    // a template published a block earlier finds it in the catalog.
    let content = state.content().cloned();
    let state = state.clone();
    let reported = state.agents().reported();
    tasks.spawn("lifecycle driver", move |stop| async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            let chain_or_clock = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                _ = committed.notified() => true,
                _ = tick.tick() => true,
                // A node reported what it runs (or disconnected): reconcile it.
                _ = reported.notified() => false,
            };
            // Not raced against the stop: a pass that has begun finishes its writes.
            if chain_or_clock
                && let Some(content) = &content
                && let Err(e) = bundles::pass(state.store(), content.as_ref(), clock::now()).await
            {
                tracing::warn!(target: "orchestrator::bundles", error = %e, "bundle fetch pass failed; retrying on the next");
            }
            if chain_or_clock
                && let Some(content) = &content
                && let Err(e) = profiles::pass(state.store(), content.as_ref(), clock::now()).await
            {
                tracing::warn!(target: "orchestrator::profiles", error = %e, "node profile pass failed; retrying on the next");
            }
            if chain_or_clock
                && let Err(e) = lifecycle::drive(state.store(), state.agents(), &workload).await
            {
                tracing::warn!(target: "orchestrator::lifecycle", error = %e, "lifecycle pass failed; retrying on the next");
            }
            reconcile::pass(state.store(), state.agents(), &workload).await;
            if chain_or_clock && let Some(arbiter) = &arbiter {
                let now = clock::now();
                match sla::pass(state.store(), state.agents(), arbiter, now, workload.reconnect_grace_until).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(target: "orchestrator::sla", terminated = n, "leases of silent nodes terminated"),
                    Err(e) => tracing::warn!(target: "orchestrator::sla", error = %e, "sla pass failed; retrying on the next"),
                }
            }
        }
    });
    Ok(follower)
}
