//! The bundle module's error: refusals (one kind per pipeline step, one exit code per
//! kind) and operational failures.

use std::path::PathBuf;

/// Why a bundle was refused. Each kind is one step of the import pipeline and has its own
/// exit code (see `docs/bundle-format.md`, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The `.tar.zst` is larger than `Limits::max_bundle_bytes`.
    TooLarge,
    /// The `.minisig` is missing, malformed, legacy, or does not verify.
    BadSignature,
    /// The signature was made by a key that is not pinned in `trusted-keys/`.
    UntrustedKey,
    /// The trusted comment is not a sealkit bundle comment.
    BadComment,
    /// `manifest.json` is missing, malformed, or disagrees with the trusted comment.
    ManifestMismatch,
    /// The bundle is for another site.
    WrongSite,
    /// The version is not greater than the active one (rollback or replay).
    NotNewer,
    /// The bundle's `expires` has passed.
    Expired,
    /// The bundle was created before the active bundle.
    OlderThanActive,
    /// The bundle's `created` lies further ahead of this host's clock than
    /// `Limits::max_created_ahead` (it would block every later bundle until then).
    CreatedInFuture,
    /// Decompression would exceed a cap (window, output size, entry count, ratio).
    DecompressionLimit,
    /// The zstd stream or the tar archive is corrupt or truncated.
    CorruptArchive,
    /// An entry is a link, device, FIFO, has an unsafe path, or is duplicated.
    UnsafeEntry,
    /// The archive's files differ from the manifest (extra, missing, size, sha256, mode).
    ContentMismatch,
    /// The configuration inside the bundle is invalid (`sealkit config check` would fail).
    InvalidConfig,
    /// The bundle carries a trusted key set that cannot be installed.
    KeyRotation,
}

impl Refusal {
    /// Every kind, in pipeline order.
    pub const ALL: [Refusal; 16] = [
        Refusal::TooLarge,
        Refusal::BadSignature,
        Refusal::UntrustedKey,
        Refusal::BadComment,
        Refusal::ManifestMismatch,
        Refusal::WrongSite,
        Refusal::NotNewer,
        Refusal::Expired,
        Refusal::OlderThanActive,
        Refusal::CreatedInFuture,
        Refusal::DecompressionLimit,
        Refusal::CorruptArchive,
        Refusal::UnsafeEntry,
        Refusal::ContentMismatch,
        Refusal::InvalidConfig,
        Refusal::KeyRotation,
    ];

    /// The process exit code of this refusal. `InvalidConfig` shares 3 with
    /// `sealkit config check`; the others are 10–24.
    pub fn exit_code(self) -> u8 {
        match self {
            Refusal::TooLarge => 10,
            Refusal::BadSignature => 11,
            Refusal::UntrustedKey => 12,
            Refusal::BadComment => 13,
            Refusal::ManifestMismatch => 14,
            Refusal::WrongSite => 15,
            Refusal::NotNewer => 16,
            Refusal::Expired => 17,
            Refusal::OlderThanActive => 18,
            Refusal::DecompressionLimit => 19,
            Refusal::CorruptArchive => 20,
            Refusal::UnsafeEntry => 21,
            Refusal::ContentMismatch => 22,
            Refusal::InvalidConfig => 3,
            Refusal::KeyRotation => 23,
            Refusal::CreatedInFuture => 24,
        }
    }

    /// A stable machine-readable name, used in audit events and `--json` output.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::TooLarge => "too-large",
            Refusal::BadSignature => "bad-signature",
            Refusal::UntrustedKey => "untrusted-key",
            Refusal::BadComment => "bad-trusted-comment",
            Refusal::ManifestMismatch => "manifest-mismatch",
            Refusal::WrongSite => "wrong-site",
            Refusal::NotNewer => "not-newer",
            Refusal::Expired => "expired",
            Refusal::OlderThanActive => "older-than-active",
            Refusal::DecompressionLimit => "decompression-limit",
            Refusal::CorruptArchive => "corrupt-archive",
            Refusal::UnsafeEntry => "unsafe-entry",
            Refusal::ContentMismatch => "content-mismatch",
            Refusal::InvalidConfig => "invalid-config",
            Refusal::KeyRotation => "key-rotation",
            Refusal::CreatedInFuture => "created-in-future",
        }
    }
}

/// Exit code of operational failures (I/O, lock held, damaged state): the CLI's "could
/// not run" (`cli::exit::COULD_NOT_RUN`).
pub const EXIT_FAILURE: u8 = 4;
/// Exit code of usage problems (no site known, no reason given): clap's 2.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when there is nothing to do (no previous generation to roll back to).
pub const EXIT_NOTHING_TO_DO: u8 = 5;
/// Exit code when a bundle was activated but the running authority was not told to reload.
pub const EXIT_RELOAD_FAILED: u8 = 30;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle was refused; nothing changed.
    #[error("bundle refused ({}): {reason}", .kind.code())]
    Refused { kind: Refusal, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A signing or public key is unusable (wrong passphrase, bad format, permissions).
    #[error("{0}")]
    Key(String),
    /// Packing: the source directory cannot be made into a bundle.
    #[error("{0}")]
    Source(String),
    #[error("another bundle operation is running (pid {pid}, lock {}); if that process is gone, remove the lock file", .path.display())]
    Busy { path: PathBuf, pid: u32 },
    /// The bundle root is damaged or inconsistent.
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Usage(String),
    /// Nothing to do: no previous generation to roll back to.
    #[error("{0}")]
    NothingToDo(String),
    /// Activation succeeded, the reload notification did not.
    #[error("generation {generation} is active, but the running authority was not told to reload: {reason}")]
    Reload { generation: String, reason: String },
}

impl BundleError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            BundleError::Refused { kind, .. } => kind.exit_code(),
            BundleError::Usage(_) => EXIT_USAGE,
            BundleError::NothingToDo(_) => EXIT_NOTHING_TO_DO,
            BundleError::Reload { .. } => EXIT_RELOAD_FAILED,
            _ => EXIT_FAILURE,
        }
    }

    /// The refusal kind, when this is a refusal.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            BundleError::Refused { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// A refusal with a reason flattened to one line (control characters escaped).
pub(crate) fn refuse(kind: Refusal, reason: impl AsRef<str>) -> BundleError {
    BundleError::Refused {
        kind,
        reason: one_line(reason.as_ref()),
    }
}

/// Joins lines with `; ` and escapes other control characters, so a reason (which may
/// quote attacker-chosen names) stays one log line.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        for c in line.chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// Maps an I/O error to [`BundleError::Io`] with a context.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BundleError {
    let context = context.into();
    move |source| BundleError::Io { context, source }
}
