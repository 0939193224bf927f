//! The local control socket: a Unix stream socket (`station.control_socket`,
//! mode 0660) through which `intercomd bt pair` and `intercomd status`
//! reach the running daemon.
//!
//! One request line, one JSON reply line, then the daemon closes the
//! connection:
//!
//! ```text
//! > bt pair
//! < {"ok":true,"adapter":"hci0","address":"00:AA:01:00:00:23","timeout_ms":120000}
//! < {"ok":false,"error":"Bluetooth is off (bluetooth.enabled = false)"}
//! > status
//! < {"ok":true,"status":{"call":{"state":"idle",…},"signaling":"up",…}}
//! ```
//!
//! The socket is an edge of the daemon beside the controller: pairing goes
//! straight to the Bluetooth actor (it is no call logic), the status is the
//! controller's (`station::StatusHandle`, the same snapshot the simulated
//! panel serves).
//!
//! A request longer than [`MAX_REQUEST`] bytes or slower than
//! [`REQUEST_TIMEOUT`] is answered with an error; nothing a client sends
//! can stop the daemon.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::bt::{BtHandle, PairSource};
use crate::station::StatusHandle;

/// What the socket's requests reach.
#[derive(Clone, Debug)]
pub struct Targets {
    /// The Bluetooth actor, when `bluetooth.enabled`.
    pub bt: Option<BtHandle>,
    pub status: StatusHandle,
}

/// Longest request line.
pub const MAX_REQUEST: usize = 256;
/// A client must send its request within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `bt pair` waits for the Bluetooth service's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create the control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} exists and is not a socket; not replacing it")]
    NotASocket { path: PathBuf },
    #[error("{path} is in use by another running daemon")]
    InUse { path: PathBuf },
}

