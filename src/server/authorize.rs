//! The authorization endpoint (RFC 6749 §4.1) for web consoles: `GET /authorize` checks
//! the request (registered client, exact redirect URI, PKCE `S256`, `dpop_jkt` per RFC
//! 9449 §10) and shows the sign-in form; `POST /authorize/login` signs in and shows the
//! consent form (approve / deny); `POST /authorize/decision` redirects to the client with
//! a one-time code (or `access_denied`), `state` and `iss` (RFC 9207).
//!
//! A request whose client or redirect URI is not registered gets an error page, never a
//! redirect. Forms are CSRF-protected by the session (see `people_pages`).

use super::authority::Authority;
use super::error::OAuthError;
use super::people_pages::{error_page, escape, form_fields, page, page_with_csp, session_id, CSP};
use super::response::Response;
use super::ConnectionContext;
use crate::config::people::GrantType;
use crate::grants::codes::{AuthorizationRequest, CodeGrant};
use crate::people::login::{Credentials, LoginOutcome, Refusal};
use crate::telemetry::events;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use std::collections::HashMap;

fn redirect(to: &str) -> Response {
    let mut response = http::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to) {
        h.insert(http::header::LOCATION, v);
    }
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// `redirect_uri` with `params` appended to its query, plus `iss` (RFC 9207).
fn client_redirect(redirect_uri: &str, issuer: &str, params: &[(&str, &str)]) -> Response {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
                q.append_pair("iss", issuer);
            }
            redirect(url.as_str())
        }
        Err(_) => error_page("The client's redirect URI is not usable."),
    }
}

fn login_form(csrf: &str, request: &str, client: &str, message: &str) -> String {
    format!(
        "{m}<p><b>{client}</b> asks you to sign in.</p><form method=\"post\" action=\"/authorize/login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"request\" value=\"{request}\">\
<label>User <input type=\"text\" name=\"username\" autocomplete=\"username\" required></label>\
<label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
<label>One-time code (if you have one) <input type=\"text\" name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\"></label>\
<button type=\"submit\">Sign in</button></form>",
        m = if message.is_empty() {
            String::new()
        } else {
            format!("<p role=\"alert\">{}</p>", escape(message))
        },
        client = escape(client),
        csrf = escape(csrf),
        request = escape(request),
    )
}

