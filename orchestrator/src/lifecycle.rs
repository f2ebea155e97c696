//! VM lifecycle: Pending → Provisioning → Running → Stopping → Stopped/Terminated, and Failed.
//!
//! Every change is validated against [`VmState::can_become`], written with a compare-and-set on
//! the current state, and — when it needs the node to act — written together with the agent
//! command in one transaction (persist before side effects). Delivery, retry and idempotency
//! of the command are the agent link's job ([`crate::agent`]); its acknowledgement moves the VM
//! on through [`on_command_acked`]. Lease events enter through [`open_lease`] and
//! [`close_lease`].

use crate::{
    access,
    agent::AgentHub,
    clock::now,
    config::IngressConfig,
    ingress, marketplace,
    scheduler::{self, Request, TierShare},
    store::{LeaseRecord, Store, StoreError, VmRecord},
};
use decloud_sdk::agent_protocol::{
    AckOutcome, BandwidthTier, CommandAction, PortProtocol, PortSpec, ReadinessProbe as ProbeSpec,
    VmSpec, VmState as AgentVmState,
};
use decloud_sdk::credentials::{self, Credentials};
use decloud_sdk::types::LeaseStatus;
use decloud_sdk::{LeaseId, VmId};
use decloud_templates::{
    Bundle, Protocol, Readiness as TemplateReadiness, Transport, Variable, Vars, generate_password,
    render,
};

pub use decloud_sdk::types::VmState;

/// Errors of the lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The lifecycle does not allow this change.
    #[error("invalid transition from {from:?} to {to:?}")]
    InvalidTransition {
        /// Current state.
        from: VmState,
        /// Requested state.
        to: VmState,
    },
    /// Another writer changed the VM first.
    #[error("vm {0} changed concurrently")]
    Conflict(String),
    /// The VM does not exist.
    #[error("vm {0} not found")]
    UnknownVm(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the node needs to run a lease's VM, beyond the lease's resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Base image name the node offers.
    pub image: String,
    /// cloud-init user-data.
    pub user_data: String,
    /// Bandwidth tier of the lease.
    pub bandwidth: BandwidthTier,
    /// How long a VM whose lease ran out of funds stays paused (stopped, disks kept) for a
    /// top-up before it is deleted, seconds.
    pub grace_secs: i64,
    /// Until when (unix seconds) nodes are expected to be reconnecting after the orchestrator
    /// started: a VM waiting for its node is noted as such only after it.
    pub reconnect_grace_until: i64,
    /// The domain HTTP ports are named under ([`crate::ingress`]); without it they are
    /// forwarded directly like any other port.
    pub ingress: Option<IngressConfig>,
}

/// How a node agent's refusal of a command about a VM it does not have begins.
pub const NO_SUCH_VM: &str = "no vm with id";

/// How the failure of a VM its node lost begins (see [`crate::reconcile`]): such a VM, its
/// lease still active, is created again.
pub const LOST_BY_NODE: &str = "lost by its node";

async fn current(store: &Store, vm_id: VmId) -> Result<(VmRecord, VmState), LifecycleError> {
    let vm = store
        .vm(vm_id)
        .await?
        .ok_or_else(|| LifecycleError::UnknownVm(vm_id.to_string()))?;
    let state = vm.state;
    Ok((vm, state))
}

/// Moves a VM to `to` if the lifecycle allows it, queueing `command` in the same transaction.
pub async fn transition(
    store: &Store,
    vm_id: VmId,
    to: VmState,
    failure: Option<&str>,
    command: Option<(&str, &CommandAction)>,
) -> Result<(), LifecycleError> {
    let (_, from) = current(store, vm_id).await?;
    if !from.can_become(to) {
        return Err(LifecycleError::InvalidTransition { from, to });
    }
    let json = command.map(|(id, action)| {
        (
            id,
            serde_json::to_string(action).expect("actions serialize"),
        )
    });
    let moved = store
        .transition_vm(
            vm_id,
            from,
            to,
            failure,
            json.as_ref().map(|(id, a)| (*id, a.as_str())),
            now(),
        )
        .await?;
    if !moved {
        return Err(LifecycleError::Conflict(vm_id.to_string()));
    }
    if to == VmState::Terminated {
        // Its names are free for others; its node removed the routes with the VM.
        store.release_ingress(vm_id).await?;
    }
    tracing::info!(target: "orchestrator::lifecycle", %vm_id, from = from.as_str(), to = to.as_str(), "vm state changed");
    Ok(())
}

