//! The local control path of a running authority: a Unix socket in the data directory
//! (`control.sock`, mode 0600 in a 0700 directory) answering one JSON request per
//! connection, from root or the authority's own user only (checked with SO_PEERCRED).
//!
//! It carries the few operator acts that must reach a running process on this host:
//! bypass drills on and off, configuration reload, status, and the incident revocations
//! (one token by `jti`, every token of a client). There is deliberately no
//! remote admin API. This module holds the protocol and the client; the listener is in
//! `server::control_listener`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "control.sock";

/// Longest request or response line accepted.
pub const MAX_LINE: usize = 64 * 1024;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// Start a bypass drill for `seconds` (at most 4 h).
    BypassOn { seconds: u64, reason: String },
    /// End a bypass drill now.
    BypassOff,
    /// Re-read the configuration file and swap it in.
    Reload,
    /// Report bypass, fence and configuration state.
    Status,
    /// Revoke the live token whose `jti` is this (an incident act; audited).
    RevokeJti { jti: String },
    /// Revoke every live token of this client (an incident act; audited).
    RevokeClient { client_id: String },
    /// Rotate the token signing keys (next → current → previous), at once.
    KeysRotate,
    /// Remove a previous signing key (`force`: even if tokens it signed may still live).
    KeysRetire { kid: String, force: bool },
    /// Plan signing keys ahead (`every` seconds apart, `ahead` still to activate), or end
    /// the schedule (`every` absent).
    KeysSchedule { every: Option<i64>, ahead: usize },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlResponse {
    pub ok: bool,
    pub message: String,
    #[serde(default)]
    pub status: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the authority's control socket {path}: {source} (is `sealkit serve` running on this host, and are you root or its user?)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("the control socket answered something unreadable: {0}")]
    Protocol(String),
    #[error("the authority refused: {0}")]
    Refused(String),
}

/// Sends one request to the authority listening on `socket` and returns its answer.
pub async fn send(
    socket: &Path,
    request: &ControlRequest,
) -> Result<ControlResponse, ControlError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ControlError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    let (reader, mut writer) = stream.into_split();
    let mut line =
        serde_json::to_vec(request).map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push(b'\n');
    writer
        .write_all(&line)
        .await
        .map_err(|e| ControlError::Protocol(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(reader)
        .take(MAX_LINE as u64)
        .read_line(&mut answer)
        .await
        .map_err(|e| ControlError::Protocol(e.to_string()))?;
    let response: ControlResponse =
        serde_json::from_str(&answer).map_err(|e| ControlError::Protocol(e.to_string()))?;
    if response.ok {
        Ok(response)
    } else {
        Err(ControlError::Refused(response.message))
    }
}
