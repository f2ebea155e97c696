//! libvirt domain XML for a VM spec.

use std::{fmt::Write as _, path::PathBuf};

use alloy::primitives::{B256, keccak256};
use decloud_sdk::agent_protocol::{QualityTier, VmSpec};

use crate::config::{BandwidthShaping, DomainType, ImageConfig, NetworkConfig};

/// XML namespace of the agent's `<metadata>` element; marks the domains the agent owns.
pub const METADATA_NS: &str = "https://decloud.network/xmlns/node-agent/1";
/// Prefix of every domain name the agent creates.
pub const DOMAIN_PREFIX: &str = "decloud-";
/// CFS period for the CPU quota, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Domain name of a VM of a node: `decloud-<node tag>-<vm id>`. Domain names are global to a
/// libvirt connection, so they carry the node's tag (as its forwarding rules and shaping
/// devices do): two agents on one host, or a domain left behind by an earlier node, never
/// collide with this node's VM of the same id.
pub fn domain_name(node_id: &B256, vm_id: &str) -> String {
    format!(
        "{DOMAIN_PREFIX}{}-{vm_id}",
        crate::identity::node_tag(node_id)
    )
}

/// A stable MAC address for a VM of a node (locally administered QEMU prefix `52:54:00`), so
/// the guest keeps its network identity when its domain is defined again. The node id goes
/// into the hash with the VM id: nodes on one host may share a libvirt network, and their
/// VMs of the same id must not share a MAC.
pub fn mac_address(node_id: &B256, vm_id: &str) -> String {
    let mut input = node_id.to_vec();
    input.extend_from_slice(vm_id.as_bytes());
    let hash = keccak256(&input);
    format!("52:54:00:{:02x}:{:02x}:{:02x}", hash[0], hash[1], hash[2])
}

/// Per-vCPU CFS quota in microseconds per [`CPU_PERIOD_US`], `None` for dedicated cores.
pub fn cpu_quota_us(tier: QualityTier) -> Option<u64> {
    match tier {
        QualityTier::Dedicated => None,
        other => Some(CPU_PERIOD_US * other.millicores_per_vcpu() / 1000),
    }
}

/// Average rate of a bandwidth tier in kilobytes (1000 bytes) per second, libvirt's unit.
pub fn bandwidth_kbytes(mbps: u32) -> u64 {
    u64::from(mbps) * 1000 / 8
}

/// Everything needed to render a domain.
#[derive(Debug, Clone)]
pub struct DomainPlan<'a> {
    /// The VM.
    pub spec: &'a VmSpec,
    /// Owner node.
    pub node_id: B256,
    /// `kvm` or `qemu`.
    pub domain_type: DomainType,
    /// The spec's image.
    pub image: &'a ImageConfig,
    /// The VM's qcow2 overlay.
    pub disk: PathBuf,
    /// The NoCloud seed ISO.
    pub seed: PathBuf,
    /// File the serial console is written to.
    pub console_log: PathBuf,
    /// NIC attachment.
    pub network: &'a NetworkConfig,
    /// Who enforces the bandwidth tier: with `agent`, a `network` or `bridge` NIC carries no
    /// `<bandwidth>` (libvirt's tc setup would fail on kernels without `sfq` and `police`).
    pub shaping: BandwidthShaping,
    /// PCI devices passed through with VFIO: the VM's reserved GPUs and the other devices of
    /// their IOMMU groups. Each must be a well-formed address ([`pci_address_parts`]).
    pub pci_devices: &'a [String],
}

/// The parts of a PCI address `dddd:bb:ss.f` (domain, bus, slot, function), or `None` when
/// it is not one.
pub fn pci_address_parts(address: &str) -> Option<(u16, u8, u8, u8)> {
    let hex = |part: &str, digits: usize| {
        (part.len() == digits && part.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(part, 16).ok())
            .flatten()
    };
    let (domain, rest) = address.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (slot, function) = rest.split_once('.')?;
    let (domain, bus, slot, function) = (
        hex(domain, 4)?,
        hex(bus, 2)?,
        hex(slot, 2)?,
        hex(function, 1)?,
    );
    // A slot is 5 bits and a function 3 bits wide.
    if slot > 0x1f || function > 7 {
        return None;
    }
    Some((domain as u16, bus as u8, slot as u8, function as u8))
}

