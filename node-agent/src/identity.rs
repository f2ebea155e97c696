//! The node's identity: a secp256k1 key kept in the data directory and the node id derived
//! from the machine id and the operator address.

use std::{
    fs::OpenOptions,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use alloy::{
    primitives::{Address, B256},
    signers::local::PrivateKeySigner,
};
use decloud_sdk::agent_protocol;

use crate::{
    config::Config,
    error::{Error, Result},
};

/// File name of the node key in the data directory.
pub const KEY_FILE: &str = "node.key";

/// The node's key and ids.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Node key; signs the orchestrator's challenges.
    pub signer: PrivateKeySigner,
    /// keccak256 of the machine id text.
    pub machine_id: B256,
    /// Operator address.
    pub operator: Address,
    /// keccak256(machine id, operator), the on-chain node id.
    pub node_id: B256,
    /// Where the key lives.
    pub key_path: PathBuf,
}

impl Identity {
    /// Loads the node key, creating it (mode 0600) on first start, and derives the node id.
    pub fn load_or_create(config: &Config) -> Result<(Self, bool)> {
        let operator = config.operator()?;
        let machine_text = match &config.machine_id {
            Some(text) => text.clone(),
            None => std::fs::read_to_string("/etc/machine-id")
                .map_err(|e| Error::io("reading", "/etc/machine-id", e))?,
        };
        if machine_text.trim().is_empty() {
            return Err(Error::Config("machine id is empty".into()));
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| Error::io("creating", &config.data_dir, e))?;
        let key_path = config.data_dir.join(KEY_FILE);
        let (signer, created) = load_or_create_key(&key_path)?;
        let machine_id = agent_protocol::machine_id(&machine_text);
        Ok((
            Self {
                node_id: agent_protocol::node_id(machine_id, operator),
                machine_id,
                operator,
                signer,
                key_path,
            },
            created,
        ))
    }

    /// Address of the node key.
    pub fn address(&self) -> Address {
        self.signer.address()
    }
}

/// Reads the hex key at `path`, or writes a fresh random one with mode 0600.
pub fn load_or_create_key(path: &Path) -> Result<(PrivateKeySigner, bool)> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)
                .map_err(|e| Error::io("inspecting", path, e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(Error::NodeKey {
                    path: path.into(),
                    reason: format!("mode {:o} lets others read it; chmod 600 it", mode & 0o777),
                });
            }
            let bytes: B256 = text.trim().parse().map_err(|_| Error::NodeKey {
                path: path.into(),
                reason: "not a 32-byte hex key".into(),
            })?;
            let signer = PrivateKeySigner::from_bytes(&bytes).map_err(|e| Error::NodeKey {
                path: path.into(),
                reason: e.to_string(),
            })?;
            Ok((signer, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = PrivateKeySigner::random();
            // create_new: two agents starting at once must not overwrite each other's key.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| Error::io("creating", path, e))?;
            writeln!(file, "{}", signer.to_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io("writing", path, e))?;
            Ok((signer, true))
        }
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

/// The tag of a node in names shared with other nodes on one host (libvirt domain names,
/// rule comments, reservation and shaping device names): the first 8 bytes of its id in hex.
pub fn node_tag(node_id: &alloy::primitives::B256) -> String {
    hex::encode(&node_id[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigLayer;

    #[test]
    fn key_is_created_once_with_mode_0600_and_node_id_is_derived() {
        let dir = tempfile::tempdir().unwrap();
        let layer = ConfigLayer {
            data_dir: Some(dir.path().into()),
            machine_id: Some("machine-a\n".into()),
            operator: Some(Address::repeat_byte(5)),
            ..Default::default()
        };
        let config = Config::resolve(None, layer, ConfigLayer::default()).unwrap();
        let (first, created) = Identity::load_or_create(&config).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&first.key_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (second, created) = Identity::load_or_create(&config).unwrap();
        assert!(!created);
        assert_eq!(first.address(), second.address());
        assert_eq!(
            first.node_id,
            agent_protocol::node_id(
                alloy::primitives::keccak256("machine-a"),
                Address::repeat_byte(5)
            )
        );

        std::fs::set_permissions(&first.key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Identity::load_or_create(&config),
            Err(Error::NodeKey { .. })
        ));
    }
}
