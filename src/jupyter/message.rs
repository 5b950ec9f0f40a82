//! Jupyter messages as typed values: the header, the message envelope and the contents we act on.
//!
//! This module owns the shape of a message once its frames have been checked and decoded
//! (`wire.rs` owns the frames). Contents are keyed on `msg_type`; a type we do not model, or
//! one we do not act on, lands in [`Content::Unknown`] with its JSON kept, so a newer kernel
//! never breaks a read.

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The messaging protocol version we speak (Jupyter messaging 5.3 to 5.5 share the parts we use).
pub const PROTOCOL_VERSION: &str = "5.3";

/// A message header (`msg_id`, `session`, `msg_type`, ...), as sent on every channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// A fresh UUID per message.
    pub msg_id: String,
    /// One UUID per client session.
    pub session: String,
    /// The user name the client reports.
    pub username: String,
    /// RFC 3339 with microseconds and a zone.
    pub date: String,
    /// What the content is, e.g. `execute_request`.
    pub msg_type: String,
    /// The messaging protocol version.
    pub version: String,
}

impl Header {
    /// A new header for a message of `msg_type` in the client session `session`.
    pub fn new(msg_type: &str, session: &str) -> Self {
        Header {
            msg_id: uuid::Uuid::new_v4().to_string(),
            session: session.to_owned(),
            username: "mcp-pyrepl".to_owned(),
            date: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            msg_type: msg_type.to_owned(),
            version: PROTOCOL_VERSION.to_owned(),
        }
    }
}

/// Which socket a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Requests and replies: execute, kernel_info, ...
    Shell,
    /// Broadcast side effects: status, streams, displays, errors.
    Iopub,
    /// Requests that must not queue behind shell: interrupt, shutdown.
    Control,
    /// Input requests from the kernel (we answer none: `allow_stdin` is false).
    Stdin,
    /// Echo socket that says the kernel is alive.
    Heartbeat,
}

impl Channel {
    /// The name used for the port in a connection file (`shell` for `shell_port`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Channel::Shell => "shell",
            Channel::Iopub => "iopub",
            Channel::Control => "control",
            Channel::Stdin => "stdin",
            Channel::Heartbeat => "hb",
        }
    }

    /// The channel a Jupyter server's kernel WebSocket names `name` (`shell`, `iopub`,
    /// `control`, `stdin`), if any.
    pub fn from_websocket_name(name: &str) -> Option<Channel> {
        match name {
            "shell" => Some(Channel::Shell),
            "iopub" => Some(Channel::Iopub),
            "control" => Some(Channel::Control),
            "stdin" => Some(Channel::Stdin),
            _ => None,
        }
    }
}

/// A decoded, verified Jupyter message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// ZeroMQ routing identities that preceded the delimiter (empty on DEALER and SUB sockets,
    /// the topic frame on iopub).
    pub identities: Vec<Bytes>,
    /// This message's header.
    pub header: Header,
    /// The header of the request this message answers, if any.
    pub parent_header: Option<Header>,
    /// Free-form metadata.
    pub metadata: Map<String, Value>,
    /// The typed content.
    pub content: Content,
    /// Binary buffers after the content frame.
    pub buffers: Vec<Bytes>,
}

impl Message {
    /// A new request in the client session `session`, with no parent.
    pub fn new(content: Content, session: &str) -> Self {
        Message {
            identities: Vec::new(),
            header: Header::new(content.msg_type(), session),
            parent_header: None,
            metadata: Map::new(),
            content,
            buffers: Vec::new(),
        }
    }

    /// A message answering `parent`: same session, `parent_header` set, identities copied so a
    /// ROUTER socket sends it back to the right peer.
    pub fn as_child_of(content: Content, parent: &Message) -> Self {
        let mut child = Message::new(content, &parent.header.session);
        child.parent_header = Some(parent.header.clone());
        child.identities = parent.identities.clone();
        child
    }

    /// The `msg_type` from the header.
    pub fn msg_type(&self) -> &str {
        &self.header.msg_type
    }

