//! The library as the CLI uses it: a bundle directory in, every rejection out with
//! its location; a valid bundle rendered for arbitrary valid deployments.

use decloud_templates::{Bundle, Rule, Vars, render, validate};
use proptest::prelude::*;

const MANIFEST: &str = r#"
name = "Bad"
slug = "bad"
category = "other"
description = "Breaks rules."
tags = ["x"]

[min_specs]
vcpus = 1
memory_gib = 0
disk_gib = 5

[[ports]]
port = 70000
protocol = "tcp"

[[ports]]
port = 22
protocol = "tcp"

[[ports]]
port = 22
protocol = "http"
"#;

const USER_DATA: &str = "#cloud-config
runcmd:
  - curl -fsSL https://example.net/install.sh | bash
  - dd if=/dev/zero of=/dev/vda bs=1M
  - mkfs.ext4 /dev/vdb
  - chmod -R 777 /
  - echo ${DECLOUD_API_TOKEN}
";

#[test]
fn a_bad_bundle_directory_reports_everything_with_locations() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("template.toml"), MANIFEST).unwrap();
    std::fs::write(dir.path().join("user-data"), USER_DATA).unwrap();
    let bundle = Bundle::load_dir(dir.path()).unwrap();
    let rejections = validate(&bundle).unwrap_err();
    let summary: Vec<String> = rejections.iter().map(|r| r.to_string()).collect();
    let expected = [
        (Rule::ZeroSpecs, "template.toml (min_specs.memory_gib)"),
        (Rule::PortOutOfRange, "template.toml (ports[0].port)"),
        (Rule::DuplicatePort, "template.toml (ports[2])"),
        (Rule::PipeToShell, "user-data:3 (runcmd[0])"),
        (Rule::RawDiskWrite, "user-data:4 (runcmd[1])"),
        (Rule::MkfsDisk, "user-data:5 (runcmd[2])"),
        (Rule::ChmodRoot, "user-data:6 (runcmd[3])"),
        (Rule::UnknownVariable, "user-data:7"),
    ];
    assert_eq!(rejections.len(), expected.len(), "{summary:#?}");
    for (rejection, (rule, location)) in rejections.iter().zip(expected) {
        assert_eq!(rejection.rule, rule, "{summary:#?}");
        assert_eq!(rejection.location.to_string(), location, "{summary:#?}");
        assert!(!rejection.reason.is_empty());
    }
}

#[test]
fn a_missing_directory_is_an_error() {
    assert!(Bundle::load_dir("/nonexistent/bundle").is_err());
}

const ALL_VARIABLES: &str = r#"#cloud-config
hostname: ${DECLOUD_HOSTNAME}
fqdn: "${DECLOUD_HOSTNAME}.decloud.internal"
users:
  - name: tenant
    ssh_authorized_keys:
      - ${DECLOUD_SSH_KEY}
write_files:
  - path: /etc/decloud.env
    content: |
      VM_ID=${DECLOUD_VM_ID}
      LEASE_ID=${DECLOUD_LEASE_ID}
      NODE_ID=${DECLOUD_NODE_ID}
      TENANT=${DECLOUD_TENANT}
      PASSWORD='${DECLOUD_PASSWORD}'
runcmd:
  - [sh, -c, 'echo "tenant:${DECLOUD_PASSWORD}" | chpasswd']
  - echo ${DECLOUD_VM_ID} > /etc/decloud-vm
"#;

fn bundle() -> Bundle {
    let mut bundle =
        Bundle::load_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/seed/postgresql")).unwrap();
    bundle.user_data = ALL_VARIABLES.to_owned();
    bundle
}

prop_compose! {
    fn deployment()(
        vm_id in "[a-z0-9][a-z0-9_-]{0,40}",
        labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..4),
        lease in prop_oneof!["[0-9]{1,30}", "0x[0-9a-f]{1,64}"],
        node in "[0-9a-fA-F]{64}",
        tenant in "[0-9a-fA-F]{40}",
        password in proptest::option::of("[A-Za-z0-9._~+=@%^,-]{16,64}"),
        key in "[A-Za-z0-9+/]{40,80}",
        comment in proptest::option::of("[A-Za-z0-9@._+-]{1,20}"),
    ) -> Vars {
        let vars = Vars::new(&vm_id, &labels.join("."), &lease, &format!("0x{node}"), &format!("0x{tenant}")).unwrap();
        let vars = match password {
            Some(p) => vars.with_password(&p).unwrap(),
            None => vars,
        };
        let key = match comment {
            Some(c) => format!("ssh-ed25519 {key} {c}"),
            None => format!("ssh-ed25519 {key}"),
        };
        vars.with_ssh_key(&key).unwrap()
    }
}

proptest! {
    #[test]
    fn every_valid_deployment_renders_to_the_intended_values(vars in deployment()) {
        let bundle = bundle();
        validate(&bundle).unwrap();
        let rendered = render(&bundle, &vars).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(rendered.as_str()).unwrap();
        let get = |v: decloud_templates::Variable| vars.get(v).unwrap().to_owned();
        use decloud_templates::Variable::*;
        // Even where YAML would read the host name as a number (`0e0`, `123`), it stays a string.
        prop_assert_eq!(doc["hostname"].as_str().unwrap(), get(Hostname));
        prop_assert_eq!(doc["fqdn"].as_str().unwrap(), format!("{}.decloud.internal", get(Hostname)));
        prop_assert_eq!(doc["users"][0]["ssh_authorized_keys"][0].as_str().unwrap(), get(SshKey));
        let env = doc["write_files"][0]["content"].as_str().unwrap();
        let expected_env = format!(
            "VM_ID={}\nLEASE_ID={}\nNODE_ID={}\nTENANT={}\nPASSWORD='{}'\n",
            get(VmId), get(LeaseId), get(NodeId), get(Tenant), get(Password)
        );
        prop_assert_eq!(env, expected_env.as_str());
        prop_assert_eq!(
            doc["runcmd"][0][2].as_str().unwrap(),
            format!("echo \"tenant:{}\" | chpasswd", get(Password))
        );
    }
}
