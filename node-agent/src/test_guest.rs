//! A minimal guest for tests and the benchmark: the host's kernel booted directly with an
//! initramfs built here from `busybox-static` and the kernel's own virtio and ISO9660
//! modules. Its `/init` mounts the NoCloud `cidata` seed, prints the value of the
//! `decloud_test_value:` line of the user-data on the serial console as
//! `DECLOUD-TEST-VALUE=<value>`, brings up its NIC with busybox `udhcpc` (printing
//! `DECLOUD-TEST-ADDRESS=<address>`), serves the value over HTTP on port 80 with busybox
//! `httpd` (plus, when the user-data has a `decloud_test_blob_mib: <n>` line, an `n` MiB file
//! at `/blob` for bandwidth measurements, and [`LOGIN_PATH`] behind HTTP basic auth, which
//! answers 401 without credentials as a service behind a login does), then prints a line in the format of cloud-init's
//! final message, standing in for cloud-init (which this guest does not have) so the
//! cloud-init readiness probe can be exercised, and then runs a shell on the serial console
//! (for the interactive console's tests).

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// Console line prefix the guest prints the user-data value with.
pub const VALUE_MARKER: &str = "DECLOUD-TEST-VALUE=";

/// Console line prefix the guest prints its DHCP address with.
pub const ADDRESS_MARKER: &str = "DECLOUD-TEST-ADDRESS=";

/// Guest port of the HTTP server that answers with the user-data value.
pub const HTTP_PORT: u16 = 80;

/// Path the guest's HTTP server keeps behind basic auth: 401 without credentials.
pub const LOGIN_PATH: &str = "/private/";

/// Kernel command line for the guest.
pub const CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /seed
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for module in $(cat /lib/modules/order); do
  insmod "/lib/modules/$module" || echo "test guest: insmod $module failed"
done
found=""
for attempt in $(seq 1 100); do
  for device in /dev/vd?; do
    [ -b "$device" ] || continue
    if mount -t iso9660 -o ro "$device" /seed 2>/dev/null; then
      if [ -f /seed/user-data ]; then found="$device"; break 2; fi
      umount /seed
    fi
  done
  sleep 0.1
done
if [ -z "$found" ]; then
  echo "test guest: no cidata seed found"
else
  value="$(sed -n 's/^decloud_test_value: *//p' /seed/user-data)"
  echo "DECLOUD-TEST-VALUE=$value"
  mkdir -p /www
  echo "$value" > /www/index.html
  blob="$(sed -n 's/^decloud_test_blob_mib: *//p' /seed/user-data)"
  if [ -n "$blob" ]; then
    dd if=/dev/zero of=/www/blob bs=1048576 count="$blob" 2>/dev/null
  fi
  ip link set lo up
  if ip link set eth0 up 2>/dev/null; then
    # Waits for a lease (or gives up after 30 tries), then keeps renewing in the background.
    udhcpc -i eth0 -s /etc/udhcpc.script -t 30 -T 1 -b
  else
    echo "test guest: no network interface"
  fi
  # A page behind a login, as templates' services have (their readiness expects 401).
  mkdir -p /www/private
  echo private > /www/private/index.html
  echo "/private:decloud:$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" > /etc/httpd.conf
  httpd -p 80 -h /www -c /etc/httpd.conf
  # SSH like cloud-init's `users`: the last user the user-data names gets its
  # `ssh_authorized_keys` and its `plain_text_passwd`, served by dropbear on port 22.
  user="$(sed -n 's/^[ -]*name: *//p' /seed/user-data | tail -n 1)"
  if [ -x /bin/dropbear ] && [ -n "$user" ]; then
    password="$(sed -n 's/^ *plain_text_passwd: *//p' /seed/user-data | tail -n 1 | tr -d "'\"")"
    mkdir -p /dev/pts /etc/dropbear /tmp /root "/home/$user/.ssh"
    mount -t devpts devpts /dev/pts
    printf 'root:x:0:0:root:/root:/bin/sh\n%s:x:1000:1000::/home/%s:/bin/sh\n' "$user" "$user" > /etc/passwd
    printf 'root:x:0:\n%s:x:1000:\n' "$user" > /etc/group
    # Locked unless a password hashes ('*' never matches, an empty field would let anyone in).
    hash='*'
    if [ -n "$password" ]; then hash="$(mkpasswd -m sha512 "$password")" || hash='*'; fi
    [ -n "$hash" ] || hash='*'
    printf 'root:*:1:0:99999:7:::\n%s:%s:1:0:99999:7:::\n' "$user" "$hash" > /etc/shadow
    chmod 600 /etc/shadow
    echo /bin/sh > /etc/shells
    grep -o -E '(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+) [A-Za-z0-9+/=]+' /seed/user-data > "/home/$user/.ssh/authorized_keys"
    chmod 700 "/home/$user/.ssh"
    chmod 600 "/home/$user/.ssh/authorized_keys"
    chown -R 1000:1000 "/home/$user"
    dropbear -R -p 22
    echo "DECLOUD-TEST-SSH=$user"
  fi
  echo "Cloud-init v. test-guest finished at $(date). Datasource test guest seed $found."
