//! Helpers shared by the integration tests: fresh SQLite and PostgreSQL databases.
#![allow(dead_code, unreachable_pub)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Set by `scripts/test` to the URL of a throwaway cluster it started; when absent, a test
/// that needs PostgreSQL starts its own through `scripts/pg-throwaway`.
pub const POSTGRES_URL_ENV: &str = "DECLOUD_TEST_POSTGRES_URL";

/// A PostgreSQL server for the duration of a test, stopped on drop if the test started it.
pub struct Postgres {
    admin_url: String,
    owned: Option<(PathBuf, tempfile::TempDir)>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-throwaway")
}

impl Postgres {
    /// Uses the cluster named by `DECLOUD_TEST_POSTGRES_URL`, or starts a throwaway one.
    pub fn start() -> Self {
        if let Ok(url) = std::env::var(POSTGRES_URL_ENV) {
            return Self {
                admin_url: url,
                owned: None,
            };
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("run pg-throwaway");
        assert!(
            out.status.success(),
            "pg-throwaway start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let admin_url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Self {
            admin_url,
            owned: Some((dir.path().to_path_buf(), dir)),
        }
    }

    /// Creates an empty database with a unique name and returns its URL.
    pub async fn fresh_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "decloud_orch_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand_suffix()
        );
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.admin_url)
            .await
            .expect("connect to postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .expect("create database");
        pool.close().await;
        let base = self
            .admin_url
            .rsplit_once('/')
            .expect("url with database")
            .0;
        format!("{base}/{name}")
    }
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some((dir, _)) = &self.owned {
            let _ = Command::new(script()).arg("stop").arg(dir).status();
        }
    }
}

/// A fresh SQLite database file in a directory that lives as long as the returned guard.
pub fn sqlite_database() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("orchestrator.db").display());
    (url, dir)
}
