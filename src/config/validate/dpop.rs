//! `security.senderConstraints.dpop`: algorithms, proof lifetime, skew, replay window,
//! nonces, bypass drills.

use crate::config::duration::HumanDuration;
use crate::config::schema::{BypassFile, DpopFile, StorageKind};
use crate::config::settings::{BypassWindow, DpopSettings};
use crate::config::{Problems, MAX_BYPASS, MAX_REPLAY_WINDOW};
use crate::dpop::ProofAlgorithm;
use std::time::Duration;

pub(super) fn validate_dpop(
    file: &DpopFile,
    storage: StorageKind,
    now: i64,
    problems: &mut Problems,
) -> DpopSettings {
    const P: &str = "security.senderConstraints.dpop";
    let mut allowed = Vec::new();
    for (i, name) in file.allowed_algorithms.iter().enumerate() {
        match ProofAlgorithm::parse(name) {
            Some(alg) if !allowed.contains(&alg) => allowed.push(alg),
            Some(_) => problems.add(format!("{P}.allowedAlgorithms[{i}]"), format!("`{name}` listed twice")),
            None if name.eq_ignore_ascii_case("none") || name.to_ascii_uppercase().starts_with("HS") => {
                problems.add(
                    format!("{P}.allowedAlgorithms[{i}]"),
                    format!("`{name}` can never be allowed: DPoP proofs need an asymmetric signature (RFC 9449 §4.2)"),
                )
            }
            None => problems.add(
                format!("{P}.allowedAlgorithms[{i}]"),
                format!("unknown algorithm `{name}` (ES256, ES384, EdDSA, PS256, RS256)"),
            ),
        }
    }
    if file.enabled && allowed.is_empty() {
        problems.add(
            format!("{P}.allowedAlgorithms"),
            "must list at least one algorithm",
        );
    }
    let lifetime = file.proof_lifetime.0;
    let skew = file.allowed_clock_skew.0;
    if lifetime < Duration::from_secs(1) || lifetime > Duration::from_secs(600) {
        problems.add(format!("{P}.proofLifetime"), "must be between 1s and 10m");
    }
    if skew > Duration::from_secs(300) {
        problems.add(format!("{P}.allowedClockSkew"), "must be at most 5m");
    }
    // A proof dated `skew` in the future stays acceptable until iat + lifetime + skew, so
    // the jti must be remembered at least that long after it was first seen.
    let minimum_window = lifetime + skew * 2;
    if file.replay_window.0 > MAX_REPLAY_WINDOW {
        problems.add(
            format!("{P}.replayWindow"),
            format!("must be at most {}", HumanDuration(MAX_REPLAY_WINDOW)),
        );
    }
    if file.replay_window.0 < minimum_window {
        problems.add(
            format!("{P}.replayWindow"),
            format!(
                "must be ≥ proofLifetime + 2 × allowedClockSkew ({}), or a replay could outlive its record",
                HumanDuration(minimum_window)
            ),
        );
    }
    let nonce_ttl = file.nonce.ttl.0;
    if nonce_ttl < Duration::from_secs(10) || nonce_ttl > Duration::from_secs(86_400) {
        problems.add(format!("{P}.nonce.ttl"), "must be between 10s and 24h");
    }
    if let Some(store) = file.nonce.store {
        if store != storage {
            problems.add(
                format!("{P}.nonce.store"),
                "nonces must live in the authority's storage (storage.kind)",
            );
        }
    }
    let bypass_allowed = !matches!(
        file.allow_temporary_bypass,
        BypassFile::Absent | BypassFile::Flag(false)
    );
    let bypass = match &file.allow_temporary_bypass {
        // `true` allows `sealkit drill bypass` windows (each at most MAX_BYPASS); only a
        // window written in the file starts one by itself.
        BypassFile::Absent | BypassFile::Flag(_) => None,
        BypassFile::Window(window) => {
            match time::OffsetDateTime::parse(
                &window.until,
                &time::format_description::well_known::Rfc3339,
            ) {
                Ok(until) => {
                    let until = until.unix_timestamp();
                    if window.reason.trim().is_empty() {
                        problems.add(
                            format!("{P}.allowTemporaryBypass.reason"),
                            "say why the bypass is on",
                        );
                    }
                    if until > now + MAX_BYPASS.as_secs() as i64 {
                        problems.add(
                            format!("{P}.allowTemporaryBypass.until"),
                            format!(
                                "a bypass may last at most {} from now",
                                HumanDuration(MAX_BYPASS)
                            ),
                        );
                    }
                    Some(BypassWindow {
                        until,
                        reason: window.reason.clone(),
                    })
                }
                Err(_) => {
                    problems.add(
                        format!("{P}.allowTemporaryBypass.until"),
                        "must be an RFC 3339 time, e.g. 2026-11-28T15:00:00Z",
                    );
                    None
                }
            }
        }
    };
    DpopSettings {
        enabled: file.enabled,
        algs_header: allowed
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(" "),
        allowed_algorithms: allowed,
        proof_lifetime: lifetime,
        clock_skew: skew,
        replay_window: file.replay_window.0,
        nonce_required: file.nonce.required,
        nonce_ttl,
        bypass_allowed,
        bypass,
    }
}
