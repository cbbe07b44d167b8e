//! Admin tokens: short-lived access tokens and longer refresh tokens, HS256-signed with a key
//! derived from `SECRET_KEY`. Each carries a `jti` (revocable one by one), the `sid` of the sign-in
//! it descends from (every pair a login's refresh tokens buy shares it, so logout, or a refresh
//! token used twice, ends the whole sign-in) and the user's `ver` (bumping it revokes every token
//! of that user, e.g. when the user is disabled).

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Access,
    Refresh,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    pub role: String,
    pub typ: TokenKind,
    pub jti: String,
    /// The sign-in: set by login, carried by each refresh. Tokens issued before sign-ins were
    /// tracked have none and are revoked one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// When the sign-in began (OIDC's `auth_time`): no token of it outlives that plus
    /// `TokenTtl::sign_in_s`, however often it is refreshed. Tokens from before it was carried
    /// count from their own `iat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    pub ver: i64,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is invalid or expired")]
    Invalid,
    #[error("token is of the wrong kind")]
    WrongKind,
}

/// Token lifetimes, seconds.
#[derive(Debug, Clone, Copy)]
pub struct TokenTtl {
    pub access_s: i64,
    pub refresh_s: i64,
    /// The longest a sign-in lasts, refreshes included: then its owner signs in again.
    pub sign_in_s: i64,
}

impl Default for TokenTtl {
    fn default() -> Self {
        Self {
            access_s: 15 * 60,
            refresh_s: 7 * 24 * 3600,
            sign_in_s: 30 * 24 * 3600,
        }
    }
}

/// The sign-in a pair belongs to: its id and when it began.
#[derive(Debug, Clone, Copy)]
pub struct SignIn<'a> {
    pub sid: &'a str,
    pub auth_time: i64,
}

pub struct Tokens {
    encoding: EncodingKey,
    /// Only the current key: tokens signed under `SECRET_KEY_PREVIOUS` are refused. A rotation
    /// usually follows a leak, and whoever holds the old secret could sign any claims with it (a
    /// refresh token under it would buy a genuine pair under the new key); admins sign in again.
    decoding: DecodingKey,
    pub ttl: TokenTtl,
}

/// Whom a pair is issued to.
pub struct Subject<'a> {
    pub id: &'a str,
    pub role: &'a str,
    /// The user's token version at issue.
    pub ver: i64,
}

/// The revocation entry that ends a whole sign-in (a `jti` is a bare id, so the two never clash).
pub fn sign_in_entry(sid: &str) -> String {
    format!("sid:{sid}")
}

/// A freshly issued pair.
#[derive(Debug, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
}

