//! PASETO v4.public session tokens: `sub` = user id, `exp` = expiry.
//! The secret key stays with the account service; edges verify with the
//! 32-byte public key they fetch over `msgr.v1.rpc.bootstrap`.

use std::time::Duration;

use pasetors::claims::{Claims, ClaimsValidationRules};
use pasetors::errors::{ClaimValidationError, Error as PasetoError};
use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::token::UntrustedToken;
use pasetors::version4::V4;
use pasetors::{public, Public};

/// Why a token was refused. The edge maps `Expired` to `token_expired`,
/// everything else to `unauthorized`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
    #[error("invalid key")]
    Key,
}

/// Signs tokens. Holds the Ed25519 secret key.
pub struct TokenSigner {
    secret: AsymmetricSecretKey<V4>,
    public: AsymmetricPublicKey<V4>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(<redacted>)")
    }
}

impl TokenSigner {
    /// A fresh random key pair.
    ///
    /// # Errors
    /// If the OS random source fails.
    pub fn generate() -> Result<Self, TokenError> {
        let kp = AsymmetricKeyPair::<V4>::generate().map_err(|_| TokenError::Key)?;
        Ok(Self {
            secret: kp.secret,
            public: kp.public,
        })
    }

    /// From the 64-byte secret key ([`Self::secret_bytes`]).
    ///
    /// # Errors
    /// If the bytes are not a v4 secret key.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        let secret = AsymmetricSecretKey::<V4>::from(bytes).map_err(|_| TokenError::Key)?;
        let public = AsymmetricPublicKey::<V4>::try_from(&secret).map_err(|_| TokenError::Key)?;
        Ok(Self { secret, public })
    }

    /// The secret key's bytes, for persisting it.
    #[must_use]
    pub fn secret_bytes(&self) -> &[u8] {
        self.secret.as_bytes()
    }

    /// The 32-byte public key that verifies this signer's tokens.
    #[must_use]
    pub fn public_bytes(&self) -> Vec<u8> {
        self.public.as_bytes().to_vec()
    }

    /// A token for `user_id` valid for `ttl`; returns it with its expiry (ms).
    ///
    /// # Errors
    /// Only on internal signing failures.
    pub fn sign(&self, user_id: &str, ttl: Duration) -> Result<(String, i64), TokenError> {
        self.sign_session(user_id, None, ttl)
    }

    /// A token for `user_id` in session `session_id` (its `jti`: a revoked
    /// session's tokens are refused by the edges), valid for `ttl`.
    ///
    /// # Errors
    /// Only on internal signing failures.
    pub fn sign_session(
        &self,
        user_id: &str,
        session_id: Option<&str>,
        ttl: Duration,
    ) -> Result<(String, i64), TokenError> {
        let mut claims = Claims::new().map_err(|_| TokenError::Invalid)?;
        claims
            .set_expires_in(&ttl)
            .map_err(|_| TokenError::Invalid)?;
        claims.subject(user_id).map_err(|_| TokenError::Invalid)?;
        if let Some(sid) = session_id {
            claims
                .token_identifier(sid)
                .map_err(|_| TokenError::Invalid)?;
        }
        let token = public::sign(&self.secret, &claims, None, None).map_err(|_| TokenError::Key)?;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        Ok((token, crate::time::now_ms().saturating_add(ttl_ms)))
    }

    /// A token that expired at `expired_at` (RFC 3339); for tests of expiry.
    ///
    /// # Errors
    /// If `expired_at` is not RFC 3339.
    pub fn sign_expired(&self, user_id: &str, expired_at: &str) -> Result<String, TokenError> {
        let mut claims = Claims::new().map_err(|_| TokenError::Invalid)?;
        claims
            .issued_at(expired_at)
            .map_err(|_| TokenError::Invalid)?;
        claims
            .not_before(expired_at)
            .map_err(|_| TokenError::Invalid)?;
        claims
            .expiration(expired_at)
            .map_err(|_| TokenError::Invalid)?;
        claims.subject(user_id).map_err(|_| TokenError::Invalid)?;
        public::sign(&self.secret, &claims, None, None).map_err(|_| TokenError::Key)
    }
}

/// Verifies tokens with the public key only.
#[derive(Clone)]
pub struct TokenVerifier {
    public: AsymmetricPublicKey<V4>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier")
    }
}

impl TokenVerifier {
    /// From the 32-byte public key.
    ///
    /// # Errors
    /// If the bytes are not a v4 public key.
    pub fn from_public_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        let public = AsymmetricPublicKey::<V4>::from(bytes).map_err(|_| TokenError::Key)?;
        Ok(Self { public })
    }

    /// The user id (`sub`) of a valid, unexpired token.
    ///
    /// # Errors
    /// [`TokenError::Expired`] past `exp`; [`TokenError::Invalid`] for anything else.
    pub fn verify(&self, token: &str) -> Result<String, TokenError> {
        self.verify_session(token).map(|v| v.user_id)
    }

    /// The user id and session (`jti`, absent in tokens made before
    /// sessions) of a valid, unexpired token.
    ///
    /// # Errors
    /// As [`Self::verify`].
    pub fn verify_session(&self, token: &str) -> Result<Verified, TokenError> {
        // Tokens are short; refuse absurd input before parsing it.
        if token.len() > 1024 {
            return Err(TokenError::Invalid);
        }
        let untrusted =
            UntrustedToken::<Public, V4>::try_from(token).map_err(|_| TokenError::Invalid)?;
        let rules = ClaimsValidationRules::new();
        let trusted =
            public::verify(&self.public, &untrusted, &rules, None, None).map_err(|e| {
                if e == PasetoError::ClaimValidation(ClaimValidationError::Exp) {
                    TokenError::Expired
                } else {
                    TokenError::Invalid
                }
            })?;
        let claims = trusted.payload_claims().ok_or(TokenError::Invalid)?;
        let sub = claims
            .get_claim("sub")
            .and_then(|v| v.as_str())
            .ok_or(TokenError::Invalid)?;
        if !crate::id::is_user_id(sub) {
            return Err(TokenError::Invalid);
        }
        let session_id = claims
            .get_claim("jti")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Ok(Verified {
            user_id: sub.to_owned(),
            session_id,
        })
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user_id: String,
    pub session_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_tokens_verify_with_the_public_key_only() {
        let signer = TokenSigner::generate().expect("keys");
        let verifier = TokenVerifier::from_public_bytes(&signer.public_bytes()).expect("pk");
        let user = crate::id::new_user_id();
        let (token, exp) = signer.sign(&user, Duration::from_secs(60)).expect("sign");
        assert!(exp > crate::time::now_ms());
        assert_eq!(verifier.verify(&token), Ok(user.clone()));

        let reloaded = TokenSigner::from_secret_bytes(signer.secret_bytes()).expect("reload");
        assert_eq!(reloaded.public_bytes(), signer.public_bytes());

        let expired = signer
            .sign_expired(&user, "2020-01-01T00:00:00+00:00")
            .expect("sign");
        assert_eq!(verifier.verify(&expired), Err(TokenError::Expired));
        assert_eq!(
            verifier.verify("v4.public.garbage"),
            Err(TokenError::Invalid)
        );

        let other = TokenSigner::generate().expect("keys");
        let (forged, _) = other.sign(&user, Duration::from_secs(60)).expect("sign");
        assert_eq!(verifier.verify(&forged), Err(TokenError::Invalid));
    }
}
