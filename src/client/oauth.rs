//! The OAuth client acts an operator needs by hand, as library calls: get a token
//! (client secret, DPoP proof, client certificate, or a combination), with the one
//! automatic retry RFC 9449 §8 asks for when the authority answers `use_dpop_nonce`;
//! introspect (RFC 7662) and revoke (RFC 7009) a token; and call a protected resource
//! once with a fresh proof (`htm`, `htu`, `ath`), retrying once with the resource's nonce
//! (RFC 9449 §9). `cli::token` is the command line over these; nothing here prints.
//!
//! Proof keys and proofs are [`super::ProofKey`]'s; connections are [`super::https`]'s.
//! This module is not the drill: the drill checks what the authority answers, this module
//! only wants the token.

use super::https::{basic_auth, HttpsError, Reply, TlsTarget};
use super::{ClientError, ProofKey};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error(transparent)]
    Https(#[from] HttpsError),
    #[error(transparent)]
    Key(#[from] ClientError),
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a private JWK (EC P-256 or Ed25519 with \"d\"): {reason}")]
    KeyFile { path: String, reason: String },
    /// The authority answered with an OAuth error (RFC 6749 §5.2).
    #[error("the authority answered {status} {error}{description}")]
    Refused {
        status: u16,
        error: String,
        description: String,
    },
    #[error("bad URL {0}")]
    Url(String),
}

/// Who asks, and where: the authority's issuer URL, the site CA to trust, the client id,
/// and how the client authenticates (a secret, a certificate, or both).
#[derive(Clone, Default)]
pub struct ClientSetup {
    pub issuer: String,
    pub ca_file: PathBuf,
    pub client_id: String,
    /// `client_secret_basic` when present.
    pub secret: Option<String>,
    /// Client certificate and its key, presented in the TLS handshake (RFC 8705).
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for ClientSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSetup")
            .field("issuer", &self.issuer)
            .field("ca_file", &self.ca_file)
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("identity", &self.identity)
            .finish()
    }
}

impl ClientSetup {
    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches('/'))
    }

    fn target(&self) -> Result<TlsTarget, HttpsError> {
        TlsTarget::new(
            &self.issuer,
            &self.ca_file,
            self.identity
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
        )
    }

    /// POSTs `form` to `path` with this client's authentication.
    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        dpop: Option<&str>,
    ) -> Result<Reply, OAuthError> {
        let mut conn = self.target()?.connect().await?;
        let auth = self.secret.as_ref().map(|s| basic_auth(&self.client_id, s));
        let mut headers = Vec::new();
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        if let Some(proof) = dpop {
            headers.push(("dpop", proof));
        }
        let mut form = form.to_vec();
        if auth.is_none() {
            // tls_client_auth / self_signed_tls_client_auth name the client in the form.
            form.push(("client_id", self.client_id.as_str()));
        }
        Ok(conn.post_form(path, &form, &headers).await?)
    }
}

/// A token as the authority issued it.
#[derive(Clone)]
pub struct IssuedToken {
    pub access_token: String,
    /// `DPoP` or `Bearer`.
    pub token_type: String,
    /// The whole response body (RFC 6749 §5.1).
    pub response: Value,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .finish()
    }
}

fn refused(reply: &Reply) -> OAuthError {
    let body = reply.json();
    let description = body["error_description"]
        .as_str()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    OAuthError::Refused {
        status: reply.status.as_u16(),
        error: body["error"]
            .as_str()
            .unwrap_or("(no OAuth error)")
            .to_string(),
        description,
    }
}

fn wants_nonce(reply: &Reply) -> Option<String> {
    let nonce = reply.header("dpop-nonce")?;
    let asked = reply.json()["error"] == "use_dpop_nonce"
        || reply
            .header("www-authenticate")
            .is_some_and(|w| w.contains("use_dpop_nonce"));
    asked.then(|| nonce.to_string())
}

/// `client_credentials` from the token endpoint. With `key`, a DPoP proof accompanies the
/// request; when the authority answers `use_dpop_nonce` with a `DPoP-Nonce`, the request
/// is sent once more with a fresh proof carrying that nonce (RFC 9449 §8).
pub async fn get_token(
    setup: &ClientSetup,
    key: Option<&ProofKey>,
    scope: Option<&str>,
) -> Result<IssuedToken, OAuthError> {
    let token_url = setup.endpoint("/token");
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    let mut nonce: Option<String> = None;
    for attempt in 0..2 {
        let proof = key
            .map(|k| k.proof("POST", &token_url, nonce.as_deref(), None))
            .transpose()?;
        let reply = setup.post("/token", &form, proof.as_deref()).await?;
        if reply.status.is_success() {
            let response = reply.json();
            let access_token = response["access_token"].as_str().unwrap_or("").to_string();
            if access_token.is_empty() {
                return Err(refused(&reply));
            }
            return Ok(IssuedToken {
                access_token,
                token_type: response["token_type"].as_str().unwrap_or("").to_string(),
                response,
            });
        }
        match wants_nonce(&reply) {
            Some(fresh) if attempt == 0 && key.is_some() => nonce = Some(fresh),
            _ => return Err(refused(&reply)),
        }
    }
    Err(OAuthError::Refused {
        status: 400,
        error: "use_dpop_nonce".into(),
        description: ": the authority asked for a nonce twice".into(),
    })
}

/// RFC 7662 introspection by `setup` (a client allowed to introspect); returns the JSON
/// answer (`{"active": false}` for a revoked, expired or unknown token).
pub async fn introspect(setup: &ClientSetup, token: &str) -> Result<Value, OAuthError> {
    let reply = setup
        .post(
            "/introspect",
            &[("token", token), ("token_type_hint", "access_token")],
            None,
        )
        .await?;
    if reply.status.is_success() {
        Ok(reply.json())
    } else {
        Err(refused(&reply))
    }
}

