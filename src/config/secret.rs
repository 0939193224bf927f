//! Secrets (tokens, TURN credentials) live in files or systemd credentials,
//! never in the TOML, so `config dump` and backups of `/etc` cannot leak them.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::ConfigError;

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the secret (`*_file` keys).
    File(PathBuf),
    /// A systemd credential name, read from `$CREDENTIALS_DIRECTORY/<name>`
    /// (`*_credential` keys).
    Credential(String),
}

impl SecretSource {
    /// The file holding the secret. `credentials_directory` is the value of
    /// `$CREDENTIALS_DIRECTORY` (passed in so callers and tests need not
    /// touch the process environment).
    pub fn path(&self, credentials_directory: Option<&Path>) -> Result<PathBuf, ConfigError> {
        match self {
            SecretSource::File(path) => Ok(path.clone()),
            SecretSource::Credential(name) => match credentials_directory {
                Some(dir) => Ok(dir.join(name)),
                None => Err(ConfigError::NoCredentialsDirectory { name: name.clone() }),
            },
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "file {}", path.display()),
            SecretSource::Credential(name) => write!(f, "systemd credential `{name}`"),
        }
    }
}

/// A secret value. `Debug` and `Display` print `<redacted>` so it cannot end
/// up in a log line by accident; use [`Secret::expose`] where the value is
/// really needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads a secret, resolving credentials through `$CREDENTIALS_DIRECTORY`.
/// Trailing line breaks are removed (editors and `echo` add one).
pub fn read_secret(source: &SecretSource) -> Result<Secret, ConfigError> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    read_secret_in(source, dir.as_deref())
}

/// [`read_secret`] with an explicit credentials directory.
pub fn read_secret_in(
    source: &SecretSource,
    credentials_directory: Option<&Path>,
) -> Result<Secret, ConfigError> {
    let path = source.path(credentials_directory)?;
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Secret {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(ConfigError::Secret {
            path,
            reason: "the file is empty".to_owned(),
        });
    }
    Ok(Secret(value.to_owned()))
}
