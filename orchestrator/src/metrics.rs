//! Prometheus metrics in the text exposition format, kept in memory without a metrics library:
//! request counts and latencies by route and status, sign-in outcomes, agent heartbeats and
//! connections.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

/// Upper bounds of the latency histogram, seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// In-memory metrics of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    sign_ins: Mutex<BTreeMap<String, u64>>,
    heartbeats: AtomicU64,
    heartbeat_latency: Mutex<Histogram>,
    agents: AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counters behind: still safe to read.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Records one finished request. `route` is the matched route template, so label values
    /// stay bounded whatever paths clients send.
    pub fn record_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        *lock(&self.requests)
            .entry((method.to_string(), route.to_string(), status))
            .or_insert(0) += 1;
        lock(&self.latency)
            .entry(route.to_string())
            .or_default()
            .observe(elapsed);
    }

    /// Records a sign-in outcome (`ok` or an error code).
    pub fn record_sign_in(&self, outcome: &str) {
        *lock(&self.sign_ins).entry(outcome.to_string()).or_insert(0) += 1;
    }

    /// Counts a heartbeat received from a node agent and how long booking it took (from the
    /// frame's arrival to the store's commit).
    pub fn record_heartbeat(&self, elapsed: Duration) {
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
        lock(&self.heartbeat_latency).observe(elapsed);
    }

    /// Adds `delta` (+1 or -1) to the number of connected node agents.
    pub fn agent_connected(&self, delta: i64) {
        self.agents.fetch_add(delta, Ordering::Relaxed);
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP decloud_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE decloud_http_requests_total counter\n");
        for ((method, route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "decloud_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str(
            "# HELP decloud_http_request_duration_seconds HTTP request latency by route.\n",
        );
        out.push_str("# TYPE decloud_http_request_duration_seconds histogram\n");
        for (route, h) in lock(&self.latency).iter() {
            h.render(
                &mut out,
                "decloud_http_request_duration_seconds",
                &format!("route=\"{}\"", escape(route)),
            );
        }
        out.push_str("# HELP decloud_sign_ins_total Sign-in attempts by outcome.\n");
        out.push_str("# TYPE decloud_sign_ins_total counter\n");
        for (outcome, n) in lock(&self.sign_ins).iter() {
            let _ = writeln!(out, "decloud_sign_ins_total{{outcome=\"{outcome}\"}} {n}");
        }
        out.push_str(
            "# HELP decloud_agent_heartbeats_total Heartbeats received from node agents.\n",
        );
        out.push_str("# TYPE decloud_agent_heartbeats_total counter\n");
        let _ = writeln!(
            out,
            "decloud_agent_heartbeats_total {}",
            self.heartbeats.load(Ordering::Relaxed)
        );
        out.push_str("# HELP decloud_agent_heartbeat_seconds Time from a heartbeat's arrival to its commit.\n");
        out.push_str("# TYPE decloud_agent_heartbeat_seconds histogram\n");
        lock(&self.heartbeat_latency).render(&mut out, "decloud_agent_heartbeat_seconds", "");
        out.push_str("# HELP decloud_agents_connected Node agents connected now.\n");
        out.push_str("# TYPE decloud_agents_connected gauge\n");
        let _ = writeln!(
            out,
            "decloud_agents_connected {}",
            self.agents.load(Ordering::Relaxed)
        );
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.record_request("GET", "/api/v1/nodes", 200, Duration::from_millis(3));
        m.record_request("GET", "/api/v1/nodes", 200, Duration::from_millis(30));
        m.record_sign_in("nonce_used");
        m.record_heartbeat(Duration::from_millis(2));
        let text = m.render();
        assert!(text.contains(
            "decloud_http_requests_total{method=\"GET\",route=\"/api/v1/nodes\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "decloud_http_request_duration_seconds_bucket{route=\"/api/v1/nodes\",le=\"0.005\"} 1"
        ));
        assert!(
            text.contains("decloud_http_request_duration_seconds_count{route=\"/api/v1/nodes\"} 2")
        );
        assert!(text.contains("decloud_sign_ins_total{outcome=\"nonce_used\"} 1"));
        assert!(text.contains("decloud_agent_heartbeats_total 1"));
        assert!(text.contains("decloud_agent_heartbeat_seconds_bucket{le=\"0.0025\"} 1"));
        assert!(text.contains("decloud_agent_heartbeat_seconds_bucket{le=\"0.001\"} 0"));
    }
}
