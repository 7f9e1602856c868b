//! Configuration in layers: built-in defaults, then a TOML file, then `FEEDGRAPH__...`
//! environment variables (`FEEDGRAPH__STORAGE__DURABILITY=flush` sets `storage.durability`).
//! Command-line flags are applied last by the binary.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::store::StorageConfig;
use crate::validate::ValidationConfig;

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "feedgraph.toml";

/// Everything configurable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the data lives (sled database, secrets). Default `./data`.
    pub data_dir: PathBuf,
    /// Durability and cache settings.
    pub storage: StorageConfig,
    /// Validation plugin and thresholds.
    pub validation: ValidationConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            storage: StorageConfig::default(),
            validation: ValidationConfig::default(),
        }
    }
}

/// A configuration that could not be read or does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads defaults, then `file` (or `feedgraph.toml` if present), then the environment.
    /// A named file that does not exist is an error; the default file is optional.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(f) => {
                if !f.exists() {
                    return Err(ConfigError(format!(
                        "config file {} does not exist",
                        f.display()
                    )));
                }
                fig = fig.merge(Toml::file(f));
            }
            None => fig = fig.merge(Toml::file(DEFAULT_CONFIG_FILE)),
        }
        fig = fig.merge(Env::prefixed("FEEDGRAPH__").split("__"));
        fig.extract().map_err(|e| ConfigError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;

    #[test]
    #[allow(clippy::result_large_err)]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "data_dir = \"/tmp/x\"\n[storage]\ncache_mb = 64\n[validation]\nplugin = \"noop\"\n",
            )?;
            jail.set_env("FEEDGRAPH__STORAGE__DURABILITY", "flush");
            let c = Config::load(Some(Path::new("custom.toml"))).map_err(|e| e.0)?;
            assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
            assert_eq!(c.storage.cache_mb, 64);
            assert_eq!(c.storage.durability, Durability::Flush);
            assert_eq!(c.validation.plugin, "noop");
            assert!(c.storage.group_commit);
            assert!(Config::load(Some(Path::new("missing.toml"))).is_err());
            Ok(())
        });
    }
}
