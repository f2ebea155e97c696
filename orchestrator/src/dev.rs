//! The orchestrator as a service of the local development network (`decloud dev`): it follows the
//! chain the context's chain service started, from the deployment it recorded, keeps its state in
//! SQLite under a fresh temp directory and serves the API on loopback.

use std::{net::SocketAddr, path::PathBuf};

use decloud_sdk::{
    Error,
    dev::{BoxFuture, DevContext, DevService},
};
use tracing::{info, warn};

use crate::{
    Running,
    config::{ChainConfig, Config},
};

/// Name of the base image the local network's VMs boot; the node agent service offers an image
/// under this name.
pub const DEV_IMAGE: &str = "debian-12";

/// Runs the orchestrator inside `decloud dev`. Needs a chain service before it in the service list.
#[derive(Debug)]
pub struct OrchestratorService {
    /// Where the API listens (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory of template bundles loaded into the catalog, if any.
    pub templates_dir: Option<PathBuf>,
    running: Option<Running>,
    temp: Option<tempfile::TempDir>,
}

impl Default for OrchestratorService {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            templates_dir: None,
            running: None,
            temp: None,
        }
    }
}

impl OrchestratorService {
    /// The configuration for a chain at `rpc_url` with `deployment`, listening on `listen`:
    /// every event acted on at once (anvil does not reorganise), sign-in accepted for the
    /// address the API really listens on.
    pub fn config(
        listen: SocketAddr,
        database_url: String,
        templates_dir: Option<PathBuf>,
        rpc_url: &url::Url,
        deployment: &decloud_sdk::deployments::Deployment,
    ) -> Config {
        let c = &deployment.contracts;
        let mut config = Config {
            listen,
            database_url,
            templates_dir,
            chain: Some(ChainConfig {
                rpc_url: rpc_url.to_string(),
                node_registry: c.node_registry.address.to_string(),
                lease_escrow: c.lease_escrow.address.to_string(),
                template_market: Some(c.template_market.address.to_string()),
                start_block: c.node_registry.block.min(c.lease_escrow.block),
                confirmations: 0,
                image: DEV_IMAGE.into(),
                grace_secs: 86_400,
            }),
            ..Config::default()
        };
        let port = listen.port();
        config.siwe.domains = vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")];
        config.siwe.uris = vec![
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
        ];
        config.siwe.chain_ids = vec![deployment.chain_id];
        config
    }
}

impl DevService for OrchestratorService {
    fn name(&self) -> &'static str {
        "orchestrator"
    }

    fn start<'a>(&'a mut self, ctx: &'a mut DevContext) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let tool = |e: &dyn std::fmt::Display| Error::Tool(format!("orchestrator: {e}"));
            let rpc = ctx
                .rpc_url
                .clone()
                .ok_or_else(|| tool(&"no chain is running (start the chain service first)"))?;
            let deployment = ctx
                .deployment
                .clone()
                .ok_or_else(|| tool(&"no deployment recorded by the chain service"))?;
            // Bound first, so that a free port is known before the sign-in domains are set.
            let listener = tokio::net::TcpListener::bind(self.listen)
                .await
                .map_err(|e| tool(&format!("cannot listen on {}: {e}", self.listen)))?;
            let listen = listener.local_addr().map_err(|e| tool(&e))?;
            let temp = tempfile::Builder::new()
                .prefix("decloud-dev-orchestrator-")
                .tempdir()
                .map_err(|e| tool(&e))?;
            let database_url = format!("sqlite:{}", temp.path().join("orchestrator.db").display());
            self.temp = Some(temp);
            let config = Self::config(
                listen,
                database_url,
                self.templates_dir.clone(),
                &rpc,
                &deployment,
            );
            let running = crate::start(config, listener).await.map_err(|e| tool(&e))?;
            let api = running.api_url();
            let ws = running.agent_ws_url();
            info!(target: "orchestrator::dev", %api, "orchestrator is running");
            ctx.endpoints
                .push(("orchestrator (HTTP API)".into(), api.clone()));
            ctx.endpoints.push((
                "orchestrator (OpenAPI)".into(),
                format!("{api}/openapi.json"),
            ));
            ctx.endpoints
                .push(("orchestrator (agent WS)".into(), ws.clone()));
            ctx.agent_ws_url = Some(ws.parse().map_err(|e| tool(&e))?);
            self.running = Some(running);
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(running) = self.running.take()
                && let Err(e) = running.stop().await
            {
                warn!(target: "orchestrator::dev", error = %e, "orchestrator stopped with an error");
            }
            // Dropping the directory removes the database.
            self.temp.take();
        })
    }
}
