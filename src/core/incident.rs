//! The operator's incident acts on issued tokens: revoke one token by its `jti`, or every
//! live token of a client. The records say which tokens exist (the store files them under
//! the token's hash, never the token), so both are a scan of the live records followed by
//! the same durable [`SenderStore::revoke_token`] that `/revoke` uses.
//!
//! Who may ask (root or the authority's user, on the control socket) and the audit event
//! are the edge's: `server::control_listener`. Nothing here knows about sockets.

use crate::store::{SenderStore, StoreError, TokenRecord};

/// Which live tokens to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The token whose `jti` claim is this.
    Jti(String),
    /// Every live token issued to this client.
    Client(String),
}

impl Selection {
    fn selects(&self, record: &TokenRecord) -> bool {
        match self {
            Selection::Jti(jti) => &record.jti == jti,
            Selection::Client(client) => &record.client_id == client,
        }
    }
}

/// What a revocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked {
    /// The `jti` of every token this call revoked.
    pub jtis: Vec<String>,
    /// Selected tokens that were already revoked.
    pub already_revoked: usize,
}

/// Revokes every live token `selection` picks; each revocation is durable before this
/// returns (the store's own guarantee).
pub async fn revoke(
    store: &dyn SenderStore,
    selection: &Selection,
    now: i64,
) -> Result<Revoked, StoreError> {
    let mut outcome = Revoked::default();
    for (id, record) in store.live_tokens(now).await? {
        if !selection.selects(&record) {
            continue;
        }
        if record.revoked {
            outcome.already_revoked += 1;
            continue;
        }
        store.revoke_token(id).await?;
        outcome.jtis.push(record.jti);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;
    use crate::store::TokenId;

    fn record(client: &str, jti: &str, exp: i64) -> TokenRecord {
        TokenRecord {
            client_id: client.into(),
            tenant: "t".into(),
            scope: "read".into(),
            audience: vec![],
            iat: 0,
            exp,
            jti: jti.into(),
            token_type: "DPoP".into(),
            cnf_jkt: Some("k".into()),
            sender_certificate: None,
            revoked: false,
            subject: None,
            family: None,
        }
    }

    #[tokio::test]
    async fn revoking_a_client_revokes_its_live_tokens_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        for (token, client, jti, exp) in [
            ("t1", "a", "j1", 100),
            ("t2", "a", "j2", 100),
            ("t3", "b", "j3", 100),
            ("t4", "a", "j4", 5), // expired at now = 10
        ] {
            store
                .put_token(TokenId::of(token), &record(client, jti, exp))
                .await
                .unwrap();
        }
        let done = revoke(&store, &Selection::Client("a".into()), 10)
            .await
            .unwrap();
        let mut jtis = done.jtis.clone();
        jtis.sort();
        assert_eq!(jtis, ["j1", "j2"]);
        for (token, revoked) in [("t1", true), ("t2", true), ("t3", false), ("t4", false)] {
            let got = store.get_token(TokenId::of(token)).await.unwrap().unwrap();
            assert_eq!(got.revoked, revoked, "{token}");
        }
        let again = revoke(&store, &Selection::Client("a".into()), 10)
            .await
            .unwrap();
        assert_eq!((again.jtis.len(), again.already_revoked), (0, 2));
        let one = revoke(&store, &Selection::Jti("j3".into()), 10)
            .await
            .unwrap();
        assert_eq!(one.jtis, ["j3"]);
        let none = revoke(&store, &Selection::Jti("nope".into()), 10)
            .await
            .unwrap();
        assert_eq!(none, Revoked::default());
    }
}