/// A lease was opened: records it and its VM (Pending), then places the VM on the lease's node
/// and asks the node to create it (Provisioning), or fails the VM saying why it does not fit.
pub async fn open_lease(
    store: &Store,
    agents: &AgentHub,
    lease: &LeaseRecord,
    workload: &Workload,
) -> Result<VmRecord, LifecycleError> {
    let vm_id = VmId::for_lease(lease.lease_id);
    store.upsert_lease(lease).await?;
    if store.vm(vm_id).await?.is_none() {
        let t = now();
        store
            .insert_vm(&VmRecord {
                vm_id,
                lease_id: lease.lease_id,
                tenant: lease.tenant.clone(),
                node_id: lease.node_id,
                state: VmState::Pending,
                tier: lease.tier,
                vcpus: lease.vcpus,
                memory_gib: lease.memory_gib,
                disk_gib: lease.storage_gib,
                gpus: lease.gpus,
                created_at: t,
                updated_at: t,
                failure: None,
            })
            .await?;
    }
    provision(store, agents, vm_id, workload).await?;
    Ok(store.vm(vm_id).await?.expect("vm exists"))
}

/// Places a Pending VM on its lease's node and asks the node to create it (Provisioning), or
/// fails it saying why it does not fit. A VM its node lost ([`LOST_BY_NODE`]) is created again
/// the same way; any other VM past Pending is left as it is.
pub async fn provision(
    store: &Store,
    agents: &AgentHub,
    vm_id: VmId,
    workload: &Workload,
) -> Result<(), LifecycleError> {
    let (vm, state) = current(store, vm_id).await?;
    let lost = state == VmState::Failed
        && vm
            .failure
            .as_deref()
            .is_some_and(|f| f.starts_with(LOST_BY_NODE));
    if state != VmState::Pending && !lost {
        // A replayed event: the VM is already on its way.
        return Ok(());
    }
    // Placement waits until the node's agent is connected and has said what it runs: an
    // offline node delays a VM, never fails it, and a VM the node already runs (the database
    // was rebuilt, or an acknowledgement was lost) is adopted instead of created twice.
    let Some(report) = agents.report(vm.node_id) else {
        // Right after a start every agent is reconnecting; once the grace is over, the tenant
        // is told what the VM waits for (it stays pending).
        let note = format!("waiting for node {} to connect", vm.node_id);
        if !lost && now() >= workload.reconnect_grace_until && vm.failure.as_deref() != Some(&note)
        {
            tracing::info!(target: "orchestrator::lifecycle", %vm_id, node_id = %vm.node_id, "vm waits for its node to connect");
            store.note_pending_vm(vm_id, &note, now()).await?;
        }
        return Ok(());
    };
    if let Some(running) = report.vm(vm_id) {
        return adopt(store, vm_id, running).await;
    }
    let node = store.node(vm.node_id).await?;
    let fit = match node {
        None => Err(format!("node {} is not registered", vm.node_id)),
        Some(node) => {
            let rep = store.reputation(node.node_id, now()).await?;
            let mut used = store
                .usage_by_node()
                .await?
                .get(&node.node_id)
                .copied()
                .unwrap_or_default();
            // A pending VM is already counted in the usage (a failed one is not); take it out
            // for the check.
            if state == VmState::Pending {
                used.compute_units = used
                    .compute_units
                    .saturating_sub(vm.tier.units_for(vm.vcpus));
                used.memory_gib = used.memory_gib.saturating_sub(vm.memory_gib);
                used.disk_gib = used.disk_gib.saturating_sub(vm.disk_gib);
                used.gpus = used.gpus.saturating_sub(vm.gpus);
            }
            let candidate = marketplace::candidate(&marketplace::listing(node, rep, used));
            let request = Request {
                vcpus: vm.vcpus,
                memory_gib: vm.memory_gib,
                disk_gib: vm.disk_gib,
                gpus: vm.gpus,
                tier: vm.tier,
                region: None,
                max_price_per_hour: None,
                node_id: Some(vm.node_id.to_string()),
            };
            scheduler::schedule(&[candidate], &request).map_err(|e| e.to_string())
        }
    };
    // HTTP ports are named only where a node serves names: a node whose agent says it runs no
    // ingress forwards them directly, as without an ingress domain.
    let naming = match &workload.ingress {
        Some(config) if store.node_runs_ingress(vm.node_id).await? => Some(config),
        _ => None,
    };
    let guest = match fit {
        Ok(_) => guest_setup(store, &vm, workload, naming.is_some()).await?,
        Err(reason) => Err(reason),
    };
    match guest {
        Ok((user_data, ports, readiness, http_ports)) => {
            // Named HTTP ports: the derived names of the template's, and any the tenant chose.
            let ingress = match naming {
                Some(config) => {
                    ingress::routes_for_new_vm(store, config, vm_id, &http_ports, now()).await?
                }
                None => {
                    if workload.ingress.is_some() {
                        // Names chosen before the VM existed would answer nowhere.
                        store.release_ingress(vm_id).await?;
                    }
                    Vec::new()
                }
            };
            // The tier the lease paid for; the workload's only for a lease recorded without one.
            let bandwidth = store
                .lease_bandwidth(vm.lease_id)
                .await?
                .unwrap_or(workload.bandwidth);
            let spec = VmSpec {
                id: vm_id.to_string(),
                image: workload.image.clone(),
                vcpus: u32::try_from(vm.vcpus).unwrap_or(u32::MAX),
                memory_mib: vm.memory_gib.saturating_mul(1024),
                disk_gib: vm.disk_gib,
                quality: vm.tier,
                bandwidth,
                // The lease's GPUs: the node reserves that many and passes them through.
                gpus: u32::try_from(vm.gpus).unwrap_or(u32::MAX),
                hostname: None,
                user_data,
                ports,
                readiness,
                ingress,
            };
            // The first creation's id was acknowledged; the agent never runs an id twice.
            let command_id = if lost {
                format!("create-{vm_id}-{}", now())
            } else {
                format!("create-{vm_id}")
            };
            transition(
                store,
                vm_id,
                VmState::Provisioning,
                None,
                Some((&command_id, &CommandAction::CreateVm { spec })),
            )
            .await?;
            store.record_vm_hosted(vm.node_id, now()).await?;
            agents.wake(vm.node_id);
        }
        Err(reason) => {
            tracing::warn!(target: "orchestrator::lifecycle", %vm_id, %reason, "vm cannot be placed");
            transition(store, vm_id, VmState::Failed, Some(&reason), None).await?;
        }
    }
    Ok(())
}