fi
# A shell on the serial console for interactive console sessions; a new one when it exits.
while true; do setsid cttyhack sh; sleep 1; done
"#;

/// udhcpc's event script: configures the address and default route it was given.
const UDHCPC_SCRIPT: &str = r#"#!/bin/busybox sh
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    if ! ip addr show dev "$interface" | grep -q " $ip/"; then
      ip addr flush dev "$interface"
      ip addr add "$ip/${mask:-24}" dev "$interface"
    fi
    for gateway in $router; do
      ip route replace default via "$gateway" dev "$interface"
      break
    done
    echo "DECLOUD-TEST-ADDRESS=$ip"
    ;;
esac
exit 0
"#;

/// The newest `/boot/vmlinuz-*`, preferring Debian's `-cloud-amd64` flavour.
pub fn find_kernel() -> Result<PathBuf> {
    let entries = std::fs::read_dir("/boot").map_err(|e| Error::io("listing", "/boot", e))?;
    let mut kernels: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort_by_key(|p| (p.to_string_lossy().contains("cloud"), p.clone()));
    kernels.pop().ok_or_else(|| Error::Tool {
        tool: "test guest",
        message: "no /boot/vmlinuz-* kernel; run scripts/setup (linux-image-cloud-amd64)".into(),
    })
}

/// Kernel release of a `/boot/vmlinuz-<release>` path.
pub fn kernel_release(kernel: &Path) -> Result<String> {
    kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::Config(format!(
                "{} is not /boot/vmlinuz-<release>",
                kernel.display()
            ))
        })
}

