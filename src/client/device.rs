//! The device flow (RFC 8628) from the device's side, with DPoP (RFC 9449): ask for codes,
//! show them (a callback), poll `/token` with a proof until the person decides, and return
//! the DPoP-bound tokens. For `sealkit token` (the operator command) and the drill.
//!
//! Library code: it neither prints nor sleeps on its own clock beyond the interval the
//! authority gives; the caller shows the codes.

use super::https::{Connection, HttpsError};
use super::{ClientError, ProofKey};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DeviceFlowError {
    #[error(transparent)]
    Https(#[from] HttpsError),
    #[error(transparent)]
    Proof(#[from] ClientError),
    /// The authority answered with an OAuth error (`access_denied`, `expired_token`, ...).
    #[error("{error}: {description}")]
    Refused { error: String, description: String },
}

/// What the person is shown.
#[derive(Debug, Clone)]
pub struct DeviceCodes {
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: u64,
}

/// The tokens the flow ends with. `Debug` shows no token.
pub struct DeviceTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
}
impl std::fmt::Debug for DeviceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTokens")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

fn refused(body: &serde_json::Value) -> DeviceFlowError {
    DeviceFlowError::Refused {
        error: body["error"]
            .as_str()
            .unwrap_or("unexpected answer")
            .to_string(),
        description: body["error_description"].as_str().unwrap_or("").to_string(),
    }
}

/// Runs the device flow of public client `client_id` on `conn` (a connection to the
/// authority whose issuer is `issuer`), binding the tokens to `key`. `show` is called once
/// with the codes to show the person.
pub async fn run(
    conn: &mut Connection,
    issuer: &str,
    client_id: &str,
    scope: Option<&str>,
    key: &ProofKey,
    show: impl FnOnce(&DeviceCodes),
) -> Result<DeviceTokens, DeviceFlowError> {
    let mut form = vec![("client_id", client_id)];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    let reply = conn.post_form("/device_authorization", &form, &[]).await?;
    let body = reply.json();
    if reply.status != 200 {
        return Err(refused(&body));
    }
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    let device_code = text("device_code");
    let mut interval = body["interval"].as_u64().unwrap_or(5);
    show(&DeviceCodes {
        user_code: text("user_code"),
        verification_uri: text("verification_uri"),
        verification_uri_complete: text("verification_uri_complete"),
        expires_in: body["expires_in"].as_u64().unwrap_or(0),
    });
    let token_url = format!("{issuer}/token");
    let mut nonce: Option<String> = None;
    loop {
        let proof = key.proof("POST", &token_url, nonce.as_deref(), None)?;
        let reply = conn
            .post_form(
                "/token",
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("device_code", &device_code),
                    ("client_id", client_id),
                ],
                &[("dpop", &proof)],
            )
            .await?;
        if let Some(n) = reply.header("dpop-nonce") {
            nonce = Some(n.to_string());
        }
        let body = reply.json();
        if reply.status == 200 {
            let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
            return Ok(DeviceTokens {
                access_token: text("access_token"),
                refresh_token: body["refresh_token"].as_str().map(str::to_string),
                token_type: text("token_type"),
                expires_in: body["expires_in"].as_u64().unwrap_or(0),
                scope: text("scope"),
            });
        }
        match body["error"].as_str() {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += 5,
            Some("use_dpop_nonce") => continue,
            _ => return Err(refused(&body)),
        }
        tokio::time::sleep(Duration::from_secs(interval)).await;
    }
}
