//! The VM manager: validates specs, creates, starts, stops and deletes VMs, reconciles the
//! database with libvirt, watches states and readiness, executes commands idempotently and
//! builds heartbeats.
//!
//! Every change is written to the database before it is made in libvirt, so a crash at
//! any point leaves a record that [`Agent::reconcile`] finishes on the next start.

use std::{
    collections::{BTreeSet, HashMap},
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::Command as Process,
    sync::{
        Arc, Mutex as SyncMutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use decloud_sdk::agent_protocol::{
    Ack, AckOutcome, Capacity, Command, CommandAction, Heartbeat, IngressRoute, NodeResources,
    PortForward, PortProtocol, ProbeResult, Readiness, ReadinessProbe, VmReport, VmSpec, VmState,
};
use decloud_sdk::relay::{RelayAssignment, RelayPorts, RelayReport, TunnelBinding, TunnelReport};
use decloud_sdk::storage::StorageReport;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::{
    config::{BandwidthShaping, Config, ImageConfig, NetworkConfig},
    console::Consoles,
    domain_xml::{self, DomainPlan},
    error::{Error, Result},
    firewall::{Firewall, ForwardRule},
    hypervisor::{Hypervisor, StopOutcome},
    identity::{Identity, node_tag},
    ingress::{Ingress, IngressReport, IngressRule, valid_host},
    network::{DhcpHost, NatNetwork, reservation_name, reservation_prefix},
    readiness,
    relay::{PeerStatus, Relay, Tunnel, tunnel_binding},
    seed::{self, SeedFiles},
    shaping,
    storage::{ChunkStore, Drain, ProofLog},
    store::{Attachment, Desired, Store, VmRecord},
};

/// Smallest memory a VM may have.
pub const MIN_MEMORY_MIB: u64 = 32;
/// Largest user-data accepted (cloud-init's own practical limit is lower than the ISO's).
pub const MAX_USER_DATA_BYTES: usize = 1 << 20;
const GIB: u64 = 1 << 30;

/// What a reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Running domains taken over as they were.
    pub adopted: Vec<String>,
    /// VMs that should run and were started again.
    pub restarted: Vec<String>,
    /// VMs whose domain was missing and was defined again from the stored spec.
    pub redefined: Vec<String>,
    /// Owned domains without a record, removed with their files.
    pub orphans_removed: Vec<String>,
    /// Deletions interrupted by a crash, finished.
    pub deletions_finished: Vec<String>,
    /// VMs that could not be brought to their desired state.
    pub failed: Vec<String>,
    /// Forwarding rules added because the records hold them and the kernel did not.
    pub rules_added: usize,
    /// Forwarding rules removed: of VMs or ports not in the records, and duplicates.
    pub rules_removed: usize,
    /// HTTPS routes added to Caddy (host names): wanted by running VMs and missing.
    pub routes_added: Vec<String>,
    /// HTTPS routes removed from Caddy (host names): of this node, wanted by no running VM.
    pub routes_removed: Vec<String>,
}

/// The node agent's VM manager. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    identity: Identity,
    resources: NodeResources,
    store: Store,
    hypervisor: Arc<Hypervisor>,
    host_cpus: u32,
    host_memory_mib: u64,
    /// The node's forwarding rules.
    firewall: Firewall,
    /// The node's HTTPS routes in Caddy, when configured.
    ingress: Option<Ingress>,
    /// Serialises lifecycle changes: two operations on libvirt and the database never
    /// interleave.
    ops: Mutex<()>,
    /// Serialises command execution so a repeated command id finds the stored ack.
    commands: Mutex<()>,
    readiness: SyncMutex<HashMap<String, (Readiness, Vec<String>)>>,
    ready: AtomicBool,
    consoles: Consoles,
    /// The chunk store, in the storage role.
    chunks: Option<Arc<ChunkStore>>,
    /// The proof journal and drain mode, in the storage role.
    storage: Option<(Arc<ProofLog>, Drain)>,
    /// The relay role, when on.
    relay: Option<Relay>,
    /// The tunnel to this node's relay, while it has one.
    tunnel: SyncMutex<Option<Tunnel>>,
    /// The tunnel key's binding, once the key exists.
    binding: SyncMutex<Option<TunnelBinding>>,
}

impl Agent {
    /// Opens the state database and the libvirt connection.
    pub async fn open(
        config: Config,
        identity: Identity,
        resources: NodeResources,
    ) -> Result<Self> {
        let vms_dir = config.data_dir.join("vms");
        std::fs::create_dir_all(&vms_dir).map_err(|e| Error::io("creating", &vms_dir, e))?;
        // QEMU runs as its own user under qemu:///system and must reach the VM files.
        set_mode(&config.data_dir, 0o755)?;
        set_mode(&vms_dir, 0o755)?;
        let store = Store::open(&config.data_dir.join("state.db")).await?;
        let chunks = match &config.storage {
            Some(storage) => {
                let (dir, quota) = (storage.dir.clone(), storage.quota_bytes);
                let chunks = tokio::task::spawn_blocking(move || ChunkStore::open(&dir, quota))
                    .await
                    .map_err(|e| Error::Config(e.to_string()))??;
                Some(Arc::new(chunks))
            }
            None => None,
        };
        let storage = match &config.storage {
            Some(storage) => Some((
                Arc::new(ProofLog::open(
                    &config.data_dir.join(crate::storage::PROOF_JOURNAL_FILE),
                )?),
                Drain::new(&config.data_dir, storage.drain),
            )),
            None => None,
        };
        let uri = config.libvirt_uri.clone();
        let hypervisor = tokio::task::spawn_blocking(move || Hypervisor::open(&uri))
            .await
            .map_err(|e| Error::Libvirt(e.to_string()))??;
        let (host_cpus, host_memory_mib) = hypervisor.node_capacity()?;
        info!(target: "agent", uri = %config.libvirt_uri, host_cpus, host_memory_mib, "connected to libvirt");
        let tag = node_tag(&identity.node_id);
        let firewall = if hypervisor.is_simulated() {
            Firewall::for_simulated_vms(tag.clone())
        } else {
            Firewall::new(tag.clone())
        };
        let ingress = config
            .ingress
            .clone()
            .map(|c| Ingress::new(c, &tag))
            .transpose()?;
        let relay = match config.relay.clone() {
            Some(relay_config) => {
                let (tag, dir) = (tag.clone(), config.data_dir.clone());
                Some(
                    tokio::task::spawn_blocking(move || Relay::start(relay_config, &tag, &dir))
                        .await
                        .map_err(|e| Error::Relay(e.to_string()))??,
                )
            }
            None => None,
        };
        let agent = Self {
            inner: Arc::new(Inner {
                config,
                identity,
                resources,
                store,
                hypervisor: Arc::new(hypervisor),
                host_cpus,
                host_memory_mib,
                firewall,
                ingress,
                ops: Mutex::new(()),
                commands: Mutex::new(()),
                readiness: SyncMutex::new(HashMap::new()),
                ready: AtomicBool::new(false),
                consoles: Consoles::default(),
                chunks,
                storage,
                relay,
                tunnel: SyncMutex::new(None),
                binding: SyncMutex::new(None),
            }),
        };
        // A node behind NAT needs its tunnel key from the first heartbeat on: a missing
        // wireguard-tools stops the start with the reason, not each heartbeat.
        if agent.inner.config.behind_nat {
            agent.tunnel_binding().await?;
        }
        Ok(agent)
    }

    /// The node identity.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The state database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The interactive console sessions of the node's VMs.
    pub fn consoles(&self) -> &Consoles {
        &self.inner.consoles
    }

    /// Whether the agent has reconciled and can take commands.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    async fn libvirt<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Hypervisor) -> Result<T> + Send + 'static,
    {
        let hypervisor = self.inner.hypervisor.clone();
        tokio::task::spawn_blocking(move || f(&hypervisor))
            .await
            .map_err(|e| Error::Libvirt(format!("libvirt task failed: {e}")))?
    }

