//! Client frames: JSON text → typed request, with a distinct error code for
//! each way a frame can be wrong.

use msgr_core::validate;
use msgr_schemas::client::{ChangeFrame, PresenceFrame, ReceiptFrame, SendFrame, TypingFrame};

/// A parsed client request.
#[derive(Debug)]
pub(crate) enum Request {
    Send(SendFrame),
    Receipt(ReceiptFrame),
    Typing(TypingFrame),
    Change(Change, ChangeFrame),
    Presence(PresenceFrame),
    Ping,
}

/// Which change a change frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Edit,
    Delete,
    React,
}

/// Most users one presence frame may watch.
pub(crate) const MAX_PRESENCE_WATCH: usize = 100;

/// A refused frame: error code, message, and the `client_msg_id` if known.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FrameError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) client_msg_id: Option<String>,
}

impl FrameError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            client_msg_id: None,
        }
    }
}

/// Parses one text frame.
pub(crate) fn parse(text: &[u8]) -> Result<Request, FrameError> {
    let value: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| FrameError::new("invalid_json", format!("malformed JSON: {e}")))?;
    let Some(kind) = value.get("type").and_then(serde_json::Value::as_str) else {
        return Err(FrameError::new(
            "invalid_frame",
            "a frame is a JSON object with a string \"type\"",
        ));
    };
    let typed = |v: serde_json::Value| FrameError::new("invalid_frame", v.to_string());
    match kind {
        "send" => {
            let cmid = value
                .get("client_msg_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            let f: SendFrame = serde_json::from_value(value.clone()).map_err(|e| FrameError {
                client_msg_id: cmid.clone(),
                ..typed(serde_json::Value::String(e.to_string()))
            })?;
            check_send(&f).map_err(|e| FrameError {
                client_msg_id: Some(f.client_msg_id.clone()),
                ..e
            })?;
            Ok(Request::Send(f))
        }
        "receipt" => serde_json::from_value(value)
            .map(Request::Receipt)
            .map_err(|e| typed(serde_json::Value::String(e.to_string()))),
        "typing" => serde_json::from_value(value)
            .map(Request::Typing)
            .map_err(|e| typed(serde_json::Value::String(e.to_string()))),
        "presence" => {
            let f: PresenceFrame = serde_json::from_value(value)
                .map_err(|e| typed(serde_json::Value::String(e.to_string())))?;
            if f.user_ids.len() > MAX_PRESENCE_WATCH {
                return Err(FrameError::new(
                    "too_large",
                    format!("watch at most {MAX_PRESENCE_WATCH} users"),
                ));
            }
            Ok(Request::Presence(f))
        }
        "edit" | "delete" | "react" => {
            let kind = match kind {
                "edit" => Change::Edit,
                "delete" => Change::Delete,
                _ => Change::React,
            };
            let cmid = value
                .get("client_msg_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            let f: ChangeFrame = serde_json::from_value(value.clone()).map_err(|e| FrameError {
                client_msg_id: cmid.clone(),
                ..typed(serde_json::Value::String(e.to_string()))
            })?;
            check_change(kind, &f).map_err(|e| FrameError {
                client_msg_id: Some(f.client_msg_id.clone()),
                ..e
            })?;
            Ok(Request::Change(kind, f))
        }
        "ping" => Ok(Request::Ping),
        other => Err(FrameError::new(
            "unknown_type",
            format!("unknown frame type {other:?}"),
        )),
    }
}

fn check_change(kind: Change, f: &ChangeFrame) -> Result<(), FrameError> {
    validate::client_msg_id(&f.client_msg_id)
        .map_err(|e| FrameError::new(e.code(), e.to_string()))?;
    if f.seq == 0 || i64::try_from(f.seq).is_err() {
        return Err(FrameError::new(
            "unknown_message",
            "no such message in this conversation",
        ));
    }
    match kind {
        Change::Edit => validate::message_body(f.text.as_deref(), false)
            .map_err(|e| FrameError::new(e.code(), e.to_string())),
        Change::Delete => Ok(()),
        Change::React => match f.emoji.as_deref() {
            None | Some("") => Ok(()),
            Some(e) if validate::reaction(e) => Ok(()),
            Some(_) => Err(FrameError::new(
                "invalid_reaction",
                "a reaction is one emoji",
            )),
        },
    }
}

