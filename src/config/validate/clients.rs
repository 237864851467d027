//! `clients:`: identifiers, credentials (secret or certificate), scopes, audiences, and
//! the policy a client may tighten but never loosen.

use crate::config::schema::ClientFile;
use crate::config::settings::{ClientAuth, ClientSettings, DpopSettings};
use crate::config::{valid_identifier, Problems};
use crate::policy::TenantPolicy;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Every client, against the tenants' policies; `client_ca`: whether client certificates
/// are configured.
pub(super) fn validate_clients(
    clients_file: &[ClientFile],
    tenants: &BTreeMap<String, TenantPolicy>,
    dpop: &DpopSettings,
    client_ca: bool,
    problems: &mut Problems,
) -> BTreeMap<String, Arc<ClientSettings>> {
    let mut clients = BTreeMap::new();
    for (i, client) in clients_file.iter().enumerate() {
        let path = format!("clients[{i}]");
        if !valid_identifier(&client.id) {
            problems.add(format!("{path}.id"), "must be 1-128 of A-Z a-z 0-9 - _ . :");
        }
        let Some(tenant_policy) = tenants.get(&client.tenant).copied() else {
            problems.add(
                format!("{path}.tenant"),
                format!("unknown tenant `{}`", client.tenant),
            );
            continue;
        };
        let auth = validate_client_auth(client, &path, client_ca, problems);
        let public = matches!(auth, Some(ClientAuth::None));
        let user_grants =
            crate::config::people::validate_client_grants(client, &path, public, problems);
        if public && client.may_introspect {
            problems.add(
                format!("{path}.mayIntrospect"),
                "a public client cannot introspect",
            );
        }
        if client.audience.is_empty() {
            problems.add(
                format!("{path}.audience"),
                "list at least one audience for its tokens",
            );
        }
        for (j, scope) in client.scopes.iter().enumerate() {
            if scope.is_empty()
                || !scope
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
            {
                problems.add(
                    format!("{path}.scopes[{j}]"),
                    "not a valid scope token (RFC 6749 §3.3)",
                );
            }
        }
        let mut constraint = client.sender_constraint.unwrap_or(tenant_policy.constraint);
        if client.dpop_bound_access_tokens && !constraint.needs_dpop() {
            constraint = constraint.and_dpop();
        }
        if !constraint.is_at_least_as_strict_as(tenant_policy.constraint) {
            problems.add(
                format!("{path}.senderConstraint"),
                format!(
                    "`{}` would loosen tenant `{}`'s `{}`; a client may only tighten it",
                    constraint, client.tenant, tenant_policy.constraint
                ),
            );
        }
        if client.require_nonce == Some(false) && tenant_policy.require_nonce {
            problems.add(
                format!("{path}.requireNonce"),
                format!(
                    "tenant `{}` requires nonces; a client may not turn them off",
                    client.tenant
                ),
            );
        }
        if constraint.needs_dpop() && !dpop.enabled {
            problems.add(
                format!("{path}.senderConstraint"),
                "requires DPoP but security.senderConstraints.dpop.enabled is false",
            );
        }
        if constraint.mentions_mtls() && !client_ca {
            problems.add(
                format!("{path}.senderConstraint"),
                format!("`{constraint}` needs client certificates: set tls.clientCa"),
            );
        }
        let settings = ClientSettings {
            id: client.id.clone(),
            tenant: client.tenant.clone(),
            auth: auth.unwrap_or(ClientAuth::Secret(crate::secret::SecretHash::of(""))),
            scopes: client.scopes.clone(),
            audience: client.audience.clone(),
            policy: TenantPolicy {
                constraint,
                require_nonce: tenant_policy.require_nonce || client.require_nonce.unwrap_or(false),
            },
            may_introspect: client.may_introspect,
            user_grants,
        };
        if clients
            .insert(client.id.clone(), Arc::new(settings))
            .is_some()
        {
            problems.add(
                format!("{path}.id"),
                format!("duplicate client `{}`", client.id),
            );
        }
    }
    let mut secret_hashes = HashSet::new();
    for (i, client) in clients_file.iter().enumerate() {
        if let Some(h) = &client.secret_hash {
            if !secret_hashes.insert(h.as_str()) {
                problems.add(
                    format!("clients[{i}].secretHash"),
                    "the same secret is registered twice",
                );
            }
        }
    }

    clients
}

