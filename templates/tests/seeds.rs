//! The six seed templates: each loads, passes validation, renders to valid
//! cloud-config, survives publishing, and keeps the CID recorded here. A change to a
//! seed changes its CID: update the table below in the same commit, deliberately.

use std::path::PathBuf;

use decloud_content::{AddOptions, ContentStore, EmbeddedStore, cid_of};
use decloud_templates::{Bundle, Vars, render, validate};

/// Published CIDs of the seeds (CIDv1, `ipfs add --cid-version=1` of the content).
const SEEDS: [(&str, &str); 6] = [
    (
        "postgresql",
        "bafkreiacmxa4jgxmmbgewk2k2ac5zt4w72qun65lumu53wis2l6gt5ttde",
    ),
    (
        "shadowsocks",
        "bafkreigotdwpzjyyobpdoy7gcizcgk2x4opu73l2wd3lzsyse3jvfki6ma",
    ),
    (
        "vscode-server",
        "bafkreibqrxgftp35b5vidwuksvcgfaumvcgd6kmit35tizty3isl4b2evu",
    ),
    (
        "stable-diffusion",
        "bafkreifq67kejykopqnovt5nbda7mzmgkdfncq5xcguh7bn6xeamtopj7i",
    ),
    (
        "private-browser",
        "bafkreifwjcfyukxybrrakqpun44wptzsomxyzdtri2lc4rzv3nhi7wqdf4",
    ),
    (
        "web-proxy-browser",
        "bafkreieykxvrypfv6vwbvd7m7my2eg5nxredwhu44pw6ayuwjryw2f2zze",
    ),
];

fn seed_dir(slug: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("seed")
        .join(slug)
}

fn vars() -> Vars {
    Vars::new(
        "vm-0001",
        "seed-test",
        "7",
        "0xabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd",
        "0x00000000000000000000000000000000000000aa",
    )
    .unwrap()
}

#[test]
fn exactly_the_six_seeds_exist() {
    let mut found: Vec<String> =
        std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seed"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    found.sort();
    let mut expected: Vec<String> = SEEDS.iter().map(|(s, _)| s.to_string()).collect();
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn seeds_load_validate_and_render() {
    for (slug, _) in SEEDS {
        let bundle = Bundle::load_dir(seed_dir(slug)).unwrap();
        assert_eq!(bundle.manifest.slug, slug);
        if let Err(rejections) = validate(&bundle) {
            panic!("{slug} rejected: {rejections:#?}");
        }
        let vars = vars();
        let rendered = render(&bundle, &vars).unwrap();
        let text = rendered.as_str();
        assert!(!text.contains("${DECLOUD_"), "{slug} left a variable");
        assert!(
            text.contains(vars.password()),
            "{slug} does not use the password"
        );
        let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(doc["hostname"], "seed-test", "{slug}");
        assert!(doc["runcmd"].is_sequence(), "{slug} has no runcmd");
    }
}

#[test]
fn seed_cids_are_stable() {
    let mut actual = Vec::new();
    for (slug, _) in SEEDS {
        let bundle = Bundle::load_dir(seed_dir(slug)).unwrap();
        let content = bundle.to_content();
        assert_eq!(Bundle::from_content(&content).unwrap(), bundle);
        let cid = bundle.cid();
        assert_eq!(cid, cid_of(&content, AddOptions::KUBO_CID_V1));
        actual.push((slug, cid.to_string()));
    }
    let expected: Vec<(&str, String)> = SEEDS.iter().map(|(s, c)| (*s, c.to_string())).collect();
    assert_eq!(actual, expected, "seed CIDs changed");
}

/// cloud-init's own schema validator (Debian's `cloud-init`, installed by
/// `scripts/setup`) accepts every rendered seed.
#[test]
fn rendered_seeds_pass_cloud_init_schema() {
    let dir = tempfile::tempdir().unwrap();
    for (slug, _) in SEEDS {
        let bundle = Bundle::load_dir(seed_dir(slug)).unwrap();
        let rendered = render(&bundle, &vars()).unwrap();
        let path = dir.path().join(format!("{slug}.yaml"));
        std::fs::write(&path, rendered.as_str()).unwrap();
        let output = std::process::Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&path)
            .output()
            .expect("cloud-init missing: install the Debian package cloud-init (scripts/setup)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("Valid cloud-config"),
            "{slug}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The published bytes hash the same under Debian's independent `ipfs_cid`.
#[test]
fn seed_content_cids_match_ipfs_cid() {
    let dir = tempfile::tempdir().unwrap();
    for (slug, _) in SEEDS {
        let content = Bundle::load_dir(seed_dir(slug)).unwrap().to_content();
        let path = dir.path().join(slug);
        std::fs::write(&path, &content).unwrap();
        let output = std::process::Command::new("ipfs_cid")
            .arg(&path)
            .output()
            .expect("ipfs_cid missing: install the Debian package ipfs-cid (scripts/setup)");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            json["CIDv0"],
            cid_of(&content, AddOptions::KUBO_DEFAULT).to_string(),
            "{slug}"
        );
    }
}

#[tokio::test]
async fn seeds_round_trip_through_the_content_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    for (slug, _) in SEEDS {
        let bundle = Bundle::load_dir(seed_dir(slug)).unwrap();
        let cid = store.put(bundle.to_content().into()).await.unwrap();
        assert_eq!(cid, bundle.cid());
        let back = Bundle::from_content(&store.get(&cid).await.unwrap()).unwrap();
        assert_eq!(back, bundle);
    }
}
