//! `decloud dev` without `decloud-dev` beside it or on PATH: a clear error that says how to get
//! it, and nothing run. (`decloud-dev` itself is tested end to end in dev/tests/dev.rs.)

use std::process::Command;

#[test]
fn dev_without_decloud_dev_says_how_to_get_it() {
    // A copy of the real binary in a directory of its own, with an empty PATH: nothing beside it.
    let install = tempfile::tempdir().unwrap();
    let decloud = install.path().join("decloud");
    std::fs::copy(env!("CARGO_BIN_EXE_decloud"), &decloud).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(&decloud)
        .args(["dev", "--port", "0"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("decloud-dev"), "{stderr}");
    assert!(stderr.contains("scripts/dev"), "{stderr}");
    assert!(out.stdout.is_empty());
}
