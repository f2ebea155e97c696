//! What every DeCloud binary (the indexer, the orchestrator, the node agent, the prover and the
//! `decloud` command line) does the same way, in one place:
//!
//! - [`init_logging`]: one environment variable, [`LOG_ENV`] (`DECLOUD_LOG`), in `RUST_LOG`'s
//!   filter syntax; text or JSON lines on stderr.
//! - [`config`]: one configuration resolver with one precedence, defaults → file →
//!   environment → flags.
//! - [`shutdown_signal`]: SIGINT or SIGTERM.
//! - [`Tasks`]: background loops stopped through a [`CancellationToken`] between two passes,
//!   never aborted in the middle of one (a write cut in half).

pub mod config;
mod logging;
mod shutdown;
mod tasks;

pub use logging::{LOG_ENV, LogFormat, LogFormatError, init_logging, init_logging_with};
pub use shutdown::shutdown_signal;
pub use tasks::Tasks;
pub use tokio_util::sync::CancellationToken;
