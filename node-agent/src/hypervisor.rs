//! Blocking libvirt operations through the `virt` crate. The async agent calls these from
//! `spawn_blocking`.

use std::time::{Duration, Instant};

use alloy::primitives::B256;
use virt::{connect::Connect, domain::Domain, error::ErrorNumber, sys};

use crate::{
    domain_xml::{DOMAIN_PREFIX, owned_vm_id},
    error::{Error, Result},
};

/// A libvirt connection.
#[derive(Debug)]
pub struct Hypervisor {
    pub(crate) conn: Connect,
    uri: String,
}

/// A domain carrying this node's ownership metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedDomain {
    /// Domain name.
    pub name: String,
    /// VM id from the metadata.
    pub vm_id: String,
    /// libvirt UUID.
    pub uuid: String,
    /// Whether it runs.
    pub active: bool,
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It was not running.
    AlreadyStopped,
    /// The guest shut down by itself after the ACPI request.
    Graceful,
    /// The guest did not shut down in time and was forced off.
    Forced,
}

fn is_no_domain(e: &virt::error::Error) -> bool {
    matches!(e.code(), ErrorNumber::NoDomain)
}

impl Hypervisor {
    /// Connects to `uri` (`qemu:///system`, `test:///default`, …).
    pub fn open(uri: &str) -> Result<Self> {
        // libvirt prints every error to stderr by default; ours go through Result and tracing.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri))
            .map_err(|e| Error::Libvirt(format!("cannot connect to {uri}: {}", e.message())))?;
        Ok(Self {
            conn,
            uri: uri.to_owned(),
        })
    }

    /// The URI this connection was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether the VMs are simulated (libvirt's test driver): nothing boots, and no guest
    /// has an address or a network device on this host.
    pub fn is_simulated(&self) -> bool {
        self.uri.starts_with("test:")
    }