/// Escapes text for XML content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the domain XML.
pub fn render(plan: &DomainPlan<'_>) -> String {
    let spec = plan.spec;
    let e = |p: &std::path::Path| escape(&p.to_string_lossy());
    let mut x = String::new();
    // write! to a String cannot fail.
    let _ = writeln!(x, "<domain type='{}'>", plan.domain_type.as_str());
    let _ = writeln!(
        x,
        "  <name>{}</name>",
        escape(&domain_name(&plan.node_id, &spec.id))
    );
    let _ = writeln!(x, "  <metadata>");
    let _ = writeln!(x, "    <decloud:vm xmlns:decloud='{METADATA_NS}'>");
    let _ = writeln!(x, "      <decloud:node>{}</decloud:node>", plan.node_id);
    let _ = writeln!(x, "      <decloud:id>{}</decloud:id>", escape(&spec.id));
    let _ = writeln!(x, "    </decloud:vm>");
    let _ = writeln!(x, "  </metadata>");
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", spec.memory_mib);
    let _ = writeln!(
        x,
        "  <currentMemory unit='MiB'>{}</currentMemory>",
        spec.memory_mib
    );
    let _ = writeln!(x, "  <vcpu placement='static'>{}</vcpu>", spec.vcpus);
    let _ = writeln!(x, "  <cputune>");
    // Shares weigh VMs against each other under contention in proportion to what they pay for.
    let shares = u64::from(spec.vcpus) * spec.quality.millicores_per_vcpu();
    let _ = writeln!(x, "    <shares>{shares}</shares>");
    if let Some(quota) = cpu_quota_us(spec.quality) {
        let _ = writeln!(x, "    <period>{CPU_PERIOD_US}</period>");
        let _ = writeln!(x, "    <quota>{quota}</quota>");
    }
    let _ = writeln!(x, "  </cputune>");
    let _ = writeln!(x, "  <os>");
    let _ = writeln!(x, "    <type arch='{}'>hvm</type>", std::env::consts::ARCH);
    match &plan.image.kernel {
        Some(kernel) => {
            let _ = writeln!(x, "    <kernel>{}</kernel>", e(kernel));
            if let Some(initrd) = &plan.image.initrd {
                let _ = writeln!(x, "    <initrd>{}</initrd>", e(initrd));
            }
            if let Some(cmdline) = &plan.image.cmdline {
                let _ = writeln!(x, "    <cmdline>{}</cmdline>", escape(cmdline));
            }
        }
        None => {
            let _ = writeln!(x, "    <boot dev='hd'/>");
        }
    }
    let _ = writeln!(x, "  </os>");
    let _ = writeln!(x, "  <features><acpi/><apic/></features>");
    let _ = writeln!(x, "  <on_poweroff>destroy</on_poweroff>");
    let _ = writeln!(x, "  <on_reboot>restart</on_reboot>");
    let _ = writeln!(x, "  <on_crash>destroy</on_crash>");
    let _ = writeln!(x, "  <devices>");
    let _ = writeln!(x, "    <disk type='file' device='disk'>");
    let _ = writeln!(x, "      <driver name='qemu' type='qcow2'/>");
    let _ = writeln!(x, "      <source file='{}'/>", e(&plan.disk));
    let _ = writeln!(x, "      <target dev='vda' bus='virtio'/>");
    let _ = writeln!(x, "    </disk>");
    // The seed is a read-only virtio disk: cloud-init's NoCloud source finds it by its
    // `cidata` label on any block device, and virtio needs no emulated CD-ROM controller.
    let _ = writeln!(x, "    <disk type='file' device='disk'>");
    let _ = writeln!(x, "      <driver name='qemu' type='raw'/>");
    let _ = writeln!(x, "      <source file='{}'/>", e(&plan.seed));
    let _ = writeln!(x, "      <target dev='vdb' bus='virtio'/>");
    let _ = writeln!(x, "      <readonly/>");
    let _ = writeln!(x, "    </disk>");
    match plan.network {
        NetworkConfig::Network { name } => {
            let _ = writeln!(x, "    <interface type='network'>");
            let _ = writeln!(x, "      <source network='{}'/>", escape(name));
        }
        NetworkConfig::Bridge { name } => {
            let _ = writeln!(x, "    <interface type='bridge'>");
            let _ = writeln!(x, "      <source bridge='{}'/>", escape(name));
        }
        NetworkConfig::User => {
            let _ = writeln!(x, "    <interface type='user'>");
        }
    }
    let _ = writeln!(
        x,
        "      <mac address='{}'/>",
        mac_address(&plan.node_id, &spec.id)
    );
    let _ = writeln!(x, "      <model type='virtio'/>");
    let libvirt_shapes =
        plan.shaping == BandwidthShaping::Libvirt || *plan.network == NetworkConfig::User;
    if let Some(mbps) = spec.bandwidth.mbps().filter(|_| libvirt_shapes) {
        let kbytes = bandwidth_kbytes(mbps);
        let _ = writeln!(x, "      <bandwidth>");
        let _ = writeln!(x, "        <inbound average='{kbytes}'/>");
        let _ = writeln!(x, "        <outbound average='{kbytes}'/>");
        let _ = writeln!(x, "      </bandwidth>");
    }
    let _ = writeln!(x, "    </interface>");
    // The serial console is a unix socket QEMU listens on (without waiting for a client) for
    // interactive sessions, and everything the guest prints also goes to the log file the
    // readiness probes read. The socket sits beside the log, in the VM's directory.
    let socket = plan
        .console_log
        .with_file_name(crate::console::CONSOLE_SOCKET);
    let _ = writeln!(x, "    <serial type='unix'>");
    let _ = writeln!(x, "      <source mode='bind' path='{}'/>", e(&socket));
    let _ = writeln!(
        x,
        "      <log file='{}' append='on'/>",
        e(&plan.console_log)
    );
    let _ = writeln!(x, "      <target port='0'/>");
    let _ = writeln!(x, "    </serial>");
    // managed='yes': libvirt detaches each device from its host driver and binds it to
    // vfio-pci when the domain starts, and gives it back when the domain stops.
    for (domain, bus, slot, function) in
        plan.pci_devices.iter().filter_map(|a| pci_address_parts(a))
    {
        let _ = writeln!(x, "    <hostdev mode='subsystem' type='pci' managed='yes'>");
        let _ = writeln!(x, "      <source>");
        let _ = writeln!(
            x,
            "        <address domain='0x{domain:04x}' bus='0x{bus:02x}' slot='0x{slot:02x}' function='0x{function:x}'/>"
        );
        let _ = writeln!(x, "      </source>");
        let _ = writeln!(x, "    </hostdev>");
    }
    let _ = writeln!(x, "    <channel type='unix'>");
    let _ = writeln!(
        x,
        "      <target type='virtio' name='org.qemu.guest_agent.0'/>"
    );
    let _ = writeln!(x, "    </channel>");
    let _ = writeln!(x, "  </devices>");
    let _ = writeln!(x, "</domain>");
    x
}

