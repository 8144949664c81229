//! Ids. All are opaque to clients; internally they are chosen so that they are
//! valid NATS subject tokens (no `.`, `*`, `>` or whitespace).
//!
//! - user: `u` + 32 hex chars (random, unguessable).
//! - direct conversation: `d_<lesser user id>_<greater user id>`: derivable by
//!   both members without a lookup, and membership is readable from the id.
//! - message: a UUIDv7 in simple form (time-ordered, for index locality).

use uuid::Uuid;

/// A new random user id.
#[must_use]
pub fn new_user_id() -> String {
    format!("u{}", Uuid::new_v4().simple())
}

/// A new message id.
#[must_use]
pub fn new_message_id() -> String {
    format!("m{}", Uuid::now_v7().simple())
}

/// A new random group id.
#[must_use]
pub fn new_group_id() -> String {
    format!("g{}", Uuid::new_v4().simple())
}

/// A new random media id: `md` + 32 hex (128 random bits, unguessable).
#[must_use]
pub fn new_media_id() -> String {
    format!("md{}", Uuid::new_v4().simple())
}

/// Whether `s` is a media id; anything else (paths, dots) is never looked up.
#[must_use]
pub fn is_media_id(s: &str) -> bool {
    s.len() == 34
        && s.starts_with("md")
        && s[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `s` has the shape of an id minted here (guards subjects and queries).
#[must_use]
pub fn is_valid_id(s: &str) -> bool {
    (2..=80).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `s` is a user id.
#[must_use]
pub fn is_user_id(s: &str) -> bool {
    s.len() == 33 && s.starts_with('u') && is_valid_id(s)
}

/// The direct conversation between two users; the same whichever side asks.
#[must_use]
pub fn direct_conversation_id(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("d_{lo}_{hi}")
}

/// The two members of a direct conversation id, if it is one.
#[must_use]
pub fn direct_members(conversation_id: &str) -> Option<(&str, &str)> {
    let rest = conversation_id.strip_prefix("d_")?;
    let (a, b) = rest.split_once('_')?;
    (is_user_id(a) && is_user_id(b) && a < b).then_some((a, b))
}

/// Whether `s` is a group conversation id.
#[must_use]
pub fn is_group_id(s: &str) -> bool {
    s.len() == 33 && s.starts_with('g') && is_valid_id(s)
}

/// Whether `s` names a conversation (direct or group).
#[must_use]
pub fn is_conversation_id(s: &str) -> bool {
    direct_members(s).is_some() || is_group_id(s)
}

/// The partition of a conversation: FNV-1a of the id modulo `partitions`.
/// Stable across processes and releases: changing it reorders in-flight work.
#[must_use]
pub fn partition_of(conversation_id: &str, partitions: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in conversation_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_conversation_id_is_symmetric_and_parses_back() {
        let a = new_user_id();
        let b = new_user_id();
        let c = direct_conversation_id(&a, &b);
        assert_eq!(c, direct_conversation_id(&b, &a));
        let (x, y) = direct_members(&c).expect("direct id");
        assert!([x, y].contains(&a.as_str()) && [x, y].contains(&b.as_str()));
        assert!(is_conversation_id(&c));
        assert!(!is_conversation_id("d_x_y"));
        assert!(!is_conversation_id("../etc"));
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        assert_eq!(partition_of("abc", 16), partition_of("abc", 16));
        for i in 0..100 {
            assert!(partition_of(&format!("c{i}"), 16) < 16);
        }
    }
}
