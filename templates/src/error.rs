//! Errors of loading, publishing and rendering templates.

/// Loading or decoding a bundle failed (validation findings are [`crate::Rejection`]s).
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A bundle file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A bundle file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not valid TOML of the expected shape.
    #[error("invalid manifest {path}: {message}")]
    Manifest {
        /// The manifest file.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// Published bundle bytes are not a canonical `decloud-template/1` document.
    #[error("invalid bundle content: {0}")]
    Content(String),
}

/// A deploy-time value is not acceptable for its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    /// The value does not have the variable's format.
    #[error("invalid value for {variable}: {reason}")]
    Invalid {
        /// The variable, e.g. `DECLOUD_HOSTNAME`.
        variable: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("cannot generate a password: {0}")]
    Random(String),
}

/// Substituting variables into user-data failed; nothing is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The user-data names a variable outside the closed set.
    #[error("line {line}: unknown variable ${{{name}}}")]
    UnknownVariable {
        /// The name inside `${…}`.
        name: String,
        /// 1-based line.
        line: usize,
    },
    /// The user-data uses a variable the deployment has no value for.
    #[error("line {line}: no value for ${{{name}}}")]
    MissingValue {
        /// The variable.
        name: &'static str,
        /// 1-based line.
        line: usize,
    },
    /// The value cannot be placed where the variable stands without changing the
    /// YAML structure (plain, block and single-quoted scalars have no escapes for
    /// line breaks, and a plain scalar none at all); quote it in the template.
    #[error(
        "line {line}: value of ${{{name}}} is not safe in a {context}; use a double-quoted scalar"
    )]
    UnsafeValue {
        /// The variable.
        name: &'static str,
        /// 1-based line.
        line: usize,
        /// Where the variable stands, e.g. "plain scalar".
        context: &'static str,
    },
    /// The rendered cloud-config does not parse as YAML.
    #[error("rendered cloud-config is not valid YAML: {0}")]
    InvalidYaml(String),
}