    /// The libvirt domain name of one of this node's VMs.
    pub fn domain_name(&self, vm_id: &str) -> String {
        domain_xml::domain_name(&self.inner.identity.node_id, vm_id)
    }

    /// The MAC address of one of this node's VMs.
    pub fn mac_address(&self, vm_id: &str) -> String {
        domain_xml::mac_address(&self.inner.identity.node_id, vm_id)
    }

    /// Directory of a VM's files.
    pub fn vm_dir(&self, vm_id: &str) -> PathBuf {
        self.inner.config.data_dir.join("vms").join(vm_id)
    }

    fn disk_path(&self, vm_id: &str) -> PathBuf {
        self.vm_dir(vm_id).join("disk.qcow2")
    }

    fn console_path(&self, vm_id: &str) -> PathBuf {
        self.vm_dir(vm_id).join("console.log")
    }

    fn image(&self, name: &str) -> Result<&ImageConfig> {
        self.inner.config.images.get(name).ok_or_else(|| {
            let known: Vec<&str> = self
                .inner
                .config
                .images
                .keys()
                .map(String::as_str)
                .collect();
            Error::InvalidSpec(format!(
                "unknown image {name:?}; this node offers {known:?}"
            ))
        })
    }

    /// Checks a spec against the node without changing anything.
    pub async fn validate(&self, spec: &VmSpec) -> Result<()> {
        validate_id(&spec.id)?;
        if let Some(hostname) = &spec.hostname {
            validate_hostname(hostname)?;
        }
        if spec.vcpus == 0 {
            return Err(Error::InvalidSpec("vcpus must be at least 1".into()));
        }
        if spec.memory_mib < MIN_MEMORY_MIB {
            return Err(Error::InvalidSpec(format!(
                "memory must be at least {MIN_MEMORY_MIB} MiB, got {} MiB",
                spec.memory_mib
            )));
        }
        if spec.disk_gib == 0 {
            return Err(Error::InvalidSpec("disk must be at least 1 GiB".into()));
        }
        for probe in &spec.readiness {
            validate_probe(probe)?;
        }
        self.validate_ingress(&spec.id, &spec.ingress).await?;
        if spec.user_data.len() > MAX_USER_DATA_BYTES {
            return Err(Error::InvalidSpec(format!(
                "user-data is {} bytes, the limit is {MAX_USER_DATA_BYTES}",
                spec.user_data.len()
            )));
        }
        let image = self.image(&spec.image)?;
        let base_size = image_virtual_size(&image.base).await?;
        if spec.disk_gib.saturating_mul(GIB) < base_size {
            return Err(Error::InvalidSpec(format!(
                "disk of {} GiB is smaller than image {} ({base_size} bytes)",
                spec.disk_gib, spec.image
            )));
        }

        let host_millicores = u64::from(self.inner.host_cpus) * 1000;
        let (over_vcpus, over_cores) = spec.quality.overcommit();
        let wanted = u64::from(spec.vcpus) * spec.quality.millicores_per_vcpu();
        if wanted > host_millicores {
            return Err(Error::InvalidSpec(format!(
                "{} vCPUs exceed this host's {} CPUs under the {:?} tier's {over_vcpus}:{over_cores} overcommit (at most {} vCPUs)",
                spec.vcpus,
                self.inner.host_cpus,
                spec.quality,
                host_millicores / spec.quality.millicores_per_vcpu()
            )));
        }

        // Another VM's files: a record with this id, or a directory nobody recorded.
        if self.inner.store.vm(&spec.id).await?.is_some() {
            return Err(Error::InvalidSpec(format!(
                "vm {} already exists on this node; creating it again would overwrite its disk",
                spec.id
            )));
        }
        let dir = self.vm_dir(&spec.id);
        if dir.exists() {
            return Err(Error::InvalidSpec(format!(
                "{} already exists; refusing to overwrite another vm's disk",
                dir.display()
            )));
        }
        let name = self.domain_name(&spec.id);
        if self.libvirt(move |h| h.is_active(&name)).await?.is_some() {
            return Err(Error::InvalidSpec(format!(
                "a libvirt domain named {} already exists",
                self.domain_name(&spec.id)
            )));
        }

        let free = self.free_capacity().await?;
        if wanted > free.millicores {
            return Err(Error::Capacity(format!(
                "{wanted} millicores wanted, {} free",
                free.millicores
            )));
        }
        if spec.memory_mib > free.memory_mib {
            return Err(Error::Capacity(format!(
                "{} MiB of memory wanted, {} MiB free",
                spec.memory_mib, free.memory_mib
            )));
        }
        if spec.disk_gib.saturating_mul(GIB) > free.disk_bytes {
            return Err(Error::Capacity(format!(
                "{} GiB of disk wanted, {} bytes free",
                spec.disk_gib, free.disk_bytes
            )));
        }
        self.plan_gpus(spec).await?;
        Ok(())
    }

    /// Host names must be DNS names, each once on the node; ports must not be 0.
    async fn validate_ingress(&self, vm_id: &str, routes: &[IngressRoute]) -> Result<()> {
        let mut hosts = BTreeSet::new();
        for route in routes {
            if !valid_host(&route.host) {
                return Err(Error::InvalidSpec(format!(
                    "ingress host {:?} is not a lowercase DNS name of at least two labels",
                    route.host
                )));
            }
            if route.guest == 0 {
                return Err(Error::InvalidSpec(format!(
                    "ingress host {} names guest port 0",
                    route.host
                )));
            }
            if !hosts.insert(route.host.as_str()) {
                return Err(Error::InvalidSpec(format!(
                    "ingress host {} is named twice",
                    route.host
                )));
            }
        }
        for record in self.inner.store.vms().await? {
            if record.desired == Desired::Deleted || record.spec.id == vm_id {
                continue;
            }
            if let Some(route) = record
                .spec
                .ingress
                .iter()
                .find(|r| hosts.contains(r.host.as_str()))
            {
                return Err(Error::InvalidSpec(format!(
                    "ingress host {} is already served for vm {}",
                    route.host, record.spec.id
                )));
            }
        }
        Ok(())
    }

    /// The HTTPS routes the node should serve: those of VMs running with a reserved address.
    async fn ingress_rules(&self) -> Result<Vec<IngressRule>> {
        let attachments = self.inner.store.attachments().await?;
        let mut rules = Vec::new();
        for record in self.inner.store.vms().await? {
            if record.desired != Desired::Running || record.state != VmState::Running {
                continue;
            }
            let Some(attachment) = attachments.get(&record.spec.id) else {
                continue;
            };
            rules.extend(record.spec.ingress.iter().map(|r| IngressRule {
                host: r.host.clone(),
                vm_id: record.spec.id.clone(),
                upstream: SocketAddrV4::new(attachment.ip, r.guest),
            }));
        }
        Ok(rules)
    }

    /// Brings Caddy's routes for this node in line with the VMs (see [`Ingress::reconcile`]).
    /// Without an ingress configured there is nothing to do.
    pub async fn sync_ingress(&self) -> Result<IngressReport> {
        let Some(ingress) = &self.inner.ingress else {
            return Ok(IngressReport::default());
        };
        let rules = self.ingress_rules().await?;
        ingress.reconcile(&rules).await
    }

    /// [`Self::sync_ingress`] after a lifecycle change: a failure leaves the VM as it is
    /// and the next observation round tries again.
    async fn sync_ingress_after(&self, vm_id: &str) {
        if let Err(error) = self.sync_ingress().await {
            warn!(target: "agent::ingress", vm = %vm_id, %error, "could not update the ingress; retried in the next round");
        }
    }

