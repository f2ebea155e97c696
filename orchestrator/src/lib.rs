//! DeCloud orchestrator: turns on-chain leases into VMs on the right nodes, keeps an honest
//! record of node reliability and serves tenants and operators through an HTTP API.
//!
//! It coordinates and never holds money.

pub mod reputation;
pub mod scheduler;
pub mod store;
