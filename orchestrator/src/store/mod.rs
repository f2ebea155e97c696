//! Persistent state: SQLite by default, PostgreSQL when the URL says so, through one set of
//! migrations and one set of queries (sqlx's `Any` driver, with SQL both databases accept).
//!
//! Every write that must not be half-done runs in a transaction; heartbeats use optimistic
//! concurrency so several orchestrator replicas can share one PostgreSQL database.
//!
//! This is the bottom layer of the orchestrator and holds every SQL statement of the crate, split
//! by domain: [`access`], [`nodes`], [`liveness`], [`leases`], [`vms`], [`commands`], [`sessions`],
//! [`templates`], [`drafts`], [`ingress`], [`profiles`], [`reviews`], [`repair`], [`storage`] and [`attestations`]. Functions that take an `AnyConnection` run inside a
//! caller's transaction (the chain follower's); the rest are methods of [`Store`]. It depends on
//! nothing above it: the services and the HTTP layer call it, never the reverse.

mod access;
mod attestations;
mod commands;
mod drafts;
mod ingress;
mod leases;
mod liveness;
mod nodes;
mod profiles;
mod readiness;
mod relays;
mod repair;
mod reviews;
mod sessions;
mod storage;
mod templates;
mod vms;

pub use access::{Profile, SealedCredentials, VmAccess};
pub use attestations::{Attestor, BatchRecord, append};
pub use commands::{AckRecorded, CommandRecord};
pub use drafts::DraftView;
pub use ingress::{IngressChange, IngressCommand, IngressName, NameHolder};
pub use leases::{LeaseFunding, LeaseOpened, LeaseRecord, SilentLease};
pub use liveness::{DailyFailures, Liveness, Reputation};
pub use nodes::{NodeCapabilities, NodeRecord, NodeRegistration, NodeStatus};
pub use relays::RelayAssignmentRecord;
pub use repair::SealedRepairSecret;
pub use sessions::SessionRecord;
pub use storage::{ProofCounts, ProofCursor, StoredStorageReport};
pub use templates::{FetchState, Publication, TemplateRecord};
pub use vms::{RELEASED_VM_STATES, VmRecord};

/// Chain events into the tables they change, each inside the chain follower's transaction.
pub mod chain {
    pub use super::{
        leases::{lease_ended, lease_opened, lease_topped_up},
        nodes::{node_prices_set, node_registered, node_status_changed, node_updated},
        templates::template_published,
    };
}

use crate::scheduler::QualityTier;
use sqlx::{
    AnyPool, Row,
    any::{AnyPoolOptions, AnyRow},
};
use std::time::Duration;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or refused a query.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names a database this store does not support.
    #[error("unsupported database url (expected sqlite: or postgres:): {0}")]
    UnsupportedUrl(String),
    /// A referenced record does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A stored value cannot be read back as its type.
    #[error("corrupt stored value in {column}: {value}")]
    Corrupt {
        /// Column holding the value.
        column: &'static str,
        /// The value as stored.
        value: String,
    },
    /// A sign-in nonce cannot be used.
    #[error("nonce {0}")]
    Nonce(NonceProblem),
    /// An attestation of the change could not be made; the change was not stored.
    #[error("attestation failed: {0}")]
    Attestation(String),
}

/// Why a sign-in nonce was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NonceProblem {
    /// Never issued (or already pruned).
    #[error("was not issued by this server")]
    Unknown,
    /// Already consumed by an earlier sign-in.
    #[error("was already used")]
    Used,
    /// Issued more than its lifetime ago.
    #[error("has expired")]
    Expired,
}

/// Handle to the database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    sqlite: bool,
    attestor: Option<std::sync::Arc<Attestor>>,
}

fn u(row: &AnyRow, column: &'static str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(column)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        column,
        value: v.to_string(),
    })
}

fn i(v: u64) -> i64 {
    // Capacities and prices come from uint32/uint64 fields; values above i64::MAX are clamped
    // rather than wrapped so a hostile registration cannot turn into a negative capacity.
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn tier(row: &AnyRow) -> Result<QualityTier, StoreError> {
    let v: i64 = row.try_get("tier")?;
    u8::try_from(v)
        .ok()
        .and_then(|b| QualityTier::try_from(b).ok())
        .ok_or(StoreError::Corrupt {
            column: "tier",
            value: v.to_string(),
        })
}

/// A column holding the stable name of an enum (a status, a state).
fn named<T: std::str::FromStr>(row: &AnyRow, column: &'static str) -> Result<T, StoreError> {
    let v: String = row.try_get(column)?;
    v.parse()
        .map_err(|_| StoreError::Corrupt { column, value: v })
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies pending migrations.
    ///
    /// `sqlite:path` (or `sqlite::memory:`) and `postgres://…` are accepted.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        }
        let url = if sqlite && !url.contains("mode=") && !url.contains(":memory:") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_string()
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if sqlite {
            // An in-memory SQLite database lives in one connection; a file shares across many.
            options = options.max_connections(if url.contains(":memory:") { 1 } else { 8 });
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers work while a heartbeat writes.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(16);
        }
        let pool = options.connect(&url).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            sqlite,
            attestor: None,
        })
    }

    /// Starts a transaction that will write. SQLite cannot upgrade a read transaction to a write
    /// one while another connection writes (it fails at once with "database is locked"), so
    /// there the write lock is taken up front and waits under the busy timeout instead.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(self
            .pool
            .begin_with(if self.sqlite {
                "BEGIN IMMEDIATE"
            } else {
                "BEGIN"
            })
            .await?)
    }

    /// The same store, signing an attestation of every state change it makes with `attestor`
    /// (in the transaction of the change).
    pub fn with_attestor(mut self, attestor: Attestor) -> Self {
        self.attestor = Some(std::sync::Arc::new(attestor));
        self
    }

    /// The attestation key, when one is configured.
    pub fn attestor(&self) -> Option<&Attestor> {
        self.attestor.as_deref()
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The pool, as the chain follower's database handle.
    pub fn follower_database(&self) -> decloud_indexer::Database {
        let backend = if self.sqlite {
            decloud_indexer::Backend::Sqlite
        } else {
            decloud_indexer::Backend::Postgres
        };
        decloud_indexer::Database {
            pool: self.pool.clone(),
            backend,
        }
    }
}
