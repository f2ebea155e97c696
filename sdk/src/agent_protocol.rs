//! Wire protocol between a node agent and the orchestrator.
//!
//! # Transport
//!
//! The agent opens the only connection: one WebSocket from the agent to the orchestrator
//! (`ws://` or `wss://`), so nodes behind CGNAT or a firewall without inbound ports can
//! serve. Every frame is a UTF-8 text frame holding one JSON object. Agent-to-server frames
//! are [`AgentMessage`]s, server-to-agent frames are [`ServerMessage`]s; both are tagged by a
//! `"type"` field in `snake_case`.
//!
//! # Handshake
//!
//! ```text
//! agent                                     orchestrator
//!   | -- hello {node_id, address, version} --> |
//!   | <-- challenge {nonce, expires_at} ------ |   nonce: 32 random bytes, fresh per connection
//!   | -- auth {signature} -------------------> |   EIP-191 signature of auth_message(..)
//!   | <-- welcome {heartbeat_interval_secs} -- |   or `rejected {reason}` and close
//! ```
//!
//! The signed text is [`auth_message`]: a fixed domain line ([`AUTH_DOMAIN`]) followed by the
//! protocol version, node id, nonce and expiry, each on a labelled line. The fixed first line
//! keeps the signature from being replayable as any other EIP-191 message (a SIWE login, a
//! template signature); the nonce binds it to one connection and the server-chosen expiry
//! bounds how long a captured signature is useful. The server checks the recovered address
//! against the node key registered on-chain for `node_id` ([`verify_auth`] does everything
//! but the registry lookup).
//!
//! # Session
//!
//! After `welcome` the agent sends a [`Heartbeat`] at once and then every
//! `heartbeat_interval_secs` (15 s by default): resources, free capacity, readiness and the
//! state of every VM, plus the [`VmEvent`]s that happened since the last heartbeat that got
//! through, including those that happened while the agent was disconnected.
//!
//! The server sends [`Command`]s at any time. Each has a server-chosen `id`; the agent
//! answers each with exactly one [`Ack`] carrying that id. Commands are idempotent by id: an
//! agent that receives an id it has already executed does not execute it again, it repeats
//! the stored acknowledgement. So the server may resend any command whose ack it has not
//! seen (after a reconnect, say) without risk of a second VM. Acks of commands that finished
//! while the link was down are sent right after the next `welcome`.
//!
//! Either side may close the socket at any time; the agent reconnects with exponential
//! backoff and performs the handshake again.
//!
//! # Console
//!
//! A VM's serial console rides on the same link, so it works behind NAT too. The server opens
//! a session with [`ServerMessage::ConsoleOpen`] (a server-chosen session id and the VM), sends
//! the tenant's keystrokes in [`ServerMessage::ConsoleInput`] and ends it with
//! [`ServerMessage::ConsoleClose`]. The agent sends what the guest prints in
//! [`AgentMessage::ConsoleOutput`] and reports the end of a session, whoever ended it, with
//! exactly one [`AgentMessage::ConsoleClosed`]. Data is raw bytes, at most
//! [`CONSOLE_CHUNK_BYTES`] per frame. One session per VM at a time: a newer `console_open` for
//! the same VM replaces the older session, which is closed with a reason. Console frames are
//! not commands: they are neither stored nor acknowledged nor resent, and a session does not
//! survive a reconnect (the agent drops every session when its link goes down).
//!
//! # Relays
//!
//! A node that cannot accept inbound connections is told to dial a relay with
//! [`CommandAction::JoinRelay`]; the relay is told to accept it and publish its VMs with
//! [`CommandAction::PublishNode`] (see [`crate::relay`] for the tunnel-key binding the relay
//! checks). Heartbeats carry the relay's report ([`Heartbeat::relay`]: key, endpoint, published
//! nodes, bytes per VM) and the relayed node's ([`Heartbeat::tunnel`]: its binding and tunnel).

use std::fmt;

use alloy::{
    primitives::{Address, B256, Bytes, Signature, keccak256},
    signers::SignerSync,
};
use serde::{Deserialize, Serialize};

/// Version of this protocol; sent in [`Hello`] and signed in [`auth_message`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Default seconds between two heartbeats.
pub const HEARTBEAT_INTERVAL_SECS: u64 = 15;

