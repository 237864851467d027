//! The listening side of the control socket (protocol in `crate::control`).

use super::authority::Authority;
use crate::control::{ControlRequest, ControlResponse, MAX_LINE};
use crate::telemetry::events;
use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::watch;

/// Binds the socket: a stale one left by a killed process is replaced; mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        // A live authority would still answer; a socket nobody listens on is stale.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another authority is serving this data directory ({})",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(
    listener: UnixListener,
    owner_uid: u32,
    authority: Arc<Authority>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let authority = authority.clone();
        tokio::spawn(async move {
            let uid = stream.peer_cred().map(|c| c.uid()).ok();
            let (reader, mut writer) = stream.into_split();
            let response = if uid != Some(0) && uid != Some(owner_uid) {
                tracing::warn!(event = events::CONTROL, decision = "refused", peer_uid = ?uid);
                refuse("only root or the authority's own user may use the control socket")
            } else {
                let mut line = String::new();
                match BufReader::new(reader)
                    .take(MAX_LINE as u64)
                    .read_line(&mut line)
                    .await
                {
                    Ok(_) => match serde_json::from_str::<ControlRequest>(&line) {
                        Ok(request) => handle(&authority, request, uid.unwrap_or(0)).await,
                        Err(e) => refuse(&format!("unreadable request: {e}")),
                    },
                    Err(e) => refuse(&format!("unreadable request: {e}")),
                }
            };
            let mut bytes = serde_json::to_vec(&response).unwrap_or_default();
            bytes.push(b'\n');
            let _ = writer.write_all(&bytes).await;
        });
    }
}

fn refuse(message: &str) -> ControlResponse {
    ControlResponse {
        ok: false,
        message: message.to_string(),
        status: json!(null),
    }
}

fn status(authority: &Authority) -> serde_json::Value {
    let snapshot = authority.current();
    json!({
        "issuer": snapshot.settings.issuer,
        "clients": snapshot.settings.clients.len(),
        "tenants": snapshot.settings.tenants.len(),
        "restartFence": authority.fence_active(),
        "keys": authority.core.signing_key.set(),
        "bypass": match authority.active_bypass() {
            Some(w) => json!({"active": true, "until": crate::store::health::rfc3339(w.until), "reason": w.reason}),
            None => json!({"active": false, "allowed": authority.core.bypass.allowed()}),
        },
    })
}

async fn handle(authority: &Authority, request: ControlRequest, uid: u32) -> ControlResponse {
    tracing::info!(event = events::CONTROL, request = ?request, peer_uid = uid);
    match request {
        ControlRequest::BypassOn { seconds, reason } => {
            let operator = crate::telemetry::audit::Operator::of_uid(uid).label();
            let now = authority.core.clock.now();
            match authority
                .core
                .bypass
                .start(seconds, &reason, &operator, now)
            {
                Ok(_) => {
                    authority.refresh_bypass_gauge();
                    ControlResponse {
                        ok: true,
                        message: format!("bypass on for {seconds}s"),
                        status: status(authority),
                    }
                }
                Err(refused) => refuse(&format!("bypass refused: {refused}")),
            }
        }
        ControlRequest::BypassOff => {
            let operator = crate::telemetry::audit::Operator::of_uid(uid).label();
            authority
                .core
                .bypass
                .stop(&operator, authority.core.clock.now());
            authority.refresh_bypass_gauge();
            ControlResponse {
                ok: true,
                message: "bypass off".into(),
                status: status(authority),
            }
        }
        ControlRequest::Reload => match authority.reload() {
            Ok(_) => ControlResponse {
                ok: true,
                message: "configuration reloaded".into(),
                status: status(authority),
            },
            Err(e) => {
                tracing::error!(event = events::CONFIG_RELOAD_FAILED, error = %e);
                refuse(&format!(
                    "reload refused, the running configuration is unchanged: {e}"
                ))
            }
        },
        ControlRequest::RevokeJti { jti } => {
            revoke(authority, crate::core::incident::Selection::Jti(jti), uid).await
        }
        ControlRequest::RevokeClient { client_id } => {
            revoke(
                authority,
                crate::core::incident::Selection::Client(client_id),
                uid,
            )
            .await
        }
        ControlRequest::Status => ControlResponse {
            ok: true,
            message: "ok".into(),
            status: status(authority),
        },
        ControlRequest::KeysRotate => {
            let operator = crate::telemetry::audit::Operator::of_uid(uid);
            keys_answer(authority, authority.rotate_keys(&operator), "rotated")
        }
        ControlRequest::KeysRetire { kid, force } => {
            let operator = crate::telemetry::audit::Operator::of_uid(uid);
            keys_answer(
                authority,
                authority.retire_key(&kid, force, &operator),
                "retired",
            )
        }
        ControlRequest::KeysSchedule { every, ahead } => {
            let operator = crate::telemetry::audit::Operator::of_uid(uid);
            let plan = every.map(|every| (every, ahead));
            keys_answer(
                authority,
                authority.schedule_keys(plan, &operator),
                if plan.is_some() {
                    "scheduled"
                } else {
                    "unscheduled"
                },
            )
        }
    }
}

fn keys_answer(
    authority: &Authority,
    outcome: Result<crate::keyset::SetFile, crate::keyset::KeySetError>,
    what: &str,
) -> ControlResponse {
    match outcome {
        Ok(set) => ControlResponse {
            ok: true,
            message: format!("signing keys {what}; current {}", set.current.kid),
            status: json!({
                "keys": set,
                "fingerprint": set.fingerprint(),
                "jwks": authority.core.signing_key.jwks(),
            }),
        },
        Err(e) => refuse(&format!("signing keys unchanged: {e}")),
    }
}

/// Revokes what `selection` picks and audits it: who (peer uid), what, how many.
async fn revoke(
    authority: &Authority,
    selection: crate::core::incident::Selection,
    uid: u32,
) -> ControlResponse {
    use crate::core::incident::Selection;
    let (by, value) = match &selection {
        Selection::Jti(jti) => ("jti", jti.clone()),
        Selection::Client(client) => ("client", client.clone()),
    };
    if let Selection::Client(client) = &selection {
        if !authority.current().settings.clients.contains_key(client) {
            return refuse(&format!("no client {client} in the running configuration"));
        }
    }
    let now = authority.core.clock.now();
    match crate::core::incident::revoke(authority.core.store().as_ref(), &selection, now).await {
        Ok(done) => {
            tracing::warn!(
                event = events::TOKENS_REVOKED_BY_OPERATOR,
                operator = %format!("uid:{uid}"),
                by, selected = %value,
                revoked = done.jtis.len(),
                already_revoked = done.already_revoked,
                token_jtis = %done.jtis.join(","),
            );
            ControlResponse {
                ok: true,
                message: format!(
                    "revoked {} token(s) ({by} {value}); {} already revoked",
                    done.jtis.len(),
                    done.already_revoked
                ),
                status: json!({"revoked": done.jtis, "alreadyRevoked": done.already_revoked}),
            }
        }
        Err(e) => {
            tracing::error!(event = events::TOKENS_REVOKED_BY_OPERATOR, decision = "failed", by, selected = %value, error = %e);
            refuse(&format!("revocation failed: {e}"))
        }
    }
}

/// The uid owning `path` (the authority's own user, as the socket's creator).
pub fn owner_uid(path: &Path) -> u32 {
    std::fs::metadata(path).map(|m| m.uid()).unwrap_or(0)
}