fn check_send(f: &SendFrame) -> Result<(), FrameError> {
    validate::client_msg_id(&f.client_msg_id)
        .map_err(|e| FrameError::new(e.code(), e.to_string()))?;
    if f.reply_to_seq
        .is_some_and(|s| s == 0 || i64::try_from(s).is_err())
    {
        return Err(FrameError::new(
            "unknown_message",
            "no such message to reply to",
        ));
    }
    match (&f.to_user, &f.to_group) {
        (None, None) => {
            return Err(FrameError::new(
                "missing_recipient",
                "to_user or to_group is required",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(FrameError::new(
                "invalid_frame",
                "give either to_user or to_group, not both",
            ))
        }
        _ => {}
    }
    validate::message_body(f.text.as_deref(), f.media_id.is_some())
        .map_err(|e| FrameError::new(e.code(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(raw: &str) -> &'static str {
        parse(raw.as_bytes()).expect_err("should be refused").code
    }

    #[test]
    fn change_frames_are_checked_before_they_reach_the_bus() {
        assert_eq!(
            code(r#"{"type":"edit","client_msg_id":"e","conversation_id":"g1","seq":1}"#),
            "empty_message"
        );
        assert_eq!(
            code(
                r#"{"type":"react","client_msg_id":"e","conversation_id":"g1","seq":1,"emoji":"lol"}"#
            ),
            "invalid_reaction"
        );
        assert_eq!(
            code(r#"{"type":"delete","client_msg_id":"e","conversation_id":"g1","seq":0}"#),
            "unknown_message"
        );
        assert_eq!(
            code(r#"{"type":"delete","client_msg_id":"e","conversation_id":"g1","seq":"1"}"#),
            "invalid_frame"
        );
        assert!(matches!(
            parse(br#"{"type":"react","client_msg_id":"e","conversation_id":"g1","seq":3,"emoji":null}"#),
            Ok(Request::Change(Change::React, _))
        ));
        let many: Vec<String> = (0..=MAX_PRESENCE_WATCH).map(|i| format!("u{i}")).collect();
        let frame = serde_json::json!({"type": "presence", "user_ids": many}).to_string();
        assert_eq!(code(&frame), "too_large");
    }

    #[test]
    fn each_kind_of_bad_frame_has_its_own_code() {
        assert_eq!(code("{nope"), "invalid_json");
        assert_eq!(code("[1,2]"), "invalid_frame");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(
            code(r#"{"type":"send","client_msg_id":5,"to_user":"u"}"#),
            "invalid_frame"
        );
        assert_eq!(
            code(r#"{"type":"send","client_msg_id":"a","text":"x"}"#),
            "missing_recipient"
        );
        assert_eq!(
            code(r#"{"type":"send","client_msg_id":"a","to_user":"u"}"#),
            "empty_message"
        );
        assert_eq!(
            code(r#"{"type":"receipt","conversation_id":"c","status":"seen","up_to_seq":1}"#),
            "invalid_frame"
        );
        let big = format!(
            r#"{{"type":"send","client_msg_id":"a","to_user":"u","text":"{}"}}"#,
            "x".repeat(65_537)
        );
        assert_eq!(code(&big), "too_large");
        assert!(matches!(parse(br#"{"type":"ping"}"#), Ok(Request::Ping)));
    }

    /// A bounded fuzz run (`MSGR_FUZZ_ITERATIONS`, default 100,000; `just
    /// fuzz` runs millions): valid frames mutated (bytes flipped, inserted,
    /// cut, spliced) and random bytes never panic the parser, and every
    /// refusal carries a documented code.
    #[test]
    fn mutated_and_random_frames_are_refused_with_a_documented_code() {
        const CODES: &[&str] = &[
            "invalid_json",
            "invalid_frame",
            "unknown_type",
            "invalid_client_msg_id",
            "missing_recipient",
            "empty_message",
            "too_large",
        ];
        let seeds: &[&[u8]] = &[
            br#"{"type":"send","client_msg_id":"c-1","to_user":"u0123456789abcdef0123456789abcdef","text":"h\u00e9llo"}"#,
            br#"{"type":"send","client_msg_id":"c-2","to_group":"g0123456789abcdef0123456789abcdef","media_id":"md00"}"#,
            br#"{"type":"receipt","conversation_id":"d_a_b","status":"read","up_to_seq":18446744073709551615}"#,
            br#"{"type":"typing","conversation_id":"d_a_b"}"#,
            br#"{"type":"ping"}"#,
        ];
        let iterations: usize = std::env::var("MSGR_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut accepted, mut refused) = (0, 0);
        for i in 0..iterations {
            let mut b = seeds[i % seeds.len()].to_vec();
            for _ in 0..=(next() % 4) {
                let at = |n: u64, len: usize| (n as usize) % len.max(1);
                match next() % 6 {
                    0 if !b.is_empty() => {
                        let j = at(next(), b.len());
                        b[j] = next() as u8;
                    }
                    1 => {
                        let j = at(next(), b.len() + 1);
                        b.insert(j.min(b.len()), next() as u8);
                    }
                    2 => b.truncate(at(next(), b.len() + 1)),
                    3 => {
                        let other = seeds[at(next(), seeds.len())];
                        let j = at(next(), b.len() + 1).min(b.len());
                        b.splice(j.., other[at(next(), other.len())..].iter().copied());
                    }
                    4 => {
                        let j = at(next(), b.len() + 1).min(b.len());
                        b.splice(j..j, b"\"\\{}[]:,0-e".iter().copied());
                    }
                    _ => b = (0..next() % 64).map(|_| next() as u8).collect(),
                }
            }
            match parse(&b) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    refused += 1;
                    assert!(
                        CODES.contains(&e.code),
                        "{:?} → {}",
                        String::from_utf8_lossy(&b),
                        e.code
                    );
                }
            }
        }
        // Both outcomes were exercised, or the run proved little.
        assert!(
            accepted > 0 && refused > 0,
            "{accepted} accepted, {refused} refused"
        );
    }
}
