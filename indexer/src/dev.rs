//! The indexer as a service of the local development network (`decloud dev`): it follows the
//! chain the context's chain service started, from the deployment it recorded, into an SQLite file
//! and serves GraphQL on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;

use decloud_sdk::Error;
use decloud_sdk::dev::{BoxFuture, DevContext, DevService};
use tracing::{info, warn};

use crate::config::{Args, Config, FileConfig, deployment_contracts, network_defaults};
use crate::server::{Running, start};

/// Runs the indexer inside `decloud dev`. Needs a chain service before it in the service list.
#[derive(Debug)]
pub struct IndexerService {
    /// The SQLite file (or any database URL); a fresh file under the system temp dir by default.
    pub database_url: Option<String>,
    /// Where GraphQL listens (port 0 picks a free port).
    pub listen: SocketAddr,
    running: Option<Running>,
    temp: Option<PathBuf>,
}

impl Default for IndexerService {
    fn default() -> Self {
        Self {
            database_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            running: None,
            temp: None,
        }
    }
}

impl DevService for IndexerService {
    fn name(&self) -> &'static str {
        "indexer"
    }

    fn start<'a>(&'a mut self, ctx: &'a mut DevContext) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let tool = |e: &dyn std::fmt::Display| Error::Tool(format!("indexer: {e}"));
            let rpc = ctx
                .rpc_url
                .clone()
                .ok_or_else(|| tool(&"no chain is running (start the chain service first)"))?;
            let deployment = ctx
                .deployment
                .clone()
                .ok_or_else(|| tool(&"no deployment recorded by the chain service"))?;
            let database_url = match &self.database_url {
                Some(url) => url.clone(),
                None => {
                    let dir = std::env::temp_dir()
                        .join(format!("decloud-dev-indexer-{}", std::process::id()));
                    std::fs::create_dir_all(&dir).map_err(|e| tool(&e))?;
                    let url = format!("sqlite://{}", dir.join("index.db").display());
                    self.temp = Some(dir);
                    url
                }
            };
            let args = Args {
                database_url: Some(database_url),
                rpc_url: Some(rpc.to_string()),
                chain_id: Some(deployment.chain_id),
                listen: Some(self.listen),
                ..Args::default()
            };
            let file = FileConfig {
                contracts: Some(deployment_contracts(&deployment)),
                ..FileConfig::default()
            };
            let config = Config::merge(file, &args, network_defaults(deployment.chain_id))
                .map_err(|e| tool(&e))?;
            let contracts = config.contracts().map_err(|e| tool(&e))?;
            let running = start(&config, &contracts).await.map_err(|e| tool(&e))?;
            let url = running.graphql_url();
            info!(target: "indexer::dev", %url, "indexer is running");
            ctx.endpoints.push(("indexer (GraphQL)".into(), url));
            self.running = Some(running);
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(running) = self.running.take()
                && let Err(e) = running.stop().await
            {
                warn!(target: "indexer::dev", error = %e, "indexer stopped with an error");
            }
            if let Some(dir) = self.temp.take() {
                let _ = std::fs::remove_dir_all(dir);
            }
        })
    }
}
