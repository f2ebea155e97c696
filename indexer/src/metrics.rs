//! Counters and gauges of a follower, exported in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live figures of one follower. Cheap atomics: the follower updates them, `/metrics` reads them.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The chain head last seen.
    pub head_block: AtomicU64,
    /// The last block whose logs are committed.
    pub indexed_block: AtomicU64,
    /// Logs committed since start (a replay after a reorg counts again).
    pub events_total: AtomicU64,
    /// Reorgs detected and rolled back.
    pub reorgs_total: AtomicU64,
    /// Failed RPC calls (each retry counts).
    pub rpc_errors_total: AtomicU64,
    /// Whether a handler or store error has stopped indexing.
    pub indexing_error: AtomicBool,
}

impl Metrics {
    /// Blocks between the head and the last indexed block.
    pub fn lag(&self) -> u64 {
        self.head_block
            .load(Ordering::Relaxed)
            .saturating_sub(self.indexed_block.load(Ordering::Relaxed))
    }

    /// The figures in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, prefix: &str) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &str, u64); 6] = [
            (
                "head_block",
                "gauge",
                "Latest chain head seen.",
                self.head_block.load(Ordering::Relaxed),
            ),
            (
                "indexed_block",
                "gauge",
                "Last block whose logs are committed.",
                self.indexed_block.load(Ordering::Relaxed),
            ),
            (
                "lag_blocks",
                "gauge",
                "Head minus indexed block.",
                self.lag(),
            ),
            (
                "events_total",
                "counter",
                "Logs committed since start.",
                self.events_total.load(Ordering::Relaxed),
            ),
            (
                "reorgs_total",
                "counter",
                "Chain reorganisations rolled back.",
                self.reorgs_total.load(Ordering::Relaxed),
            ),
            (
                "rpc_errors_total",
                "counter",
                "Failed RPC calls, retries included.",
                self.rpc_errors_total.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {prefix}_{name} {help}");
            let _ = writeln!(out, "# TYPE {prefix}_{name} {kind}");
            let _ = writeln!(out, "{prefix}_{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.head_block.store(120, Ordering::Relaxed);
        m.indexed_block.store(100, Ordering::Relaxed);
        let text = m.render("decloud_indexer");
        assert!(
            text.contains(
                "# TYPE decloud_indexer_head_block gauge\ndecloud_indexer_head_block 120\n"
            )
        );
        assert!(text.contains("decloud_indexer_lag_blocks 20\n"));
        assert!(text.contains("# TYPE decloud_indexer_reorgs_total counter"));
    }
}