/// The client's authentication method and credential, or `None` after recording problems.
pub(super) fn validate_client_auth(
    client: &ClientFile,
    path: &str,
    client_ca: bool,
    problems: &mut Problems,
) -> Option<ClientAuth> {
    use crate::mtls::CertificateIdentity;
    let method = client
        .auth_method
        .as_deref()
        .unwrap_or("client_secret_basic");
    let has_tls_fields = client.tls_client_auth_san_uri.is_some()
        || client.tls_client_auth_subject_dn.is_some()
        || !client.certificate_thumbprints.is_empty();
    match method {
        "none" => {
            if client.secret_hash.is_some() || has_tls_fields {
                problems.add(
                    format!("{path}.authMethod"),
                    "a public client (none) has no secret and no certificate",
                );
            }
            // RFC 9449 §5: a public client's tokens are always DPoP-bound.
            if !client.dpop_bound_access_tokens {
                problems.add(
                    format!("{path}.dpopBoundAccessTokens"),
                    "a public client (authMethod: none) must set dpopBoundAccessTokens: true",
                );
            }
            Some(ClientAuth::None)
        }
        "client_secret_basic" | "client_secret_post" => {
            if has_tls_fields {
                problems.add(format!("{path}.authMethod"), "certificate fields need authMethod tls_client_auth or self_signed_tls_client_auth");
            }
            match client
                .secret_hash
                .as_deref()
                .map(crate::secret::SecretHash::parse)
            {
                Some(Ok(hash)) => Some(ClientAuth::Secret(hash)),
                Some(Err(e)) => {
                    problems.add(format!("{path}.secretHash"), e.to_string());
                    None
                }
                None => {
                    problems.add(
                        format!("{path}.secretHash"),
                        "a client needs a credential (sealkit secret generate)",
                    );
                    None
                }
            }
        }
        "tls_client_auth" | "self_signed_tls_client_auth" => {
            if client.secret_hash.is_some() {
                problems.add(
                    format!("{path}.secretHash"),
                    format!("{method} clients authenticate with their certificate, not a secret"),
                );
            }
            if !client_ca {
                problems.add(
                    format!("{path}.authMethod"),
                    format!("{method} needs client certificates: set tls.clientCa"),
                );
            }
            if method == "tls_client_auth" {
                let (uri, dn) = (
                    &client.tls_client_auth_san_uri,
                    &client.tls_client_auth_subject_dn,
                );
                if uri.is_some() == dn.is_some() {
                    problems.add(format!("{path}.authMethod"), "tls_client_auth needs exactly one of tlsClientAuthSanUri, tlsClientAuthSubjectDn");
                    return None;
                }
                let subject_dn = match dn.as_deref().map(crate::dn::DistinguishedName::parse) {
                    Some(Ok(name)) => Some(name),
                    Some(Err(e)) => {
                        problems.add(
                            format!("{path}.tlsClientAuthSubjectDn"),
                            format!("not an RFC 4514 name: {e}"),
                        );
                        return None;
                    }
                    None => None,
                };
                Some(ClientAuth::Certificate(CertificateIdentity::Pki {
                    san_uri: uri.clone(),
                    subject_dn,
                }))
            } else {
                let valid = |t: &String| {
                    t.len() == 43
                        && base64::Engine::decode(
                            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                            t,
                        )
                        .is_ok()
                };
                if client.certificate_thumbprints.is_empty()
                    || !client.certificate_thumbprints.iter().all(valid)
                {
                    problems.add(format!("{path}.certificateThumbprints"), "list the x5t#S256 (43 base64url characters) of each registered certificate");
                    return None;
                }
                Some(ClientAuth::Certificate(CertificateIdentity::SelfSigned {
                    thumbprints: client.certificate_thumbprints.clone(),
                }))
            }
        }
        other => {
            problems.add(format!("{path}.authMethod"), format!("unknown method `{other}` (client_secret_basic, client_secret_post, tls_client_auth, self_signed_tls_client_auth, none)"));
            None
        }
    }
}