/// Binds the socket, replacing a stale one a previous run left behind.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let bind_err = |source| ControlError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // A socket someone answers on belongs to a running daemon;
            // one nobody answers on is left over from a previous run.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path).map_err(bind_err)?
        }
        Ok(_) => {
            return Err(ControlError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(_) => {}
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    Ok(listener)
}

/// Serves requests until cancelled, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    targets: Targets,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    use std::os::unix::fs::MetadataExt;
    let inode = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let ours = inode(&path);
    info!(path = %path.display(), "control socket listening");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let targets = targets.clone();
                    tracker.spawn(async move {
                        if let Err(e) = handle(stream, targets).await {
                            debug!(error = %e, "control socket client");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Only our own socket file: another daemon may have replaced it.
    if ours.is_some() && inode(&path) == ours {
        let _ = std::fs::remove_file(&path);
    }
}

async fn handle(stream: UnixStream, targets: Targets) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64 + 1);
    let reply =
        match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
            Err(_) => error_reply("no request within 5 s"),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) if line.len() > MAX_REQUEST => error_reply("request too long"),
            Ok(Ok(_)) => match std::str::from_utf8(&line).map(str::trim) {
                Ok("bt pair") => bt_pair(targets.bt).await,
                Ok("status") => match targets.status.get().await {
                    Some(status) => serde_json::json!({ "ok": true, "status": status }),
                    None => error_reply("the daemon is stopping"),
                },
                Ok(other) => {
                    let shown: String = other.chars().take(40).collect();
                    let known = "known: \"bt pair\", \"status\"";
                    error_reply(&format!("unknown request {shown:?} ({known})"))
                }
                Err(_) => error_reply("request is not UTF-8"),
            },
        };
    write.write_all(reply.to_string().as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

fn error_reply(message: &str) -> serde_json::Value {
    serde_json::json!({ "ok": false, "error": message })
}

async fn bt_pair(bt: Option<BtHandle>) -> serde_json::Value {
    let Some(bt) = bt else {
        return error_reply("Bluetooth is off (bluetooth.enabled = false)");
    };
    match tokio::time::timeout(REPLY_TIMEOUT, bt.pair(PairSource::ControlSocket)).await {
        Ok(Ok(open)) => serde_json::json!({
            "ok": true,
            "adapter": open.adapter,
            "address": open.address,
            "timeout_ms": open.timeout_ms,
        }),
        Ok(Err(e)) => error_reply(&e),
        Err(_) => error_reply("the Bluetooth service did not answer within 10 s"),
    }
}

/// The client side: sends one request, returns the reply line parsed.
pub async fn request(path: &Path, request: &str) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "cannot reach the daemon at {} (is intercomd running, and station.control_socket set?)",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{request}\n").as_bytes()).await?;
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(64 * 1024);
    tokio::time::timeout(REPLY_TIMEOUT + REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .context("the daemon did not answer")??;
    serde_json::from_str(line.trim())
        .with_context(|| format!("the daemon's answer is not JSON: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn raw(path: &Path, bytes: &[u8]) -> String {
        let mut s = UnixStream::connect(path).await.expect("socket is bound");
        s.write_all(bytes).await.expect("daemon reads");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("daemon replies");
        out
    }

    #[tokio::test]
    async fn requests_are_answered_and_bad_ones_refused() {
        let dir = tempdir();
        let path = dir.join("control.sock");
        let listener = bind(&path).expect("bind in a fresh directory");
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        // The controller's end of the status: answers with a known status.
        let (status, mut asked) = StatusHandle::new();
        let known = crate::station::Status {
            signaling: "up",
            ..Default::default()
        };
        tokio::spawn(async move {
            while let Some(reply) = asked.recv().await {
                let _ = reply.send(known.clone());
            }
        });
        let targets = Targets { bt: None, status };
        let server = tokio::spawn(serve(
            listener,
            path.clone(),
            targets,
            cancel.clone(),
            tracker.clone(),
        ));
        let v = request(&path, "status").await.expect("reply");
        assert_eq!(
            (&v["ok"], &v["status"]["signaling"]),
            (&true.into(), &"up".into())
        );
        let v = request(&path, "bt pair").await.expect("reply");
        assert_eq!(v["ok"], false);
        assert!(
            v["error"]
                .as_str()
                .unwrap_or("")
                .contains("Bluetooth is off")
        );
        let v = request(&path, "reboot").await.expect("reply");
        assert!(
            v["error"]
                .as_str()
                .unwrap_or("")
                .contains("unknown request")
        );
        let long = vec![b'x'; MAX_REQUEST * 4];
        assert!(raw(&path, &long).await.contains("request too long"));
        assert!(raw(&path, b"\xff\xfe\n").await.contains("not UTF-8"));
        cancel.cancel();
        server.await.expect("server task ends");
        assert!(!path.exists(), "the socket file is removed at shutdown");
    }

    #[test]
    fn a_regular_file_is_not_replaced() {
        let dir = tempdir();
        let path = dir.join("control.sock");
        std::fs::write(&path, b"keep").expect("write in a fresh directory");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let r = rt.block_on(async { bind(&path).map(|_| ()) });
        assert!(matches!(r, Err(ControlError::NotASocket { .. })), "{r:?}");
        assert_eq!(std::fs::read(&path).expect("still there"), b"keep");
    }

    #[tokio::test]
    async fn a_live_socket_is_kept_and_a_stale_one_replaced() {
        let dir = tempdir();
        let path = dir.join("control.sock");
        let live = bind(&path).expect("bind in a fresh directory");
        let r = bind(&path).map(|_| ());
        assert!(matches!(r, Err(ControlError::InUse { .. })), "{r:?}");
        drop(live);
        // Nobody listens any more: the file is stale and replaced.
        let _again = bind(&path).expect("stale socket replaced");
    }

    fn tempdir() -> PathBuf {
        let n: u64 = rand::random();
        let d = std::env::temp_dir().join(format!("intercomd-control-{n:016x}"));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }
}
