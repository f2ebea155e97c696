//! A process killed (SIGKILL) while writing leaves the embedded store whole: every
//! object present verifies, nothing half-written is visible, and reopening clears
//! the leftovers.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use decloud_content::{ContentStore, EmbeddedStore};

const CHILD_ENV: &str = "DECLOUD_CONTENT_CRASH_CHILD_DIR";

/// Not a test of its own: the body of the child process, which writes objects until
/// it is killed.
#[tokio::test]
#[ignore = "the child process of killed_writer_leaves_a_whole_store"]
async fn crash_child() {
    // Run among the ignored tests (`scripts/test --long`), outside its parent: nothing to do.
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let store = EmbeddedStore::open(dir.join("store")).await.unwrap();
    let source = dir.join("source");
    for round in 0u64.. {
        // Distinct content every round, large enough that a kill lands mid-write.
        let mut data = vec![0u8; 8 << 20];
        data[..8].copy_from_slice(&round.to_le_bytes());
        std::fs::write(&source, &data).unwrap();
        store.put_file(&source).await.unwrap();
        data[8] = 1;
        store.put(Bytes::from(data)).await.unwrap();
    }
}

#[tokio::test]
async fn killed_writer_leaves_a_whole_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .spawn()
        .unwrap();
    // Wait until the child has committed at least one object and is writing more.
    let objects = dir.path().join("store/objects");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&objects).map(|d| d.count()).unwrap_or(0) < 2 {
        assert!(std::time::Instant::now() < deadline, "child wrote nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap();
    child.wait().unwrap();

    let store = EmbeddedStore::open(dir.path().join("store")).await.unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("store/tmp"))
            .unwrap()
            .count(),
        0,
        "leftovers are cleared on open"
    );
    let mut verified = 0;
    for entry in std::fs::read_dir(&objects).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let cid = decloud_content::parse_cid(&name).unwrap();
        let bytes = store.get(&cid).await.unwrap();
        assert_eq!(bytes.len(), 8 << 20);
        verified += 1;
    }
    assert!(verified >= 2);
}
