//! cloud-init NoCloud seed: an ISO9660 image labelled `cidata` holding `user-data`,
//! `meta-data` and `network-config`, written with `genisoimage`.

use std::{path::Path, process::Command};

use decloud_sdk::agent_protocol::VmSpec;

use crate::error::{Error, Result};

/// Volume label cloud-init's NoCloud source looks for.
pub const VOLUME_ID: &str = "cidata";

/// The three seed files of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFiles {
    /// Tenant's cloud-init user-data, unchanged.
    pub user_data: String,
    /// Instance id and hostname.
    pub meta_data: String,
    /// Network config v2: DHCP on the NIC with the VM's MAC.
    pub network_config: String,
}

impl SeedFiles {
    /// Builds the seed files of a spec whose NIC has the MAC address `mac`.
    pub fn for_spec(spec: &VmSpec, mac: &str) -> Self {
        let hostname = spec.hostname.as_deref().unwrap_or(&spec.id);
        Self {
            user_data: spec.user_data.clone(),
            // The values are restricted to [a-z0-9-] by spec validation, so they need no
            // YAML quoting.
            meta_data: format!("instance-id: {}\nlocal-hostname: {hostname}\n", spec.id),
            network_config: format!(
                "version: 2\nethernets:\n  primary:\n    match:\n      macaddress: \"{}\"\n    dhcp4: true\n",
                mac
            ),
        }
    }
}

/// Writes the seed ISO to `iso` (atomically: a crash leaves no half-written seed).
pub fn write_iso(files: &SeedFiles, iso: &Path) -> Result<()> {
    let parent = iso
        .parent()
        .ok_or_else(|| Error::Config(format!("seed path {} has no parent", iso.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(".seed-")
        .tempdir_in(parent)
        .map_err(|e| Error::io("creating a staging directory in", parent, e))?;
    for (name, content) in [
        ("user-data", &files.user_data),
        ("meta-data", &files.meta_data),
        ("network-config", &files.network_config),
    ] {
        let path = staging.path().join(name);
        std::fs::write(&path, content).map_err(|e| Error::io("writing", path, e))?;
    }
    let partial = staging.path().join("seed.iso");
    let output = Command::new("genisoimage")
        .arg("-quiet")
        .arg("-output")
        .arg(&partial)
        .args(["-volid", VOLUME_ID, "-joliet", "-rock"])
        .arg(staging.path().join("user-data"))
        .arg(staging.path().join("meta-data"))
        .arg(staging.path().join("network-config"))
        .output()
        .map_err(|e| Error::Tool {
            tool: "genisoimage",
            message: format!("cannot run it ({e}); install the genisoimage package"),
        })?;
    if !output.status.success() {
        return Err(Error::Tool {
            tool: "genisoimage",
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    std::fs::rename(&partial, iso).map_err(|e| Error::io("moving the seed to", iso, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use decloud_sdk::agent_protocol::{BandwidthTier, QualityTier};

    fn isoinfo(args: &[&str]) -> String {
        let output = Command::new("isoinfo")
            .args(args)
            .output()
            .expect("isoinfo (genisoimage package)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn seed_iso_reads_back_with_label_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let spec = VmSpec {
            id: "web-7".into(),
            image: "debian".into(),
            vcpus: 1,
            memory_mib: 256,
            disk_gib: 1,
            quality: QualityTier::Standard,
            bandwidth: BandwidthTier::Basic,
            gpus: 0,
            hostname: Some("shop".into()),
            user_data: "#cloud-config\nruncmd:\n  - echo 'hello & <bye>'\n".into(),
            ports: vec![],
            readiness: vec![],
            ingress: Vec::new(),
        };
        let mac = "52:54:00:12:34:56";
        let files = SeedFiles::for_spec(&spec, mac);
        let iso = dir.path().join("seed.iso");
        write_iso(&files, &iso).unwrap();

        let iso_arg = iso.to_str().unwrap();
        let header = isoinfo(&["-d", "-i", iso_arg]);
        assert!(header.contains("Volume id: cidata"), "{header}");
        assert_eq!(
            isoinfo(&["-R", "-i", iso_arg, "-x", "/user-data"]),
            spec.user_data
        );
        let meta = isoinfo(&["-R", "-i", iso_arg, "-x", "/meta-data"]);
        assert_eq!(meta, "instance-id: web-7\nlocal-hostname: shop\n");
        let network = isoinfo(&["-R", "-i", iso_arg, "-x", "/network-config"]);
        assert!(network.contains(mac), "{network}");
        assert!(network.contains("dhcp4: true"));
        // Nothing but the ISO is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("seed.iso")]);
    }
}
