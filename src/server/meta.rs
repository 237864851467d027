//! The public, read-only endpoints: discovery metadata (RFC 8414 only: no ID tokens, so no
//! OpenID Connect discovery), `/jwks`, `/health`,
//! `/ready` and `/metrics`.

use super::authority::Authority;
use super::response::{json_response, public_json, text, Response};
use crate::config::Settings;
use http::StatusCode;
use serde_json::{json, Value};

/// RFC 8414 metadata, at `/.well-known/oauth-authorization-server`.
pub fn discovery_document(settings: &Settings) -> Value {
    let issuer = &settings.issuer;
    let secret_methods = ["client_secret_basic", "client_secret_post"];
    let mut doc = json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "grant_types_supported": ["client_credentials"],
        // RFC 8414 §2 requires the member; no authorization endpoint, so no response type.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": secret_methods,
        "introspection_endpoint_auth_methods_supported": secret_methods,
        "revocation_endpoint_auth_methods_supported": secret_methods,
    });
    // RFC 9449 §5.1: advertised only when proofs are accepted (`dpop.enabled`).
    if settings.dpop.enabled {
        doc["dpop_signing_alg_values_supported"] = json!(settings
            .dpop
            .allowed_algorithms
            .iter()
            .flat_map(|a| a.advertised_names())
            .collect::<Vec<_>>());
    }
    doc["fresh_auth_endpoint"] = json!(format!("{issuer}/fresh-auth"));
    // The user grants a registered client uses (`config::people`).
    let mut grants: Vec<&str> = vec!["client_credentials"];
    for client in settings.clients.values() {
        for g in &client.user_grants.grant_types {
            if !grants.contains(&g.as_str()) {
                grants.push(g.as_str());
            }
        }
    }
    doc["grant_types_supported"] = json!(grants);
    if grants.contains(&crate::config::people::GrantType::AuthorizationCode.as_str()) {
        doc["authorization_endpoint"] = json!(format!("{issuer}/authorize"));
        doc["response_types_supported"] = json!(["code"]);
        doc["code_challenge_methods_supported"] = json!(["S256"]);
        doc["authorization_response_iss_parameter_supported"] = json!(true);
    }
    if grants.contains(&crate::config::people::GrantType::DeviceCode.as_str()) {
        doc["device_authorization_endpoint"] = json!(format!("{issuer}/device_authorization"));
    }
    if settings
        .clients
        .values()
        .any(|c| matches!(c.auth, crate::config::ClientAuth::None))
    {
        for key in [
            "token_endpoint_auth_methods_supported",
            "revocation_endpoint_auth_methods_supported",
        ] {
            doc[key] = json!(["client_secret_basic", "client_secret_post", "none"]);
        }
    }
    if settings.tls_client_ca.is_some() {
        doc["tls_client_certificate_bound_access_tokens"] = json!(true);
        let all_methods = [
            "client_secret_basic",
            "client_secret_post",
            "tls_client_auth",
            "self_signed_tls_client_auth",
        ];
        for key in [
            "token_endpoint_auth_methods_supported",
            "introspection_endpoint_auth_methods_supported",
            "revocation_endpoint_auth_methods_supported",
        ] {
            doc[key] = json!(all_methods);
        }
    }
    doc
}

pub fn discovery(authority: &Authority) -> Response {
    public_json(authority.current().discovery.clone())
}

/// `/jwks`: the key set as it is now (a rotation shows at once).
pub fn jwks(authority: &Authority) -> Response {
    let keys = authority.core.signing_key.jwks();
    public_json(bytes::Bytes::from(
        serde_json::to_vec(&keys).unwrap_or_default(),
    ))
}

pub fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// Ready when the store accepts a write and reads it back; reports the bypass state so a
/// forgotten drill is visible to whatever polls readiness, and, while the store is
/// unavailable, why and since when (`storeOutage`).
pub async fn ready(authority: &Authority) -> Response {
    let store = authority.store().probe().await;
    let health = authority.store().health();
    let bypass = authority.active_bypass();
    let outage = match (health.state, health.since) {
        (crate::store::StoreState::Available, _) | (_, None) => Value::Null,
        (state, Some(since)) => json!({
            "state": match state {
                crate::store::StoreState::Fatal => "fatal",
                _ => "unavailable",
            },
            "cause": health.cause.map(|c| c.label()),
            "since": crate::store::health::rfc3339(since),
            "reason": health.reason,
        }),
    };
    // Multi-node sites: a node whose key set differs from the site's is not ready (its
    // tokens would not verify on the others, nor theirs on it).
    let key_set = authority.core.signing_key.set().fingerprint();
    let site_key_set = authority
        .store()
        .key_set(&key_set, false)
        .await
        .ok()
        .flatten();
    let key_set_ok = site_key_set.as_deref().map_or(true, |s| s == key_set);
    let ready = store.is_ok() && key_set_ok;
    let body = json!({
        "ready": ready,
        "store": match &store { Ok(()) => "ok".to_string(), Err(e) => e.to_string() },
        "storeOutage": outage,
        "signingKey": authority.core.signing_key.kid(),
        "keySet": key_set,
        "siteKeySet": site_key_set,
        "config": "valid",
        "restartFence": authority.fence_active(),
        "bypass": match &bypass {
            Some(w) => json!({"active": true, "until": crate::store::health::rfc3339(w.until), "reason": w.reason}),
            None => json!({"active": false}),
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

/// `/metrics` in the format the `Accept` header asks for ([`crate::monitoring::Format`]).
pub fn metrics(authority: &Authority, headers: &http::HeaderMap) -> Response {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = crate::monitoring::Format::negotiate(accept);
    text(
        StatusCode::OK,
        format.content_type(),
        crate::monitoring::render(authority.metrics(), format),
    )
}
