//! Input rules of the client contract. Each failure names the API error code.

/// Maximum UTF-8 bytes of a message's text.
pub const MAX_TEXT_BYTES: usize = 65_536;
/// Maximum length of a client-chosen `client_msg_id`.
pub const MAX_CLIENT_MSG_ID: usize = 128;

/// A rule that input broke, with the API error code it maps to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("username must be 3-32 characters of a-z, 0-9, '_', '.', '-'")]
    BadUsername,
    #[error("password must be 8-1024 bytes")]
    BadPassword,
    #[error("display_name must be at most 64 characters with no control characters")]
    BadDisplayName,
    #[error("text is larger than {MAX_TEXT_BYTES} bytes")]
    TextTooLong,
    #[error("a message needs text or media")]
    EmptyMessage,
    #[error("client_msg_id must be 1-{MAX_CLIENT_MSG_ID} printable ASCII characters")]
    BadClientMsgId,
}

impl ValidationError {
    /// The snake_case error code of the API.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadUsername => "invalid_username",
            Self::BadPassword => "invalid_password",
            Self::BadDisplayName => "invalid_display_name",
            Self::TextTooLong => "too_large",
            Self::EmptyMessage => "empty_message",
            Self::BadClientMsgId => "invalid_client_msg_id",
        }
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary; whether it cut.
pub fn truncate_at_char(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

/// The first `max` characters of `s` (a reply's quote), with "…" if cut.
#[must_use]
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// Maximum UTF-8 bytes of a reaction (one emoji, with its modifiers and
/// joiners: family and flag sequences run to about 30 bytes).
pub const MAX_REACTION_BYTES: usize = 64;

/// Whether `raw` can be a reaction: one short run of non-ASCII symbols
/// (an emoji with its modifiers), no letters, digits, spaces or controls.
/// Checking for exactly one emoji would need the Unicode emoji tables; this
/// keeps reactions short and symbolic, which is what clients render.
#[must_use]
pub fn reaction(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_REACTION_BYTES
        && raw.chars().count() <= 10
        && raw
            .chars()
            .all(|c| !c.is_ascii() && !c.is_control() && !c.is_whitespace() && !c.is_alphanumeric())
}

/// Checks a username and returns its canonical (lowercase) form: usernames are
/// case-insensitively unique.
pub fn username(raw: &str) -> Result<String, ValidationError> {
    if (3..=32).contains(&raw.len()) && username_chars(raw) {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(ValidationError::BadUsername)
    }
}

/// The canonical form of a username search prefix (trimmed, lowercase), or
/// `None` when no username could start with it (empty, too long, or a
/// character usernames cannot hold).
#[must_use]
pub fn username_prefix(raw: &str) -> Option<String> {
    let prefix = raw.trim().to_ascii_lowercase();
    ((1..=32).contains(&prefix.len()) && username_chars(&prefix)).then_some(prefix)
}

fn username_chars(raw: &str) -> bool {
    raw.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Checks a password's length in bytes.
pub fn password(raw: &str) -> Result<(), ValidationError> {
    if (8..=1024).contains(&raw.len()) {
        Ok(())
    } else {
        Err(ValidationError::BadPassword)
    }
}

/// Checks a display name (trimmed; empty means "use the username").
pub fn display_name(raw: &str) -> Result<String, ValidationError> {
    let t = raw.trim();
    if t.chars().count() > 64 || t.chars().any(char::is_control) {
        return Err(ValidationError::BadDisplayName);
    }
    Ok(t.to_owned())
}

/// Checks a message body: text size and that there is something to send.
pub fn message_body(text: Option<&str>, has_media: bool) -> Result<(), ValidationError> {
    match text {
        Some(t) if t.len() > MAX_TEXT_BYTES => Err(ValidationError::TextTooLong),
        Some(t) if t.is_empty() && !has_media => Err(ValidationError::EmptyMessage),
        None if !has_media => Err(ValidationError::EmptyMessage),
        _ => Ok(()),
    }
}

/// Checks a client-chosen message id (it ends up in a NATS header).
pub fn client_msg_id(raw: &str) -> Result<(), ValidationError> {
    let ok =
        (1..=MAX_CLIENT_MSG_ID).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(ValidationError::BadClientMsgId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_contract() {
        assert_eq!(username("Alice_1.x-y").as_deref(), Ok("alice_1.x-y"));
        assert!(username("ab").is_err());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(username("bad name").is_err());
        assert!(username("émile").is_err());
    }

    #[test]
    fn search_prefixes_are_canonical_or_refused() {
        assert_eq!(username_prefix(" Al ").as_deref(), Some("al"));
        assert_eq!(username_prefix("").as_deref(), None);
        assert_eq!(username_prefix("has space").as_deref(), None);
        assert_eq!(username_prefix(&"a".repeat(33)).as_deref(), None);
    }

    #[test]
    fn passwords_are_8_to_1024_bytes() {
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(password(&"x".repeat(1024)).is_ok());
        assert!(password(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn message_bodies_need_content_within_the_limit() {
        assert!(message_body(Some("hi"), false).is_ok());
        assert_eq!(
            message_body(None, false),
            Err(ValidationError::EmptyMessage)
        );
        assert_eq!(
            message_body(Some(&"x".repeat(MAX_TEXT_BYTES + 1)), false),
            Err(ValidationError::TextTooLong)
        );
        assert!(message_body(Some(&"x".repeat(MAX_TEXT_BYTES)), false).is_ok());
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        let mut s = "héllo".to_owned();
        assert!(truncate_at_char(&mut s, 2));
        assert_eq!(s, "h");
        let mut t = "abc".to_owned();
        assert!(!truncate_at_char(&mut t, 3));
        assert_eq!(t, "abc");
        assert_eq!(truncate_chars("héllo", 2), "hé…");
        assert_eq!(truncate_chars("hé", 2), "hé");
    }

    #[test]
    fn reactions_are_short_runs_of_symbols() {
        for ok in ["👍", "❤️", "👍🏽", "👨‍👩‍👧", "🇳🇱", "😂"] {
            assert!(reaction(ok), "{ok}");
        }
        for bad in ["", "a", "+1", " 👍", "👍\n", "é", "👍👍👍👍👍👍👍👍👍👍👍"]
        {
            assert!(!reaction(bad), "{bad:?}");
        }
    }
}
