//! The guard's decision for one resource request, with no HTTP types in it: which route,
//! is the access token valid for it (RFC 9068), is it presented by its sender — a DPoP
//! proof admitted by the core's gate with `ath`, the request's own method and URL and the
//! token's `cnf.jkt` (RFC 9449 §7), or the certificate the token is bound to (RFC 8705 §3)
//! — and does it carry the route's scopes. The answer is the identity to forward, or a
//! [`Refusal`] that `guard::respond` turns into RFC 6750 §3 / RFC 9449 §7.1 errors.

use super::config::{Constraint, GuardSettings, Route};
use super::keys::{AccessTokenKeys, TokenRejection};
use super::metrics::GuardMetrics;
use crate::core::certificate::{check_binding, RequestCertificate};
use crate::core::gate::{Gate, GateError, Presenter, ProofCheck};
use crate::dpop::EndpointUrl;
use crate::telemetry::metrics::ReasonLabel;
use std::net::SocketAddr;

/// What the guard forwards about the caller (plain-text `X-Sealkit-*` headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub client: String,
    pub tenant: String,
    pub scope: String,
    /// `DPoP` or `Bearer`.
    pub token_type: &'static str,
    /// The bound thumbprint(s): `jkt=…`, `x5t#S256=…`, comma-separated; empty if unbound.
    pub cnf: String,
}

/// Why a request is refused; `reason` labels the metric and the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No route covers this path and method.
    NoRoute,
    /// 401 with a challenge but no error code (RFC 6750 §3.1: no credentials at all).
    NoToken,
    /// 400 `invalid_request` (e.g. two `DPoP` headers).
    InvalidRequest {
        reason: &'static str,
        description: &'static str,
    },
    /// 401 `invalid_token`.
    InvalidToken {
        reason: &'static str,
        description: &'static str,
    },
    /// 401 `invalid_dpop_proof`.
    InvalidDpopProof {
        reason: &'static str,
        description: String,
    },
    /// 401 `use_dpop_nonce` + `DPoP-Nonce`.
    UseDpopNonce { nonce: String },
    /// 403 `insufficient_scope`.
    InsufficientScope { scope: String },
    /// 503: the store or the authority (introspection) cannot answer; fail closed.
    Unavailable { reason: &'static str },
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoRoute => "no-route",
            Self::NoToken => "no-token",
            Self::InvalidRequest { reason, .. }
            | Self::InvalidToken { reason, .. }
            | Self::InvalidDpopProof { reason, .. }
            | Self::Unavailable { reason } => reason,
            Self::UseDpopNonce { .. } => "nonce",
            Self::InsufficientScope { .. } => "insufficient-scope",
        }
    }
}

/// A resource request as the guard received it.
pub struct ResourceRequest<'a> {
    pub method: &'a http::Method,
    /// The path as sent (no query).
    pub path: &'a str,
    pub authorization: Option<&'a [u8]>,
    pub proof_headers: &'a [&'a [u8]],
    pub certificate: &'a RequestCertificate,
    pub peer: SocketAddr,
    pub now: i64,
}

/// The route for a path and method: the longest prefix that covers the method.
pub fn route_for<'a>(routes: &'a [Route], method: &http::Method, path: &str) -> Option<&'a Route> {
    routes
        .iter()
        .filter(|r| path.starts_with(&r.prefix))
        .filter(|r| r.methods.is_empty() || r.methods.contains(method))
        .max_by_key(|r| r.prefix.len())
}

fn invalid_token(reason: &'static str, description: &'static str) -> Refusal {
    Refusal::InvalidToken {
        reason,
        description,
    }
}

/// Everything a decision needs.
pub struct Enforcer<'a> {
    pub settings: &'a GuardSettings,
    pub keys: &'a AccessTokenKeys,
    pub gate: &'a Gate,
    pub metrics: &'a GuardMetrics,
    pub introspection: Option<&'a super::introspect::Introspector>,
}

