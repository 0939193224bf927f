//! Whom the hub's HTTP side answers and what its answers say about
//! themselves: requests must name the hub by one of its own names (`Host`),
//! WebSocket upgrades from a browser must come from one of its own pages
//! (`Origin`), and every response carries the headers that keep the
//! answering page out of frames, other sites' scripts and referrers.
//!
//! The `Host` check stops DNS rebinding (a foreign page resolving its own
//! name to the station's address); the `Origin` check stops a foreign page
//! from opening `/ws` with a token it tricked a resident into pasting.
//! Non-browser clients (the station itself, tools) send no `Origin` and
//! stay allowed: they authenticate with their token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::conn::{normal_authority, parse_origin, split_host_port};
use super::tls::CertStore;

/// The names and origins the hub answers to.
#[derive(Debug, Clone, Default)]
pub struct HttpPolicy {
    /// Host names and addresses, lower case, IPv6 without brackets.
    pub names: Vec<String>,
    /// The certificate in use names these too (files, ACME).
    pub certs: Option<Arc<CertStore>>,
    /// Extra origins allowed to open `/ws` (`hub.allowed_origins` and
    /// `hub.public_url`'s origin), as [`parse_origin`] gives them.
    pub origins: Vec<String>,
    /// Send `Strict-Transport-Security` over TLS: only with a certificate
    /// browsers trust (files, ACME); with a self-signed one it would lock
    /// residents out the day it changes.
    pub hsts: bool,
}

/// Set on every request by the connection that carried it.
#[derive(Debug, Clone, Copy)]
pub struct OverTls(pub bool);

impl HttpPolicy {
    /// Whether `host` (no port) is one of the hub's names.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if self.names.contains(&host) {
            return true;
        }
        let origin_host = |o: &String| {
            o.split_once("://")
                .and_then(|(_, a)| split_host_port(a))
                .is_some_and(|(h, _)| h.trim_start_matches('[').trim_end_matches(']') == host)
        };
        if self.origins.iter().any(origin_host) {
            return true;
        }
        if let Some(store) = &self.certs
            && store.names().iter().any(|n| n.eq_ignore_ascii_case(&host))
        {
            return true;
        }
        // Addresses can change under a running station (DHCP): an address
        // literal is checked against the interfaces as they are now.
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => super::tls::interface_addresses()
                .iter()
                .any(|a| a.to_canonical() == ip.to_canonical()),
            Err(_) => false,
        }
    }

    /// Whether a browser page at `origin` may open the WebSocket of a
    /// request that named the hub `authority` (its `Host`).
    pub fn origin_allowed(&self, origin: &str, authority: &str) -> bool {
        let Some(origin) = parse_origin(origin) else {
            return false;
        };
        if self.origins.contains(&origin) {
            return true;
        }
        // Same origin: the page's authority is the one the request names.
        let (scheme, page) = origin
            .split_once("://")
            .expect("parse_origin always gives scheme://authority");
        let default = if scheme == "https" { "443" } else { "80" };
        normal_authority(authority, default).is_some_and(|a| a == page)
    }
}

/// The request's authority (`Host`, or the absolute URI's).
fn authority(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// The middleware on every hub route and the redirect listener.
pub async fn guard(State(policy): State<Arc<HttpPolicy>>, req: Request, next: Next) -> Response {
    let tls = req.extensions().get::<OverTls>().is_some_and(|t| t.0);
    let Some(auth) = authority(&req).and_then(|a| normal_authority(&a, "0")) else {
        return with_headers(
            (StatusCode::BAD_REQUEST, "a Host header is required\n").into_response(),
            None,
            false,
        );
    };
    let host_ok = split_host_port(&auth).is_some_and(|(h, _)| policy.host_allowed(h));
    if !host_ok {
        // The name is not echoed: it is the peer's text.
        return with_headers(
            (
                StatusCode::MISDIRECTED_REQUEST,
                "this station does not answer to that name\n",
            )
                .into_response(),
            None,
            false,
        );
    }
    if is_upgrade(req.headers())
        && let Some(origin) = req.headers().get(header::ORIGIN)
        && !origin
            .to_str()
            .is_ok_and(|o| policy.origin_allowed(o, &auth))
    {
        return with_headers(
            (
                StatusCode::FORBIDDEN,
                "WebSocket refused: the page is not one of this station's (hub.allowed_origins)\n",
            )
                .into_response(),
            Some(&auth),
            false,
        );
    }
    let response = next.run(req).await;
    with_headers(response, Some(&auth), tls && policy.hsts)
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The page's scripts and styles come only from the hub itself, nothing
/// inline; it talks only to the hub (its `wss://` included: older browsers
/// do not count WebSockets as `'self'`) and lives in no frame.
pub fn content_security_policy(authority: Option<&str>) -> String {
    let ws = authority
        .map(|a| format!(" ws://{a} wss://{a}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         manifest-src 'self'; worker-src 'self'; media-src 'self'; connect-src 'self'{ws}; \
         base-uri 'none'; form-action 'self'; object-src 'none'; frame-ancestors 'none'"
    )
}

fn with_headers(mut r: Response, authority: Option<&str>, hsts: bool) -> Response {
    let h = r.headers_mut();
    // `authority` passed normal_authority: host characters and a port only.
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(authority)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if hsts {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HttpPolicy {
        HttpPolicy {
            names: vec!["door.local".into(), "localhost".into(), "fd00::5".into()],
            origins: vec!["https://intercom.example.net".into()],
            ..Default::default()
        }
    }

    #[test]
    fn hosts_are_the_hub_s_names() {
        let p = policy();
        assert!(p.host_allowed("door.local"));
        assert!(p.host_allowed("DOOR.LOCAL."));
        assert!(p.host_allowed("[fd00::5]"));
        assert!(p.host_allowed("intercom.example.net"));
        assert!(p.host_allowed("127.0.0.1"), "loopback is an interface");
        assert!(!p.host_allowed("evil.example"));
        assert!(!p.host_allowed("203.0.113.9"));
    }

    #[test]
    fn origins_are_the_same_page_or_configured() {
        let p = policy();
        assert!(p.origin_allowed("https://door.local:8443", "door.local:8443"));
        assert!(p.origin_allowed("https://door.local", "door.local:443"));
        assert!(p.origin_allowed("http://localhost:8080", "localhost:8080"));
        assert!(p.origin_allowed("https://intercom.example.net", "door.local:8443"));
        assert!(!p.origin_allowed("http://evil.example", "door.local:8443"));
        // Another port of the same host is another origin.
        assert!(!p.origin_allowed("http://door.local:9000", "door.local:8443"));
        assert!(!p.origin_allowed("https://door.local:8443", "door.local:8080"));
        assert!(!p.origin_allowed("null", "door.local:8443"));
    }
}
