//! Layered configuration: defaults in code, then an optional TOML file, then
//! `MSGR_`-prefixed environment variables (`__` separates nested keys, e.g.
//! `MSGR_NATS__URL=nats://10.0.0.5:4222`).

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How to reach NATS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated.
    pub url: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
        }
    }
}

/// Loads a config: defaults ← `file` (must exist if given) ← environment.
///
/// # Errors
/// A missing or malformed file, or a value of the wrong type.
pub fn load<T>(file: Option<&Path>) -> Result<T, Box<figment::Error>>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(f) = file {
        if !f.is_file() {
            return Err(Box::new(figment::Error::from(format!(
                "config file {} does not exist",
                f.display()
            ))));
        }
        fig = fig.merge(Toml::file(f));
    }
    fig.merge(Env::prefixed("MSGR_").split("__"))
        .extract()
        .map_err(Box::new)
}