/// Takes over a Pending VM its node already has, in the state the node reports, without
/// asking the node for anything.
pub async fn adopt(
    store: &Store,
    vm_id: VmId,
    report: &decloud_sdk::agent_protocol::VmReport,
) -> Result<(), LifecycleError> {
    let (vm, state) = current(store, vm_id).await?;
    if state != VmState::Pending {
        return Ok(());
    }
    tracing::info!(target: "orchestrator::lifecycle", %vm_id, node_id = %vm.node_id, reported = ?report.state, "the node already has the vm: adopted");
    transition(store, vm_id, VmState::Provisioning, None, None).await?;
    store.record_vm_hosted(vm.node_id, now()).await?;
    match report.state {
        AgentVmState::Running => transition(store, vm_id, VmState::Running, None, None).await,
        AgentVmState::Stopped => {
            transition(store, vm_id, VmState::Stopping, None, None).await?;
            transition(store, vm_id, VmState::Stopped, None, None).await
        }
        AgentVmState::Failed => {
            let reason = report.error.as_deref().unwrap_or("failed on the node");
            transition(store, vm_id, VmState::Failed, Some(reason), None).await
        }
        // Still being created: a later report says how it ended.
        AgentVmState::Creating | AgentVmState::Deleted => Ok(()),
    }
}

/// User-data (sealed for the node), ports, readiness checks and the template's HTTP ports to
/// name (empty unless asked for).
type GuestSetup = (String, Vec<PortSpec>, Vec<ProbeSpec>, Vec<u16>);

