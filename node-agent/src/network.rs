//! The libvirt NAT network guests attach to: created by the agent when missing, and a fixed
//! DHCP reservation (`<host mac=… ip=…>`) per VM, so a VM's address is known before it boots
//! and the forwarding rules can point at it from the start.
//!
//! Reservations the agent makes are named `dc-<node tag>-<vm id>`: that marks them as this
//! node's, so reconciliation removes the stale ones and never touches anyone else's.

use std::net::Ipv4Addr;

use virt::{error::ErrorNumber, network::Network, sys};

use crate::{
    config::Ipv4Subnet,
    domain_xml::escape,
    error::{Error, Result},
    hypervisor::Hypervisor,
};

/// The parts of a libvirt network the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatNetwork {
    /// Network name.
    pub name: String,
    /// The host's address on the network (the guests' gateway).
    pub gateway: Ipv4Addr,
    /// The network's subnet.
    pub subnet: Ipv4Subnet,
    /// Dynamic DHCP ranges (inclusive).
    pub dhcp_ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Fixed DHCP reservations.
    pub hosts: Vec<DhcpHost>,
}

/// One `<host>` reservation of a network's DHCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    /// MAC address.
    pub mac: String,
    /// Reserved address.
    pub ip: Ipv4Addr,
    /// Host name handed to the guest; the agent's reservations are named
    /// [`reservation_name`].
    pub name: Option<String>,
}

/// An address the network's DHCP server has leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpLease {
    /// The MAC address holding the lease (lower case).
    pub mac: String,
    /// The leased address.
    pub ip: Ipv4Addr,
}

impl DhcpHost {
    fn xml(&self) -> String {
        match &self.name {
            Some(name) => format!(
                "<host mac='{}' name='{}' ip='{}'/>",
                escape(&self.mac),
                escape(name),
                self.ip
            ),
            None => format!("<host mac='{}' ip='{}'/>", escape(&self.mac), self.ip),
        }
    }
}

/// Name of the reservation the node tagged `tag` makes for `vm_id`.
pub fn reservation_name(tag: &str, vm_id: &str) -> String {
    format!("{}{vm_id}", reservation_prefix(tag))
}

/// Prefix of every reservation name of the node tagged `tag`.
pub fn reservation_prefix(tag: &str) -> String {
    format!("dc-{tag}-")
}

/// The XML of a NAT network on `subnet`: the host takes the first address, the upper half
/// of the subnet is the dynamic DHCP range, and the lower half is left for reservations so
/// a reserved address is never also leased to a stranger. libvirt picks the bridge name.
pub fn network_xml(name: &str, subnet: Ipv4Subnet) -> String {
    let size = subnet.size();
    format!(
        "<network>\n  <name>{}</name>\n  <forward mode='nat'/>\n  \
         <ip address='{}' netmask='{}'>\n    <dhcp>\n      <range start='{}' end='{}'/>\n    \
         </dhcp>\n  </ip>\n</network>\n",
        escape(name),
        subnet.nth(1),
        subnet.netmask(),
        subnet.nth(size / 2),
        subnet.nth(size - 2),
    )
}