    fn lookup(&self, name: &str) -> Result<Option<Domain>> {
        match Domain::lookup_by_name(&self.conn, name) {
            Ok(domain) => Ok(Some(domain)),
            Err(e) if is_no_domain(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Defines (or redefines) a persistent domain; returns its UUID.
    pub fn define(&self, xml: &str) -> Result<String> {
        let domain = Domain::define_xml(&self.conn, xml)?;
        Ok(domain.get_uuid_string()?)
    }

    /// Starts a defined domain; starting a running one is a no-op.
    pub fn start(&self, name: &str) -> Result<()> {
        let domain = self
            .lookup(name)?
            .ok_or_else(|| Error::Libvirt(format!("no domain {name}")))?;
        if !domain.is_active()? {
            domain.create()?;
        }
        Ok(())
    }

    /// Whether the domain runs; `None` when it is not defined.
    pub fn is_active(&self, name: &str) -> Result<Option<bool>> {
        Ok(match self.lookup(name)? {
            Some(domain) => Some(domain.is_active()?),
            None => None,
        })
    }

    /// UUID of a domain, `None` when it is not defined.
    pub fn uuid(&self, name: &str) -> Result<Option<String>> {
        Ok(match self.lookup(name)? {
            Some(domain) => Some(domain.get_uuid_string()?),
            None => None,
        })
    }

    /// Asks the guest to shut down (ACPI) and forces it off after `timeout`.
    pub fn stop(&self, name: &str, timeout: Duration) -> Result<StopOutcome> {
        let Some(domain) = self.lookup(name)? else {
            return Ok(StopOutcome::AlreadyStopped);
        };
        if !domain.is_active()? {
            return Ok(StopOutcome::AlreadyStopped);
        }
        // A guest without ACPI support refuses the request; it is then forced off below.
        let asked = domain.shutdown().is_ok();
        let deadline = Instant::now() + timeout;
        while asked && Instant::now() < deadline {
            if !domain.is_active()? {
                return Ok(StopOutcome::Graceful);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        match domain.destroy() {
            Ok(()) => Ok(StopOutcome::Forced),
            // It went down between the last check and the destroy.
            Err(_) if !domain.is_active()? => Ok(StopOutcome::Graceful),
            Err(e) => Err(e.into()),
        }
    }

    /// Forces a domain off (if running) and removes its definition; a missing domain is fine.
    pub fn remove(&self, name: &str) -> Result<()> {
        let Some(domain) = self.lookup(name)? else {
            return Ok(());
        };
        if domain.is_active()? {
            domain.destroy()?;
        }
        // NVRAM and managed-save images are per-domain files libvirt created; they go too.
        let flags = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
        match domain.undefine_flags(flags) {
            Ok(()) => Ok(()),
            // Drivers without NVRAM support reject the flag; the plain call does the same job.
            Err(_) => Ok(domain.undefine()?),
        }
    }

    /// Sends one command (JSON text) to a running domain's QEMU guest agent through libvirt
    /// and returns the agent's reply. Fails when the guest has no agent answering, and on
    /// drivers without guest agents (libvirt's test driver says "not supported").
    pub fn guest_agent_command(
        &self,
        name: &str,
        command: &str,
        timeout_secs: i32,
    ) -> Result<String> {
        let domain = self
            .lookup(name)?
            .ok_or_else(|| Error::Libvirt(format!("no domain {name}")))?;
        domain
            .qemu_agent_command(command, timeout_secs, 0)
            .map_err(|e| Error::Libvirt(e.message().to_owned()))
    }

    /// The XML libvirt holds for a domain (its live definition when it runs), `None` when
    /// it is not defined.
    pub fn domain_xml(&self, name: &str) -> Result<Option<String>> {
        Ok(match self.lookup(name)? {
            Some(domain) => Some(domain.get_xml_desc(0)?),
            None => None,
        })
    }

    /// Every domain on the connection that carries `node_id`'s ownership metadata.
    pub fn owned_domains(&self, node_id: B256) -> Result<Vec<OwnedDomain>> {
        let mut owned = Vec::new();
        for domain in self.conn.list_all_domains(0)? {
            // A domain undefined by someone else between the listing and these calls is
            // simply gone; it is not an error of the listing.
            let inspect = || -> std::result::Result<Option<OwnedDomain>, virt::error::Error> {
                let name = domain.get_name()?;
                if !name.starts_with(DOMAIN_PREFIX) {
                    return Ok(None);
                }
                let xml = domain.get_xml_desc(0)?;
                let Some(vm_id) = owned_vm_id(&xml, node_id) else {
                    return Ok(None);
                };
                Ok(Some(OwnedDomain {
                    name,
                    vm_id,
                    uuid: domain.get_uuid_string()?,
                    active: domain.is_active()?,
                }))
            };
            match inspect() {
                Ok(Some(found)) => owned.push(found),
                Ok(None) => {}
                Err(e) if is_no_domain(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(owned)
    }

    /// Names of all domains on the connection, owned or not.
    pub fn all_domain_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for domain in self.conn.list_all_domains(0)? {
            match domain.get_name() {
                Ok(name) => names.push(name),
                Err(e) if is_no_domain(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(names)
    }

    /// Logical CPUs and memory (MiB) of the host the hypervisor places domains on.
    pub fn node_capacity(&self) -> Result<(u32, u64)> {
        let info = self.conn.get_node_info()?;
        Ok((info.cpus, info.memory / 1024))
    }

    /// The host-side device of a running domain's first NIC (its tap, e.g. `vnet3`).
    pub fn nic_device(&self, name: &str) -> Result<Option<String>> {
        let Some(domain) = self.lookup(name)? else {
            return Ok(None);
        };
        if !domain.is_active()? {
            return Ok(None);
        }
        let xml = domain.get_xml_desc(0)?;
        let doc = roxmltree::Document::parse(&xml)
            .map_err(|e| Error::Libvirt(format!("unreadable domain XML: {e}")))?;
        Ok(doc
            .descendants()
            .filter(|n| n.has_tag_name("interface"))
            .flat_map(|n| n.children())
            .find(|n| n.has_tag_name("target"))
            .and_then(|n| n.attribute("dev"))
            .map(str::to_owned))
    }

    /// Guest IPv4 addresses libvirt knows (DHCP leases, then the guest agent).
    pub fn addresses(&self, name: &str) -> Vec<String> {
        let Ok(Some(domain)) = self.lookup(name) else {
            return Vec::new();
        };
        for source in [
            sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
        ] {
            if let Ok(interfaces) = domain.interface_addresses(source, 0) {
                let addresses: Vec<String> = interfaces
                    .iter()
                    .filter(|i| i.name != "lo")
                    .flat_map(|i| i.addrs.iter())
                    .filter(|a| a.typed == i64::from(sys::VIR_IP_ADDR_TYPE_IPV4))
                    .map(|a| a.addr.clone())
                    .collect();
                if !addresses.is_empty() {
                    return addresses;
                }
            }
        }
        Vec::new()
    }
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        // virt 0.4's Connect does not close itself.
        let _ = self.conn.close();
    }
}
