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
    /// The NATS user this process connects as (its role's identity; empty:
    /// none, for a server without authorization).
    pub user: String,
    /// That user's password, or (better) a file holding it.
    pub password: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            user: String::new(),
            password: None,
            password_file: None,
        }
    }
}

impl NatsConfig {
    /// The user and password to connect with, if a user is set.
    ///
    /// # Errors
    /// An unreadable password file, or a user without a password.
    pub fn credentials(&self) -> Result<Option<(String, String)>, String> {
        if self.user.is_empty() {
            return Ok(None);
        }
        let password = match (&self.password, &self.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| format!("reading the NATS password file {}: {e}", f.display()))?
                .trim()
                .to_owned(),
            (None, None) => {
                return Err(format!(
                    "NATS user {} has no password (nats.password or nats.password_file)",
                    self.user
                ))
            }
        };
        Ok(Some((self.user.clone(), password)))
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
