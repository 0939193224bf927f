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
        /// Where the hub (answering page and signaling) listens.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: String,
        /// Where the simulated door panel listens (loopback: it can ring).
        #[arg(long, default_value = "127.0.0.1:7081")]
        panel: String,
        /// Where generated tokens are kept.
        #[arg(long, default_value = "/tmp/intercomd-demo")]
        state_dir: PathBuf,
    },
    /// Run only the signaling hub (for a fleet of door stations).
    Hub(ConfigArgs),
    /// Check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Bluetooth headsets (talks to the running daemon).
    #[command(subcommand)]
    Bt(BtCommand),
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
        Command::Bt(BtCommand::Pair { config, socket }) => {
            let path = match socket {
                Some(p) => p,
                None => load(&config)?.station.control_socket.ok_or_else(|| {
                    anyhow::anyhow!(
                        "station.control_socket is \"\" (switched off): the daemon cannot be reached"
                    )
                })?,
            };
            let reply = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(intercomd::control::request(&path, "bt pair"))?;
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
        Command::Run(args) => {
            let s = load(&args)?;
            init_logging(&s);
            runtime()?.block_on(daemon::run_station(s))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Hub(args) => {
            let s = load(&args)?;
            init_logging(&s);
            runtime()?.block_on(daemon::run_hub(s))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            listen,
            panel,
            state_dir,
        } => {
            let (s, tokens) = demo_settings(&listen, &panel, &state_dir)?;
            init_logging(&s);
            let port = s.hub.listen.port();
            println!();
            println!("intercomd demo: a standalone door station with simulated hardware");
            println!();
            println!("  Answering page (open on this machine; browsers allow the microphone");
            println!("  only on localhost or https):");
            for (id, token) in &tokens {
                println!("    {id}: http://localhost:{port}/#token={token}");
            }
            println!();
            println!("  Door panel (press the call button): http://{panel}/");
            println!("  Or press Enter here to ring; type h and Enter to hang up.");
            println!("  Ctrl+C stops the demo.");
            println!();
            runtime()?.block_on(daemon::run_station(s))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Settings for the demo: tokens generated once and kept in `state_dir`,
/// so a browser tab keeps working across demo restarts.
fn demo_settings(
    listen: &str,
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
    let fragment = format!(
        "[signaling]\nmode = \"standalone\"\n\n[hub]\nlisten = \"{listen}\"\n\n{answerers}\
         [audio]\nbackend = \"sim\"\n\n[audio.sim]\nsource = \"tone:440\"\n\n\
         [hardware]\nbackend = \"sim\"\n\n[hardware.sim]\ncontrol_listen = \"{panel}\"\nstdin = true\n"
    );
    let s = config::load_from_strs(&[("<demo settings>", &fragment)])?;
    Ok((s, tokens))
}