/// User-data, ports and readiness checks of a VM: the lease's template rendered (a template
/// missing from the catalog fails the VM) or the workload's user-data, with the login user added
/// ([`access::user_data`]: the tenant's SSH keys in effect now and, when the tenant has a sealing
/// key, a generated password), and the ports SSH, the template's and the tenant's. The generated
/// passwords are sealed to the tenant and recorded with the ports before the create command
/// exists; the user-data is returned sealed for the node ([`access::seal_for_node`]), so no
/// password is ever stored in clear.
///
/// A tenant without a sealing key gets no login password (password login stays locked, SSH keys
/// work). A template's `${DECLOUD_PASSWORD}` is still generated so its service works, but it is
/// kept nowhere: nobody can read it (the tenant can reset it over SSH, or register a sealing key
/// before the next lease).
///
/// With `name_http` the template's HTTP ports are returned to be named ([`crate::ingress`])
/// instead of forwarded directly (a tenant who asks for one in their profile still gets it), except
/// on a relayed node, where the relay reaches the names through the node's forwards.
async fn guest_setup(
    store: &Store,
    vm: &VmRecord,
    workload: &Workload,
    name_http: bool,
) -> Result<Result<GuestSetup, String>, LifecycleError> {
    let profile = store.profile(&vm.tenant).await?;
    // A relayed node takes no inbound connections: its relay's Caddy reaches a named HTTP port
    // through the tunnel and the node's forward of it, so there the port keeps its forward.
    let relayed = store.relay_assignment(vm.node_id).await?.is_some();
    let bundle = match store.lease_template(vm.lease_id).await? {
        // A lease without a template runs the draft its tenant armed for it, if any: a tenant
        // can only arm their own drafts.
        None => match store.lease_draft(vm.lease_id, &vm.tenant).await? {
            None => None,
            Some((cid, content)) => match Bundle::from_content(content.as_bytes()) {
                Ok(bundle) => Some((format!("draft {cid}"), bundle)),
                Err(e) => return Ok(Err(format!("draft {cid} cannot be rendered: {e}"))),
            },
        },
        Some(template_id) => {
            let template = store.template_by_id(template_id).await?;
            let Some(content) = template.and_then(|t| t.content) else {
                return Ok(Err(
                    crate::bundles::missing_reason(store, template_id).await?
                ));
            };
            match Bundle::from_content(content.as_bytes()) {
                Ok(bundle) => Some((format!("template {template_id}"), bundle)),
                Err(e) => {
                    return Ok(Err(format!(
                        "template {template_id} cannot be rendered: {e}"
                    )));
                }
            }
        }
    };
    let needs_template_password = bundle.as_ref().is_some_and(|(_, b)| {
        b.user_data
            .contains(&format!("${{{}}}", Variable::Password.name()))
    });
    let vm_id = vm.vm_id.to_string();
    let prepared = (|| {
        let vars = Vars::new(
            &vm_id,
            &vm_id,
            &vm.lease_id.to_string(),
            &vm.node_id.to_string(),
            &vm.tenant,
        )
        .map_err(|e| e.to_string())?;
        let (base, template_ports, readiness, http_ports) = match &bundle {
            None => (
                workload.user_data.clone(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            ),
            Some((label, bundle)) => {
                let rendered = render(bundle, &vars)
                    .map_err(|e| format!("{label} cannot be rendered: {e}"))?;
                let http = if name_http {
                    http_ports(bundle)
                } else {
                    Vec::new()
                };
                (
                    rendered.into_string(),
                    template_ports(bundle, if relayed { &[] } else { &http }),
                    template_readiness(bundle),
                    http,
                )
            }
        };
        let credentials = match &profile.sealing_key {
            None => None,
            Some(key) => {
                let password = generate_password().map_err(|e| e.to_string())?;
                let credentials = Credentials {
                    user: access::LOGIN_USER.to_string(),
                    password,
                    template_password: needs_template_password.then(|| vars.password().to_string()),
                };
                let sealed = credentials::seal(key, &vm_id, &credentials)
                    .map_err(|e| format!("credentials cannot be sealed: {e}"))?;
                Some((key.clone(), sealed, credentials.password))
            }
        };
        let user_data = access::user_data(
            &base,
            &profile.ssh_keys,
            credentials.as_ref().map(|(_, _, p)| p.as_str()),
        )
        .map_err(|e| e.to_string())?;
        let digest = decloud_sdk::agent_protocol::user_data_sha256(&user_data);
        let user_data = access::seal_for_node(&vm_id, &user_data)
            .map_err(|e| format!("user-data cannot be sealed: {e}"))?;
        let ports = access::vm_ports(&template_ports, &profile.ports);
        Ok::<_, String>((
            (user_data, digest),
            ports,
            readiness,
            credentials.map(|(key, sealed, _)| (key, sealed)),
            http_ports,
        ))
    })();
    let ((user_data, digest), ports, readiness, sealed, http_ports) = match prepared {
        Ok(p) => p,
        Err(reason) => return Ok(Err(reason)),
    };
    store
        .record_vm_setup(
            vm.vm_id,
            access::LOGIN_USER,
            &ports,
            sealed.as_ref().map(|(k, s)| (k.as_str(), s.as_str())),
            digest,
            now(),
        )
        .await?;
    Ok(Ok((user_data, ports, readiness, http_ports)))
}

/// Puts a waiting create command's user-data together again when this process cannot open it
/// (it was sealed by an earlier run; [`access`] keeps that key in memory only): new passwords,
/// sealed to the tenant again, the profile in effect now, and the command's action replaced
/// while it is still unacknowledged. The earlier version stays on record: a node that had run
/// it answers the command id with that run's outcome, and [`on_command_acked`] gives its
/// passwords back to the tenant. Returns the new action (sealed for the node), or `None`
/// when the VM or its setup is gone and the command cannot be sent.
pub async fn reseal_create(
    store: &Store,
    command_id: &str,
    spec: VmSpec,
) -> Result<Option<CommandAction>, LifecycleError> {
    let Ok(vm_id) = spec.id.parse::<VmId>() else {
        return Ok(None);
    };
    let Some(vm) = store.vm(vm_id).await? else {
        return Ok(None);
    };
    // The orchestrator's own workload user-data is empty; a template's is rendered again.
    let workload = Workload {
        image: spec.image.clone(),
        user_data: String::new(),
        bandwidth: spec.bandwidth,
        grace_secs: 0,
        // Only guest setup reads this workload: placement timing does not apply.
        reconnect_grace_until: 0,
        ingress: None,
    };
    // The names the spec carries stay; its HTTP ports stay without a direct forward.
    let name_http = !spec.ingress.is_empty();
    let Ok((user_data, ports, readiness, _)) =
        guest_setup(store, &vm, &workload, name_http).await?
    else {
        return Ok(None);
    };
    let action = CommandAction::CreateVm {
        spec: VmSpec {
            user_data,
            ports,
            readiness,
            ..spec
        },
    };
    let json = serde_json::to_string(&action).expect("actions serialize");
    if !store.replace_command_action(command_id, &json).await? {
        return Ok(None);
    }
    tracing::warn!(target: "orchestrator::lifecycle", vm_id = %vm.vm_id, command_id, "create command sealed by an earlier run: credentials generated again");
    Ok(Some(action))
}

/// The template's ports to forward directly: all but those in `named` (HTTP ports served by name).
fn template_ports(bundle: &Bundle, named: &[u16]) -> Vec<PortSpec> {
    bundle
        .manifest
        .ports
        .iter()
        .filter(|p| {
            !(p.protocol == Protocol::Http
                && u16::try_from(p.port).is_ok_and(|n| named.contains(&n)))
        })
        .filter_map(|p| {
            Some(PortSpec {
                guest: u16::try_from(p.port).ok()?,
                protocol: match p.protocol.transport() {
                    Transport::Tcp => PortProtocol::Tcp,
                    Transport::Udp => PortProtocol::Udp,
                },
            })
        })
        .collect()
}

/// The guest ports the template marks `http`.
fn http_ports(bundle: &Bundle) -> Vec<u16> {
    let mut ports: Vec<u16> = bundle
        .manifest
        .ports
        .iter()
        .filter(|p| p.protocol == Protocol::Http)
        .filter_map(|p| u16::try_from(p.port).ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn template_readiness(bundle: &Bundle) -> Vec<ProbeSpec> {
    bundle
        .manifest
        .readiness
        .iter()
        .filter_map(|r| {
            Some(match r {
                TemplateReadiness::CloudInit => ProbeSpec::CloudInit,
                TemplateReadiness::Tcp { port } => ProbeSpec::Tcp {
                    port: u16::try_from(*port).ok()?,
                },
                TemplateReadiness::Http {
                    port,
                    path,
                    expect_status,
                    tls,
                } => ProbeSpec::Http {
                    port: u16::try_from(*port).ok()?,
                    path: path.clone(),
                    expect_status: Some(*expect_status),
                    tls: *tls,
                },
                TemplateReadiness::Exec { command } => ProbeSpec::Exec {
                    command: command.clone(),
                },
            })
        })
        .collect()
}

/// What a tenant asks of a running or stopped VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Shut the guest down; its disk is kept.
    Stop,
    /// Start a stopped VM again.
    Start,
    /// Power-cycle a running VM.
    Reboot,
}

impl Control {
    /// The verb, as in the API path.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Reboot => "reboot",
        }
    }
}

