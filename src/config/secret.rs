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

/// In the configuration dump a secret value shows as a marker, never as
/// itself.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// What a hidden value shows as.
pub const REDACTED: &str = "<redacted>";

/// A URL that may carry secrets in its user information or query
/// (`wss://user:pw@hub/ws?token=…`). `Debug`, `Display` and `Serialize`
/// show it with those parts as `<redacted>` (see [`redact_url`]); use
/// [`SecretUrl::expose`] to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL as configured.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl serde::Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact_url(&self.0))
    }
}

/// Hides the user information and the query values (`?token=…`) of a URL;
/// a URL with neither is returned as written. Text that is not a URL but
/// has an `@` or `?` is hidden whole.
pub fn redact_url(text: &str) -> String {
    use std::fmt::Write as _;
    let Ok(url) = url::Url::parse(text) else {
        return match text.contains(['@', '?']) {
            true => REDACTED.to_owned(),
            false => text.to_owned(),
        };
    };
    let userinfo = !url.username().is_empty() || url.password().is_some();
    if !userinfo && url.query().is_none() && url.fragment().is_none() {
        return text.to_owned();
    }
    let mut out = format!("{}:", url.scheme());
    if let Some(host) = url.host_str() {
        out.push_str("//");
        if userinfo {
            let _ = write!(out, "{REDACTED}@");
        }
        out.push_str(host);
        if let Some(port) = url.port() {
            let _ = write!(out, ":{port}");
        }
    }
    out.push_str(url.path());
    if let Some(query) = url.query() {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) => format!("{k}={REDACTED}"),
                None => p.to_owned(),
            })
            .collect();
        let _ = write!(out, "?{}", params.join("&"));
    }
    if url.fragment().is_some() {
        let _ = write!(out, "#{REDACTED}");
    }
    out
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

/// The group that may read secret files besides their owner: the service's
/// own (`/etc/intercomd/secrets` is `root:intercomd`, files 0640).
pub const SECRET_GROUP: &str = "intercomd";

/// Why a secret file may not be used as it is: readable by everyone, or by
/// a group other than intercomd's own (`None` when it is private enough, or
/// cannot be inspected: reading it then reports the problem).
pub fn exposed_file(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o777;
    if mode & 0o004 != 0 {
        return Some(format!(
            "{} is readable by everyone (mode {mode:04o}): a secret file must be readable by intercomd only (chmod 600, or 640 with group {SECRET_GROUP})",
            path.display()
        ));
    }
    // SAFETY: getegid has no preconditions and cannot fail.
    let our_gid = unsafe { libc::getegid() };
    if mode & 0o040 != 0
        && meta.gid() != our_gid
        && group_name(meta.gid()).as_deref() != Some(SECRET_GROUP)
    {
        return Some(format!(
            "{} is readable by group {} (mode {mode:04o}): a secret file must be readable by intercomd only (chmod 600, or 640 with group {SECRET_GROUP})",
            path.display(),
            group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string())
        ));
    }
    None
}

/// The name of group `gid`, from the system's group database.
fn group_name(gid: u32) -> Option<String> {
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to live memory of the stated size;
    // getgrgid_r writes only within `grp` and `buf`.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || grp.gr_name.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points to a NUL-terminated string in `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(grp.gr_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Tokens the hub accepts carry at least this much randomness.
pub const TOKEN_MIN_BITS: usize = 128;

/// Checks that a hub token can carry [`TOKEN_MIN_BITS`]: at least 22
/// characters of the base64 alphabets (`A-Z a-z 0-9 - _ + /`, `=` padding
/// not counted), or 32 when every character is a hex digit. The rule counts
/// what the alphabet allows, so it catches short and hand-typed tokens; it
/// cannot tell a random token from a long word.
pub fn check_token_strength(token: &str) -> Result<(), String> {
    let how = "make one with `openssl rand -base64 32` (or `openssl rand -hex 16`)";
    if let Some(bad) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '=')))
    {
        return Err(format!(
            "the token holds {:?}, outside A-Z a-z 0-9 - _ + / =: {how}",
            bad.escape_default().to_string()
        ));
    }
    let symbols = token.trim_end_matches('=').len();
    let per_char = if token.bytes().all(|b| b.is_ascii_hexdigit()) {
        4
    } else {
        6
    };
    let bits = symbols * per_char;
    if bits < TOKEN_MIN_BITS {
        let need = TOKEN_MIN_BITS.div_ceil(per_char);
        return Err(format!(
            "the token is {symbols} characters ({bits} bits); at least {need} are needed for {TOKEN_MIN_BITS} bits: {how}"
        ));
    }
    Ok(())
}

/// Creates `dir` (and its parents) for secrets: mode 0700, owned by us. An
/// existing directory is accepted only if it is ours and not a symlink (a
/// directory in `/tmp` could have been made by someone else to read or swap
/// what we write), and is then narrowed to 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory of ours (a symlink, or owned by uid {})",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes a secret to `path`, readable by us only (0600, also when the file
/// existed with a wider mode).
pub fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents.as_bytes())
}

#[cfg(test)]
mod private_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn secrets_are_written_readable_by_us_only() {
        let base = std::env::temp_dir().join(format!("intercomd-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("state");
        create_private_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&dir), 0o700);
        // An existing, too open directory is narrowed.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&dir), 0o700);

        let file = dir.join("a.token");
        write_private_file(&file, "s3cret\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private_file(&file, "other\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "other\n");

        // A symlink in place of the directory or the file is refused.
        let link = base.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(create_private_dir(&link).is_err());
        let flink = dir.join("b.token");
        std::os::unix::fs::symlink(&file, &flink).unwrap();
        assert!(write_private_file(&flink, "x").is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "other\n");
        let _ = std::fs::remove_dir_all(&base);
    }
}