impl Enforcer<'_> {
    /// Decides; on success returns the identity to forward.
    pub async fn decide(&self, request: &ResourceRequest<'_>) -> Result<Identity, Refusal> {
        let settings = self.settings;
        let route =
            route_for(&settings.routes, request.method, request.path).ok_or(Refusal::NoRoute)?;

        // The credentials: `Authorization: DPoP <token>` or `Bearer <token>`.
        let authorization = request.authorization.ok_or(Refusal::NoToken)?;
        let authorization = std::str::from_utf8(authorization).map_err(|_| {
            invalid_token("malformed-authorization", "malformed Authorization header")
        })?;
        let (scheme, token) = authorization.split_once(' ').ok_or_else(|| {
            invalid_token("malformed-authorization", "malformed Authorization header")
        })?;
        let token = token.trim();
        let dpop_scheme = if scheme.eq_ignore_ascii_case("dpop") {
            true
        } else if scheme.eq_ignore_ascii_case("bearer") {
            false
        } else {
            return Err(invalid_token(
                "unknown-scheme",
                "use the DPoP or Bearer scheme",
            ));
        };
        // §4.3 (1): one proof header; two are a malformed request.
        if request.proof_headers.len() > 1 {
            return Err(Refusal::InvalidRequest {
                reason: "several-proofs",
                description: "exactly one DPoP header is allowed",
            });
        }

        // The token itself (RFC 9068 §4): signature, typ, iss, exp/nbf, then the audience.
        let skew = settings.token_clock_skew.as_secs() as i64;
        let verified = self
            .keys
            .verify(token, &settings.issuer, request.now, skew)
            .await
            .map_err(|rejection| match rejection {
                TokenRejection::NoKeys => Refusal::Unavailable { reason: "no-keys" },
                other => invalid_token(other.reason(), "the access token is not valid"),
            })?;
        let claims = &verified.claims;
        if !claims.aud.contains(&route.audience) {
            return Err(invalid_token(
                "audience",
                "the access token is not for this resource",
            ));
        }
        let cnf = claims.cnf.clone().unwrap_or_default();

        // Which constraint the token carries, and whether this route accepts it.
        let accepts = |c: Constraint| route.accept.contains(&c);
        match (&cnf.jkt, &cnf.x5t_s256) {
            (Some(_), _) if !dpop_scheme => {
                // RFC 9449 §7.2: a DPoP-bound token presented as Bearer is refused.
                return Err(invalid_token(
                    "dpop-token-as-bearer",
                    "a DPoP-bound token must be presented with the DPoP scheme",
                ));
            }
            (None, _) if dpop_scheme => {
                return Err(invalid_token(
                    "not-dpop-bound",
                    "the token is not DPoP-bound; present it with the Bearer scheme",
                ))
            }
            (Some(_), Some(_)) if !accepts(Constraint::Dpop) && !accepts(Constraint::Mtls) => {
                return Err(invalid_token(
                    "constraint-not-accepted",
                    "this resource does not accept sender-constrained tokens",
                ))
            }
            (Some(_), None) if !accepts(Constraint::Dpop) => {
                return Err(invalid_token(
                    "constraint-not-accepted",
                    "this resource does not accept DPoP-bound tokens",
                ))
            }
            (None, Some(_)) if !accepts(Constraint::Mtls) => {
                return Err(invalid_token(
                    "constraint-not-accepted",
                    "this resource does not accept certificate-bound tokens",
                ))
            }
            (None, None) if !accepts(Constraint::Bearer) => {
                return Err(invalid_token(
                    "unbound-token",
                    "this resource needs a sender-constrained token (DPoP or certificate-bound)",
                ))
            }
            _ => {}
        }

        // RFC 8705 §3: a certificate-bound token only over its certificate.
        if let Some(bound) = &cnf.x5t_s256 {
            if let Err(mismatch) = check_binding(bound, request.certificate) {
                self.metrics
                    .mtls_mismatch
                    .get_or_create(&ReasonLabel {
                        reason: mismatch.reason(),
                    })
                    .inc();
                return Err(invalid_token(mismatch.reason(), mismatch.description()));
            }
        }

        // RFC 9449 §7: the proof, through the core's gate (htu is this request's URL).
        if let Some(jkt) = &cnf.jkt {
            let target = EndpointUrl::parse(&format!("{}{}", settings.external_url, request.path))
                .ok_or(Refusal::InvalidRequest {
                    reason: "bad-path",
                    description: "the request path is not a valid URL path",
                })?;
            let check = ProofCheck {
                proof_headers: request.proof_headers,
                method: request.method.as_str(),
                target: &target,
                access_token: Some(token),
                bound_jkt: Some(jkt),
                nonce_required: route.require_nonce,
                now: request.now,
            };
            let presenter = Presenter {
                tenant: &claims.tenant,
                client: &claims.client_id,
                peer: request.peer,
                endpoint: "resource",
            };
            if let Err(e) = self.gate.admit(&settings.dpop, &check, &presenter).await {
                return Err(match e {
                    GateError::Invalid(e) => Refusal::InvalidDpopProof {
                        reason: "invalid-proof",
                        description: e.to_string(),
                    },
                    GateError::KeyMismatch => Refusal::InvalidDpopProof {
                        reason: "proof-key-mismatch",
                        description:
                            "the DPoP proof is signed by another key than the token is bound to"
                                .into(),
                    },
                    GateError::Replayed => Refusal::InvalidDpopProof {
                        reason: "replay",
                        description: "this DPoP proof was already used".into(),
                    },
                    GateError::UseNonce { nonce, .. } => Refusal::UseDpopNonce { nonce },
                    GateError::Store(e) => {
                        self.metrics.store_errors.inc();
                        tracing::error!(event = super::events::STORE_ERROR, error = %e, "refusing the request: the store cannot answer");
                        Refusal::Unavailable { reason: "store" }
                    }
                });
            }
        }

        // Authorization only once the sender is proven: a stolen token without its key
        // learns nothing about its scopes or its revocation.
        let granted: Vec<&str> = claims.scope.split(' ').filter(|s| !s.is_empty()).collect();
        if route.scopes.iter().any(|s| !granted.contains(&s.as_str())) {
            return Err(Refusal::InsufficientScope {
                scope: route.scopes.join(" "),
            });
        }

        // Revocation-sensitive routes ask the authority (fail closed).
        if route.introspect {
            let introspector = self.introspection.ok_or(Refusal::Unavailable {
                reason: "introspection",
            })?;
            match introspector.is_active(token, request.now).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(invalid_token(
                        "inactive",
                        "the access token is no longer active",
                    ))
                }
                Err(e) => {
                    tracing::error!(event = super::events::INTROSPECTION, error = %e, "introspection failed; refusing (fail closed)");
                    return Err(Refusal::Unavailable {
                        reason: "introspection",
                    });
                }
            }
        }

        let mut bound = Vec::new();
        if let Some(jkt) = &cnf.jkt {
            bound.push(format!("jkt={jkt}"));
        }
        if let Some(x5t) = &cnf.x5t_s256 {
            bound.push(format!("x5t#S256={x5t}"));
        }
        Ok(Identity {
            client: claims.client_id.clone(),
            tenant: claims.tenant.clone(),
            scope: claims.scope.clone(),
            token_type: if cnf.jkt.is_some() { "DPoP" } else { "Bearer" },
            cnf: bound.join(","),
        })
    }
}
