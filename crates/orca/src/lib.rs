//! The `orca` binary's library: everything a verb needs, usable from tests.
//!
//! - [`service`]: the whole service in one process (`orca serve`).
//! - [`client`]: a typed client over NATS (every client verb, the demo, the bench).
//! - [`connect`]: how every connection reaches NATS: URL, credentials, TLS.
//! - [`natsd`]: a local nats-server for `orca demo`, `orca bench` and the tests.
//! - [`render`]: how processes and subscriptions are printed for people.

pub mod client;
pub mod connect;
pub mod natsd;
pub mod render;
pub mod service;

/// Loads the catalog from `path`, or the built-in default.
pub fn load_catalog(path: Option<&std::path::Path>) -> anyhow::Result<orca_domain::Catalog> {
    use anyhow::Context;
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading catalog {}", p.display()))?;
            Ok(orca_domain::Catalog::from_toml(&text)
                .with_context(|| format!("loading catalog {}", p.display()))?)
        }
        None => Ok(orca_domain::Catalog::default_catalog()?),
    }
}
