//! Host resource discovery and the CPU benchmark behind compute points.
//!
//! # Compute points
//!
//! The benchmark chains keccak256 over a 32-byte value (`h = keccak256(h)`) on one thread:
//! a fixed, branch-light integer workload that no compiler can skip and that depends on
//! the core's speed rather than on memory or caches. It runs [`BENCH_ROUNDS`] rounds of
//! [`BENCH_ROUND_MILLIS`] ms of the thread's own CPU time (not wall time, so that other
//! processes sharing the core do not lower the score) and keeps the best round, which
//! discards rounds disturbed by cache and frequency effects. Together these make the result
//! repeatable within a few percent on a busy host.
//!
//! **Baseline:** one logical CPU that chains [`BASELINE_HASHES_PER_SEC`] hashes per second
//! is worth [`POINTS_PER_BASELINE_CPU`] (100) points, the unit the orchestrator's scheduler
//! reserves per vCPU. A host's compute points are `logical CPUs × 100 × best rate / baseline`,
//! rounded down.

use std::{path::Path, time::Duration};

use alloy::primitives::{B256, keccak256};
use decloud_sdk::agent_protocol::{DiskInfo, GpuInfo, NodeResources, POINTS_PER_BASELINE_CPU};

use crate::error::{Error, Result};

/// Where the kernel's sysfs is mounted; GPU discovery reads `bus/pci/devices` and
/// `kernel/iommu_groups` under it.
pub const SYSFS_ROOT: &str = "/sys";

/// Hashes per second of the baseline core ([`POINTS_PER_BASELINE_CPU`] points).
pub const BASELINE_HASHES_PER_SEC: u64 = 1_000_000;
/// Number of benchmark rounds.
pub const BENCH_ROUNDS: u32 = 20;
/// Length of one benchmark round.
pub const BENCH_ROUND_MILLIS: u64 = 25;

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Measures the best single-core keccak256 chain rate in hashes per second of the
/// thread's own CPU time, so that time the scheduler gives to other processes on a busy
/// host does not count against the core.
pub fn single_core_rate() -> u64 {
    let mut best = 0f64;
    let mut state = B256::repeat_byte(0x5a);
    let round = Duration::from_millis(BENCH_ROUND_MILLIS);
    for _ in 0..BENCH_ROUNDS {
        let start = thread_cpu_time();
        let mut hashes = 0u64;
        // Check the clock every 256 hashes so reading it does not dominate the loop.
        loop {
            for _ in 0..256 {
                state = keccak256(state);
            }
            hashes += 256;
            let used = thread_cpu_time().saturating_sub(start);
            if used >= round {
                best = best.max(hashes as f64 / used.as_secs_f64());
                break;
            }
        }
    }
    // Keep the chain observable so the loop cannot be optimised away.
    std::hint::black_box(state);
    best as u64
}

/// Compute points of a host with `cores` logical CPUs at `rate` hashes per second each.
pub fn compute_points(cores: u32, rate: u64) -> u64 {
    // Round down: a node never claims more than it measured.
    u64::from(cores) * POINTS_PER_BASELINE_CPU * rate / BASELINE_HASHES_PER_SEC
}

/// Discovers the host's resources and runs the CPU benchmark. `data_dir` is where VM disks
/// go; its free space is reported.
pub fn discover(data_dir: &Path) -> Result<NodeResources> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")
        .map_err(|e| Error::io("reading", "/proc/cpuinfo", e))?;
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| Error::io("reading", "/proc/meminfo", e))?;
    let cpu_cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    Ok(NodeResources {
        arch: std::env::consts::ARCH.to_owned(),
        cpu_model: cpu_model(&cpuinfo),
        cpu_cores,
        memory_mib: mem_total_kib(&meminfo)? / 1024,
        disks: discover_disks(Path::new("/sys/block")),
        vm_storage_free_bytes: free_bytes(data_dir)?,
        gpus: discover_gpus(Path::new(SYSFS_ROOT)),
        compute_points: compute_points(cpu_cores, single_core_rate()),
    })
}

