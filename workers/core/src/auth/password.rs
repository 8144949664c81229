//! argon2id password hashing. Both functions are CPU-heavy: call them from
//! `spawn_blocking`, never on an async worker thread.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};

/// argon2id cost. The default is the crate's (and OWASP's) 19 MiB, 2 passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl Default for Cost {
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
        }
    }
}

/// Hashes a password into a PHC string (argon2id at the default cost).
///
/// # Errors
/// Only if argon2 rejects its own parameters, which the defaults never do.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    hash_with(password, Cost::default())
}

/// Hashes a password at `cost`. The PHC string records the cost, so
/// [`verify`] works whatever cost a hash was made with.
///
/// # Errors
/// If the cost is out of argon2's range.
pub fn hash_with(password: &str, cost: Cost) -> Result<String, argon2::password_hash::Error> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, None)?;
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches the PHC string `phc`. A malformed hash never matches.
#[must_use]
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(!verify("correct horse", "not a hash"));
    }
}
