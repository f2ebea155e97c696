//! Configuration: one resolver with one precedence for every binary.
//!
//! [`Layers`] merges settings key by key in the order they are added: a service adds its
//! defaults, then its TOML file, then its environment variables, then its command-line flags,
//! and [`Layers::extract`] turns the result into the service's configuration type. Tables merge
//! key by key; any other value (a string, a number, a list) is replaced whole by a later layer.
//!
//! Environment variables are declared, not discovered: each [`EnvVar`] names one variable, the
//! key it sets and how its text becomes a value, so a bad value is reported under the
//! variable's name. A variable for a key inside a section (`attestation.batch_size`) only
//! applies when that section exists after the earlier layers: the environment adjusts a
//! section, it does not create one that would lack its required keys.

use std::path::{Path, PathBuf};

use serde::{Serialize, de::DeserializeOwned};
use toml::{Table, Value};

/// Why a configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML, or its keys or values do not fit the
    /// configuration (defaults, environment values and flags are typed, so a misfit comes from
    /// the file).
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// An environment variable has a value of the wrong form.
    #[error("invalid value for {name}: {value} ({reason})")]
    Env {
        /// Variable name.
        name: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// A layer built in code does not describe a table of settings.
    #[error("configuration layer is not a table of settings: {0}")]
    Layer(String),
    /// The resolved configuration is unusable.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// How the text of an environment variable becomes a value; `Err` says what was expected.
pub type ParseEnv = fn(&str) -> Result<Value, String>;

/// One environment variable and the key it sets.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    /// Variable name, e.g. `DECLOUD_ORCHESTRATOR_LISTEN`.
    pub name: &'static str,
    /// Dotted key it sets, e.g. `listen` or `siwe.domains`.
    pub key: &'static str,
    /// How its text becomes a value.
    pub parse: ParseEnv,
}

impl EnvVar {
    /// A variable whose text is the value.
    pub const fn string(name: &'static str, key: &'static str) -> Self {
        Self::with(name, key, |v| Ok(Value::String(v.to_owned())))
    }

    /// A variable holding a whole number.
    pub const fn integer(name: &'static str, key: &'static str) -> Self {
        Self::with(name, key, |v| {
            v.trim()
                .parse()
                .map(Value::Integer)
                .map_err(|_| "expected a whole number".into())
        })
    }

    /// A variable holding a whole number of zero or more.
    pub const fn unsigned(name: &'static str, key: &'static str) -> Self {
        Self::with(name, key, |v| {
            unsigned(v.trim()).ok_or_else(|| "expected a whole number of zero or more".into())
        })
    }

    /// A variable holding `true`/`1` or `false`/`0`.
    pub const fn boolean(name: &'static str, key: &'static str) -> Self {
        Self::with(name, key, |v| match v.trim() {
            "1" | "true" => Ok(Value::Boolean(true)),
            "0" | "false" => Ok(Value::Boolean(false)),
            _ => Err("expected true, false, 1 or 0".into()),
        })
    }

    /// A variable holding a comma-separated list of strings (blank items are dropped).
    pub const fn list(name: &'static str, key: &'static str) -> Self {
        Self::with(name, key, |v| {
            Ok(Value::Array(
                items(v).map(|s| Value::String(s.to_owned())).collect(),
            ))
        })
    }

    /// A variable holding a comma-separated list of whole numbers.
    pub const fn integer_list(name: &'static str, key: &'static str) -> Self {
        Self::with(name, key, |v| {
            items(v)
                .map(|s| s.parse().map(Value::Integer))
                .collect::<Result<_, _>>()
                .map(Value::Array)
                .map_err(|_| "expected comma-separated whole numbers".into())
        })
    }

    /// A variable holding a comma-separated list of whole numbers of zero or more.
    pub const fn unsigned_list(name: &'static str, key: &'static str) -> Self {
        Self::with(name, key, |v| {
            items(v)
                .map(unsigned)
                .collect::<Option<_>>()
                .map(Value::Array)
                .ok_or_else(|| "expected comma-separated whole numbers of zero or more".into())
        })
    }

    /// A variable with its own parser.
    pub const fn with(name: &'static str, key: &'static str, parse: ParseEnv) -> Self {
        Self { name, key, parse }
    }
}

/// TOML integers are 64-bit signed: an unsigned value beyond that range does not fit either.
fn unsigned(v: &str) -> Option<Value> {
    let n: u64 = v.parse().ok()?;
    i64::try_from(n).ok().map(Value::Integer)
}

