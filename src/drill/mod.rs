//! The drill runner: a real client (hyper + rustls, its own DPoP proofs) that executes the
//! rollout plan's verification matrix against a live authority and reports each scenario
//! as expected / observed / pass-fail-skip.
//!
//! It talks HTTP only, plus — when run on the authority's host — the log directory (to see
//! the audit entries) and the control socket (for the bypass drill). Nothing here prints;
//! `cli::drill` renders the [`report::Report`].

mod device;
pub mod report;

use crate::client::https::{basic_auth, Connection, Reply, TlsTarget};
use crate::client::ProofKey;
use crate::control::ControlRequest;
use report::Report;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A client id and secret.
#[derive(Clone)]
pub struct Credentials {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The certificate-bound client and a second, valid certificate that is not its own.
#[derive(Debug, Clone)]
pub struct MtlsClients {
    pub client_id: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub other_cert: PathBuf,
    pub other_key: PathBuf,
}

/// What to drill and with which credentials; absent parts skip their scenarios.
#[derive(Debug, Clone, Default)]
pub struct DrillPlan {
    /// The issuer URL (`https://host:port`).
    pub issuer: String,
    pub ca_file: PathBuf,
    /// A client of a tenant that requires DPoP (no nonces needed).
    pub dpop_client: Option<Credentials>,
    /// A client of a tenant that requires DPoP with server nonces.
    pub nonce_client: Option<Credentials>,
    /// A client allowed to introspect.
    pub introspect_client: Option<Credentials>,
    pub mtls: Option<MtlsClients>,
    /// On the authority's host: its log directory, to find the audit entries.
    pub log_dir: Option<PathBuf>,
    /// On the authority's host: its control socket, for the bypass drill.
    pub bypass_socket: Option<PathBuf>,
    /// A resource behind `sealkit guard` (`SEALKIT_RESOURCE_URL`): an https URL written as
    /// the guard compares `htu`. Absent: the resource rows are skipped.
    pub resource_url: Option<String>,
    /// The authority's `/metrics` (`SEALKIT_METRICS_URL`): its loopback listener
    /// (`http://127.0.0.1:9464/metrics`), reachable on its own host only, or the public one
    /// when `metrics.public` is on. Absent: the mismatch metric row is skipped.
    pub metrics_url: Option<String>,
    /// The guard's `/metrics` (`SEALKIT_GUARD_METRICS_URL`), for the mismatch metric row.
    pub guard_metrics_url: Option<String>,
    /// A public device-grant client and a user who may approve it (`SEALKIT_CLI_CLIENT_ID`,
    /// `SEALKIT_USER`, `SEALKIT_USER_PASSWORD`). Absent: the device-flow rows are skipped.
    pub device: Option<device::DeviceDrill>,
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Https(#[from] crate::client::https::HttpsError),
    #[error("cannot read {path}: {message}")]
    Env { path: String, message: String },
}

impl DrillPlan {
    /// Reads a plan from a `demo.env`-style file (`SEALKIT_*` variables).
    pub fn from_env_file(path: &Path) -> Result<DrillPlan, DrillError> {
        let text = std::fs::read_to_string(path).map_err(|e| DrillError::Env {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let vars: BTreeMap<String, String> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let get = |k: &str| vars.get(k).cloned();
        let credentials = |prefix: &str| {
            Some(Credentials {
                id: get(&format!("SEALKIT_{prefix}_CLIENT_ID"))?,
                secret: get(&format!("SEALKIT_{prefix}_CLIENT_SECRET"))?,
            })
        };
        let mtls = (|| {
            Some(MtlsClients {
                client_id: get("SEALKIT_MTLS_CLIENT_ID")?,
                cert: get("SEALKIT_MTLS_CERT")?.into(),
                key: get("SEALKIT_MTLS_KEY")?.into(),
                other_cert: get("SEALKIT_OTHER_CERT")?.into(),
                other_key: get("SEALKIT_OTHER_KEY")?.into(),
            })
        })();
        Ok(DrillPlan {
            issuer: get("SEALKIT_ISSUER").unwrap_or_default(),
            ca_file: get("SEALKIT_CA_FILE").unwrap_or_default().into(),
            dpop_client: credentials("DPOP"),
            nonce_client: credentials("NONCE"),
            introspect_client: credentials("INTROSPECT"),
            mtls,
            log_dir: get("SEALKIT_LOG_DIR").map(PathBuf::from),
            bypass_socket: None,
            resource_url: get("SEALKIT_RESOURCE_URL"),
            metrics_url: get("SEALKIT_METRICS_URL"),
            guard_metrics_url: get("SEALKIT_GUARD_METRICS_URL"),
            device: (|| {
                Some(device::DeviceDrill {
                    client_id: get("SEALKIT_CLI_CLIENT_ID")?,
                    user: get("SEALKIT_USER")?,
                    password: get("SEALKIT_USER_PASSWORD")?,
                })
            })(),
        })
    }
}

const FORM: [(&str, &str); 1] = [("grant_type", "client_credentials")];

fn summary(reply: &Reply) -> String {
    let body = reply.json();
    let error = body["error"]
        .as_str()
        .map(|e| format!(" {e}"))
        .unwrap_or_default();
    let nonce = if reply.header("dpop-nonce").is_some() {
        " +DPoP-Nonce"
    } else {
        ""
    };
    format!("{}{error}{nonce}", reply.status.as_u16())
}

fn jwt_claims(token: &str) -> Value {
    crate::client::oauth::unverified_claims(token)
}

fn certificate_thumbprint(path: &Path) -> Option<String> {
    let pem = std::fs::read(path).ok()?;
    let der = openssl::x509::X509::from_pem(&pem).ok()?.to_der().ok()?;
    Some(crate::mtls::thumbprint(&der))
}

/// Polls the log directory for a line holding every needle (the writer is asynchronous).
fn log_has(dir: &Path, needles: &[&str], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                if text.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
                    return true;
                }
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

struct Drill<'a> {
    plan: &'a DrillPlan,
    token_url: String,
    report: Report,
}

impl Drill<'_> {
    async fn token(
        &self,
        conn: &mut Connection,
        who: &Credentials,
        proof: Option<&str>,
    ) -> Result<Reply, DrillError> {
        let auth = basic_auth(&who.id, &who.secret);
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(p) = proof {
            headers.push(("dpop", p));
        }
        Ok(conn.post_form("/token", &FORM, &headers).await?)
    }
}

/// Runs every scenario the plan has credentials for. Transport failures become failed rows,
/// so a broken authority fails the drill instead of aborting it.
pub async fn run(plan: &DrillPlan) -> Report {
    let mut drill = Drill {
        plan,
        token_url: format!("{}/token", plan.issuer.trim_end_matches('/')),
        report: Report {
            target: plan.issuer.clone(),
            rows: Vec::new(),
        },
    };
    let target = match TlsTarget::new(&plan.issuer, &plan.ca_file, None) {
        Ok(t) => t,
        Err(e) => {
            drill.report.push(
                "connect",
                "TLS connection to the authority",
                e.to_string(),
                false,
            );
            return drill.report;
        }
    };
    if let Err(e) = dpop_scenarios(&mut drill, &target).await {
        drill.report.push(
            "dpop scenarios",
            "completed",
            format!("aborted: {e}"),
            false,
        );
    }
    if let Err(e) = mtls_scenarios(&mut drill).await {
        drill.report.push(
            "mtls scenarios",
            "completed",
            format!("aborted: {e}"),
            false,
        );
    }
    if let Err(e) = resource_scenarios(&mut drill, &target).await {
        drill.report.push(
            "resource scenarios",
            "completed",
            format!("aborted: {e}"),
            false,
        );
    }
    if let Err(e) = device::scenarios(&mut drill, &target).await {
        drill
            .report
            .push("device flow", "completed", format!("aborted: {e}"), false);
    }
    if let Err(e) = bypass_scenarios(&mut drill, &target).await {
        drill
            .report
            .push("bypass drill", "completed", format!("aborted: {e}"), false);
    }
    drill.report
}

async fn dpop_scenarios(drill: &mut Drill<'_>, target: &TlsTarget) -> Result<(), DrillError> {
    let mut conn = target.connect().await?;
    let key = ProofKey::es256().map_err(|e| DrillError::Env {
        path: "proof key".into(),
        message: e.to_string(),
    })?;
    let proof = |nonce: Option<&str>| {
        key.proof("POST", &drill.token_url, nonce, None)
            .unwrap_or_default()
    };

    const NO_PROOF: &str = "DPoP required without proof";
    match drill.plan.dpop_client.clone() {
        Some(client) => {
            let reply = drill.token(&mut conn, &client, None).await?;
            let pass = reply.status == 400
                && reply.json()["error"] == "use_dpop_nonce"
                && reply.header("dpop-nonce").is_some();
            drill.report.push(
                NO_PROOF,
                "400 use_dpop_nonce +DPoP-Nonce",
                summary(&reply),
                pass,
            );
        }
        None => drill.report.skip(
            NO_PROOF,
            "400 use_dpop_nonce +DPoP-Nonce",
            "no DPoP client given",
        ),
    }

    // Nonce round trip → token with cnf.jkt; introspection shows it.
    const ROUND_TRIP: &str = "nonce round trip";
    let mut nonce_token = None;
    match drill.plan.nonce_client.clone() {
        Some(client) => {
            let first = drill.token(&mut conn, &client, Some(&proof(None))).await?;
            let nonce = first.header("dpop-nonce").map(str::to_string);
            let challenged =
                first.status == 400 && first.json()["error"] == "use_dpop_nonce" && nonce.is_some();
            let second = drill
                .token(&mut conn, &client, Some(&proof(nonce.as_deref())))
                .await?;
            let body = second.json();
            let token = body["access_token"].as_str().unwrap_or("").to_string();
            let jkt = jwt_claims(&token)["cnf"]["jkt"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let pass = challenged
                && second.status == 200
                && body["token_type"] == "DPoP"
                && jkt == key.thumbprint();
            drill.report.push(
                ROUND_TRIP,
                "400 use_dpop_nonce, then 200 DPoP with cnf.jkt",
                format!(
                    "{}, then {} {} cnf.jkt {}",
                    summary(&first),
                    summary(&second),
                    body["token_type"],
                    if jkt == key.thumbprint() {
                        "matches"
                    } else {
                        "MISSING/WRONG"
                    }
                ),
                pass,
            );
            if pass {
                nonce_token = Some(token);
            }
        }
        None => drill
            .report
            .skip(ROUND_TRIP, "token with cnf.jkt", "no nonce client given"),
    }
    const INTROSPECTION: &str = "introspection shows cnf.jkt";
    match (&drill.plan.introspect_client, &nonce_token) {
        (Some(resource), Some(token)) => {
            let auth = basic_auth(&resource.id, &resource.secret);
            let reply = conn
                .post_form(
                    "/introspect",
                    &[("token", token)],
                    &[("authorization", &auth)],
                )
                .await?;
            let body = reply.json();
            let pass = body["active"] == true
                && body["token_type"] == "DPoP"
                && body["cnf"]["jkt"] == key.thumbprint().as_str();
            drill.report.push(
                INTROSPECTION,
                "active, token_type DPoP, cnf.jkt",
                format!(
                    "active={} token_type={} cnf.jkt={}",
                    body["active"],
                    body["token_type"],
                    if body["cnf"]["jkt"] == key.thumbprint().as_str() {
                        "matches"
                    } else {
                        "wrong"
                    }
                ),
                pass,
            );
        }
        (None, _) => drill.report.skip(
            INTROSPECTION,
            "active with cnf.jkt",
            "no introspection client given",
        ),
        (_, None) => drill.report.push(
            INTROSPECTION,
            "active with cnf.jkt",
            "no token from the round trip".into(),
            false,
        ),
    }

    // Replay of a proof within the window → 401 + audit entry.
    const REPLAY: &str = "replay within the window";
    const AUDIT: &str = "replay audit entry";
    let replayer = drill
        .plan
        .dpop_client
        .clone()
        .or_else(|| drill.plan.nonce_client.clone());
    match replayer {
        Some(client) => {
            // A nonce makes the proof acceptable for nonce tenants too.
            let probe = drill.token(&mut conn, &client, None).await?;
            let replayed = proof(probe.header("dpop-nonce"));
            let first = drill.token(&mut conn, &client, Some(&replayed)).await?;
            let second = drill.token(&mut conn, &client, Some(&replayed)).await?;
            let pass = first.status == 200
                && second.status == 401
                && second.json()["error"] == "invalid_dpop_proof"
                && second
                    .header("www-authenticate")
                    .is_some_and(|w| w.starts_with("DPoP"));
            drill.report.push(
                REPLAY,
                "200, then 401 invalid_dpop_proof",
                format!("{}, then {}", summary(&first), summary(&second)),
                pass,
            );
            match &drill.plan.log_dir {
                Some(dir) => {
                    let thumbprint = key.thumbprint();
                    let found = log_has(
                        dir,
                        &["\"event\":\"authority.dpop.replay\"", &thumbprint],
                        Duration::from_secs(5),
                    );
                    drill.report.push(
                        AUDIT,
                        "authority.dpop.replay in the log",
                        if found {
                            format!("found in {}", dir.display())
                        } else {
                            format!("not found in {}", dir.display())
                        },
                        found,
                    );
                }
                None => drill.report.skip(
                    AUDIT,
                    "authority.dpop.replay in the log",
                    "remote-skipped: the authority's log is not on this host (--log-dir)",
                ),
            }
        }
        None => {
            drill
                .report
                .skip(REPLAY, "401 invalid_dpop_proof", "no DPoP client given");
            drill
                .report
                .skip(AUDIT, "audit entry", "no DPoP client given");
        }
    }
    Ok(())
}

async fn mtls_scenarios(drill: &mut Drill<'_>) -> Result<(), DrillError> {
    const BOUND: &str = "mTLS certificate-bound token";
    const MISMATCH: &str = "mTLS mismatch (token over another certificate)";
    const METRIC: &str = "mTLS mismatch metric";
    let Some(mtls) = drill.plan.mtls.clone() else {
        drill.report.skip(
            BOUND,
            "cnf.x5t#S256 of the certificate",
            "no mTLS client given",
        );
        drill
            .report
            .skip(MISMATCH, "401 invalid_token", "no mTLS client given");
        drill
            .report
            .skip(METRIC, "thumbprint-mismatch +1", "no mTLS client given");
        return Ok(());
    };
    let right = TlsTarget::new(
        &drill.plan.issuer,
        &drill.plan.ca_file,
        Some((&mtls.cert, &mtls.key)),
    )?;
    let other = TlsTarget::new(
        &drill.plan.issuer,
        &drill.plan.ca_file,
        Some((&mtls.other_cert, &mtls.other_key)),
    )?;
    let mut right = right.connect().await?;
    let reply = right
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &mtls.client_id),
            ],
            &[],
        )
        .await?;
    let token = reply.json()["access_token"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let expected = certificate_thumbprint(&mtls.cert).unwrap_or_default();
    let bound = jwt_claims(&token)["cnf"]["x5t#S256"]
        .as_str()
        .unwrap_or("")
        .to_string();
    drill.report.push(
        BOUND,
        "200 with cnf.x5t#S256 = SHA-256 of the certificate",
        format!(
            "{} cnf.x5t#S256 {}",
            summary(&reply),
            if bound == expected && !bound.is_empty() {
                "matches"
            } else {
                "MISSING/WRONG"
            }
        ),
        reply.status == 200 && bound == expected && !bound.is_empty(),
    );
    if token.is_empty() {
        drill.report.push(
            MISMATCH,
            "401 invalid_token",
            "no token to present".into(),
            false,
        );
        return Ok(());
    }
    let series = "authority_mtls_mismatch_total{reason=\"thumbprint-mismatch\"}";
    let metrics_url = drill.plan.metrics_url.clone();
    let before = authority_metric(drill.plan, metrics_url.as_deref(), series).await;
    let bearer = format!("Bearer {token}");
    let mut other = other.connect().await?;
    let reply = other
        .post_form("/fresh-auth", &[], &[("authorization", &bearer)])
        .await?;
    drill.report.push(
        MISMATCH,
        "401 invalid_token",
        summary(&reply),
        reply.status == 401 && reply.json()["error"] == "invalid_token",
    );
    let after = authority_metric(drill.plan, metrics_url.as_deref(), series).await;
    match (metrics_url, before, after) {
        (None, ..) => drill.report.skip(
            METRIC,
            "thumbprint-mismatch +1",
            "no SEALKIT_METRICS_URL given (the authority's /metrics is on its loopback listener)",
        ),
        (Some(_), Ok(before), Ok(after)) => drill.report.push(
            METRIC,
            "thumbprint-mismatch +1",
            format!("+{}", after - before),
            after - before == 1.0,
        ),
        (Some(url), Err(why), _) | (Some(url), _, Err(why)) => drill.report.push(
            METRIC,
            "thumbprint-mismatch +1",
            format!("{url}: {why}"),
            false,
        ),
    }
    Ok(())
}

/// One series of the authority's `/metrics` at `url` (0 when absent from the exposition).
async fn authority_metric(
    plan: &DrillPlan,
    url: Option<&str>,
    series: &str,
) -> Result<f64, String> {
    let Some(url) = url else {
        return Ok(0.0);
    };
    match crate::client::https::get_url(url, &plan.ca_file, &[]).await {
        Ok(reply) if reply.status == 200 => {
            Ok(metric(&String::from_utf8_lossy(&reply.body), series))
        }
        Ok(reply) => Err(format!("answered {}", reply.status)),
        Err(e) => Err(e.to_string()),
    }
}

/// The guard's `guard_mtls_mismatch_total{reason="thumbprint-mismatch"}`, when its
/// metrics URL is known and answers.
async fn guard_mismatches(conn: &mut Connection, url: Option<&str>) -> Option<f64> {
    let reply = get_with(conn, url?, &[]).await.ok()?;
    (reply.status == 200).then(|| {
        metric(
            &String::from_utf8_lossy(&reply.body),
            "guard_mtls_mismatch_total{reason=\"thumbprint-mismatch\"}",
        )
    })
}

/// `GET url` with these headers over `conn`.
async fn get_with(
    conn: &mut Connection,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, DrillError> {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| "/".into());
    let mut builder = http::Request::get(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| crate::client::https::HttpsError::Request(e.to_string()))?;
    Ok(conn.send(request).await?)
}

/// The resource rows (RFC 9449 §7, RFC 8705 §3 at `sealkit guard`): a replayed proof, a
/// proof by another key, a DPoP-bound token as Bearer, a certificate-bound token over
/// another certificate.
async fn resource_scenarios(drill: &mut Drill<'_>, target: &TlsTarget) -> Result<(), DrillError> {
    const REPLAY: &str = "resource: proof replayed";
    const OTHER_KEY: &str = "resource: another key's proof";
    const AS_BEARER: &str = "resource: DPoP-bound token as Bearer";
    const OTHER_CERT: &str = "resource: certificate-bound token, other certificate";
    const CERT_METRIC: &str = "resource: guard mismatch metric";
    let rows = [REPLAY, OTHER_KEY, AS_BEARER, OTHER_CERT, CERT_METRIC];
    let (Some(url), Some(client)) = (
        drill.plan.resource_url.clone(),
        drill.plan.dpop_client.clone(),
    ) else {
        for row in rows {
            drill.report.skip(
                row,
                "401",
                "no SEALKIT_RESOURCE_URL (or no DPoP client) given",
            );
        }
        return Ok(());
    };
    let parsed = url::Url::parse(&url).map_err(|e| DrillError::Env {
        path: "SEALKIT_RESOURCE_URL".into(),
        message: e.to_string(),
    })?;
    let base = format!(
        "https://{}:{}",
        parsed.host_str().unwrap_or_default(),
        parsed.port_or_known_default().unwrap_or(443)
    );
    let guard = TlsTarget::new(&base, &drill.plan.ca_file, None)?;
    let key_error = |e: crate::client::ClientError| DrillError::Env {
        path: "proof key".into(),
        message: e.to_string(),
    };
    let key = ProofKey::es256().map_err(key_error)?;
    let mut conn = target.connect().await?;
    let proof = key
        .proof("POST", &drill.token_url, None, None)
        .map_err(key_error)?;
    let reply = drill.token(&mut conn, &client, Some(&proof)).await?;
    let token = reply.json()["access_token"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut resource = guard.connect().await?;
    let dpop = format!("DPoP {token}");

    let proof = key
        .proof("GET", &url, None, Some(&token))
        .map_err(key_error)?;
    let first = get_with(
        &mut resource,
        &url,
        &[("authorization", &dpop), ("dpop", &proof)],
    )
    .await?;
    let again = get_with(
        &mut resource,
        &url,
        &[("authorization", &dpop), ("dpop", &proof)],
    )
    .await?;
    drill.report.push(
        REPLAY,
        "200, then 401 invalid_dpop_proof",
        format!("{} then {}", first.status.as_u16(), summary(&again)),
        first.status == 200 && again.status == 401,
    );

    let other = ProofKey::es256().map_err(key_error)?;
    let proof = other
        .proof("GET", &url, None, Some(&token))
        .map_err(key_error)?;
    let reply = get_with(
        &mut resource,
        &url,
        &[("authorization", &dpop), ("dpop", &proof)],
    )
    .await?;
    drill.report.push(
        OTHER_KEY,
        "401 invalid_dpop_proof",
        summary(&reply),
        reply.status == 401,
    );

    let bearer = format!("Bearer {token}");
    let reply = get_with(&mut resource, &url, &[("authorization", &bearer)]).await?;
    drill.report.push(
        AS_BEARER,
        "401 invalid_token",
        summary(&reply),
        reply.status == 401,
    );

    let Some(mtls) = drill.plan.mtls.clone() else {
        drill
            .report
            .skip(OTHER_CERT, "401 invalid_token", "no mTLS client given");
        drill.report.skip(
            CERT_METRIC,
            "thumbprint-mismatch +1",
            "no mTLS client given",
        );
        return Ok(());
    };
    let own = TlsTarget::new(
        &drill.plan.issuer,
        &drill.plan.ca_file,
        Some((&mtls.cert, &mtls.key)),
    )?;
    let reply = own
        .connect()
        .await?
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &mtls.client_id),
            ],
            &[],
        )
        .await?;
    let bound = format!(
        "Bearer {}",
        reply.json()["access_token"].as_str().unwrap_or("")
    );
    let metrics_url = drill.plan.guard_metrics_url.clone();
    let before = guard_mismatches(&mut resource, metrics_url.as_deref()).await;
    let other_cert = TlsTarget::new(
        &base,
        &drill.plan.ca_file,
        Some((&mtls.other_cert, &mtls.other_key)),
    )?;
    let reply = get_with(
        &mut other_cert.connect().await?,
        &url,
        &[("authorization", &bound)],
    )
    .await?;
    drill.report.push(
        OTHER_CERT,
        "401 invalid_token",
        summary(&reply),
        reply.status == 401,
    );
    let after = guard_mismatches(&mut resource, metrics_url.as_deref()).await;
    match (before, after) {
        (Some(before), Some(after)) => drill.report.push(
            CERT_METRIC,
            "thumbprint-mismatch +1",
            format!("+{}", after - before),
            after - before == 1.0,
        ),
        _ => drill.report.skip(
            CERT_METRIC,
            "thumbprint-mismatch +1",
            "no SEALKIT_GUARD_METRICS_URL given",
        ),
    }
    Ok(())
}

