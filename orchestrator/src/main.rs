//! `decloud-orchestrator`: the orchestrator server.

use clap::Parser;

#[tokio::main]
async fn main() -> eyre::Result<()> {
    decloud_orchestrator::run(decloud_orchestrator::Args::parse()).await
}
