//! The relayed side: a node that cannot accept inbound connections dials its relay and holds
//! a WireGuard tunnel to it. Traffic the relay sends through the tunnel arrives at the node's
//! tunnel address, where the node's own forwards (DNAT to the guest) apply; replies go back
//! through the tunnel because they are addressed to the relay's tunnel address.

use std::path::Path;

use alloy::primitives::B256;
use decloud_sdk::relay::{RelayAssignment, TunnelBinding, TunnelKey};
use tracing::info;

use super::wg::{PeerStatus, TunnelKeys, WgInterface};
use crate::{
    error::{Error, Result},
    identity::Identity,
};

/// The node's tunnel key's file in the data directory.
pub const TUNNEL_KEY_FILE: &str = "tunnel.key";

/// Seconds between keepalives to the relay: short enough to hold a NAT mapping open.
pub const KEEPALIVE_SECS: u16 = 25;

/// The node's tunnel key pair (made on first use) and its binding to the node key.
pub fn tunnel_binding(identity: &Identity, data_dir: &Path) -> Result<(TunnelKeys, TunnelBinding)> {
    let keys = TunnelKeys::load_or_create(&data_dir.join(TUNNEL_KEY_FILE))?;
    let binding = TunnelBinding::sign(&identity.signer, identity.node_id, keys.public)
        .map_err(|e| Error::Relay(e.to_string()))?;
    Ok((keys, binding))
}

/// A tunnel to a relay, closed when dropped.
#[derive(Debug)]
pub struct Tunnel {
    interface: WgInterface,
    assignment: RelayAssignment,
}

impl Tunnel {
    /// Brings up interface `dct<tag[..8]>` with the node's tunnel address and dials the relay.
    pub fn join(tag: &str, keys: &TunnelKeys, assignment: RelayAssignment) -> Result<Self> {
        if assignment.node_address == assignment.relay_address {
            return Err(Error::Relay(format!(
                "relay and node cannot share the tunnel address {}",
                assignment.node_address
            )));
        }
        let short = &tag[..tag.len().min(8)];
        let interface = WgInterface::up(
            &format!("dct{short}"),
            keys,
            None,
            assignment.node_address,
            32,
        )?;
        let relay = format!("{}/32", assignment.relay_address);
        interface.route(&relay)?;
        interface.set_peer(
            &assignment.relay_key,
            &relay,
            Some(&assignment.endpoint),
            Some(KEEPALIVE_SECS),
        )?;
        info!(target: "agent::relay", relay = %assignment.relay_node_id, endpoint = %assignment.endpoint, address = %assignment.node_address, "tunnel to relay up");
        Ok(Self {
            interface,
            assignment,
        })
    }

    /// The assignment the tunnel follows.
    pub fn assignment(&self) -> &RelayAssignment {
        &self.assignment
    }

    /// The relay's node id.
    pub fn relay(&self) -> B256 {
        self.assignment.relay_node_id
    }

    /// The WireGuard interface's name.
    pub fn interface(&self) -> &str {
        self.interface.name()
    }

    /// The relay as WireGuard sees it (last handshake, bytes).
    pub fn status(&self) -> Result<Option<PeerStatus>> {
        let key: TunnelKey = self.assignment.relay_key;
        Ok(self.interface.peers()?.into_iter().find(|p| p.key == key))
    }
}
