//! Logging: one environment variable for every binary, text or JSON lines on stderr.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// The environment variable every DeCloud binary reads its log filter from, in `RUST_LOG`'s
/// syntax (`info`, `warn,orchestrator=debug`, …). `RUST_LOG` itself is not read: one variable
/// for every binary, so that a filter set for another Rust program does not leak into ours.
pub const LOG_ENV: &str = "DECLOUD_LOG";

/// The filter when neither a flag nor [`LOG_ENV`] names one.
const DEFAULT_FILTER: &str = "info";

/// Directives every binary appends to its filter, whatever it is. arkworks instruments its
/// constraint gadgets with INFO spans (target `r1cs`) whose fields Debug-print the whole
/// constraint system; recording them makes each storage proof, and the node agent's
/// derivation of development keys, take hours instead of seconds. Any process that links the
/// prover (the node agent, `decloud-dev`, `decloud-prover`) would record them at `info`.
const ALWAYS_PINNED: &[&str] = &["r1cs=off"];

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// A log format that is neither `text` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log format must be text or json, not {0:?}")]
pub struct LogFormatError(pub String);

impl FromStr for LogFormat {
    type Err = LogFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(LogFormatError(other.to_owned())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Installs the process's log subscriber: the filter from [`LOG_ENV`] (default `info`), lines in
/// `format` on stderr. See [`init_logging_with`].
pub fn init_logging(format: LogFormat) {
    init_logging_with(None, format, &[]);
}

/// Installs the process's log subscriber. The filter is `flag` when a command line gave one,
/// else [`LOG_ENV`], else `info`; `pinned` directives, and [`ALWAYS_PINNED`], are appended to
/// it whatever it is (the orchestrator keeps a target that logs secrets below `debug`). A
/// filter that does not parse falls back to `info` with a warning rather than stopping the
/// program, which has work to do; so does a `RUST_LOG` set without [`LOG_ENV`], which is named
/// in the warning.
///
/// A second call in one process (tests that run a binary's entry point twice) keeps the first
/// subscriber.
pub fn init_logging_with(flag: Option<&str>, format: LogFormat, pinned: &[&str]) {
    let choice = choose_filter(flag, |name| std::env::var(name).ok());
    let (filter, rejected) = build_filter(&choice.directives, pinned);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Some(error) = rejected {
        tracing::warn!(target: "decloud::logging", from = choice.source, filter = %choice.directives, %error, "not a log filter; logging at info");
    }
    if choice.ignored_rust_log {
        tracing::warn!(target: "decloud::logging", "RUST_LOG is not read: set {LOG_ENV} instead");
    }
}

/// The filter a binary logs with and where it came from.
#[derive(Debug, PartialEq, Eq)]
struct FilterChoice {
    directives: String,
    source: &'static str,
    /// `RUST_LOG` is set and [`LOG_ENV`] is not: the user probably meant it for us.
    ignored_rust_log: bool,
}

fn choose_filter(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> FilterChoice {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let from_env = set(LOG_ENV);
    let ignored_rust_log = flag.is_none() && from_env.is_none() && set("RUST_LOG").is_some();
    let (directives, source) = match (flag, from_env) {
        (Some(flag), _) => (flag.to_owned(), "--log"),
        (None, Some(env)) => (env, LOG_ENV),
        (None, None) => (DEFAULT_FILTER.to_owned(), "default"),
    };
    FilterChoice {
        directives,
        source,
        ignored_rust_log,
    }
}

/// The filter of `directives` with the pinned ones appended; `info` (pinned too) and the parse
/// error when `directives` do not parse.
fn build_filter(directives: &str, pinned: &[&str]) -> (EnvFilter, Option<String>) {
    match EnvFilter::try_new(with_pinned(directives, pinned)) {
        Ok(filter) => (filter, None),
        Err(e) => (
            EnvFilter::new(with_pinned(DEFAULT_FILTER, pinned)),
            Some(e.to_string()),
        ),
    }
}

fn with_pinned(directives: &str, pinned: &[&str]) -> String {
    std::iter::once(directives)
        .chain(pinned.iter().copied())
        .chain(ALWAYS_PINNED.iter().copied())
        .filter(|d| !d.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flag_wins_over_the_variable_which_wins_over_the_default() {
        let both = env(&[(LOG_ENV, "warn"), ("RUST_LOG", "trace")]);
        assert_eq!(choose_filter(Some("debug"), &both).directives, "debug");
        let chosen = choose_filter(None, &both);
        assert_eq!(
            (chosen.directives.as_str(), chosen.source),
            ("warn", LOG_ENV)
        );
        assert!(!chosen.ignored_rust_log);
        let none = choose_filter(None, env(&[(LOG_ENV, " ")]));
        assert_eq!((none.directives.as_str(), none.source), ("info", "default"));
    }

    #[test]
    fn rust_log_alone_is_not_read_but_noticed() {
        let chosen = choose_filter(None, env(&[("RUST_LOG", "trace")]));
        assert_eq!(chosen.directives, "info");
        assert!(chosen.ignored_rust_log);
        assert!(!choose_filter(Some("warn"), env(&[("RUST_LOG", "trace")])).ignored_rust_log);
    }

    #[test]
    fn pinned_directives_follow_the_chosen_ones() {
        assert_eq!(
            with_pinned("debug", &["tungstenite=debug"]),
            "debug,tungstenite=debug,r1cs=off"
        );
        assert_eq!(with_pinned("", &[]), "r1cs=off");
    }

    /// Whether a span of `target` at `level` is recorded under the filter built from
    /// `directives`.
    fn records(directives: &str, target_is_r1cs: bool, level: tracing::Level) -> bool {
        let (filter, _) = build_filter(directives, &["tungstenite=debug"]);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = match (target_is_r1cs, level) {
                (true, tracing::Level::INFO) => tracing::info_span!(target: "r1cs", "mul"),
                (true, _) => tracing::trace_span!(target: "r1cs", "mul"),
                (false, tracing::Level::INFO) => tracing::info_span!(target: "prove", "epoch"),
                (false, _) => tracing::trace_span!(target: "prove", "epoch"),
            };
            !span.is_disabled()
        })
    }

    #[test]
    fn arkworks_constraint_spans_are_never_recorded() {
        use tracing::Level;
        for directives in ["info", "trace", "r1cs=trace", "not a filter ==="] {
            assert!(!records(directives, true, Level::INFO), "{directives}");
            assert!(!records(directives, true, Level::TRACE), "{directives}");
        }
        assert!(records("info", false, Level::INFO));
        assert!(records("trace", false, Level::TRACE));
        assert!(!records("info", false, Level::TRACE));
    }

    #[test]
    fn formats_parse_and_bad_ones_are_named() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        let e = "xml".parse::<LogFormat>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "log format must be text or json, not \"xml\""
        );
    }
}
