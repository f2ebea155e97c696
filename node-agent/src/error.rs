//! The agent's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the node agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing or malformed.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The node key file is unusable.
    #[error("node key {path}: {reason}")]
    NodeKey {
        /// Key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A VM spec was refused; nothing was created.
    #[error("invalid vm spec: {0}")]
    InvalidSpec(String),
    /// The VM does not exist on this node.
    #[error("no vm with id {0}")]
    UnknownVm(String),
    /// The host lacks capacity for the request; nothing was created.
    #[error("insufficient capacity: {0}")]
    Capacity(String),
    /// Caddy's admin API refused or failed a change of the ingress.
    #[error("ingress: {0}")]
    Ingress(String),
    /// A relay refused a node or an assignment, or the tunnel failed; nothing was changed by a
    /// refusal.
    #[error("relay: {0}")]
    Relay(String),
    /// libvirt refused an operation.
    #[error("libvirt: {0}")]
    Libvirt(String),
    /// An external tool (qemu-img, genisoimage) failed.
    #[error("{tool} failed: {message}")]
    Tool {
        /// Which tool.
        tool: &'static str,
        /// Its complaint.
        message: String,
    },
    /// The state database failed.
    #[error("state database: {0}")]
    Db(#[from] sqlx::Error),
    /// Stored state could not be decoded.
    #[error("corrupt stored state: {0}")]
    Corrupt(String),
    /// The orchestrator link failed.
    #[error("orchestrator link: {0}")]
    Link(String),
    /// The storage role failed.
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// A protocol helper failed.
    #[error(transparent)]
    Protocol(#[from] decloud_sdk::agent_protocol::ProtocolError),
}

impl From<virt::error::Error> for Error {
    fn from(e: virt::error::Error) -> Self {
        Self::Libvirt(e.message().to_owned())
    }
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Result with the agent's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
