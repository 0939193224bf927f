//! `intercomd`: a thin main. Parse the command line, load configuration,
//! run, and map errors to exit codes (configuration errors: 78, EX_CONFIG).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use intercomd::config::{self, ConfigError, Settings};
use intercomd::daemon::{self, DaemonError};
use intercomd::logging::{self, LogTarget};

#[derive(Parser)]
#[command(
    name = "intercomd",
    version,
    about = "Door station daemon: call buttons, door relay, two-way audio to residents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// Configuration file or directory of *.toml fragments; repeatable,
    /// later ones win. Default: /usr/lib/intercomd/config.d then
    /// /etc/intercomd/config.d.
    #[arg(long, short)]
    config: Vec<PathBuf>,
}

impl ConfigArgs {
    fn paths(&self) -> Vec<PathBuf> {
        if self.config.is_empty() {
            config::DEFAULT_PATHS.iter().map(PathBuf::from).collect()
        } else {
            self.config.clone()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the door station.
    Run(ConfigArgs),
    /// Run a standalone door station with simulated hardware and audio,
    /// its hub and the answering page, with generated resident tokens.
    Demo {
        /// Where the hub serves HTTPS (answering page and signaling) for
        /// phones on the LAN, with a self-signed certificate.
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen: String,
        /// Plain HTTP on loopback for a browser on this machine
        /// (`localhost` is a secure context: no certificate warning).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        /// Where the simulated door panel listens (loopback: it can ring).
        #[arg(long, default_value = "127.0.0.1:7081")]
        panel: String,
        /// Where generated tokens are kept.
        #[arg(long, default_value = "/tmp/intercomd-demo")]
        state_dir: PathBuf,
    },
    /// Run only the signaling hub (for a fleet of door stations), or
    /// `hub invite <answerer>`.
    Hub(HubArgs),
    /// Check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Bluetooth headsets (talks to the running daemon).
    #[command(subcommand)]
    Bt(BtCommand),
    /// Print the running daemon's status as JSON: the call, signaling,
    /// audio counters, door, Bluetooth. Exits 1 when it cannot be reached.
    Status {
        #[command(flatten)]
        config: ConfigArgs,
        /// The daemon's control socket; default: `station.control_socket`
        /// from the configuration.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct HubArgs {
    #[command(subcommand)]
    action: Option<HubCommand>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Subcommand)]
enum HubCommand {
    /// Print an answerer's sign-in link and its QR code: scanned on the
    /// resident's phone, it opens the answering page signed in.
    Invite {
        #[command(flatten)]
        config: ConfigArgs,
        /// The answerer's id (`[[hub.answerers]] id`).
        answerer: String,
        /// The address residents open, e.g. https://door.example.net:8443/
        /// (default: `hub.public_url`, else this machine's LAN address and
        /// `hub.listen`'s port).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum BtCommand {
    /// Open pairing for `bluetooth.pairing_timeout_ms`: put the headset in
    /// pairing mode now. Exits 1 when the daemon refuses or cannot be
    /// reached.
    Pair {
        #[command(flatten)]
        config: ConfigArgs,
        /// The daemon's control socket; default: `station.control_socket`
        /// from the configuration.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate; exit 78 with the file, key and line on error.
    Check(ConfigArgs),
    /// Print the merged configuration, secrets redacted.
    Dump(ConfigArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("intercomd: error: {e:#}");
            let code = e
                .downcast_ref::<DaemonError>()
                .map(|d| d.exit_code())
                .or_else(|| e.downcast_ref::<ConfigError>().map(|c| c.exit_code()))
                .unwrap_or(1);
            if code == config::EX_CONFIG {
                journal_config_error(&e);
            }
            ExitCode::from(code)
        }
    }
}

/// Under systemd, also record a configuration error in the journal with its
/// MESSAGE_ID, so `journalctl -x` explains it (stderr only gives the text).
fn journal_config_error(e: &anyhow::Error) {
    if std::env::var_os("JOURNAL_STREAM").is_none() {
        return;
    }
    // Logging may already be up (errors found after start-up); if not, only
    // the journal is wanted here.
    let _ = logging::init(LogTarget::Journald, "error");
    tracing::error!(
        message_id = logging::message_id::CONFIG_ERROR,
        exit_status = config::EX_CONFIG,
        "configuration error: {e:#}"
    );
}

fn load(args: &ConfigArgs) -> Result<Settings, ConfigError> {
    // Only the default directories may be absent (a fresh device has no
    // site configuration); a path a technician typed must exist.
    for path in &args.config {
        if let Err(e) = std::fs::metadata(path) {
            return Err(ConfigError::Read {
                path: path.clone(),
                reason: format!("{e} (given with --config)"),
            });
        }
    }
    config::load(&args.paths())
}

fn init_logging(settings: &Settings) {
    let target = match settings.log.target {
        config::LogTarget::Auto => LogTarget::Auto,
        config::LogTarget::Journald => LogTarget::Journald,
        config::LogTarget::Stderr => LogTarget::Stderr,
    };
    if let Some(note) = logging::init(target, &settings.log.level) {
        tracing::warn!("{note}");
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Config(ConfigCommand::Check(args)) => {
            let s = load(&args)?;
            println!("configuration OK ({} fragments):", s.sources.len());
            for p in &s.sources {
                println!("  {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Dump(args)) => {
            let s = load(&args)?;
            print!("{}", s.redacted_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bt(BtCommand::Pair { config, socket }) => bt_pair(&config, socket),
        Command::Status { config, socket } => status(&config, socket),
        Command::Run(args) => {
            let s = load(&args)?;
            init_logging(&s);
            runtime()?.block_on(daemon::run_station(s))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Hub(HubArgs {
            action:
                Some(HubCommand::Invite {
                    config,
                    answerer,
                    url,
                }),
            ..
        }) => {
            let s = load(&config)?;
            print_invite(&intercomd::invite::invite(&s, &answerer, url.as_deref())?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Hub(HubArgs {
            action: None,
            config,
        }) => {
            let s = load(&config)?;
            init_logging(&s);
            runtime()?.block_on(daemon::run_hub(s))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            listen,
            http,
            panel,
            state_dir,
        } => demo(&listen, &http, panel, &state_dir),
    }
}

/// One request to the running daemon's control socket.
fn ask_daemon(
    config: &ConfigArgs,
    socket: Option<PathBuf>,
    request: &str,
) -> anyhow::Result<serde_json::Value> {
    let path = match socket {
        Some(p) => p,
        None => load(config)?.station.control_socket.ok_or_else(|| {
            anyhow::anyhow!(
                "station.control_socket is \"\" (switched off): the daemon cannot be reached"
            )
        })?,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(intercomd::control::request(&path, request))
}

/// `intercomd status`: the running daemon's status, as JSON.
fn status(config: &ConfigArgs, socket: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let reply = ask_daemon(config, socket, "status")?;
    if reply["ok"] != true {
        anyhow::bail!(
            "the daemon refused: {}",
            reply["error"].as_str().unwrap_or("no reason given")
        );
    }
    println!("{:#}", reply["status"]);
    Ok(ExitCode::SUCCESS)
}

/// `intercomd bt pair`: asks the running daemon to open pairing.
fn bt_pair(config: &ConfigArgs, socket: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let reply = ask_daemon(config, socket, "bt pair")?;
    if reply["ok"] == true {
        let ms = reply["timeout_ms"].as_u64().unwrap_or(0);
        let secs = if ms % 1000 == 0 {
            format!("{}", ms / 1000)
        } else {
            format!("{:.1}", ms as f64 / 1000.0)
        };
        println!(
            "Bluetooth pairing open on {} ({}) for {secs} s: put the headset in pairing mode now.",
            reply["adapter"].as_str().unwrap_or("?"),
            reply["address"].as_str().unwrap_or("?"),
        );
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!(
            "the daemon refused: {}",
            reply["error"].as_str().unwrap_or("no reason given")
        )
    }
}

/// `intercomd demo`: the station with its hub and simulated hardware, and
/// a banner saying where to answer.
fn demo(
    listen: &str,
    http: &str,
    panel: String,
    state_dir: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let (s, tokens) = demo_settings(listen, http, &panel, state_dir)?;
    init_logging(&s);
    // Made now (the station loads the same one) so that the banner
    // can show its fingerprint.
    let (lan, fingerprint) = demo_certificate(&s)?;
    let local = s.hub.loopback_listen.map_or(0, |a| a.port());
    let banner = move |running: &daemon::Running| {
        let panel = running.panel_addr.map_or(panel, |a| a.to_string());
        println!();
        println!("intercomd demo: a standalone door station with simulated hardware");
        println!();
        println!("  Answering page on this machine (no certificate warning):");
        for (id, token) in &tokens {
            println!("    {id}: http://localhost:{local}/#token={token}");
        }
        println!();
        println!("  From a phone or tablet on this network (HTTPS, self-signed: accept");
        println!("  the warning once; the certificate's SHA-256 fingerprint is");
        println!("  {fingerprint}):");
        for (id, token) in &tokens {
            println!("    {id}: {lan}#token={token}");
        }
        println!("  (`intercomd hub invite` prints such a link as a QR code.)");
        println!();
        println!("  Door panel (press the call button): http://{panel}/");
        println!("  Or press Enter here to ring; type h and Enter to hang up.");
        println!("  Ctrl+C stops the demo.");
        println!();
    };
    runtime()?.block_on(daemon::run_station_then(s, banner))?;
    Ok(ExitCode::SUCCESS)
}

/// Prints an invite: the link, its QR code, and what the resident will see.
fn print_invite(i: &intercomd::invite::Invite) -> anyhow::Result<()> {
    let qr = intercomd::invite::qr_text(&i.link)
        .map_err(|e| anyhow::anyhow!("cannot draw the QR code: {e}"))?;
    println!("Sign-in link for {} ({}):", i.name, i.answerer);
    println!();
    println!("  {}", i.link);
    println!();
    println!("{qr}");
    println!("Scan it with the resident's phone camera, or send the link privately:");
    println!(
        "it signs the phone in as {}. The page keeps the token on the phone",
        i.name
    );
    println!("and removes it from the address bar and history at once.");
    if i.insecure {
        println!();
        println!(
            "Warning: {} is plain HTTP. Phones get no microphone there (the",
            i.base
        );
        println!("resident can listen and open the door only), and the token crosses the");
        println!("network in clear. Switch on HTTPS (hub.tls) or pass --url https://….");
    }
    if let Some(fp) = &i.fingerprint {
        println!();
        println!("The hub's certificate is self-signed: the phone warns once. Its SHA-256");
        println!("fingerprint is {fp}");
    }
    Ok(())
}

/// The demo's self-signed certificate and the LAN address to open.
fn demo_certificate(s: &Settings) -> anyhow::Result<(String, String)> {
    use intercomd::hub::tls;
    let names = tls::self_signed_names(&[]);
    let (_, info, _) = tls::self_signed(&s.hub.state_dir, &names, std::time::SystemTime::now())?;
    let lan = tls::interface_addresses()
        .into_iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .map_or_else(|| "localhost".to_owned(), |ip| ip.to_string());
    Ok((
        format!("https://{lan}:{}/", s.hub.listen.port()),
        info.fingerprint_sha256,
    ))
}

/// Settings for the demo: tokens generated once and kept in `state_dir`,
/// so a browser tab keeps working across demo restarts.
fn demo_settings(
    listen: &str,
    http: &str,
    panel: &str,
    state_dir: &std::path::Path,
) -> anyhow::Result<(Settings, Vec<(String, String)>)> {
    // The tokens open the door: readable by the demo's user only.
    config::create_private_dir(state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let mut tokens = Vec::new();
    let mut answerers = String::new();
    for (id, name) in [("resident-1", "Resident 1"), ("resident-2", "Resident 2")] {
        let path = state_dir.join(format!("{id}.token"));
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if t.trim().len() >= 32 => {
                // A file from an older demo may be wider than 0600.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot restrict {}", path.display()))?;
                t.trim().to_owned()
            }
            _ => {
                let a: u128 = rand::random();
                let t = format!("{a:032x}");
                config::write_private_file(&path, &format!("{t}\n"))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                t
            }
        };
        tokens.push((id.to_owned(), token));
        answerers.push_str(&format!(
            "[[hub.answerers]]\nid = \"{id}\"\nname = \"{name}\"\ntoken_file = \"{}\"\ngroups = [\"residents\"]\n\n",
            path.display()
        ));
    }
    let hub_dir = state_dir.join("hub").display().to_string();
    let fragment = format!(
        "[signaling]\nmode = \"standalone\"\n\n[hub]\nlisten = \"{listen}\"\nloopback_listen = \"{http}\"\n\
         state_dir = \"{hub_dir}\"\n\n[hub.tls]\nmode = \"self_signed\"\n\n{answerers}\
         [audio]\nbackend = \"sim\"\n\n[audio.sim]\nsource = \"tone:440\"\n\n\
         [hardware]\nbackend = \"sim\"\n\n[hardware.sim]\ncontrol_listen = \"{panel}\"\nstdin = true\n"
    );
    let s = config::load_from_strs(&[("<demo settings>", &fragment)])?;
    Ok((s, tokens))
}
