//! The crypto floor: what one token costs at the very least, measured in the same run as
//! the load: one ES256 verification (the DPoP proof) plus one ES256 signature (the access
//! token), on one thread, three ways:
//! - **josekit**: through the JOSE library, a fresh OpenSSL context per call;
//! - **bare**: the server's own ES256 (`crate::es256`, ring) on keys prepared once: the
//!   cryptography the server runs and nothing else, so the honest floor to compare the
//!   server against;
//! - **OpenSSL bare**: SHA-256 plus `ECDSA_do_verify`/`ECDSA_do_sign` on OpenSSL keys
//!   prepared once, what `openssl speed ecdsap256` measures plus the hash. Issue 19 named
//!   this one "the bare floor"; the server ran exactly this until it moved to ring, which
//!   is cheaper, so it is kept for comparison with earlier rounds.
//!
//! Keys are built once, as the server's key cache and signing key hold them. Inputs have
//! the size of a real proof and a real token.

use super::BenchError;
use crate::client::ProofKey;
use josekit::jws::{JwsSigner, JwsVerifier};
use serde::Serialize;

/// Per-operation cost, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CryptoFloor {
    pub iterations: u32,
    /// Through josekit.
    pub es256_verify_us: f64,
    pub es256_sign_us: f64,
    /// Bare: the server's own ES256 (ring) on prepared keys.
    pub bare_verify_us: f64,
    pub bare_sign_us: f64,
    /// OpenSSL bare: SHA-256 + `ECDSA_do_verify`/`ECDSA_do_sign` on prepared keys.
    pub openssl_verify_us: f64,
    pub openssl_sign_us: f64,
    /// How the time was taken: `thread CPU time` or `wall time`.
    pub clock: &'static str,
}

impl CryptoFloor {
    /// One verify plus one sign: the floor of a DPoP token.
    pub fn dpop_token_us(&self) -> f64 {
        self.es256_verify_us + self.es256_sign_us
    }

    /// The same, bare.
    pub fn bare_dpop_token_us(&self) -> f64 {
        self.bare_verify_us + self.bare_sign_us
    }

    /// The same, OpenSSL bare.
    pub fn openssl_dpop_token_us(&self) -> f64 {
        self.openssl_verify_us + self.openssl_sign_us
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
            bare_verify_us: (self.bare_verify_us + other.bare_verify_us) / 2.0,
            bare_sign_us: (self.bare_sign_us + other.bare_sign_us) / 2.0,
            openssl_verify_us: (self.openssl_verify_us + other.openssl_verify_us) / 2.0,
            openssl_sign_us: (self.openssl_sign_us + other.openssl_sign_us) / 2.0,
            clock: self.clock,
        }
    }
}

fn crypto(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(format!("crypto floor: {e}"))
}

/// The operations the floor times, built once: a verifier for a real proof (as the
/// server's key cache holds it) and a signer for a token-sized input (as the server's
/// signing key is).
struct Probe {
    verifier: josekit::jws::alg::ecdsa::EcdsaJwsVerifier,
    signer: josekit::jws::alg::ecdsa::EcdsaJwsSigner,
    proof_input: String,
    signature: Vec<u8>,
    token_input: String,
    bare_public: crate::es256::Es256PublicKey,
    bare_private: crate::es256::Es256PrivateKey,
    openssl: OpensslBare,
}

/// ES256 straight on OpenSSL's ECDSA with keys prepared once (see the module doc).
struct OpensslBare {
    public: openssl::ec::EcKey<openssl::pkey::Public>,
    private: openssl::ec::EcKey<openssl::pkey::Private>,
}

impl OpensslBare {
    fn new(x: &[u8], y: &[u8], private_pem: &[u8]) -> Result<OpensslBare, BenchError> {
        use openssl::bn::BigNum;
        use openssl::ec::{EcGroup, EcKey};
        let group =
            EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).map_err(crypto)?;
        let x: BigNum = BigNum::from_slice(x).map_err(crypto)?;
        let y: BigNum = BigNum::from_slice(y).map_err(crypto)?;
        let public = EcKey::from_public_key_affine_coordinates(&group, &x, &y).map_err(crypto)?;
        let private = openssl::pkey::PKey::private_key_from_pem(private_pem)
            .and_then(|k| k.ec_key())
            .map_err(crypto)?;
        Ok(OpensslBare { public, private })
    }

    /// The JWS `r || s` signature taken apart, as the server did before ring.
    fn verify(&self, input: &[u8], signature: &[u8]) -> Result<bool, BenchError> {
        use openssl::bn::BigNum;
        if signature.len() != 64 {
            return Ok(false);
        }
        let digest = openssl::sha::sha256(input);
        let (r, s) = signature.split_at(32);
        let signature = openssl::ecdsa::EcdsaSig::from_private_components(
            BigNum::from_slice(r).map_err(crypto)?,
            BigNum::from_slice(s).map_err(crypto)?,
        )
        .map_err(crypto)?;
        signature.verify(&digest, &self.public).map_err(crypto)
    }

    /// The signature put together in the JWS form.
    fn sign(&self, input: &[u8]) -> Result<[u8; 64], BenchError> {
        let digest = openssl::sha::sha256(input);
        let signature = openssl::ecdsa::EcdsaSig::sign(&digest, &self.private).map_err(crypto)?;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&signature.r().to_vec_padded(32).map_err(crypto)?);
        out[32..].copy_from_slice(&signature.s().to_vec_padded(32).map_err(crypto)?);
        Ok(out)
    }
}

