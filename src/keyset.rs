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
//! **A schedule** (`sealkit keys schedule`) makes the keys ahead instead: the set then holds
//! a list of keys, each with the time it starts signing (`activates`), and the roles are
//! derived from the clock ([`Schedule::roles_at`]): `current` is the latest key activated,
//! `next` the one after it (published from its predecessor's activation, a whole period
//! ahead), `previous` the earlier ones until `keepFor` after their successor activated,
//! after which they leave `/jwks` by themselves. Nothing is written when a key activates:
//! every node holding the same copied file derives the same roles from its own clock,
//! and the fingerprint compared between nodes ([`SetFile::fingerprint`]) is computed from
//! the schedule, never from the derived roles, so clocks seconds apart still agree.
//! The switch costs the signing path one integer comparison ([`KeyRing::mint`]); the
//! housekeeping tick ([`KeyRing::refresh`]) does it when no token is asked for.
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
    #[error("the key set rotates on a schedule (next activation: {next}); a manual rotation would set this node apart from the others: extend the schedule with `sealkit keys schedule`, or end it with `sealkit keys schedule --off` first")]
    Scheduled { next: String },
    #[error("invalid schedule: {0}")]
    InvalidSchedule(String),
    #[error("the key set has no schedule")]
    NotScheduled,
}

/// The shortest period a schedule may have: keys are generated ahead and copied to every
/// node by hand, so a period of minutes would be a copy every few minutes.
pub const MIN_SCHEDULE_EVERY: i64 = 3_600;
/// At most this many future keys are generated at once.
pub const MAX_SCHEDULE_AHEAD: usize = 24;

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

/// `signing-keys.json`. With a schedule, `current`, `next` and `previous` are the roles
/// derived at some moment (on disk: when the file was written, for people reading it);
/// the schedule alone decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetFile {
    pub current: KeyEntry,
    /// With an exhausted schedule (no key left to activate) the same key as `current`.
    pub next: KeyEntry,
    #[serde(default)]
    pub previous: Vec<KeyEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// The planned keys of a scheduled set (static: copied to every node as it is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Seconds between two activations.
    pub every: i64,
    /// Seconds a key stays published after its successor activated: the longest a token
    /// it signed may live (token lifetime + clock skew when scheduled).
    pub keep_for: i64,
    /// In activation order; each signs from its `activates` until the next one's.
    pub keys: Vec<ScheduledKey>,
    /// Keys that stopped signing before the schedule began (manual rotations), published
    /// until their `retireAfter`.
    #[serde(default)]
    pub retiring: Vec<KeyEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledKey {
    pub kid: String,
    pub created: i64,
    /// Unix time from which it signs.
    pub activates: i64,
}

impl Schedule {
    /// The index of the key that signs at `now` (the first key before any activation).
    fn active_index(&self, now: i64) -> usize {
        self.keys
            .iter()
            .rposition(|k| k.activates <= now)
            .unwrap_or(0)
    }

    /// The roles at `now` and the first moment after which they change (a key activates
    /// or a previous key is dropped; `i64::MAX` when nothing is left to happen).
    pub fn roles_at(&self, now: i64) -> (SetFile, i64) {
        let idx = self.active_index(now);
        let entry = |k: &ScheduledKey| KeyEntry {
            kid: k.kid.clone(),
            created: k.created,
            retire_after: None,
        };
        let mut change = i64::MAX;
        let current = entry(&self.keys[idx]);
        let next = match self.keys.get(idx + 1) {
            Some(k) => {
                change = change.min(k.activates);
                entry(k)
            }
            None => current.clone(),
        };
        let mut previous = Vec::new();
        let scheduled = self.keys[..idx].iter().enumerate().map(|(i, k)| KeyEntry {
            retire_after: Some(self.keys[i + 1].activates.saturating_add(self.keep_for)),
            ..entry(k)
        });
        for p in self.retiring.iter().cloned().chain(scheduled) {
            let until = p.retire_after.unwrap_or(0);
            // Published while `now <= until` (the rule `retire` applies), dropped after.
            if now <= until {
                change = change.min(until.saturating_add(1));
                previous.push(p);
            }
        }
        let roles = SetFile {
            current,
            next,
            previous,
            schedule: Some(self.clone()),
        };
        (roles, change)
    }

