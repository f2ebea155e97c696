//! Helpers shared by the integration tests: fresh SQLite and PostgreSQL databases.
#![allow(dead_code, unreachable_pub)]

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

/// The PostgreSQL server for tests, as a URL without a database name:
/// `DECLOUD_TEST_POSTGRES_URL` (scripts/test starts one), or else a throwaway cluster started
/// through the same script, which a watchdog stops when this test process exits.
pub fn postgres_server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DECLOUD_TEST_POSTGRES_URL") {
            return url.trim_end_matches('/').to_string();
        }
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../indexer/scripts/postgres-test-cluster");
        let out = Command::new(script)
            .arg("start")
            .arg(std::process::id().to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("indexer/scripts/postgres-test-cluster runs");
        assert!(
            out.status.success(),
            "cannot start a PostgreSQL test cluster"
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// Creates an empty database with a unique name on the test server and returns its URL.
pub async fn postgres_database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let server = postgres_server();
    let name = format!(
        "orch_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
            % 1_000_000
    );
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&format!("{server}/postgres"))
        .await
        .expect("connect to postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    format!("{server}/{name}")
}

/// A fresh SQLite database file in a directory that lives as long as the returned guard.
pub fn sqlite_database() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("orchestrator.db").display());
    (url, dir)
}
