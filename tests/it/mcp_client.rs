//! The MCP client harness: rmcp's client and the tool calls the tests make through it
//! ([`Client`]), the built `mcp-pyrepl` as a child process driven over stdio ([`Server`]), and
//! helpers to read tool results. `in_process.rs` connects the same [`Client`] to a server in the
//! test process. The tests themselves live in `mcp.rs`, `soak.rs` and the other MCP files.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use rmcp::model::{CallToolRequestParams, CallToolResult, ProgressNotificationParam};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::{IntoTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

use super::common::{uv, within};

/// A client that records the progress notifications it receives.
#[derive(Clone, Default)]
pub struct Recorder {
    /// Every progress notification, in the order received.
    pub progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }
}

/// A connected rmcp client, whatever runs the server, and the tool calls the tests make.
pub struct Client {
    /// The rmcp client; it derefs to the [`rmcp::Peer`] that sends requests.
    pub service: RunningService<RoleClient, Recorder>,
    /// What the client received besides replies.
    pub recorder: Recorder,
}

impl Client {
    /// Connects a [`Recorder`] over `transport`, failing the test when the handshake fails or
    /// takes over 30 s.
    pub async fn connect<T, E, A>(transport: T) -> Client
    where
        T: IntoTransport<RoleClient, E, A>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let recorder = Recorder::default();
        let service = within(30, recorder.clone().serve(transport)).await.expect("MCP handshake");
        Client { service, recorder }
    }

    /// Calls `tool`, failing the test on a protocol error or a hang.
    pub async fn call(&self, tool: &'static str, arguments: Value) -> CallToolResult {
        let params = CallToolRequestParams::new(tool).with_arguments(arguments.as_object().unwrap().clone());
        within(300, self.service.call_tool(params)).await.unwrap_or_else(|e| panic!("{tool} failed: {e}"))
    }

    /// Calls `tool` in a task of its own, so the test can go on while it runs.
    pub fn spawn_call(
        &self,
        tool: &'static str,
        arguments: Value,
    ) -> tokio::task::JoinHandle<CallToolResult> {
        let peer = rmcp::Peer::clone(&self.service);
        let params = CallToolRequestParams::new(tool).with_arguments(arguments.as_object().unwrap().clone());
        tokio::spawn(async move {
            within(300, peer.call_tool(params)).await.unwrap_or_else(|e| panic!("{tool} failed: {e}"))
        })
    }

    /// Creates a session and returns its id.
    pub async fn create_repl(&self) -> String {
        let result = self.call("create_repl", json!({})).await;
        assert_ne!(result.is_error, Some(true), "create_repl failed: {}", texts(&result).join("\n"));
        result.structured_content.unwrap()["session_id"].as_str().unwrap().to_owned()
    }

    /// Calls `run_code`, whatever the outcome.
    pub async fn run(&self, session: &str, code: &str, parent: Option<&str>) -> CallToolResult {
        let mut arguments = json!({ "session_id": session, "code": code });
        if let Some(parent) = parent {
            arguments["parent_cell_id"] = json!(parent);
        }
        self.call("run_code", arguments).await
    }

    /// Runs `code` and returns (stdout-ish text, new cell id), asserting success.
    pub async fn ok(&self, session: &str, code: &str, parent: Option<&str>) -> (String, String) {
        let result = self.run(session, code, parent).await;
        let texts = texts(&result);
        assert_ne!(result.is_error, Some(true), "{code:?} failed: {}", texts.join("\n"));
        let id = texts.last().unwrap().clone();
        (texts[..texts.len() - 1].join(""), id)
    }
}

impl Deref for Client {
    type Target = RunningService<RoleClient, Recorder>;

    fn deref(&self) -> &Self::Target {
        &self.service
    }
}

/// A running `mcp-pyrepl` and a connected client, which it derefs to.
pub struct Server {
    /// The client connected to the server's stdio.
    pub client: Client,
    pid: u32,
}

