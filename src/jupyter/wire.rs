//! The multipart wire codec: frames to [`Message`] and back, with HMAC-SHA256 signing.
//!
//! Pure: no sockets and no I/O. The frame layout is
//! `[identities…, "<IDS|MSG>", signature, header, parent_header, metadata, content, buffers…]`.
//! A received message is checked before it is sliced (delimiter found, at least five frames
//! after it), then its signature is verified in constant time over the exact bytes received,
//! and only then is any JSON parsed. Anything short, odd or wrongly signed is a [`WireError`].

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::message::{Content, Header, Message};

/// The frame that separates routing identities from the signed message.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";

/// Frames that must follow the delimiter: signature, header, parent header, metadata, content.
const FRAMES_AFTER_DELIMITER: usize = 5;

type HmacSha256 = Hmac<Sha256>;

/// Why a list of frames is not an acceptable message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// No `<IDS|MSG>` frame.
    #[error("message has no `<IDS|MSG>` delimiter among its {frames} frames")]
    NoDelimiter {
        /// How many frames arrived.
        frames: usize,
    },
    /// Fewer than five frames after the delimiter.
    #[error("message has {found} frames after the delimiter, at least 5 are required")]
    TooFewFrames {
        /// How many followed the delimiter.
        found: usize,
    },
    /// The signature does not match the key and the bytes.
    #[error("message signature does not verify (wrong key, or the message was altered)")]
    BadSignature,
    /// A JSON frame could not be parsed.
    #[error("message {part} is not valid: {source}")]
    InvalidJson {
        /// Which frame: `header`, `parent_header`, `metadata` or `content`.
        part: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// Signs and verifies messages with the connection's key.
///
/// An empty key disables signing: messages go out with an empty signature and every incoming
/// signature is accepted, as the Jupyter spec says.
#[derive(Clone)]
pub struct Signer {
    mac: Option<HmacSha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Signer").field("signing", &self.mac.is_some()).finish()
    }
}