    /// The `msg_id` of the request this message answers, if any.
    pub fn parent_msg_id(&self) -> Option<&str> {
        self.parent_header.as_ref().map(|h| h.msg_id.as_str())
    }
}

/// `execute_request`: run code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    /// The source to run.
    pub code: String,
    /// Run without broadcasting output or counting.
    pub silent: bool,
    /// Record in the history and bump the execution counter.
    pub store_history: bool,
    /// Expressions to evaluate after the code when it succeeded, by name; their values come
    /// back in the reply's `user_expressions`.
    pub user_expressions: Map<String, Value>,
    /// Whether the kernel may ask for input; we always send false so `input()` fails fast.
    pub allow_stdin: bool,
    /// Abort the rest of the queue when this request fails.
    pub stop_on_error: bool,
}

impl ExecuteRequest {
    /// A request that leaves no trace: no outputs broadcast, no history, no counter bump.
    pub fn silent(code: impl Into<String>) -> Self {
        ExecuteRequest { silent: true, store_history: false, ..ExecuteRequest::new(code) }
    }

    /// The request we send for a cell: stored in history, no stdin, stop on error.
    pub fn new(code: impl Into<String>) -> Self {
        ExecuteRequest {
            code: code.into(),
            silent: false,
            store_history: true,
            user_expressions: Map::new(),
            allow_stdin: false,
            stop_on_error: true,
        }
    }

    /// The same request, evaluating `expressions` (name to Python expression) after the code.
    pub fn with_expressions(mut self, expressions: Map<String, Value>) -> Self {
        self.user_expressions = expressions;
        self
    }
}

/// The `status` field of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyStatus {
    /// The request succeeded.
    Ok,
    /// The request raised; details in the reply and on iopub.
    Error,
    /// The request was dropped because an earlier one failed.
    Aborted,
}

/// `execute_reply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteReply {
    /// How the execution ended.
    pub status: ReplyStatus,
    /// The execution counter after this request (absent on some aborted replies).
    #[serde(default)]
    pub execution_count: Option<u64>,
    /// Exception name when `status` is error.
    #[serde(default)]
    pub ename: Option<String>,
    /// Exception value when `status` is error.
    #[serde(default)]
    pub evalue: Option<String>,
    /// The values of the request's `user_expressions`, by name: each `{status, data, metadata}`
    /// (`data` a MIME bundle) or an error; empty when the code failed.
    #[serde(default)]
    pub user_expressions: Map<String, Value>,
}

/// `kernel_info_reply` (only the fields we read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelInfoReply {
    /// Reply status.
    #[serde(default = "ok_status")]
    pub status: ReplyStatus,
    /// Protocol version the kernel claims (not to be trusted for feature gating).
    #[serde(default)]
    pub protocol_version: String,
    /// Kernel implementation name, e.g. `ipython`.
    #[serde(default)]
    pub implementation: String,
    /// Kernel implementation version.
    #[serde(default)]
    pub implementation_version: String,
    /// Details of the language, kept as JSON.
    #[serde(default)]
    pub language_info: Value,
    /// Banner text.
    #[serde(default)]
    pub banner: String,
}

fn ok_status() -> ReplyStatus {
    ReplyStatus::Ok
}

/// Kernel activity broadcast on iopub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionState {
    /// The kernel started handling a request.
    Busy,
    /// The kernel finished handling a request.
    Idle,
    /// The kernel process started.
    Starting,
    /// Sent by a Jupyter server on its kernel WebSocket: it is restarting the kernel (after its
    /// process died); whatever the kernel held is gone.
    Restarting,
    /// Sent by a Jupyter server on its kernel WebSocket: the kernel died and was not restarted.
    Dead,
}

/// `status` on iopub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Busy, idle or starting.
    pub execution_state: ExecutionState,
}

/// `stream` on iopub: text the code wrote to stdout or stderr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    /// `stdout` or `stderr`.
    pub name: String,
    /// The text written.
    pub text: String,
}