fn cpu_model(cpuinfo: &str) -> String {
    ["model name", "Model", "Hardware", "cpu model"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key).then(|| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

fn mem_total_kib(meminfo: &str) -> Result<u64> {
    meminfo
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("MemTotal:")?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .ok_or_else(|| Error::Config("no MemTotal in /proc/meminfo".into()))
}

/// Bytes available to unprivileged writers on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Config(format!("path {} contains NUL", path.display())))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a writable statvfs.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(Error::io("statvfs", path, std::io::Error::last_os_error()));
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Block devices under a `/sys/block`-like directory, without virtual ones.
pub fn discover_disks(sys_block: &Path) -> Vec<DiskInfo> {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut disks: Vec<DiskInfo> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ["loop", "ram", "zram", "dm-", "sr", "nbd"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                return None;
            }
            let dir = entry.path();
            let sectors: u64 = read_trimmed(&dir.join("size"))?.parse().ok()?;
            if sectors == 0 {
                return None;
            }
            let rotational = read_trimmed(&dir.join("queue/rotational")).as_deref() == Some("1");
            // sysfs counts 512-byte sectors whatever the device's own sector size.
            Some(DiskInfo {
                name,
                total_bytes: sectors * 512,
                rotational,
            })
        })
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

/// PCI display controllers (class `0x03xxxx`) under `sysfs` (`/sys` on a host; tests pass a
/// fake tree of the same layout), each with its IOMMU group and the group's other devices.
///
/// The groups come from `kernel/iommu_groups/<n>/devices/<address>`; a host without an
/// IOMMU (or with it off) has none, and its GPUs are listed without a group: they can be
/// seen but not passed through.
pub fn discover_gpus(sysfs: &Path) -> Vec<GpuInfo> {
    let pci_devices = sysfs.join("bus/pci/devices");
    let Ok(entries) = std::fs::read_dir(&pci_devices) else {
        return Vec::new();
    };
    let groups = iommu_groups(&sysfs.join("kernel/iommu_groups"));
    let class_of = |address: &str| read_trimmed(&pci_devices.join(address).join("class"));
    let mut gpus: Vec<GpuInfo> = entries
        .flatten()
        .filter_map(|entry| {
            let address = entry.file_name().to_string_lossy().into_owned();
            // Only well-formed addresses: they end up in the domain XML.
            crate::domain_xml::pci_address_parts(&address)?;
            let dir = entry.path();
            let class = read_trimmed(&dir.join("class"))?;
            if !class.starts_with("0x03") {
                return None;
            }
            let iommu_group = groups
                .iter()
                .find(|(_, members)| members.contains(&address))
                .map(|(group, _)| *group);
            let iommu_peers = iommu_group
                .and_then(|g| groups.iter().find(|(group, _)| *group == g))
                .map(|(_, members)| {
                    members
                        .iter()
                        .filter(|m| **m != address)
                        // Bridges stay with the host: VFIO does not need them bound.
                        .filter(|m| !class_of(m).is_some_and(|c| c.starts_with("0x0604")))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            Some(GpuInfo {
                pci_address: address,
                vendor_id: read_trimmed(&dir.join("vendor")).unwrap_or_default(),
                device_id: read_trimmed(&dir.join("device")).unwrap_or_default(),
                class,
                iommu_group,
                iommu_peers,
            })
        })
        .collect();
    gpus.sort_by(|a, b| a.pci_address.cmp(&b.pci_address));
    gpus
}

/// IOMMU groups under a `/sys/kernel/iommu_groups`-like directory: group number and the PCI
/// addresses of its devices, in address order.
fn iommu_groups(dir: &Path) -> Vec<(u32, Vec<String>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut groups: Vec<(u32, Vec<String>)> = entries
        .flatten()
        .filter_map(|entry| {
            let group: u32 = entry.file_name().to_str()?.parse().ok()?;
            let mut members: Vec<String> = std::fs::read_dir(entry.path().join("devices"))
                .ok()?
                .flatten()
                .map(|d| d.file_name().to_string_lossy().into_owned())
                .collect();
            members.sort();
            Some((group, members))
        })
        .collect();
    groups.sort();
    groups
}

/// GPUs a VM can be given: in an IOMMU group that holds no other GPU (two GPUs sharing a
/// group could only ever go to one VM together).
pub fn passable_gpus(gpus: &[GpuInfo]) -> Vec<&GpuInfo> {
    gpus.iter()
        .filter(|g| {
            g.iommu_group.is_some()
                && !g
                    .iommu_peers
                    .iter()
                    .any(|p| gpus.iter().any(|o| &o.pci_address == p))
        })
        .collect()
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let resources = discover(dir.path()).unwrap();
        assert_eq!(resources.arch, std::env::consts::ARCH);
        assert!(resources.cpu_cores >= 1);
        assert!(resources.memory_mib > 0);
        assert!(resources.vm_storage_free_bytes > 0);
        assert!(resources.compute_points > 0);
        assert_ne!(resources.cpu_model, "");
    }

    #[test]
    fn gpus_are_pci_display_class_devices_with_their_iommu_groups() {
        // This host has no GPU: the discovery is checked on a fake sysfs tree of the layout
        // the kernel uses (see `fake_sysfs`).
        let root = tempfile::tempdir().unwrap();
        fake_sysfs(
            root.path(),
            &[
                ("0000:00:01.0", "0x060400", Some(1)),
                ("0000:00:02.0", "0x030000", None),
                ("0000:01:00.0", "0x030200", Some(1)),
                ("0000:01:00.1", "0x040300", Some(1)),
                ("0000:00:1f.2", "0x010601", Some(2)),
                ("0000:02:00.0", "0x030000", Some(3)),
                ("0000:03:00.0", "0x030000", Some(3)),
            ],
        );
        let gpus = discover_gpus(root.path());
        let addresses: Vec<&str> = gpus.iter().map(|g| g.pci_address.as_str()).collect();
        assert_eq!(
            addresses,
            [
                "0000:00:02.0",
                "0000:01:00.0",
                "0000:02:00.0",
                "0000:03:00.0"
            ]
        );
        assert_eq!(gpus[0].iommu_group, None);
        assert_eq!(gpus[1].iommu_group, Some(1));
        assert_eq!(gpus[1].class, "0x030200");
        assert_eq!(gpus[1].vendor_id, "0x10de");
        // The audio function travels with the GPU; the bridge of the group does not.
        assert_eq!(gpus[1].iommu_peers, ["0000:01:00.1"]);
        // No group, or a group shared with another GPU: not passable on its own.
        let passable: Vec<&str> = passable_gpus(&gpus)
            .iter()
            .map(|g| g.pci_address.as_str())
            .collect();
        assert_eq!(passable, ["0000:01:00.0"]);
        assert!(discover_gpus(&root.path().join("missing")).is_empty());
    }

    /// Builds a fake sysfs under `root`: `bus/pci/devices/<address>/{class,vendor,device}` and
    /// `kernel/iommu_groups/<n>/devices/<address>` (symlinks on a real host, plain entries here).
    fn fake_sysfs(root: &Path, devices: &[(&str, &str, Option<u32>)]) {
        for (address, class, group) in devices {
            let dir = root.join("bus/pci/devices").join(address);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("class"), format!("{class}\n")).unwrap();
            std::fs::write(dir.join("vendor"), "0x10de\n").unwrap();
            std::fs::write(dir.join("device"), "0x1234\n").unwrap();
            if let Some(group) = group {
                let members = root.join(format!("kernel/iommu_groups/{group}/devices"));
                std::fs::create_dir_all(&members).unwrap();
                std::fs::write(members.join(address), "").unwrap();
            }
        }
    }

    #[test]
    fn parses_cpu_and_memory() {
        assert_eq!(
            cpu_model("processor : 0\nmodel name\t: Foo CPU @ 3GHz\n"),
            "Foo CPU @ 3GHz"
        );
        assert_eq!(
            mem_total_kib("MemTotal:       24684432 kB\n").unwrap(),
            24_684_432
        );
        assert_eq!(compute_points(2, BASELINE_HASHES_PER_SEC / 2), 100);
    }

    #[test]
    fn benchmark_counts_hashes_and_points_round_down() {
        // Behaviour only: the benchmark does work and reports it; how repeatable its rate is
        // on a given machine is measured by `examples/cpu_bench.rs` (see BENCHMARKS.md).
        assert!(single_core_rate() > 0);
        assert_eq!(
            compute_points(1, BASELINE_HASHES_PER_SEC),
            POINTS_PER_BASELINE_CPU
        );
        assert_eq!(compute_points(4, BASELINE_HASHES_PER_SEC * 3 / 2), 600);
        // One hash short of the next point is still the lower point: a node never claims more
        // than it measured.
        assert_eq!(
            compute_points(1, BASELINE_HASHES_PER_SEC / 100 * 101 - 1),
            100
        );
    }
}