async fn bypass_scenarios(drill: &mut Drill<'_>, target: &TlsTarget) -> Result<(), DrillError> {
    const ON: &str = "bypass on: unbound token";
    const OFF: &str = "bypass off: enforcement back";
    let (Some(socket), Some(client)) = (
        drill.plan.bypass_socket.clone(),
        drill.plan.dpop_client.clone(),
    ) else {
        if drill.plan.bypass_socket.is_some() {
            drill
                .report
                .skip(ON, "200 Bearer without cnf", "no DPoP client given");
        }
        return Ok(());
    };
    let request = ControlRequest::BypassOn {
        seconds: 60,
        reason: "sealkit drill run".into(),
    };
    if let Err(e) = crate::control::send(&socket, &request).await {
        drill.report.push(
            ON,
            "200 Bearer without cnf",
            format!("cannot start the bypass: {e}"),
            false,
        );
        return Ok(());
    }
    let mut conn = target.connect().await?;
    let reply = drill.token(&mut conn, &client, None).await;
    // Whatever happened, end the bypass before judging.
    let ended = crate::control::send(&socket, &ControlRequest::BypassOff).await;
    let reply = reply?;
    let body = reply.json();
    let unbound = jwt_claims(body["access_token"].as_str().unwrap_or(""))
        .get("cnf")
        .is_none();
    let mut pass = reply.status == 200 && body["token_type"] == "Bearer" && unbound;
    let mut observed = format!(
        "{} {}{}",
        summary(&reply),
        body["token_type"],
        if unbound { " no cnf" } else { " WITH cnf" }
    );
    if let Some(dir) = &drill.plan.log_dir {
        let event = log_has(
            dir,
            &["\"event\":\"authority.dpop.proof.bypass\"", &client.id],
            Duration::from_secs(5),
        );
        observed.push_str(if event {
            ", bypass event logged"
        } else {
            ", bypass event NOT logged"
        });
        pass &= event;
    }
    drill
        .report
        .push(ON, "200 Bearer without cnf, bypass event", observed, pass);
    if let Err(e) = ended {
        drill.report.push(
            OFF,
            "bypass ended",
            format!("cannot end the bypass: {e}"),
            false,
        );
        return Ok(());
    }
    let reply = drill.token(&mut conn, &client, None).await?;
    drill.report.push(
        OFF,
        "400 use_dpop_nonce",
        summary(&reply),
        reply.status == 400 && reply.json()["error"] == "use_dpop_nonce",
    );
    Ok(())
}