/// `display_data` and `update_display_data` on iopub: a MIME bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisplayData {
    /// MIME type to data (base64 for binary types such as `image/png`).
    pub data: Map<String, Value>,
    /// Per-MIME metadata (image sizes, ...).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Display id for later updates.
    #[serde(default)]
    pub transient: Map<String, Value>,
}

/// `execute_result` on iopub: the value of the cell's last expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteResult {
    /// The execution counter of the cell.
    pub execution_count: u64,
    /// MIME type to data.
    pub data: Map<String, Value>,
    /// Per-MIME metadata.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// `error` on iopub: an exception raised by the code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorContent {
    /// Exception class name.
    pub ename: String,
    /// Exception message.
    pub evalue: String,
    /// Formatted traceback lines, with ANSI colour codes.
    #[serde(default)]
    pub traceback: Vec<String>,
}

/// `clear_output` on iopub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClearOutput {
    /// Clear only when the next output arrives.
    #[serde(default)]
    pub wait: bool,
}

/// `shutdown_request` and `shutdown_reply` on control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shutdown {
    /// Whether a restart follows.
    pub restart: bool,
}

/// A message's content, keyed on `msg_type`.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// `execute_request`.
    ExecuteRequest(ExecuteRequest),
    /// `execute_reply`.
    ExecuteReply(ExecuteReply),
    /// `kernel_info_request` (empty content).
    KernelInfoRequest,
    /// `kernel_info_reply`.
    KernelInfoReply(Box<KernelInfoReply>),
    /// `interrupt_request` (empty content).
    InterruptRequest,
    /// `interrupt_reply`.
    InterruptReply,
    /// `shutdown_request`.
    ShutdownRequest(Shutdown),
    /// `shutdown_reply`.
    ShutdownReply(Shutdown),
    /// `status`.
    Status(Status),
    /// `stream`.
    Stream(Stream),
    /// `display_data`.
    DisplayData(DisplayData),
    /// `update_display_data`.
    UpdateDisplayData(DisplayData),
    /// `execute_result`.
    ExecuteResult(ExecuteResult),
    /// `error`.
    Error(ErrorContent),
    /// `clear_output`.
    ClearOutput(ClearOutput),
    /// `iopub_welcome`: sent by ipykernel >= 7.2 once a subscription lands.
    IopubWelcome,
    /// Any other message type, its JSON kept as it came.
    Unknown {
        /// The `msg_type` from the header.
        msg_type: String,
        /// The content as JSON.
        content: Value,
    },
}

impl Content {
    /// The `msg_type` this content is sent as.
    pub fn msg_type(&self) -> &str {
        match self {
            Content::ExecuteRequest(_) => "execute_request",
            Content::ExecuteReply(_) => "execute_reply",
            Content::KernelInfoRequest => "kernel_info_request",
            Content::KernelInfoReply(_) => "kernel_info_reply",
            Content::InterruptRequest => "interrupt_request",
            Content::InterruptReply => "interrupt_reply",
            Content::ShutdownRequest(_) => "shutdown_request",
            Content::ShutdownReply(_) => "shutdown_reply",
            Content::Status(_) => "status",
            Content::Stream(_) => "stream",
            Content::DisplayData(_) => "display_data",
            Content::UpdateDisplayData(_) => "update_display_data",
            Content::ExecuteResult(_) => "execute_result",
            Content::Error(_) => "error",
            Content::ClearOutput(_) => "clear_output",
            Content::IopubWelcome => "iopub_welcome",
            Content::Unknown { msg_type, .. } => msg_type,
        }
    }

