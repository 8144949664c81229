//! argon2id password hashing. Both functions are CPU-heavy: call them from
//! `spawn_blocking`, never on an async worker thread.

use argon2::password_hash::{
    rand_core::OsRng, Output, ParamsString, PasswordHash, PasswordHasher, PasswordVerifier, Salt,
    SaltString,
};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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

/// argon2's working memory (19 MiB at the default cost), kept and reused by
/// one hashing thread. Allocated afresh per hash on whichever blocking
/// thread ran it, it stayed behind in every allocator arena those threads
/// touched: ~3 GB of resident memory after 10,000 registrations.
#[derive(Default)]
pub struct Scratch(Vec<Block>);

/// The most memory a hash may ask for (a stored hash names its own cost).
const MAX_MEMORY_KIB: usize = 256 * 1024;

impl Scratch {
    fn blocks(&mut self, n: usize) -> &mut [Block] {
        if self.0.len() < n {
            self.0.resize(n, Block::default());
        }
        &mut self.0[..n]
    }
}

fn compute(
    argon: &Argon2<'_>,
    password: &[u8],
    salt: Salt<'_>,
    out_len: usize,
    scratch: &mut Scratch,
) -> argon2::password_hash::Result<Output> {
    let blocks = argon.params().block_count();
    if blocks > MAX_MEMORY_KIB {
        return Err(argon2::password_hash::Error::ParamValueInvalid(
            argon2::password_hash::errors::InvalidValue::TooLong,
        ));
    }
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf)?;
    let memory = scratch.blocks(blocks);
    Output::init_with(out_len, |out| {
        Ok(argon.hash_password_into_with_memory(password, salt, out, &mut *memory)?)
    })
}

/// [`hash_with`] in `scratch`'s memory (the same PHC string).
///
/// # Errors
/// If the cost is out of argon2's range.
pub fn hash_in(
    password: &str,
    cost: Cost,
    scratch: &mut Scratch,
) -> Result<String, argon2::password_hash::Error> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, None)?;
    let salt = SaltString::generate(&mut OsRng);
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let hash = compute(
        &argon,
        password.as_bytes(),
        salt.as_salt(),
        Params::DEFAULT_OUTPUT_LEN,
        scratch,
    )?;
    Ok(PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(hash),
    }
    .to_string())
}

/// [`verify`] in `scratch`'s memory.
#[must_use]
pub fn verify_in(password: &str, phc: &str, scratch: &mut Scratch) -> bool {
    let mut check = || -> argon2::password_hash::Result<bool> {
        let h = PasswordHash::new(phc)?;
        let algorithm = Algorithm::try_from(h.algorithm)?;
        let version = h
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(&h)?;
        let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
            return Ok(false);
        };
        let argon = Argon2::new(algorithm, version, params);
        let got = compute(&argon, password.as_bytes(), salt, expected.len(), scratch)?;
        // `Output`'s equality is constant-time.
        Ok(got == expected)
    };
    check().unwrap_or(false)
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

    #[test]
    fn hashes_made_in_reused_memory_are_the_same_hashes() {
        let mut scratch = Scratch::default();
        let cheap = Cost {
            memory_kib: 64,
            iterations: 1,
        };
        let mine = hash_in("correct horse", Cost::default(), &mut scratch).expect("hash");
        let small = hash_in("battery staple", cheap, &mut scratch).expect("hash");
        // Each verifies with the plain function and in the reused memory.
        assert!(verify("correct horse", &mine));
        assert!(verify("battery staple", &small));
        assert!(verify_in("correct horse", &mine, &mut scratch));
        assert!(verify_in("battery staple", &small, &mut scratch));
        assert!(!verify_in("wrong horse", &mine, &mut scratch));
        assert!(!verify_in("correct horse", "not a hash", &mut scratch));
        let theirs = hash("correct horse").expect("hash");
        assert!(verify_in("correct horse", &theirs, &mut scratch));
        // A stored hash asking for absurd memory is refused, not obeyed.
        let greedy = mine.replace("m=19456", "m=4000000");
        assert!(!verify_in("correct horse", &greedy, &mut scratch));
        assert!(scratch.0.len() <= 19_456);
    }
}
