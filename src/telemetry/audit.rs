//! The audit stream: every security decision and operator act as one JSON line in an
//! append-only file, `audit.log`.
//!
//! Events are ordinary tracing events with a stable `event` name; this module decides which
//! of them are audit events ([`is_audit_event`]: a name in [`EVENTS`] or under one of the
//! [`PREFIXES`], or any event carrying the field `audit = true`) and copies those, in the
//! same JSON shape as the log, to
//! - `<logging.directory>/audit.log` of a running authority or guard ([`AuditLayer::writer`],
//!   through a non-blocking writer: no file I/O on a request's path), and
//! - for commands (`bundle import`, `ca revoke`, …), every file registered with
//!   [`also_to`]: the `audit.log` beside the state the command changed (the bundle root,
//!   the CA directory) and the authority's log directory when the command acts on it.
//!
//! Lines written by a command carry the operator: the invoking user's **real** uid and the
//! name `/etc/passwd` gives it (never `$USER`, which the caller controls). Control-socket
//! acts name the socket peer's uid the same way ([`Operator::of_uid`]).
//!
//! Not responsible for what an event says (its emitter is) nor for rotating the file: it
//! is only ever appended to, each line with one `write` on a file opened `O_APPEND`, so the
//! authority and a command may append to the same file.

use super::batch_writer::{batching_with_writeback, BatchGuard, BatchWriter, Writeback};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The file name of the audit stream in each directory that has one.
pub const FILE_NAME: &str = "audit.log";

/// Audit events named one by one (the families in [`PREFIXES`] are audited whole).
pub const EVENTS: &[&str] = &[
    super::events::TOKEN_ISSUED,
    super::events::TOKEN_REVOKED,
    super::events::DPOP_REPLAY,
    super::events::DPOP_BYPASS,
    super::events::CLIENT_AUTH_FAILED,
    super::events::FRESH_AUTH,
    super::events::CONFIG_RELOADED,
    super::events::CONFIG_RELOAD_FAILED,
    super::events::CONTROL,
    super::events::SERVER_STARTED,
    super::events::SERVER_STOPPED,
    super::events::STORE_CLAIMS_LOST,
    super::events::REQUEST_REFUSED,
    super::events::TOKENS_REVOKED_BY_OPERATOR,
    super::events::LOGIN_ATTEMPT,
    super::events::LOGIN_LOCKED,
    super::events::DEVICE_AUTHORIZATION,
    super::events::CONSENT,
    super::events::REFRESH_REUSE,
    "guard.dpop.replay",
    "guard.started",
    "guard.stopped",
    "guard.config.reloaded",
    "guard.config.reloadFailed",
];

/// Event families audited whole: every event whose name starts with one of these.
pub const PREFIXES: &[&str] = &[
    "authority.bundle.",
    "authority.ca.",
    "authority.keys.",
    "authority.dpop.bypass.",
    "authority.client.",
    "authority.audit.",
];

/// Whether an event of this name belongs in the audit stream.
pub fn is_audit_event(name: &str) -> bool {
    EVENTS.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Who did it: a uid and, when the password database names it, the user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub uid: u32,
    pub name: Option<String>,
}

impl Operator {
    /// The user running this process: its real uid (under sudo, root; `SUDO_UID` is
    /// recorded beside it by [`AuditLayer::command`] since the caller could forge it).
    pub fn current() -> Operator {
        Operator::of_uid(rustix::process::getuid().as_raw())
    }

    /// The user with this uid (e.g. a control-socket peer).
    pub fn of_uid(uid: u32) -> Operator {
        Operator {
            uid,
            name: user_name(uid),
        }
    }

    /// `alice (uid 1000)`, or `uid 1000` when no name is known.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} (uid {})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

/// The name of `uid` in `/etc/passwd` (sealed hosts have no other user database).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let entry_uid: u32 = fields.nth(1)?.parse().ok()?;
        (entry_uid == uid && !name.is_empty()).then(|| name.to_string())
    })
}