    /// How many keys are still to activate after `now`.
    pub fn ahead(&self, now: i64) -> usize {
        self.keys.iter().filter(|k| k.activates > now).count()
    }

    /// When the last planned key activates: after it, nothing rotates until the schedule
    /// is extended.
    pub fn end(&self) -> i64 {
        self.keys.last().map_or(0, |k| k.activates)
    }
}

impl SetFile {
    /// A short fingerprint of the set: two nodes with the same fingerprint publish the same
    /// `/jwks` and sign with the same key. Without a schedule: every kid in its role. With
    /// one: the schedule itself (keys, activation times, periods), never the roles derived
    /// from a clock, so nodes whose clocks differ by seconds agree.
    pub fn fingerprint(&self) -> String {
        let text = match &self.schedule {
            None => {
                let mut text = format!("next={};current={}", self.next.kid, self.current.kid);
                for p in &self.previous {
                    text.push_str(";previous=");
                    text.push_str(&p.kid);
                }
                text
            }
            Some(s) => {
                let mut text = format!("schedule;every={};keepFor={}", s.every, s.keep_for);
                for k in &s.keys {
                    text.push_str(&format!(";key={}@{}", k.kid, k.activates));
                }
                for p in &s.retiring {
                    text.push_str(&format!(
                        ";retiring={}@{}",
                        p.kid,
                        p.retire_after.unwrap_or(0)
                    ));
                }
                text
            }
        };
        crate::bundle::sha256_hex(text.as_bytes())[..16].to_string()
    }
}