/// Largest payload of one console frame; larger input or output is split.
pub const CONSOLE_CHUNK_BYTES: usize = 4096;

/// First line of every authentication message: separates it from any other signed text.
pub const AUTH_DOMAIN: &str = "DeCloud node agent authentication";

/// Errors of the protocol helpers.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The challenge expired before the signature was checked.
    #[error("challenge expired at {expires_at}, now is {now}")]
    ChallengeExpired {
        /// Expiry in the challenge (unix seconds).
        expires_at: u64,
        /// Time of the check (unix seconds).
        now: u64,
    },
    /// The signature bytes are not a valid 65-byte secp256k1 signature.
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    /// The signature is valid but made by another key than the one announced.
    #[error("signature is by {recovered}, expected {expected}")]
    WrongSigner {
        /// Address announced in [`Hello`].
        expected: Address,
        /// Address recovered from the signature.
        recovered: Address,
    },
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// A frame could not be decoded.
    #[error("malformed message: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Machine id as the registry expects it: keccak256 of the trimmed machine id text
/// (for example the contents of `/etc/machine-id`).
pub fn machine_id(text: &str) -> B256 {
    keccak256(text.trim().as_bytes())
}

/// Node id: `keccak256(abi.encodePacked(bytes32 machineId, address operator))`.
pub fn node_id(machine_id: B256, operator: Address) -> B256 {
    let mut packed = [0u8; 52];
    packed[..32].copy_from_slice(machine_id.as_slice());
    packed[32..].copy_from_slice(operator.as_slice());
    keccak256(packed)
}

/// The text an agent signs (EIP-191 `personal_sign`) to answer a challenge.
pub fn auth_message(node_id: B256, nonce: B256, expires_at: u64) -> String {
    format!(
        "{AUTH_DOMAIN}\nversion: {PROTOCOL_VERSION}\nnode: {node_id}\nnonce: {nonce}\nexpires: {expires_at}"
    )
}

/// Signs a challenge for `node_id` with the node key.
pub fn sign_challenge<S: SignerSync>(
    signer: &S,
    node_id: B256,
    challenge: &Challenge,
) -> Result<Auth, ProtocolError> {
    let message = auth_message(node_id, challenge.nonce, challenge.expires_at);
    let signature = signer
        .sign_message_sync(message.as_bytes())
        .map_err(|e| ProtocolError::Signing(e.to_string()))?;
    Ok(Auth {
        signature: Bytes::from(signature.as_bytes().to_vec()),
    })
}

/// Server side of the handshake: checks that `auth` signs `challenge` for the node announced
/// in `hello`, by the key announced in `hello`, before the expiry. Returns the signer.
///
/// The caller must still check that `hello.address` is the node key registered for
/// `hello.node_id`, and that the nonce was issued on this connection.
pub fn verify_auth(
    hello: &Hello,
    challenge: &Challenge,
    auth: &Auth,
    now: u64,
) -> Result<Address, ProtocolError> {
    if now > challenge.expires_at {
        return Err(ProtocolError::ChallengeExpired {
            expires_at: challenge.expires_at,
            now,
        });
    }
    let signature = Signature::from_raw(&auth.signature)
        .map_err(|e| ProtocolError::MalformedSignature(e.to_string()))?;
    let message = auth_message(hello.node_id, challenge.nonce, challenge.expires_at);
    let recovered = signature
        .recover_address_from_msg(message.as_bytes())
        .map_err(|e| ProtocolError::MalformedSignature(e.to_string()))?;
    if recovered != hello.address {
        return Err(ProtocolError::WrongSigner {
            expected: hello.address,
            recovered,
        });
    }
    Ok(recovered)
}

