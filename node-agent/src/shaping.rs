//! Bandwidth shaping by the agent with tc, for hosts whose kernel lacks what libvirt's own
//! `<bandwidth>` needs (the `sfq` qdisc under its HTB class, and the `police` action for
//! outbound traffic). It needs only HTB, the ingress qdisc, u32 filters, the `mirred` action
//! and IFB devices, which every distribution kernel and minimal VM kernels have:
//!
//! - traffic to the guest leaves the host through the VM's tap device: an HTB root qdisc
//!   on the tap caps it at the tier's rate;
//! - traffic from the guest enters the host through the tap: its ingress is redirected to
//!   an IFB device of the VM (`db<node><vm>`), whose HTB root qdisc caps it the same way.
//!
//! The tap and its qdiscs go away with the domain; the IFB device is the agent's to remove
//! when the VM stops or is deleted.

use std::process::Command;

use alloy::primitives::keccak256;

use crate::error::{Error, Result};

/// Prefix of the agent's IFB device names.
pub const IFB_PREFIX: &str = "db";

/// The IFB device of a VM of the node tagged `tag`: `db`, 5 hex digits of the node tag and
/// 8 of the VM id's hash (15 characters, the kernel's limit).
pub fn ifb_name(tag: &str, vm_id: &str) -> String {
    let vm = hex::encode(keccak256(vm_id.as_bytes()));
    format!("{IFB_PREFIX}{}{}", &tag[..5.min(tag.len())], &vm[..8])
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Tool {
            tool: "tc",
            message: format!("cannot run {program} ({e}); install iproute2"),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Tool {
            tool: "tc",
            message: format!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// HTB's burst for `mbps`: 10 ms of traffic at the rate, at least 15 000 bytes, so the
/// bucket refills smoothly between timer ticks at high rates.
fn burst_bytes(mbps: u32) -> u64 {
    (u64::from(mbps) * 1_250).max(15_000)
}

fn cap(device: &str, mbps: u32) -> Result<()> {
    let rate = format!("{mbps}mbit");
    let burst = format!("{}b", burst_bytes(mbps));
    // Deleted and added rather than replaced: HTB refuses to change an existing root
    // qdisc's parameters in place.
    let _ = run("tc", &["qdisc", "del", "dev", device, "root"]);
    run(
        "tc",
        &[
            "qdisc", "add", "dev", device, "root", "handle", "1:", "htb", "default", "1",
        ],
    )?;
    run(
        "tc",
        &[
            "class", "add", "dev", device, "parent", "1:", "classid", "1:1", "htb", "rate", &rate,
            "ceil", &rate, "burst", &burst, "cburst", &burst,
        ],
    )
}

/// Caps the VM on `tap` at `mbps` each way (idempotent: a second call replaces the first).
pub(crate) fn apply(tap: &str, ifb: &str, mbps: u32) -> Result<()> {
    cap(tap, mbps)?;
    if run("ip", &["link", "show", "dev", ifb]).is_err() {
        run("ip", &["link", "add", ifb, "type", "ifb"])?;
    }
    run("ip", &["link", "set", ifb, "up"])?;
    cap(ifb, mbps)?;
    // A fresh ingress qdisc drops any filter an earlier call left.
    let _ = run("tc", &["qdisc", "del", "dev", tap, "ingress"]);
    run(
        "tc",
        &["qdisc", "add", "dev", tap, "handle", "ffff:", "ingress"],
    )?;
    run(
        "tc",
        &[
            "filter", "add", "dev", tap, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb,
        ],
    )
}

/// IFB devices of the node tagged `tag` that are not in `keep` (left by VMs that stopped or
/// were deleted while the agent was down), removed; returns their names.
pub(crate) fn remove_stale(tag: &str, keep: &[String]) -> Result<Vec<String>> {
    let output = Command::new("ip")
        .args(["-o", "link", "show", "type", "ifb"])
        .output()
        .map_err(|e| Error::Tool {
            tool: "tc",
            message: format!("cannot run ip ({e}); install iproute2"),
        })?;
    let prefix = format!("{IFB_PREFIX}{}", &tag[..5.min(tag.len())]);
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // "7: dbxxxx: <BROADCAST,NOARP> mtu …"
        let Some(name) = line.split(':').nth(1).map(str::trim) else {
            continue;
        };
        if name.len() == 15 && name.starts_with(&prefix) && !keep.iter().any(|k| k == name) {
            remove(name)?;
            removed.push(name.to_owned());
        }
    }
    Ok(removed)
}

/// Removes a VM's IFB device; a missing one is fine.
pub(crate) fn remove(ifb: &str) -> Result<()> {
    if run("ip", &["link", "show", "dev", ifb]).is_ok() {
        run("ip", &["link", "del", ifb])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_names_fit_the_kernel_limit_and_differ_by_node_and_vm() {
        let a = ifb_name("0011223344556677", "web");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("db00112"));
        assert_ne!(a, ifb_name("0011223344556677", "web-2"));
        assert_ne!(a, ifb_name("9911223344556677", "web"));
        assert_eq!(burst_bytes(10), 15_000);
        assert_eq!(burst_bytes(200), 250_000);
    }
}
