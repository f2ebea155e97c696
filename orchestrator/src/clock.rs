//! The orchestrator's clock: unix seconds, the one time unit of its records. Every layer takes
//! `now` from here (or as an argument, so tests choose the time); nothing reads the system clock
//! elsewhere.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
