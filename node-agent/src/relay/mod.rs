//! Relays for nodes behind NAT: the relay role ([`Relay`]) and the relayed node's tunnel
//! ([`Tunnel`]), both over WireGuard in user space (`wireguard-go`).

mod client;
mod server;
mod wg;

pub use client::{KEEPALIVE_SECS, TUNNEL_KEY_FILE, Tunnel, tunnel_binding};
pub use server::{RELAY_COMMENT_PREFIX, RELAY_KEY_FILE, Relay, RelayConfig};
pub use wg::{PeerStatus, TunnelKeys, WgInterface};
