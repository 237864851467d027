//! `sealkit bundle …`: keygen, pack, sign, verify, import, status, rollback, trust,
//! recover. Front end of [`crate::bundle`]: parses arguments, reads passphrases, draws
//! progress bars on a terminal, prints results, and maps errors to exit codes (one per
//! refusal kind, see `docs/bundle-format.md`). No bundle logic lives here.

use crate::bundle::activate::{DEFAULT_KEEP, ROOT_ENV};
use crate::bundle::manifest::{format_time, parse_time};
use crate::bundle::{
    self, BundleError, BundleRoot, GenerationRecord, ImportOptions, Limits, PackOptions,
    Passphrase, Progress, RollbackOptions, TrustedKeys, VerifyOptions, DEFAULT_ROOT,
};
use crate::config::duration::HumanDuration;
use anyhow::Context as _;
use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Environment variable holding a signing key's passphrase.
pub const PASSPHRASE_ENV: &str = "SEALKIT_BUNDLE_PASSPHRASE";

#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Create a minisign key pair for signing bundles (secret key passphrase-protected, 0600)
    Keygen(KeygenArgs),
    /// Pack a source directory into a .tar.zst bundle with its manifest
    Pack(PackArgs),
    /// Sign a packed bundle: writes BUNDLE.minisig with a trusted comment
    Sign(SignArgs),
    /// Verify a bundle's signature and contents against trusted keys; changes nothing
    Verify(VerifyArgs),
    /// Verify, stage and activate a bundle on this host
    Import(ImportArgs),
    /// Show the active bundle, its age and expiry, previous generations and trusted keys
    Status(StatusArgs),
    /// Re-activate the previous generation (an audited operator act; needs --reason)
    Rollback(RollbackArgs),
    /// The pinned public keys bundles must be signed with
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Finish or clean up after an interrupted import (every import also does this)
    Recover(RootArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RootArgs {
    /// The bundle root on this host
    #[arg(long, value_name = "DIR", env = ROOT_ENV, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Secret key file to create (0600; never overwritten)
    #[arg(long, value_name = "FILE", default_value = "bundle-signing.key")]
    secret_key: PathBuf,
    /// Public key file to create (give it to sealed hosts: `bundle trust add`)
    #[arg(long, value_name = "FILE", default_value = "bundle-signing.pub")]
    public_key: PathBuf,
    /// Read the passphrase from this file (first line); else $SEALKIT_BUNDLE_PASSPHRASE,
    /// else a prompt on the terminal
    #[arg(long, value_name = "FILE", conflicts_with = "unencrypted")]
    passphrase_file: Option<PathBuf>,
    /// Store the secret key without a passphrase (tests and demos only)
    #[arg(long)]
    unencrypted: bool,
}

#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// Source directory (authority.yaml at its top; optional trust/keys/*.pub)
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Bundle version: must grow with every bundle of the site
    #[arg(long)]
    version: u64,
    /// Validity from now (or from --created), e.g. 30d
    #[arg(long, value_name = "DURATION")]
    expires: HumanDuration,
    /// Site id the bundle is for
    #[arg(long)]
    site: String,
    /// Output file, e.g. site-a-v7.bundle.tar.zst
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Creation time (RFC 3339, e.g. 2026-11-05T12:00:00Z); default now
    #[arg(long, value_name = "TIME")]
    created: Option<String>,
    /// zstd level
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The packed bundle
    #[arg(value_name = "FILE")]
    bundle: PathBuf,
    /// minisign secret key
    #[arg(long, value_name = "FILE")]
    secret_key: PathBuf,
    /// Read the passphrase from this file; else $SEALKIT_BUNDLE_PASSPHRASE, else a prompt
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Signature file; default FILE.minisig
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The bundle
    #[arg(value_name = "FILE")]
    bundle: PathBuf,
    /// Signature; default FILE.minisig
    #[arg(long, value_name = "FILE")]
    signature: Option<PathBuf>,
    /// Trusted public keys (files or directories of *.pub); default ROOT/trusted-keys
    #[arg(long, value_name = "PATH", num_args = 1..)]
    trusted_keys: Vec<PathBuf>,
    /// Also require this site
    #[arg(long)]
    site: Option<String>,
    /// Largest accepted bundle, in bytes
    #[arg(long, value_name = "BYTES")]
    max_size: Option<u64>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    root: RootArgs,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The bundle
    #[arg(value_name = "FILE")]
    bundle: PathBuf,
    /// Signature; default FILE.minisig
    #[arg(long, value_name = "FILE")]
    signature: Option<PathBuf>,
    /// This host's site (required for the first import)
    #[arg(long, env = "SEALKIT_SITE")]
    site: Option<String>,
    /// Previous generations to keep for rollback
    #[arg(long, default_value_t = DEFAULT_KEEP)]
    keep: usize,
    /// Largest accepted bundle, in bytes
    #[arg(long, value_name = "BYTES")]
    max_size: Option<u64>,
    /// Tell the running authority to reload through its control socket
    #[arg(long, value_name = "PATH")]
    reload_socket: Option<PathBuf>,
    #[command(flatten)]
    root: RootArgs,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the status as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    root: RootArgs,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// Why (recorded in the audit log and state.json)
    #[arg(long)]
    reason: String,
    /// Tell the running authority to reload through its control socket
    #[arg(long, value_name = "PATH")]
    reload_socket: Option<PathBuf>,
    #[command(flatten)]
    root: RootArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum TrustCommand {
    /// Pin a minisign public key (KEY.pub) as trusted for bundle signatures
    Add {
        #[arg(value_name = "KEY.pub")]
        key: PathBuf,
        #[command(flatten)]
        root: RootArgs,
    },
    /// List the pinned keys
    List {
        #[command(flatten)]
        root: RootArgs,
    },
    /// Unpin a key by id (the last key cannot be removed)
    Remove {
        #[arg(value_name = "KEYID")]
        id: String,
        #[command(flatten)]
        root: RootArgs,
    },
}

/// Runs a `bundle` subcommand. Bundle errors become their own exit codes here.
pub fn run(command: BundleCommand) -> anyhow::Result<ExitCode> {
    let audited = matches!(
        command,
        BundleCommand::Import(_)
            | BundleCommand::Rollback(_)
            | BundleCommand::Trust(_)
            | BundleCommand::Recover(_)
    );
    if audited {
        crate::telemetry::init_audited_command_logging();
        audit_beside(&command);
    } else {
        crate::telemetry::init_cli_logging();
    }
    let root = audited.then(|| audit_root(&command)).flatten();
    let outcome = dispatch(command);
    if let Some(root) = root {
        // A first `trust add` or import created the root, or installed the configuration
        // that names the log directory: those files get this command's events too.
        register_audit_files(&root);
    }
    match outcome {
        Ok(code) => Ok(code),
        Err(error) => match error.downcast::<BundleError>() {
            Ok(bundle_error) => {
                errln!("sealkit: {bundle_error}");
                Ok(ExitCode::from(bundle_error.exit_code()))
            }
            Err(other) => Err(other),
        },
    }
}

/// An audited command's events also go to `<root>/audit.log` and to the log directory of
/// the authority the active generation configures (the one `sealkit.service` runs).
fn audit_beside(command: &BundleCommand) {
    if let Some(root) = audit_root(command) {
        register_audit_files(&root);
    }
}

fn audit_root(command: &BundleCommand) -> Option<PathBuf> {
    let root = match command {
        BundleCommand::Import(a) => &a.root.root,
        BundleCommand::Rollback(a) => &a.root.root,
        BundleCommand::Recover(a) => &a.root,
        BundleCommand::Trust(
            TrustCommand::Add { root, .. }
            | TrustCommand::List { root }
            | TrustCommand::Remove { root, .. },
        ) => &root.root,
        _ => return None,
    };
    Some(root.clone())
}

fn register_audit_files(root: &Path) {
    if root.is_dir() {
        crate::telemetry::audit::also_to(root);
    }
    let _ = crate::telemetry::audit::also_to_log_directory_of(&BundleRoot::new(root).config_path());
}

fn dispatch(command: BundleCommand) -> anyhow::Result<ExitCode> {
    let now = crate::clock::unix_now();
    let progress = BarProgress::new();
    match command {
        BundleCommand::Keygen(args) => {
            let passphrase = if args.unencrypted {
                Passphrase::Unencrypted
            } else {
                passphrase(args.passphrase_file.as_deref())?.unwrap_or(Passphrase::Prompt)
            };
            if matches!(passphrase, Passphrase::Prompt) && !std::io::stdin().is_terminal() {
                anyhow::bail!(
                    "no passphrase: give --passphrase-file, set {PASSPHRASE_ENV}, run on a terminal, or ask for --unencrypted"
                );
            }
            let key = bundle::keygen(&args.secret_key, &args.public_key, passphrase)?;
            outln!("key id:      {}", key.key_id);
            outln!(
                "secret key:  {} (0600, {})",
                key.secret_key.display(),
                if key.encrypted {
                    "passphrase-protected"
                } else {
                    "UNENCRYPTED: tests and demos only"
                }
            );
            outln!("public key:  {}", key.public_key.display());
            outln!(
                "Pin the public key on sealed hosts: sealkit bundle trust add {}",
                key.public_key.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Pack(args) => {
            let created = match &args.created {
                Some(text) => parse_time(text).map_err(|e| anyhow::anyhow!("--created: {e}"))?,
                None => now,
            };
            let expires = created
                .checked_add(i64::try_from(args.expires.as_secs()).unwrap_or(i64::MAX))
                .context("--expires is too far in the future")?;
            let mut options = PackOptions::new(&args.site, args.version, created, expires);
            options.level = args.level;
            let summary = bundle::pack(&args.dir, &args.output, &options, &progress)?;
            outln!(
                "packed {} v{} from {} into {} ({} file(s), {} byte(s) → {} compressed)",
                summary.manifest.site,
                summary.manifest.version,
                args.dir.display(),
                summary.output.display(),
                summary.manifest.totals.files,
                summary.manifest.totals.bytes,
                summary.compressed_bytes
            );
            outln!("expires {}", summary.manifest.expires);
            outln!("manifest sha256:{}", summary.manifest_sha256);
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Sign(args) => {
            let passphrase =
                passphrase(args.passphrase_file.as_deref())?.unwrap_or(Passphrase::Prompt);
            let key = bundle::load_secret_key(&args.secret_key, passphrase)?;
            let summary = bundle::sign(
                &args.bundle,
                &key,
                args.output.as_deref(),
                &Limits::default(),
                &progress,
            )?;
            outln!(
                "signed {} with key {} → {}",
                args.bundle.display(),
                summary.key_id,
                summary.signature.display()
            );
            outln!("trusted comment: {}", summary.comment.render());
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Verify(args) => {
            let keys = if args.trusted_keys.is_empty() {
                BundleRoot::new(&args.root.root).trusted_keys()?
            } else {
                TrustedKeys::load_paths(&args.trusted_keys)?
            };
            let mut options = VerifyOptions::new(now);
            options.signature = args.signature;
            options.site = args.site;
            if let Some(max) = args.max_size {
                options.limits.max_bundle_bytes = max;
            }
            let verified = bundle::verify(&args.bundle, &keys, &options, &progress)?;
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "valid": true,
                        "keyId": verified.key_id,
                        "sha256": verified.sha256,
                        "trustedComment": verified.comment.render(),
                        "manifest": verified.manifest,
                    })
                );
            } else {
                let m = &verified.manifest;
                outln!(
                    "{}: valid bundle for site {} v{}, signed by key {}",
                    args.bundle.display(),
                    m.site,
                    m.version,
                    verified.key_id
                );
                outln!(
                    "  created {} · expires {} ({})",
                    m.created,
                    m.expires,
                    until(m.expires_unix() - now)
                );
                outln!(
                    "  {} file(s), {} byte(s); sha256 {}",
                    m.totals.files,
                    m.totals.bytes,
                    verified.sha256
                );
                outln!("  (the configuration is validated by `bundle import` on the host)");
            }
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Import(args) => {
            let root = BundleRoot::new(&args.root.root);
            let mut options = ImportOptions::new(now);
            options.signature = args.signature;
            options.site = args.site;
            options.keep = args.keep;
            options.reload_socket = args.reload_socket.clone();
            if let Some(max) = args.max_size {
                options.limits.max_bundle_bytes = max;
            }
            let outcome = bundle::import(&root, &args.bundle, &options, &progress)?;
            let r = &outcome.record;
            if !outcome.recovery.is_empty() {
                print_recovery(&outcome.recovery);
            }
            if outcome.already_active {
                outln!(
                    "{} v{} is already active (generation {}); nothing changed",
                    r.site,
                    r.version,
                    r.generation
                );
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "activated {} v{} (generation {}), signed by key {}, expires {}",
                r.site,
                r.version,
                r.generation,
                r.key_id,
                r.expires
            );
            if let Some(prev) = &outcome.replaced {
                outln!("  replaced v{} ({})", prev.version, prev.generation);
            }
            if let Some(rotation) = &outcome.rotation {
                outln!(
                    "  trusted keys now: {} (added: {}; retired: {})",
                    rotation.trusted.join(", "),
                    none_if_empty(&rotation.added),
                    none_if_empty(&rotation.retired)
                );
            }
            outln!("  config: {}", root.config_path().display());
            if args.reload_socket.is_none() {
                outln!("  reload the running authority (e.g. systemctl reload sealkit)");
            }
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Status(args) => {
            let status = bundle::status(&BundleRoot::new(&args.root.root))?;
            let problems = status_problems(&status, &args.root.root, now);
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "root": status.root,
                        "consistent": status.consistent(),
                        "current": status.current,
                        "state": status.state,
                        "trustedKeys": status.trusted_keys,
                        "stagingLeftovers": status.staging_leftovers,
                        "now": format_time(now),
                        "healthy": problems.is_empty(),
                        "problems": problems,
                    })
                );
            } else {
                print_status(&status, now);
            }
            if problems.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                for problem in &problems {
                    errln!("sealkit: {problem}");
                }
                Ok(ExitCode::from(super::exit::CHECKS_FAILED))
            }
        }
        BundleCommand::Rollback(args) => {
            let root = BundleRoot::new(&args.root.root);
            let operator = Some(crate::telemetry::audit::Operator::current().label());
            let outcome = bundle::rollback(
                &root,
                &RollbackOptions {
                    reason: args.reason,
                    operator,
                    now,
                },
            )?;
            outln!(
                "rolled back {} from v{} ({}) to v{} ({})",
                outcome.to.site,
                outcome.from.version,
                outcome.from.generation,
                outcome.to.version,
                outcome.to.generation
            );
            if outcome.expired {
                outln!(
                    "  WARNING: v{} expired at {}; import a new bundle soon",
                    outcome.to.version,
                    outcome.to.expires
                );
            }
            if let Some(socket) = &args.reload_socket {
                bundle::activate::notify_reload(socket).map_err(|e| BundleError::Reload {
                    generation: outcome.to.generation.clone(),
                    reason: e.to_string(),
                })?;
            } else {
                outln!("  reload the running authority (e.g. systemctl reload sealkit)");
            }
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Trust(TrustCommand::Add { key, root }) => {
            let (id, new) = BundleRoot::new(&root.root).trust_add(&key)?;
            if new {
                outln!("trusted key {id} pinned in {}", root.root.display());
            } else {
                outln!("key {id} was already trusted");
            }
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Trust(TrustCommand::List { root }) => {
            let keys = BundleRoot::new(&root.root).trusted_keys()?;
            if keys.is_empty() {
                outln!("no trusted keys in {}", root.root.display());
            }
            for key in keys.keys() {
                outln!("{}  {}", key.id, key.source.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Trust(TrustCommand::Remove { id, root }) => {
            BundleRoot::new(&root.root).trust_remove(&id)?;
            outln!("key {id} is no longer trusted");
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Recover(args) => {
            let recovery = bundle::recover(&BundleRoot::new(&args.root))?;
            print_recovery(&recovery);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_recovery(recovery: &bundle::Recovery) {
    if recovery.is_empty() {
        outln!("nothing to recover");
        return;
    }
    for item in &recovery.cleaned {
        outln!("recovery: removed leftover {item}");
    }
    if let Some(generation) = &recovery.completed {
        outln!("recovery: completed the interrupted activation of {generation}");
    }
    if let Some(generation) = &recovery.abandoned {
        outln!(
            "recovery: dropped the interrupted activation of {generation} (it never became active)"
        );
    }
    for generation in &recovery.orphans {
        outln!("recovery: removed unreferenced generation {generation}");
    }
}

/// The passphrase from `--passphrase-file` or the environment (None: neither given).
fn passphrase(file: Option<&Path>) -> anyhow::Result<Option<Passphrase>> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the passphrase file {}", file.display()))?;
        let line = text.lines().next().unwrap_or_default().to_string();
        return Ok(Some(Passphrase::Given(line)));
    }
    match std::env::var(PASSPHRASE_ENV) {
        Ok(value) => Ok(Some(Passphrase::Given(value))),
        Err(_) => Ok(None),
    }
}

/// What makes `bundle status` fail (exit 1): no root, nothing active, an expired active
/// bundle, an interrupted operation, `current` disagreeing with state.json.
fn status_problems(status: &bundle::Status, root: &Path, now: i64) -> Vec<String> {
    let mut problems = Vec::new();
    if !root.is_dir() {
        problems.push(format!("the bundle root {} does not exist", root.display()));
        return problems;
    }
    match status.state.as_ref().and_then(|s| s.active.as_ref()) {
        None => problems.push(format!("no bundle is active in {}", root.display())),
        Some(active) if active.expires_unix() <= now => problems.push(format!(
            "the active bundle v{} expired at {}",
            active.version, active.expires
        )),
        Some(_) => {}
    }
    if status.state.as_ref().is_some_and(|s| s.pending.is_some()) {
        problems.push("an interrupted operation is pending: run `sealkit bundle recover`".into());
    }
    if !status.consistent() {
        problems.push("`current` disagrees with state.json".into());
    }
    problems
}

fn print_status(status: &bundle::Status, now: i64) {
    outln!("root:          {}", status.root.display());
    let Some(state) = &status.state else {
        outln!("no bundle has been imported here");
        outln!("trusted keys:  {}", none_if_empty(&status.trusted_keys));
        return;
    };
    outln!("site:          {}", state.site);
    match &state.active {
        Some(active) => print_active(active, now),
        None => outln!("active:        none"),
    }
    let list = |records: &[GenerationRecord]| {
        if records.is_empty() {
            "none".to_string()
        } else {
            records
                .iter()
                .map(|r| format!("v{} ({})", r.version, r.generation))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    outln!("previous:      {}", list(&state.previous));
    for record in &state.rolled_back {
        outln!(
            "rolled back:   v{} ({}): {}",
            record.version,
            record.generation,
            record
                .rolled_back_because
                .as_deref()
                .unwrap_or("no reason recorded")
        );
    }
    outln!("trusted keys:  {}", none_if_empty(&status.trusted_keys));
    if let Some(pending) = &state.pending {
        outln!(
            "PENDING:       an interrupted {:?} of {}; run `sealkit bundle recover`",
            pending.op,
            pending.record.generation
        );
    }
    if !status.consistent() {
        outln!(
            "WARNING:       `current` points at {:?}, state.json says otherwise",
            status.current
        );
    }
    if status.staging_leftovers > 0 {
        outln!(
            "staging:       {} leftover(s) of an interrupted import (cleaned at the next import)",
            status.staging_leftovers
        );
    }
}

fn print_active(active: &GenerationRecord, now: i64) {
    outln!(
        "active:        v{} (generation {})",
        active.version,
        active.generation
    );
    outln!(
        "  created:     {} ({} ago)",
        active.created,
        span(now.saturating_sub(active.created_unix()))
    );
    let left = active.expires_unix().saturating_sub(now);
    outln!("  expires:     {} ({})", active.expires, until(left));
    outln!(
        "  activated:   {} ({} ago)",
        active.activated_at,
        span(now - active.activated_unix())
    );
    outln!("  signed by:   key {}", active.key_id);
    outln!("  sha256:      {}", active.sha256);
    outln!("  files:       {} ({} bytes)", active.files, active.bytes);
}

fn until(left: i64) -> String {
    if left > 0 {
        format!("in {}", span(left))
    } else {
        format!("EXPIRED {} ago", span(-left))
    }
}

/// `93784` → `1d 2h`.
fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

fn none_if_empty(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// A progress bar on stderr when it is a terminal and the step is large; silent otherwise.
pub(super) struct BarProgress {
    enabled: bool,
    bar: RefCell<Option<indicatif::ProgressBar>>,
}

impl BarProgress {
    /// Steps smaller than this finish too fast for a bar to help.
    const THRESHOLD: u64 = 4 * 1024 * 1024;

    pub(super) fn new() -> Self {
        BarProgress {
            enabled: std::io::stderr().is_terminal(),
            bar: RefCell::new(None),
        }
    }
}

impl Progress for BarProgress {
    fn start(&self, label: &str, total: u64) {
        self.finish();
        if !self.enabled || total < Self::THRESHOLD {
            return;
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        *self.bar.borrow_mut() = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}