impl Tokens {
    pub fn new(key: &[u8], ttl: TokenTtl) -> Self {
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            ttl,
        }
    }

    fn sign(&self, user: &Subject, sign_in: SignIn, typ: TokenKind, now: i64) -> Result<String, TokenError> {
        let ttl = self.lifetime(typ);
        let claims = Claims {
            sub: user.id.to_string(),
            role: user.role.to_string(),
            typ,
            jti: crate::store::new_id(),
            sid: Some(sign_in.sid.to_string()),
            auth_time: Some(sign_in.auth_time),
            ver: user.ver,
            iat: now,
            // Never past the sign-in's end: refreshing does not make it last for ever.
            exp: (now + ttl).min(self.sign_in_end(sign_in.auth_time)),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|_| TokenError::Invalid)
    }

    /// A pair for `user`: of a new sign-in (`None`, at login) or of the refresh token's.
    pub fn issue(&self, user: &Subject, sign_in: Option<SignIn>, now: i64) -> Result<TokenPair, TokenError> {
        let new_sid;
        let sign_in = match sign_in {
            Some(s) => s,
            None => {
                new_sid = crate::store::new_id();
                SignIn {
                    sid: &new_sid,
                    auth_time: now,
                }
            }
        };
        Ok(TokenPair {
            access_token: self.sign(user, sign_in, TokenKind::Access, now)?,
            refresh_token: self.sign(user, sign_in, TokenKind::Refresh, now)?,
            token_type: "Bearer",
            // As the access token's `exp` says: shorter near the sign-in's end.
            expires_in: self.ttl.access_s.min(self.sign_in_end(sign_in.auth_time) - now).max(0),
        })
    }

    /// When a sign-in that began at `auth_time` ends.
    fn sign_in_end(&self, auth_time: i64) -> i64 {
        auth_time.saturating_add(self.ttl.sign_in_s)
    }

    /// Checks signature, algorithm, expiry (no leeway) and kind. Revocation is the caller's job:
    /// it needs the store.
    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        let claims = decode::<Claims>(token, &self.decoding, &v)
            .map_err(|_| TokenError::Invalid)?
            .claims;
        if claims.typ != kind {
            return Err(TokenError::WrongKind);
        }
        // A token issued for longer than its kind lives now (the TTL was lowered since): refused,
        // or it would outlive the revocation entries, which are kept as long as the current TTL.
        if claims.exp.saturating_sub(claims.iat) > self.lifetime(kind) {
            return Err(TokenError::Invalid);
        }
        // Nor one whose sign-in is over (its lifetime was lowered since, or this is its last
        // second): a refresh is refused before it spends the token, rather than buying a pair
        // that is dead on arrival.
        let auth_time = claims.auth_time.unwrap_or(claims.iat);
        if self.sign_in_end(auth_time) <= crate::store::now() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    fn lifetime(&self, kind: TokenKind) -> i64 {
        match kind {
            TokenKind::Access => self.ttl.access_s,
            TokenKind::Refresh => self.ttl.refresh_s,
        }
    }
}