/// Why a tenant's control request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The VM is not in a state where the request makes sense.
    #[error("cannot {control} a vm that is {state}: {hint}", control = .control.as_str(), state = .state.as_str())]
    WrongState {
        /// The request.
        control: Control,
        /// The VM's state.
        state: VmState,
        /// What would work.
        hint: &'static str,
    },
    /// The lease that pays for the VM ended or ran out of funds.
    #[error("cannot start the vm: {0}")]
    Unpaid(&'static str),
    /// The lifecycle refused or the store failed.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        Self::Lifecycle(e.into())
    }
}

/// Carries out a tenant's stop, start or reboot of a VM (ownership is the caller's check):
/// Running → Stopping (→ Stopped on the node's acknowledgement) for a stop, Stopped →
/// Provisioning (→ Running) for a start, and a power cycle of a Running VM that keeps its
/// state. Each is queued as a command for the node with the state change. A VM its tenant
/// stopped stays stopped until its tenant starts it (the lifecycle's resume after a top-up
/// leaves it alone).
pub async fn control(
    store: &Store,
    agents: &AgentHub,
    vm_id: VmId,
    request: Control,
) -> Result<VmRecord, ControlError> {
    let (vm, state) = current(store, vm_id).await?;
    let wrong = |hint| ControlError::WrongState {
        control: request,
        state,
        hint,
    };
    // Unique per request: the node runs each command once, by id.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let command_id = format!("{}-{vm_id}-tenant-{stamp}", request.as_str());
    match request {
        Control::Stop => {
            if state != VmState::Running {
                return Err(wrong("only a running vm can be stopped"));
            }
            store.set_vm_held(vm_id, true, now()).await?;
            let action = CommandAction::StopVm {
                vm_id: vm_id.to_string(),
            };
            if let Err(e) = transition(
                store,
                vm_id,
                VmState::Stopping,
                None,
                Some((&command_id, &action)),
            )
            .await
            {
                store.set_vm_held(vm_id, false, now()).await?;
                return Err(e.into());
            }
        }
        Control::Start => {
            if state != VmState::Stopped {
                return Err(wrong("only a stopped vm can be started"));
            }
            match store.lease(vm.lease_id).await? {
                Some(l) if l.status == LeaseStatus::Active => {}
                _ => return Err(ControlError::Unpaid("its lease has ended")),
            }
            if store
                .lease_depleted_at(vm.lease_id)
                .await?
                .is_some_and(|d| now() >= d)
            {
                return Err(ControlError::Unpaid(
                    "its lease has run out of funds; top it up and it starts again",
                ));
            }
            let action = CommandAction::StartVm {
                vm_id: vm_id.to_string(),
            };
            transition(
                store,
                vm_id,
                VmState::Provisioning,
                None,
                Some((&command_id, &action)),
            )
            .await?;
            store.set_vm_held(vm_id, false, now()).await?;
        }
        Control::Reboot => {
            if state != VmState::Running {
                return Err(wrong("only a running vm can be rebooted"));
            }
            let action = serde_json::to_string(&CommandAction::RebootVm {
                vm_id: vm_id.to_string(),
            })
            .expect("actions serialize");
            if !store
                .queue_vm_command(vm_id, VmState::Running, &command_id, &action, now())
                .await?
            {
                return Err(LifecycleError::Conflict(vm_id.to_string()).into());
            }
        }
    }
    tracing::info!(target: "orchestrator::lifecycle", %vm_id, request = request.as_str(), "tenant control queued");
    agents.wake(vm.node_id);
    Ok(store.vm(vm_id).await?.expect("vm exists"))
}