impl Server {
    /// Starts the server on `data_dir` with numpy and matplotlib as base packages.
    pub async fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, "numpy,matplotlib", |_| {}).await
    }

    /// Starts the server with `adjust` applied to its command first.
    pub async fn start_with(
        data_dir: &Path,
        base_packages: &str,
        adjust: impl FnOnce(&mut tokio::process::Command),
    ) -> Server {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-pyrepl"));
        // No spare sessions unless a test asks for them (`--spare-sessions` beats this): building
        // them in the background would load the shared machine for nothing.
        command.env("MCP_PYREPL_SPARE_SESSIONS", "0");
        adjust(&mut command);
        command
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--uv")
            .arg(uv().await.path())
            .args(["--base-packages", base_packages]);
        let transport = TokioChildProcess::new(command).unwrap();
        let pid = transport.id().unwrap();
        Server { client: Client::connect(transport).await, pid }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the server as a crash would: no chance to clean up.
    pub fn kill(self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Like a crash, the process is gone before anything restarts.
        Server::wait_for_exit(self.pid, 10);
    }

    /// Stops the server as a client that goes away does (its stdin closes), and waits until it
    /// has cleaned up and exited.
    pub async fn stop(self) {
        let pid = self.pid;
        let _ = self.client.service.cancel().await;
        Server::wait_for_exit(pid, 60);
    }

    /// Waits up to `seconds` until the server `pid` is dead (a zombie at most), so a new server
    /// does not mistake it for a live one.
    fn wait_for_exit(pid: u32, seconds: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        while std::time::Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.rsplit(')').next().is_none_or(|rest| rest.trim_start().starts_with('Z'))
                || stat.is_empty()
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Deref for Server {
    type Target = Client;

    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

/// The text items of a tool result, in order (the last one of `run_code` is the cell id).
pub fn texts(result: &CallToolResult) -> Vec<String> {
    result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect()
}

/// The images of a tool result, decoded; each must be a PNG.
pub fn images(result: &CallToolResult) -> Vec<Vec<u8>> {
    result
        .content
        .iter()
        .filter_map(|c| c.as_image())
        .map(|image| {
            assert_eq!(image.mime_type, "image/png");
            base64::engine::general_purpose::STANDARD.decode(&image.data).unwrap()
        })
        .collect()
}

/// The resource links of a tool result, in order.
pub fn links(result: &CallToolResult) -> Vec<rmcp::model::Resource> {
    result
        .content
        .iter()
        .filter_map(|c| match c {
            rmcp::model::ContentBlock::ResourceLink(link) => Some(link.clone()),
            _ => None,
        })
        .collect()
}

/// Reads the resource `uri` through `peer`, failing the test on a hang.
pub async fn read_resource(
    peer: &rmcp::Peer<RoleClient>,
    uri: &str,
) -> Result<rmcp::model::ReadResourceResult, rmcp::ServiceError> {
    within(60, peer.read_resource(rmcp::model::ReadResourceRequestParams::new(uri))).await
}

/// The text of a resource's only contents.
pub fn resource_text(read: &rmcp::model::ReadResourceResult) -> &str {
    match read.contents.as_slice() {
        [rmcp::model::ResourceContents::TextResourceContents { text, .. }] => text,
        other => panic!("not one text: {other:?}"),
    }
}

/// The decoded bytes and MIME type of a resource's only contents, a blob.
pub fn resource_blob(read: &rmcp::model::ReadResourceResult) -> (Vec<u8>, Option<String>) {
    match read.contents.as_slice() {
        [rmcp::model::ResourceContents::BlobResourceContents { blob, mime_type, .. }] => {
            (base64::engine::general_purpose::STANDARD.decode(blob).unwrap(), mime_type.clone())
        }
        other => panic!("not one blob: {other:?}"),
    }
}

/// A fresh data directory for one server, removed when the guard drops.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    (dir, path)
}