impl Claims {
    /// The sign-in these claims belong to, if they name one.
    pub fn sign_in(&self) -> Option<SignIn<'_>> {
        Some(SignIn {
            sid: self.sid.as_deref()?,
            auth_time: self.auth_time.unwrap_or(self.iat),
        })
    }

    /// The revocation entries that refuse this token: its own, and its sign-in's.
    pub fn revocation_entries(&self) -> Vec<String> {
        let mut entries = vec![self.jti.clone()];
        entries.extend(self.sid.as_deref().map(sign_in_entry));
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: Subject<'static> = Subject {
        id: "u1",
        role: "admin",
        ver: 0,
    };

    #[test]
    fn issues_and_verifies_by_kind() {
        let t = Tokens::new(b"k".repeat(32).as_slice(), TokenTtl::default());
        let now = crate::store::now();
        let pair = t.issue(&U1, None, now).unwrap();
        let c = t.verify(&pair.access_token, TokenKind::Access).unwrap();
        assert_eq!((c.sub.as_str(), c.role.as_str()), ("u1", "admin"));
        let r = t.verify(&pair.refresh_token, TokenKind::Refresh).unwrap();
        assert!(c.sid.is_some() && c.sid == r.sid, "a pair belongs to one sign-in");
        let next = t.issue(&U1, r.sign_in(), now).unwrap();
        assert_eq!(t.verify(&next.access_token, TokenKind::Access).unwrap().sid, c.sid);
        let second = t.issue(&U1, None, now).unwrap();
        assert_ne!(t.verify(&second.access_token, TokenKind::Access).unwrap().sid, c.sid);
        assert_eq!(
            t.verify(&pair.refresh_token, TokenKind::Access).unwrap_err(),
            TokenError::WrongKind
        );
        let other = Tokens::new(b"x".repeat(32).as_slice(), TokenTtl::default());
        assert!(other.verify(&pair.access_token, TokenKind::Access).is_err());
        let old = t.issue(&U1, None, now - 10_000).unwrap();
        assert!(t.verify(&old.access_token, TokenKind::Access).is_err(), "expired");
        // Flip a character of the signature (its first, which carries only signature bits).
        let sig_start = pair.access_token.rfind('.').unwrap() + 1;
        let mut tampered = pair.access_token.clone().into_bytes();
        tampered[sig_start] = if tampered[sig_start] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(t.verify(&tampered, TokenKind::Access).is_err());
    }

    /// Refreshing does not make a sign-in last for ever: no token of it expires past its start
    /// plus the sign-in's lifetime, and one from before `auth_time` was carried counts from its
    /// own issue.
    #[test]
    fn a_sign_in_ends_however_often_it_is_refreshed() {
        let t = Tokens::new(b"k".repeat(32).as_slice(), TokenTtl::default());
        let (now, day) = (crate::store::now(), 24 * 3600);
        let sign_in = |auth_time| SignIn { sid: "s1", auth_time };
        // Refreshed on day 29 of its 30: the new pair lives one more day, not the refresh's 7.
        let late = t.issue(&U1, Some(sign_in(now - 29 * day)), now).unwrap();
        let claims = t.verify(&late.refresh_token, TokenKind::Refresh).unwrap();
        assert_eq!((claims.auth_time, claims.exp), (Some(now - 29 * day), now + day));
        assert_eq!(
            claims.sign_in().map(|s| s.auth_time),
            Some(now - 29 * day),
            "carried on"
        );
        // Past its 30 days, what a refresh would buy is already expired.
        let over = t.issue(&U1, Some(sign_in(now - 31 * day)), now).unwrap();
        assert!(t.verify(&over.refresh_token, TokenKind::Refresh).is_err());
        assert!(t.verify(&over.access_token, TokenKind::Access).is_err());
        // A pair bought in a sign-in's last minutes says so in `expires_in`.
        let last = t.issue(&U1, Some(sign_in(now - 30 * day + 60)), now).unwrap();
        assert_eq!(last.expires_in, 60);
        // A lower sign-in lifetime holds at once for tokens issued under the longer one.
        let shorter = Tokens::new(
            b"k".repeat(32).as_slice(),
            TokenTtl {
                sign_in_s: 20 * day,
                ..TokenTtl::default()
            },
        );
        assert!(shorter.verify(&late.refresh_token, TokenKind::Refresh).is_err());
        // A token from before `auth_time` was carried counts from its own issue.
        let mut old = claims.clone();
        old.auth_time = None;
        assert_eq!(old.sign_in().map(|s| s.auth_time), Some(old.iat));
    }

    /// A token issued under a longer lifetime than its kind has now is refused: it would outlive
    /// the revocation of its sign-in.
    #[test]
    fn a_token_longer_lived_than_its_kind_now_is_refused() {
        let key = b"k".repeat(32);
        let long = Tokens::new(&key, TokenTtl::default());
        let pair = long.issue(&U1, None, crate::store::now()).unwrap();
        let short = Tokens::new(
            &key,
            TokenTtl {
                access_s: 15 * 60,
                refresh_s: 24 * 3600,
                ..TokenTtl::default()
            },
        );
        assert!(short.verify(&pair.access_token, TokenKind::Access).is_ok());
        assert_eq!(
            short.verify(&pair.refresh_token, TokenKind::Refresh).unwrap_err(),
            TokenError::Invalid
        );
    }

    /// After a rotation, every token of the old key is refused, genuine or forged with it.
    #[test]
    fn tokens_of_the_previous_key_are_refused() {
        let (old_key, new_key) = (b"o".repeat(32), b"n".repeat(32));
        let old = Tokens::new(&old_key, TokenTtl::default());
        let pair = old.issue(&U1, None, crate::store::now()).unwrap();
        let rolled = Tokens::new(&new_key, TokenTtl::default());
        assert!(rolled.verify(&pair.access_token, TokenKind::Access).is_err());
        assert!(rolled.verify(&pair.refresh_token, TokenKind::Refresh).is_err());
    }
}