impl Signer {
    /// A signer for `key`: the UTF-8 bytes of the connection file's `key` string, not hex-decoded.
    pub fn new(key: &[u8]) -> Self {
        let mac = (!key.is_empty())
            .then(|| HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length"));
        Signer { mac }
    }

    /// The lowercase hex signature of the four signed parts.
    pub fn sign(&self, parts: [&[u8]; 4]) -> String {
        match &self.mac {
            None => String::new(),
            Some(mac) => {
                let mut mac = mac.clone();
                for part in parts {
                    mac.update(part);
                }
                hex::encode(mac.finalize().into_bytes())
            }
        }
    }

    /// Whether `signature` (lowercase hex) matches the four parts. The comparison of the MAC
    /// runs in constant time.
    pub fn verify(&self, signature: &[u8], parts: [&[u8]; 4]) -> bool {
        let Some(mac) = &self.mac else { return true };
        let Ok(expected) = hex::decode(signature) else { return false };
        let mut mac = mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(&expected).is_ok()
    }
}

/// Encodes `message` into frames, signed by `signer`.
pub fn encode(message: &Message, signer: &Signer) -> Vec<Bytes> {
    let header = serde_json::to_vec(&message.header).expect("header serialises");
    let parent = match &message.parent_header {
        Some(parent) => serde_json::to_vec(parent).expect("header serialises"),
        None => b"{}".to_vec(),
    };
    let metadata = serde_json::to_vec(&message.metadata).expect("a JSON map serialises");
    let content = message.content.to_json();
    let signature = signer.sign([&header, &parent, &metadata, &content]);

    let mut frames = Vec::with_capacity(message.identities.len() + 6 + message.buffers.len());
    frames.extend(message.identities.iter().cloned());
    frames.push(Bytes::from_static(DELIMITER));
    frames.push(Bytes::from(signature));
    frames.push(Bytes::from(header));
    frames.push(Bytes::from(parent));
    frames.push(Bytes::from(metadata));
    frames.push(Bytes::from(content));
    frames.extend(message.buffers.iter().cloned());
    frames
}

/// Decodes and verifies a received list of frames.
///
/// # Errors
/// [`WireError`] when the frames are not a well-formed message, the signature does not verify,
/// or a JSON part does not parse. Never panics, whatever the frames.
pub fn decode(mut frames: Vec<Bytes>, signer: &Signer) -> Result<Message, WireError> {
    let delimiter = frames
        .iter()
        .position(|frame| frame.as_ref() == DELIMITER)
        .ok_or(WireError::NoDelimiter { frames: frames.len() })?;
    let found = frames.len() - delimiter - 1;
    if found < FRAMES_AFTER_DELIMITER {
        return Err(WireError::TooFewFrames { found });
    }

    let mut rest = frames.split_off(delimiter + 1);
    frames.pop(); // the delimiter itself
    let identities = frames;
    let buffers = rest.split_off(FRAMES_AFTER_DELIMITER);
    let [signature, header, parent, metadata, content]: [Bytes; FRAMES_AFTER_DELIMITER] =
        rest.try_into().expect("exactly five frames after the split");

    if !signer.verify(&signature, [&header, &parent, &metadata, &content]) {
        return Err(WireError::BadSignature);
    }

    let header: Header = parse_json("header", &header)?;
    let parent_header = parse_parent_header(&parent)?;
    let metadata: Map<String, Value> = parse_json("metadata", &metadata)?;
    let content = Content::from_type_and_json(&header.msg_type, &content)
        .map_err(|source| WireError::InvalidJson { part: "content", source })?;

    Ok(Message { identities, header, parent_header, metadata, content, buffers })
}

fn parse_json<T: serde::de::DeserializeOwned>(part: &'static str, bytes: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(bytes).map_err(|source| WireError::InvalidJson { part, source })
}

/// A parent header is `{}` when the message answers nothing.
fn parse_parent_header(bytes: &[u8]) -> Result<Option<Header>, WireError> {
    let value: Map<String, Value> = parse_json("parent_header", bytes)?;
    if value.is_empty() {
        return Ok(None);
    }
    serde_json::from_value(Value::Object(value))
        .map(Some)
        .map_err(|source| WireError::InvalidJson { part: "parent_header", source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jupyter::message::{ExecuteRequest, Stream};
    use proptest::prelude::*;

    fn signer() -> Signer {
        Signer::new(b"a5f1c2d3-key")
    }

    fn stream_message() -> Message {
        let request = Message::new(Content::ExecuteRequest(ExecuteRequest::new("print(1)")), "s1");
        let mut reply = Message::as_child_of(
            Content::Stream(Stream { name: "stdout".into(), text: "1\n".into() }),
            &request,
        );
        reply.identities = vec![Bytes::from_static(b"stream.stdout")];
        reply.buffers = vec![Bytes::from_static(b"\x00\x01binary")];
        reply
    }

    #[test]
    fn round_trip_keeps_everything() {
        let message = stream_message();
        let decoded = decode(encode(&message, &signer()), &signer()).unwrap();
        assert_eq!(decoded, message);
    }

    #[test]
    fn signature_is_hmac_sha256_hex_over_the_four_parts() {
        // Reference value computed with Python:
        // hmac.new(b"key", b"abcd", hashlib.sha256).hexdigest()
        let signature = Signer::new(b"key").sign([b"a", b"b", b"c", b"d"]);
        assert_eq!(signature, "2a31ec0ee8d878c9eece9fb0df79b3b90b2256240163aa5ee50d176d3d1121f8");
        assert!(Signer::new(b"key").verify(signature.as_bytes(), [b"ab", b"", b"c", b"d"]));
    }

    #[test]
    fn empty_key_means_empty_signature_and_no_check() {
        let unsigned = Signer::new(b"");
        let frames = encode(&stream_message(), &unsigned);
        assert!(frames[2].is_empty());
        assert!(decode(frames, &unsigned).is_ok());
    }

    #[test]
    fn tampered_parts_fail_verification() {
        for index in 3..7 {
            let mut frames = encode(&stream_message(), &signer());
            let mut part = frames[index].to_vec();
            part.insert(1, b' ');
            frames[index] = Bytes::from(part);
            assert!(
                matches!(decode(frames, &signer()), Err(WireError::BadSignature)),
                "frame {index} altered but accepted"
            );
        }
    }

    #[test]
    fn wrong_key_and_forged_signatures_fail() {
        let frames = encode(&stream_message(), &Signer::new(b"other"));
        assert!(matches!(decode(frames, &signer()), Err(WireError::BadSignature)));

        let mut frames = encode(&stream_message(), &signer());
        frames[2] = Bytes::from_static(b"not hex at all");
        assert!(matches!(decode(frames.clone(), &signer()), Err(WireError::BadSignature)));
        frames[2] = Bytes::new();
        assert!(matches!(decode(frames, &signer()), Err(WireError::BadSignature)));
    }

    #[test]
    fn buffers_are_not_signed() {
        let mut frames = encode(&stream_message(), &signer());
        frames.push(Bytes::from_static(b"extra buffer"));
        let decoded = decode(frames, &signer()).unwrap();
        assert_eq!(decoded.buffers.len(), 2);
    }

    #[test]
    fn short_and_odd_frame_lists_are_errors() {
        let s = signer();
        assert!(matches!(decode(vec![], &s), Err(WireError::NoDelimiter { frames: 0 })));
        assert!(matches!(decode(vec![Bytes::from_static(b"x")], &s), Err(WireError::NoDelimiter { .. })));
        let full = encode(&stream_message(), &s);
        for keep in 0..full.len() - 1 {
            let cut: Vec<Bytes> = full[..keep].to_vec();
            assert!(decode(cut, &s).is_err(), "{keep} frames accepted");
        }
        let mut bad_json = encode(&stream_message(), &Signer::new(b""));
        bad_json[3] = Bytes::from_static(b"{not json");
        assert!(matches!(
            decode(bad_json, &Signer::new(b"")),
            Err(WireError::InvalidJson { part: "header", .. })
        ));
    }

    #[test]
    fn a_parent_header_of_the_wrong_shape_is_an_error() {
        let unsigned = Signer::new(b"");
        let mut frames = encode(&stream_message(), &unsigned);
        frames[4] = Bytes::from_static(br#"{"msg_id": 5}"#);
        assert!(matches!(
            decode(frames, &unsigned),
            Err(WireError::InvalidJson { part: "parent_header", .. })
        ));
    }

    proptest! {
        #[test]
        fn random_frames_never_panic(
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..12),
            delimiter_at in prop::option::of(0usize..12),
        ) {
            let mut frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
            if let Some(at) = delimiter_at {
                let at = at.min(frames.len());
                frames.insert(at, Bytes::from_static(DELIMITER));
            }
            // Random bytes never carry a valid signature under a real key.
            prop_assert!(decode(frames.clone(), &signer()).is_err());
            // With signing off, they must still never panic.
            let _ = decode(frames, &Signer::new(b""));
        }

        #[test]
        fn any_single_byte_flip_in_signed_parts_is_caught(index in 3usize..7, at in 0usize..64, bit in 0u8..8) {
            let mut frames = encode(&stream_message(), &signer());
            let mut part = frames[index].to_vec();
            let at = at % part.len();
            part[at] ^= 1 << bit;
            frames[index] = Bytes::from(part);
            prop_assert!(decode(frames, &signer()).is_err());
        }
    }
}
