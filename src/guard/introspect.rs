//! Introspection (RFC 7662) for revocation-sensitive routes: the guard asks the authority
//! whether a token is still active, reusing an answer for `introspection.cacheTtl`. Any
//! failure to get an answer refuses the request (fail closed).

use super::config::IntrospectionSettings;
use crate::client::https::{basic_auth, TlsTarget};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum IntrospectionError {
    #[error("cannot reach the authority's introspection endpoint: {0}")]
    Unreachable(String),
    #[error("the introspection endpoint answered {0}")]
    Status(u16),
    #[error("cannot read the client secret file: {0}")]
    Secret(String),
}

/// At most this many answers are cached (by SHA-256 of the token).
const CACHE_ENTRIES: usize = 16_384;

pub struct Introspector {
    target: TlsTarget,
    path: String,
    authorization: String,
    cache_ttl: i64,
    cache: Mutex<HashMap<[u8; 32], (bool, i64)>>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Introspector {
    pub fn new(
        settings: &IntrospectionSettings,
        ca_file: &std::path::Path,
    ) -> Result<Introspector, IntrospectionError> {
        let secret = std::fs::read_to_string(&settings.client_secret_file)
            .map_err(|e| IntrospectionError::Secret(e.to_string()))?;
        let url = url::Url::parse(&settings.url)
            .map_err(|e| IntrospectionError::Unreachable(e.to_string()))?;
        let base = format!(
            "https://{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(443)
        );
        let target = TlsTarget::new(&base, ca_file, None)
            .map_err(|e| IntrospectionError::Unreachable(e.to_string()))?;
        Ok(Introspector {
            target,
            path: url.path().to_string(),
            authorization: basic_auth(&settings.client_id, secret.trim()),
            cache_ttl: settings.cache_ttl.as_secs() as i64,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the authority says the token is active (cached for `cacheTtl`).
    pub async fn is_active(&self, token: &str, now: i64) -> Result<bool, IntrospectionError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((active, at)) = self.cache.lock().ok().and_then(|c| c.get(&key).copied()) {
            if now - at < self.cache_ttl {
                return Ok(active);
            }
        }
        let ask = async {
            let mut conn = self
                .target
                .connect()
                .await
                .map_err(|e| IntrospectionError::Unreachable(e.to_string()))?;
            conn.post_form(
                &self.path,
                &[("token", token), ("token_type_hint", "access_token")],
                &[("authorization", &self.authorization)],
            )
            .await
            .map_err(|e| IntrospectionError::Unreachable(e.to_string()))
        };
        let reply = tokio::time::timeout(std::time::Duration::from_secs(5), ask)
            .await
            .map_err(|_| IntrospectionError::Unreachable("timed out".into()))??;
        if reply.status != 200 {
            return Err(IntrospectionError::Status(reply.status.as_u16()));
        }
        let active = reply.json()["active"] == serde_json::Value::Bool(true);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.retain(|_, (_, at)| now - *at < self.cache_ttl);
            }
            if cache.len() < CACHE_ENTRIES {
                cache.insert(key, (active, now));
            }
        }
        Ok(active)
    }
}
