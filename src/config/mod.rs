//! Configuration: the `authority.yaml` file schema and its validation into [`Settings`].
//!
//! - [`schema`]: the file as written (`*File` structs: serde, camelCase keys, unknown keys
//!   rejected), read by [`lenient`] so that every schema problem is reported;
//! - [`settings`]: the validated [`Settings`] the rest of the program uses;
//! - `validate`: one module per section, each recording *every* problem with its key path,
//!   so an operator fixes a file in one pass;
//! - [`files`]: the one loader of the files a configuration names (as `serve` reads them);
//! - [`paths`]: where each path really leads (symlinks resolved, bundle-root rules).
//!
//! This module knows nothing of HTTP or storage; of cryptography only what reading the
//! configured certificates and keys takes.

pub mod duration;
pub mod files;
mod lenient;
pub mod paths;
pub mod people;
pub mod schema;
#[cfg(test)]
mod schema_doc;
pub mod settings;
mod validate;
pub use validate::DEFAULT_METRICS_LISTEN;

pub use schema::*;
pub use settings::*;
pub(crate) use validate::{validate_shared, SharedFiles};

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest a bypass drill may be configured to last.
pub const MAX_BYPASS: Duration = Duration::from_secs(4 * 3600);

/// Bounds of `limits.headerReadTimeout`, `bodyReadTimeout` and `handshakeTimeout`: `0s`
/// would refuse every request, hours would let slow clients hold every connection slot.
pub const MIN_IO_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_IO_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest `replayWindow`: the store holds rate × window claims, and the restart
/// fence lasts one window.
pub const MAX_REPLAY_WINDOW: Duration = Duration::from_secs(3600);

/// One problem found in a configuration file, with the key path it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}
impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{} problem(s) in {}:\n  {}", .problems.len(), .path.display(), .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

impl Settings {
    /// Reads and validates `path`; relative paths inside are relative to its directory.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_yaml(&text, base, crate::clock::unix_now()).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.to_path_buf(),
                message,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            },
            other => other,
        })
    }

    /// Parses and validates configuration text; `now` (unix seconds) judges bypass expiry.
    /// Every problem is reported: schema problems (unknown keys, wrong types, missing keys)
    /// each with its full key path, then what validation finds in the rest.
    pub fn from_yaml(text: &str, base: &Path, now: i64) -> Result<Settings, ConfigError> {
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
                path: PathBuf::new(),
                message: e.to_string(),
            })?;
        let lenient = lenient::deserialize::<AuthorityFile>(value);
        let invalid = |problems| ConfigError::Invalid {
            path: PathBuf::new(),
            problems,
        };
        let Some(file) = lenient.file else {
            return Err(invalid(lenient.problems));
        };
        let mut problems = lenient.problems;
        match validate::validate(file, base, now) {
            Ok(settings) if problems.is_empty() => return Ok(settings),
            Ok(_) => {}
            Err(found) => {
                // Validation does not report on the placeholders of repaired keys.
                let repaired = |path: &str| {
                    lenient.repaired.iter().any(|r| {
                        path == r
                            || path
                                .strip_prefix(r.as_str())
                                .is_some_and(|rest| rest.starts_with(['.', '[']))
                    })
                };
                problems.extend(found.into_iter().filter(|p| !repaired(&p.path)));
            }
        }
        Err(invalid(problems))
    }
}

/// The problems found so far; every validator adds to it.
struct Problems(Vec<ConfigProblem>);
impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// `path` relative to `base` unless absolute.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// A tenant or client id: 1–128 of `A-Z a-z 0-9 - _ . :`.
fn valid_identifier(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}