/// A frame from the agent to the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// First frame of a connection.
    Hello(Hello),
    /// Answer to a [`Challenge`].
    Auth(Auth),
    /// Periodic state report.
    Heartbeat(Box<Heartbeat>),
    /// Result of a [`Command`].
    Ack(Ack),
    /// Bytes the guest printed on the serial console of a session's VM.
    ConsoleOutput {
        /// Session id from [`ServerMessage::ConsoleOpen`].
        session: String,
        /// Raw bytes, at most [`CONSOLE_CHUNK_BYTES`].
        data: Bytes,
    },
    /// A console session ended (refused at open, closed by the server, replaced by a newer
    /// session, the VM stopped, or the agent could not keep up with the guest's output).
    ConsoleClosed {
        /// Session id from [`ServerMessage::ConsoleOpen`].
        session: String,
        /// Why, for the tenant.
        reason: String,
    },
}

/// A frame from the orchestrator to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Nonce to sign.
    Challenge(Challenge),
    /// Authentication accepted.
    Welcome(Welcome),
    /// Authentication refused or protocol violated; the server closes afterwards.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Work for the agent.
    Command(Command),
    /// Attach a new console session to a VM's serial console.
    ConsoleOpen {
        /// Server-chosen id naming the session in every later console frame.
        session: String,
        /// Which VM.
        vm_id: String,
    },
    /// Bytes the tenant typed, for the guest's serial console.
    ConsoleInput {
        /// Session id.
        session: String,
        /// Raw bytes, at most [`CONSOLE_CHUNK_BYTES`].
        data: Bytes,
    },
    /// The tenant left: end the session.
    ConsoleClose {
        /// Session id.
        session: String,
    },
}

impl AgentMessage {
    /// Encodes the frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("agent messages always serialize")
    }

    /// Decodes a JSON text frame.
    pub fn from_json(text: &str) -> Result<Self, ProtocolError> {
        Ok(serde_json::from_str(text)?)
    }
}

impl ServerMessage {
    /// Encodes the frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }

    /// Decodes a JSON text frame.
    pub fn from_json(text: &str) -> Result<Self, ProtocolError> {
        Ok(serde_json::from_str(text)?)
    }
}

/// The agent introduces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the agent speaks ([`PROTOCOL_VERSION`]).
    pub protocol_version: u32,
    /// Node id as registered on-chain.
    pub node_id: B256,
    /// Address of the node key.
    pub address: Address,
    /// Agent software version, for operators' dashboards.
    pub agent_version: String,
}

/// A nonce the agent must sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Fresh random nonce.
    pub nonce: B256,
    /// Unix seconds after which the signature is refused.
    pub expires_at: u64,
}

/// The agent's answer to a [`Challenge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// 65-byte EIP-191 signature (r, s, v) of [`auth_message`].
    pub signature: Bytes,
}

/// Authentication accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Seconds between heartbeats the server expects.
    pub heartbeat_interval_secs: u64,
}

/// Work for the agent, identified by a server-chosen id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique id; a repeated id is acknowledged again, never executed again.
    pub id: String,
    /// What to do.
    pub action: CommandAction,
}

/// The actions a [`Command`] can ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CommandAction {
    /// Create a VM and start it.
    CreateVm {
        /// What to create.
        spec: VmSpec,
    },
    /// Start a stopped VM.
    StartVm {
        /// Which VM.
        vm_id: String,
    },
    /// Stop a VM gracefully, forcing it off after the agent's timeout.
    StopVm {
        /// Which VM.
        vm_id: String,
    },
    /// Power-cycle a VM: a graceful stop (forced after the agent's timeout), then a start.
    RebootVm {
        /// Which VM.
        vm_id: String,
    },
    /// Stop a VM and remove it with its disks.
    DeleteVm {
        /// Which VM.
        vm_id: String,
    },
    /// Replace the HTTPS routes of a VM the node has, whatever its state: they are served
    /// while it runs. Checked like a new spec's `ingress`; a refused list changes nothing.
    SetIngress {
        /// Which VM.
        vm_id: String,
        /// Its routes from now on (empty: none).
        routes: Vec<IngressRoute>,
    },
    /// Dial a relay and hold a WireGuard tunnel to it (a node that cannot accept inbound
    /// connections); replaces an earlier relay. The ack carries no VM.
    JoinRelay {
        /// The relay to dial.
        assignment: crate::relay::RelayAssignment,
    },
    /// Close the tunnel to the relay.
    LeaveRelay,
    /// To a relay: accept a node's tunnel and publish its VMs' ports and names (replaces what
    /// was published for that node). Refused, with nothing changed, when the node's tunnel
    /// key is not bound to its registered key.
    PublishNode {
        /// The node and what to publish.
        node: crate::relay::RelayedNode,
    },
    /// To a relay: remove a node's tunnel peer and everything published for it.
    UnpublishNode {
        /// Which node.
        node_id: B256,
    },
}

