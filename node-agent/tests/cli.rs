//! The binary's `init`: creates the node key once (mode 0600) and prints the node id the
//! registry expects with the key's address, taking settings from flags over environment
//! over the config file.

use std::{os::unix::fs::PermissionsExt, process::Command};

use decloud_sdk::agent_protocol;

fn init(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_decloud-node-agent"))
        .args(args)
        .arg("init")
        .envs(env.iter().copied())
        .env_remove("DECLOUD_AGENT_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

#[test]
fn init_creates_the_key_once_and_prints_the_registration_values() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\noperator = \"0x1111111111111111111111111111111111111111\"\nmachine_id = \"from-file\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    // The flag beats the environment, which beats the file.
    let out = init(
        &["--config", config_arg, "--machine-id", "from-flag"],
        &[("DECLOUD_AGENT_MACHINE_ID", "from-env")],
    );
    let operator: alloy::primitives::Address = "0x1111111111111111111111111111111111111111"
        .parse()
        .unwrap();
    let expected = agent_protocol::node_id(agent_protocol::machine_id("from-flag"), operator);
    assert_eq!(field(&out, "node_id:"), expected.to_string());
    let key = dir.path().join("data/node.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let again = init(
        &["--config", config_arg],
        &[("DECLOUD_AGENT_MACHINE_ID", "from-env")],
    );
    assert_eq!(
        field(&again, "node_key:"),
        field(&out, "node_key:"),
        "the key is kept"
    );
    let from_env = agent_protocol::node_id(agent_protocol::machine_id("from-env"), operator);
    assert_eq!(field(&again, "node_id:"), from_env.to_string());
    let from_file = init(&["--config", config_arg], &[]);
    let expected = agent_protocol::node_id(agent_protocol::machine_id("from-file"), operator);
    assert_eq!(field(&from_file, "node_id:"), expected.to_string());
}
