//! WebSocket signaling messages.

use serde::{Deserialize, Serialize};

/// Largest signaling message accepted (an SDP offer is a few KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMessage {
    Offer {
        sdp: String,
    },
    Candidate {
        candidate: String,
        #[serde(rename = "sdpMid", default)]
        sdp_mid: Option<String>,
        #[serde(rename = "sdpMLineIndex", default)]
        sdp_mline_index: Option<u16>,
    },
    Bye,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    Answer {
        sdp: String,
    },
    /// `code` says whether trying again can help: `codec` (no codec in common), `full` (too many viewers),
    /// `offer` (a malformed offer), `protocol` (a message out of place), `internal`.
    Error {
        message: String,
        #[serde(default)]
        code: String,
    },
    Bye {
        reason: String,
    },
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"type":"error","message":"internal"}"#.to_owned())
    }
}

/// Parse a client message, with an error a human can act on.
pub fn parse_client(text: &str) -> Result<ClientMessage, String> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(format!("message of {} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit", text.len()));
    }
    serde_json::from_str(text).map_err(|e| format!("malformed signaling message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_errors_are_clear() {
        assert_eq!(parse_client(r#"{"type":"offer","sdp":"v=0"}"#), Ok(ClientMessage::Offer { sdp: "v=0".into() }));
        assert_eq!(
            parse_client(r#"{"type":"candidate","candidate":"candidate:1","sdpMid":"0","sdpMLineIndex":0}"#),
            Ok(ClientMessage::Candidate {
                candidate: "candidate:1".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0)
            })
        );
        assert_eq!(parse_client(r#"{"type":"bye"}"#), Ok(ClientMessage::Bye));
        assert!(parse_client("{not json").expect_err("bad json").contains("malformed"));
        assert!(parse_client(r#"{"type":"dance"}"#).is_err());
        assert!(parse_client(&"x".repeat(MAX_MESSAGE_BYTES + 1)).expect_err("big").contains("limit"));
        assert_eq!(ServerMessage::Answer { sdp: "v=0".into() }.to_json(), r#"{"type":"answer","sdp":"v=0"}"#);
        assert_eq!(
            ServerMessage::Error { message: "x".into(), code: "codec".into() }.to_json(),
            r#"{"type":"error","message":"x","code":"codec"}"#
        );
    }
}