    /// The GPUs (PCI addresses) a new VM would get: the lowest free addresses among the
    /// passable ones ([`crate::resources::passable_gpus`]), changing nothing. A node without
    /// enough free GPUs refuses with how many it has and why.
    async fn plan_gpus(&self, spec: &VmSpec) -> Result<Vec<String>> {
        let wanted = spec.gpus as usize;
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let gpus = &self.inner.resources.gpus;
        let passable = crate::resources::passable_gpus(gpus);
        let reserved = self.inner.store.gpu_reservations().await?;
        let free: Vec<String> = passable
            .iter()
            .filter(|g| !reserved.contains_key(&g.pci_address))
            .map(|g| g.pci_address.clone())
            .collect();
        if free.len() < wanted {
            let why = if gpus.is_empty() {
                "this node has no GPU".to_owned()
            } else if passable.is_empty() {
                format!(
                    "none of this node's {} GPUs can be passed through (each needs an IOMMU group of its own)",
                    gpus.len()
                )
            } else {
                format!(
                    "{} of this node's {} passable GPUs are free ({} held by other vms)",
                    free.len(),
                    passable.len(),
                    passable.len() - free.len()
                )
            };
            return Err(Error::Capacity(format!("{wanted} GPUs wanted: {why}")));
        }
        Ok(free.into_iter().take(wanted).collect())
    }

    /// GPUs that could still be given to new VMs.
    pub async fn free_gpus(&self) -> Result<usize> {
        let reserved = self.inner.store.gpu_reservations().await?;
        Ok(crate::resources::passable_gpus(&self.inner.resources.gpus)
            .iter()
            .filter(|g| !reserved.contains_key(&g.pci_address))
            .count())
    }

    /// The PCI devices a VM's domain passes through: its reserved GPUs and the other devices
    /// of their IOMMU groups.
    async fn pci_devices(&self, vm_id: &str) -> Result<Vec<String>> {
        let mut devices = Vec::new();
        for address in self.inner.store.gpus_of(vm_id).await? {
            let gpu = self
                .inner
                .resources
                .gpus
                .iter()
                .find(|g| g.pci_address == address)
                .ok_or_else(|| {
                    Error::Capacity(format!(
                        "GPU {address} reserved for vm {vm_id} is no longer on this host"
                    ))
                })?;
            devices.push(address);
            devices.extend(gpu.iommu_peers.iter().cloned());
        }
        Ok(devices)
    }

    /// Free capacity: host CPUs and memory (less the reserve) minus what VMs hold.
    pub async fn free_capacity(&self) -> Result<Capacity> {
        let vms = self.inner.store.vms().await?;
        let used_millicores: u64 = vms
            .iter()
            .map(|v| u64::from(v.spec.vcpus) * v.spec.quality.millicores_per_vcpu())
            .sum();
        let used_memory: u64 = vms.iter().map(|v| v.spec.memory_mib).sum();
        let memory = self
            .inner
            .host_memory_mib
            .saturating_sub(self.inner.config.reserved_memory_mib);
        let data_dir = self.inner.config.data_dir.clone();
        let disk_bytes =
            tokio::task::spawn_blocking(move || crate::resources::free_bytes(&data_dir))
                .await
                .map_err(|e| Error::Libvirt(e.to_string()))??;
        Ok(Capacity {
            millicores: (u64::from(self.inner.host_cpus) * 1000).saturating_sub(used_millicores),
            memory_mib: memory.saturating_sub(used_memory),
            disk_bytes,
        })
    }

    /// Creates a VM and starts it. A refused spec changes nothing; a failure part-way
    /// removes whatever was made.
    pub async fn create_vm(&self, spec: VmSpec) -> Result<VmReport> {
        let _ops = self.inner.ops.lock().await;
        self.validate(&spec).await?;
        let gpus = self.plan_gpus(&spec).await?;
        let attachment = self.plan_attachment(&spec).await?;
        // Recorded first: the reservation and rules made next are found and finished (or
        // removed) by reconciliation if the agent dies before it is done. The GPUs are held
        // from here on, across restarts, until the VM is deleted.
        self.inner
            .store
            .insert_vm(&spec, Desired::Running, attachment.as_ref(), &gpus)
            .await?;
        info!(target: "agent::vm", vm = %spec.id, image = %spec.image, vcpus = spec.vcpus, memory_mib = spec.memory_mib, ?gpus, forwards = ?attachment.as_ref().map(|a| &a.forwards), "creating vm");
        let made = match &attachment {
            Some(attachment) => self.attach(&spec.id, attachment).await,
            None => Ok(()),
        };
        let made = match made {
            Ok(()) => self.materialize(&spec, true, true).await,
            Err(e) => Err(e),
        };
        let made = match made {
            Ok(uuid) => self.shape(&spec).await.map(|()| uuid),
            Err(e) => Err(e),
        };
        match made {
            Ok(uuid) => {
                self.inner.store.set_domain_uuid(&spec.id, &uuid).await?;
                self.inner
                    .store
                    .set_state(&spec.id, VmState::Running, None, None)
                    .await?;
            }
            Err(error) => {
                warn!(target: "agent::vm", vm = %spec.id, %error, "creation failed, removing what was made");
                let name = self.domain_name(&spec.id);
                if let Err(e) = self.libvirt(move |h| h.remove(&name)).await {
                    warn!(target: "agent::vm", vm = %spec.id, error = %e, "could not remove the domain");
                }
                if let Err(e) = self.unshape(&spec.id).await {
                    warn!(target: "agent::vm", vm = %spec.id, error = %e, "could not remove the shaping device");
                }
                if let Err(e) = self.detach(&spec.id).await {
                    warn!(target: "agent::vm", vm = %spec.id, error = %e, "could not remove the forwarding; the next start's reconciliation will");
                }
                remove_dir(&self.vm_dir(&spec.id));
                self.inner
                    .store
                    .delete_vm(&spec.id, Some(&format!("creation failed: {error}")))
                    .await?;
                return Err(error);
            }
        }
        self.sync_ingress_after(&spec.id).await;
        self.report(&spec.id).await
    }

    /// Makes the VM's files and domain exist (keeping an existing disk) and optionally
    /// starts it. `fresh` demands that the VM directory does not exist yet.
    async fn materialize(&self, spec: &VmSpec, fresh: bool, start: bool) -> Result<String> {
        let image = self.image(&spec.image)?.clone();
        let dir = self.vm_dir(&spec.id);
        let made = if fresh {
            std::fs::create_dir(&dir)
        } else {
            std::fs::create_dir_all(&dir)
        };
        made.map_err(|e| Error::io("creating", &dir, e))?;
        set_mode(&dir, 0o755)?;
        let disk = self.disk_path(&spec.id);
        if !disk.exists() {
            create_overlay(&image.base, &disk, spec.disk_gib).await?;
        }
        let seed_path = dir.join("seed.iso");
        let files = SeedFiles::for_spec(spec, &self.mac_address(&spec.id));
        let seed_target = seed_path.clone();
        tokio::task::spawn_blocking(move || seed::write_iso(&files, &seed_target))
            .await
            .map_err(|e| Error::Libvirt(e.to_string()))??;
        let pci_devices = self.pci_devices(&spec.id).await?;
        let xml = domain_xml::render(&DomainPlan {
            spec,
            node_id: self.inner.identity.node_id,
            domain_type: self.inner.config.domain_type,
            image: &image,
            disk,
            seed: seed_path,
            console_log: self.console_path(&spec.id),
            network: &self.inner.config.network,
            shaping: self.inner.config.bandwidth_shaping,
            pci_devices: &pci_devices,
        });
        let name = self.domain_name(&spec.id);
        self.libvirt(move |h| {
            let uuid = h.define(&xml)?;
            if start {
                h.start(&name)?;
            }
            Ok(uuid)
        })
        .await
    }