    /// Parses the content JSON of a message of type `msg_type`.
    ///
    /// # Errors
    /// When the JSON is not valid, or does not have the fields its known type requires.
    pub fn from_type_and_json(msg_type: &str, json: &[u8]) -> serde_json::Result<Content> {
        fn parse<T: serde::de::DeserializeOwned>(json: &[u8]) -> serde_json::Result<T> {
            serde_json::from_slice(json)
        }
        Ok(match msg_type {
            "execute_request" => Content::ExecuteRequest(parse(json)?),
            "execute_reply" => Content::ExecuteReply(parse(json)?),
            "kernel_info_request" => Content::KernelInfoRequest,
            "kernel_info_reply" => Content::KernelInfoReply(Box::new(parse(json)?)),
            "interrupt_request" => Content::InterruptRequest,
            "interrupt_reply" => Content::InterruptReply,
            "shutdown_request" => Content::ShutdownRequest(parse(json)?),
            "shutdown_reply" => Content::ShutdownReply(parse(json)?),
            "status" => Content::Status(parse(json)?),
            "stream" => Content::Stream(parse(json)?),
            "display_data" => Content::DisplayData(parse(json)?),
            "update_display_data" => Content::UpdateDisplayData(parse(json)?),
            "execute_result" => Content::ExecuteResult(parse(json)?),
            "error" => Content::Error(parse(json)?),
            "clear_output" => Content::ClearOutput(parse(json)?),
            "iopub_welcome" => Content::IopubWelcome,
            other => Content::Unknown { msg_type: other.to_owned(), content: parse(json)? },
        })
    }

    /// The content as JSON bytes, ready to be signed and sent.
    pub fn to_json(&self) -> Vec<u8> {
        let value = match self {
            Content::ExecuteRequest(c) => serde_json::to_vec(c),
            Content::ExecuteReply(c) => serde_json::to_vec(c),
            Content::KernelInfoReply(c) => serde_json::to_vec(c),
            Content::ShutdownRequest(c) | Content::ShutdownReply(c) => serde_json::to_vec(c),
            Content::Status(c) => serde_json::to_vec(c),
            Content::Stream(c) => serde_json::to_vec(c),
            Content::DisplayData(c) | Content::UpdateDisplayData(c) => serde_json::to_vec(c),
            Content::ExecuteResult(c) => serde_json::to_vec(c),
            Content::Error(c) => serde_json::to_vec(c),
            Content::ClearOutput(c) => serde_json::to_vec(c),
            Content::Unknown { content, .. } => serde_json::to_vec(content),
            Content::KernelInfoRequest
            | Content::InterruptRequest
            | Content::InterruptReply
            | Content::IopubWelcome => Ok(b"{}".to_vec()),
        };
        // Serialising these plain structs into a Vec cannot fail: no maps with non-string keys,
        // no custom serialisers.
        value.expect("message content serialises to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn execute_request_has_the_wire_fields() {
        let content = Content::ExecuteRequest(ExecuteRequest::new("1+1"));
        let value: Value = serde_json::from_slice(&content.to_json()).unwrap();
        assert_eq!(
            value,
            json!({
                "code": "1+1", "silent": false, "store_history": true,
                "user_expressions": {}, "allow_stdin": false, "stop_on_error": true
            })
        );
    }

    #[test]
    fn unknown_types_keep_their_json() {
        let content = Content::from_type_and_json("comm_open", br#"{"comm_id": "x"}"#).unwrap();
        assert_eq!(
            content,
            Content::Unknown { msg_type: "comm_open".into(), content: json!({"comm_id": "x"}) }
        );
        assert_eq!(content.msg_type(), "comm_open");
    }

    #[test]
    fn a_known_type_with_missing_fields_is_an_error() {
        assert!(Content::from_type_and_json("stream", br#"{"name": "stdout"}"#).is_err());
        assert!(Content::from_type_and_json("status", b"not json").is_err());
    }

    #[test]
    fn aborted_reply_without_count_parses() {
        let content = Content::from_type_and_json("execute_reply", br#"{"status": "aborted"}"#).unwrap();
        let Content::ExecuteReply(reply) = content else { panic!("wrong variant") };
        assert_eq!(reply.status, ReplyStatus::Aborted);
        assert_eq!(reply.execution_count, None);
    }

    #[test]
    fn header_date_has_microseconds_and_zone() {
        let header = Header::new("kernel_info_request", "s");
        let parsed = chrono::DateTime::parse_from_rfc3339(&header.date).unwrap();
        assert_eq!(parsed.offset().local_minus_utc(), 0);
        assert_eq!(header.date.split('.').nth(1).unwrap().len(), "123456Z".len());
    }
}
