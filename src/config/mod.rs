//! Configuration: TOML fragments merged in order, then validated into
//! [`Settings`].
//!
//! The compiled-in defaults (`config/defaults.toml`) come first, then each
//! path given to [`load`]: a file, or a directory whose `*.toml` files are
//! read in lexical order (typically `/usr/lib/intercomd/config.d` for the
//! board, then `/etc/intercomd/config.d` for the site). A later fragment
//! overrides an earlier one key by key; arrays and arrays of tables are
//! replaced as a whole. Unknown keys are errors, so a typo never silently
//! falls back to a default. See `docs/configuration.md`.

mod error;
mod fragments;
mod secret;
mod ser;
mod settings;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use error::{BUILTIN_DEFAULTS, ConfigError, EX_CONFIG, Location};
pub use secret::{
    Secret, SecretSource, create_private_dir, read_secret, read_secret_in, write_private_file,
};
pub use secret::{SecretUrl, redact_url};
pub use settings::{
    AlsaPacing, AudioAlsa, AudioProcessing, AudioTones, MixerControl, NoiseSuppressionLevel,
};
pub use settings::{
    Answerer, Audio, AudioBackend, AudioSim, Button, Call, Door, Hardware, HardwareBackend,
    HardwareSim, Hub, Ice, IceServer, IceServerAuth, IceTransportPolicy, Log, LogTarget, MdnsMode,
    Opus, RemoteSignaling, Settings, Signaling, SignalingMode, SignalingTarget, SimEchoPath,
    SimSource, Station,
};
pub use settings::{
    Bias, DoorConfig, GpioConfig, InputConfig, InputKind, LedConfig, LineRef, LineSpec,
};
pub use settings::{BluetoothBackend, BluetoothConfig, BluetoothPairing};

use fragments::{Node as _, Source};

/// The shipped defaults, compiled in so the daemon runs with no files at all.
pub const DEFAULTS_TOML: &str = include_str!("../../config/defaults.toml");

/// Where the daemon looks for fragments when not told otherwise: the board's
/// drop-ins (shipped with the image), then the site's.
pub const DEFAULT_PATHS: [&str; 2] = ["/usr/lib/intercomd/config.d", "/etc/intercomd/config.d"];

/// Where a technician is told to add a missing key when nothing better is
/// known.
const SITE_FILE: &str = "/etc/intercomd/config.d/50-site.toml";

/// Loads the built-in defaults, then every fragment under `paths`, merges
/// and validates them.
///
/// Each path is a file or a directory (every `*.toml` inside, in lexical
/// order; names starting with `.` are skipped as editor leftovers). A
/// directory that does not exist is skipped, since `/etc/intercomd/config.d`
/// is normally absent on a fresh device; a missing path ending in `.toml` is
/// an error, since it was clearly meant as a file.
pub fn load(paths: &[PathBuf]) -> Result<Settings, ConfigError> {
    let mut texts = Vec::new();
    for file in fragment_files(paths)? {
        let text = std::fs::read_to_string(&file).map_err(|e| ConfigError::Read {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        texts.push((file, text));
    }
    merge(&texts, site_file_for(paths))
}

/// Like [`load`], with fragment texts given directly as `(name, text)`
/// (after the built-in defaults). For tests and tools.
pub fn load_from_strs(fragments: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let texts: Vec<(PathBuf, String)> = fragments
        .iter()
        .map(|(name, text)| (PathBuf::from(name), (*text).to_owned()))
        .collect();
    let add_to = texts
        .last()
        .map_or_else(|| PathBuf::from(SITE_FILE), |(name, _)| name.clone());
    merge(&texts, add_to)
}

/// The built-in defaults alone.
pub fn defaults() -> Result<Settings, ConfigError> {
    merge(&[], PathBuf::from(SITE_FILE))
}

fn merge(texts: &[(PathBuf, String)], add_to: PathBuf) -> Result<Settings, ConfigError> {
    let builtin = Source {
        path: PathBuf::from(BUILTIN_DEFAULTS),
        text: DEFAULTS_TOML,
    };
    let mut merged = fragments::parse(&builtin)?;
    let mut files_read = vec![builtin.path];
    // Syntax and key errors of every file are reported together.
    let mut errors = Vec::new();
    for (path, text) in texts {
        let source = Source {
            path: path.clone(),
            text,
        };
        match fragments::parse(&source) {
            Ok(fragment) => merged.merge(fragment),
            Err(ConfigError::Several(several)) => errors.extend(several),
            Err(e) => errors.push(e),
        }
        files_read.push(path.clone());
    }
    if let Some(error) = ConfigError::from_list(errors) {
        return Err(error);
    }
    settings::validate(&merged, files_read, add_to)
}

/// Expands `paths` into the fragment files to read, in order.
fn fragment_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let read_error = |path: &Path, e: std::io::Error| ConfigError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut files = Vec::new();
    for path in paths {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !is_toml(path) => continue,
            Err(e) => return Err(read_error(path, e)),
        };
        if !meta.is_dir() {
            files.push(path.clone());
            continue;
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| read_error(path, e))? {
            let entry = entry.map_err(|e| read_error(path, e))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') || !is_toml(Path::new(&name)) {
                continue;
            }
            let file = entry.path();
            // Follows symlinks, so a linked fragment is read like a file.
            let is_file = std::fs::metadata(&file)
                .map_err(|e| read_error(&file, e))?
                .is_file();
            if is_file {
                found.push((name, file));
            }
        }
        found.sort();
        files.extend(found.into_iter().map(|(_, file)| file));
    }
    Ok(files)
}

fn is_toml(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "toml")
}

/// The file a technician should add a missing key to: the last file given,
/// or `50-site.toml` in the last directory given.
fn site_file_for(paths: &[PathBuf]) -> PathBuf {
    match paths.last() {
        Some(path) if is_toml(path) => path.clone(),
        Some(dir) => dir.join("50-site.toml"),
        None => PathBuf::from(SITE_FILE),
    }
}
