//! The stdio transport line by line: the built server on a pipe, fed raw bytes. Every line
//! that is no message gets an answer and the server answers the next one; a line carrying an
//! upload of `--max-upload-bytes` in base64 is read.

use std::path::Path;
use std::process::Stdio;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::common::{uv, within};
use super::mcp_client::data_dir;

/// `mcp-pyrepl` over raw pipes, past the MCP handshake.
struct RawServer {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl RawServer {
    /// Starts the server on `data` (no base packages) with `flags` and completes the handshake.
    async fn start(data: &Path, flags: &[&str]) -> RawServer {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-pyrepl"))
            .env("MCP_PYREPL_SPARE_SESSIONS", "0")
            .arg("--data-dir")
            .arg(data)
            .arg("--uv")
            .arg(uv().await.path())
            .args(["--base-packages", ""])
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (stdin, stdout) = (child.stdin.take().unwrap(), BufReader::new(child.stdout.take().unwrap()));
        let mut server = RawServer { _child: child, stdin, stdout };
        let initialize = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": { "name": "raw", "version": "0" } }
        });
        server.send(initialize.to_string().as_bytes()).await;
        assert_eq!(server.reply(30).await["id"], 0);
        server.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
        server
    }

    /// Writes `line` and a newline.
    async fn send(&mut self, line: &[u8]) {
        self.stdin.write_all(line).await.unwrap();
        self.stdin.write_all(b"\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The next reply (a message with a result or an error; notifications are skipped),
    /// failing the test when none comes within `seconds`.
    async fn reply(&mut self, seconds: u64) -> Value {
        within(seconds, async {
            loop {
                let mut line = String::new();
                assert_ne!(self.stdout.read_line(&mut line).await.unwrap(), 0, "the server closed stdout");
                let message: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
                if message.get("result").is_some() || message.get("error").is_some() {
                    return message;
                }
            }
        })
        .await
    }

    /// Calls `tool` and returns its result.
    async fn call(&mut self, id: u64, tool: &str, arguments: Value, seconds: u64) -> Value {
        let request = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": tool, "arguments": arguments }
        });
        self.send(request.to_string().as_bytes()).await;
        let reply = self.reply(seconds).await;
        assert_eq!(reply["id"], id, "{reply}");
        reply["result"].clone()
    }
}

#[tokio::test]
async fn every_bad_line_gets_a_parse_error_and_the_server_answers_the_next() {
    let (_guard, data) = data_dir();
    // Lines up to 1.5 MiB + 1 MiB are read; the long line below is past that.
    let mut server = RawServer::start(&data, &["--max-upload-bytes", "1048576"]).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let long = vec![b'a'; 3 << 20];
    let bad: [(&str, &[u8]); 6] = [
        ("NaN", br#"{"jsonrpc":"2.0","id":900,"method":"ping","params":{"x":NaN}}"#),
        ("1e999", br#"{"jsonrpc":"2.0","id":901,"method":"ping","params":{"x":1e999}}"#),
        ("too deep", deep.as_bytes()),
        (
            "invalid UTF-8",
            b"{\"jsonrpc\":\"2.0\",\"id\":902,\"method\":\"ping\",\"params\":{\"x\":\"\xff\xfe\"}}",
        ),
        ("over the limit", &long),
        ("garbage", b"this is not json"),
    ];
    for (id, (what, line)) in (1..).zip(bad) {
        server.send(line).await;
        server.send(json!({ "jsonrpc": "2.0", "id": id, "method": "ping" }).to_string().as_bytes()).await;
        // Replies carry their ids, so either may come first.
        let replies = [server.reply(30).await, server.reply(30).await];
        let parse_error = replies.iter().find(|reply| reply["id"].is_null()).unwrap_or_else(|| {
            panic!("{what}: no reply with `id: null` among {replies:?}");
        });
        assert_eq!(parse_error["error"]["code"], -32700, "{what}: {parse_error}");
        assert!(
            parse_error["error"]["message"].as_str().unwrap().starts_with("Parse error"),
            "{parse_error}"
        );
        let pong = replies.iter().find(|reply| reply["id"] == id).expect("the ping after it is answered");
        assert_eq!(pong["result"], json!({}), "{what}: {pong}");
    }
}

#[tokio::test]
async fn an_upload_of_max_upload_bytes_fits_in_one_stdio_line() {
    let (_guard, data) = data_dir();
    let mut server = RawServer::start(&data, &[]).await;
    let created = server.call(1, "create_repl", json!({}), 300).await;
    let session = created["structuredContent"]["session_id"].as_str().expect("a session id").to_owned();

    // The default limit, 32 MiB: 43 MiB of base64, past rmcp's own 16 MiB lines.
    let bytes: Vec<u8> = (0..32u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let content = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let arguments = json!({ "session_id": session, "path": "big.bin", "content_base64": content });
    let uploaded = server.call(2, "upload_file", arguments, 120).await;
    assert_ne!(uploaded["isError"], true, "{uploaded}");
    let written = std::fs::read(data.join("sessions").join(&session).join("work/big.bin")).unwrap();
    assert!(written == bytes, "the file differs from the upload ({} bytes)", written.len());
}
