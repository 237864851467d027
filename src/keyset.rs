//! The token signing key set: `next`, `current` and `previous` keys, persisted in the data
//! directory, rotated and retired while the authority runs.
//!
//! - `current` signs every new token;
//! - `next` is published in `/jwks` from the first start, so the key a rotation promotes
//!   was published before it signed anything (resource servers that cache `/jwks` already
//!   hold it);
//! - `previous` keys verify the tokens they signed and stay in `/jwks` until the last of
//!   those tokens has expired (`retireAfter`), then an operator retires them.
//!
//! Files: `<dataDir>/signing-keys.json` (the roles and dates) and
//! `<dataDir>/signing-keys/<kid>.pem` (PKCS#8, 0600). A data directory from before key
//! sets (`signing-key.pem` only) is taken over: that key stays `current`, a `next` is made.
//! Every change is written atomically (temporary file, fsync, rename) before it is used.
//!
//! Not responsible for who may rotate (the CLI and the control socket check that) nor for
//! copying a set between nodes (docs/multi-node.md).

use crate::token::{AccessTokenClaims, SigningKey, TokenError};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The roles file in the data directory.
pub const SET_FILE: &str = "signing-keys.json";
/// The directory of the key files.
pub const KEYS_DIR: &str = "signing-keys";

#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error(transparent)]
    Key(#[from] TokenError),
    #[error("cannot read or write {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a key set file: {message}")]
    Format { path: String, message: String },
    #[error("no previous key has the kid {0}")]
    UnknownKid(String),
    #[error(
        "key {kid} may still verify live tokens until {until} (Unix time); retire it after that"
    )]
    StillNeeded { kid: String, until: i64 },
}

/// One key's entry in `signing-keys.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyEntry {
    pub kid: String,
    /// Unix time the key was made.
    pub created: i64,
    /// For a previous key: the time after which no token it signed is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_after: Option<i64>,
}

/// `signing-keys.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetFile {
    pub current: KeyEntry,
    pub next: KeyEntry,
    #[serde(default)]
    pub previous: Vec<KeyEntry>,
}

impl SetFile {
    /// A short fingerprint of the set (every kid in its role): two nodes with the same
    /// fingerprint publish the same `/jwks` and sign with the same key.
    pub fn fingerprint(&self) -> String {
        let mut text = format!("next={};current={}", self.next.kid, self.current.kid);
        for p in &self.previous {
            text.push_str(";previous=");
            text.push_str(&p.kid);
        }
        crate::bundle::sha256_hex(text.as_bytes())[..16].to_string()
    }
}

struct Loaded {
    file: SetFile,
    current: Arc<SigningKey>,
    next: Arc<SigningKey>,
    previous: Vec<Arc<SigningKey>>,
}

/// The key set in use: what signs, what verifies and what `/jwks` publishes.
pub struct KeyRing {
    data_dir: PathBuf,
    state: ArcSwap<Loaded>,
    /// Serialises rotations and retirements (readers never wait).
    change: std::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("set", &self.state.load().file)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeySetError + '_ {
    move |source| KeySetError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn new_pem() -> Result<Vec<u8>, KeySetError> {
    let pair = josekit::jws::ES256
        .generate_key_pair()
        .map_err(|e| TokenError::Key(e.to_string()))?;
    Ok(pair.to_pem_private_key())
}

impl KeyRing {
    /// Loads the set of `data_dir`, creating it (or taking over a lone `signing-key.pem`).
    pub fn load_or_create(data_dir: &Path, now: i64) -> Result<KeyRing, KeySetError> {
        let set_path = data_dir.join(SET_FILE);
        let keys_dir = data_dir.join(KEYS_DIR);
        let file = match std::fs::read(&set_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| KeySetError::Format {
                path: set_path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_private_dir(&keys_dir)?;
                // The key of a data directory from before key sets stays current.
                let legacy = SigningKey::load_or_create(data_dir)?;
                let legacy_path = data_dir.join(crate::token::KEY_FILE);
                let legacy_pem = std::fs::read(&legacy_path).map_err(io(&legacy_path))?;
                let created = mtime(&legacy_path).unwrap_or(now);
                write_key(&keys_dir, legacy.kid(), &legacy_pem)?;
                let next_pem = new_pem()?;
                let next = SigningKey::from_pem(&next_pem)?;
                write_key(&keys_dir, next.kid(), &next_pem)?;
                let file = SetFile {
                    current: KeyEntry {
                        kid: legacy.kid().to_string(),
                        created,
                        retire_after: None,
                    },
                    next: KeyEntry {
                        kid: next.kid().to_string(),
                        created: now,
                        retire_after: None,
                    },
                    previous: Vec::new(),
                };
                write_set(data_dir, &file)?;
                file
            }
            Err(e) => return Err(io(&set_path)(e)),
        };
        let loaded = load(data_dir, file)?;
        Ok(KeyRing {
            data_dir: data_dir.to_path_buf(),
            state: ArcSwap::from_pointee(loaded),
            change: std::sync::Mutex::new(()),
        })
    }

