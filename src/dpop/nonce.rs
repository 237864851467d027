//! Server nonces (RFC 9449 §8, §9): minting the nonce handed out in `DPoP-Nonce`, and
//! judging the `nonce` claim of a proof, through the [`SenderStore`] (so a nonce minted by
//! one node of a Redis site is valid on every node).
//!
//! One nonce is current at a time and every nonce stays valid for its full TTL, so
//! concurrent clients never invalidate each other's; a new one is minted when the current
//! one has used half its TTL. Not responsible for *when* a nonce is required (the policy
//! and the restart fence decide that, in `core`).

use crate::store::{SenderStore, StoreError};
use std::sync::Mutex;

struct CurrentNonce {
    value: String,
    minted_at: i64,
}

/// The nonce this process hands out, minted and remembered through the store.
#[derive(Default)]
pub struct NonceSource {
    current: Mutex<Option<CurrentNonce>>,
}

impl NonceSource {
    /// The nonce to hand out now, minting and storing a new one when due.
    pub async fn current(
        &self,
        store: &dyn SenderStore,
        now: i64,
        ttl: i64,
    ) -> Result<String, StoreError> {
        if let Ok(guard) = self.current.lock() {
            if let Some(current) = guard.as_ref() {
                if now - current.minted_at < ttl / 2 && now >= current.minted_at {
                    return Ok(current.value.clone());
                }
            }
        }
        let value = crate::secret::generate();
        store.put_nonce(&value, now + ttl).await?;
        if let Ok(mut guard) = self.current.lock() {
            *guard = Some(CurrentNonce {
                value: value.clone(),
                minted_at: now,
            });
        }
        Ok(value)
    }

    /// Whether a proof's `nonce` claim is one this site minted and that has not expired.
    pub async fn is_valid(
        &self,
        store: &dyn SenderStore,
        nonce: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        store.nonce_is_valid(nonce, now).await
    }

    /// Stops handing out the current nonce (it predates a loss of claims, or the store
    /// forgot it); the next call to [`NonceSource::current`] mints a new one.
    pub fn forget(&self) {
        if let Ok(mut guard) = self.current.lock() {
            *guard = None;
        }
    }
}