    async fn record(&self, vm_id: &str) -> Result<VmRecord> {
        match self.inner.store.vm(vm_id).await? {
            Some(record) if record.desired != Desired::Deleted => Ok(record),
            _ => Err(Error::UnknownVm(vm_id.to_owned())),
        }
    }

    /// Starts a stopped VM (defining its domain again if libvirt lost it).
    pub async fn start_vm(&self, vm_id: &str) -> Result<VmReport> {
        let _ops = self.inner.ops.lock().await;
        let record = self.record(vm_id).await?;
        self.inner
            .store
            .set_desired(vm_id, Desired::Running)
            .await?;
        let name = self.domain_name(vm_id);
        let defined = self.libvirt(move |h| h.is_active(&name)).await?.is_some();
        if defined {
            let name = self.domain_name(vm_id);
            self.libvirt(move |h| h.start(&name)).await?;
        } else {
            let uuid = self.materialize(&record.spec, false, true).await?;
            self.inner.store.set_domain_uuid(vm_id, &uuid).await?;
        }
        self.shape(&record.spec).await?;
        self.inner
            .store
            .set_state(vm_id, VmState::Running, None, None)
            .await?;
        self.sync_ingress_after(vm_id).await;
        self.report(vm_id).await
    }

    /// Replaces the HTTPS routes of a VM this node has, in whatever state: checked as a new
    /// spec's are (a refused list changes nothing), kept in its spec, and served at once when
    /// the VM runs.
    pub async fn set_ingress(&self, vm_id: &str, routes: Vec<IngressRoute>) -> Result<VmReport> {
        let _ops = self.inner.ops.lock().await;
        let mut record = self.record(vm_id).await?;
        self.validate_ingress(vm_id, &routes).await?;
        record.spec.ingress = routes;
        self.inner.store.set_spec(&record.spec).await?;
        info!(target: "agent::ingress", vm = %vm_id, routes = record.spec.ingress.len(), "ingress routes set");
        self.sync_ingress_after(vm_id).await;
        self.report(vm_id).await
    }

    /// Stops a VM: ACPI shutdown, forced off after the configured timeout.
    pub async fn stop_vm(&self, vm_id: &str) -> Result<VmReport> {
        let _ops = self.inner.ops.lock().await;
        self.record(vm_id).await?;
        self.inner
            .store
            .set_desired(vm_id, Desired::Stopped)
            .await?;
        // The routes go first: nothing is sent to a guest that is shutting down.
        self.sync_ingress_after(vm_id).await;
        let outcome = self.stop_domain(vm_id).await?;
        self.unshape(vm_id).await?;
        let reason = (outcome == StopOutcome::Forced)
            .then_some("guest did not shut down in time and was forced off");
        self.inner
            .store
            .set_state(vm_id, VmState::Stopped, None, reason)
            .await?;
        self.report(vm_id).await
    }

    /// Reboots a VM as a power cycle (graceful stop, forced after the configured timeout,
    /// then start), which works whether or not the guest handles ACPI reboot requests.
    /// A stopped VM is simply started: the tenant asked for it to come back up.
    pub async fn reboot_vm(&self, vm_id: &str) -> Result<VmReport> {
        let _ops = self.inner.ops.lock().await;
        let record = self.record(vm_id).await?;
        self.inner
            .store
            .set_desired(vm_id, Desired::Running)
            .await?;
        self.stop_domain(vm_id).await?;
        let name = self.domain_name(vm_id);
        self.libvirt(move |h| h.start(&name)).await?;
        // The power cycle gave the VM a new tap device.
        self.shape(&record.spec).await?;
        self.inner
            .store
            .set_state(vm_id, VmState::Running, None, None)
            .await?;
        self.report(vm_id).await
    }

    async fn stop_domain(&self, vm_id: &str) -> Result<StopOutcome> {
        let name = self.domain_name(vm_id);
        let timeout = Duration::from_secs(self.inner.config.shutdown_timeout_secs);
        let outcome = self.libvirt(move |h| h.stop(&name, timeout)).await?;
        info!(target: "agent::vm", vm = %vm_id, ?outcome, "stopped");
        Ok(outcome)
    }

    /// Stops a VM and removes its domain, disks and record.
    pub async fn delete_vm(&self, vm_id: &str) -> Result<()> {
        let _ops = self.inner.ops.lock().await;
        self.record(vm_id).await?;
        self.inner
            .store
            .set_desired(vm_id, Desired::Deleted)
            .await?;
        self.sync_ingress_after(vm_id).await;
        self.stop_domain(vm_id).await?;
        self.finish_delete(vm_id, None).await
    }