/// Acts on everything the chain recorded: provisions Pending VMs, removes the VMs of closed or
/// terminated leases, pauses the VMs of leases whose funds ran out, resumes them after a top-up
/// and deletes them when the grace period passes without one. Safe to run any number of times; run after every follower batch and
/// periodically, so a side effect that failed is tried again.
pub async fn drive(
    store: &Store,
    agents: &AgentHub,
    workload: &Workload,
) -> Result<usize, LifecycleError> {
    let mut acted = 0;
    // Ended leases first: their VMs stop counting against the node before anything is placed.
    for (lease_id, status) in store.leases_to_close().await? {
        close_lease(store, agents, lease_id, status).await?;
        acted += 1;
    }
    for vm_id in store.vms_in_state(VmState::Pending).await? {
        let lease_closed = match store.vm(vm_id).await? {
            Some(vm) => store
                .lease(vm.lease_id)
                .await?
                .is_some_and(|l| l.status != LeaseStatus::Active),
            None => false,
        };
        // A lease opened and closed in the same batch never reaches the node.
        if !lease_closed {
            provision(store, agents, vm_id, workload).await?;
            acted += 1;
        }
    }
    let now = now();
    // Funds ran out: pause (never delete at once).
    for vm_id in store.vms_in_state(VmState::Running).await? {
        let Some(vm) = store.vm(vm_id).await? else {
            continue;
        };
        if let Some(depleted) = store.lease_depleted_at(vm.lease_id).await?
            && now >= depleted
        {
            let command_id = format!("stop-{vm_id}-{depleted}");
            let action = CommandAction::StopVm {
                vm_id: vm_id.to_string(),
            };
            transition(
                store,
                vm_id,
                VmState::Stopping,
                None,
                Some((&command_id, &action)),
            )
            .await?;
            agents.wake(vm.node_id);
            acted += 1;
        }
    }
    // Paused VMs: resume after a top-up, delete once the grace period is over.
    for vm_id in store.vms_in_state(VmState::Stopped).await? {
        let Some(vm) = store.vm(vm_id).await? else {
            continue;
        };
        let Some(depleted) = store.lease_depleted_at(vm.lease_id).await? else {
            continue;
        };
        if now < depleted {
            // A VM its tenant stopped waits for its tenant, not for the funds.
            if store.vm_held(vm_id).await? {
                continue;
            }
            let command_id = format!("start-{vm_id}-{depleted}");
            let action = CommandAction::StartVm {
                vm_id: vm_id.to_string(),
            };
            transition(
                store,
                vm_id,
                VmState::Provisioning,
                None,
                Some((&command_id, &action)),
            )
            .await?;
        } else if now >= depleted.saturating_add(workload.grace_secs) {
            let command_id = format!("delete-{vm_id}");
            let action = CommandAction::DeleteVm {
                vm_id: vm_id.to_string(),
            };
            transition(
                store,
                vm_id,
                VmState::Stopping,
                None,
                Some((&command_id, &action)),
            )
            .await?;
        } else {
            continue;
        }
        agents.wake(vm.node_id);
        acted += 1;
    }
    Ok(acted)
}