#[derive(Debug, thiserror::Error)]
#[error("cannot append to the audit file {path}")]
pub struct AuditError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// Appends one line to an audit file: created 0600 (owned, when created by root, by the
/// owner of its directory, so the authority's user can append to it too), opened
/// `O_APPEND`, written with one `write` and flushed to disk.
pub fn append(path: &Path, line: &str) -> Result<(), AuditError> {
    let error = |source| AuditError {
        path: path.display().to_string(),
        source,
    };
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    if !existed {
        give_to_directory_owner(path);
    }
    file.write_all(line.as_bytes()).map_err(error)?;
    file.sync_data().map_err(error)
}

/// A new audit file in the authority's log directory belongs to the directory's owner
/// (root creating it must not lock the authority's user out). Best effort: a non-root
/// caller cannot change the owner and does not need to.
fn give_to_directory_owner(path: &Path) {
    let Some(dir) = path.parent() else { return };
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    if rustix::process::geteuid().is_root() && meta.uid() != 0 {
        let _ = rustix::fs::chown(
            path,
            Some(rustix::process::Uid::from_raw(meta.uid())),
            Some(rustix::process::Gid::from_raw(meta.gid())),
        );
    }
}

/// The files a command's audit events go to (see [`also_to`]), and the lines it wrote.
static COMMAND_FILES: Mutex<(Vec<PathBuf>, Vec<String>)> = Mutex::new((Vec::new(), Vec::new()));

/// Sends this command's audit events to `dir/audit.log` as well (the directory must exist;
/// registering it twice is harmless). A file registered late (a first bundle import learns
/// the log directory from the configuration it installed) gets the command's earlier lines.
pub fn also_to(dir: &Path) {
    let path = dir.join(FILE_NAME);
    let mut state = COMMAND_FILES.lock().unwrap_or_else(PoisonError::into_inner);
    if !state.0.contains(&path) {
        for line in &state.1 {
            if let Err(e) = append(&path, line) {
                eprintln!("sealkit: {e}: {}", e.source);
                break;
            }
        }
        state.0.push(path);
    }
}

/// Sends this command's audit events to the log directory of the authority configured by
/// `config` as well, when that directory exists. Read leniently: `logging.directory`, else
/// `<dataDir>/logs`, relative paths from the file's directory (as `config` resolves them).
pub fn also_to_log_directory_of(config: &Path) -> Option<PathBuf> {
    let dir = log_directory_of(config)?;
    if dir.is_dir() {
        also_to(&dir);
        Some(dir)
    } else {
        None
    }
}

/// `logging.directory` of a configuration file (or `<dataDir>/logs`), without validating
/// the rest of it.
pub fn log_directory_of(config: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    let base = config.parent().unwrap_or(Path::new("."));
    let path = |v: &serde_yaml::Value| v.as_str().map(|s| base.join(s));
    match value.get("logging").and_then(|l| l.get("directory")) {
        Some(dir) => path(dir),
        None => value.get("dataDir").and_then(path).map(|d| d.join("logs")),
    }
}

/// Where an [`AuditLayer`] writes.
enum Sink {
    /// A command: every file registered with [`also_to`], synchronously.
    CommandFiles(Operator),
    /// A long-running process: its log directory's audit file, through a background writer.
    Writer(BatchWriter),
}

/// The tracing layer that copies audit events to the audit stream.
pub struct AuditLayer {
    sink: Sink,
}

impl AuditLayer {
    /// For a command: audit events go to the files registered with [`also_to`], with the
    /// invoking user as operator.
    pub fn command() -> AuditLayer {
        AuditLayer {
            sink: Sink::CommandFiles(Operator::current()),
        }
    }

    /// For `serve` and `guard`: audit events go to `dir/audit.log` through a non-blocking
    /// writer; keep the guard alive as long as the process logs.
    pub fn writer(dir: &Path) -> Result<(AuditLayer, BatchGuard), AuditError> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| AuditError {
                path: path.display().to_string(),
                source,
            })?;
        let writeback = Writeback {
            dir: dir.to_path_buf(),
            prefix: FILE_NAME.into(),
        };
        let (writer, guard) = batching_with_writeback(file, "sealkit-audit", Some(writeback))
            .map_err(|source| AuditError {
                path: path.display().to_string(),
                source,
            })?;
        Ok((
            AuditLayer {
                sink: Sink::Writer(writer),
            },
            guard,
        ))
    }
}