    async fn finish_delete(&self, vm_id: &str, reason: Option<&str>) -> Result<()> {
        let name = self.domain_name(vm_id);
        self.libvirt(move |h| h.remove(&name)).await?;
        // Rules and reservation go before the record: the record frees the public port, and
        // a port must not be handed out again while a rule still points it at this VM.
        self.detach(vm_id).await?;
        self.unshape(vm_id).await?;
        let dir = self.vm_dir(vm_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io("removing", &dir, e))?;
        }
        self.inner.store.delete_vm(vm_id, reason).await?;
        self.inner
            .readiness
            .lock()
            .expect("readiness lock")
            .remove(vm_id);
        info!(target: "agent::vm", vm = %vm_id, "deleted");
        Ok(())
    }

    /// Brings libvirt in line with the database: adopts running domains, starts what should
    /// run, defines again what libvirt lost, finishes interrupted deletions and removes
    /// domains this node owns but has no record of. Domains without this node's ownership
    /// metadata are never touched.
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        let _ops = self.inner.ops.lock().await;
        let node_id = self.inner.identity.node_id;
        let records = self.inner.store.vms().await?;
        let mut report = ReconcileReport::default();
        // The network and the forwarding come first: guests started below need the network,
        // and each should find its reservation in place when it asks for an address.
        let rules = self.reconcile_forwarding(&records).await?;
        report.rules_added = rules.added;
        report.rules_removed = rules.removed;
        let owned = self.libvirt(move |h| h.owned_domains(node_id)).await?;
        for record in &records {
            let id = record.spec.id.clone();
            let domain = owned.iter().find(|d| d.vm_id == id);
            let result = match (record.desired, domain) {
                (Desired::Deleted, _) => self
                    .finish_delete(&id, Some("deletion finished after agent restart"))
                    .await
                    .map(|()| report.deletions_finished.push(id.clone())),
                (Desired::Running, Some(d)) if d.active => {
                    report.adopted.push(id.clone());
                    self.adopt(&id, &d.uuid, VmState::Running).await
                }
                (Desired::Running, Some(d)) => {
                    let name = d.name.clone();
                    match self.libvirt(move |h| h.start(&name)).await {
                        Ok(()) => {
                            report.restarted.push(id.clone());
                            self.adopt(&id, &d.uuid, VmState::Running).await
                        }
                        Err(e) => Err(e),
                    }
                }
                (Desired::Stopped, Some(d)) => {
                    let stopped = if d.active {
                        self.stop_domain(&id).await.map(|_| ())
                    } else {
                        Ok(())
                    };
                    match stopped {
                        Ok(()) => {
                            report.adopted.push(id.clone());
                            self.adopt(&id, &d.uuid, VmState::Stopped).await
                        }
                        Err(e) => Err(e),
                    }
                }
                (desired, None) => {
                    let start = desired == Desired::Running;
                    match self.materialize(&record.spec, false, start).await {
                        Ok(uuid) => {
                            report.redefined.push(id.clone());
                            self.inner.store.set_domain_uuid(&id, &uuid).await?;
                            let state = if start {
                                VmState::Running
                            } else {
                                VmState::Stopped
                            };
                            self.inner
                                .store
                                .set_state(
                                    &id,
                                    state,
                                    None,
                                    Some("domain defined again from the stored spec"),
                                )
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(error) = result {
                warn!(target: "agent::reconcile", vm = %id, %error, "could not reconcile");
                report.failed.push(id.clone());
                self.inner
                    .store
                    .set_state(&id, VmState::Failed, Some(&error.to_string()), None)
                    .await?;
            }
        }
        // Running VMs get their shaping again: a restarted or redefined domain has a new tap,
        // and an adopted one keeps its own (applying it again only replaces it).
        let mut shaped = Vec::new();
        for record in self.inner.store.vms().await? {
            if record.state != VmState::Running {
                continue;
            }
            shaped.push(shaping::ifb_name(
                self.inner.firewall.tag(),
                &record.spec.id,
            ));
            if let Err(error) = self.shape(&record.spec).await {
                warn!(target: "agent::reconcile", vm = %record.spec.id, %error, "could not shape bandwidth");
                report.failed.push(record.spec.id.clone());
            }
        }
        if self.inner.config.bandwidth_shaping == BandwidthShaping::Agent
            && self.inner.config.network != NetworkConfig::User
        {
            let tag = self.inner.firewall.tag().to_owned();
            let stale = tokio::task::spawn_blocking(move || shaping::remove_stale(&tag, &shaped))
                .await
                .map_err(|e| Error::Tool {
                    tool: "tc",
                    message: e.to_string(),
                })??;
            if !stale.is_empty() {
                info!(target: "agent::reconcile", ?stale, "removed shaping devices of vms no longer running");
            }
        }
        for orphan in owned
            .iter()
            .filter(|d| !records.iter().any(|r| r.spec.id == d.vm_id))
        {
            let name = orphan.name.clone();
            self.libvirt(move |h| h.remove(&name)).await?;
            if validate_id(&orphan.vm_id).is_ok() {
                remove_dir(&self.vm_dir(&orphan.vm_id));
            }
            warn!(target: "agent::reconcile", domain = %orphan.name, "removed an owned domain without a record");
            report.orphans_removed.push(orphan.vm_id.clone());
        }
        match self.sync_ingress().await {
            Ok(ingress) => {
                report.routes_added = ingress.added;
                report.routes_removed = ingress.removed;
            }
            Err(error) => {
                warn!(target: "agent::reconcile", %error, "could not reconcile the ingress; retried in the next observation round");
            }
        }
        self.inner.ready.store(true, Ordering::SeqCst);
        info!(target: "agent::reconcile", ?report, "reconciled with libvirt");
        Ok(report)
    }

    /// Caps a running VM's NIC at its tier when the agent does the shaping (see
    /// [`crate::shaping`]); nothing for unmetered tiers, user networking or libvirt shaping.
    async fn shape(&self, spec: &VmSpec) -> Result<()> {
        let config = &self.inner.config;
        if config.bandwidth_shaping != BandwidthShaping::Agent
            || config.network == NetworkConfig::User
        {
            return Ok(());
        }
        let Some(mbps) = spec.bandwidth.mbps() else {
            return Ok(());
        };
        let name = self.domain_name(&spec.id);
        let Some(tap) = self.libvirt(move |h| h.nic_device(&name)).await? else {
            return Ok(());
        };
        if !Path::new("/sys/class/net").join(&tap).exists() {
            // A remote or simulated hypervisor (libvirt's test driver): the device is not
            // on this host, so there is nothing here to shape.
            warn!(target: "agent::vm", vm = %spec.id, %tap, "the vm's network device is not on this host; bandwidth is not shaped");
            return Ok(());
        }
        let ifb = shaping::ifb_name(self.inner.firewall.tag(), &spec.id);
        tokio::task::spawn_blocking(move || shaping::apply(&tap, &ifb, mbps))
            .await
            .map_err(|e| Error::Tool {
                tool: "tc",
                message: e.to_string(),
            })??;
        info!(target: "agent::vm", vm = %spec.id, mbps, "bandwidth capped");
        Ok(())
    }

    /// Removes the VM's shaping device (its tap's qdiscs went with the domain).
    async fn unshape(&self, vm_id: &str) -> Result<()> {
        if self.inner.config.bandwidth_shaping != BandwidthShaping::Agent {
            return Ok(());
        }
        let ifb = shaping::ifb_name(self.inner.firewall.tag(), vm_id);
        tokio::task::spawn_blocking(move || shaping::remove(&ifb))
            .await
            .map_err(|e| Error::Tool {
                tool: "tc",
                message: e.to_string(),
            })?
    }

    /// The NAT network's name, when guests attach to one (the only mode with forwarding).
    fn nat_network_name(&self) -> Option<String> {
        match &self.inner.config.network {
            NetworkConfig::Network { name } => Some(name.clone()),
            NetworkConfig::Bridge { .. } | NetworkConfig::User => None,
        }
    }

    /// Makes the NAT network exist and run (see [`Hypervisor::ensure_network`]).
    async fn ensure_network(&self) -> Result<Option<NatNetwork>> {
        let Some(name) = self.nat_network_name() else {
            return Ok(None);
        };
        let subnet = self.inner.config.network_subnet;
        let (network, created) = self
            .libvirt(move |h| h.ensure_network(&name, subnet))
            .await?;
        if created {
            info!(target: "agent::network", network = %network.name, subnet = %network.subnet, "created the NAT network");
        }
        Ok(Some(network))
    }

    /// Chooses a new VM's MAC, reserved address and public ports, changing nothing. Each
    /// distinct (protocol, guest port) of the spec gets the lowest free port of the range:
    /// not held by a VM of this node, not in another agent's rules, and not bound by a
    /// service of the host (a DNAT rule would silently take its traffic).
    async fn plan_attachment(&self, spec: &VmSpec) -> Result<Option<Attachment>> {
        let mut wanted: Vec<(PortProtocol, u16)> = Vec::new();
        for port in &spec.ports {
            if port.guest == 0 {
                return Err(Error::InvalidSpec(
                    "guest port 0 cannot be forwarded".into(),
                ));
            }
            if !wanted.contains(&(port.protocol, port.guest)) {
                wanted.push((port.protocol, port.guest));
            }
        }
        let Some(network) = self.ensure_network().await? else {
            if !wanted.is_empty() {
                warn!(target: "agent::vm", vm = %spec.id, network = ?self.inner.config.network, "ports are forwarded only on a libvirt NAT network; this vm gets none");
            }
            return Ok(None);
        };
        let attachments = self.inner.store.attachments().await?;
        let mac = self.mac_address(&spec.id);
        if let Some((other, _)) = attachments.iter().find(|(_, a)| a.mac == mac) {
            return Err(Error::InvalidSpec(format!(
                "vm id {} would get the MAC address {mac} of vm {other}; use another id",
                spec.id
            )));
        }
        // Addresses of this node's VMs, every address the network reserves for anyone
        // (another agent on the same network, or a reservation left by an earlier node), and
        // every address another MAC still holds a lease on (a deleted VM's, which dnsmasq
        // keeps until it expires and would not give to this MAC).
        let mut taken: Vec<Ipv4Addr> = attachments.values().map(|a| a.ip).collect();
        taken.extend(network.hosts.iter().map(|h| h.ip));
        let name = network.name.clone();
        let leases = self.libvirt(move |h| h.dhcp_leases(&name)).await?;
        taken.extend(
            leases
                .iter()
                .filter(|l| !l.mac.eq_ignore_ascii_case(&mac))
                .map(|l| l.ip),
        );
        let last = self.inner.store.last_reserved_ip().await?;
        let ip = network.free_address(&taken, last).ok_or_else(|| {
            Error::Capacity(format!(
                "no free address left in network {} ({})",
                network.name, network.subnet
            ))
        })?;
        let mut used: BTreeSet<u16> = self.inner.store.public_ports().await?;
        // Ports redirected by rules on the host (another agent's, or an operator's own).
        if !wanted.is_empty() {
            let firewall = self.inner.firewall.clone();
            let in_rules = tokio::task::spawn_blocking(move || firewall.public_ports_in_use())
                .await
                .map_err(|e| Error::Libvirt(e.to_string()))??;
            used.extend(in_rules);
        }
        let range = self.inner.config.public_port_range;
        let mut forwards = Vec::new();
        for (protocol, guest) in wanted {
            let public = range
                .ports()
                .find(|p| !used.contains(p) && host_port_free(protocol, *p))
                .ok_or_else(|| {
                    Error::Capacity(format!(
                        "no free public port for {protocol}/{guest}: all {} ports of the range {range} are taken",
                        range.len()
                    ))
                })?;
            used.insert(public);
            forwards.push(PortForward {
                guest,
                public,
                protocol,
            });
        }
        Ok(Some(Attachment {
            network: network.name,
            mac,
            ip,
            forwards,
        }))
    }

    fn reservation(&self, vm_id: &str, attachment: &Attachment) -> DhcpHost {
        DhcpHost {
            mac: attachment.mac.clone(),
            ip: attachment.ip,
            name: Some(reservation_name(self.inner.firewall.tag(), vm_id)),
        }
    }

    /// Makes a VM's DHCP reservation and forwarding rules (each only if missing).
    async fn attach(&self, vm_id: &str, attachment: &Attachment) -> Result<()> {
        let host = self.reservation(vm_id, attachment);
        let prefix = reservation_prefix(self.inner.firewall.tag());
        let network = attachment.network.clone();
        self.libvirt(move |h| h.reserve(&network, &host, &prefix))
            .await?;
        let rules: Vec<ForwardRule> = attachment
            .forwards
            .iter()
            .map(|f| ForwardRule::new(vm_id, attachment.ip, f))
            .collect();
        let firewall = self.inner.firewall.clone();
        tokio::task::spawn_blocking(move || rules.iter().try_for_each(|r| firewall.add(r)))
            .await
            .map_err(|e| Error::Libvirt(e.to_string()))?
    }

    /// Removes a VM's forwarding rules and DHCP reservation; its records stay.
    async fn detach(&self, vm_id: &str) -> Result<()> {
        let Some(attachment) = self.inner.store.attachment(vm_id).await? else {
            return Ok(());
        };
        let firewall = self.inner.firewall.clone();
        let id = vm_id.to_owned();
        let removed = tokio::task::spawn_blocking(move || firewall.remove_vm(&id))
            .await
            .map_err(|e| Error::Libvirt(e.to_string()))??;
        let host = self.reservation(vm_id, &attachment);
        let network = attachment.network.clone();
        self.libvirt(move |h| h.release(&network, &host)).await?;
        info!(target: "agent::vm", vm = %vm_id, rules = removed, "removed forwarding and reservation");
        Ok(())
    }

    /// Brings the network, the reservations and the rules in line with the records: the
    /// records of VMs not being deleted are what should exist; this node's reservations and
    /// rules beyond them go, anyone else's stay.
    async fn reconcile_forwarding(
        &self,
        records: &[VmRecord],
    ) -> Result<crate::firewall::FirewallReport> {
        let live: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.desired != Desired::Deleted)
            .map(|r| r.spec.id.as_str())
            .collect();
        let attachments: Vec<(String, Attachment)> = self
            .inner
            .store
            .attachments()
            .await?
            .into_iter()
            .filter(|(id, _)| live.contains(id.as_str()))
            .collect();
        let network = self.ensure_network().await?;
        if network.is_none() && attachments.is_empty() {
            return Ok(Default::default());
        }
        let prefix = reservation_prefix(self.inner.firewall.tag());
        for (id, attachment) in &attachments {
            let host = self.reservation(id, attachment);
            let (network, prefix) = (attachment.network.clone(), prefix.clone());
            self.libvirt(move |h| h.reserve(&network, &host, &prefix))
                .await?;
        }
        if let Some(network) = network {
            for stale in network.hosts.iter().filter(|h| {
                h.name.as_deref().is_some_and(|n| {
                    n.strip_prefix(&prefix)
                        .is_some_and(|id| !attachments.iter().any(|(a, _)| a == id))
                })
            }) {
                let (name, host) = (network.name.clone(), stale.clone());
                self.libvirt(move |h| h.release(&name, &host)).await?;
                info!(target: "agent::reconcile", mac = %stale.mac, ip = %stale.ip, "removed a reservation without a record");
            }
        }
        let desired: Vec<ForwardRule> = attachments
            .iter()
            .flat_map(|(id, a)| a.forwards.iter().map(|f| ForwardRule::new(id, a.ip, f)))
            .collect();
        let firewall = self.inner.firewall.clone();
        tokio::task::spawn_blocking(move || firewall.reconcile(&desired))
            .await
            .map_err(|e| Error::Libvirt(e.to_string()))?
    }

    async fn adopt(&self, id: &str, uuid: &str, state: VmState) -> Result<()> {
        self.inner.store.set_domain_uuid(id, uuid).await?;
        self.inner.store.set_state(id, state, None, None).await
    }

    /// One observation round: records state changes libvirt shows (a guest that powered
    /// itself off, a domain that vanished) and runs the readiness probes.
    pub async fn observe(&self) -> Result<()> {
        let records = {
            let _ops = self.inner.ops.lock().await;
            let records = self.inner.store.vms().await?;
            for record in &records {
                if !matches!(record.state, VmState::Running | VmState::Stopped) {
                    continue;
                }
                let id = record.spec.id.clone();
                let name = self.domain_name(&id);
                match (
                    record.state,
                    self.libvirt(move |h| h.is_active(&name)).await?,
                ) {
                    (VmState::Running, Some(false)) => {
                        // Like a cloud instance shut down from inside: it stays stopped.
                        self.inner.store.set_desired(&id, Desired::Stopped).await?;
                        self.inner
                            .store
                            .set_state(&id, VmState::Stopped, None, Some("guest powered off"))
                            .await?;
                        if let Err(error) = self.unshape(&id).await {
                            warn!(target: "agent::observe", vm = %id, %error, "could not remove the shaping device");
                        }
                    }
                    (VmState::Stopped, Some(true)) => {
                        self.inner.store.set_desired(&id, Desired::Running).await?;
                        self.inner
                            .store
                            .set_state(
                                &id,
                                VmState::Running,
                                None,
                                Some("started outside the agent"),
                            )
                            .await?;
                        if let Err(error) = self.shape(&record.spec).await {
                            warn!(target: "agent::observe", vm = %id, %error, "could not shape bandwidth");
                        }
                    }
                    (_, None) => {
                        self.inner
                            .store
                            .set_state(
                                &id,
                                VmState::Failed,
                                Some("domain disappeared from libvirt"),
                                None,
                            )
                            .await?;
                    }
                    _ => {}
                }
            }
            // Every round, so routes a change could not make (Caddy down, restarted without
            // its config) are made as soon as it answers.
            if let Err(error) = self.sync_ingress().await {
                warn!(target: "agent::observe", %error, "could not reconcile the ingress");
            }
            self.inner.store.vms().await?
        };
        for record in records {
            let id = record.spec.id.clone();
            let name = self.domain_name(&id);
            let running = record.state == VmState::Running;
            let addresses = if running {
                self.libvirt(move |h| Ok(h.addresses(&name))).await?
            } else {
                Vec::new()
            };
            let hypervisor = self.inner.hypervisor.clone();
            let exec = |command: Vec<String>| {
                let (hypervisor, name) = (hypervisor.clone(), self.domain_name(&id));
                async move {
                    tokio::task::spawn_blocking(move || {
                        let timeout_secs = readiness::PROBE_TIMEOUT.as_secs() as i32;
                        let mut send = |json: &str| {
                            hypervisor
                                .guest_agent_command(&name, json, timeout_secs)
                                .map_err(|e| e.to_string())
                        };
                        crate::guest_exec::run(&mut send, &command, readiness::PROBE_TIMEOUT)
                    })
                    .await
                    .map_err(|e| format!("guest command task failed: {e}"))?
                }
            };
            let readiness = readiness::check(
                &record.spec.readiness,
                running,
                &addresses,
                &self.console_path(&id),
                exec,
            )
            .await;
            self.inner
                .readiness
                .lock()
                .expect("readiness lock")
                .insert(id, (readiness, addresses));
        }
        Ok(())
    }

    /// Report of one VM.
    pub async fn report(&self, vm_id: &str) -> Result<VmReport> {
        let record = self
            .inner
            .store
            .vm(vm_id)
            .await?
            .ok_or_else(|| Error::UnknownVm(vm_id.to_owned()))?;
        let forwards = self
            .inner
            .store
            .forwards()
            .await?
            .remove(vm_id)
            .unwrap_or_default();
        Ok(self.report_of(&record, forwards))
    }

    fn report_of(&self, record: &VmRecord, forwards: Vec<PortForward>) -> VmReport {
        let known = self
            .inner
            .readiness
            .lock()
            .expect("readiness lock")
            .get(&record.spec.id)
            .cloned();
        // Before the first observation round every check is listed, not yet run, so the
        // tenant sees from the start which services are waited for.
        let (mut readiness, addresses) = known.unwrap_or_else(|| {
            (
                Readiness {
                    ready: record.spec.readiness.is_empty(),
                    probes: record
                        .spec
                        .readiness
                        .iter()
                        .map(|probe| ProbeResult {
                            probe: probe.clone(),
                            ok: false,
                            detail: Some("not checked yet".into()),
                            checked_at: None,
                        })
                        .collect(),
                },
                Vec::new(),
            )
        });
        readiness.ready &= record.state == VmState::Running;
        VmReport {
            id: record.spec.id.clone(),
            state: record.state,
            readiness,
            addresses,
            forwards,
            error: record.error.clone(),
        }
    }

    /// Reports of every VM that is not being deleted.
    pub async fn reports(&self) -> Result<Vec<VmReport>> {
        let mut forwards = self.inner.store.forwards().await?;
        Ok(self
            .inner
            .store
            .vms()
            .await?
            .iter()
            .filter(|r| r.desired != Desired::Deleted)
            .map(|r| self.report_of(r, forwards.remove(&r.spec.id).unwrap_or_default()))
            .collect())
    }

    /// The chunk store, when the node is in the storage role.
    pub fn chunk_store(&self) -> Option<&Arc<ChunkStore>> {
        self.inner.chunks.as_ref()
    }

    /// The proof journal, when the node is in the storage role.
    pub fn proof_log(&self) -> Option<&Arc<ProofLog>> {
        self.inner.storage.as_ref().map(|(log, _)| log)
    }

    /// Drain mode, when the node is in the storage role.
    pub fn drain(&self) -> Option<&Drain> {
        self.inner.storage.as_ref().map(|(_, drain)| drain)
    }

    /// Builds a heartbeat with every pending event.
    pub async fn heartbeat(&self, seq: u64) -> Result<Heartbeat> {
        Ok(Heartbeat {
            seq,
            sent_at: crate::store::now(),
            ready: self.is_ready(),
            public_address: self.inner.config.public_address.clone(),
            ingress: Some(self.inner.config.ingress.is_some()),
            resources: self.inner.resources.clone(),
            free: self.free_capacity().await?,
            vms: self.reports().await?,
            events: self.inner.store.pending_events().await?,
            storage: self.inner.chunks.as_ref().map(|chunks| StorageReport {
                url: (self.inner.config.storage.as_ref())
                    .and_then(|s| s.public_url.as_ref())
                    .map(ToString::to_string),
                draining: self.drain().is_some_and(Drain::is_draining),
                proofs: self
                    .proof_log()
                    .map(|log| log.reports())
                    .unwrap_or_default(),
                ..chunks.report()
            }),
            relay: self.relay_report().await?,
            tunnel: self.tunnel_report().await?,
        })
    }

    /// The relay role's report: key, endpoint, published nodes and bytes per VM.
    async fn relay_report(&self) -> Result<Option<RelayReport>> {
        let Some(relay) = &self.inner.relay else {
            return Ok(None);
        };
        let inner = self.inner.clone();
        let traffic = tokio::task::spawn_blocking(move || match &inner.relay {
            Some(relay) => relay.traffic(),
            None => Ok(Vec::new()),
        })
        .await
        .map_err(|e| Error::Relay(e.to_string()))??;
        Ok(Some(RelayReport {
            key: relay.public_key(),
            endpoint: relay.endpoint(),
            tunnel_address: relay.address(),
            nodes: relay.nodes().iter().map(|n| n.node_id).collect(),
            traffic,
            // Validated when the relay started: the orchestrator gives tunnel addresses and
            // relay ports from these.
            tunnel_prefix: relay.config().subnet().ok().map(|s| s.prefix),
            ports: relay.config().ports().ok().map(|r| RelayPorts {
                first: r.first,
                last: r.last,
            }),
        }))
    }

    /// The tunnel's report, for a node declared behind NAT or with a tunnel now.
    async fn tunnel_report(&self) -> Result<Option<TunnelReport>> {
        let relay_node_id = self
            .inner
            .tunnel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Tunnel::relay);
        if relay_node_id.is_none() && !self.inner.config.behind_nat {
            return Ok(None);
        }
        let binding = self.tunnel_binding().await?;
        let latest_handshake = self
            .tunnel_status()?
            .map(|peer| peer.latest_handshake)
            .filter(|at| *at > 0);
        Ok(Some(TunnelReport {
            binding,
            relay_node_id,
            latest_handshake,
        }))
    }

    /// Executes a command once: a command id seen before gets its stored acknowledgement
    /// again without running again.
    pub async fn execute(&self, command: Command) -> Result<Ack> {
        let _commands = self.inner.commands.lock().await;
        if let Some(ack) = self.inner.store.command_ack(&command.id).await? {
            info!(target: "agent::command", id = %command.id, "repeated command, sending the stored ack");
            return Ok(ack);
        }
        if !self.is_ready() {
            return Err(Error::Link("agent is not reconciled yet".into()));
        }
        info!(target: "agent::command", id = %command.id, action = ?std::mem::discriminant(&command.action), "executing");
        // Recorded with the outcome: a repeat of this command id answers which user-data ran.
        let user_data_sha256 = match &command.action {
            CommandAction::CreateVm { spec } => Some(
                decloud_sdk::agent_protocol::user_data_sha256(&spec.user_data),
            ),
            _ => None,
        };
        let result = match command.action {
            CommandAction::CreateVm { spec } => self.create_vm(spec).await.map(Some),
            CommandAction::StartVm { vm_id } => self.start_vm(&vm_id).await.map(Some),
            CommandAction::StopVm { vm_id } => self.stop_vm(&vm_id).await.map(Some),
            CommandAction::RebootVm { vm_id } => self.reboot_vm(&vm_id).await.map(Some),
            CommandAction::DeleteVm { vm_id } => self.delete_vm(&vm_id).await.map(|()| None),
            CommandAction::SetIngress { vm_id, routes } => {
                self.set_ingress(&vm_id, routes).await.map(Some)
            }
            CommandAction::JoinRelay { assignment } => {
                self.join_relay(assignment).await.map(|()| None)
            }
            CommandAction::LeaveRelay => self.leave_relay().map(|()| None),
            CommandAction::PublishNode { node } => match self.relay() {
                Ok(relay) => relay.publish(node).await.map(|()| None),
                Err(e) => Err(e),
            },
            CommandAction::UnpublishNode { node_id } => match self.relay() {
                Ok(relay) => relay.unpublish(node_id).await.map(|()| None),
                Err(e) => Err(e),
            },
        };
        let outcome = match result {
            Ok(vm) => AckOutcome::Done {
                vm,
                user_data_sha256,
            },
            Err(Error::Db(e)) => return Err(Error::Db(e)),
            Err(e) => AckOutcome::Failed {
                error: e.to_string(),
            },
        };
        let ack = Ack {
            command_id: command.id,
            outcome,
        };
        self.inner.store.record_command(&ack).await?;
        Ok(ack)
    }

    /// Names of libvirt domains owned by this node.
    pub async fn owned_domains(&self) -> Result<Vec<crate::hypervisor::OwnedDomain>> {
        let node_id = self.inner.identity.node_id;
        self.libvirt(move |h| h.owned_domains(node_id)).await
    }

    /// Runs a closure on the agent's libvirt connection (for tools and tests that must see
    /// the same in-process driver state).
    pub async fn with_hypervisor<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Hypervisor) -> Result<T> + Send + 'static,
    {
        self.libvirt(f).await
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.inner
            .tunnel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(relay) = &self.inner.relay
            && let Err(error) = relay.shutdown().await
        {
            warn!(target: "agent::relay", %error, "could not take the relay down cleanly");
        }
        self.inner.store.close().await;
    }

    /// The relay role, or a refusal when this node is not a relay.
    pub fn relay(&self) -> Result<&Relay> {
        self.inner
            .relay
            .as_ref()
            .ok_or_else(|| Error::Relay("this node is not a relay (no [relay] section)".into()))
    }

    /// The node's tunnel key (made on first use) bound to its node key, for the orchestrator
    /// to pass to the relay it assigns.
    pub async fn tunnel_binding(&self) -> Result<TunnelBinding> {
        if let Some(binding) = self
            .inner
            .binding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(binding);
        }
        let inner = self.inner.clone();
        let binding = tokio::task::spawn_blocking(move || {
            tunnel_binding(&inner.identity, &inner.config.data_dir).map(|(_, binding)| binding)
        })
        .await
        .map_err(|e| Error::Relay(e.to_string()))??;
        *self.inner.binding.lock().unwrap_or_else(|e| e.into_inner()) = Some(binding.clone());
        Ok(binding)
    }

    /// Dials the relay of `assignment` and holds a tunnel to it, replacing an earlier one.
    pub async fn join_relay(&self, assignment: RelayAssignment) -> Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let (keys, _) = tunnel_binding(&inner.identity, &inner.config.data_dir)?;
            let tag = node_tag(&inner.identity.node_id);
            let mut tunnel = inner.tunnel.lock().unwrap_or_else(|e| e.into_inner());
            // The old tunnel holds the interface name the new one takes.
            tunnel.take();
            *tunnel = Some(Tunnel::join(&tag, &keys, assignment)?);
            Ok(())
        })
        .await
        .map_err(|e| Error::Relay(e.to_string()))?
    }

    /// Closes the tunnel to the relay.
    pub fn leave_relay(&self) -> Result<()> {
        let mut tunnel = self.inner.tunnel.lock().unwrap_or_else(|e| e.into_inner());
        match tunnel.take() {
            Some(_) => Ok(()),
            None => Err(Error::Relay("this node has no relay".into())),
        }
    }

    /// The relay's peer as this node's tunnel sees it; `None` without a tunnel.
    pub fn tunnel_status(&self) -> Result<Option<PeerStatus>> {
        let tunnel = self.inner.tunnel.lock().unwrap_or_else(|e| e.into_inner());
        match tunnel.as_ref() {
            Some(tunnel) => tunnel.status(),
            None => Ok(None),
        }
    }
}