/// The set as loaded, with the roles derived at one moment.
struct Loaded {
    /// The roles (for a manual set, the file itself).
    file: SetFile,
    current: Arc<SigningKey>,
    next: Arc<SigningKey>,
    previous: Vec<Arc<SigningKey>>,
    /// Every key file of the set, by kid (a scheduled set's future keys too).
    keys: Arc<std::collections::BTreeMap<String, Arc<SigningKey>>>,
    /// From this Unix time on the roles are stale ([`KeyRing::refresh`]); `i64::MAX` for a
    /// manual set.
    changes_at: i64,
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
                    schedule: None,
                };
                write_set(data_dir, &file)?;
                file
            }
            Err(e) => return Err(io(&set_path)(e)),
        };
        let loaded = load(data_dir, file, now)?;
        Ok(KeyRing {
            data_dir: data_dir.to_path_buf(),
            state: ArcSwap::from_pointee(loaded),
            change: std::sync::Mutex::new(()),
        })
    }

    /// The set's roles as last derived (see [`refresh`](Self::refresh)).
    pub fn set(&self) -> SetFile {
        self.state.load().file.clone()
    }

    /// The set's fingerprint (from the schedule when there is one: the same on every node
    /// holding the same file, whatever its clock says).
    pub fn fingerprint(&self) -> String {
        self.state.load().file.fingerprint()
    }

    /// Re-derives a scheduled set's roles when `now` has reached the moment they change:
    /// a key activates (audited as `authority.keys.activated`) or a previous key's tokens
    /// have all expired (it leaves `/jwks`: `authority.keys.dropped`). Returns whether
    /// anything changed. Cheap when nothing is due: one atomic load and a comparison.
    pub fn refresh(&self, now: i64) -> bool {
        if self.state.load().changes_at > now {
            return false;
        }
        let _guard = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = self.state.load_full();
        let Some(schedule) = state
            .file
            .schedule
            .as_ref()
            .filter(|_| state.changes_at <= now)
        else {
            return false;
        };
        let (roles, changes_at) = schedule.roles_at(now);
        let Ok(loaded) = derive(&state.keys, roles, changes_at) else {
            // Every scheduled key was read at load; a missing one cannot appear here.
            return false;
        };
        let before = &state.file;
        let after = &loaded.file;
        if before.current.kid != after.current.kid {
            tracing::warn!(
                event = "authority.keys.activated",
                current = %after.current.kid,
                previous = %before.current.kid,
                next = %after.next.kid,
                activates = schedule.keys.iter().find(|k| k.kid == after.current.kid).map_or(0, |k| k.activates),
                keys_ahead = schedule.ahead(now),
                fingerprint = %after.fingerprint(),
                "a scheduled signing key activated"
            );
        }
        for gone in before
            .previous
            .iter()
            .filter(|p| !after.previous.iter().any(|a| a.kid == p.kid))
        {
            tracing::warn!(
                event = "authority.keys.dropped",
                kid = %gone.kid,
                retire_after = gone.retire_after.unwrap_or(0),
                fingerprint = %after.fingerprint(),
                "every token of a scheduled key has expired: it left /jwks"
            );
        }
        self.state.store(Arc::new(loaded));
        true
    }

    /// The kid of the key that signs new tokens.
    pub fn kid(&self) -> String {
        self.state.load().file.current.kid.clone()
    }

    /// When the signing key in use was made.
    pub fn current_created(&self) -> i64 {
        self.state.load().file.current.created
    }

    /// Since when the signing key in use has existed as a signing key, for the
    /// `authority_signing_key_created_timestamp_seconds` gauge (its age): when it was made,
    /// or for a key made ahead by a schedule, when it activated.
    pub fn current_since(&self) -> i64 {
        let state = self.state.load();
        let current = &state.file.current;
        state
            .file
            .schedule
            .as_ref()
            .and_then(|s| s.keys.iter().find(|k| k.kid == current.kid))
            .map_or(current.created, |k| k.activates.max(k.created))
    }

    /// When a scheduled set's last planned key activates (0: no schedule), for the
    /// `authority_signing_key_schedule_end_timestamp_seconds` gauge.
    pub fn schedule_end(&self) -> i64 {
        self.state
            .load()
            .file
            .schedule
            .as_ref()
            .map_or(0, Schedule::end)
    }

    /// Signs an access token with the current key. A scheduled key activates here at its
    /// time (by the token's `iat`), not up to a housekeeping tick later; when nothing is
    /// due this is one comparison more than signing.
    pub fn mint(&self, claims: &AccessTokenClaims) -> Result<String, TokenError> {
        let state = self.state.load();
        if claims.iat < state.changes_at {
            return state.current.mint(claims);
        }
        drop(state);
        self.refresh(claims.iat);
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
        let mut seen = Vec::new();
        for key in std::iter::once(&state.current)
            .chain(std::iter::once(&state.next))
            .chain(state.previous.iter())
        {
            // An exhausted schedule's `next` is `current`: published once.
            if seen.contains(&key.kid()) {
                continue;
            }
            seen.push(key.kid());
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
        if let Some(schedule) = &file.schedule {
            return Err(KeySetError::Scheduled {
                next: schedule
                    .keys
                    .iter()
                    .find(|k| k.activates > now)
                    .map_or("none, the schedule has run out".into(), |k| {
                        crate::store::health::rfc3339(k.activates)
                    }),
            });
        }
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
            .store(Arc::new(load(&self.data_dir, file.clone(), now)?));
        Ok(file)
    }

    /// Removes a previous key once every token it signed has expired (`force` skips the
    /// check: a compromised key is retired at once, and its tokens stop verifying). In a
    /// scheduled set previous keys leave by themselves; retiring one early (`--force`)
    /// takes it out of the schedule.
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
        match file.schedule.as_mut() {
            None => {
                file.previous.remove(position);
            }
            Some(schedule) => {
                schedule.retiring.retain(|p| p.kid != kid);
                let active = schedule.active_index(now);
                let mut index = 0;
                schedule.keys.retain(|k| {
                    let keep = index >= active || k.kid != kid;
                    index += 1;
                    keep
                });
                file = schedule.roles_at(now).0;
            }
        }
        write_set(&self.data_dir, &file)?;
        self.state
            .store(Arc::new(load(&self.data_dir, file.clone(), now)?));
        let pem = self.data_dir.join(KEYS_DIR).join(format!("{kid}.pem"));
        let _ = std::fs::remove_file(pem);
        Ok(file)
    }

    /// Plans keys ahead: after this, `ahead` keys are still to activate, one every `every`
    /// seconds; `keep_for` is how long a key stays published after its successor
    /// activated. A manual set becomes scheduled (its `next`, published already, activates
    /// first, `every` from now; its previous keys keep their retirement times); a
    /// scheduled set is extended after its last planned key (planned times never move:
    /// other nodes and resource servers already hold them) and keys whose tokens have all
    /// expired are removed from it. New keys are on disk before the set names them.
    pub fn schedule(
        &self,
        now: i64,
        every: i64,
        ahead: usize,
        keep_for: i64,
    ) -> Result<SetFile, KeySetError> {
        if every < MIN_SCHEDULE_EVERY {
            return Err(KeySetError::InvalidSchedule(format!(
                "--every must be at least {}s (1h): every node needs the set copied once per schedule",
                MIN_SCHEDULE_EVERY
            )));
        }
        if every <= keep_for {
            return Err(KeySetError::InvalidSchedule(format!(
                "--every ({every}s) must be longer than a token's lifetime + clock skew ({keep_for}s): each key is published a whole period before it signs and its predecessor for that long after"
            )));
        }
        if !(1..=MAX_SCHEDULE_AHEAD).contains(&ahead) {
            return Err(KeySetError::InvalidSchedule(format!(
                "--ahead must be 1 to {MAX_SCHEDULE_AHEAD}"
            )));
        }
        let _guard = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let file = self.set();
        let mut schedule = match file.schedule {
            Some(mut s) => {
                // Drop what has left /jwks: past keys whose tokens have all expired.
                let (roles, _) = s.roles_at(now);
                let active = s.active_index(now);
                let live: Vec<&str> = roles.previous.iter().map(|p| p.kid.as_str()).collect();
                let mut index = 0;
                s.keys.retain(|k| {
                    let keep = index >= active || live.contains(&k.kid.as_str());
                    index += 1;
                    keep
                });
                s.retiring.retain(|p| live.contains(&p.kid.as_str()));
                s.every = every;
                s.keep_for = s.keep_for.max(keep_for);
                s
            }
            None => Schedule {
                every,
                keep_for,
                keys: vec![
                    ScheduledKey {
                        kid: file.current.kid.clone(),
                        created: file.current.created,
                        activates: file.current.created.min(now),
                    },
                    ScheduledKey {
                        kid: file.next.kid.clone(),
                        created: file.next.created,
                        activates: now + every,
                    },
                ],
                retiring: file
                    .previous
                    .iter()
                    .filter(|p| now <= p.retire_after.unwrap_or(0))
                    .cloned()
                    .collect(),
            },
        };
        let keys_dir = self.data_dir.join(KEYS_DIR);
        while schedule.ahead(now) < ahead {
            let last = schedule.end().max(now);
            let pem = new_pem()?;
            let key = SigningKey::from_pem(&pem)?;
            write_key(&keys_dir, key.kid(), &pem)?;
            schedule.keys.push(ScheduledKey {
                kid: key.kid().to_string(),
                created: now,
                activates: last + every,
            });
        }
        let (roles, _) = schedule.roles_at(now);
        write_set(&self.data_dir, &roles)?;
        self.state
            .store(Arc::new(load(&self.data_dir, roles.clone(), now)?));
        remove_unnamed_keys(&keys_dir, &roles);
        Ok(roles)
    }

    /// Ends a schedule: the roles derived now become a manual set (`next` is the planned
    /// next key, or a new one when the schedule had run out); later planned keys are
    /// removed. Rotation is then by `rotate` again.
    pub fn unschedule(&self, now: i64) -> Result<SetFile, KeySetError> {
        let _guard = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(schedule) = self.set().schedule else {
            return Err(KeySetError::NotScheduled);
        };
        let (mut roles, _) = schedule.roles_at(now);
        roles.schedule = None;
        let keys_dir = self.data_dir.join(KEYS_DIR);
        if roles.next.kid == roles.current.kid {
            let pem = new_pem()?;
            let key = SigningKey::from_pem(&pem)?;
            write_key(&keys_dir, key.kid(), &pem)?;
            roles.next = KeyEntry {
                kid: key.kid().to_string(),
                created: now,
                retire_after: None,
            };
        }
        write_set(&self.data_dir, &roles)?;
        self.state
            .store(Arc::new(load(&self.data_dir, roles.clone(), now)?));
        remove_unnamed_keys(&keys_dir, &roles);
        Ok(roles)
    }
}