/// Parses a network's XML; the network needs an IPv4 address with a DHCP server.
pub fn parse_network(xml: &str) -> Result<NatNetwork> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| Error::Libvirt(format!("unreadable network XML: {e}")))?;
    let root = doc.root_element();
    let name = root
        .children()
        .find(|n| n.has_tag_name("name"))
        .and_then(|n| n.text())
        .unwrap_or_default()
        .to_owned();
    let not_usable = |why: &str| {
        Error::Config(format!(
            "libvirt network {name:?} {why}; the agent needs a NAT network with IPv4 DHCP \
             (remove it to let the agent create one, or name another in `network`)"
        ))
    };
    let ip = root
        .children()
        .filter(|n| n.has_tag_name("ip"))
        .find(|n| {
            n.attribute("family").is_none_or(|f| f == "ipv4")
                && n.children().any(|c| c.has_tag_name("dhcp"))
        })
        .ok_or_else(|| not_usable("has no IPv4 address with DHCP"))?;
    let gateway: Ipv4Addr = ip
        .attribute("address")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| not_usable("has no IPv4 address"))?;
    let prefix = match (ip.attribute("prefix"), ip.attribute("netmask")) {
        (Some(p), _) => p.parse::<u8>().ok(),
        (None, Some(mask)) => mask
            .parse::<Ipv4Addr>()
            .ok()
            .map(|m| u32::from(m).count_ones() as u8),
        (None, None) => None,
    }
    .filter(|p| (1..=30).contains(p))
    .ok_or_else(|| not_usable("has no usable netmask"))?;
    let mask = u32::MAX << (32 - u32::from(prefix));
    let subnet = Ipv4Subnet {
        network: Ipv4Addr::from(u32::from(gateway) & mask),
        prefix,
    };
    let dhcp = ip
        .children()
        .find(|n| n.has_tag_name("dhcp"))
        .ok_or_else(|| not_usable("has no DHCP server"))?;
    let addr = |n: roxmltree::Node<'_, '_>, attribute: &str| {
        n.attribute(attribute)
            .and_then(|a| a.parse::<Ipv4Addr>().ok())
    };
    let dhcp_ranges = dhcp
        .children()
        .filter(|n| n.has_tag_name("range"))
        .filter_map(|n| Some((addr(n, "start")?, addr(n, "end")?)))
        .collect();
    let hosts = dhcp
        .children()
        .filter(|n| n.has_tag_name("host"))
        .filter_map(|n| {
            Some(DhcpHost {
                mac: n.attribute("mac")?.to_ascii_lowercase(),
                ip: addr(n, "ip")?,
                name: n.attribute("name").map(str::to_owned),
            })
        })
        .collect();
    Ok(NatNetwork {
        name,
        gateway,
        subnet,
        dhcp_ranges,
        hosts,
    })
}

impl NatNetwork {
    /// The next address free for a reservation after `last` (the one reserved before,
    /// wrapping around): not the network, broadcast or gateway address, not reserved in
    /// the network or in `taken`. Going round rather than taking the lowest keeps a freed
    /// address unused as long as possible, since the DHCP server still holds its lease for
    /// the deleted VM's MAC and would hand a new VM a dynamic address instead. Addresses
    /// outside the dynamic DHCP ranges come first, so a reservation never takes an address
    /// a stranger may already have leased; inside them only when nothing else is left.
    pub fn free_address(&self, taken: &[Ipv4Addr], last: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let in_range = |ip: Ipv4Addr| {
            self.dhcp_ranges
                .iter()
                .any(|(start, end)| (*start..=*end).contains(&ip))
        };
        let mut candidates: Vec<Ipv4Addr> = (1..self.subnet.size() - 1)
            .map(|n| self.subnet.nth(n))
            .filter(|ip| {
                *ip != self.gateway
                    && !taken.contains(ip)
                    && !self.hosts.iter().any(|h| h.ip == *ip)
            })
            .collect();
        candidates.sort_by_key(|ip| (in_range(*ip), last.is_some_and(|l| *ip <= l), *ip));
        candidates.first().copied()
    }
}