fn items(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Settings merged layer by layer; see the [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct Layers {
    merged: Table,
    /// The file among the layers, named when the merged settings do not fit.
    file: Option<PathBuf>,
}

impl Layers {
    /// No settings yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a layer built in code: defaults, or flags (fields that are `None` set nothing).
    pub fn layer(mut self, layer: &impl Serialize) -> Result<Self, ConfigError> {
        let table = Table::try_from(layer).map_err(|e| ConfigError::Layer(e.to_string()))?;
        merge(&mut self.merged, table);
        Ok(self)
    }

    /// Sets one dotted key when `value` is `Some` (a flag given on the command line).
    pub fn set(mut self, key: &str, value: Option<impl Into<Value>>) -> Self {
        if let Some(value) = value {
            let (section, leaf) = split_key(key);
            let mut table = &mut self.merged;
            for part in section {
                table = match table
                    .entry(part.to_owned())
                    .or_insert_with(|| Value::Table(Table::new()))
                {
                    Value::Table(t) => t,
                    other => {
                        *other = Value::Table(Table::new());
                        other.as_table_mut().expect("just made a table")
                    }
                };
            }
            table.insert(leaf.to_owned(), value.into());
        }
        self
    }

    /// Adds the TOML file at `path`.
    pub fn file(self, path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.file_text(path, &text)
    }

    /// Adds a TOML file already read: `text` is the content of `path` (for a caller that reads
    /// files its own way, or tests that keep them in memory).
    pub fn file_text(mut self, path: &Path, text: &str) -> Result<Self, ConfigError> {
        let table: Table = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        merge(&mut self.merged, table);
        self.file = Some(path.to_owned());
        Ok(self)
    }

    /// Adds the variables of `vars` that `lookup` finds (the process environment, or a map in
    /// tests). A variable that does not parse is an error naming it.
    pub fn env(
        mut self,
        vars: &[EnvVar],
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        for var in vars {
            let Some(text) = lookup(var.name) else {
                continue;
            };
            let value = (var.parse)(&text).map_err(|reason| ConfigError::Env {
                name: var.name,
                value: text.clone(),
                reason,
            })?;
            let (section, leaf) = split_key(var.key);
            if let Some(table) = existing_section(&mut self.merged, section) {
                table.insert(leaf.to_owned(), value);
            }
        }
        Ok(self)
    }

    /// The merged settings as `T`.
    pub fn extract<T: DeserializeOwned>(self) -> Result<T, ConfigError> {
        // Through TOML text rather than straight from the table, so a misfit is reported with
        // the offending line (`domain_type = "xen"`) rather than only a type name.
        let text = toml::to_string(&self.merged).map_err(|e| ConfigError::Layer(e.to_string()))?;
        toml::from_str(&text).map_err(|source| match self.file {
            Some(path) => ConfigError::Parse {
                path,
                source: Box::new(source),
            },
            None => ConfigError::Invalid(source.to_string()),
        })
    }
}

fn split_key(key: &str) -> (impl Iterator<Item = &str>, &str) {
    let (section, leaf) = match key.rsplit_once('.') {
        Some((section, leaf)) => (Some(section), leaf),
        None => (None, key),
    };
    (section.into_iter().flat_map(|s| s.split('.')), leaf)
}

/// The table at `path` below `table`, when every table on the way exists.
fn existing_section<'t, 'k>(
    table: &'t mut Table,
    mut path: impl Iterator<Item = &'k str>,
) -> Option<&'t mut Table> {
    match path.next() {
        None => Some(table),
        Some(part) => match table.get_mut(part) {
            Some(Value::Table(inner)) => existing_section(inner, path),
            _ => None,
        },
    }
}

/// Merges `top` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut Table, top: Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(below)), Value::Table(above)) => merge(below, above),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        listen: String,
        workers: u32,
        json: bool,
        tags: Vec<String>,
        section: Section,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        optional: Option<Optional>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        name: String,
        ids: Vec<u64>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Optional {
        url: String,
        size: u64,
    }

    fn defaults() -> Settings {
        Settings {
            listen: "127.0.0.1:1".into(),
            workers: 1,
            json: false,
            tags: vec!["a".into()],
            section: Section {
                name: "default".into(),
                ids: vec![1],
            },
            optional: None,
        }
    }

    const VARS: &[EnvVar] = &[
        EnvVar::string("APP_LISTEN", "listen"),
        EnvVar::integer("APP_WORKERS", "workers"),
        EnvVar::boolean("APP_JSON", "json"),
        EnvVar::list("APP_TAGS", "tags"),
        EnvVar::unsigned_list("APP_SECTION_IDS", "section.ids"),
        EnvVar::unsigned("APP_OPTIONAL_SIZE", "optional.size"),
    ];

    #[derive(Serialize)]
    struct Flags {
        listen: Option<String>,
        workers: Option<u32>,
    }

    fn resolve(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: Flags,
    ) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut layers = Layers::new().layer(&defaults())?;
        if let Some(text) = file {
            let path = dir.path().join("app.toml");
            std::fs::write(&path, text).unwrap();
            layers = layers.file(&path)?;
        }
        layers
            .env(VARS, |k| env.get(k).cloned())?
            .layer(&flags)?
            .extract()
    }

    const NO_FLAGS: Flags = Flags {
        listen: None,
        workers: None,
    };

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        assert_eq!(resolve(None, &[], NO_FLAGS).unwrap(), defaults());

        let file = "listen = \"file:2\"\nworkers = 2\ntags = [\"f\"]\n[section]\nname = \"file\"\n";
        let s = resolve(Some(file), &[], NO_FLAGS).unwrap();
        assert_eq!((s.listen.as_str(), s.workers), ("file:2", 2));
        // A section in the file changes only the keys it names.
        assert_eq!(
            s.section,
            Section {
                name: "file".into(),
                ids: vec![1]
            }
        );
        // A list is replaced, not appended to.
        assert_eq!(s.tags, ["f"]);

        let env = [
            ("APP_WORKERS", "3"),
            ("APP_JSON", "1"),
            ("APP_TAGS", "x, y,,"),
            ("APP_SECTION_IDS", "137, 31337"),
        ];
        let s = resolve(Some(file), &env, NO_FLAGS).unwrap();
        assert_eq!((s.listen.as_str(), s.workers, s.json), ("file:2", 3, true));
        assert_eq!(s.tags, ["x", "y"]);
        assert_eq!(s.section.ids, [137, 31337]);
        assert_eq!(s.section.name, "file");

        let flags = Flags {
            listen: Some("flag:4".into()),
            workers: None,
        };
        let s = resolve(Some(file), &env, flags).unwrap();
        assert_eq!((s.listen.as_str(), s.workers), ("flag:4", 3));

        let s = Layers::new()
            .layer(&defaults())
            .unwrap()
            .set("section.name", Some("set"))
            .set("workers", None::<i64>)
            .extract::<Settings>()
            .unwrap();
        assert_eq!((s.section.name.as_str(), s.workers), ("set", 1));
    }

    #[test]
    fn a_value_set_after_a_section_still_reads_back() {
        // Keys are kept sorted, so a late key can follow a section; the text must still parse.
        #[derive(Debug, PartialEq, Deserialize)]
        struct Late {
            a_section: Section,
            z_value: String,
        }
        let late: Late = Layers::new()
            .set("a_section.name", Some("s"))
            .set("a_section.ids", Some(Value::Array(vec![Value::Integer(2)])))
            .set("z_value", Some("z"))
            .extract()
            .unwrap();
        assert_eq!((late.a_section.ids, late.z_value.as_str()), (vec![2], "z"));
    }

    #[test]
    fn the_environment_adjusts_sections_but_does_not_create_them() {
        let s = resolve(None, &[("APP_OPTIONAL_SIZE", "8")], NO_FLAGS).unwrap();
        assert_eq!(s.optional, None);
        let file = "[optional]\nurl = \"u\"\nsize = 1\n";
        let s = resolve(Some(file), &[("APP_OPTIONAL_SIZE", "8")], NO_FLAGS).unwrap();
        assert_eq!(
            s.optional,
            Some(Optional {
                url: "u".into(),
                size: 8
            })
        );
    }

    #[test]
    fn bad_input_is_named() {
        let e = resolve(None, &[("APP_WORKERS", "many")], NO_FLAGS).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Env {
                    name: "APP_WORKERS",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("many"), "{e}");
        let e = resolve(None, &[("APP_JSON", "yes")], NO_FLAGS).unwrap_err();
        assert!(e.to_string().contains("APP_JSON"), "{e}");
        let e = resolve(None, &[("APP_SECTION_IDS", "1,x")], NO_FLAGS).unwrap_err();
        assert!(e.to_string().contains("APP_SECTION_IDS"), "{e}");
        let e = resolve(None, &[("APP_SECTION_IDS", "1,-2")], NO_FLAGS).unwrap_err();
        assert!(e.to_string().contains("APP_SECTION_IDS"), "{e}");
        let file = "[optional]\nurl = \"u\"\nsize = 1\n";
        let e = resolve(Some(file), &[("APP_OPTIONAL_SIZE", "-1")], NO_FLAGS).unwrap_err();
        assert!(e.to_string().contains("APP_OPTIONAL_SIZE"), "{e}");

        let e = resolve(Some("no_such_key = 1\n"), &[], NO_FLAGS).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("no_such_key"), "{e}");
        let e = resolve(Some("workers = \"two\"\n"), &[], NO_FLAGS).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("app.toml"), "{e}");
        let e = resolve(Some("workers = \n"), &[], NO_FLAGS).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        let e = Layers::new()
            .file(Path::new("/no/such/dir/app.toml"))
            .unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        // Without a file, a misfit is the configuration's, not a file's.
        let e = Layers::new().extract::<Settings>().unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)), "{e}");
    }
}
