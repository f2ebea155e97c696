//! DeCloud VM template bundles.
//!
//! A template is a manifest (name, slug, category, minimum specs, ports, readiness
//! checks) plus cloud-init user-data with `${DECLOUD_*}` variables. This crate loads
//! bundles from a directory, validates them against the platform's security rules,
//! publishes them as one content-addressed object ([`Bundle::publish`],
//! [`Bundle::fetch`] over any [`decloud_content::ContentStore`]), and renders their
//! user-data for a deployment.
//!
//! ```
//! use decloud_templates::{Bundle, Vars, render, validate};
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/seed/postgresql");
//! let bundle = Bundle::load_dir(dir).unwrap();
//! validate(&bundle).unwrap();
//! let vars = Vars::new(
//!     "vm-7",
//!     "db-7",
//!     "42",
//!     "0x1111111111111111111111111111111111111111111111111111111111111111",
//!     "0x2222222222222222222222222222222222222222",
//! )
//! .unwrap();
//! let user_data = render(&bundle, &vars).unwrap();
//! assert!(user_data.as_str().contains(vars.password()));
//! let published = bundle.to_content();
//! assert_eq!(Bundle::from_content(&published).unwrap(), bundle);
//! println!("{}", bundle.cid());
//! ```

mod bundle;
mod error;
mod publish;
mod render;
mod validate;
mod vars;

pub use bundle::{
    BUNDLE_CID_OPTIONS, Bundle, CONTENT_FORMAT, Category, MANIFEST_FILE, MAX_CONTENT_SIZE,
    MAX_EXEC_WORD_BYTES, MAX_EXEC_WORDS, Manifest, MinSpecs, Port, Protocol, Readiness, Transport,
    USER_DATA_FILE,
};
pub use error::{RenderError, TemplateError, VarError};
pub use publish::PublishError;
pub use render::{RenderedUserData, render};
pub use validate::{
    DEFAULT_TRUSTED_SOURCES, Location, MAX_USER_DATA, Policy, Rejection, Rule, TrustedSource,
    validate, validate_with,
};
pub use vars::{GENERATED_PASSWORD_LEN, Variable, Vars, generate_password};