/// Result of a [`Command`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// Id of the command.
    pub command_id: String,
    /// What happened.
    pub outcome: AckOutcome,
}

/// The SHA-256 of a VM's user-data, as [`AckOutcome::Done`] reports it.
pub fn user_data_sha256(user_data: &str) -> B256 {
    use sha2::Digest as _;
    B256::from_slice(&sha2::Sha256::digest(user_data.as_bytes()))
}

/// Outcome of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AckOutcome {
    /// Done; the VM's state afterwards (absent after a delete).
    Done {
        /// The VM after the command.
        vm: Option<VmReport>,
        /// For a create: the SHA-256 of the user-data the VM was created with (see
        /// [`user_data_sha256`]). A create command's user-data can be put together again, with
        /// new passwords, when the orchestrator restarts before its acknowledgement; a node that
        /// had already run the earlier one answers with that one's outcome, and this says which
        /// user-data, and so which passwords, the VM holds. Absent for other commands.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_data_sha256: Option<B256>,
    },
    /// Refused or failed; nothing was changed by a refused command.
    Failed {
        /// Human-readable reason.
        error: String,
    },
}

pub use crate::types::{BandwidthTier, QualityTier};

impl QualityTier {
    /// Overcommit ratio as (vCPUs, physical cores): Dedicated 1:1, Standard 3:2,
    /// Balanced 2:1, Burstable 4:1.
    pub const fn overcommit(self) -> (u32, u32) {
        match self {
            Self::Dedicated => (1, 1),
            Self::Standard => (3, 2),
            Self::Balanced => (2, 1),
            Self::Burstable => (4, 1),
        }
    }

    /// Physical CPU share of one vCPU in thousandths of a core, rounded up so the host is
    /// never promised more than it has.
    pub const fn millicores_per_vcpu(self) -> u64 {
        let (vcpus, cores) = self.overcommit();
        // Round up: reserving slightly more than the exact share protects the host.
        (1000 * cores as u64).div_ceil(vcpus as u64)
    }
}

impl BandwidthTier {
    /// Limit in Mbit/s, `None` when unmetered.
    pub const fn mbps(self) -> Option<u32> {
        match self {
            Self::Basic => Some(10),
            Self::Standard => Some(50),
            Self::Performance => Some(200),
            Self::Unmetered => None,
        }
    }
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PortProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// A port the tenant's workload listens on inside the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PortSpec {
    /// Port inside the guest.
    pub guest: u16,
    /// Protocol.
    pub protocol: PortProtocol,
}

/// A guest port reachable from outside the node: `public` on the node's public address is
/// forwarded by the node's kernel to `guest` inside the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PortForward {
    /// Port inside the guest.
    pub guest: u16,
    /// Port on the node's public address.
    pub public: u16,
    /// Protocol.
    pub protocol: PortProtocol,
}

/// A check that tells when one service of a VM is ready for its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReadinessProbe {
    /// cloud-init reported that it finished (its final message on the serial console).
    CloudInit,
    /// A TCP connection to the guest port succeeds.
    Tcp {
        /// Guest port.
        port: u16,
    },
    /// An HTTP GET of `path` on the guest port answers with `expect_status`, or with any 2xx
    /// or 3xx status when none is given.
    Http {
        /// Guest port.
        port: u16,
        /// Request path, starting with `/`.
        path: String,
        /// The status that means ready (a service behind a login answers 401, say).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect_status: Option<u16>,
        /// Speak HTTPS. The certificate is the VM's own (usually self-signed), so it is not
        /// verified: the check asks whether the service answers, not who it is.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tls: bool,
    },
    /// A command run inside the guest by its QEMU guest agent (`guest-exec`) exits with 0.
    Exec {
        /// Program and arguments; the program is an absolute path in the guest.
        command: Vec<String>,
    },
}

