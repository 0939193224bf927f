//! How settings whose typed form differs from the key as written are
//! serialised for `intercomd config dump`: durations as the `*_ms` (or
//! `*_days`) integers the files use, an unset optional value as `""`,
//! where a secret is read as its `*_file` / `*_credential` key.
//!
//! Nothing here hides secret values: they are never part of the settings,
//! and the types that do carry one ([`super::Secret`],
//! [`super::secret::SecretUrl`]) redact themselves in their own `Serialize`.

use std::time::Duration;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::secret::SecretSource;

/// A duration as whole milliseconds (`*_ms` keys).
pub(crate) fn ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An optional duration whose key takes 0 for "off".
pub(crate) fn ms_or_zero<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    ms(&d.unwrap_or_default(), s)
}

/// An optional value whose key takes `""` for "unset".
pub(crate) fn or_empty<T: Serialize, S: Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => v.serialize(s),
        None => s.serialize_str(""),
    }
}

/// A value written as text in the files (`"tone:440"`, `"delay:gain"`).
pub(crate) fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Writes `<prefix>_file` or `<prefix>_credential` into the enclosing table
/// (used with `#[serde(flatten)]`).
pub(crate) fn secret_entry<M: SerializeMap>(
    map: &mut M,
    prefix: &str,
    source: Option<&SecretSource>,
) -> Result<(), M::Error> {
    match source {
        Some(SecretSource::File(path)) => map.serialize_entry(&format!("{prefix}_file"), path),
        Some(SecretSource::Credential(name)) => {
            map.serialize_entry(&format!("{prefix}_credential"), name)
        }
        None => Ok(()),
    }
}

/// `token_file` / `token_credential` (flattened).
pub(crate) fn token<S: Serializer>(v: &SecretSource, s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(None)?;
    secret_entry(&mut map, "token", Some(v))?;
    map.end()
}

/// An optional value written as text, `""` when unset.
pub(crate) fn display_or_empty<T: std::fmt::Display, S: Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_str(""),
    }
}

/// An answerer's `quiet_hours`, as written.
pub(crate) fn quiet_hours<S: Serializer>(
    v: &crate::hub::quiet::QuietHours,
    s: S,
) -> Result<S::Ok, S::Error> {
    v.source().serialize(s)
}

/// `<which>_control` and `<which>_volume_pct` of `[audio.alsa]` (flattened;
/// `""` and 0 when no control is set).
fn mixer<S: Serializer>(
    which: &str,
    v: &Option<super::MixerControl>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let (name, pct) = v
        .as_ref()
        .map_or(("", 0), |c| (c.name.as_str(), c.volume_pct));
    let mut map = s.serialize_map(Some(2))?;
    map.serialize_entry(&format!("{which}_control"), name)?;
    map.serialize_entry(&format!("{which}_volume_pct"), &pct)?;
    map.end()
}

pub(crate) fn capture_control<S: Serializer>(
    v: &Option<super::MixerControl>,
    s: S,
) -> Result<S::Ok, S::Error> {
    mixer("capture", v, s)
}

pub(crate) fn playback_control<S: Serializer>(
    v: &Option<super::MixerControl>,
    s: S,
) -> Result<S::Ok, S::Error> {
    mixer("playback", v, s)
}

/// `[hub.tls]` from where the certificate comes from.
pub(crate) fn hub_tls<S: Serializer>(
    tls: &Option<crate::hub::tls::TlsSource>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use super::settings::TlsMode;
    use crate::hub::tls::TlsSource;

    /// `[hub.tls.acme]`.
    #[derive(Serialize)]
    struct Acme<'a> {
        directory_url: super::secret::SecretUrl,
        domains: &'a [String],
        contact: &'a [String],
        #[serde(serialize_with = "or_empty")]
        ca_file: &'a Option<std::path::PathBuf>,
        renew_before_days: u64,
        #[serde(serialize_with = "ms")]
        check_interval_ms: &'a Duration,
    }

    let mut map = s.serialize_map(None)?;
    let mode = match tls {
        None => TlsMode::Off,
        Some(TlsSource::SelfSigned { .. }) => TlsMode::SelfSigned,
        Some(TlsSource::Files { .. }) => TlsMode::Files,
        Some(TlsSource::Acme(_)) => TlsMode::Acme,
    };
    map.serialize_entry("mode", &mode)?;
    match tls {
        Some(TlsSource::SelfSigned { extra_names }) => map.serialize_entry("names", extra_names)?,
        Some(TlsSource::Files {
            cert,
            key,
            reload_check,
        }) => {
            map.serialize_entry("cert_file", cert)?;
            map.serialize_entry("key_file", key)?;
            map.serialize_entry("reload_check_ms", &(reload_check.as_millis() as u64))?;
        }
        Some(TlsSource::Acme(a)) => map.serialize_entry(
            "acme",
            &Acme {
                directory_url: super::secret::SecretUrl::new(a.directory_url.clone()),
                domains: &a.domains,
                contact: &a.contact,
                ca_file: &a.ca_file,
                renew_before_days: a.renew_before.as_secs() / 86400,
                check_interval_ms: &a.check_interval,
            },
        )?,
        None => {}
    }
    map.end()
}
