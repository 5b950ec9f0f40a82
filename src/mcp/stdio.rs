//! The stdio transport: one JSON-RPC message a line on stdin, one a line on stdout.
//!
//! Owns the line framing, the longest line it reads, and the rule that every line a client
//! sends gets an answer: a line that is not JSON (NaN, `1e999`, nesting past serde_json's 128
//! levels, invalid UTF-8, plain garbage) or is too long gets a JSON-RPC parse error with `id:
//! null` (JSON-RPC 2.0, §5.1), and a JSON value that is no message an invalid-request error
//! with its `id` when it has a usable one. Notifications are never answered. rmcp's own
//! stdio transport drops unparsable and oversized lines without a word (rmcp issue #938), so a
//! client waiting for the reply to such a line waits forever. What the messages mean is
//! rmcp's; the tools are in `tools.rs`.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::model::ErrorData;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// What the envelope of a request may take beside the base64 of an upload: the session id,
/// the path (at most 4096 bytes, escaped) and the JSON-RPC fields, with room to spare.
const ENVELOPE_BYTES: usize = 1 << 20;

/// The line buffer kept between lines; a larger one (a line that carried an upload) is freed.
const KEPT_LINE_CAPACITY: usize = 1 << 20;

/// The longest line read when uploads may be `max_upload_bytes` long: their base64 (4/3 of
/// it) even with a line break every 76 characters escaped in the JSON (at most 9/8 of that),
/// that is 3/2 of the upload, plus [`ENVELOPE_BYTES`].
pub fn max_line_bytes(max_upload_bytes: u64) -> usize {
    usize::try_from(max_upload_bytes.saturating_mul(3) / 2)
        .unwrap_or(usize::MAX)
        .saturating_add(ENVELOPE_BYTES)
}

/// JSON-RPC over a reader and a writer, one message a line, answering every bad line.
pub struct LineTransport<R, W> {
    read: BufReader<R>,
    line: Vec<u8>,
    max_line: usize,
    /// Set once a line over `max_line` was answered, until its newline is read. On the struct,
    /// not in `receive`: rmcp polls `receive` in a `select!` and may drop it mid-line.
    discarding: bool,
    write: Arc<Mutex<W>>,
}

impl<R: AsyncRead, W> LineTransport<R, W> {
    /// Reads messages from `read` (lines up to `max_line` bytes) and writes to `write`.
    pub fn new(read: R, write: W, max_line: usize) -> Self {
        LineTransport {
            read: BufReader::new(read),
            line: Vec::new(),
            max_line,
            discarding: false,
            write: Arc::new(Mutex::new(write)),
        }
    }
}

/// What one line read came to.
enum LineRead {
    /// A whole line (newline included) is in `line`.
    Line,
    /// The line went past `max_line`; what was read of it is dropped.
    TooLong,
    /// The client closed its end, or reading failed.
    End,
}

impl<R: AsyncRead + Unpin, W> LineTransport<R, W> {
    /// Reads one line into `self.line`, never holding more than `max_line` bytes of it.
    ///
    /// Cancel-safe: `fill_buf` consumes nothing when dropped, and the copy into `line` and the
    /// `consume` have no await between them, so a dropped call leaves its part of the line in
    /// `line` for the next one.
    async fn read_line(&mut self) -> LineRead {
        loop {
            let available = match self.read.fill_buf().await {
                Ok([]) => return LineRead::End,
                Ok(available) => available,
                Err(error) => {
                    tracing::error!(%error, "cannot read stdin; stopping");
                    return LineRead::End;
                }
            };
            let newline = available.iter().position(|&byte| byte == b'\n');
            let take = newline.map_or(available.len(), |at| at + 1);
            let outcome = if self.discarding {
                self.discarding = newline.is_none();
                None
            } else if self.line.len().saturating_add(take) > self.max_line {
                self.line.clear();
                self.discarding = newline.is_none();
                Some(LineRead::TooLong)
            } else {
                self.line.extend_from_slice(&available[..take]);
                newline.map(|_| LineRead::Line)
            };
            self.read.consume(take);
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }
}

impl<R, W> LineTransport<R, W>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// Sends `reply` in a task of its own, so that a `receive` dropped mid-write loses nothing;
    /// replies carry their ids, so their order does not matter.
    fn answer(&self, reply: Value) {
        let write = self.write.clone();
        tokio::spawn(async move {
            if let Err(error) =
                write_line(&write, serde_json::to_vec(&reply).expect("a JSON value serialises")).await
            {
                tracing::debug!(%error, "cannot answer a bad line");
            }
        });
    }
}

/// Writes `message` and a newline, then flushes, holding the writer throughout so that
/// concurrent sends never interleave.
async fn write_line<W: AsyncWrite + Unpin>(write: &Mutex<W>, mut message: Vec<u8>) -> std::io::Result<()> {
    message.push(b'\n');
    let mut write = write.lock().await;
    write.write_all(&message).await?;
    write.flush().await
}