/// Every kid a set names (a schedule's planned and retiring keys included).
fn named_kids(file: &SetFile) -> Vec<String> {
    let mut kids: Vec<String> = std::iter::once(&file.current)
        .chain(std::iter::once(&file.next))
        .chain(file.previous.iter())
        .map(|e| e.kid.clone())
        .collect();
    if let Some(s) = &file.schedule {
        kids.extend(s.keys.iter().map(|k| k.kid.clone()));
        kids.extend(s.retiring.iter().map(|k| k.kid.clone()));
    }
    kids.sort();
    kids.dedup();
    kids
}

/// Deletes key files the set no longer names (a key out of the schedule verifies nothing
/// again; keeping its private key would only be a liability).
fn remove_unnamed_keys(keys_dir: &Path, file: &SetFile) {
    let named = named_kids(file);
    for entry in std::fs::read_dir(keys_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(kid) = name.strip_suffix(".pem") {
            if !named.iter().any(|k| k == kid) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Reads every key file `file` names and derives its roles at `now`.
fn load(data_dir: &Path, file: SetFile, now: i64) -> Result<Loaded, KeySetError> {
    let keys_dir = data_dir.join(KEYS_DIR);
    let mut keys = std::collections::BTreeMap::new();
    for kid in named_kids(&file) {
        let path = keys_dir.join(format!("{kid}.pem"));
        let pem = std::fs::read(&path).map_err(io(&path))?;
        let key = SigningKey::from_pem(&pem)?;
        if key.kid() != kid {
            return Err(KeySetError::Format {
                path: path.display().to_string(),
                message: format!("holds key {}, not {kid}", key.kid()),
            });
        }
        keys.insert(kid, Arc::new(key));
    }
    let (roles, changes_at) = match &file.schedule {
        Some(schedule) if schedule.keys.is_empty() => {
            return Err(KeySetError::Format {
                path: data_dir.join(SET_FILE).display().to_string(),
                message: "the schedule has no keys".into(),
            })
        }
        Some(schedule) => schedule.roles_at(now),
        None => (file, i64::MAX),
    };
    derive(&Arc::new(keys), roles, changes_at)
}

/// The loaded state for these roles, from keys already read.
fn derive(
    keys: &Arc<std::collections::BTreeMap<String, Arc<SigningKey>>>,
    roles: SetFile,
    changes_at: i64,
) -> Result<Loaded, KeySetError> {
    let pick = |entry: &KeyEntry| {
        keys.get(&entry.kid)
            .cloned()
            .ok_or_else(|| KeySetError::UnknownKid(entry.kid.clone()))
    };
    Ok(Loaded {
        current: pick(&roles.current)?,
        next: pick(&roles.next)?,
        previous: roles.previous.iter().map(pick).collect::<Result<_, _>>()?,
        keys: keys.clone(),
        file: roles,
        changes_at,
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

    fn kid_of(token: &str) -> String {
        use base64::Engine;
        let header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        header["kid"].as_str().unwrap().to_string()
    }

    fn claims_at(iat: i64, lifetime: i64) -> AccessTokenClaims {
        AccessTokenClaims {
            iat,
            ..claims(iat + lifetime)
        }
    }

    /// A schedule: the published next activates at its time (on the signing path, by the
    /// token's iat), previous keys leave /jwks after keepFor by themselves, the fingerprint
    /// is the same whatever the clock says and on a copy of the set, manual rotation is
    /// refused, and `--off` gives a manual set back.
    #[test]
    fn a_schedule_activates_keys_by_the_clock_and_drops_them_after_their_tokens() {
        const HOUR: i64 = 3_600;
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_000_000;
        let ring = KeyRing::load_or_create(dir.path(), t0).unwrap();
        let manual = ring.set();
        assert!(matches!(
            ring.schedule(t0, 600, 3, 300),
            Err(KeySetError::InvalidSchedule(_))
        ));
        assert!(matches!(
            ring.schedule(t0, HOUR, 3, HOUR),
            Err(KeySetError::InvalidSchedule(_))
        ));
        let planned = ring.schedule(t0, HOUR, 3, 300).unwrap();
        let schedule = planned.schedule.clone().unwrap();
        assert_eq!(schedule.keys.len(), 4, "current + 3 ahead");
        assert_eq!(
            schedule.keys[1].kid, manual.next.kid,
            "the published next goes first"
        );
        assert_eq!(schedule.keys[1].activates, t0 + HOUR);
        assert_eq!(schedule.keys[3].activates, t0 + 3 * HOUR);
        assert_eq!(planned.current.kid, manual.current.kid);
        assert_eq!(schedule.ahead(t0), 3);
        let fingerprint = ring.fingerprint();
        assert_ne!(fingerprint, manual.fingerprint());
        assert!(matches!(
            ring.rotate(t0, 300),
            Err(KeySetError::Scheduled { next }) if next == crate::store::health::rfc3339(t0 + HOUR)
        ));

        // A copy of the set on another node, whose clock is 2 s ahead.
        let other_dir = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join(SET_FILE), other_dir.path().join(SET_FILE)).unwrap();
        let copy_keys = other_dir.path().join(KEYS_DIR);
        std::fs::create_dir_all(&copy_keys).unwrap();
        for entry in std::fs::read_dir(dir.path().join(KEYS_DIR)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy_keys.join(entry.file_name())).unwrap();
        }
        let other = KeyRing::load_or_create(other_dir.path(), t0 + HOUR + 1).unwrap();
        assert_eq!(other.fingerprint(), fingerprint, "clocks do not change it");
        assert_eq!(other.kid(), schedule.keys[1].kid);

        // Before the activation the current key signs; from it on, the next one, without
        // any call but mint.
        let before = ring.mint(&claims_at(t0 + HOUR - 1, 300)).unwrap();
        assert_eq!(kid_of(&before), manual.current.kid);
        let after = ring.mint(&claims_at(t0 + HOUR, 300)).unwrap();
        assert_eq!(kid_of(&after), schedule.keys[1].kid);
        assert_eq!(ring.kid(), schedule.keys[1].kid);
        assert_eq!(
            ring.fingerprint(),
            fingerprint,
            "roles moved, fingerprint did not"
        );
        assert!(ring.verify(&before).is_some() && ring.verify(&after).is_some());
        assert_eq!(ring.current_since(), t0 + HOUR);
        let published = kids(&ring);
        assert_eq!(
            published,
            vec![
                schedule.keys[1].kid.clone(),
                schedule.keys[2].kid.clone(),
                manual.current.kid.clone()
            ]
        );
        assert!(ring
            .retire(&manual.current.kid, t0 + HOUR + 10, false)
            .is_err());

        // keepFor after the activation the old key leaves by itself (housekeeping).
        assert!(!ring.refresh(t0 + HOUR + 300));
        assert!(ring.refresh(t0 + HOUR + 301));
        assert!(!kids(&ring).contains(&manual.current.kid));
        assert!(ring.verify(&before).is_none());

        // The last key: the schedule has run out, the last key keeps signing.
        assert!(ring.refresh(t0 + 3 * HOUR));
        assert_eq!(ring.kid(), schedule.keys[3].kid);
        assert_eq!(ring.set().next.kid, ring.kid());
        assert_eq!(kids(&ring).iter().filter(|k| **k == ring.kid()).count(), 1);
        assert_eq!(ring.schedule_end(), t0 + 3 * HOUR);

        // Extending keeps the planned times and drops what has left /jwks.
        let now = t0 + 3 * HOUR + 400;
        let extended = ring.schedule(now, 2 * HOUR, 2, 300).unwrap();
        let s = extended.schedule.unwrap();
        assert_eq!(s.keys[0].kid, schedule.keys[3].kid, "expired keys are gone");
        assert_eq!(s.keys[1].activates, now + 2 * HOUR);
        assert_eq!(s.ahead(now), 2);
        assert!(!dir
            .path()
            .join(KEYS_DIR)
            .join(format!("{}.pem", manual.current.kid))
            .exists());

        // Ending the schedule: a manual set with the planned next; rotation works again.
        let off = ring.unschedule(now).unwrap();
        assert!(off.schedule.is_none());
        assert_eq!(off.next.kid, s.keys[1].kid);
        assert!(!dir
            .path()
            .join(KEYS_DIR)
            .join(format!("{}.pem", s.keys[2].kid))
            .exists());
        let rotated = ring.rotate(now, 300).unwrap();
        assert_eq!(rotated.current.kid, s.keys[1].kid);
        let reopened = KeyRing::load_or_create(dir.path(), now).unwrap();
        assert_eq!(reopened.set(), rotated);
    }
}