/// A lease was closed (or terminated): the VM is deleted from its node, or simply terminated
/// if the node was never asked for it.
pub async fn close_lease(
    store: &Store,
    agents: &AgentHub,
    lease_id: LeaseId,
    status: LeaseStatus,
) -> Result<(), LifecycleError> {
    if let Some(mut lease) = store.lease(lease_id).await? {
        lease.status = status;
        store.upsert_lease(&lease).await?;
    }
    let vm_id = VmId::for_lease(lease_id);
    let (vm, state) = current(store, vm_id).await?;
    match state {
        VmState::Pending => transition(store, vm_id, VmState::Terminated, None, None).await,
        VmState::Terminated | VmState::Stopping => Ok(()),
        VmState::Provisioning | VmState::Running | VmState::Stopped | VmState::Failed => {
            let command_id = format!("delete-{vm_id}");
            let action = CommandAction::DeleteVm {
                vm_id: vm_id.to_string(),
            };
            transition(
                store,
                vm_id,
                VmState::Stopping,
                None,
                Some((&command_id, &action)),
            )
            .await?;
            agents.wake(vm.node_id);
            Ok(())
        }
    }
}

/// Moves a VM on after its node acknowledged a command about it.
pub async fn on_command_acked(
    store: &Store,
    command_id: &str,
    outcome: &AckOutcome,
) -> Result<(), LifecycleError> {
    let Some(vm_id) = store.command_vm(command_id).await? else {
        return Ok(());
    };
    let (vm, state) = current(store, vm_id).await?;
    // create- and start- bring a VM up, stop- pauses it, delete- removes it.
    let creating = command_id.starts_with("create-") || command_id.starts_with("start-");
    let deleting = command_id.starts_with("delete-");
    let stopping = command_id.starts_with("stop-");
    if command_id.starts_with("create-") {
        // The VM holds the passwords of the user-data it was created from, which is not the
        // latest one put together when the node had run an earlier one before a restart here.
        let created_from = match outcome {
            AckOutcome::Done {
                user_data_sha256, ..
            } => *user_data_sha256,
            AckOutcome::Failed { .. } => None,
        };
        if store.settle_vm_setup(vm_id, created_from, now()).await? {
            tracing::warn!(target: "orchestrator::lifecycle", %vm_id, command_id, "the node created the VM from user-data put together before a restart: its credentials are the tenant's again");
        }
    }
    match outcome {
        AckOutcome::Done { vm: report, .. } => {
            if creating && state == VmState::Provisioning {
                let reported = report.as_ref().map(|r| r.state);
                if reported == Some(AgentVmState::Failed) {
                    let reason = report
                        .as_ref()
                        .and_then(|r| r.error.clone())
                        .unwrap_or_else(|| "failed on the node".into());
                    transition(store, vm_id, VmState::Failed, Some(&reason), None).await?;
                } else {
                    transition(store, vm_id, VmState::Running, None, None).await?;
                }
            } else if stopping && state == VmState::Stopping {
                transition(store, vm_id, VmState::Stopped, None, None).await?;
            } else if deleting && state == VmState::Stopping {
                transition(store, vm_id, VmState::Terminated, None, None).await?;
                if store
                    .lease(vm.lease_id)
                    .await?
                    .is_some_and(|l| l.status == LeaseStatus::Closed)
                {
                    store.record_vm_completed(vm.node_id, now()).await?;
                }
            }
        }
        AckOutcome::Failed { error } => {
            if creating && state == VmState::Provisioning {
                transition(store, vm_id, VmState::Failed, Some(error), None).await?;
            } else if deleting && state == VmState::Stopping && error.starts_with(NO_SUCH_VM) {
                // The node does not have the VM (it never got it, or lost it): deleted already.
                transition(store, vm_id, VmState::Terminated, None, None).await?;
            } else {
                tracing::warn!(target: "orchestrator::lifecycle", %vm_id, command_id, %error, "node could not carry out a command");
            }
        }
    }
    Ok(())
}

