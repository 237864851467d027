//! The crypto floor: what one token costs at the very least, measured in the same run as
//! the load: one ES256 verification (the DPoP proof) plus one ES256 signature (the access
//! token), with josekit, the library the server uses, on one thread.
//!
//! The verifier is built once, as the server's key cache holds it; the signer is built once,
//! as the server's signing key is. Inputs have the size of a real proof and a real token.

use super::BenchError;
use crate::client::ProofKey;
use josekit::jws::{JwsSigner, JwsVerifier};
use serde::Serialize;
use std::time::Instant;

/// Per-operation cost, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CryptoFloor {
    pub iterations: u32,
    pub es256_verify_us: f64,
    pub es256_sign_us: f64,
    /// How the time was taken: `thread CPU time` or `wall time`.
    pub clock: &'static str,
}

impl CryptoFloor {
    /// One verify plus one sign: the floor of a DPoP token.
    pub fn dpop_token_us(&self) -> f64 {
        self.es256_verify_us + self.es256_sign_us
    }

    /// The mean of a measurement before the run and one after it. On a shared machine the
    /// speed of the CPU itself drifts by tens of percent from minute to minute; the mean of
    /// the two brackets the run better than either (the lower one would flatter the floor
    /// and make the ratio look worse than it is).
    pub fn mean(self, other: CryptoFloor) -> CryptoFloor {
        CryptoFloor {
            iterations: self.iterations + other.iterations,
            es256_verify_us: (self.es256_verify_us + other.es256_verify_us) / 2.0,
            es256_sign_us: (self.es256_sign_us + other.es256_sign_us) / 2.0,
            clock: self.clock,
        }
    }
}

fn crypto(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(format!("crypto floor: {e}"))
}

/// Measures `iterations` verifications and `iterations` signatures.
pub fn measure(iterations: u32) -> Result<CryptoFloor, BenchError> {
    let iterations = iterations.max(1);
    // A real proof, verified the way the server does (signing input, raw r||s signature).
    let key = ProofKey::es256().map_err(crypto)?;
    let proof = key
        .proof("POST", "https://127.0.0.1:8443/token", None, None)
        .map_err(crypto)?;
    let (input, signature_b64) = proof
        .rsplit_once('.')
        .ok_or_else(|| crypto("proof without signature"))?;
    let signature = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(crypto)?
    };
    let public = josekit::jwk::Jwk::from_map(
        key.public_jwk()
            .as_object()
            .cloned()
            .ok_or_else(|| crypto("public JWK is not an object"))?,
    )
    .map_err(crypto)?;
    let verifier = josekit::jws::ES256
        .verifier_from_jwk(&public)
        .map_err(crypto)?;

    // A token-sized signing input under a PEM key, as `token::SigningKey` has it.
    let pem = josekit::jws::ES256
        .generate_key_pair()
        .map_err(crypto)?
        .to_pem_private_key();
    let signer = josekit::jws::ES256.signer_from_pem(&pem).map_err(crypto)?;
    let token_input = "e".repeat(520);

    // Warm up both (page in code, fill caches) before timing.
    for _ in 0..iterations.min(100) {
        verifier
            .verify(input.as_bytes(), &signature)
            .map_err(crypto)?;
        signer.sign(token_input.as_bytes()).map_err(crypto)?;
    }
    let clock = ThreadClock::new();
    let started = clock.now();
    for _ in 0..iterations {
        verifier
            .verify(input.as_bytes(), &signature)
            .map_err(crypto)?;
    }
    let verify = clock.now() - started;
    let started = clock.now();
    for _ in 0..iterations {
        std::hint::black_box(signer.sign(token_input.as_bytes()).map_err(crypto)?);
    }
    let sign = clock.now() - started;
    Ok(CryptoFloor {
        iterations,
        es256_verify_us: verify * 1e6 / f64::from(iterations),
        es256_sign_us: sign * 1e6 / f64::from(iterations),
        clock: clock.name(),
    })
}

/// The measuring thread's own CPU time (`/proc/thread-self/schedstat`, nanoseconds on a
/// CPU), so the floor is CPU time like the server's figure and other processes on a busy
/// machine do not inflate it; wall time where that file is missing.
struct ThreadClock {
    wall: Instant,
    cpu: bool,
}

impl ThreadClock {
    fn new() -> ThreadClock {
        ThreadClock {
            wall: Instant::now(),
            cpu: thread_cpu_ns().is_some(),
        }
    }

    /// Seconds.
    fn now(&self) -> f64 {
        match self.cpu.then(thread_cpu_ns).flatten() {
            Some(ns) => ns as f64 / 1e9,
            None => self.wall.elapsed().as_secs_f64(),
        }
    }

    fn name(&self) -> &'static str {
        if self.cpu {
            "thread CPU time"
        } else {
            "wall time"
        }
    }
}

fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
