//! HTTPS names for VMs' HTTP ports: `https://<name>.<domain>`, served by the Caddy of the node
//! that runs the VM (the node agent's ingress). With an `[ingress]` domain configured, every
//! port a VM's template marks `http` is named when the VM is created (`vm-7-8080`: the VM id and
//! the port, a pattern tenants cannot choose, so derived names never clash) and gets no direct
//! forward; a tenant may name any port of their VM (or rename one) and remove names later. The
//! names reach the node in the create command's spec and, for a VM the node already has, in a
//! `SetIngress` command queued with the change. A terminated VM's names are freed.

use crate::agent::AgentHub;
use crate::config::{ChainConfig, IngressConfig};
use crate::store::{IngressChange, IngressName, Store, StoreError};
use decloud_sdk::agent_protocol::{CommandAction, IngressRoute};
use decloud_sdk::api::{IngressUrl, VmRecord, check_ingress_name};
use decloud_sdk::bindings::LeaseEscrow;
use decloud_sdk::types::LeaseStatus;
use decloud_sdk::types::VmState;
use decloud_sdk::{LeaseId, NodeId, VmId};

/// Most named ports one VM may have.
pub const MAX_NAMES_PER_VM: usize = 16;

/// Why a change of a VM's names was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The orchestrator has no ingress domain.
    #[error("this orchestrator gives no HTTPS names: it has no [ingress] domain")]
    Disabled,
    /// The name is not one allowed DNS label, or reserved.
    #[error("{0}")]
    InvalidName(String),
    /// The port is not a port.
    #[error("port 0 is not a port: use 1 to 65535")]
    InvalidPort,
    /// The name is someone else's.
    #[error("the name {0:?} is taken")]
    Taken(String),
    /// The VM has as many names as it may.
    #[error("a vm has at most {MAX_NAMES_PER_VM} names")]
    TooMany,
    /// The port has no name to remove.
    #[error("port {0} of this vm has no name")]
    NotNamed(u16),
    /// The VM is gone.
    #[error("the vm is {0}: its names are gone")]
    Ended(VmState),
    /// The VM's node serves no names.
    #[error(
        "node {0} runs no ingress: its vms' HTTP ports are forwarded directly (see access.forwards) and get no names"
    )]
    NoIngress(NodeId),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The name a VM's port gets when nobody chose one: `<vm id>-<port>` (`vm-7-8080`).
pub fn derived_name(vm_id: VmId, port: u16) -> String {
    format!("{vm_id}-{port}")
}

/// Whether `name` has the shape of a derived name (`vm-<digits>-<digits>`), which only the
/// port it was derived for may carry.
fn looks_derived(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("vm-") else {
        return false;
    };
    let mut parts = rest.split('-');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

/// Checks a name a tenant chose for `port` of `vm_id` under `domain`.
pub fn check_name(name: &str, vm_id: VmId, port: u16, domain: &str) -> Result<(), IngressError> {
    check_ingress_name(name).map_err(IngressError::InvalidName)?;
    if looks_derived(name) && name != derived_name(vm_id, port) {
        return Err(IngressError::InvalidName(format!(
            "name {name:?} has the shape of a derived name (vm-<id>-<port>), which only that vm's port may carry"
        )));
    }
    if name.len() + 1 + domain.len() > 253 {
        return Err(IngressError::InvalidName(format!(
            "name {name:?} makes a host name longer than 253 characters under {domain}"
        )));
    }
    Ok(())
}

/// `<name>.<domain>`.
pub fn host(name: &str, config: &IngressConfig) -> String {
    format!("{name}.{}", config.domain)
}

/// `https://<name>.<domain>` (with `:port` unless it is 443).
pub fn url(name: &str, config: &IngressConfig) -> String {
    match config.https_port {
        443 => format!("https://{}", host(name, config)),
        port => format!("https://{}:{port}", host(name, config)),
    }
}

/// The routes a node serves for these names.
pub fn routes(names: &[IngressName], config: &IngressConfig) -> Vec<IngressRoute> {
    names
        .iter()
        .map(|n| IngressRoute {
            host: host(&n.name, config),
            guest: n.guest,
        })
        .collect()
}

/// Names a new VM's HTTP ports that have none yet (derived names) and returns the routes the
/// create command carries: every name of the VM, chosen ones included.
pub async fn routes_for_new_vm(
    store: &Store,
    config: &IngressConfig,
    vm_id: VmId,
    http_ports: &[u16],
    now: i64,
) -> Result<Vec<IngressRoute>, StoreError> {
    let defaults: Vec<IngressName> = http_ports
        .iter()
        .map(|&guest| IngressName {
            guest,
            name: derived_name(vm_id, guest),
            chosen: false,
        })
        .collect();
    let names = store.add_ingress_defaults(vm_id, &defaults, now).await?;
    Ok(routes(&names, config))
}

/// The URLs of a VM's named ports; none without an ingress domain.
pub async fn urls(
    store: &Store,
    config: Option<&IngressConfig>,
    vm_id: VmId,
) -> Result<Vec<IngressUrl>, StoreError> {
    let Some(config) = config else {
        return Ok(Vec::new());
    };
    Ok(store
        .vm_ingress(vm_id)
        .await?
        .into_iter()
        .map(|n| IngressUrl {
            guest: n.guest,
            url: url(&n.name, config),
            name: n.name,
            chosen: n.chosen,
        })
        .collect())
}

/// Whether the VM's node has (or is being given) the VM, so a change must reach it as a
/// command; a pending VM takes its names with its create command.
fn node_has_it(state: VmState) -> bool {
    !matches!(state, VmState::Pending | VmState::Terminated)
}

/// The parts of a VM a change of its names needs: which VM, on which node, in which state. A VM
/// of a lease the orchestrator has not followed yet is `Pending` on the lease's node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmRef {
    /// The VM (of lease N: `vm-N`).
    pub vm_id: VmId,
    /// The node of its lease.
    pub node_id: NodeId,
    /// Its state; the node gets the change as a command unless it is `Pending`.
    pub state: VmState,
}

