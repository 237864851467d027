//! `sealkit keys status|rotate|retire|schedule`: the token signing key set
//! ([`crate::keyset`]).
//!
//! When the authority runs on this host the act goes through its control socket, so it
//! takes effect at once without a restart; otherwise the key set files in `dataDir` are
//! changed directly and the next start uses them. Either way it is audited
//! (`authority.keys.rotated` / `retired` / `scheduled` / `unscheduled`, docs/audit.md)
//! and only root or the authority's own user (the owner of `dataDir`) may do it.

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
    /// Print the key set: next, current, previous (with the time each may be retired) and
    /// the schedule, if any
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
    /// Plan keys ahead: a key activates every --every, --ahead of them made now (copy the
    /// set to every node once per ahead × every); an existing schedule is extended.
    /// `--off` ends the schedule (manual rotation again)
    Schedule {
        /// Time between two activations (e.g. 90d; at least 1h, and longer than
        /// tokens.lifetime + allowedClockSkew)
        #[arg(long, required_unless_present = "off", value_name = "DURATION")]
        every: Option<crate::config::duration::HumanDuration>,
        /// How many keys are to activate after now, made now
        #[arg(long, default_value_t = 4, value_name = "N")]
        ahead: usize,
        /// End the schedule: the roles as they are now become a manual set
        #[arg(long, conflicts_with_all = ["every"])]
        off: bool,
    },
}

pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    crate::telemetry::init_cli_logging();
    let config = args
        .config
        .context("--config FILE is required (the authority's configuration)")?;
    let settings = Settings::load(&config)?;
    let data_dir = settings.data_dir.clone();
    let keep_for =
        settings.token_lifetime.as_secs() as i64 + settings.dpop.clock_skew.as_secs() as i64;
    let socket = crate::control::socket_path(&data_dir);
    let running = std::os::unix::net::UnixStream::connect(&socket).is_ok();
    if let KeysCommand::Status = args.command {
        // The running authority's roles (derived from its clock), else the files'.
        let (set, now) = if running {
            let response = control_runtime()?
                .block_on(crate::control::send(&socket, &ControlRequest::Status))?;
            let set: SetFile = serde_json::from_value(response.status["keys"].clone())
                .context("the authority's answer has no key set")?;
            (set, crate::clock::unix_now())
        } else {
            let now = crate::clock::unix_now();
            (KeyRing::load_or_create(&data_dir, now)?.set(), now)
        };
        print_set(&set, now);
        return Ok(ExitCode::SUCCESS);
    }
    let plan = match &args.command {
        KeysCommand::Schedule {
            every: Some(every),
            ahead,
            off: false,
        } => {
            let every = every.0.as_secs() as i64;
            check_plan(every, *ahead, keep_for)?;
            Some((every, *ahead))
        }
        _ => None,
    };
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
        KeysCommand::Schedule { ahead, .. } => ControlRequest::KeysSchedule {
            every: plan.map(|p| p.0),
            ahead: *ahead,
        },
        KeysCommand::Status => ControlRequest::Status,
    };
    if running {
        let response = control_runtime()?.block_on(crate::control::send(&socket, &request))?;
        outln!("{} (the running authority uses it now)", response.message);
        let set: SetFile = serde_json::from_value(response.status["keys"].clone())
            .context("the authority's answer has no key set")?;
        print_set(&set, crate::clock::unix_now());
        if set.schedule.is_some() {
            outln!("copy the set to every other node now (docs/multi-node.md)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    // No authority running: change the files; the next start uses them.
    let now = crate::clock::unix_now();
    let ring = KeyRing::load_or_create(&data_dir, now)?;
    let operator = audit::Operator::current();
    let set = match request {
        ControlRequest::Status => ring.set(),
        ControlRequest::KeysSchedule { .. } => {
            let outcome = match plan {
                Some((every, ahead)) => ring.schedule(now, every, ahead, keep_for),
                None => ring.unschedule(now),
            };
            crate::server::authority::audit_schedule(&outcome, plan, &operator, "files");
            outcome?
        }
        ControlRequest::KeysRetire { kid, force } => {
            let set = ring.retire(&kid, now, force)?;
            tracing::warn!(event = "authority.keys.retired", kid = %kid, forced = force, fingerprint = %set.fingerprint(), operator = %operator.label(), operator_uid = operator.uid, via = "files");
            set
        }
        _ => {
            let set = ring.rotate(now, keep_for)?;
            tracing::warn!(event = "authority.keys.rotated", current = %set.current.kid, next = %set.next.kid, fingerprint = %set.fingerprint(), operator = %operator.label(), operator_uid = operator.uid, via = "files");
            set
        }
    };
    outln!(
        "no authority is running on this host: the key set files changed; the next start uses them"
    );
    print_set(&set, now);
    Ok(ExitCode::SUCCESS)
}

fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The bounds of `keys schedule`, checked before anything is asked of the authority.
fn check_plan(every: i64, ahead: usize, keep_for: i64) -> anyhow::Result<()> {
    use crate::keyset::{MAX_SCHEDULE_AHEAD, MIN_SCHEDULE_EVERY};
    if every < MIN_SCHEDULE_EVERY {
        return Err(super::UsageError::new(
            "--every must be at least 1h: each node needs the set copied once per schedule (--ahead × --every)",
        )
        .into());
    }
    if every <= keep_for {
        return Err(super::UsageError::new(format!(
            "--every ({every}s) must be longer than tokens.lifetime + allowedClockSkew ({keep_for}s): a key is published one period before it signs, and kept that long after"
        ))
        .into());
    }
    if !(1..=MAX_SCHEDULE_AHEAD).contains(&ahead) {
        return Err(
            super::UsageError::new(format!("--ahead must be 1 to {MAX_SCHEDULE_AHEAD}")).into(),
        );
    }
    Ok(())
}

fn print_set(set: &SetFile, now: i64) {
    use crate::store::health::rfc3339;
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
    match &set.schedule {
        None => outln!("  schedule: none (manual rotation: sealkit keys rotate)"),
        Some(schedule) => {
            outln!(
                "  schedule: every {}s, {} key(s) still to activate, last at {}; published {}s after the next one activates",
                schedule.every,
                schedule.ahead(now),
                rfc3339(schedule.end()),
                schedule.keep_for
            );
            for key in &schedule.keys {
                let state = if key.kid == set.current.kid {
                    "signing"
                } else if key.activates > now {
                    "planned"
                } else {
                    "done"
                };
                outln!(
                    "    {} {} activates {}",
                    state,
                    key.kid,
                    rfc3339(key.activates)
                );
            }
            if schedule.ahead(now) == 0 {
                outln!("  the schedule has run out: extend it with sealkit keys schedule --every … --ahead …");
            }
        }
    }
}