impl ReadinessProbe {
    /// A short description of what the check looks at, for tenants
    /// (`http :443/ expects 401 (tls)`).
    pub fn describe(&self) -> String {
        match self {
            Self::CloudInit => "cloud-init finished".into(),
            Self::Tcp { port } => format!("tcp :{port}"),
            Self::Http {
                port,
                path,
                expect_status,
                tls,
            } => {
                let scheme = if *tls { "https" } else { "http" };
                match expect_status {
                    Some(status) => format!("{scheme} :{port}{path} expects {status}"),
                    None => format!("{scheme} :{port}{path} expects 2xx/3xx"),
                }
            }
            Self::Exec { command } => format!("exec {}", command.join(" ")),
        }
    }
}

/// Everything a node needs to create a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// VM id: 1 to 48 characters of `a-z`, `0-9` and `-`, unique on the node.
    pub id: String,
    /// Name of a base image the node offers.
    pub image: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Size of the VM's disk in GiB (at least the base image's size).
    pub disk_gib: u64,
    /// CPU quality tier.
    pub quality: QualityTier,
    /// Network bandwidth tier.
    pub bandwidth: BandwidthTier,
    /// GPUs passed through to the guest (whole PCI devices, from the lease).
    #[serde(default)]
    pub gpus: u32,
    /// Guest hostname; the VM id when absent.
    #[serde(default)]
    pub hostname: Option<String>,
    /// cloud-init user-data, passed to the guest unchanged.
    pub user_data: String,
    /// Ports the workload serves.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Checks that decide readiness; none means ready once running.
    #[serde(default)]
    pub readiness: Vec<ReadinessProbe>,
    /// HTTP and WebSocket ports served over HTTPS by the node's ingress, each at its own host
    /// name. Such a port needs no entry in `ports` (which would also forward it directly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRoute>,
}

/// A guest port served over HTTPS at a host name by the node's ingress: TLS ends at the
/// ingress, which passes requests (WebSocket upgrades included) to the guest in plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngressRoute {
    /// Fully qualified host name, lowercase, e.g. `web-3f2a.apps.example.org`.
    pub host: String,
    /// Port inside the guest that speaks HTTP.
    pub guest: u16,
}

/// Lifecycle state of a VM on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Accepted; disks and domain being prepared.
    Creating,
    /// The domain runs.
    Running,
    /// The domain is defined but not running.
    Stopped,
    /// The domain and its disks are gone.
    Deleted,
    /// The agent could not bring the VM to the state it should be in.
    Failed,
}

impl VmState {
    /// Stable lowercase name, as on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Deleted => "deleted",
            Self::Failed => "failed",
        }
    }

    /// Parses [`VmState::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "running" => Self::Running,
            "stopped" => Self::Stopped,
            "deleted" => Self::Deleted,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of one readiness probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The probe.
    pub probe: ReadinessProbe,
    /// Whether it passed at the last check.
    pub ok: bool,
    /// Why not, when it failed.
    #[serde(default)]
    pub detail: Option<String>,
    /// When the check ran, unix seconds (the agent's clock); absent when it has not run.
    #[serde(default)]
    pub checked_at: Option<u64>,
}

/// Readiness of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// All probes passed and the VM runs.
    pub ready: bool,
    /// Per-probe results.
    pub probes: Vec<ProbeResult>,
}

/// A VM as reported in heartbeats and acks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmReport {
    /// VM id.
    pub id: String,
    /// Current state.
    pub state: VmState,
    /// Readiness, as of the last probe round.
    pub readiness: Readiness,
    /// Guest IPv4 addresses known to the host.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Ports forwarded to the guest from the node's public address.
    #[serde(default)]
    pub forwards: Vec<PortForward>,
    /// Why the VM is failed, when it is.
    #[serde(default)]
    pub error: Option<String>,
}

/// A state change of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEvent {
    /// Monotonic sequence number on this node.
    pub seq: u64,
    /// VM id.
    pub vm_id: String,
    /// New state.
    pub state: VmState,
    /// Unix seconds.
    pub at: u64,
    /// Why, for failures and for changes the agent did not command itself.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A disk (filesystem) of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Block device name (`sda`, `nvme0n1`) or mount point.
    pub name: String,
    /// Size in bytes.
    pub total_bytes: u64,
    /// Whether the device is rotational (HDD).
    pub rotational: bool,
}

