//! Drain mode: the node takes no new replicas and keeps proving the ones it holds until the
//! repairer has moved them.
//!
//! On when the configuration says `drain = true` in `[storage]`, or when the flag file
//! `<data_dir>/storage-draining` exists (`decloud-node-agent drain` writes it and `undrain` removes
//! it, so a running agent follows without a restart).

use std::path::{Path, PathBuf};

use super::StorageError;

/// Name of the drain flag file in the data directory.
pub const DRAIN_FLAG_FILE: &str = "storage-draining";

/// Whether the node is draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    forced: bool,
    flag: PathBuf,
}

impl Drain {
    /// Drain state of the node with this data directory; `forced` is the configuration's `drain`.
    pub fn new(data_dir: &Path, forced: bool) -> Self {
        Self {
            forced,
            flag: data_dir.join(DRAIN_FLAG_FILE),
        }
    }

    /// Whether the node is draining now.
    pub fn is_draining(&self) -> bool {
        self.forced || self.flag.exists()
    }

    /// Whether the configuration forces drain mode (then `undrain` cannot lift it).
    pub fn is_forced(&self) -> bool {
        self.forced
    }

    /// Turns the flag file on or off; returns whether it changed anything.
    pub fn set(&self, on: bool) -> Result<bool, StorageError> {
        let io = |action, e| StorageError::Io {
            action,
            path: self.flag.clone(),
            source: e,
        };
        match (on, self.flag.exists()) {
            (true, false) => {
                std::fs::write(&self.flag, b"draining\n").map_err(|e| io("writing", e))?;
                Ok(true)
            }
            (false, true) => {
                std::fs::remove_file(&self.flag).map_err(|e| io("removing", e))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_file_and_the_configuration_turn_drain_on() {
        let dir = tempfile::tempdir().unwrap();
        let drain = Drain::new(dir.path(), false);
        assert!(!drain.is_draining());
        assert!(drain.set(true).unwrap());
        assert!(drain.is_draining());
        assert!(!drain.set(true).unwrap());
        assert!(drain.set(false).unwrap());
        assert!(!drain.is_draining());
        assert!(!drain.set(false).unwrap());
        let forced = Drain::new(dir.path(), true);
        assert!(forced.is_draining() && forced.is_forced());
    }
}
