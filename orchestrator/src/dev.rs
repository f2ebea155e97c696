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
    config::{AttestationConfig, ChainConfig, Config},
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
    /// The built web app (`web/dist`), served at the API's origin, if any.
    pub web_dir: Option<PathBuf>,
    running: Option<Running>,
    temp: Option<tempfile::TempDir>,
}

impl Default for OrchestratorService {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            templates_dir: None,
            web_dir: None,
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
                storage_market: Some(c.storage_market.address.to_string()),
                start_block: deployment.deploy_block,
                confirmations: 0,
                image: DEV_IMAGE.into(),
                grace_secs: 86_400,
                reconnect_grace_secs: 90,
                sla_window_secs: 1800,
            }),
            // Small, frequent batches, so attestations are verifiable on-chain within a minute.
            attestation: Some(AttestationConfig {
                rpc_url: rpc_url.to_string(),
                anchor: c.attestation_anchor.address.to_string(),
                keystore: None,
                batch_size: 16,
                batch_interval_secs: 30,
                confirm_timeout_secs: 60,
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
            // Attestations are signed by the account holding ANCHOR_ROLE (an anvil test key).
            let anchor_key = ctx
                .accounts
                .iter()
                .find(|a| a.address == deployment.roles.anchor)
                .map(|a| a.private_key.parse())
                .transpose()
                .map_err(|e| tool(&format!("anchor account key: {e}")))?;
            let mut config = config;
            if let (Some(dir), Some(deployment_path)) = (&self.web_dir, &ctx.deployment_path) {
                config.web = Some(crate::config::WebConfig {
                    dir: dir.clone(),
                    chain_id: deployment.chain_id,
                    rpc_url: rpc.to_string(),
                    indexer_url: ctx
                        .endpoints
                        .iter()
                        .find(|(name, _)| name == crate::config::INDEXER_ENDPOINT)
                        .map(|(_, url)| url.clone()),
                    walletconnect_project_id: None,
                    deployment: deployment_path.clone(),
                });
            }
            if anchor_key.is_none() {
                warn!(target: "orchestrator::dev", "no local account holds ANCHOR_ROLE: attestations are off");
                config.attestation = None;
            }
            // Bundles are fetched from a content store in the temp directory; the seeds are
            // stored there and published below.
            let content_dir = self
                .temp
                .as_ref()
                .expect("the temp directory was just made")
                .path()
                .join("content");
            config.content = Some(crate::config::ContentConfig {
                dir: Some(content_dir.clone()),
                ipfs_api: None,
            });
            // HTTP ports are named under the local ingress's domain, when one runs.
            if let Some(ingress) = &ctx.ingress {
                let https_port = ingress
                    .listen
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .ok_or_else(|| tool(&format!("ingress address {}", ingress.listen)))?;
                config.ingress = Some(crate::config::IngressConfig {
                    domain: ingress.domain.clone(),
                    https_port,
                    ..Default::default()
                });
            }
            // Storage deals are repaired with a fresh key, funded for gas by the deployer.
            let repair_key = alloy::signers::local::PrivateKeySigner::random();
            fund_repairer(&rpc, ctx, repair_key.address())
                .await
                .map_err(|e| tool(&format!("funding the repair key: {e}")))?;
            config.repair = Some(crate::config::RepairConfig::default());
            let running = crate::start_with_keys(config, listener, anchor_key, Some(repair_key))
                .await
                .map_err(|e| tool(&e))?;
            // The seed templates are published on-chain, so a newcomer can deploy one at once.
            let seeds = if let Some(dir) = &self.templates_dir {
                let author = ctx
                    .accounts
                    .get(SEED_AUTHOR_ACCOUNT)
                    .ok_or_else(|| tool(&"no funded account publishes the seed templates"))?;
                let key = author
                    .private_key
                    .parse()
                    .map_err(|e| tool(&format!("seed author key: {e}")))?;
                let published = match publish_seeds(
                    dir,
                    &content_dir,
                    &rpc,
                    key,
                    deployment.contracts.template_market.address,
                )
                .await
                {
                    Ok(published) => published,
                    Err(e) => {
                        // The service is not recorded as started: stop what runs.
                        if let Err(stop) = running.stop().await {
                            warn!(target: "orchestrator::dev", error = %stop, "orchestrator stopped with an error");
                        }
                        return Err(tool(&e));
                    }
                };
                info!(target: "orchestrator::dev", count = published.len(), author = %author.address, "seed templates published on TemplateMarket");
                published
            } else {
                Vec::new()
            };
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
            if self.web_dir.is_some() {
                ctx.endpoints
                    .push(("web app".into(), format!("http://{}/", running.addr)));
            }
            for (slug, id) in seeds {
                ctx.endpoints
                    .push((format!("template {slug}"), format!("template id {id}")));
            }
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

/// Gas the development repair key is given, in wei (10 ETH of anvil's).
const REPAIRER_FUNDS: u128 = 10_000_000_000_000_000_000;

/// Sends the repair key at `repairer` its gas money from the deployer's account.
async fn fund_repairer(
    rpc_url: &url::Url,
    ctx: &DevContext,
    repairer: alloy::primitives::Address,
) -> Result<(), String> {
    use alloy::{network::TransactionBuilder as _, providers::Provider as _};
    let deployer = ctx
        .accounts
        .get(SEED_AUTHOR_ACCOUNT)
        .ok_or("no funded account")?;
    let key: alloy::signers::local::PrivateKeySigner =
        deployer.private_key.parse().map_err(|e| format!("{e}"))?;
    let provider = decloud_sdk::tx::signing_provider(rpc_url.clone(), key);
    let tx = alloy::rpc::types::TransactionRequest::default()
        .with_to(repairer)
        .with_value(alloy::primitives::U256::from(REPAIRER_FUNDS));
    let receipt = provider
        .send_transaction(tx)
        .await
        .map_err(|e| e.to_string())?
        .get_receipt()
        .await
        .map_err(|e| e.to_string())?;
    if !receipt.status() {
        return Err(format!("transfer {} reverted", receipt.transaction_hash));
    }
    Ok(())
}

/// Which funded account publishes the seed templates (anvil's account index): the deployer's,
/// so the accounts a newcomer uses as tenant and operator stay untouched.
pub const SEED_AUTHOR_ACCOUNT: usize = 0;

/// Stores every bundle under `dir` in the embedded content store at `content_dir` (validated
/// first: an invalid bundle is never stored) and publishes it, free, on the TemplateMarket at
/// `market` from `author`. Returns each bundle's slug and template id, in slug order.
pub async fn publish_seeds(
    dir: &std::path::Path,
    content_dir: &std::path::Path,
    rpc_url: &url::Url,
    author: alloy::signers::local::PrivateKeySigner,
    market: alloy::primitives::Address,
) -> Result<Vec<(String, alloy::primitives::U256)>, String> {
    use decloud_sdk::{bindings::TemplateMarket, tx};
    use decloud_templates::{Bundle, Policy};

    let store = decloud_content::EmbeddedStore::open(content_dir)
        .await
        .map_err(|e| e.to_string())?;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    paths.sort();
    let provider = tx::signing_provider(rpc_url.clone(), author);
    let market = TemplateMarket::new(market, provider);
    let mut published = Vec::new();
    for path in paths {
        let bundle = Bundle::load_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cid = bundle
            .publish(&store, &Policy::default())
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let m = &bundle.manifest;
        let metadata =
            serde_json::json!({ "name": m.name, "slug": m.slug, "category": m.category })
                .to_string();
        let receipt = tx::send(
            "TemplateMarket",
            market.publish(cid.to_string(), alloy::primitives::U256::ZERO, metadata),
        )
        .await
        .map_err(|e| format!("publishing {}: {e}", m.slug))?;
        let id = receipt
            .decoded_log::<decloud_sdk::bindings::TemplateMarket::TemplatePublished>()
            .map(|log| log.data.templateId)
            .ok_or_else(|| format!("publishing {}: no TemplatePublished event", m.slug))?;
        published.push((m.slug.clone(), id));
    }
    Ok(published)
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{Address, TxHash};
    use decloud_sdk::deployments::{ContractDeployment, Contracts, Deployment, Roles};

    use super::*;

    fn at(byte: u8, block: u64) -> ContractDeployment {
        ContractDeployment {
            address: Address::repeat_byte(byte),
            tx_hash: TxHash::ZERO,
            block,
        }
    }

    #[test]
    fn config_follows_the_deployment_and_signs_in_on_the_real_port() {
        let deployment = Deployment {
            chain_id: 31337,
            network: Some("anvil".into()),
            deployer: Address::ZERO,
            usdc: Address::repeat_byte(9),
            deploy_block: 2,
            setup_txs: Vec::new(),
            roles: Roles {
                admin: Address::ZERO,
                treasury: Address::ZERO,
                arbiter: Address::ZERO,
                anchor: Address::ZERO,
                pauser: Address::ZERO,
            },
            contracts: Contracts {
                mock_usdc: Some(at(9, 1)),
                node_registry: at(1, 3),
                operator_staking: at(2, 4),
                template_market: at(3, 5),
                lease_escrow: at(4, 6),
                attestation_anchor: at(5, 7),
                groth16_verifier: at(6, 8),
                storage_market: at(7, 9),
            },
        };
        let listen = SocketAddr::from(([127, 0, 0, 1], 4321));
        let rpc: url::Url = "http://127.0.0.1:8545".parse().unwrap();
        let config =
            OrchestratorService::config(listen, "sqlite:x.db".into(), None, &rpc, &deployment);
        config.validate().unwrap();
        let chain = config.chain.as_ref().unwrap();
        assert_eq!(chain.rpc_url, rpc.to_string());
        assert_eq!(chain.node_registry, Address::repeat_byte(1).to_string());
        assert_eq!(chain.lease_escrow, Address::repeat_byte(4).to_string());
        assert_eq!(
            chain.template_market.as_deref(),
            Some(Address::repeat_byte(3).to_string().as_str())
        );
        assert_eq!(
            chain.storage_market.as_deref(),
            Some(Address::repeat_byte(7).to_string().as_str())
        );
        assert_eq!((chain.start_block, chain.confirmations), (2, 0));
        assert_eq!(chain.image, DEV_IMAGE);
        assert!(config.siwe.domains.contains(&"127.0.0.1:4321".to_string()));
        assert!(
            config
                .siwe
                .uris
                .contains(&"http://127.0.0.1:4321".to_string())
        );
        assert_eq!(config.siwe.chain_ids, vec![31337]);
    }
}
