//! `sealkit keys status|rotate|retire`: the token signing key set ([`crate::keyset`]).
//!
//! When the authority runs on this host the act goes through its control socket, so it
//! takes effect at once without a restart; otherwise the key set files in `dataDir` are
//! changed directly and the next start uses them. Either way it is audited
//! (`authority.keys.rotated` / `authority.keys.retired`, docs/audit.md) and only root or
//! the authority's own user (the owner of `dataDir`) may do it.

use crate::config::Settings;
use crate::control::ControlRequest;
use crate::keyset::{KeyRing, SetFile};
use crate::telemetry::audit;
use anyhow::Context as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    /// The authority's configuration (its dataDir holds the key set)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Print the key set: next, current, previous (with the time each may be retired)
    Status,
    /// next becomes current, current becomes previous, a new next is made
    Rotate,
    /// Remove a previous key once every token it signed has expired
    Retire {
        /// The key id (a JWK thumbprint; it may start with `-`)
        #[arg(long, allow_hyphen_values = true)]
        kid: String,
        /// Retire it even if tokens it signed may still be live (a compromised key)
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    crate::telemetry::init_cli_logging();
    let config = args
        .config
        .context("--config FILE is required (the authority's configuration)")?;
    let settings = Settings::load(&config)?;
    let data_dir = settings.data_dir.clone();
    if let KeysCommand::Status = args.command {
        let ring = KeyRing::load_or_create(&data_dir, crate::clock::unix_now())?;
        print_set(&ring.set());
        return Ok(ExitCode::SUCCESS);
    }
    let euid = rustix::process::geteuid().as_raw();
    let owner = std::fs::metadata(&data_dir)
        .with_context(|| format!("reading {}", data_dir.display()))?
        .uid();
    if euid != 0 && euid != owner {
        anyhow::bail!(
            "only root or the authority's user (uid {owner}, the owner of {}) may change its signing keys",
            data_dir.display()
        );
    }
    audit::also_to_log_directory_of(&config);
    let request = match &args.command {
        KeysCommand::Rotate => ControlRequest::KeysRotate,
        KeysCommand::Retire { kid, force } => ControlRequest::KeysRetire {
            kid: kid.clone(),
            force: *force,
        },
        KeysCommand::Status => ControlRequest::Status,
    };
    let socket = crate::control::socket_path(&data_dir);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let response = runtime.block_on(crate::control::send(&socket, &request))?;
        outln!("{} (the running authority uses it now)", response.message);
        let set: SetFile = serde_json::from_value(response.status["keys"].clone())
            .context("the authority's answer has no key set")?;
        print_set(&set);
        return Ok(ExitCode::SUCCESS);
    }
    // No authority running: change the files; the next start uses them.
    let now = crate::clock::unix_now();
    let ring = KeyRing::load_or_create(&data_dir, now)?;
    let operator = audit::Operator::current();
    let set = match request {
        ControlRequest::Status => ring.set(),
        ControlRequest::KeysRetire { kid, force } => {
            let set = ring.retire(&kid, now, force)?;
            tracing::warn!(event = "authority.keys.retired", kid = %kid, forced = force, fingerprint = %set.fingerprint(), operator = %operator.label(), operator_uid = operator.uid, via = "files");
            set
        }
        _ => {
            let keep_for = settings.token_lifetime.as_secs() as i64
                + settings.dpop.clock_skew.as_secs() as i64;
            let set = ring.rotate(now, keep_for)?;
            tracing::warn!(event = "authority.keys.rotated", current = %set.current.kid, next = %set.next.kid, fingerprint = %set.fingerprint(), operator = %operator.label(), operator_uid = operator.uid, via = "files");
            set
        }
    };
    outln!(
        "no authority is running on this host: the key set files changed; the next start uses them"
    );
    print_set(&set);
    Ok(ExitCode::SUCCESS)
}

fn print_set(set: &SetFile) {
    outln!("key set {}", set.fingerprint());
    outln!(
        "  next:     {} (created {})",
        set.next.kid,
        set.next.created
    );
    outln!(
        "  current:  {} (created {})",
        set.current.kid,
        set.current.created
    );
    for p in &set.previous {
        outln!(
            "  previous: {} (retire after {})",
            p.kid,
            p.retire_after.unwrap_or(0)
        );
    }
}
