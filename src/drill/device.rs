//! The device-flow rows of the drill: the drill is both the device (sealkit's own device
//! client, `client::device::run`, with a DPoP key) and the person (it signs in on the
//! verification page and approves), then checks the tokens and one refresh.

use super::{summary, Drill, DrillError};
use crate::client::https::{Connection, Reply, TlsTarget};
use crate::client::ProofKey;

/// Who the drill signs in as, and which public client it drives. `Debug` hides the
/// password.
#[derive(Clone)]
pub struct DeviceDrill {
    pub client_id: String,
    pub user: String,
    pub password: String,
}
impl std::fmt::Debug for DeviceDrill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceDrill")
            .field("client_id", &self.client_id)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

fn field(page: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    page.find(&needle)
        .and_then(|i| page[i + needle.len()..].split('"').next())
        .unwrap_or_default()
        .to_string()
}

fn cookie(reply: &Reply) -> String {
    reply
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .to_string()
}

/// Signs in on the verification page with `user_code`; the answer.
async fn sign_in(
    conn: &mut Connection,
    who: &DeviceDrill,
    user_code: &str,
) -> Result<Reply, DrillError> {
    let page = conn.get("/device").await?;
    let body = String::from_utf8_lossy(&page.body).into_owned();
    Ok(conn
        .post_form(
            "/device",
            &[
                ("csrf", &field(&body, "csrf")),
                ("user_code", user_code),
                ("username", &who.user),
                ("password", &who.password),
            ],
            &[("cookie", &cookie(&page))],
        )
        .await?)
}

pub(super) async fn scenarios(drill: &mut Drill<'_>, target: &TlsTarget) -> Result<(), DrillError> {
    const FLOW: &str = "device flow (drill signs in, approves)";
    const EXPECT: &str = "DPoP token for the user with cnf.jkt + refresh token";
    const WRONG: &str = "device flow: wrong user code";
    const REFRESH: &str = "device flow: refresh rotates";
    let Some(who) = drill.plan.device.clone() else {
        drill
            .report
            .skip(FLOW, EXPECT, "no device client or user given");
        return Ok(());
    };
    let key = ProofKey::es256().map_err(|e| DrillError::Env {
        path: "proof key".into(),
        message: e.to_string(),
    })?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let device = {
        let (target, issuer, client_id) = (
            target.clone(),
            drill.plan.issuer.trim_end_matches('/').to_string(),
            who.client_id.clone(),
        );
        tokio::spawn(async move {
            let mut conn = target.connect().await?;
            let key = key;
            let tokens =
                crate::client::device::run(&mut conn, &issuer, &client_id, None, &key, |codes| {
                    let _ = tx.send(codes.user_code.clone());
                })
                .await;
            Ok::<_, DrillError>((tokens, key, conn))
        })
    };
    let Ok(user_code) = rx.await else {
        let observed = match device.await {
            Ok(Ok((Err(e), _, _))) => e.to_string(),
            Ok(Err(e)) => e.to_string(),
            _ => "no codes".into(),
        };
        drill.report.push(FLOW, EXPECT, observed, false);
        return Ok(());
    };
    let mut conn = target.connect().await?;
    // A wrong user code: an error page, never the approval form.
    let wrong = sign_in(&mut conn, &who, "BBBB-BBBB").await?;
    let wrong_body = String::from_utf8_lossy(&wrong.body).into_owned();
    drill.report.push(
        WRONG,
        "error page, no approval form",
        format!(
            "{}{}",
            wrong.status.as_u16(),
            if wrong_body.contains("value=\"approve\"") {
                " with an approval form"
            } else {
                " error page"
            }
        ),
        wrong.status == 400 && !wrong_body.contains("value=\"approve\""),
    );
    let consent = sign_in(&mut conn, &who, &user_code).await?;
    let consent_body = String::from_utf8_lossy(&consent.body).into_owned();
    let approved = conn
        .post_form(
            "/device/decision",
            &[
                ("csrf", &field(&consent_body, "csrf")),
                ("user_code", &user_code),
                ("decision", "approve"),
            ],
            &[("cookie", &cookie(&consent))],
        )
        .await?;
    if approved.status != 200 {
        drill.report.push(
            FLOW,
            EXPECT,
            format!("approval page answered {}", approved.status.as_u16()),
            false,
        );
        device.abort();
        return Ok(());
    }
    let (tokens, key, mut device_conn) = match device.await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            drill.report.push(FLOW, EXPECT, e.to_string(), false);
            return Ok(());
        }
        Err(e) => {
            drill.report.push(FLOW, EXPECT, e.to_string(), false);
            return Ok(());
        }
    };
    let tokens = match tokens {
        Ok(t) => t,
        Err(e) => {
            drill.report.push(FLOW, EXPECT, e.to_string(), false);
            return Ok(());
        }
    };
    let jkt = key.thumbprint();
    let claims = super::jwt_claims(&tokens.access_token);
    let pass = tokens.token_type == "DPoP"
        && claims["cnf"]["jkt"] == jkt.as_str()
        && claims["sub"] == who.user.as_str()
        && tokens.refresh_token.is_some();
    drill.report.push(
        FLOW,
        EXPECT,
        format!(
            "{} sub={} cnf.jkt {} refresh {}",
            tokens.token_type,
            claims["sub"].as_str().unwrap_or("?"),
            if claims["cnf"]["jkt"] == jkt.as_str() {
                "matches"
            } else {
                "differs"
            },
            if tokens.refresh_token.is_some() {
                "present"
            } else {
                "absent"
            }
        ),
        pass,
    );
    let Some(refresh_token) = tokens.refresh_token else {
        drill
            .report
            .skip(REFRESH, "200 with a new refresh token", "no refresh token");
        return Ok(());
    };
    let proof = key
        .proof("POST", &drill.token_url, None, None)
        .unwrap_or_default();
    let reply = device_conn
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_token),
                ("client_id", &who.client_id),
            ],
            &[("dpop", &proof)],
        )
        .await?;
    let rotated = reply.json()["refresh_token"]
        .as_str()
        .is_some_and(|r| r != refresh_token);
    drill.report.push(
        REFRESH,
        "200 with a new refresh token",
        summary(&reply),
        reply.status == 200 && rotated,
    );
    Ok(())
}
