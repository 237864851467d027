//! The pages people see: the device verification page (`/device`: sign in with the user
//! code, then approve or deny). Server-rendered HTML with no external assets, answered
//! with a strict CSP (`default-src 'none'`, `frame-ancestors 'none'`), `no-store`, and a
//! session cookie (`__Host-`, `Secure`, `HttpOnly`, `SameSite=Strict`); every form carries
//! the CSRF token of its session.
//!
//! A wrong or expired user code gets an error page, never an approval. The login form is
//! a plain form (a text input `username`, a password input `password`, an optional
//! `totp`, a submit button) so any browser or script can drive it.

use super::authority::Authority;
use super::error::OAuthError;
use super::response::Response;
use super::ConnectionContext;
use crate::grants::device::Decision;
use crate::people::login::{Credentials, LoginOutcome, Refusal};
use crate::telemetry::events;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use std::collections::HashMap;

const COOKIE: &str = "__Host-sealkit-session";
pub(super) const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn page(
    status: StatusCode,
    title: &str,
    body: &str,
    cookie: Option<(&str, i64)>,
) -> Response {
    page_with_csp(status, title, body, cookie, CSP)
}

/// A page with its own CSP (the consent page of a redirect lets its form lead to the
/// client's redirect URI: `form-action` also governs the redirect after a submission).
pub(super) fn page_with_csp(
    status: StatusCode,
    title: &str,
    body: &str,
    cookie: Option<(&str, i64)>,
    csp: &str,
) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
<meta name=\"viewport\" content=\"width=device-width\"><style>body{{font-family:sans-serif;max-width:28em;margin:3em auto}}\
label{{display:block;margin:.6em 0}}input{{width:100%}}button{{margin:.6em .6em 0 0;padding:.4em 1.2em}}</style></head>\
<body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    let mut response = http::Response::new(Full::new(Bytes::from(html)));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert("content-security-policy", v);
    }
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if let Some((id, max_age)) = cookie {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"
        )) {
            h.insert(http::header::SET_COOKIE, v);
        }
    }
    response
}

pub(super) fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

pub(super) fn form_fields(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn login_form(csrf: &str, user_code: &str, message: &str) -> String {
    format!(
        "{m}<form method=\"post\" action=\"/device\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label>Code shown on your device <input type=\"text\" name=\"user_code\" value=\"{code}\" autocomplete=\"off\" required></label>\
<label>User <input type=\"text\" name=\"username\" autocomplete=\"username\" required></label>\
<label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
<label>One-time code (if you have one) <input type=\"text\" name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\"></label>\
<button type=\"submit\">Sign in</button></form>",
        m = if message.is_empty() { String::new() } else { format!("<p role=\"alert\">{}</p>", escape(message)) },
        csrf = escape(csrf),
        code = escape(user_code),
    )
}

fn consent_form(csrf: &str, user_code: &str, client: &str, display_name: &str) -> String {
    format!(
        "<p>Signed in as <b>{name}</b>.</p><p>The device showing code <b>{code}</b> asks for access as you \
through <b>{client}</b>.</p>\
<form method=\"post\" action=\"/device/decision\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"user_code\" value=\"{code}\">\
<button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        name = escape(display_name),
        code = escape(user_code),
        client = escape(client),
        csrf = escape(csrf),
    )
}

pub(super) fn error_page(message: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Cannot continue",
        &format!(
            "<p role=\"alert\">{}</p><p><a href=\"/device\">Start again</a></p>",
            escape(message)
        ),
        None,
    )
}