/// Finds whether an event's `event` name is audited, whether it carries `operator` fields, and `audit`.
#[derive(Default)]
struct Probe {
    /// The `event` name is one of the audited ones.
    audited_name: bool,
    has_operator: bool,
    has_operator_uid: bool,
    audit_flag: bool,
}

impl Visit for Probe {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "event" => self.audited_name = is_audit_event(value),
            "operator" => self.has_operator = true,
            _ => {}
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "audit" {
            self.audit_flag = value;
        }
    }

    fn record_u64(&mut self, field: &Field, _: u64) {
        if field.name() == "operator_uid" {
            self.has_operator_uid = true;
        }
    }

    fn record_i64(&mut self, field: &Field, _: i64) {
        if field.name() == "operator_uid" {
            self.has_operator_uid = true;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            // `event = %name` arrives as Debug of its Display.
            "event" => self.audited_name = is_audit_event(&format!("{value:?}")),
            "operator" => self.has_operator = true,
            "operator_uid" => self.has_operator_uid = true,
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for AuditLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // Taken for every event, audited or not, so the slot never holds a stale line.
        let formatted = super::json_lines::take_formatted(event);
        if event.metadata().fields().field("event").is_none() {
            return;
        }
        let mut probe = Probe::default();
        event.record(&mut probe);
        let audited = probe.audit_flag || probe.audited_name;
        if !audited {
            return;
        }
        match &self.sink {
            Sink::Writer(writer) => {
                let line = formatted.unwrap_or_else(|| super::json_lines::line(event, &[]));
                let _ = (&*writer).write_all(line.as_bytes());
            }
            Sink::CommandFiles(operator) => {
                let mut extra: Vec<(&str, String)> = Vec::new();
                if !probe.has_operator_uid {
                    extra.push(("operator_uid", operator.uid.to_string()));
                }
                if !probe.has_operator {
                    let label = serde_json::Value::String(operator.label()).to_string();
                    extra.push(("operator", label));
                }
                let line = super::json_lines::line(event, &extra);
                let mut state = COMMAND_FILES.lock().unwrap_or_else(PoisonError::into_inner);
                for path in &state.0 {
                    if let Err(e) = append(path, &line) {
                        // Not through tracing: this layer would see it again.
                        eprintln!("sealkit: {e}: {}", e.source);
                    }
                }
                state.1.push(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn audit_events_are_named_or_in_a_family() {
        assert!(is_audit_event("authority.client.authentication.failed"));
        assert!(is_audit_event("authority.bundle.imported"));
        assert!(is_audit_event("authority.ca.revoked"));
        assert!(is_audit_event("authority.keys.rotated"));
        assert!(is_audit_event("authority.keys.activated"));
        assert!(is_audit_event(super::super::events::TOKEN_ISSUED));
        assert!(!is_audit_event(super::super::events::DPOP_REQUEST));
        assert!(!is_audit_event(super::super::events::CONNECTION_ERROR));
    }

    /// docs/audit.md names every audit event and family, and every event name written as a
    /// literal in the sources that belongs to the stream.
    #[test]
    fn the_audit_page_lists_every_event() {
        let page = include_str!("../../docs/audit.md");
        for name in EVENTS.iter().chain(PREFIXES) {
            assert!(
                page.contains(&format!("`{name}")),
                "docs/audit.md lacks {name}"
            );
        }
        let mut stack = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split("event = \"").skip(1) {
                    let name = piece.split('"').next().unwrap();
                    if is_audit_event(name) && !path.ends_with("audit.rs") {
                        assert!(
                            page.contains(&format!("`{name}`")),
                            "docs/audit.md lacks {name} ({})",
                            path.display()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn root_has_a_name_and_labels_carry_the_uid() {
        let root = Operator::of_uid(0);
        assert_eq!(root.name.as_deref(), Some("root"));
        assert_eq!(root.label(), "root (uid 0)");
        assert_eq!(
            Operator {
                uid: 4_000_000,
                name: None
            }
            .label(),
            "uid 4000000"
        );
        assert_eq!(Operator::current().uid, rustix::process::getuid().as_raw());
    }

    /// A command's audit events land in every registered file with the operator's uid,
    /// 0600; other events do not.
    #[test]
    fn command_events_reach_the_registered_files() {
        let dir = tempfile::tempdir().unwrap();
        also_to(dir.path());
        let subscriber = tracing_subscriber::registry().with(AuditLayer::command());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(event = "authority.ca.revoked", serial = "4a:1f");
            tracing::info!(event = "authority.dpop.request", result = "accepted");
            tracing::info!(event = "authority.user.login", audit = true);
        });
        let path = dir.path().join(FILE_NAME);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["event"], "authority.ca.revoked");
        assert_eq!(lines[0]["serial"], "4a:1f");
        assert_eq!(lines[0]["operator_uid"], rustix::process::getuid().as_raw());
        assert_eq!(lines[0]["operator"], Operator::current().label());
        assert_eq!(lines[1]["event"], "authority.user.login");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let later = tempfile::tempdir().unwrap();
        also_to(later.path());
        let replayed = std::fs::read_to_string(later.path().join(FILE_NAME)).unwrap();
        assert_eq!(
            replayed, text,
            "a file registered late gets the earlier lines"
        );
        *COMMAND_FILES.lock().unwrap() = (Vec::new(), Vec::new());
    }

    /// `serve`'s layers: an audited event's line in audit.log is the very line of the log
    /// file (formatted once), and an audited event the log file's level filters out is
    /// formatted for the audit file itself, never confused with the previous event's line.
    #[test]
    fn the_audit_file_gets_the_log_files_line_or_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("sealkit.log");
        let (log_writer, log_guard) = super::super::batch_writer::batching(
            std::fs::File::create(&log_path).unwrap(),
            "test-log",
        )
        .unwrap();
        let (audit_layer, audit_guard) = AuditLayer::writer(dir.path()).unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(super::super::json_lines::JsonLines)
                    .with_writer(log_writer)
                    .with_filter(tracing_subscriber::EnvFilter::new("info")),
            )
            .with(audit_layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(event = "authority.token.issued", jti = "first");
            tracing::info!(event = "authority.dpop.request", result = "accepted");
            tracing::debug!(event = "authority.ca.revoked", serial = "4a:1f");
            tracing::info!(event = "authority.token.issued", jti = "second");
        });
        drop((log_guard, audit_guard));
        let log = std::fs::read_to_string(&log_path).unwrap();
        let audit = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let log_lines: Vec<&str> = log.lines().collect();
        let audit_lines: Vec<&str> = audit.lines().collect();
        assert_eq!(log_lines.len(), 3, "{log}");
        assert_eq!(audit_lines.len(), 3, "{audit}");
        // Byte for byte, timestamp included: the same line.
        assert_eq!(audit_lines[0], log_lines[0]);
        assert_eq!(audit_lines[2], log_lines[2]);
        let revoked: serde_json::Value = serde_json::from_str(audit_lines[1]).unwrap();
        assert_eq!(revoked["event"], "authority.ca.revoked");
        assert_eq!(revoked["serial"], "4a:1f");
        assert_eq!(revoked["level"], "DEBUG");
        let second: serde_json::Value = serde_json::from_str(audit_lines[2]).unwrap();
        assert_eq!(second["jti"], "second");
    }

    #[test]
    fn the_log_directory_comes_from_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("authority.yaml");
        std::fs::write(&config, "dataDir: data\n").unwrap();
        assert_eq!(
            log_directory_of(&config),
            Some(dir.path().join("data/logs"))
        );
        std::fs::write(
            &config,
            "dataDir: data\nlogging:\n  directory: /var/log/x\n",
        )
        .unwrap();
        assert_eq!(log_directory_of(&config), Some(PathBuf::from("/var/log/x")));
    }
}
