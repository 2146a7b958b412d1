//! The stdio framing of `pas mcp`: one JSON-RPC message a line. Every line the client sends
//! is judged here before the SDK sees it, so that what the SDK would drop in silence (a
//! line that is not JSON, a line over the size limit) gets a JSON-RPC error reply, as the
//! JSON-RPC 2.0 specification asks, and the connection stays open.

use serde_json::{json, Value};

/// The longest line (one message, without its newline) accepted: as `pas serve`'s bodies.
pub const MAX_MESSAGE: usize = crate::serve::MAX_BODY;

/// JSON-RPC's code for text that is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's code for JSON that is not a request (and here: a message too large).
pub const INVALID_REQUEST: i64 = -32600;

/// What to do with one line from the client.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// Hand it to the MCP server.
    Forward,
    /// Nothing (an empty line between messages).
    Skip,
    /// Answer with this JSON-RPC error and do nothing else.
    Refuse(Value),
}

/// Judges one complete line (without its newline). `oversized` says the line was longer
/// than [`MAX_MESSAGE`] (it was not kept, so its id cannot be known).
pub fn judge(line: &[u8], oversized: bool) -> Frame {
    if oversized {
        return Frame::Refuse(too_large());
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Frame::Skip;
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return Frame::Refuse(error(
                Value::Null,
                PARSE_ERROR,
                &format!("the message is not JSON ({e}); send one JSON-RPC object a line"),
            ))
        }
    };
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let Some(object) = value.as_object() else {
        return Frame::Refuse(error(
            Value::Null,
            INVALID_REQUEST,
            "the message is not a JSON-RPC object; batches are not supported: send one object a line",
        ));
    };
    if object.get("jsonrpc") != Some(&json!("2.0")) {
        return Frame::Refuse(error(
            id,
            INVALID_REQUEST,
            "the message has no \"jsonrpc\": \"2.0\"; send JSON-RPC 2.0 objects",
        ));
    }
    let has_method = object.get("method").is_some_and(Value::is_string);
    let is_reply = object.contains_key("result") || object.contains_key("error");
    if !has_method && !is_reply {
        return Frame::Refuse(error(
            id,
            INVALID_REQUEST,
            "the message has no \"method\" (a string) and is not a reply",
        ));
    }
    Frame::Forward
}

/// The reply to a message over [`MAX_MESSAGE`] (its id is unknown: it was not kept).
pub fn too_large() -> Value {
    error(
        Value::Null,
        INVALID_REQUEST,
        &format!(
            "the message is larger than {MAX_MESSAGE} bytes; send smaller ones (a \
             checkpoint's state belongs in files: `pas checkpoint save --state FILE`)"
        ),
    )
}

/// A JSON-RPC error reply.
pub fn error(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(f: &Frame) -> Option<i64> {
        match f {
            Frame::Refuse(v) => v["error"]["code"].as_i64(),
            _ => None,
        }
    }

    #[test]
    fn judges_lines() {
        let cases: &[(&str, bool, Option<i64>, Option<Value>)] = &[
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
                false,
                None,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                false,
                None,
                None,
            ),
            (r#"{"jsonrpc":"2.0","id":1,"result":{}}"#, false, None, None),
            (
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\r",
                false,
                None,
                None,
            ),
            ("{not json", false, Some(PARSE_ERROR), Some(Value::Null)),
            ("", false, None, None),
            ("[1,2]", false, Some(INVALID_REQUEST), Some(Value::Null)),
            ("42", false, Some(INVALID_REQUEST), Some(Value::Null)),
            (
                r#"{"id":7,"method":"ping"}"#,
                false,
                Some(INVALID_REQUEST),
                Some(json!(7)),
            ),
            (
                r#"{"jsonrpc":"2.0","id":"x"}"#,
                false,
                Some(INVALID_REQUEST),
                Some(json!("x")),
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":5}"#,
                false,
                Some(INVALID_REQUEST),
                Some(json!(3)),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
                true,
                Some(INVALID_REQUEST),
                Some(Value::Null),
            ),
        ];
        for (line, oversized, want, id) in cases {
            let got = judge(line.as_bytes(), *oversized);
            assert_eq!(code(&got), *want, "{line}");
            if let (Frame::Refuse(v), Some(id)) = (&got, id) {
                assert_eq!(&v["id"], id, "{line}");
                assert_eq!(v["jsonrpc"], "2.0");
            }
        }
        assert_eq!(judge(b"  ", false), Frame::Skip);
    }
}
