//! Stability of the compute-points CPU benchmark (not a test: a measurement, whose result
//! depends on the machine and on what else runs on it).
//!
//! Runs the benchmark several times in a row, prints each rate and the spread between the
//! fastest and the slowest run, and exits non-zero when the spread exceeds 5 %, the
//! repeatability compute points are meant to have.
//!
//! Run: `cargo run --release -p decloud-node-agent --example cpu_bench -- [runs]` (default 5).

use std::process::ExitCode;

/// The spread between runs compute points are meant to stay within.
const MAX_SPREAD: f64 = 0.05;

fn main() -> ExitCode {
    let runs: u32 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 5,
        Some(Ok(runs)) if runs >= 2 => runs,
        Some(_) => {
            eprintln!("usage: cpu_bench [runs], with runs a whole number of at least 2");
            return ExitCode::FAILURE;
        }
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    println!(
        "## compute points (best of {} x {} ms rounds of thread CPU time), {runs} runs",
        decloud_node_agent::BENCH_ROUNDS,
        decloud_node_agent::BENCH_ROUND_MILLIS
    );
    let mut rates = Vec::new();
    for run in 1..=runs {
        let rate = decloud_node_agent::single_core_rate();
        println!(
            "run {run}: {rate} keccak256/s per core, {cores} cores -> {} compute points",
            decloud_node_agent::compute_points(cores, rate)
        );
        rates.push(rate as f64);
    }
    let fastest = rates.iter().copied().fold(f64::MIN, f64::max);
    let slowest = rates.iter().copied().fold(f64::MAX, f64::min);
    let spread = (fastest - slowest) / fastest;
    println!(
        "spread: {:.1}% (fastest {fastest}, slowest {slowest}); limit {:.0}%",
        spread * 100.0,
        MAX_SPREAD * 100.0
    );
    if spread <= MAX_SPREAD {
        ExitCode::SUCCESS
    } else {
        println!(
            "UNSTABLE: runs differ by more than {:.0}%",
            MAX_SPREAD * 100.0
        );
        ExitCode::FAILURE
    }
}
