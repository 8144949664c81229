//! Client frames: JSON text → typed request, with a distinct error code for
//! each way a frame can be wrong.

use msgr_core::validate;
use msgr_schemas::client::{ReceiptFrame, SendFrame, TypingFrame};

/// A parsed client request.
#[derive(Debug)]
pub(crate) enum Request {
    Send(SendFrame),
    Receipt(ReceiptFrame),
    Typing(TypingFrame),
    Ping,
}

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
        "ping" => Ok(Request::Ping),
        other => Err(FrameError::new(
            "unknown_type",
            format!("unknown frame type {other:?}"),
        )),
    }
}

fn check_send(f: &SendFrame) -> Result<(), FrameError> {
    validate::client_msg_id(&f.client_msg_id)
        .map_err(|e| FrameError::new(e.code(), e.to_string()))?;
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
}
