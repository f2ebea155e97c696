//! Relays: how a node that cannot accept inbound connections gets public ports through a
//! relay node, and the vocabulary the orchestrator, the relay and the relayed node share.
//!
//! The relayed node dials the relay and holds a WireGuard tunnel to it. Its tunnel key (a
//! Curve25519 public key, [`TunnelKey`]) is bound to its node key (the key it authenticates
//! with, registered on-chain) by a [`TunnelBinding`]: an EIP-191 signature by the node key over
//! [`binding_message`], a domain-separated text naming the node id and the tunnel key. A relay
//! adds a node's tunnel key as a peer only when the orchestrator published that node to it
//! ([`RelayedNode`]) and the binding recovers to the node's registered key.
//!
//! The relay publishes each forwarded port of the node's VMs at a port of its own public
//! address ([`RelayForward`]), and each HTTPS ingress name of the node's VMs on its own Caddy
//! ([`RelayRoute`]); both carry the traffic through the tunnel to the node's own forward port,
//! where the node's DNAT to the guest applies as for any other client.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use alloy::{
    primitives::{Address, B256, Bytes, Signature},
    signers::SignerSync,
};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::agent_protocol::PortProtocol;

/// Bit of a node's on-chain capability flags (`NodeRegistry` `Capabilities.flags`) saying the
/// node offers to relay for nodes behind NAT.
pub const RELAY_FLAG: u32 = 8;

/// First line of every tunnel-key binding: separates it from any other signed text.
pub const BINDING_DOMAIN: &str = "DeCloud relay tunnel key binding";

/// Errors of the relay helpers.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A tunnel key is not 32 bytes of base64.
    #[error("tunnel key {0:?} is not 32 bytes of base64")]
    BadKey(String),
    /// A binding signature cannot be parsed or recovered.
    #[error("malformed tunnel-key binding signature: {0}")]
    MalformedSignature(String),
    /// A binding was signed by another key than the node's registered key.
    #[error(
        "tunnel key {key} is not bound to node {node_id}: signed by {recovered}, registered key is {registered}"
    )]
    NotBound {
        /// Node the binding claims.
        node_id: B256,
        /// The tunnel key.
        key: TunnelKey,
        /// Key registered for the node.
        registered: Address,
        /// Key that signed the binding.
        recovered: Address,
    },
    /// Signing failed.
    #[error("signing the tunnel-key binding: {0}")]
    Signing(String),
}

/// A WireGuard public key (Curve25519, 32 bytes); text form is standard base64, as `wg` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelKey(pub [u8; 32]);

impl fmt::Display for TunnelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for TunnelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TunnelKey({self})")
    }
}

impl FromStr for TunnelKey {
    type Err = RelayError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| RelayError::BadKey(s.to_owned()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| RelayError::BadKey(s.to_owned()))?;
        Ok(Self(bytes))
    }
}

impl Serialize for TunnelKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TunnelKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The text a node key signs (EIP-191 `personal_sign`) to bind a tunnel key to its node.
pub fn binding_message(node_id: B256, key: &TunnelKey) -> String {
    format!("{BINDING_DOMAIN}\nnode: {node_id}\ntunnel key: {key}")
}

/// A tunnel key with the node key's signature binding it to the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelBinding {
    /// The node's WireGuard public key.
    pub key: TunnelKey,
    /// 65-byte EIP-191 signature (r, s, v) of [`binding_message`] by the node key.
    pub signature: Bytes,
}

impl TunnelBinding {
    /// Binds `key` to `node_id` with the node key `signer`.
    pub fn sign<S: SignerSync>(
        signer: &S,
        node_id: B256,
        key: TunnelKey,
    ) -> Result<Self, RelayError> {
        let signature = signer
            .sign_message_sync(binding_message(node_id, &key).as_bytes())
            .map_err(|e| RelayError::Signing(e.to_string()))?;
        Ok(Self {
            key,
            signature: Bytes::from(signature.as_bytes().to_vec()),
        })
    }

    /// The address that signed the binding for `node_id`.
    pub fn signer(&self, node_id: B256) -> Result<Address, RelayError> {
        let signature = Signature::from_raw(&self.signature)
            .map_err(|e| RelayError::MalformedSignature(e.to_string()))?;
        signature
            .recover_address_from_msg(binding_message(node_id, &self.key).as_bytes())
            .map_err(|e| RelayError::MalformedSignature(e.to_string()))
    }

    /// Checks that the binding for `node_id` was signed by the node's `registered` key.
    pub fn verify(&self, node_id: B256, registered: Address) -> Result<(), RelayError> {
        let recovered = self.signer(node_id)?;
        if recovered != registered {
            return Err(RelayError::NotBound {
                node_id,
                key: self.key,
                registered,
                recovered,
            });
        }
        Ok(())
    }
}

/// What a relayed node needs to dial its relay (sent to the node by the orchestrator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayAssignment {
    /// Node id of the relay.
    pub relay_node_id: B256,
    /// `host:port` of the relay's WireGuard listener.
    pub endpoint: String,
    /// The relay's WireGuard public key.
    pub relay_key: TunnelKey,
    /// The relay's address inside the tunnel.
    pub relay_address: Ipv4Addr,
    /// The node's own address inside the tunnel.
    pub node_address: Ipv4Addr,
}