/// Applies acknowledgements that were stored but not applied before a crash. Run at start-up.
pub async fn recover(store: &Store) -> Result<usize, LifecycleError> {
    let pending = store.unapplied_acks().await?;
    for (command_id, outcome) in &pending {
        match serde_json::from_str::<AckOutcome>(outcome) {
            Ok(outcome) => on_command_acked(store, command_id, &outcome).await?,
            Err(e) => {
                tracing::error!(target: "orchestrator::lifecycle", command_id, error = %e, "stored outcome unreadable")
            }
        }
    }
    Ok(pending.len())
}

#[cfg(test)]
mod tests {
    use super::VmState::{self, *};
    use super::{Bundle, ProbeSpec, TemplateReadiness, template_readiness};

    const ALL: [VmState; 7] = [
        Pending,
        Provisioning,
        Running,
        Stopping,
        Stopped,
        Terminated,
        Failed,
    ];

    #[test]
    fn only_the_lifecycle_edges_are_allowed() {
        let allowed = [
            (Pending, Provisioning),
            (Pending, Terminated),
            (Pending, Failed),
            (Provisioning, Running),
            (Provisioning, Stopping),
            (Provisioning, Failed),
            (Running, Stopping),
            (Running, Failed),
            (Stopping, Stopped),
            (Stopping, Terminated),
            (Stopping, Failed),
            (Stopped, Provisioning),
            (Stopped, Stopping),
            (Failed, Provisioning),
            (Failed, Stopping),
            (Failed, Terminated),
        ];
        for from in ALL {
            for to in ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        assert!(
            ALL.iter().all(|s| !Terminated.can_become(*s)),
            "terminated is final"
        );
    }

    #[test]
    fn names_round_trip() {
        for s in ALL {
            assert_eq!(s.as_str().parse::<VmState>().unwrap(), s);
        }
        assert!("sleeping".parse::<VmState>().is_err());
    }

    #[test]
    fn every_seed_templates_checks_reach_the_node_whole() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/seed");
        let mut expecting_401 = Vec::new();
        for entry in std::fs::read_dir(&seeds).unwrap() {
            let dir = entry.unwrap().path();
            let bundle = Bundle::load_dir(&dir).unwrap();
            let probes = template_readiness(&bundle);
            assert_eq!(
                probes.len(),
                bundle.manifest.readiness.len(),
                "{}: a check was dropped",
                dir.display()
            );
            for (check, probe) in bundle.manifest.readiness.iter().zip(&probes) {
                if let (
                    TemplateReadiness::Http {
                        expect_status, tls, ..
                    },
                    ProbeSpec::Http {
                        expect_status: sent,
                        tls: sent_tls,
                        ..
                    },
                ) = (check, probe)
                {
                    assert_eq!((Some(*expect_status), *tls), (*sent, *sent_tls));
                    if *expect_status == 401 {
                        expecting_401.push(bundle.manifest.slug.clone());
                    }
                }
            }
        }
        expecting_401.sort();
        // Behind a login, these answer 401 until the tenant signs in.
        assert_eq!(
            expecting_401,
            ["private-browser", "stable-diffusion", "web-proxy-browser"]
        );
    }
}