impl From<&VmRecord> for VmRef {
    fn from(vm: &VmRecord) -> Self {
        Self {
            vm_id: vm.vm_id,
            node_id: vm.node_id,
            state: vm.state,
        }
    }
}

/// Names `port` of the caller's VM `vm` (ownership is the caller's check): `name`, or the
/// port's current name, or the derived one. Refused with nothing changed when the name is
/// invalid or taken, the VM has too many names, it is terminated or its node runs no ingress.
pub async fn expose(
    store: &Store,
    agents: &AgentHub,
    config: Option<&IngressConfig>,
    vm: impl Into<VmRef>,
    port: u16,
    name: Option<&str>,
) -> Result<Vec<IngressName>, IngressError> {
    let vm: VmRef = vm.into();
    let config = config.ok_or(IngressError::Disabled)?;
    if port == 0 {
        return Err(IngressError::InvalidPort);
    }
    if vm.state == VmState::Terminated {
        return Err(IngressError::Ended(vm.state));
    }
    if !store.node_runs_ingress(vm.node_id).await? {
        return Err(IngressError::NoIngress(vm.node_id));
    }
    let current = store.vm_ingress(vm.vm_id).await?;
    let existing = current.iter().find(|n| n.guest == port);
    let entry = match (name, existing) {
        (Some(name), _) => {
            check_name(name, vm.vm_id, port, &config.domain)?;
            IngressName {
                guest: port,
                name: name.to_string(),
                chosen: name != derived_name(vm.vm_id, port),
            }
        }
        (None, Some(existing)) => existing.clone(),
        (None, None) => IngressName {
            guest: port,
            name: derived_name(vm.vm_id, port),
            chosen: false,
        },
    };
    if existing.is_none() && current.len() >= MAX_NAMES_PER_VM {
        return Err(IngressError::TooMany);
    }
    change(store, agents, config, vm, port, Some(&entry)).await
}

/// A lease as the chain has it now, for naming the ports of its VM before the orchestrator
/// follows the lease (it reads events `confirmations` deep).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOnChain {
    /// The tenant, lowercase hex like a session's address.
    pub tenant: String,
    /// The lease's node.
    pub node_id: NodeId,
    /// Whether the lease is active.
    pub active: bool,
}

/// Why a lease could not be read from the chain.
#[derive(Debug, thiserror::Error)]
pub enum LeaseReadError {
    /// The orchestrator follows no chain.
    #[error("this orchestrator follows no chain")]
    NoChain,
    /// LeaseEscrow has no such lease.
    #[error("lease {0} does not exist")]
    NoSuchLease(LeaseId),
    /// The chain did not answer.
    #[error("reading the lease from the chain failed: {0}")]
    Chain(String),
}

/// Reads lease `lease_id` from `[chain]`'s LeaseEscrow.
pub async fn lease_on_chain(
    chain: Option<&ChainConfig>,
    lease_id: LeaseId,
) -> Result<LeaseOnChain, LeaseReadError> {
    use alloy::providers::{Provider, ProviderBuilder};
    let chain = chain.ok_or(LeaseReadError::NoChain)?;
    let escrow: alloy::primitives::Address = chain
        .lease_escrow
        .parse()
        .map_err(|e| LeaseReadError::Chain(format!("lease_escrow: {e}")))?;
    let rpc = chain
        .rpc_url
        .parse()
        .map_err(|e| LeaseReadError::Chain(format!("rpc_url: {e}")))?;
    let provider = ProviderBuilder::new().connect_http(rpc).erased();
    // The escrow reverts for a lease it never opened; any other failure is the chain's.
    let lease = match LeaseEscrow::new(escrow, &provider)
        .getLease(lease_id.as_u256())
        .call()
        .await
    {
        Ok(lease) => lease,
        Err(e) if e.as_revert_data().is_some() => {
            return Err(LeaseReadError::NoSuchLease(lease_id));
        }
        Err(e) => return Err(LeaseReadError::Chain(e.to_string())),
    };
    let status = LeaseStatus::try_from(lease.status).unwrap_or(LeaseStatus::None);
    if status == LeaseStatus::None {
        return Err(LeaseReadError::NoSuchLease(lease_id));
    }
    Ok(LeaseOnChain {
        tenant: format!("{:#x}", lease.tenant),
        node_id: NodeId::from(lease.nodeId),
        active: status == LeaseStatus::Active,
    })
}

