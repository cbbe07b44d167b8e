//! Client authentication on the proxy port. Keys are held only as HMAC tags (keyed by a key derived
//! from `SECRET_KEY`); the presented key may come as `Authorization: Bearer <key>`,
//! `X-API-Key: <key>`, or the original product's `Bearer <base64(key)>`.
//!
//! Tags are looked up in a hash map. That leaks timing only about the tag of the presented key,
//! which an attacker cannot relate to any real key without the HMAC key.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use ring::hmac;
use subtle::ConstantTimeEq;

use crate::config::ClientConfig;

/// Who is calling: the key's name (safe to log) and what the key may do.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub name: Arc<str>,
    /// The stored key's id; `None` for keys from the config file.
    pub key_id: Option<Arc<str>>,
    /// Providers this key may reach; `None` for all.
    pub allowed_providers: Option<Arc<HashSet<String>>>,
    /// Requests per second this key may make (and token counts per second besides, in a bucket
    /// of their own); `None` for no limit.
    pub rate_limit_rps: Option<u32>,
    /// The bucket all of its user's keys share and the user's requests per second, when an
    /// admin limited the user: minting more keys does not buy more requests.
    pub user_limit: Option<(Arc<str>, u32)>,
}

/// A key minted through the admin API, as the snapshot needs it.
#[derive(Debug, Clone)]
pub struct StoredClientKey {
    pub id: String,
    /// `username/key name`: unique to its user, never a config client's (whose names hold no `/`).
    pub name: String,
    /// Hex HMAC-SHA256 tag.
    pub tag_hex: String,
    /// Unix seconds; the key stops working then.
    pub expires_at: Option<i64>,
    pub allowed_providers: Option<Vec<String>>,
    pub rate_limit_rps: Option<u32>,
    /// The owner's id and the owner's own limit (`key_rate_limit_rps`), shared by all its keys.
    pub user_limit: Option<(String, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")]
    Missing,
    #[error("Invalid API key")]
    Invalid,
    #[error("This API key has expired")]
    Expired,
}

struct Entry {
    identity: ClientIdentity,
    expires_at: Option<i64>,
}

pub struct ClientKeys {
    /// Tells key sets apart, so a key accepted by an earlier one is checked afresh.
    id: u64,
    mac: hmac::Key,
    /// The HMAC key before a `SECRET_KEY` rotation: stored keys may still be tagged with it.
    previous_mac: Option<hmac::Key>,
    by_tag: HashMap<Vec<u8>, Entry>,
}

static NEXT_KEYS_ID: AtomicU64 = AtomicU64::new(1);

/// A key a keep-alive connection presented and had accepted, kept for its next request: a client
/// sending the same key again is not hashed again (the HMAC is most of authentication's cost). It
/// holds only for the key set that accepted it (any configuration change checks the key afresh)
/// and until the key expires. The key stays in the connection's memory, never logged (no `Debug`).
#[derive(Clone)]
pub struct AcceptedKey {
    keys: u64,
    presented: Box<[u8]>,
    identity: ClientIdentity,
    expires_at: Option<i64>,
}

impl ClientKeys {
    /// Keys from the config file only. `mac` keys the tags; it never leaves the process.
    pub fn new(mac: hmac::Key, clients: &[ClientConfig]) -> Self {
        Self::with_stored(mac, clients, &[])
    }