impl Probe {
    fn new() -> Result<Probe, BenchError> {
        // A real proof, verified the way the server does (signing input, raw r||s).
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
        let pem = josekit::jws::ES256
            .generate_key_pair()
            .map_err(crypto)?
            .to_pem_private_key();
        let coordinate = |name: &str| {
            use base64::Engine;
            key.public_jwk()[name]
                .as_str()
                .and_then(|v| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(v)
                        .ok()
                })
                .ok_or_else(|| crypto("public JWK without coordinates"))
        };
        let (x, y) = (coordinate("x")?, coordinate("y")?);
        let bare_public = crate::es256::Es256PublicKey::from_coordinates(&x, &y).map_err(crypto)?;
        let bare_private = crate::es256::Es256PrivateKey::from_pem(&pem).map_err(crypto)?;
        Ok(Probe {
            bare_public,
            bare_private,
            openssl: OpensslBare::new(&x, &y, &pem)?,
            verifier: josekit::jws::ES256
                .verifier_from_jwk(&public)
                .map_err(crypto)?,
            signer: josekit::jws::ES256.signer_from_pem(&pem).map_err(crypto)?,
            proof_input: input.to_string(),
            signature,
            token_input: "e".repeat(520),
        })
    }

    fn verify(&self) -> Result<(), BenchError> {
        self.verifier
            .verify(self.proof_input.as_bytes(), &self.signature)
            .map_err(crypto)
    }

    fn sign(&self) -> Result<(), BenchError> {
        std::hint::black_box(
            self.signer
                .sign(self.token_input.as_bytes())
                .map_err(crypto)?,
        );
        Ok(())
    }

    fn bare_verify(&self) -> Result<(), BenchError> {
        if self
            .bare_public
            .verify(self.proof_input.as_bytes(), &self.signature)
        {
            Ok(())
        } else {
            Err(crypto("the bare verifier refused a valid proof"))
        }
    }

    fn bare_sign(&self) -> Result<(), BenchError> {
        std::hint::black_box(
            self.bare_private
                .sign(self.token_input.as_bytes())
                .map_err(crypto)?,
        );
        Ok(())
    }

    fn openssl_verify(&self) -> Result<(), BenchError> {
        if self
            .openssl
            .verify(self.proof_input.as_bytes(), &self.signature)?
        {
            Ok(())
        } else {
            Err(crypto("the OpenSSL verifier refused a valid proof"))
        }
    }

    fn openssl_sign(&self) -> Result<(), BenchError> {
        std::hint::black_box(self.openssl.sign(self.token_input.as_bytes())?);
        Ok(())
    }

    /// Times `iterations` of each operation (after they ran once, so code is paged in).
    fn measure(&self, iterations: u32) -> Result<CryptoFloor, BenchError> {
        let iterations = iterations.max(1);
        self.verify()?;
        self.sign()?;
        self.bare_verify()?;
        self.bare_sign()?;
        self.openssl_verify()?;
        self.openssl_sign()?;
        // Microseconds of this thread's CPU per call of `operation`, over `iterations` calls.
        let per_call = |operation: fn(&Probe) -> Result<(), BenchError>| {
            let started = thread_cpu_seconds();
            for _ in 0..iterations {
                operation(self)?;
            }
            Ok::<f64, BenchError>((thread_cpu_seconds() - started) * 1e6 / f64::from(iterations))
        };
        Ok(CryptoFloor {
            iterations,
            es256_verify_us: per_call(Probe::verify)?,
            es256_sign_us: per_call(Probe::sign)?,
            bare_verify_us: per_call(Probe::bare_verify)?,
            bare_sign_us: per_call(Probe::bare_sign)?,
            openssl_verify_us: per_call(Probe::openssl_verify)?,
            openssl_sign_us: per_call(Probe::openssl_sign)?,
            clock: CLOCK_NAME,
        })
    }
}

/// Measures `iterations` verifications and `iterations` signatures.
pub fn measure(iterations: u32) -> Result<CryptoFloor, BenchError> {
    let probe = Probe::new()?;
    // Warm up (page in code, fill caches) before timing.
    for _ in 0..iterations.clamp(1, 100) {
        probe.verify()?;
        probe.sign()?;
    }
    probe.measure(iterations)
}