/// A GPU (PCI display controller) of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// PCI address, e.g. `0000:01:00.0`.
    pub pci_address: String,
    /// PCI vendor id, e.g. `0x10de`.
    pub vendor_id: String,
    /// PCI device id.
    pub device_id: String,
    /// PCI class, e.g. `0x030000`.
    pub class: String,
    /// IOMMU group; a device outside any group cannot be passed through.
    #[serde(default)]
    pub iommu_group: Option<u32>,
    /// The other devices of its IOMMU group (PCI bridges left out), e.g. the card's audio
    /// function: VFIO takes a group whole, so they are passed through with the GPU.
    #[serde(default)]
    pub iommu_peers: Vec<String>,
}

/// What the host has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeResources {
    /// CPU architecture, e.g. `x86_64`.
    pub arch: String,
    /// CPU model name.
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpu_cores: u32,
    /// Total memory in MiB.
    pub memory_mib: u64,
    /// Block devices.
    pub disks: Vec<DiskInfo>,
    /// Bytes free for VM disks in the agent's data directory.
    pub vm_storage_free_bytes: u64,
    /// GPUs.
    pub gpus: Vec<GpuInfo>,
    /// CPU benchmark result, [`POINTS_PER_BASELINE_CPU`] per logical CPU of the baseline speed
    /// (see the node agent's documentation for the benchmark).
    pub compute_points: u64,
}

/// Compute points of one logical CPU of the baseline speed: the unit of the node agent's CPU
/// benchmark, and what the scheduler reserves for one vCPU of a node at 1:1 overcommit.
pub const POINTS_PER_BASELINE_CPU: u64 = 100;

/// What is still free for new VMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Free physical CPU in thousandths of a core; a tier's vCPU takes
    /// [`QualityTier::millicores_per_vcpu`].
    pub millicores: u64,
    /// Free memory in MiB.
    pub memory_mib: u64,
    /// Free bytes for VM disks.
    pub disk_bytes: u64,
}