    /// The set as it is now.
    pub fn set(&self) -> SetFile {
        self.state.load().file.clone()
    }

    /// The kid of the key that signs new tokens.
    pub fn kid(&self) -> String {
        self.state.load().file.current.kid.clone()
    }

    /// When the signing key in use was made.
    pub fn current_created(&self) -> i64 {
        self.state.load().file.current.created
    }

    /// When the current key of the set in `data_dir` was made (for the
    /// `authority_signing_key_created_timestamp_seconds` gauge), if there is a set.
    pub fn created_in(data_dir: &Path) -> Option<i64> {
        let bytes = std::fs::read(data_dir.join(SET_FILE)).ok()?;
        let file: SetFile = serde_json::from_slice(&bytes).ok()?;
        Some(file.current.created)
    }

    /// Signs an access token with the current key.
    pub fn mint(&self, claims: &AccessTokenClaims) -> Result<String, TokenError> {
        self.state.load().current.mint(claims)
    }

    /// The claims of a token signed by any key of the set that verifies (current or
    /// previous; `next` has signed nothing yet, but is tried last).
    pub fn verify(&self, token: &str) -> Option<AccessTokenClaims> {
        let state = self.state.load();
        std::iter::once(&state.current)
            .chain(state.previous.iter())
            .chain(std::iter::once(&state.next))
            .find_map(|k| k.verify(token))
    }

    /// [`verify`](Self::verify) with each key's memory of tokens it verified.
    pub fn verify_remembered(&self, token: &str) -> Option<Arc<AccessTokenClaims>> {
        let state = self.state.load();
        std::iter::once(&state.current)
            .chain(state.previous.iter())
            .chain(std::iter::once(&state.next))
            .find_map(|k| k.verify_remembered(token))
    }

    /// The JWK Set at `/jwks`: current, next, then the previous keys.
    pub fn jwks(&self) -> Value {
        let state = self.state.load();
        let mut keys = Vec::new();
        for key in std::iter::once(&state.current)
            .chain(std::iter::once(&state.next))
            .chain(state.previous.iter())
        {
            if let Some(k) = key.jwks()["keys"].get(0) {
                keys.push(k.clone());
            }
        }
        json!({ "keys": keys })
    }

    /// Rotation: `current` becomes previous (kept until `now + keep_for`, the longest a
    /// token it signed may live), `next` becomes current, and a new `next` is made. The
    /// new set is on disk before it is used.
    pub fn rotate(&self, now: i64, keep_for: i64) -> Result<SetFile, KeySetError> {
        let _guard = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut file = self.set();
        let keys_dir = self.data_dir.join(KEYS_DIR);
        let next_pem = new_pem()?;
        let next = SigningKey::from_pem(&next_pem)?;
        write_key(&keys_dir, next.kid(), &next_pem)?;
        let mut retiring = file.current.clone();
        retiring.retire_after = Some(now + keep_for);
        file.previous.push(retiring);
        file.current = file.next.clone();
        file.next = KeyEntry {
            kid: next.kid().to_string(),
            created: now,
            retire_after: None,
        };
        write_set(&self.data_dir, &file)?;
        self.state
            .store(Arc::new(load(&self.data_dir, file.clone())?));
        Ok(file)
    }