/// `/device` (GET: the form; POST: sign in) and `/device/decision` (POST).
pub async fn device(
    authority: &Authority,
    connection: &ConnectionContext,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let snapshot = authority.current();
    let people = &snapshot.settings.people;
    let now = authority.core.clock.now();
    let lifetime = people.session_lifetime.as_secs() as i64;
    let sessions = &authority.people.sessions;
    if *method == Method::GET && path == "/device" {
        let code = query
            .and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "user_code")
                    .map(|(_, v)| v.into_owned())
            })
            .unwrap_or_default();
        let (id, csrf) = sessions.create(lifetime, now);
        return Ok(page(
            StatusCode::OK,
            "Sign in to approve a device",
            &login_form(&csrf, &code, ""),
            Some((&id, lifetime)),
        ));
    }
    if *method != Method::POST {
        return Err(OAuthError::MethodNotAllowed("GET, POST"));
    }
    let fields = form_fields(body);
    let field = |n: &str| fields.get(n).map(String::as_str).unwrap_or("");
    let Some(id) = session_id(headers) else {
        return Ok(error_page(
            "Your session has ended (or cookies are off). Start again.",
        ));
    };
    if !sessions.csrf_matches(&id, field("csrf"), now) {
        return Ok(error_page("This form has expired. Start again."));
    }
    let user_code = field("user_code").to_string();
    if path == "/device" {
        let outcome = authority
            .people
            .logins
            .attempt(
                people,
                Credentials {
                    user: field("username").to_string(),
                    password: field("password").to_string(),
                    totp: fields.get("totp").filter(|t| !t.is_empty()).cloned(),
                },
                connection.peer.ip(),
                now,
            )
            .await
            .map_err(|_| OAuthError::ServerError)?;
        let user = match outcome {
            LoginOutcome::SignedIn(user) => user,
            LoginOutcome::Refused(refusal) => {
                let message = match refusal {
                    Refusal::WrongCredentials | Refusal::Locked => {
                        "Sign-in failed: wrong user, password or code, or the account is locked."
                    }
                    Refusal::RateLimited => "Too many attempts. Wait a minute and try again.",
                };
                let (id, csrf) = sessions.create(lifetime, now);
                return Ok(page(
                    StatusCode::UNAUTHORIZED,
                    "Sign in to approve a device",
                    &login_form(&csrf, &user_code, message),
                    Some((&id, lifetime)),
                ));
            }
        };
        let (id, csrf) = sessions.sign_in(&id, &user.id, lifetime, now);
        let Some(pending) = authority.people.devices.pending(&user_code, now) else {
            return Ok(error_page(
                "That code is wrong or has expired. Check the code on your device.",
            ));
        };
        let mut response = page(
            StatusCode::OK,
            "Approve this device?",
            &consent_form(
                &csrf,
                &pending.user_code,
                &pending.client_id,
                &user.display_name,
            ),
            Some((&id, lifetime)),
        );
        *response.status_mut() = StatusCode::OK;
        return Ok(response);
    }
    // /device/decision
    let Some(user_id) = sessions.get(&id, now).and_then(|s| s.user) else {
        return Ok(error_page("Sign in first."));
    };
    let Some(user) = people.users.get(&user_id).cloned() else {
        return Ok(error_page("Sign in first."));
    };
    let Some(pending) = authority.people.devices.pending(&user_code, now) else {
        return Ok(error_page(
            "That code is wrong or has expired. Check the code on your device.",
        ));
    };
    let approve = field("decision") == "approve";
    let decision = if approve {
        let Some(client) = snapshot.settings.clients.get(&pending.client_id) else {
            return Ok(error_page("That device's client is no longer registered."));
        };
        let scope =
            match super::user_grants::user_scope(client, &user.groups, pending.scope.as_deref()) {
                Ok(scope) => scope,
                Err(_) => {
                    return Ok(error_page(
                        "The device asked for access this site does not grant.",
                    ))
                }
            };
        Decision::Approved {
            user: user.id.clone(),
            scope,
        }
    } else {
        Decision::Denied
    };
    if !authority.people.devices.decide(&user_code, decision, now) {
        return Ok(error_page(
            "That code is wrong or has expired. Check the code on your device.",
        ));
    }
    sessions.end(&id);
    tracing::info!(
        event = events::CONSENT, flow = "device", user = %user.id, client = %pending.client_id,
        decision = if approve { "approve" } else { "deny" }, peer = %connection.peer,
    );
    Ok(page(
        StatusCode::OK,
        if approve {
            "Device approved"
        } else {
            "Device denied"
        },
        if approve {
            "<p>You can return to your device.</p>"
        } else {
            "<p>The device gets no access.</p>"
        },
        Some(("", 0)),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
