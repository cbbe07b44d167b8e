//! Admin tokens: short-lived access tokens and longer refresh tokens, HS256-signed with a key
//! derived from `SECRET_KEY`. Each carries a `jti` (revocable one by one on logout) and the user's
//! `ver` (bumping it revokes every token of that user, e.g. when the user is disabled).

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
}

impl Default for TokenTtl {
    fn default() -> Self {
        Self {
            access_s: 15 * 60,
            refresh_s: 7 * 24 * 3600,
        }
    }
}

pub struct Tokens {
    encoding: EncodingKey,
    /// Only the current key: tokens signed under `SECRET_KEY_PREVIOUS` are refused. A rotation
    /// usually follows a leak, and whoever holds the old secret could sign any claims with it (a
    /// refresh token under it would buy a genuine pair under the new key); admins sign in again.
    decoding: DecodingKey,
    pub ttl: TokenTtl,
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

    fn sign(&self, sub: &str, role: &str, ver: i64, typ: TokenKind, now: i64) -> Result<String, TokenError> {
        let ttl = match typ {
            TokenKind::Access => self.ttl.access_s,
            TokenKind::Refresh => self.ttl.refresh_s,
        };
        let claims = Claims {
            sub: sub.to_string(),
            role: role.to_string(),
            typ,
            jti: crate::store::new_id(),
            ver,
            iat: now,
            exp: now + ttl,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|_| TokenError::Invalid)
    }

    pub fn issue(&self, sub: &str, role: &str, ver: i64, now: i64) -> Result<TokenPair, TokenError> {
        Ok(TokenPair {
            access_token: self.sign(sub, role, ver, TokenKind::Access, now)?,
            refresh_token: self.sign(sub, role, ver, TokenKind::Refresh, now)?,
            token_type: "Bearer",
            expires_in: self.ttl.access_s,
        })
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
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_and_verifies_by_kind() {
        let t = Tokens::new(b"k".repeat(32).as_slice(), TokenTtl::default());
        let now = crate::store::now();
        let pair = t.issue("u1", "admin", 0, now).unwrap();
        let c = t.verify(&pair.access_token, TokenKind::Access).unwrap();
        assert_eq!((c.sub.as_str(), c.role.as_str()), ("u1", "admin"));
        assert_eq!(
            t.verify(&pair.refresh_token, TokenKind::Access).unwrap_err(),
            TokenError::WrongKind
        );
        let other = Tokens::new(b"x".repeat(32).as_slice(), TokenTtl::default());
        assert!(other.verify(&pair.access_token, TokenKind::Access).is_err());
        let old = t.issue("u1", "admin", 0, now - 10_000).unwrap();
        assert!(t.verify(&old.access_token, TokenKind::Access).is_err(), "expired");
        // Flip a character of the signature (its first, which carries only signature bits).
        let sig_start = pair.access_token.rfind('.').unwrap() + 1;
        let mut tampered = pair.access_token.clone().into_bytes();
        tampered[sig_start] = if tampered[sig_start] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(t.verify(&tampered, TokenKind::Access).is_err());
    }

    /// After a rotation, every token of the old key is refused, genuine or forged with it.
    #[test]
    fn tokens_of_the_previous_key_are_refused() {
        let (old_key, new_key) = (b"o".repeat(32), b"n".repeat(32));
        let old = Tokens::new(&old_key, TokenTtl::default());
        let pair = old.issue("u1", "admin", 0, crate::store::now()).unwrap();
        let rolled = Tokens::new(&new_key, TokenTtl::default());
        assert!(rolled.verify(&pair.access_token, TokenKind::Access).is_err());
        assert!(rolled.verify(&pair.refresh_token, TokenKind::Refresh).is_err());
    }
}
