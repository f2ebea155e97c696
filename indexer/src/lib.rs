//! DeCloud's indexer: rebuilds the public state of DeCloud's contracts from their events and serves
//! it over GraphQL.
//!
//! - [`Follower`] is the reorg-safe chain follower: it reads logs in adaptive ranges, stores its
//!   cursor together with a [`Handler`]'s writes in one transaction, keeps recent block hashes and
//!   rolls back to the common ancestor on a reorg. Other services run it with their own handler and
//!   cursor name.
//! - [`IndexerHandler`] stores every decoded event and derives the entities (nodes and their price
//!   history, stakes, escrow accounts, leases, claims, templates, purchases, anchors, storage deals
//!   with their replicas, epochs, proofs and payees) in SQLite or PostgreSQL through one portable
//!   schema.
//! - [`graphql`] serves them in The Graph's conventions; [`run`] wires everything into the
//!   `decloud-indexer` binary, [`start`] runs the same in-process, and [`IndexerService`] runs it as
//!   a service of the SDK's local development network (`decloud dev`).

mod config;
mod db;
mod dev;
mod error;
mod events;
mod follower;
pub mod graphql;
mod handler;
mod metrics;
pub mod schema;
mod server;
mod store;

pub use config::{
    Args, Config, ConfigError, ContractEntry, FileConfig, deployment_contracts, load_deployments,
    network_defaults, network_finality,
};
pub use db::{Backend, Database, redact};
pub use dev::IndexerService;
pub use error::{BoxError, FollowerError, StoreError};
pub use events::{
    ContractKind, DecodedLog, EventDecoder, IAttestationAnchor, ILeaseEscrow, INodeRegistry,
    IOperatorStaking, IStorageMarket, ITemplateMarket,
};
pub use follower::{
    BlockRef, Follower, FollowerConfig, Handler, LogBatch, Step, ensure_follower_schema,
    load_cursor,
};
pub use handler::{EventNotice, IndexerHandler};
pub use metrics::Metrics;
pub use schema::{Column, ColumnType, ENTITIES, EntityDef};
pub use server::{CURSOR, Running, app, run, start};
pub use store::{BIGINT_WIDTH, pad, unpad};
