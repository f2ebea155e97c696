//! Finding the repository and the pinned Solidity toolchain from wherever a binary runs.

use std::path::{Path, PathBuf};

use crate::Error;

/// Environment variable that names the repository root explicitly.
pub const ROOT_ENV: &str = "DECLOUD_ROOT";

/// The DeCloud repository root: `$DECLOUD_ROOT` when set, else the first ancestor of the current
/// directory that holds `contracts/foundry.toml` and `deployments/`, else the checkout this binary
/// was built from.
pub fn repo_root() -> Result<PathBuf, Error> {
    if let Some(root) = std::env::var_os(ROOT_ENV).filter(|v| !v.is_empty()) {
        let root = PathBuf::from(root);
        return if is_repo_root(&root) {
            Ok(root)
        } else {
            Err(Error::Tool(format!(
                "{ROOT_ENV}={} is not a DeCloud checkout",
                root.display()
            )))
        };
    }
    if let Ok(cwd) = std::env::current_dir()
        && let Some(root) = cwd.ancestors().find(|dir| is_repo_root(dir))
    {
        return Ok(root.to_path_buf());
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if is_repo_root(&built_from) {
        return Ok(built_from.canonicalize().unwrap_or(built_from));
    }
    Err(Error::Tool(format!(
        "cannot find the DeCloud repository: run from inside it or set {ROOT_ENV}"
    )))
}

fn is_repo_root(dir: &Path) -> bool {
    dir.join("contracts").join("foundry.toml").is_file() && dir.join("deployments").is_dir()
}

/// The pinned anvil of `contracts/node_modules/.bin`, installed by `scripts/setup`.
pub fn anvil_path(root: &Path) -> Result<PathBuf, Error> {
    let path = root
        .join("contracts")
        .join("node_modules")
        .join(".bin")
        .join("anvil");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Tool(format!(
            "anvil not found at {}: run scripts/setup (npm ci in contracts/) or pass --anvil-path",
            path.display()
        )))
    }
}

/// `deployments/` of the repository.
pub fn deployments_dir(root: &Path) -> PathBuf {
    root.join("deployments")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_checkout() {
        let root = repo_root().unwrap();
        assert!(root.join("deployments").join("networks.toml").is_file());
        assert!(
            anvil_path(&root)
                .unwrap()
                .ends_with("contracts/node_modules/.bin/anvil")
        );
        let err = anvil_path(Path::new("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains("scripts/setup"), "{err}");
    }
}