fn origin_of(uri: &str) -> String {
    url::Url::parse(uri)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

/// `/authorize`, `/authorize/login`, `/authorize/decision`.
pub async fn handle(
    authority: &Authority,
    connection: &ConnectionContext,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let snapshot = authority.current();
    let settings = &snapshot.settings;
    let people = &settings.people;
    let issuer = settings.issuer.as_str();
    let now = authority.core.clock.now();
    let lifetime = people.session_lifetime.as_secs() as i64;
    let sessions = &authority.people.sessions;
    let codes = &authority.people.codes;

    if path == "/authorize" {
        if *method != Method::GET {
            return Err(OAuthError::MethodNotAllowed("GET"));
        }
        let mut params: HashMap<String, String> = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if params.insert(k.to_string(), v.into_owned()).is_some() {
                return Ok(error_page(&format!(
                    "Parameter {k} appears more than once."
                )));
            }
        }
        let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
        // Client and redirect URI first: until both are known good, nothing redirects.
        let Some(client) = get("client_id").and_then(|id| settings.clients.get(id)) else {
            return Ok(error_page("Unknown client."));
        };
        if !client.user_grants.allows(GrantType::AuthorizationCode) {
            return Ok(error_page("This client may not sign people in."));
        }
        let Some(redirect_uri) =
            get("redirect_uri").filter(|r| client.user_grants.redirect_uris.iter().any(|u| u == r))
        else {
            return Ok(error_page(
                "The redirect URI is not registered for this client.",
            ));
        };
        let state = get("state");
        let fail = |error: &str, description: &str| {
            let mut p = vec![("error", error), ("error_description", description)];
            if let Some(s) = state {
                p.push(("state", s));
            }
            Ok(client_redirect(redirect_uri, issuer, &p))
        };
        if get("response_type") != Some("code") {
            return fail("unsupported_response_type", "only response_type=code");
        }
        let Some(challenge) = get("code_challenge") else {
            return fail(
                "invalid_request",
                "PKCE is required: code_challenge with S256",
            );
        };
        if get("code_challenge_method") != Some("S256") || challenge.len() != 43 {
            return fail("invalid_request", "code_challenge_method must be S256");
        }
        let dpop_jkt = get("dpop_jkt");
        if dpop_jkt.is_some_and(|j| {
            j.len() != 43
                || !j
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            return fail(
                "invalid_request",
                "dpop_jkt is not a JWK SHA-256 thumbprint",
            );
        }
        if let Some(scope) = get("scope") {
            if super::user_grants::user_scope(client, &[], Some(scope)).is_err() {
                return fail("invalid_scope", "a requested scope is not registered");
            }
        }
        let Some(request_id) = codes.file_request(
            AuthorizationRequest {
                client_id: client.id.clone(),
                redirect_uri: redirect_uri.to_string(),
                state: state.map(str::to_string),
                scope: get("scope").map(str::to_string),
                code_challenge: challenge.to_string(),
                dpop_jkt: dpop_jkt.map(str::to_string),
                expires_at: now + lifetime,
            },
            now,
        ) else {
            return Err(OAuthError::TemporarilyUnavailable);
        };
        let (id, csrf) = sessions.create(lifetime, now);
        return Ok(page(
            StatusCode::OK,
            "Sign in",
            &login_form(&csrf, &request_id, &client.id, ""),
            Some((&id, lifetime)),
        ));
    }

    if *method != Method::POST {
        return Err(OAuthError::MethodNotAllowed("POST"));
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
    let request_id = field("request").to_string();
    let Some(request) = codes.request(&request_id, now) else {
        return Ok(error_page(
            "This sign-in request has expired. Start again from the application.",
        ));
    };

    if path == "/authorize/login" {
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
                    "Sign in",
                    &login_form(&csrf, &request_id, &request.client_id, message),
                    Some((&id, lifetime)),
                ));
            }
        };
        let (id, csrf) = sessions.sign_in(&id, &user.id, lifetime, now);
        let csp = format!(
            "{CSP}; form-action 'self' {}",
            origin_of(&request.redirect_uri)
        )
        .replacen("form-action 'self'; ", "", 1);
        let body = format!(
            "<p>Signed in as <b>{name}</b>.</p><p><b>{client}</b> asks for access as you{scope}.</p>\
<form method=\"post\" action=\"/authorize/decision\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"request\" value=\"{request}\">\
<button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
            name = escape(&user.display_name),
            client = escape(&request.client_id),
            scope = request
                .scope
                .as_deref()
                .map(|s| format!(" (scope: {})", escape(s)))
                .unwrap_or_default(),
            csrf = escape(&csrf),
            request = escape(&request_id),
        );
        return Ok(page_with_csp(
            StatusCode::OK,
            "Allow access?",
            &body,
            Some((&id, lifetime)),
            &csp,
        ));
    }

    if path != "/authorize/decision" {
        return Err(OAuthError::NotFound);
    }
    let Some(user) = sessions
        .get(&id, now)
        .and_then(|s| s.user)
        .and_then(|u| people.users.get(&u).cloned())
    else {
        return Ok(error_page("Sign in first."));
    };
    let Some(request) = codes.take_request(&request_id, now) else {
        return Ok(error_page(
            "This sign-in request has expired. Start again from the application.",
        ));
    };
    sessions.end(&id);
    let approve = field("decision") == "approve";
    tracing::info!(
        event = events::CONSENT, flow = "authorization_code", user = %user.id, client = %request.client_id,
        decision = if approve { "approve" } else { "deny" }, peer = %connection.peer,
    );
    let mut params: Vec<(&str, &str)> = Vec::new();
    let code;
    if approve {
        let Some(client) = settings.clients.get(&request.client_id) else {
            return Ok(error_page("This client is no longer registered."));
        };
        let scope =
            match super::user_grants::user_scope(client, &user.groups, request.scope.as_deref()) {
                Ok(s) => s,
                Err(_) => {
                    return Ok(error_page(
                        "The application asked for access this site does not grant.",
                    ))
                }
            };
        code = codes
            .issue(
                CodeGrant {
                    client_id: request.client_id.clone(),
                    redirect_uri: request.redirect_uri.clone(),
                    code_challenge: request.code_challenge.clone(),
                    dpop_jkt: request.dpop_jkt.clone(),
                    user: user.id.clone(),
                    scope,
                    expires_at: now + people.authorization_code_lifetime.as_secs() as i64,
                },
                now,
            )
            .ok_or(OAuthError::TemporarilyUnavailable)?;
        params.push(("code", &code));
    } else {
        params.push(("error", "access_denied"));
    }
    if let Some(s) = &request.state {
        params.push(("state", s));
    }
    Ok(client_redirect(&request.redirect_uri, issuer, &params))
}