    /// Keys from the config file and from the database. A stored key whose tag is not valid hex is
    /// skipped (it could never match anyway).
    pub fn with_stored(mac: hmac::Key, clients: &[ClientConfig], stored: &[StoredClientKey]) -> Self {
        let mut by_tag = HashMap::new();
        for c in clients {
            let tag = hmac::sign(&mac, c.key.as_bytes()).as_ref().to_vec();
            let identity = ClientIdentity {
                name: c.name.as_str().into(),
                key_id: None,
                allowed_providers: None,
                rate_limit_rps: None,
                user_limit: None,
            };
            by_tag.insert(
                tag,
                Entry {
                    identity,
                    expires_at: None,
                },
            );
        }
        for k in stored {
            let Some(tag) = unhex(&k.tag_hex) else { continue };
            let identity = ClientIdentity {
                name: k.name.as_str().into(),
                key_id: Some(k.id.as_str().into()),
                allowed_providers: k
                    .allowed_providers
                    .as_ref()
                    .map(|l| Arc::new(l.iter().cloned().collect())),
                rate_limit_rps: k.rate_limit_rps,
                user_limit: k
                    .user_limit
                    .as_ref()
                    .map(|(user, rps)| (Arc::from(format!("user:{user}")), *rps)),
            };
            by_tag.entry(tag).or_insert(Entry {
                identity,
                expires_at: k.expires_at,
            });
        }
        Self {
            id: NEXT_KEYS_ID.fetch_add(1, Ordering::Relaxed),
            mac,
            previous_mac: None,
            by_tag,
        }
    }

    /// Also finds stored keys by their tag under `previous`, the HMAC key of the secret before a
    /// rotation (a presented key is hashed a second time only when the first tag is unknown).
    pub fn accepting_previous(mut self, previous: Option<hmac::Key>) -> Self {
        self.previous_mac = previous;
        self
    }

    pub fn len(&self) -> usize {
        self.by_tag.len()
    }

    /// The names keys are known by (the `client` label of the token counter).
    pub fn names(&self) -> HashSet<&str> {
        self.by_tag.values().map(|e| &*e.identity.name).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_tag.is_empty()
    }

    /// The name of the stored key with this id (`username/key name`), while it exists.
    pub fn stored_key_name(&self, id: &str) -> Option<&str> {
        self.by_tag
            .values()
            .find(|e| e.identity.key_id.as_deref() == Some(id))
            .map(|e| &*e.identity.name)
    }

    /// Checks the credential found in the request headers.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        x_api_key: Option<&[u8]>,
    ) -> Result<ClientIdentity, AuthError> {
        self.authenticate_remembering(authorization, x_api_key, &mut None)
    }