fn lookup(h: &Hypervisor, name: &str) -> Result<Option<Network>> {
    match Network::lookup_by_name(&h.conn, name) {
        Ok(network) => Ok(Some(network)),
        Err(e) if matches!(e.code(), ErrorNumber::NoNetwork) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn require(h: &Hypervisor, name: &str) -> Result<Network> {
    lookup(h, name)?.ok_or_else(|| Error::Libvirt(format!("no libvirt network {name}")))
}

impl Hypervisor {
    /// Makes the network `name` exist and run: defined on `subnet`, set to autostart and
    /// started when missing; an existing one is kept as it is (only started if it is not
    /// running, since guests cannot attach to an inactive network). Returns it and whether
    /// it was created.
    pub fn ensure_network(&self, name: &str, subnet: Ipv4Subnet) -> Result<(NatNetwork, bool)> {
        let (network, created) = match lookup(self, name)? {
            Some(network) => (network, false),
            None => {
                let network = Network::define_xml(&self.conn, &network_xml(name, subnet))?;
                network.set_autostart(true)?;
                (network, true)
            }
        };
        if !network.is_active()? {
            network.create()?;
        }
        Ok((parse_network(&network.get_xml_desc(0)?)?, created))
    }

    /// The network as it is now.
    pub fn network(&self, name: &str) -> Result<NatNetwork> {
        parse_network(&require(self, name)?.get_xml_desc(0)?)
    }

    fn update_host(&self, name: &str, command: u32, host: &DhcpHost) -> Result<()> {
        let network = require(self, name)?;
        // The running dnsmasq and the stored definition both change, so the reservation
        // holds now and after the network restarts.
        let mut flags = 0;
        if network.is_active()? {
            flags |= sys::VIR_NETWORK_UPDATE_AFFECT_LIVE;
        }
        if network.is_persistent()? {
            flags |= sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG;
        }
        network
            .update(
                command,
                sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
                -1,
                &host.xml(),
                flags,
            )
            .map_err(|e| {
                Error::Libvirt(format!(
                    "updating the DHCP reservation {} of network {name}: {}",
                    host.xml(),
                    e.message()
                ))
            })
    }

    /// Adds a reservation unless the network already has exactly it. A reservation of the
    /// same MAC or address that carries `ours_prefix` (a stale one of this node) is replaced;
    /// one of anyone else is a conflict and nothing changes.
    pub fn reserve(&self, name: &str, host: &DhcpHost, ours_prefix: &str) -> Result<()> {
        let current = self.network(name)?;
        let mut clashing = Vec::new();
        for existing in &current.hosts {
            if existing == host {
                return Ok(());
            }
            if existing.mac == host.mac || existing.ip == host.ip {
                if !existing
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(ours_prefix))
                {
                    return Err(Error::Capacity(format!(
                        "network {name} already reserves {} for {}",
                        existing.ip, existing.mac
                    )));
                }
                clashing.push(existing.clone());
            }
        }
        for stale in &clashing {
            self.update_host(name, sys::VIR_NETWORK_UPDATE_COMMAND_DELETE, stale)?;
        }
        self.update_host(name, sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, host)
    }

    /// Removes a reservation; a missing one (or network) is fine.
    pub fn release(&self, name: &str, host: &DhcpHost) -> Result<()> {
        let Some(network) = lookup(self, name)? else {
            return Ok(());
        };
        let current = parse_network(&network.get_xml_desc(0)?)?;
        if current.hosts.contains(host) {
            self.update_host(name, sys::VIR_NETWORK_UPDATE_COMMAND_DELETE, host)?;
        }
        Ok(())
    }

    /// The addresses the network's DHCP server has leased now, with the MAC holding each
    /// (expired leases excluded). dnsmasq will not hand a reserved address to a new MAC
    /// while another MAC still holds its lease (the lease of a deleted VM lives on for its
    /// lease time), so a new reservation must avoid these.
    pub fn dhcp_leases(&self, name: &str) -> Result<Vec<DhcpLease>> {
        let network = require(self, name)?;
        let mut leases: *mut sys::virNetworkDHCPLeasePtr = std::ptr::null_mut();
        // SAFETY: the network pointer is valid while `network` lives; on success libvirt
        // returns an array of `n` lease pointers that we own and free below, each once.
        let n = unsafe {
            sys::virNetworkGetDHCPLeases(network.as_ptr(), std::ptr::null(), &mut leases, 0)
        };
        if n < 0 {
            let error = virt::error::Error::last_error();
            // A driver without a DHCP server (libvirt's test driver) has no leases to avoid.
            if matches!(error.code(), ErrorNumber::NoSupport) {
                return Ok(Vec::new());
            }
            return Err(Error::Libvirt(format!(
                "reading the DHCP leases of network {name}: {}",
                error.message()
            )));
        }
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            // SAFETY: `i < n`, and each element is a valid lease until freed here.
            unsafe {
                let lease = *leases.add(i);
                let text = |p: *mut std::os::raw::c_char| {
                    (!p.is_null())
                        .then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
                };
                if let (Some(mac), Some(ip)) = (text((*lease).mac), text((*lease).ipaddr))
                    && let Ok(ip) = ip.parse::<Ipv4Addr>()
                {
                    out.push(DhcpLease {
                        mac: mac.to_ascii_lowercase(),
                        ip,
                    });
                }
                sys::virNetworkDHCPLeaseFree(lease);
            }
        }
        if !leases.is_null() {
            // SAFETY: the array itself was allocated by libvirt with malloc.
            unsafe { libc::free(leases.cast()) };
        }
        Ok(out)
    }

    /// Removes a network (for tests and tools cleaning up after themselves).
    pub fn remove_network(&self, name: &str) -> Result<()> {
        let Some(network) = lookup(self, name)? else {
            return Ok(());
        };
        if network.is_active()? {
            network.destroy()?;
        }
        if network.is_persistent()? {
            network.undefine()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_network_parses_back_and_reservations_avoid_the_dynamic_range() {
        let subnet: Ipv4Subnet = "192.168.123.0/24".parse().unwrap();
        let mut network = parse_network(&network_xml("decloud", subnet)).unwrap();
        assert_eq!(network.name, "decloud");
        assert_eq!(network.gateway, Ipv4Addr::new(192, 168, 123, 1));
        assert_eq!(network.subnet, subnet);
        assert_eq!(
            network.dhcp_ranges,
            vec![(
                Ipv4Addr::new(192, 168, 123, 128),
                Ipv4Addr::new(192, 168, 123, 254)
            )]
        );
        assert_eq!(
            network.free_address(&[], None),
            Some(Ipv4Addr::new(192, 168, 123, 2))
        );
        // After .40 was reserved (and maybe freed), .41 comes next, not .2 again.
        assert_eq!(
            network.free_address(&[], Some(Ipv4Addr::new(192, 168, 123, 40))),
            Some(Ipv4Addr::new(192, 168, 123, 41))
        );
        // At the end of the lower half, it wraps around to its start.
        assert_eq!(
            network.free_address(&[], Some(Ipv4Addr::new(192, 168, 123, 127))),
            Some(Ipv4Addr::new(192, 168, 123, 2))
        );
        network.hosts.push(DhcpHost {
            mac: "52:54:00:00:00:01".into(),
            ip: Ipv4Addr::new(192, 168, 123, 2),
            name: None,
        });
        assert_eq!(
            network.free_address(&[Ipv4Addr::new(192, 168, 123, 3)], None),
            Some(Ipv4Addr::new(192, 168, 123, 4))
        );
        // With the lower half used up, the dynamic range is the last resort.
        let taken: Vec<_> = (3..128).map(|n| Ipv4Addr::new(192, 168, 123, n)).collect();
        assert_eq!(
            network.free_address(&taken, None),
            Some(Ipv4Addr::new(192, 168, 123, 128))
        );
        let all: Vec<_> = (2..=254).map(|n| Ipv4Addr::new(192, 168, 123, n)).collect();
        assert_eq!(network.free_address(&all, None), None);
    }

    #[test]
    fn existing_networks_parse_with_prefix_or_netmask_and_hosts() {
        let xml = "<network><name>default</name><forward mode='nat'/>\
            <ip family='ipv6' address='fd00::1' prefix='64'/>\
            <ip address='10.9.0.1' prefix='16'><dhcp><range start='10.9.0.2' end='10.9.255.254'/>\
            <host mac='52:54:00:AA:BB:CC' name='dc-x-vm' ip='10.9.0.7'/></dhcp></ip></network>";
        let network = parse_network(xml).unwrap();
        assert_eq!(network.subnet.to_string(), "10.9.0.0/16");
        assert_eq!(
            network.hosts,
            vec![DhcpHost {
                mac: "52:54:00:aa:bb:cc".into(),
                ip: Ipv4Addr::new(10, 9, 0, 7),
                name: Some("dc-x-vm".into()),
            }]
        );
        assert!(
            parse_network(
                "<network><name>iso</name><ip address='10.0.0.1' prefix='24'/></network>"
            )
            .is_err()
        );
    }
}