/// Samples the floor *while* the load runs, on its own thread: a few milliseconds of
/// crypto every half second. The CPU of a shared machine changes speed from minute to
/// minute by tens of percent; samples taken under the same conditions as the load are the
/// fair comparison, where a measurement before or after the run can be off by as much as
/// the effect being measured. The sampler's own CPU (a few percent of one core) is
/// reported so the load generator's figure can leave it out.
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Result<(Vec<CryptoFloor>, f64), BenchError>>,
}

/// Iterations of each operation per sample (about 10 ms of CPU).
const SAMPLE_ITERATIONS: u32 = 50;
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl Sampler {
    pub fn start() -> Result<Sampler, BenchError> {
        let probe = Probe::new()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("floor sampler".into())
            .spawn(move || {
                let mut samples = Vec::new();
                let started = thread_cpu_seconds();
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    samples.push(probe.measure(SAMPLE_ITERATIONS)?);
                    std::thread::park_timeout(SAMPLE_EVERY);
                }
                Ok((samples, thread_cpu_seconds() - started))
            })
            .map_err(crypto)?;
        Ok(Sampler { stop, thread })
    }

    /// Stops sampling: the median of the samples, their count, and the sampler's CPU
    /// seconds (`None` for the floor when no sample was taken).
    pub fn finish(self) -> Result<(Option<CryptoFloor>, usize, f64), BenchError> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.thread().unpark();
        let (samples, cpu_s) = self
            .thread
            .join()
            .map_err(|_| crypto("the floor sampler panicked"))??;
        Ok((median(&samples), samples.len(), cpu_s))
    }
}

/// Operation by operation, the median of the samples.
fn median(samples: &[CryptoFloor]) -> Option<CryptoFloor> {
    let first = samples.first()?;
    let middle = |pick: fn(&CryptoFloor) -> f64| {
        let mut values: Vec<f64> = samples.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        }
    };
    Some(CryptoFloor {
        iterations: samples.iter().map(|s| s.iterations).sum(),
        es256_verify_us: middle(|s| s.es256_verify_us),
        es256_sign_us: middle(|s| s.es256_sign_us),
        bare_verify_us: middle(|s| s.bare_verify_us),
        bare_sign_us: middle(|s| s.bare_sign_us),
        openssl_verify_us: middle(|s| s.openssl_verify_us),
        openssl_sign_us: middle(|s| s.openssl_sign_us),
        clock: first.clock,
    })
}

/// How the floor is timed (reported with it).
const CLOCK_NAME: &str = "thread CPU time";

/// The calling thread's own CPU time in seconds (`CLOCK_THREAD_CPUTIME_ID`), so the floor
/// is CPU time like the server's figure and other processes on a busy machine do not
/// inflate it. (`/proc/thread-self/schedstat` is only brought up to date at scheduler
/// ticks: over the few milliseconds of one sample it read anything from 0.4 µs to 3× the
/// truth per sign.)
fn thread_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(verify: f64, sign: f64) -> CryptoFloor {
        CryptoFloor {
            iterations: 10,
            es256_verify_us: verify,
            es256_sign_us: sign,
            bare_verify_us: verify / 2.0,
            bare_sign_us: sign / 2.0,
            openssl_verify_us: verify / 1.5,
            openssl_sign_us: sign / 1.5,
            clock: "thread CPU time",
        }
    }

    /// An outlier sample (a preempted or throttled slice) does not move the floor.
    #[test]
    fn the_floor_is_the_median_of_the_samples() {
        let odd = median(&[floor(100.0, 30.0), floor(400.0, 31.0), floor(101.0, 90.0)]).unwrap();
        assert_eq!((odd.es256_verify_us, odd.es256_sign_us), (101.0, 31.0));
        assert_eq!(odd.iterations, 30);
        let even = median(&[floor(100.0, 30.0), floor(102.0, 32.0)]).unwrap();
        assert_eq!((even.es256_verify_us, even.es256_sign_us), (101.0, 31.0));
        assert!(median(&[]).is_none());
    }

    /// Sampling alongside other work yields samples and accounts for its own CPU.
    #[test]
    fn the_sampler_measures_until_stopped() {
        let sampler = Sampler::start().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let (floor, samples, cpu_s) = sampler.finish().unwrap();
        assert!(samples >= 2, "{samples} samples in 1.2 s");
        let floor = floor.unwrap();
        assert!(floor.es256_verify_us > 1.0 && floor.es256_sign_us > 1.0);
        assert!(floor.bare_verify_us > 1.0 && floor.bare_sign_us > 1.0);
        assert!(floor.openssl_verify_us > 1.0 && floor.openssl_sign_us > 1.0);
        assert!(cpu_s > 0.0);
    }
}