/// VM ids are path and domain-name components: 1 to 48 of `a-z0-9-`, not starting with `-`.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 48
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec(format!(
            "vm id {id:?} must be 1 to 48 characters of a-z, 0-9 and '-', not starting with '-'"
        )))
    }
}

/// A readiness check the agent can run: an HTTP path starting with `/` without whitespace
/// (it goes into a URL), an expected status that is an HTTP status, a command with an absolute
/// program path (the guest agent runs it without a shell's `PATH`).
fn validate_probe(probe: &ReadinessProbe) -> Result<()> {
    match probe {
        ReadinessProbe::CloudInit | ReadinessProbe::Tcp { .. } => Ok(()),
        ReadinessProbe::Http {
            path,
            expect_status,
            ..
        } => {
            if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
                return Err(Error::InvalidSpec(format!(
                    "readiness path {path:?} must start with '/' and contain no whitespace"
                )));
            }
            match expect_status {
                Some(status) if !(100..=599).contains(status) => Err(Error::InvalidSpec(format!(
                    "readiness status {status} is not an HTTP status"
                ))),
                _ => Ok(()),
            }
        }
        ReadinessProbe::Exec { command } => match command.first() {
            Some(program) if program.starts_with('/') => Ok(()),
            Some(program) => Err(Error::InvalidSpec(format!(
                "readiness command {program:?} must be an absolute path in the guest"
            ))),
            None => Err(Error::InvalidSpec("readiness command is empty".into())),
        },
    }
}

