//! `intercomd hub invite <answerer>`: the link that signs a resident's
//! phone in, and a QR code of it for the terminal.
//!
//! The token travels in the link's fragment (`#token=…`), which browsers
//! never send to a server, so it reaches no access log and no proxy; the
//! page stores it and removes it from the address bar and history at once.

use std::path::PathBuf;

use crate::config::{self, ConfigError, Settings};
use crate::hub::tls::{self, TlsSource};

#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error(
        "no answerer \"{id}\" in hub.answerers (known: {}; files read: {})",
        if known.is_empty() { "none".to_owned() } else { known.join(", ") },
        files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    UnknownAnswerer {
        id: String,
        known: Vec<String>,
        files: Vec<PathBuf>,
    },
    #[error("--url {0:?} is not an http:// or https:// address")]
    BadUrl(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What `invite` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub answerer: String,
    pub name: String,
    /// The whole sign-in link, token included.
    pub link: String,
    /// The link without the token, safe to show anywhere.
    pub base: String,
    /// The self-signed certificate's SHA-256 fingerprint, for the resident
    /// to compare when the phone warns once.
    pub fingerprint: Option<String>,
    /// The hub serves plain HTTP to this address: no microphone on a phone.
    pub insecure: bool,
}

/// The sign-in link of `answerer`. `base`: the address residents open,
/// overriding `hub.public_url` and the one derived from `hub.listen`.
pub fn invite(
    settings: &Settings,
    answerer: &str,
    base: Option<&str>,
) -> Result<Invite, InviteError> {
    let a = settings
        .hub
        .answerers
        .iter()
        .find(|a| a.id == answerer)
        .ok_or_else(|| InviteError::UnknownAnswerer {
            id: answerer.to_owned(),
            known: settings
                .hub
                .answerers
                .iter()
                .map(|a| a.id.clone())
                .collect(),
            files: settings.sources.clone(),
        })?;
    let token = config::read_secret(&a.token)?;
    let base = match base {
        Some(b) if b.starts_with("https://") || b.starts_with("http://") => b.to_owned(),
        Some(b) => return Err(InviteError::BadUrl(b.to_owned())),
        None => settings
            .hub
            .public_url
            .clone()
            .unwrap_or_else(|| derived_base(settings)),
    };
    let base = if base.ends_with('/') {
        base
    } else {
        format!("{base}/")
    };
    let link = format!("{base}#token={}", percent_encode(token.expose()));
    let fingerprint = match &settings.hub.tls {
        Some(TlsSource::SelfSigned { .. }) => {
            let dir = settings.hub.state_dir.join("tls");
            tls::load_pem(&dir.join("self-signed.crt"), &dir.join("self-signed.key"))
                .ok()
                .map(|(_, info)| info.fingerprint_sha256)
        }
        _ => None,
    };
    Ok(Invite {
        answerer: a.id.clone(),
        name: a.name.clone(),
        insecure: base.starts_with("http://"),
        link,
        base,
        fingerprint,
    })
}

/// `https://<this station's LAN address>:<port>/` from `hub.listen`.
fn derived_base(settings: &Settings) -> String {
    let listen = settings.hub.listen;
    let tls = settings.hub.tls.is_some();
    let host = if listen.ip().is_unspecified() {
        // The first address a phone on the LAN can reach: IPv4 first, as
        // that is what most building networks route.
        let addrs = tls::interface_addresses();
        addrs
            .iter()
            .find(|ip| ip.is_ipv4() && !ip.is_loopback())
            .or_else(|| addrs.iter().find(|ip| !ip.is_loopback()))
            .map(|ip| ip.to_string())
            .or_else(tls::host_name)
            .unwrap_or_else(|| "localhost".into())
    } else {
        listen.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let (scheme, default_port) = if tls { ("https", 443) } else { ("http", 80) };
    if listen.port() == default_port {
        format!("{scheme}://{host}/")
    } else {
        format!("{scheme}://{host}:{}/", listen.port())
    }
}

/// Everything but RFC 3986's unreserved characters, percent-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The link as a QR code drawn with half-block characters (two modules per
/// character cell), dark on light so phones read it from a dark terminal
/// too.
pub fn qr_text(link: &str) -> Result<String, String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(link.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| e.to_string())?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> (Settings, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "intercomd-invite-{}-{}",
            std::process::id(),
            extra.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("flat"), "tok+en/0123456789abcdef\n").unwrap();
        // Secret files must be private to be accepted.
        std::fs::set_permissions(
            dir.join("flat"),
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .unwrap();
        let toml = format!(
            "[hub]\nlisten = \"192.0.2.10:8443\"\nstate_dir = \"{d}/state\"\n{extra}\n[[hub.answerers]]\nid = \"flat-1a\"\nname = \"Flat 1A\"\ntoken_file = \"{d}/flat\"\ngroups = [\"residents\"]\n",
            d = dir.display()
        );
        (
            config::load_from_strs(&[("site.toml", &toml)]).unwrap(),
            dir,
        )
    }

    #[test]
    fn link_carries_the_token_in_the_fragment() {
        let (s, dir) = settings("");
        let i = invite(&s, "flat-1a", None).unwrap();
        assert_eq!(i.base, "https://192.0.2.10:8443/");
        assert_eq!(
            i.link,
            "https://192.0.2.10:8443/#token=tok%2Ben%2F0123456789abcdef"
        );
        assert!(!i.insecure);
        assert_eq!(i.name, "Flat 1A");
        let i = invite(&s, "flat-1a", Some("https://door.example.net")).unwrap();
        assert!(i.link.starts_with("https://door.example.net/#token="));
        assert!(matches!(
            invite(&s, "flat-1a", Some("door.example.net")),
            Err(InviteError::BadUrl(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn public_url_wins_and_plain_http_is_flagged() {
        let (s, dir) = settings("public_url = \"https://door.example.net:8443\"\n");
        let i = invite(&s, "flat-1a", None).unwrap();
        assert!(i.link.starts_with("https://door.example.net:8443/#token="));
        let _ = std::fs::remove_dir_all(dir);
        let (s, dir) = settings("[hub.tls]\nmode = \"off\"\n");
        let i = invite(&s, "flat-1a", None).unwrap();
        assert!(i.insecure);
        assert!(i.link.starts_with("http://192.0.2.10:8443/"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unknown_answerer_names_the_known_ones_and_the_files() {
        let (s, dir) = settings("");
        let e = invite(&s, "flat-9", None).unwrap_err().to_string();
        assert!(
            e.contains("\"flat-9\"") && e.contains("flat-1a") && e.contains("site.toml"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn qr_code_is_square_and_grows_with_the_link() {
        let short = qr_text("https://192.0.2.10:8443/#token=abc").unwrap();
        let lines: Vec<&str> = short.lines().collect();
        // Two modules per line: width ≈ 2 × height.
        let width = lines[0].chars().count();
        assert!(
            width >= 29 && (width as i64 - 2 * lines.len() as i64).abs() <= 2,
            "{width}x{}",
            lines.len()
        );
        let long = qr_text(&format!(
            "https://192.0.2.10:8443/#token={}",
            "a".repeat(64)
        ))
        .unwrap();
        assert!(long.lines().next().unwrap().chars().count() > width);
    }
}