/// Builds the initramfs (an uncompressed newc cpio archive) for `release` at `out`.
pub fn build_initramfs(release: &str, out: &Path) -> Result<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| Error::Tool {
            tool: "test guest",
            message: "busybox not found; run scripts/setup (busybox-static)".into(),
        })?;
    let busybox_bytes = std::fs::read(busybox).map_err(|e| Error::io("reading", busybox, e))?;
    let module_root = PathBuf::from("/lib/modules").join(release);
    let modules = module_load_order(
        &module_root,
        &["virtio_pci", "virtio_blk", "isofs", "virtio_net"],
    )?;

    let mut archive = Cpio::default();
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for dir in [
        "bin",
        "dev",
        "etc",
        "proc",
        "sys",
        "seed",
        "lib",
        "lib/modules",
    ] {
        archive.dir(dir);
        dirs.insert(dir.to_owned());
    }
    archive.file("init", 0o755, INIT.as_bytes());
    archive.file("etc/udhcpc.script", 0o755, UDHCPC_SCRIPT.as_bytes());
    archive.file("bin/busybox", 0o755, &busybox_bytes);
    // dropbear (scripts/setup installs it) with the shared libraries it links, at the paths its
    // loader looks in; without it the guest simply serves no SSH.
    let dropbear = Path::new("/usr/sbin/dropbear");
    if dropbear.exists() {
        for (path, bytes) in with_shared_libraries(dropbear)? {
            let inside = if path == dropbear {
                "bin/dropbear".to_owned()
            } else {
                path.to_string_lossy().trim_start_matches('/').to_owned()
            };
            let mut parent = String::new();
            for part in Path::new(&inside).parent().into_iter().flat_map(Path::iter) {
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(&part.to_string_lossy());
                if dirs.insert(parent.clone()) {
                    archive.dir(&parent);
                }
            }
            archive.file(&inside, 0o755, &bytes);
        }
    }
    let mut order = String::new();
    for module in &modules {
        let path = module_root.join(module);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        let name = Path::new(module)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !name.ends_with(".ko") {
            return Err(Error::Tool {
                tool: "test guest",
                message: format!("module {module} is compressed; busybox insmod needs plain .ko"),
            });
        }
        archive.file(&format!("lib/modules/{name}"), 0o644, &bytes);
        order.push_str(&name);
        order.push('\n');
    }
    archive.file("lib/modules/order", 0o644, order.as_bytes());
    let bytes = archive.finish();
    let mut file = std::fs::File::create(out).map_err(|e| Error::io("creating", out, e))?;
    file.write_all(&bytes)
        .map_err(|e| Error::io("writing", out, e))
}

/// `binary` and every shared library it loads (as `ldd` lists them, the loader included), with
/// their contents.
fn with_shared_libraries(binary: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let tool = |message: String| Error::Tool {
        tool: "test guest",
        message,
    };
    let output = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| tool(format!("running ldd {}: {e}", binary.display())))?;
    if !output.status.success() {
        return Err(tool(format!("ldd {} failed", binary.display())));
    }
    // Lines are `libz.so.1 => /lib/…/libz.so.1 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`.
    let mut paths = vec![binary.to_path_buf()];
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, target)) => target.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            paths.push(PathBuf::from(path));
        }
    }
    paths
        .into_iter()
        .map(|path| {
            // Libraries are often symlinks: the archive holds the file under the linked name.
            let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
            Ok((path, bytes))
        })
        .collect()
}

/// Module paths (relative to the module root) that load `targets`, dependencies first.
fn module_load_order(module_root: &Path, targets: &[&str]) -> Result<Vec<String>> {
    let dep_path = module_root.join("modules.dep");
    let deps =
        std::fs::read_to_string(&dep_path).map_err(|e| Error::io("reading", &dep_path, e))?;
    let table: Vec<(String, Vec<String>)> = deps
        .lines()
        .filter_map(|line| {
            let (module, rest) = line.split_once(':')?;
            Some((
                module.to_owned(),
                rest.split_whitespace().map(str::to_owned).collect(),
            ))
        })
        .collect();
    let find = |name: &str| {
        table.iter().find(|(path, _)| {
            Path::new(path)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.split('.').next() == Some(name))
        })
    };
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for target in targets {
        let (path, module_deps) = find(target).ok_or_else(|| Error::Tool {
            tool: "test guest",
            message: format!("kernel module {target} not in {}", dep_path.display()),
        })?;
        // modules.dep lists a module's dependencies so that the last must load first.
        for dep in module_deps.iter().rev().chain(std::iter::once(path)) {
            if seen.insert(dep.clone()) {
                order.push(dep.clone());
            }
        }
    }
    Ok(order)
}

/// A newc cpio archive writer, the format the kernel unpacks initramfs images from.
#[derive(Debug, Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.inode += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    fn file(&mut self, name: &str, permissions: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | permissions, data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_newc_records() {
        let mut archive = Cpio::default();
        archive.dir("bin");
        archive.file("init", 0o755, b"#!/bin/sh\n");
        let bytes = archive.finish();
        assert!(bytes.starts_with(b"070701"));
        assert!(bytes.len().is_multiple_of(4));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("init\0"));
        assert!(text.contains("TRAILER!!!\0"));
    }
}