/// Whether `name` could be given to a port of a VM not created yet: a valid name under the
/// domain, not of a derived shape, held by no VM. Nothing is reserved: the name is given when
/// the lease is open ([`expose`] on its VM).
pub async fn check_available(
    store: &Store,
    config: Option<&IngressConfig>,
    name: &str,
) -> Result<(), IngressError> {
    let config = config.ok_or(IngressError::Disabled)?;
    check_ingress_name(name).map_err(IngressError::InvalidName)?;
    if looks_derived(name) {
        return Err(IngressError::InvalidName(format!(
            "name {name:?} has the shape of a derived name (vm-<id>-<port>), which only that vm's port may carry"
        )));
    }
    check_name(name, VmId::for_lease(0u64.into()), 0, &config.domain)?;
    if store.ingress_name_taken(name).await? {
        return Err(IngressError::Taken(name.to_string()));
    }
    Ok(())
}

/// Removes the name of `port` of the caller's VM (ownership is the caller's check).
pub async fn unexpose(
    store: &Store,
    agents: &AgentHub,
    config: Option<&IngressConfig>,
    vm: impl Into<VmRef>,
    port: u16,
) -> Result<Vec<IngressName>, IngressError> {
    let vm: VmRef = vm.into();
    let config = config.ok_or(IngressError::Disabled)?;
    if vm.state == VmState::Terminated {
        return Err(IngressError::Ended(vm.state));
    }
    if !store
        .vm_ingress(vm.vm_id)
        .await?
        .iter()
        .any(|n| n.guest == port)
    {
        return Err(IngressError::NotNamed(port));
    }
    change(store, agents, config, vm, port, None).await
}

async fn change(
    store: &Store,
    agents: &AgentHub,
    config: &IngressConfig,
    vm: VmRef,
    port: u16,
    entry: Option<&IngressName>,
) -> Result<Vec<IngressName>, IngressError> {
    let send = node_has_it(vm.state);
    // Unique per change: the node runs each command once, by id.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let command_id = format!("ingress-{}-{stamp}", vm.vm_id);
    let VmRef { vm_id, node_id, .. } = vm;
    let outcome = store
        .change_ingress(
            vm_id,
            port,
            entry,
            |names| {
                send.then(|| {
                    let action = CommandAction::SetIngress {
                        vm_id: vm_id.to_string(),
                        routes: routes(names, config),
                    };
                    (
                        command_id,
                        node_id,
                        serde_json::to_string(&action).expect("actions serialize"),
                    )
                })
            },
            crate::clock::now(),
        )
        .await?;
    match outcome {
        IngressChange::Done(names) => {
            tracing::info!(target: "orchestrator::ingress", %vm_id, port, name = ?entry.map(|e| &e.name), sent = send, "vm names changed");
            if send {
                agents.wake(node_id);
            }
            Ok(names)
        }
        IngressChange::Taken(_) => Err(IngressError::Taken(
            entry.map(|e| e.name.clone()).unwrap_or_default(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(port: u16) -> IngressConfig {
        IngressConfig {
            domain: "apps.example.org".into(),
            https_port: port,
            ..Default::default()
        }
    }

    #[test]
    fn derived_names_are_stable_labels_no_tenant_can_take() {
        let vm: VmId = "vm-7".parse().unwrap();
        assert_eq!(derived_name(vm, 8080), "vm-7-8080");
        assert!(check_ingress_name(&derived_name(vm, 8080)).is_ok());
        assert!(check_name("vm-7-8080", vm, 8080, "apps.example.org").is_ok());
        for other in ["vm-7-80", "vm-8-8080"] {
            let e = check_name(other, vm, 8080, "apps.example.org").unwrap_err();
            assert!(e.to_string().contains("derived name"), "{e}");
        }
        assert!(check_name("vm-7-web", vm, 8080, "apps.example.org").is_ok());
        assert!(check_name("www", vm, 8080, "apps.example.org").is_err());
        let long_domain = format!("{}.org", "d".repeat(60));
        let long = format!("{}.{}.{}", long_domain, long_domain, long_domain);
        assert!(check_name(&"n".repeat(63), vm, 80, &long).is_err());
    }

    #[test]
    fn urls_name_the_port_unless_it_is_443() {
        assert_eq!(url("myapp", &config(443)), "https://myapp.apps.example.org");
        assert_eq!(
            url("myapp", &config(8443)),
            "https://myapp.apps.example.org:8443"
        );
    }
}
