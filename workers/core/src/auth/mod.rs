//! Authentication: argon2id passwords ([`password`]) and PASETO v4.public
//! tokens ([`token`]). Workers sign; edges only ever hold the public key.

pub mod password;
pub mod token;
