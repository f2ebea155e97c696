//! Error types of the indexer library.

/// A boxed error from a follower's handler.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the SQL store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names a backend other than SQLite or PostgreSQL.
    #[error("unsupported database url {0}: expected sqlite: or postgres:")]
    UnsupportedUrl(String),
    /// Connecting to the database failed.
    #[error("cannot connect to {url}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the migrations failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    /// A stored row could not be interpreted.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// Errors of the chain follower.
#[derive(Debug, thiserror::Error)]
pub enum FollowerError {
    /// The store failed.
    #[error("follower store failed")]
    Store(#[from] StoreError),
    /// A handler failed to process a batch of logs or to roll back.
    #[error("handler failed")]
    Handler(#[source] BoxError),
    /// The chain reorganised deeper than the configured reorg window: no stored block hash is still
    /// canonical, so the common ancestor cannot be found.
    #[error("reorg deeper than the reorg window of {window} blocks (cursor at block {cursor})")]
    ReorgTooDeep {
        /// The cursor's block.
        cursor: u64,
        /// The configured window.
        window: u64,
    },
    /// The RPC node returned something inconsistent, e.g. a block that does not exist below its head.
    #[error("inconsistent rpc answer: {0}")]
    Inconsistent(String),
}

impl From<sqlx::Error> for FollowerError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}