/// The VM id in an owned domain's XML, when the domain belongs to `node_id`.
pub fn owned_vm_id(xml: &str, node_id: B256) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let vm = doc
        .descendants()
        .find(|n| n.tag_name().namespace() == Some(METADATA_NS) && n.tag_name().name() == "vm")?;
    let child = |name: &str| {
        vm.children()
            .find(|n| n.tag_name().namespace() == Some(METADATA_NS) && n.tag_name().name() == name)
            .and_then(|n| n.text())
            .map(str::trim)
    };
    let node: B256 = child("node")?.parse().ok()?;
    (node == node_id).then(|| child("id").map(str::to_owned))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use decloud_sdk::agent_protocol::BandwidthTier;

    fn spec(quality: QualityTier, bandwidth: BandwidthTier) -> VmSpec {
        VmSpec {
            id: "vm-1".into(),
            image: "debian".into(),
            vcpus: 2,
            memory_mib: 768,
            disk_gib: 4,
            quality,
            bandwidth,
            gpus: 0,
            hostname: None,
            user_data: "#cloud-config\n".into(),
            ports: vec![],
            readiness: vec![],
            ingress: Vec::new(),
        }
    }

    fn render_spec(spec: &VmSpec, image: &ImageConfig, network: &NetworkConfig) -> String {
        render(&DomainPlan {
            spec,
            node_id: B256::repeat_byte(0xab),
            domain_type: DomainType::Qemu,
            image,
            disk: "/data/vms/vm-1/disk.qcow2".into(),
            seed: "/data/vms/vm-1/seed.iso".into(),
            console_log: "/data/vms/vm-1/console.log".into(),
            network,
            shaping: BandwidthShaping::Libvirt,
            pci_devices: &[],
        })
    }

    fn child<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> roxmltree::Node<'a, 'a> {
        node.children()
            .find(|n| n.has_tag_name(name))
            .unwrap_or_else(|| panic!("no <{name}> in <{}>", node.tag_name().name()))
    }

    #[test]
    fn names_and_macs_differ_between_nodes_and_vms() {
        let (a, b) = (B256::repeat_byte(0x01), B256::repeat_byte(0x02));
        assert_eq!(domain_name(&a, "vm-1"), "decloud-0101010101010101-vm-1");
        assert_ne!(domain_name(&a, "vm-1"), domain_name(&b, "vm-1"));
        assert_ne!(mac_address(&a, "vm-1"), mac_address(&b, "vm-1"));
        assert_ne!(mac_address(&a, "vm-1"), mac_address(&a, "vm-2"));
        assert_eq!(mac_address(&a, "vm-1"), mac_address(&a, "vm-1"));
        assert!(mac_address(&a, "vm-1").starts_with("52:54:00:"));
    }

    #[test]
    fn renders_a_complete_domain_that_parses_back() {
        let image = ImageConfig {
            base: "/img/base.qcow2".into(),
            kernel: Some("/boot/vmlinuz".into()),
            initrd: Some("/boot/initrd".into()),
            cmdline: Some("console=ttyS0 a=<b>".into()),
        };
        let spec = spec(QualityTier::Balanced, BandwidthTier::Standard);
        let xml = render_spec(
            &spec,
            &image,
            &NetworkConfig::Network {
                name: "default".into(),
            },
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.attribute("type"), Some("qemu"));
        assert_eq!(
            child(root, "name").text(),
            Some("decloud-abababababababab-vm-1")
        );
        let memory = child(root, "memory");
        assert_eq!(
            (memory.attribute("unit"), memory.text()),
            (Some("MiB"), Some("768"))
        );
        assert_eq!(child(root, "vcpu").text(), Some("2"));
        let cputune = child(root, "cputune");
        assert_eq!(child(cputune, "period").text(), Some("100000"));
        assert_eq!(child(cputune, "quota").text(), Some("50000"));
        assert_eq!(child(cputune, "shares").text(), Some("1000"));

        let os = child(root, "os");
        assert_eq!(child(os, "kernel").text(), Some("/boot/vmlinuz"));
        assert_eq!(child(os, "initrd").text(), Some("/boot/initrd"));
        assert_eq!(child(os, "cmdline").text(), Some("console=ttyS0 a=<b>"));

        let devices = child(root, "devices");
        let disks: Vec<_> = devices
            .children()
            .filter(|n| n.has_tag_name("disk"))
            .collect();
        assert_eq!(disks.len(), 2);
        assert_eq!(child(disks[0], "driver").attribute("type"), Some("qcow2"));
        assert_eq!(
            child(disks[0], "source").attribute("file"),
            Some("/data/vms/vm-1/disk.qcow2")
        );
        assert_eq!(child(disks[0], "target").attribute("bus"), Some("virtio"));
        assert_eq!(
            child(disks[1], "source").attribute("file"),
            Some("/data/vms/vm-1/seed.iso")
        );
        assert!(disks[1].children().any(|n| n.has_tag_name("readonly")));

        let nic = child(devices, "interface");
        assert_eq!(nic.attribute("type"), Some("network"));
        assert_eq!(child(nic, "source").attribute("network"), Some("default"));
        assert_eq!(child(nic, "model").attribute("type"), Some("virtio"));
        assert_eq!(
            child(nic, "mac").attribute("address"),
            Some(mac_address(&B256::repeat_byte(0xab), "vm-1").as_str())
        );
        let bandwidth = child(nic, "bandwidth");
        // 50 Mbit/s = 6250 kB/s each way.
        assert_eq!(
            child(bandwidth, "inbound").attribute("average"),
            Some("6250")
        );
        assert_eq!(
            child(bandwidth, "outbound").attribute("average"),
            Some("6250")
        );

        let serial = child(devices, "serial");
        assert_eq!(serial.attribute("type"), Some("unix"));
        let source = child(serial, "source");
        assert_eq!(
            (source.attribute("mode"), source.attribute("path")),
            (Some("bind"), Some("/data/vms/vm-1/console.sock"))
        );
        let log = child(serial, "log");
        assert_eq!(
            (log.attribute("file"), log.attribute("append")),
            (Some("/data/vms/vm-1/console.log"), Some("on"))
        );
        let channel = child(devices, "channel");
        assert_eq!(
            child(channel, "target").attribute("name"),
            Some("org.qemu.guest_agent.0")
        );

        assert_eq!(
            owned_vm_id(&xml, B256::repeat_byte(0xab)).as_deref(),
            Some("vm-1")
        );
        assert_eq!(owned_vm_id(&xml, B256::repeat_byte(0xac)), None);
    }

    #[test]
    fn tiers_and_boot_modes_change_the_xml() {
        let image = ImageConfig {
            base: "/img/base.qcow2".into(),
            kernel: None,
            initrd: None,
            cmdline: None,
        };
        let spec = spec(QualityTier::Dedicated, BandwidthTier::Unmetered);
        let xml = render_spec(&spec, &image, &NetworkConfig::Bridge { name: "br0".into() });
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        let cputune = child(root, "cputune");
        assert!(!cputune.children().any(|n| n.has_tag_name("quota")));
        let os = child(root, "os");
        assert_eq!(child(os, "boot").attribute("dev"), Some("hd"));
        let nic = child(child(root, "devices"), "interface");
        assert_eq!(nic.attribute("type"), Some("bridge"));
        assert!(!nic.children().any(|n| n.has_tag_name("bandwidth")));

        let burst = super::tests::spec(QualityTier::Burstable, BandwidthTier::Basic);
        let xml = render_spec(&burst, &image, &NetworkConfig::User);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(child(child(root, "cputune"), "quota").text(), Some("25000"));
        let nic = child(child(root, "devices"), "interface");
        assert_eq!(nic.attribute("type"), Some("user"));
        assert_eq!(
            child(child(nic, "bandwidth"), "inbound").attribute("average"),
            Some("1250")
        );
    }

    #[test]
    fn agent_shaping_leaves_bandwidth_out_of_network_nics_only() {
        let image = ImageConfig {
            base: "/img/base.qcow2".into(),
            kernel: None,
            initrd: None,
            cmdline: None,
        };
        let spec = spec(QualityTier::Standard, BandwidthTier::Basic);
        for (network, recorded) in [
            (
                NetworkConfig::Network {
                    name: "decloud".into(),
                },
                false,
            ),
            (NetworkConfig::User, true),
        ] {
            let xml = render(&DomainPlan {
                spec: &spec,
                node_id: B256::ZERO,
                domain_type: DomainType::Qemu,
                image: &image,
                disk: "/d".into(),
                seed: "/s".into(),
                console_log: "/c".into(),
                network: &network,
                shaping: BandwidthShaping::Agent,
                pci_devices: &[],
            });
            assert_eq!(xml.contains("<bandwidth>"), recorded, "{network:?}");
        }
    }

    #[test]
    fn reserved_gpus_become_vfio_hostdevs() {
        let image = ImageConfig {
            base: "/img/base.qcow2".into(),
            kernel: None,
            initrd: None,
            cmdline: None,
        };
        let mut spec = spec(QualityTier::Dedicated, BandwidthTier::Basic);
        spec.gpus = 1;
        let devices = ["0000:0a:1f.0".to_owned(), "0000:0a:1f.1".to_owned()];
        let xml = render(&DomainPlan {
            spec: &spec,
            node_id: B256::ZERO,
            domain_type: DomainType::Kvm,
            image: &image,
            disk: "/d".into(),
            seed: "/s".into(),
            console_log: "/c".into(),
            network: &NetworkConfig::User,
            shaping: BandwidthShaping::Agent,
            pci_devices: &devices,
        });
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let hostdevs: Vec<_> = child(doc.root_element(), "devices")
            .children()
            .filter(|n| n.has_tag_name("hostdev"))
            .collect();
        assert_eq!(hostdevs.len(), 2);
        for (hostdev, function) in hostdevs.iter().zip(["0x0", "0x1"]) {
            assert_eq!(
                (
                    hostdev.attribute("mode"),
                    hostdev.attribute("type"),
                    hostdev.attribute("managed")
                ),
                (Some("subsystem"), Some("pci"), Some("yes"))
            );
            let address = child(child(*hostdev, "source"), "address");
            assert_eq!(
                (
                    address.attribute("domain"),
                    address.attribute("bus"),
                    address.attribute("slot"),
                    address.attribute("function"),
                ),
                (Some("0x0000"), Some("0x0a"), Some("0x1f"), Some(function))
            );
        }
        let without = render_spec(&spec, &image, &NetworkConfig::User);
        assert!(!without.contains("<hostdev"));
    }

    #[test]
    fn pci_addresses_are_parsed_strictly() {
        assert_eq!(pci_address_parts("0000:01:00.0"), Some((0, 1, 0, 0)));
        assert_eq!(
            pci_address_parts("abcd:ff:1f.7"),
            Some((0xabcd, 0xff, 0x1f, 7))
        );
        for bad in [
            "",
            "01:00.0",
            "0000:01:00",
            "0000:01:20.0",
            "0000:01:00.8",
            "0000:1:00.0",
            "000g:01:00.0",
            "0000:01:00.0'/>",
        ] {
            assert_eq!(pci_address_parts(bad), None, "{bad}");
        }
    }

    #[test]
    fn foreign_domains_are_not_owned() {
        assert_eq!(
            owned_vm_id("<domain><name>x</name></domain>", B256::ZERO),
            None
        );
        assert_eq!(owned_vm_id("not xml", B256::ZERO), None);
    }
}