/// Periodic report of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sequence number, increasing for the agent's process lifetime.
    pub seq: u64,
    /// Unix seconds.
    pub sent_at: u64,
    /// Whether the agent can take commands (libvirt reachable, state reconciled).
    pub ready: bool,
    /// Address (IP or DNS name) at which the node's forwarded ports are reachable; absent
    /// when the operator has not configured one.
    #[serde(default)]
    pub public_address: Option<String>,
    /// Whether the node runs an ingress (the agent's `[ingress]`: a Caddy serving its VMs'
    /// HTTP ports by name). `None` from agents older than this field, which are taken to run
    /// one; a VM on a node that says `false` gets its HTTP ports forwarded directly instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<bool>,
    /// Host resources.
    pub resources: NodeResources,
    /// Free capacity.
    pub free: Capacity,
    /// Every VM on the node that is not deleted.
    pub vms: Vec<VmReport>,
    /// State changes since the last heartbeat that was sent.
    pub events: Vec<VmEvent>,
    /// The chunk store of a node in the storage role: stored bytes and replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<crate::storage::StorageReport>,
    /// The relay role: its key and endpoint, the nodes it publishes, bytes per VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<crate::relay::RelayReport>,
    /// The node's tunnel key binding and tunnel, for a node behind NAT or relayed now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<crate::relay::TunnelReport>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    fn hello(signer: &PrivateKeySigner) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            node_id: node_id(machine_id("abc\n"), Address::repeat_byte(7)),
            address: signer.address(),
            agent_version: "test".into(),
        }
    }

    #[test]
    fn node_id_is_keccak_of_packed_machine_and_operator() {
        let machine = machine_id(" 0123456789abcdef \n");
        assert_eq!(machine, keccak256(b"0123456789abcdef"));
        let operator = Address::repeat_byte(0x11);
        let mut packed = machine.to_vec();
        packed.extend_from_slice(operator.as_slice());
        assert_eq!(packed.len(), 52);
        assert_eq!(node_id(machine, operator), keccak256(&packed));
    }

    #[test]
    fn signed_challenge_verifies_and_binds_every_field() {
        let signer = PrivateKeySigner::random();
        let hello = hello(&signer);
        let challenge = Challenge {
            nonce: B256::repeat_byte(3),
            expires_at: 1_000,
        };
        let auth = sign_challenge(&signer, hello.node_id, &challenge).unwrap();
        assert_eq!(
            verify_auth(&hello, &challenge, &auth, 999).unwrap(),
            signer.address()
        );

        let expired = verify_auth(&hello, &challenge, &auth, 1_001).unwrap_err();
        assert!(matches!(expired, ProtocolError::ChallengeExpired { .. }));

        let other_nonce = Challenge {
            nonce: B256::repeat_byte(4),
            ..challenge.clone()
        };
        assert!(matches!(
            verify_auth(&hello, &other_nonce, &auth, 0),
            Err(ProtocolError::WrongSigner { .. })
        ));
        let other_node = Hello {
            node_id: B256::repeat_byte(9),
            ..hello.clone()
        };
        assert!(matches!(
            verify_auth(&other_node, &challenge, &auth, 0),
            Err(ProtocolError::WrongSigner { .. })
        ));
        let bad = Auth {
            signature: Bytes::from(vec![1, 2, 3]),
        };
        assert!(matches!(
            verify_auth(&hello, &challenge, &bad, 0),
            Err(ProtocolError::MalformedSignature(_))
        ));
    }

    #[test]
    fn auth_message_is_domain_separated() {
        let text = auth_message(B256::ZERO, B256::repeat_byte(1), 42);
        assert!(text.starts_with("DeCloud node agent authentication\nversion: 1\n"));
        assert!(text.ends_with("\nexpires: 42"));
    }

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let command = ServerMessage::Command(Command {
            id: "c1".into(),
            action: CommandAction::StopVm {
                vm_id: "vm-1".into(),
            },
        });
        let json = command.to_json();
        assert!(json.contains(r#""type":"command""#), "{json}");
        assert!(json.contains(r#""action":"stop_vm""#), "{json}");
        assert_eq!(ServerMessage::from_json(&json).unwrap(), command);

        let ack = AgentMessage::Ack(Ack {
            command_id: "c1".into(),
            outcome: AckOutcome::Failed {
                error: "no such vm".into(),
            },
        });
        assert_eq!(AgentMessage::from_json(&ack.to_json()).unwrap(), ack);
        assert!(AgentMessage::from_json(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn console_frames_round_trip_with_raw_bytes() {
        let frames = [
            ServerMessage::ConsoleOpen {
                session: "s1".into(),
                vm_id: "vm-1".into(),
            },
            ServerMessage::ConsoleInput {
                session: "s1".into(),
                data: Bytes::from(vec![0, 0x1d, b'\r', 0xff]),
            },
            ServerMessage::ConsoleClose {
                session: "s1".into(),
            },
        ];
        for frame in frames {
            assert_eq!(ServerMessage::from_json(&frame.to_json()).unwrap(), frame);
        }
        let output = AgentMessage::ConsoleOutput {
            session: "s1".into(),
            data: Bytes::from(b"hello-42\r\n".to_vec()),
        };
        let json = output.to_json();
        assert!(json.contains(r#""type":"console_output""#), "{json}");
        assert_eq!(AgentMessage::from_json(&json).unwrap(), output);
        let closed = AgentMessage::ConsoleClosed {
            session: "s1".into(),
            reason: "vm is not running".into(),
        };
        assert_eq!(AgentMessage::from_json(&closed.to_json()).unwrap(), closed);
    }

    #[test]
    fn tiers_follow_the_shared_table() {
        assert_eq!(QualityTier::Dedicated.millicores_per_vcpu(), 1000);
        assert_eq!(QualityTier::Standard.millicores_per_vcpu(), 667);
        assert_eq!(QualityTier::Balanced.millicores_per_vcpu(), 500);
        assert_eq!(QualityTier::Burstable.millicores_per_vcpu(), 250);
        assert_eq!(BandwidthTier::Basic.mbps(), Some(10));
        assert_eq!(BandwidthTier::Unmetered.mbps(), None);
        assert_eq!(QualityTier::Burstable as u8, 3);
    }
}