    /// Removes a previous key once every token it signed has expired (`force` skips the
    /// check: a compromised key is retired at once, and its tokens stop verifying).
    pub fn retire(&self, kid: &str, now: i64, force: bool) -> Result<SetFile, KeySetError> {
        let _guard = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut file = self.set();
        let position = file
            .previous
            .iter()
            .position(|p| p.kid == kid)
            .ok_or_else(|| KeySetError::UnknownKid(kid.to_string()))?;
        let until = file.previous[position].retire_after.unwrap_or(0);
        if now <= until && !force {
            return Err(KeySetError::StillNeeded {
                kid: kid.to_string(),
                until,
            });
        }
        file.previous.remove(position);
        write_set(&self.data_dir, &file)?;
        self.state
            .store(Arc::new(load(&self.data_dir, file.clone())?));
        let pem = self.data_dir.join(KEYS_DIR).join(format!("{kid}.pem"));
        let _ = std::fs::remove_file(pem);
        Ok(file)
    }
}

fn load(data_dir: &Path, file: SetFile) -> Result<Loaded, KeySetError> {
    let keys_dir = data_dir.join(KEYS_DIR);
    let read = |entry: &KeyEntry| -> Result<Arc<SigningKey>, KeySetError> {
        let path = keys_dir.join(format!("{}.pem", entry.kid));
        let pem = std::fs::read(&path).map_err(io(&path))?;
        let key = SigningKey::from_pem(&pem)?;
        if key.kid() != entry.kid {
            return Err(KeySetError::Format {
                path: path.display().to_string(),
                message: format!("holds key {}, not {}", key.kid(), entry.kid),
            });
        }
        Ok(Arc::new(key))
    };
    Ok(Loaded {
        current: read(&file.current)?,
        next: read(&file.next)?,
        previous: file.previous.iter().map(read).collect::<Result<_, _>>()?,
        file,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), KeySetError> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

fn write_key(keys_dir: &Path, kid: &str, pem: &[u8]) -> Result<(), KeySetError> {
    create_private_dir(keys_dir)?;
    let path = keys_dir.join(format!("{kid}.pem"));
    if path.exists() {
        return Ok(());
    }
    crate::token::write_private_file(&path, pem).map_err(io(&path))
}

fn write_set(data_dir: &Path, file: &SetFile) -> Result<(), KeySetError> {
    let path = data_dir.join(SET_FILE);
    let text = serde_json::to_vec_pretty(file).map_err(|e| KeySetError::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let _ = std::fs::remove_file(path.with_extension(format!("tmp-{}", std::process::id())));
    crate::token::write_private_file(&path, &text).map_err(io(&path))
}

fn mtime(path: &Path) -> Option<i64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| m.mtime())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://a".into(),
            sub: "c".into(),
            aud: vec!["api".into()],
            client_id: "c".into(),
            scope: String::new(),
            tenant: "t".into(),
            iat: 0,
            exp,
            jti: crate::secret::token_id(),
            cnf: None,
        }
    }

    fn kids(ring: &KeyRing) -> Vec<String> {
        ring.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    }

    /// next is published from the first start; a rotation promotes it; the previous key
    /// verifies its tokens until retired; retirement before its tokens expire is refused.
    #[test]
    fn rotation_publishes_ahead_and_keeps_the_previous_key_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path(), 1_000).unwrap();
        let first = ring.set();
        assert_eq!(
            kids(&ring),
            vec![first.current.kid.clone(), first.next.kid.clone()]
        );
        let before = ring.mint(&claims(1_300)).unwrap();

        let rotated = ring.rotate(1_000, 300).unwrap();
        assert_eq!(
            rotated.current.kid, first.next.kid,
            "next was published before use"
        );
        assert_eq!(rotated.previous[0].kid, first.current.kid);
        assert_eq!(rotated.previous[0].retire_after, Some(1_300));
        let after = ring.mint(&claims(1_600)).unwrap();
        assert!(
            ring.verify(&before).is_some(),
            "a token of the previous key verifies"
        );
        assert!(ring.verify(&after).is_some());
        assert_eq!(kids(&ring).len(), 3);

        // The set survives a restart.
        let reopened = KeyRing::load_or_create(dir.path(), 2_000).unwrap();
        assert_eq!(reopened.set(), rotated);
        assert!(reopened.verify(&before).is_some());

        assert!(matches!(
            ring.retire(&first.current.kid, 1_200, false),
            Err(KeySetError::StillNeeded { until: 1_300, .. })
        ));
        let retired = ring.retire(&first.current.kid, 1_301, false).unwrap();
        assert!(retired.previous.is_empty());
        assert!(!kids(&ring).contains(&first.current.kid));
        assert!(
            ring.verify(&before).is_none(),
            "the retired key verifies nothing"
        );
        assert!(matches!(
            ring.retire("nope", 2_000, true),
            Err(KeySetError::UnknownKid(_))
        ));
        assert_ne!(first.fingerprint(), retired.fingerprint());
    }

    /// A data directory from before key sets keeps its key as current.
    #[test]
    fn a_lone_signing_key_is_taken_over_as_current() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = SigningKey::load_or_create(dir.path()).unwrap();
        let ring = KeyRing::load_or_create(dir.path(), 5).unwrap();
        assert_eq!(ring.kid(), legacy.kid());
        assert_ne!(ring.set().next.kid, legacy.kid());
    }
}