/// A forwarded port the relay publishes for a node's VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RelayForward {
    /// Protocol.
    pub protocol: PortProtocol,
    /// Port on the relay's public address.
    pub relay_port: u16,
    /// The node's own forward port (reached at the node's tunnel address).
    pub node_port: u16,
}

/// An HTTPS ingress name the relay serves for a node's VM.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RelayRoute {
    /// Host name, lowercase.
    pub host: String,
    /// The node's forward port of the guest's HTTP port (reached at the node's tunnel address).
    pub node_port: u16,
}

/// What the relay publishes for one VM of a relayed node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedVm {
    /// VM id.
    pub vm_id: String,
    /// Forwarded TCP and UDP ports.
    #[serde(default)]
    pub forwards: Vec<RelayForward>,
    /// HTTPS ingress names.
    #[serde(default)]
    pub routes: Vec<RelayRoute>,
}

/// A node the orchestrator assigned to a relay, with everything the relay publishes for it
/// (sent to the relay by the orchestrator; a later one for the same node replaces it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedNode {
    /// Node id.
    pub node_id: B256,
    /// The node key registered on-chain for the node.
    pub node_key: Address,
    /// The node's tunnel key and its binding to the node key.
    pub binding: TunnelBinding,
    /// The node's address inside the tunnel.
    pub tunnel_address: Ipv4Addr,
    /// Its VMs' published ports and names.
    #[serde(default)]
    pub vms: Vec<RelayedVm>,
}

/// Bytes a relay carried for one VM, since the relay started publishing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmTraffic {
    /// Node id.
    pub node_id: B256,
    /// VM id.
    pub vm_id: String,
    /// Bytes from clients towards the VM.
    pub bytes_in: u64,
    /// Bytes from the VM towards clients.
    pub bytes_out: u64,
}

/// What a relay reports in its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayReport {
    /// The relay's WireGuard public key.
    pub key: TunnelKey,
    /// `host:port` nodes dial.
    pub endpoint: String,
    /// The relay's address inside the tunnel.
    pub tunnel_address: Ipv4Addr,
    /// Nodes published now.
    pub nodes: Vec<B256>,
    /// Bytes carried per VM of those nodes.
    pub traffic: Vec<VmTraffic>,
    /// Prefix length of the relay's tunnel subnet (the subnet of `tunnel_address`), from which
    /// the orchestrator gives relayed nodes their tunnel addresses.
    #[serde(default)]
    pub tunnel_prefix: Option<u8>,
    /// Public ports the relay gives relayed nodes' forwards.
    #[serde(default)]
    pub ports: Option<RelayPorts>,
}

/// A relay's range of public ports for relayed forwards, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayPorts {
    /// First port.
    pub first: u16,
    /// Last port.
    pub last: u16,
}

/// What a node that is, or may be, relayed reports in its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelReport {
    /// The node's tunnel key bound to its node key (what a relay needs to accept it).
    pub binding: TunnelBinding,
    /// The relay the node's tunnel goes to, while it has one.
    #[serde(default)]
    pub relay_node_id: Option<B256>,
    /// Unix seconds of the tunnel's last WireGuard handshake with the relay; absent without a
    /// tunnel or before the first.
    #[serde(default)]
    pub latest_handshake: Option<u64>,
}

#[cfg(test)]
mod tests {
    use alloy::signers::local::PrivateKeySigner;

    use super::*;

    #[test]
    fn tunnel_keys_round_trip_as_base64_and_refuse_other_lengths() {
        let key = TunnelKey([7; 32]);
        let text = key.to_string();
        assert_eq!(text.len(), 44);
        assert_eq!(text.parse::<TunnelKey>().unwrap(), key);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<TunnelKey>(&json).unwrap(), key);
        assert!(matches!(
            "AAAA".parse::<TunnelKey>(),
            Err(RelayError::BadKey(_))
        ));
        assert!("not base64!".parse::<TunnelKey>().is_err());
    }

    #[test]
    fn a_binding_verifies_only_for_its_node_key_node_and_tunnel_key() {
        let node_key = PrivateKeySigner::random();
        let node_id = B256::repeat_byte(1);
        let binding = TunnelBinding::sign(&node_key, node_id, TunnelKey([2; 32])).unwrap();
        binding.verify(node_id, node_key.address()).unwrap();

        let other = PrivateKeySigner::random();
        let err = binding.verify(node_id, other.address()).unwrap_err();
        assert!(
            matches!(&err, RelayError::NotBound { recovered, .. } if *recovered == node_key.address())
        );
        assert!(err.to_string().contains("is not bound to node"), "{err}");
        // The same signature for another node or another tunnel key recovers someone else.
        assert!(
            binding
                .verify(B256::repeat_byte(9), node_key.address())
                .is_err()
        );
        let swapped = TunnelBinding {
            key: TunnelKey([3; 32]),
            ..binding.clone()
        };
        assert!(swapped.verify(node_id, node_key.address()).is_err());
        let garbage = TunnelBinding {
            signature: Bytes::from(vec![1, 2, 3]),
            ..binding
        };
        assert!(matches!(
            garbage.verify(node_id, node_key.address()),
            Err(RelayError::MalformedSignature(_))
        ));
    }

    #[test]
    fn the_binding_message_is_domain_separated() {
        let text = binding_message(B256::ZERO, &TunnelKey([0; 32]));
        assert!(text.starts_with("DeCloud relay tunnel key binding\nnode: 0x"));
        assert!(text.ends_with("\ntunnel key: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
    }
}