/// RFC 7009 revocation by `setup`, the client the token was issued to.
pub async fn revoke(setup: &ClientSetup, token: &str) -> Result<(), OAuthError> {
    let reply = setup
        .post(
            "/revoke",
            &[("token", token), ("token_type_hint", "access_token")],
            None,
        )
        .await?;
    if reply.status.is_success() {
        Ok(())
    } else {
        Err(refused(&reply))
    }
}

/// One request to a protected resource.
pub struct ResourceCall<'a> {
    pub method: &'a str,
    /// The full https URL; the proof's `htu` is this without query and fragment.
    pub url: &'a str,
    pub ca_file: &'a Path,
    pub identity: Option<(&'a Path, &'a Path)>,
    pub token: &'a str,
    /// With a key: `Authorization: DPoP` and a proof with `ath`; without: `Bearer`.
    pub key: Option<&'a ProofKey>,
    pub body: Option<Bytes>,
    pub headers: Vec<(String, String)>,
}

/// Sends the request with a fresh proof; when the resource answers `use_dpop_nonce`
/// (401 with `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a `DPoP-Nonce`), sends it
/// once more with a fresh proof carrying that nonce. Returns the resource's answer,
/// whatever its status.
pub async fn call(request: &ResourceCall<'_>) -> Result<Reply, OAuthError> {
    let url = url::Url::parse(request.url).map_err(|_| OAuthError::Url(request.url.into()))?;
    if url.scheme() != "https" {
        return Err(OAuthError::Url(format!(
            "{} (only https URLs are supported)",
            request.url
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| OAuthError::Url(request.url.into()))?;
    let base = format!(
        "https://{host}:{}",
        url.port_or_known_default().unwrap_or(443)
    );
    let mut htu = url.clone();
    htu.set_query(None);
    htu.set_fragment(None);
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let target = TlsTarget::new(&base, request.ca_file, request.identity)?;
    let mut conn = target.connect().await?;
    let method = http::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| OAuthError::Url(format!("bad method {}", request.method)))?;
    let mut nonce: Option<String> = None;
    let mut reply = None;
    for attempt in 0..2 {
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(path.as_str());
        match request.key {
            Some(key) => {
                let proof = key.proof(
                    method.as_str(),
                    htu.as_str(),
                    nonce.as_deref(),
                    Some(request.token),
                )?;
                builder = builder
                    .header("authorization", format!("DPoP {}", request.token))
                    .header("dpop", proof);
            }
            None => builder = builder.header("authorization", format!("Bearer {}", request.token)),
        }
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let http_request = builder
            .body(Full::new(request.body.clone().unwrap_or_default()))
            .map_err(|e| OAuthError::Url(format!("{}: {e}", request.url)))?;
        let answer = conn.send(http_request).await?;
        match wants_nonce(&answer) {
            Some(fresh) if attempt == 0 && request.key.is_some() => {
                nonce = Some(fresh);
                reply = Some(answer);
            }
            _ => return Ok(answer),
        }
    }
    reply.ok_or_else(|| OAuthError::Url(request.url.into()))
}

/// The claims of a JWT access token, decoded without verification (to find its client,
/// type and binding; never to decide anything).
pub fn unverified_claims(token: &str) -> Value {
    use base64::Engine;
    token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// Reads a `demo.env`-style file: `KEY=VALUE` lines, `#` comments, no quoting.
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, OAuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| OAuthError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

impl ProofKey {
    /// Loads a proof key from a private JWK file (as [`ProofKey::save`] writes it).
    pub fn load(path: &Path) -> Result<ProofKey, OAuthError> {
        let bytes = std::fs::read(path).map_err(|source| OAuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let bad = |reason: String| OAuthError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let jwk = josekit::jwk::Jwk::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
        let alg = match (jwk.key_type(), jwk.curve()) {
            ("EC", Some("P-256")) => "ES256",
            ("OKP", Some("Ed25519")) => "EdDSA",
            (kty, crv) => return Err(bad(format!("kty {kty}, crv {}", crv.unwrap_or("none")))),
        };
        if jwk.parameter("d").is_none() {
            return Err(bad("no private part \"d\"".into()));
        }
        Ok(ProofKey::from_private_jwk(alg, jwk)?)
    }

    /// Writes the private JWK to `path`, created 0600.
    pub fn save(&self, path: &Path) -> Result<(), OAuthError> {
        let text = serde_json::to_vec_pretty(&self.private).unwrap_or_default();
        crate::token::write_private_file(path, &text).map_err(|source| OAuthError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// The key in `path` when the file exists, else a fresh ES256 key saved there.
    pub fn load_or_create(path: &Path) -> Result<ProofKey, OAuthError> {
        if path.exists() {
            return ProofKey::load(path);
        }
        let key = ProofKey::es256()?;
        key.save(path)?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_proof_key_loads_back_with_the_same_thumbprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dpop.jwk");
        let key = ProofKey::load_or_create(&path).unwrap();
        let again = ProofKey::load_or_create(&path).unwrap();
        assert_eq!(key.thumbprint(), again.thumbprint());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ed = ProofKey::ed25519().unwrap();
        ed.save(&dir.path().join("ed.jwk")).unwrap();
        let loaded = ProofKey::load(&dir.path().join("ed.jwk")).unwrap();
        assert_eq!(ed.thumbprint(), loaded.thumbprint());
    }

    #[test]
    fn a_public_jwk_is_not_a_proof_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("public.jwk");
        let key = ProofKey::es256().unwrap();
        std::fs::write(&path, key.public_jwk().to_string()).unwrap();
        let error = ProofKey::load(&path).err().unwrap().to_string();
        assert!(error.contains("no private part"), "{error}");
    }
}
