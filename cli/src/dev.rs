//! `decloud dev`: runs the `decloud-dev` binary, which holds the services of the local network
//! (indexer, orchestrator, node agent), so that `decloud` itself builds without them.

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Args;
use decloud_runtime::LOG_ENV;

/// The binary `decloud dev` runs.
pub(crate) const DEV_BINARY: &str = "decloud-dev";

/// Everything after `decloud dev`, passed on to `decloud-dev` untouched.
#[derive(Debug, Clone, Args)]
pub(crate) struct DevCommand {
    /// Options of decloud-dev (`decloud dev --help` lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// Replaces this process with `decloud-dev` (so Ctrl-C and SIGTERM reach it directly), passing
/// the arguments on and the `--log` filter through [`LOG_ENV`]. Returns only on failure.
pub(crate) fn run(command: DevCommand, log: Option<&str>) -> ExitCode {
    let exe = std::env::current_exe().ok();
    let binary = match find_dev_binary(exe.as_deref(), std::env::var_os("PATH").as_deref()) {
        Ok(binary) => binary,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let mut child = std::process::Command::new(&binary);
    child.args(&command.args);
    if let Some(log) = log {
        child.env(LOG_ENV, log);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let error = child.exec();
        eprintln!("error: cannot run {}: {error}", binary.display());
        ExitCode::FAILURE
    }
    #[cfg(not(unix))]
    match child.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: cannot run {}: {error}", binary.display());
            ExitCode::FAILURE
        }
    }
}

/// Finds `decloud-dev`: beside `exe` (where cargo and an install put both binaries) first, so
/// the two come from the same build, else in the directories of `path`.
pub(crate) fn find_dev_binary(exe: Option<&Path>, path: Option<&OsStr>) -> Result<PathBuf, String> {
    let beside = exe.and_then(Path::parent).map(|dir| dir.join(DEV_BINARY));
    let on_path = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(DEV_BINARY));
    beside
        .into_iter()
        .chain(on_path)
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            let beside = exe
                .and_then(Path::parent)
                .map(|dir| format!("in {} nor ", dir.display()))
                .unwrap_or_default();
            format!(
                "`decloud dev` runs the {DEV_BINARY} binary, which is neither {beside}on PATH. \
                 In a clone of the repository, scripts/dev builds and runs it; or build it with \
                 `cargo build --release -p decloud-dev` and put target/release/{DEV_BINARY} beside \
                 decloud or on PATH"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    path.is_file()
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn the_binary_beside_decloud_comes_before_path() {
        let install = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let exe = file(install.path(), "decloud", 0o755);
        let beside = file(install.path(), DEV_BINARY, 0o755);
        file(elsewhere.path(), DEV_BINARY, 0o755);
        let path = std::env::join_paths([elsewhere.path()]).unwrap();
        assert_eq!(find_dev_binary(Some(&exe), Some(&path)).unwrap(), beside);
    }

    #[test]
    fn path_is_searched_in_order_for_an_executable_file() {
        let install = tempfile::tempdir().unwrap();
        let (first, second, third) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let exe = file(install.path(), "decloud", 0o755);
        // Not executable, then a directory of that name: neither is the binary.
        file(first.path(), DEV_BINARY, 0o644);
        std::fs::create_dir(second.path().join(DEV_BINARY)).unwrap();
        let found = file(third.path(), DEV_BINARY, 0o755);
        let path = std::env::join_paths([first.path(), second.path(), third.path()]).unwrap();
        assert_eq!(find_dev_binary(Some(&exe), Some(&path)).unwrap(), found);
    }

    #[test]
    fn absence_says_where_it_looked_and_how_to_get_it() {
        let install = tempfile::tempdir().unwrap();
        let exe = file(install.path(), "decloud", 0o755);
        let empty = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([empty.path()]).unwrap();
        let message = find_dev_binary(Some(&exe), Some(&path)).unwrap_err();
        assert!(
            message.contains(&install.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("scripts/dev"), "{message}");
        assert!(
            message.contains("cargo build --release -p decloud-dev"),
            "{message}"
        );
        assert!(find_dev_binary(None, None).is_err());
    }
}