    /// As `authenticate`, answered from `accepted` when it holds the same key, accepted by this key
    /// set; `accepted` is left holding the key of a success and emptied by a failure.
    pub fn authenticate_remembering(
        &self,
        authorization: Option<&[u8]>,
        x_api_key: Option<&[u8]>,
        accepted: &mut Option<Arc<AcceptedKey>>,
    ) -> Result<ClientIdentity, AuthError> {
        // An empty header (an SDK that sets `x-api-key: ` by default) does not hide the other.
        let presented = x_api_key
            .filter(|k| !k.is_empty())
            .or_else(|| authorization.and_then(bearer_token).filter(|k| !k.is_empty()));
        let known = accepted
            .take()
            .filter(|a| a.keys == self.id && presented.is_some_and(|p| bool::from(a.presented.as_ref().ct_eq(p))));
        let presented = presented.ok_or(AuthError::Missing)?;
        let known = match known {
            Some(a) => a,
            None => {
                let entry = self.lookup(presented).or_else(|| {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(presented)
                        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(presented))
                        .ok()?;
                    self.lookup(&decoded)
                });
                let entry = entry.ok_or(AuthError::Invalid)?;
                Arc::new(AcceptedKey {
                    keys: self.id,
                    presented: presented.into(),
                    identity: entry.identity.clone(),
                    expires_at: entry.expires_at,
                })
            }
        };
        if known.expires_at.is_some_and(|t| t <= crate::store::now()) {
            return Err(AuthError::Expired);
        }
        let identity = known.identity.clone();
        *accepted = Some(known);
        Ok(identity)
    }

    fn lookup(&self, presented: &[u8]) -> Option<&Entry> {
        let tag = |mac: &hmac::Key| hmac::sign(mac, presented);
        self.by_tag
            .get(tag(&self.mac).as_ref())
            .or_else(|| self.by_tag.get(tag(self.previous_mac.as_ref()?).as_ref()))
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ClientKeys {
        ClientKeys::new(
            crate::secrets::Secrets::from_root(b"0123456789abcdef0123456789abcdef")
                .client_mac()
                .clone(),
            &[ClientConfig {
                name: "dev".into(),
                key: "secret-key-1".into(),
            }],
        )
    }

    #[test]
    fn accepts_every_documented_form() {
        let k = keys();
        assert_eq!(
            &*k.authenticate(Some(b"Bearer secret-key-1"), None).unwrap().name,
            "dev"
        );
        assert_eq!(
            &*k.authenticate(Some(b"bearer   secret-key-1 "), None).unwrap().name,
            "dev"
        );
        assert_eq!(&*k.authenticate(None, Some(b"secret-key-1")).unwrap().name, "dev");
        // An empty x-api-key does not hide the bearer token.
        assert_eq!(
            &*k.authenticate(Some(b"Bearer secret-key-1"), Some(b"")).unwrap().name,
            "dev"
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode("secret-key-1");
        assert_eq!(
            &*k.authenticate(Some(format!("Bearer {b64}").as_bytes()), None)
                .unwrap()
                .name,
            "dev"
        );
    }

    #[test]
    fn refuses_wrong_or_missing() {
        let k = keys();
        assert_eq!(k.authenticate(None, None).unwrap_err(), AuthError::Missing);
        assert_eq!(
            k.authenticate(Some(b"Basic abc"), None).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            k.authenticate(Some(b"Bearer secret-key-2"), None).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(k.authenticate(Some(b"Bearer "), None).unwrap_err(), AuthError::Missing);
    }

    #[test]
    fn a_remembered_key_holds_only_for_the_same_key_and_key_set() {
        let k = keys();
        let mut memory = None;
        let id = k.authenticate_remembering(Some(b"Bearer secret-key-1"), None, &mut memory);
        assert_eq!(&*id.unwrap().name, "dev");
        assert!(memory.is_some());
        let again = k.authenticate_remembering(None, Some(b"secret-key-1"), &mut memory);
        assert_eq!(&*again.unwrap().name, "dev");
        // Another key on the same connection is checked, and a refusal forgets the accepted key.
        let wrong = k.authenticate_remembering(Some(b"Bearer secret-key-2"), None, &mut memory);
        assert_eq!(wrong.unwrap_err(), AuthError::Invalid);
        assert!(memory.is_none());
        // A new key set (the configuration changed: here, the key is gone) checks afresh.
        k.authenticate_remembering(Some(b"Bearer secret-key-1"), None, &mut memory)
            .unwrap();
        let without = ClientKeys::new(k.mac.clone(), &[]);
        let refused = without.authenticate_remembering(Some(b"Bearer secret-key-1"), None, &mut memory);
        assert_eq!(refused.unwrap_err(), AuthError::Invalid);
    }

    #[test]
    fn stored_keys_expire_and_carry_limits() {
        let secrets = crate::secrets::Secrets::from_root(b"0123456789abcdef0123456789abcdef");
        let stored = |id: &str, key: &str, expires_at| StoredClientKey {
            id: id.into(),
            name: format!("name-{id}"),
            tag_hex: secrets.client_key_tag(key.as_bytes()),
            expires_at,
            allowed_providers: Some(vec!["a".into()]),
            rate_limit_rps: Some(3),
            user_limit: None,
        };
        let k = ClientKeys::with_stored(
            secrets.client_mac().clone(),
            &[],
            &[stored("1", "apx-live", None), stored("2", "apx-old", Some(1))],
        );
        let id = k.authenticate(Some(b"Bearer apx-live"), None).unwrap();
        assert_eq!(id.key_id.as_deref(), Some("1"));
        assert_eq!(id.rate_limit_rps, Some(3));
        assert!(id.allowed_providers.unwrap().contains("a"));
        assert_eq!(k.authenticate(None, Some(b"apx-old")).unwrap_err(), AuthError::Expired);
    }
}
