//! The JSON form of messages on a Jupyter server's kernel WebSocket (`/api/kernels/<id>/channels`,
//! the default protocol, no subprotocol): one JSON object per message with its `channel`, or, for
//! a message with binary buffers, a binary frame carrying the same JSON and the buffers.
//!
//! Pure: no sockets and no I/O (`websocket.rs` has them). The server signs and verifies on the
//! kernel's side, so nothing is signed here. A frame that is not a message is a
//! [`JsonWireError`], never a panic.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::message::{Channel, Content, Header, Message};

/// Why a WebSocket frame is not an acceptable message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonWireError {
    /// Not JSON, or without the fields of a message.
    #[error("not a Jupyter message: {0}")]
    Invalid(#[from] serde_json::Error),
    /// A channel the protocol does not have.
    #[error("unknown channel `{0}`")]
    UnknownChannel(String),
    /// A binary frame whose offsets do not fit the frame.
    #[error("binary message of {len} bytes has bad offsets")]
    BadOffsets {
        /// The frame's length.
        len: usize,
    },
}

#[derive(Deserialize)]
struct Frame {
    header: Header,
    #[serde(default)]
    parent_header: Value,
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default)]
    content: Value,
    channel: String,
}

/// `message` as the text frame sent on `channel`.
pub fn encode(message: &Message, channel: Channel) -> String {
    let content: Value = serde_json::from_slice(&message.content.to_json()).expect("content is JSON");
    let frame = json!({
        "header": message.header,
        "parent_header": message.parent_header.as_ref().map_or_else(|| json!({}), |h| json!(h)),
        "metadata": message.metadata,
        "content": content,
        "channel": channel.name(),
        "buffers": [],
    });
    frame.to_string()
}

/// The channel and message of a text frame.
///
/// # Errors
/// When the text is not a message on a known channel.
pub fn decode(text: &[u8]) -> Result<(Channel, Message), JsonWireError> {
    decode_with_buffers(text, Vec::new())
}

/// The channel and message of a binary frame: a count `n` (u32, big endian), `n` offsets, then
/// the message's JSON at the first offset and its buffers at the others.
///
/// # Errors
/// When the offsets do not fit the frame, or the JSON is not a message.
pub fn decode_binary(frame: &[u8]) -> Result<(Channel, Message), JsonWireError> {
    let bad = || JsonWireError::BadOffsets { len: frame.len() };
    let word = |at: usize| -> Option<usize> {
        let bytes = frame.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?) as usize)
    };
    let count = word(0).ok_or_else(bad)?;
    if count == 0 || count > frame.len() / 4 {
        return Err(bad());
    }
    let mut offsets = (1..=count).map(|i| word(4 * i)).collect::<Option<Vec<usize>>>().ok_or_else(bad)?;
    offsets.push(frame.len());
    if offsets[0] < 4 * (count + 1) || offsets.windows(2).any(|pair| pair[0] > pair[1]) {
        return Err(bad());
    }
    let part = |i: usize| &frame[offsets[i]..offsets[i + 1]];
    let buffers = (1..count).map(|i| Bytes::copy_from_slice(part(i))).collect();
    decode_with_buffers(part(0), buffers)
}

fn decode_with_buffers(text: &[u8], buffers: Vec<Bytes>) -> Result<(Channel, Message), JsonWireError> {
    let frame: Frame = serde_json::from_slice(text)?;
    let channel =
        Channel::from_websocket_name(&frame.channel).ok_or(JsonWireError::UnknownChannel(frame.channel))?;
    let parent_header = match frame.parent_header {
        Value::Object(map) if map.is_empty() => None,
        Value::Null => None,
        other => Some(serde_json::from_value(other)?),
    };
    let content = serde_json::to_vec(&frame.content)?;
    let content = Content::from_type_and_json(&frame.header.msg_type, &content)?;
    let message = Message {
        identities: Vec::new(),
        header: frame.header,
        parent_header,
        metadata: frame.metadata,
        content,
        buffers,
    };
    Ok((channel, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jupyter::message::{ExecuteRequest, Stream};

    fn stream_reply() -> Message {
        let request = Message::new(Content::ExecuteRequest(ExecuteRequest::new("print(1)")), "s1");
        Message::as_child_of(Content::Stream(Stream { name: "stdout".into(), text: "1\n".into() }), &request)
    }

    #[test]
    fn a_text_frame_round_trips_and_names_its_channel() {
        let message = stream_reply();
        let text = encode(&message, Channel::Iopub);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["channel"], "iopub");
        assert_eq!(value["content"], json!({ "name": "stdout", "text": "1\n" }));
        assert_eq!(decode(text.as_bytes()).unwrap(), (Channel::Iopub, message));
        let request = Message::new(Content::KernelInfoRequest, "s1");
        let value: Value = serde_json::from_str(&encode(&request, Channel::Shell)).unwrap();
        assert_eq!(value["parent_header"], json!({}));
        assert_eq!(decode(encode(&request, Channel::Shell).as_bytes()).unwrap().1, request);
    }

    #[test]
    fn a_binary_frame_carries_the_json_and_its_buffers() {
        let message = stream_reply();
        let json = encode(&message, Channel::Iopub);
        let buffer = b"\x00\x01raw";
        let mut frame = Vec::new();
        let start = 4 * 3;
        for word in [2, start, start + json.len()] {
            frame.extend_from_slice(&(word as u32).to_be_bytes());
        }
        frame.extend_from_slice(json.as_bytes());
        frame.extend_from_slice(buffer);
        let (channel, decoded) = decode_binary(&frame).unwrap();
        assert_eq!(channel, Channel::Iopub);
        assert_eq!(decoded.buffers, vec![Bytes::from_static(buffer)]);
        assert_eq!(decoded.content, message.content);
    }

    #[test]
    fn odd_frames_are_errors() {
        assert!(decode(b"not json").is_err());
        let mut other = serde_json::from_str::<Value>(&encode(&stream_reply(), Channel::Iopub)).unwrap();
        other["channel"] = json!("moon");
        assert!(matches!(decode(other.to_string().as_bytes()), Err(JsonWireError::UnknownChannel(_))));
        for frame in [&b""[..], b"\x00\x00\x00\x05", b"\x00\x00\x00\x01\x00\x00\x00\x02", b"\xff\xff\xff\xff"]
        {
            assert!(decode_binary(frame).is_err(), "{frame:?}");
        }
    }
}
