//! Refresh tokens (RFC 6749 §6) for the user grants, as this authority issues them:
//!
//! - only **bound to a DPoP key** (RFC 9449 §5): the token request that would get one
//!   must carry a proof; each refresh must carry a proof by the same key (the core's gate
//!   checks it, `UserGrant::bound_jkt`);
//! - **rotated on every use** and kept in a **family** (one per sign-in): the family has an
//!   absolute end (`refreshToken.absoluteLifetime`), each token an idle end
//!   (`refreshToken.idleLifetime`, never past the family's);
//! - **reuse detection** (RFC 9700 §4.14.2): a refresh token is consumed by an atomic claim
//!   in the store; a second use revokes the family, and with it every access token issued
//!   in it (their records name the family; introspection checks it).
//!
//! Records live in the store beside access-token records (same `TokenRecord`, filed by the
//! SHA-256 of the token): `token_type` `refresh_token` for a token, `refresh_family` for
//! the family (filed under the hash of `sealkit-family:<id>`).

use crate::store::{Claim, SenderStore, StoreError, TokenId, TokenRecord};

pub const REFRESH_TYPE: &str = "refresh_token";
pub const FAMILY_TYPE: &str = "refresh_family";
/// The claim namespace of consumed refresh tokens in the jti table.
const CLAIM_NAMESPACE: &str = "sealkit-refresh-token";

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Unknown, expired, another client's, or its family ended: `invalid_grant`.
    #[error("invalid refresh token: {0}")]
    Invalid(&'static str),
    /// Used before: the family must be revoked (the caller does, and audits it).
    #[error("refresh token reused")]
    Reused {
        family: String,
        client: String,
        subject: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a family's record is filed.
pub fn family_key(family: &str) -> TokenId {
    TokenId::of(&format!("sealkit-family:{family}"))
}

/// Who a family belongs to and what it may get.
#[derive(Debug, Clone)]
pub struct FamilyStart<'a> {
    pub client_id: &'a str,
    pub tenant: &'a str,
    pub subject: &'a str,
    pub scope: &'a str,
    pub audience: &'a [String],
    pub jkt: &'a str,
    /// Unix seconds after which no token of the family is accepted.
    pub absolute_end: i64,
}

/// Files a new family; returns its id.
pub async fn start_family(
    store: &dyn SenderStore,
    start: &FamilyStart<'_>,
    now: i64,
) -> Result<String, StoreError> {
    let family = crate::secret::token_id();
    file_family(store, &family_record(start, &family, now)).await?;
    Ok(family)
}

/// Files a family record made by [`family_record`].
pub async fn file_family(store: &dyn SenderStore, record: &TokenRecord) -> Result<(), StoreError> {
    let family = record.family.as_deref().unwrap_or_default();
    store.put_token(family_key(family), record).await
}

/// The record of family `family`.
pub fn family_record(start: &FamilyStart<'_>, family: &str, now: i64) -> TokenRecord {
    TokenRecord {
        client_id: start.client_id.to_string(),
        tenant: start.tenant.to_string(),
        scope: start.scope.to_string(),
        audience: start.audience.to_vec(),
        iat: now,
        exp: start.absolute_end,
        jti: family.to_string(),
        token_type: FAMILY_TYPE.to_string(),
        cnf_jkt: Some(start.jkt.to_string()),
        sender_certificate: None,
        revoked: false,
        subject: Some(start.subject.to_string()),
        family: Some(family.to_string()),
    }
}

/// Mints a refresh token of `family` (whose record is `family_record`), idle for at most
/// `idle` seconds; returns the token.
pub async fn mint(
    store: &dyn SenderStore,
    family_record: &TokenRecord,
    idle: i64,
    now: i64,
) -> Result<(String, i64), StoreError> {
    let token = super::random_secret();
    let exp = (now + idle).min(family_record.exp);
    let record = TokenRecord {
        iat: now,
        exp,
        jti: crate::secret::token_id(),
        token_type: REFRESH_TYPE.to_string(),
        revoked: false,
        ..family_record.clone()
    };
    store.put_token(TokenId::of(&token), &record).await?;
    Ok((token, exp))
}

/// The family record of `family`, if it is live (known, not revoked, not past its end).
pub async fn live_family(
    store: &dyn SenderStore,
    family: &str,
    now: i64,
) -> Result<Option<TokenRecord>, StoreError> {
    Ok(store
        .get_token(family_key(family))
        .await?
        .filter(|f| !f.revoked && f.exp > now && f.token_type == FAMILY_TYPE))
}

/// Revokes a family (durably); its tokens are refused and inactive from now on.
pub async fn revoke_family(store: &dyn SenderStore, family: &str) -> Result<(), StoreError> {
    store.revoke_token(family_key(family)).await.map(|_| ())
}

/// A presented refresh token that is valid so far: its record and its family's.
#[derive(Debug)]
pub struct Presented {
    pub id: TokenId,
    pub record: TokenRecord,
    pub family: TokenRecord,
}

/// Looks a presented refresh token up for `client_id` at `now`.
pub async fn look_up(
    store: &dyn SenderStore,
    token: &str,
    client_id: &str,
    now: i64,
) -> Result<Presented, RefreshError> {
    let id = TokenId::of(token);
    let record = store
        .get_token(id)
        .await?
        .filter(|r| r.token_type == REFRESH_TYPE)
        .ok_or(RefreshError::Invalid("unknown refresh token"))?;
    if record.client_id != client_id {
        return Err(RefreshError::Invalid(
            "this refresh token was not issued to this client",
        ));
    }
    let family_id = record
        .family
        .clone()
        .ok_or(RefreshError::Invalid("refresh token without a family"))?;
    let family = live_family(store, &family_id, now)
        .await?
        .ok_or(RefreshError::Invalid(
            "the sign-in of this refresh token has ended",
        ))?;
    if record.revoked {
        return Err(RefreshError::Reused {
            family: family_id,
            client: record.client_id,
            subject: record.subject.unwrap_or_default(),
        });
    }
    if record.exp <= now {
        return Err(RefreshError::Invalid("the refresh token expired"));
    }
    Ok(Presented { id, record, family })
}

/// Consumes a refresh token: an atomic claim (a concurrent second use loses it and is a
/// reuse), then the durable revocation of its record (a later use after a crash is a
/// reuse too).
pub async fn consume(
    store: &dyn SenderStore,
    presented: &Presented,
    now: i64,
) -> Result<(), RefreshError> {
    let record = &presented.record;
    let claim = store
        .claim_jti(CLAIM_NAMESPACE, &record.jti, record.exp.max(now + 1), now)
        .await?;
    if claim == Claim::Replayed {
        return Err(RefreshError::Reused {
            family: record.family.clone().unwrap_or_default(),
            client: record.client_id.clone(),
            subject: record.subject.clone().unwrap_or_default(),
        });
    }
    store.revoke_token(presented.id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;

    #[tokio::test]
    async fn rotation_reuse_and_family_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        let now = crate::clock::unix_now();
        let audience = vec!["api".to_string()];
        let family = start_family(
            &store,
            &FamilyStart {
                client_id: "cli",
                tenant: "t",
                subject: "ann",
                scope: "read",
                audience: &audience,
                jkt: "k",
                absolute_end: now + 3600,
            },
            now,
        )
        .await
        .unwrap();
        let family_record = live_family(&store, &family, now).await.unwrap().unwrap();
        let (first, exp) = mint(&store, &family_record, 60, now).await.unwrap();
        assert_eq!(exp, now + 60);
        assert!(matches!(
            look_up(&store, &first, "other", now).await,
            Err(RefreshError::Invalid(_))
        ));
        let presented = look_up(&store, &first, "cli", now).await.unwrap();
        assert_eq!(presented.record.subject.as_deref(), Some("ann"));
        consume(&store, &presented, now).await.unwrap();
        // The second use of the same token is a reuse, by claim and by record.
        assert!(matches!(
            consume(&store, &presented, now).await,
            Err(RefreshError::Reused { .. })
        ));
        assert!(matches!(
            look_up(&store, &first, "cli", now).await,
            Err(RefreshError::Reused { .. })
        ));
        let (second, _) = mint(&store, &family_record, 60, now).await.unwrap();
        assert!(
            look_up(&store, &second, "cli", now + 61).await.is_err(),
            "idle end"
        );
        revoke_family(&store, &family).await.unwrap();
        assert!(matches!(
            look_up(&store, &second, "cli", now).await,
            Err(RefreshError::Invalid(_))
        ));
    }
}