fn validate_hostname(hostname: &str) -> Result<()> {
    let ok = !hostname.is_empty()
        && hostname.len() <= 63
        && !hostname.starts_with('-')
        && hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec(format!(
            "hostname {hostname:?} is not a valid host label"
        )))
    }
}

/// Whether no socket of the host holds `port` for `protocol` (on any address).
fn host_port_free(protocol: PortProtocol, port: u16) -> bool {
    match protocol {
        PortProtocol::Tcp => std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
        PortProtocol::Udp => std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok(),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("setting permissions of", path, e))
}

fn remove_dir(dir: &Path) {
    if dir.exists()
        && let Err(error) = std::fs::remove_dir_all(dir)
    {
        warn!(target: "agent::vm", dir = %dir.display(), %error, "could not remove");
    }
}

/// Virtual size of a disk image in bytes, from `qemu-img info`.
pub async fn image_virtual_size(path: &Path) -> Result<u64> {
    if !path.is_file() {
        return Err(Error::InvalidSpec(format!(
            "base image {} does not exist on this node",
            path.display()
        )));
    }
    let output = tokio::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(path)
        .output()
        .await
        .map_err(|e| Error::Tool {
            tool: "qemu-img",
            message: format!("cannot run it ({e}); install qemu-utils"),
        })?;
    if !output.status.success() {
        return Err(Error::Tool {
            tool: "qemu-img",
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let info: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| Error::Tool {
            tool: "qemu-img",
            message: format!("unreadable info: {e}"),
        })?;
    info["virtual-size"].as_u64().ok_or_else(|| Error::Tool {
        tool: "qemu-img",
        message: "no virtual-size in its info".into(),
    })
}

/// Creates a qcow2 overlay of `size_gib` on `base` (written under a temporary name and
/// renamed, so a crash never leaves a half-made disk under the real name).
async fn create_overlay(base: &Path, disk: &Path, size_gib: u64) -> Result<()> {
    let partial = disk.with_extension("qcow2.partial");
    let output = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(base)
        .arg(&partial)
        .arg(format!("{size_gib}G"))
        .output()
        .await
        .map_err(|e| Error::Tool {
            tool: "qemu-img",
            message: format!("cannot run it ({e}); install qemu-utils"),
        })?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::Tool {
            tool: "qemu-img",
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    std::fs::rename(&partial, disk).map_err(|e| Error::io("moving the disk to", disk, e))
}

/// Creates an empty qcow2 image (for tests and the benchmark's base image).
pub fn create_blank_qcow2(path: &Path, size_mib: u64) -> Result<()> {
    let output = Process::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(format!("{size_mib}M"))
        .output()
        .map_err(|e| Error::Tool {
            tool: "qemu-img",
            message: format!("cannot run it ({e}); install qemu-utils"),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Tool {
            tool: "qemu-img",
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