impl<R, W> Transport<RoleServer> for LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let write = self.write.clone();
        async move { write_line(&write, serde_json::to_vec(&item)?).await }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            match self.read_line().await {
                LineRead::Line => {}
                LineRead::TooLong => {
                    tracing::warn!(max_line = self.max_line, "answered a line that is too long");
                    self.answer(parse_error(&format!(
                        "the line is longer than {} bytes, the longest this server reads (set by \
                         `--max-upload-bytes`); send a shorter message",
                        self.max_line
                    )));
                    continue;
                }
                LineRead::End => return None,
            }
            let incoming = read_message(&self.line);
            if self.line.capacity() > KEPT_LINE_CAPACITY {
                // An upload's line: give its memory back rather than keep it for good.
                self.line = Vec::new();
            } else {
                self.line.clear();
            }
            match incoming {
                Incoming::Message(message) => return Some(*message),
                Incoming::Ignored => {}
                Incoming::Refused(reply) => {
                    tracing::info!(reply = %reply["error"]["message"], "answered a line that is no message");
                    self.answer(reply);
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.write.lock().await.shutdown().await
    }
}

/// What a line read holds.
enum Incoming {
    /// A message for rmcp.
    Message(Box<RxJsonRpcMessage<RoleServer>>),
    /// Nothing to answer: a blank line, or a notification we do not know (JSON-RPC never
    /// answers notifications).
    Ignored,
    /// Not a message: the error reply it gets.
    Refused(Value),
}

/// The message in `line` (its newline, a carriage return and a UTF-8 byte-order mark
/// stripped), or the error it is answered with. Pure.
fn read_message(line: &[u8]) -> Incoming {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
    if line.trim_ascii().is_empty() {
        return Incoming::Ignored;
    }
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(error) => {
            return Incoming::Refused(parse_error(&format!(
                "the line is not UTF-8 (an invalid byte at offset {}); send JSON in UTF-8",
                error.valid_up_to()
            )));
        }
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => {
            return Incoming::Refused(parse_error(&format!(
                "the line is not JSON ({error}); send one JSON-RPC message a line, without NaN, \
                 Infinity, numbers beyond a double or nesting deeper than 128"
            )));
        }
    };
    let id = value.get("id").cloned();
    let notification = id.is_none() && value.get("method").is_some_and(Value::is_string);
    let error = match serde_json::from_value(value) {
        Ok(message) => return Incoming::Message(Box::new(message)),
        Err(error) => error,
    };
    if notification {
        tracing::debug!(%error, "ignored a notification that is no MCP message");
        return Incoming::Ignored;
    }
    // The id is echoed only when it is one JSON-RPC allows (a string or an integer).
    let id = id.filter(|id| id.is_string() || id.is_i64() || id.is_u64()).unwrap_or(Value::Null);
    let error =
        ErrorData::invalid_request(format!("not a JSON-RPC request this server knows: {error}"), None);
    Incoming::Refused(json!({ "jsonrpc": "2.0", "id": id, "error": error }))
}

/// The reply to a line that does not parse: a JSON-RPC parse error, `id: null`.
fn parse_error(reason: &str) -> Value {
    let error = ErrorData::parse_error(format!("Parse error: {reason}"), None);
    json!({ "jsonrpc": "2.0", "id": null, "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(line: &[u8]) -> Value {
        match read_message(line) {
            Incoming::Refused(reply) => reply,
            Incoming::Message(_) => panic!("{:?} was read as a message", String::from_utf8_lossy(line)),
            Incoming::Ignored => panic!("{:?} was ignored", String::from_utf8_lossy(line)),
        }
    }

    #[test]
    fn lines_that_are_not_json_get_a_parse_error_with_a_null_id() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for line in [
            &br#"{"jsonrpc":"2.0","id":2,"method":"ping","params":{"x":NaN}}"#[..],
            br#"{"jsonrpc":"2.0","id":3,"method":"ping","params":{"x":1e999}}"#,
            deep.as_bytes(),
            b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"ping\",\"x\":\"\xff\"}",
            b"garbage\r\n",
            br#"{"jsonrpc":"2.0","id":5"#,
        ] {
            let reply = refusal(line);
            assert_eq!(reply["id"], Value::Null, "{reply}");
            assert_eq!(reply["error"]["code"], -32700, "{reply}");
            assert!(reply["error"]["message"].as_str().unwrap().starts_with("Parse error: the line is not"));
        }
    }

    #[test]
    fn json_that_is_no_message_is_an_invalid_request_and_notifications_get_nothing() {
        assert_eq!(refusal(br#"{"foo":1}"#)["id"], Value::Null);
        let reply = refusal(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":5}"#);
        assert_eq!(
            (reply["id"].clone(), reply["error"]["code"].clone()),
            (json!(7), json!(-32600)),
            "{reply}"
        );
        assert_eq!(refusal(br#"{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}"#)["id"], Value::Null);
        assert_eq!(refusal(br#"[1, 2]"#)["error"]["code"], -32600);
        for ignored in
            [&b"\n"[..], b"  \r\n", br#"{"jsonrpc":"2.0","method":"notifications/custom","params":5}"#]
        {
            assert!(matches!(read_message(ignored), Incoming::Ignored), "{ignored:?}");
        }
        let ping = "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\r\n";
        assert!(matches!(read_message(ping.as_bytes()), Incoming::Message(_)));
    }

    #[test]
    fn a_line_holds_an_upload_of_the_limit_in_wrapped_base64() {
        let upload: u64 = 32 << 20;
        // `\\r\\n`, escaped, after every 76 characters.
        let wrapped_base64 = upload.div_ceil(3) * 4 * 80 / 76;
        assert!(max_line_bytes(upload) >= wrapped_base64 as usize + 4096 + 200);
    }
}
