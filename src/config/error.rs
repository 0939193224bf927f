//! Configuration errors: each one names the file and line a technician
//! should edit, and the dotted key involved.

use std::fmt;
use std::path::{Path, PathBuf};

/// Exit status for configuration errors (`EX_CONFIG` from `sysexits.h`).
pub const EX_CONFIG: u8 = 78;

/// Name shown for the defaults compiled into the binary.
pub const BUILTIN_DEFAULTS: &str = "<built-in config/defaults.toml>";

/// A place in a configuration file: `path:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl Location {
    pub fn new(file: impl Into<PathBuf>, line: usize) -> Self {
        Self {
            file: file.into(),
            line,
        }
    }

    /// Whether this value comes from the compiled-in defaults rather than
    /// a file on disk.
    pub fn is_builtin(&self) -> bool {
        self.file == Path::new(BUILTIN_DEFAULTS)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Everything that can go wrong while loading configuration or reading a
/// secret. `Display` is the whole message, ready for a log line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("{}: cannot read configuration: {reason}", path.display())]
    Read { path: PathBuf, reason: String },

    /// The file is not valid TOML.
    #[error("{at}: TOML syntax error: {message}")]
    Syntax { at: Location, message: String },

    /// A key this version does not know (often a typo).
    #[error("{at}: unknown key `{key}`{}", expected_list(expected))]
    UnknownKey {
        at: Location,
        /// Dotted key, e.g. `signaling.urll`.
        key: String,
        /// Keys valid at that place.
        expected: Vec<String>,
    },

    /// A value of the wrong TOML type (e.g. a string where a number belongs).
    #[error("{at}: wrong type for `{key}`: {message}")]
    WrongType {
        at: Location,
        key: String,
        message: String,
    },

    /// A value of the right type that is not acceptable.
    #[error("{at}: bad value for `{key}`: {reason}")]
    InvalidValue {
        at: Location,
        key: String,
        reason: String,
    },

    /// A key this version no longer has because it had no effect.
    #[error("{at}: `{key}` was removed: {why}; delete the line")]
    Removed {
        at: Location,
        key: String,
        /// Why it did nothing.
        why: String,
    },

    /// A value that must be set (given the rest of the configuration) is not.
    #[error(
        "missing required key `{key}`: {why}; files read: {}; add it to {}",
        path_list(files_read),
        add_to.display()
    )]
    Missing {
        key: String,
        /// Why it is required here.
        why: String,
        files_read: Vec<PathBuf>,
        /// The file a technician should put the key in.
        add_to: PathBuf,
    },

    /// A secret file (token, credential) could not be read or is unusable.
    #[error("{}: cannot read secret: {reason}", path.display())]
    Secret { path: PathBuf, reason: String },

    /// A systemd credential is named but the service has no credentials.
    #[error(
        "cannot read systemd credential `{name}`: $CREDENTIALS_DIRECTORY is not set \
         (add `LoadCredential={name}:<path>` or `SetCredentialEncrypted={name}:…` to the unit)"
    )]
    NoCredentialsDirectory { name: String },

    /// More than one validation error; all are reported at once so a
    /// technician can fix them in one visit.
    #[error("{} configuration errors:{}", .0.len(), indented(.0))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// Process exit status for this error: always 78 (`EX_CONFIG`).
    pub fn exit_code(&self) -> u8 {
        EX_CONFIG
    }

    /// Collapses a list of errors into one (`None` when the list is empty).
    pub(crate) fn from_list(mut errors: Vec<ConfigError>) -> Option<ConfigError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(ConfigError::Several(errors)),
        }
    }
}

fn expected_list(expected: &[String]) -> String {
    match expected {
        [] => " (this table takes no keys)".to_owned(),
        [one] => format!(" (expected `{one}`)"),
        many => {
            let names: Vec<String> = many.iter().map(|k| format!("`{k}`")).collect();
            format!(" (expected one of {})", names.join(", "))
        }
    }
}

fn path_list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

fn indented(errors: &[ConfigError]) -> String {
    errors.iter().map(|e| format!("\n  {e}")).collect()
}
