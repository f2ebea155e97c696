//! `decloud-indexer`: follows DeCloud's contracts and serves their state over GraphQL.

use clap::Parser;

#[tokio::main]
async fn main() -> eyre::Result<()> {
    decloud_indexer::run(decloud_indexer::Args::parse()).await
}
