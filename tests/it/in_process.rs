//! The MCP layer in process: [`PyReplServer`] served on one end of a `tokio::io::duplex` pipe and
//! rmcp's client on the other, with real sessions (uv venvs, ipykernel) behind it but no server
//! binary. Owns the tests of what `mcp/tools.rs` and `mcp/content.rs` decide: the tool list and
//! its schemas, how bad arguments come back, and how a cell's outputs become content. What only
//! a process shows (stdio framing, signals, crashes, restarts) stays in `mcp.rs` and `faults.rs`.

use std::collections::BTreeSet;
use std::ops::Deref;
use std::sync::Arc;

use mcp_pyrepl::config::Settings;
use mcp_pyrepl::mcp::tools::PyReplServer;
use mcp_pyrepl::session::manager::SessionManager;
use rmcp::model::{CallToolRequestParams, CallToolResult, ErrorCode};
use rmcp::service::RunningService;
use rmcp::{RoleServer, ServiceError, ServiceExt};
use serde_json::{Value, json};

use super::common::{uv, within};
use super::mcp_client::{Client, data_dir, read_resource, texts};

/// Bytes buffered each way in the pipe between client and server.
const PIPE_BYTES: usize = 64 * 1024;

/// A [`PyReplServer`] in this process and a client connected to it, which it derefs to. The
/// sessions' kernels are killed when it drops (with the manager that owns them).
struct InProcess {
    client: Client,
    _server: RunningService<RoleServer, PyReplServer>,
    _data: tempfile::TempDir,
}

impl InProcess {
    /// A server on a fresh data directory: no spare sessions, no base packages, the tests' uv.
    async fn start() -> InProcess {
        let (data, path) = data_dir();
        let mut settings = Settings::with_data_dir(path);
        settings.spare_sessions = 0;
        settings.base_packages = Vec::new();
        settings.uv = Some(uv().await.path().to_owned());
        let server = PyReplServer::new(Arc::new(SessionManager::new(settings).await));
        let (server_end, client_end) = tokio::io::duplex(PIPE_BYTES);
        // Each side's handshake waits for the other's, so they run together.
        let (server, client) = tokio::join!(server.serve(server_end), Client::connect(client_end));
        InProcess { client, _server: server.expect("server handshake"), _data: data }
    }
}

impl Deref for InProcess {
    type Target = Client;

    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

/// Every tool, with the arguments its schema must require and those it must offer as optional.
const TOOLS: [(&str, &[&str], &[&str]); 15] = [
    ("attach_kernel", &["connection_file"], &[]),
    ("create_repl", &[], &[]),
    ("destroy_repl", &["session_id"], &[]),
    ("download_file", &["session_id", "path"], &[]),
    ("export_notebook", &["session_id", "cell_id"], &[]),
    ("get_cell", &["session_id", "cell_id"], &[]),
    ("install_packages", &["session_id", "packages"], &[]),
    ("interrupt_cell", &["session_id", "cell_id"], &[]),
    ("list_cells", &["session_id"], &[]),
    ("list_sessions", &[], &[]),
    ("list_variables", &["session_id", "cell_id"], &[]),
    ("reset_repl", &["session_id"], &[]),
    ("run_code", &["session_id", "code"], &["parent_cell_id", "timeout_s", "wait_s"]),
    ("upload_file", &["session_id", "path", "content_base64"], &[]),
    ("wait_cell", &["session_id", "cell_id"], &["wait_s"]),
];

/// The names of a JSON array of strings (absent: none).
fn names(value: Option<&Value>) -> BTreeSet<String> {
    let items = value.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    items.iter().map(|name| name.as_str().expect("a name").to_owned()).collect()
}

#[tokio::test]
async fn every_tool_is_described_and_its_schema_requires_what_its_arguments_require() {
    let server = InProcess::start().await;
    let tools = within(30, server.list_all_tools()).await.expect("tools/list");
    let listed: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    let expected: Vec<&str> = TOOLS.iter().map(|(name, ..)| *name).collect();
    assert_eq!(listed, expected, "the tool names");

    for (tool, (_, required, optional)) in tools.iter().zip(TOOLS) {
        let name = &tool.name;
        assert!(tool.description.as_deref().is_some_and(|d| d.len() > 40), "{name}: {tool:?}");
        let schema = &tool.input_schema;
        assert_eq!(schema.get("type"), Some(&json!("object")), "{name}: {schema:?}");
        let required_names: BTreeSet<String> = required.iter().map(|n| n.to_string()).collect();
        assert_eq!(names(schema.get("required")), required_names, "{name}: the required arguments");
        let properties = schema.get("properties").and_then(Value::as_object);
        let properties = properties.cloned().unwrap_or_default();
        let all: BTreeSet<&str> = required.iter().chain(optional).copied().collect();
        assert_eq!(properties.keys().map(String::as_str).collect::<BTreeSet<_>>(), all, "{name}");
        for (argument, property) in &properties {
            // The doc comments of the argument types are all the model learns about them.
            let description = property.get("description").and_then(Value::as_str).unwrap_or("");
            assert!(description.len() > 10, "{name}.{argument} has no description: {property}");
        }
    }
}

#[tokio::test]
async fn every_tool_says_whether_it_reads_destroys_or_reaches_outside() {
    let server = InProcess::start().await;
    let tools = within(30, server.list_all_tools()).await.expect("tools/list");
    let hint = |name: &str, which: fn(&rmcp::model::ToolAnnotations) -> Option<bool>| {
        let tool = tools.iter().find(|tool| tool.name == name).unwrap();
        tool.annotations.as_ref().and_then(which)
    };
    for tool in &tools {
        let annotations =
            tool.annotations.as_ref().unwrap_or_else(|| panic!("{} has no annotations", tool.name));
        assert!(annotations.title.as_deref().is_some_and(|t| !t.is_empty()), "{} has no title", tool.name);
        let name = tool.name.as_ref();
        let reads =
            ["list_sessions", "list_cells", "get_cell", "wait_cell", "list_variables", "download_file"]
                .contains(&name);
        assert_eq!(annotations.read_only_hint, Some(reads), "{name}: readOnlyHint");
        let open = name == "install_packages";
        assert_eq!(annotations.open_world_hint, Some(open), "{name}: openWorldHint");
        if !reads {
            // upload_file replaces a file of the same name.
            let destroys = ["reset_repl", "destroy_repl", "upload_file"].contains(&name);
            assert_eq!(annotations.destructive_hint, Some(destroys), "{name}: destructiveHint");
            assert!(annotations.idempotent_hint.is_some(), "{name}: idempotentHint");
        }
    }
    assert_eq!(hint("reset_repl", |a| a.idempotent_hint), Some(true));
    assert_eq!(hint("run_code", |a| a.idempotent_hint), Some(false));
    assert_eq!(hint("upload_file", |a| a.idempotent_hint), Some(true));
}

/// A session with one cell (`x = 1`) and, under it, a cell that runs until `flag/go` exists.
struct Blocked {
    server: InProcess,
    session: String,
    cell: String,
    flag: tempfile::TempDir,
    running: String,
}

impl Blocked {
    async fn start() -> Blocked {
        let server = InProcess::start().await;
        let session = server.create_repl().await;
        let (_, cell) = server.ok(&session, "x = 1", None).await;
        let flag = tempfile::tempdir().unwrap();
        let code = format!(
            "import os, time\nwhile not os.path.exists({:?}): time.sleep(0.02)",
            flag.path().join("go").to_str().unwrap()
        );
        let early = server
            .call(
                "run_code",
                json!({"session_id": session, "code": code, "parent_cell_id": cell, "wait_s": 0}),
            )
            .await;
        assert_eq!(early.structured_content.clone().unwrap()["status"], "running");
        let running = texts(&early).last().unwrap().clone();
        Blocked { server, session, cell, flag, running }
    }
}

#[tokio::test]
async fn reads_answer_while_a_cell_runs() {
    let Blocked { server, session, cell, flag, running } = Blocked::start().await;
    let listed = within(10, server.call("list_cells", json!({"session_id": session}))).await;
    assert_eq!(listed.structured_content.unwrap()["cells"].as_array().unwrap().len(), 1);
    let shown = within(10, server.call("get_cell", json!({"session_id": session, "cell_id": cell}))).await;
    assert_eq!(texts(&shown)[0], "x = 1");
    let sessions = within(10, server.call("list_sessions", json!({}))).await;
    assert_eq!(sessions.structured_content.unwrap()["sessions"][0]["cells"], 1);
    std::fs::write(flag.path().join("go"), "").unwrap();
    let done =
        server.call("wait_cell", json!({"session_id": session, "cell_id": running, "wait_s": 60})).await;
    assert_eq!(done.structured_content.unwrap()["status"], "ok");
}

/// The tools that take a `session_id`.
const SESSION_TOOLS: [&str; 12] = [
    "run_code",
    "wait_cell",
    "interrupt_cell",
    "install_packages",
    "reset_repl",
    "list_cells",
    "get_cell",
    "list_variables",
    "export_notebook",
    "upload_file",
    "download_file",
    "destroy_repl",
];

/// The entries of `every` that `tool` takes (unknown arguments are refused).
fn only_arguments_of(tool: &str, every: Value) -> Value {
    let (_, required, optional) = TOOLS.iter().find(|(name, ..)| *name == tool).expect("a tool of TOOLS");
    let takes = |key: &String| required.contains(&key.as_str()) || optional.contains(&key.as_str());
    Value::Object(every.as_object().unwrap().clone().into_iter().filter(|(key, _)| takes(key)).collect())
}

/// Asserts that `result` is a tool error whose text names `expected`.
fn assert_refused(result: &CallToolResult, expected: &str, call: &str) {
    let text = texts(result).join("\n");
    assert_eq!(result.is_error, Some(true), "{call} was not refused: {text}");
    assert!(text.contains(expected), "{call}: expected {expected:?} in {text:?}");
    assert!(result.structured_content.is_none(), "{call} answered as if it ran: {result:?}");
}

#[tokio::test]
async fn bad_arguments_are_tool_errors_naming_the_value_and_the_server_keeps_answering() {
    let server = InProcess::start().await;
    let session = server.create_repl().await;
    let other = server.create_repl().await;
    let (_, cell) = server.ok(&session, "x = 1", None).await;
    let (_, foreign) = server.ok(&other, "y = 2", None).await;

    // Path-like, long and unknown session ids, for every tool that takes one; the server shows a
    // long value shortened, never all 5000 characters.
    let long = "7".repeat(5000);
    let long_shown = format!("`{}…`", &long[..40]);
    for (id, expected) in [
        ("0123456789abcdef", "no session `0123456789abcdef`"),
        ("../../etc", "`../../etc` is not a session id"),
        ("a/b", "`a/b` is not a session id"),
        ("", "`` is not a session id"),
        (long.as_str(), long_shown.as_str()),
    ] {
        for tool in SESSION_TOOLS {
            let every = json!({
                "session_id": id, "code": "1", "cell_id": cell, "packages": ["six"], "path": "x.txt",
                "content_base64": "eA==",
            });
            let result = server.call(tool, only_arguments_of(tool, every)).await;
            assert_refused(&result, expected, &format!("{tool} on session {:.40?}", id));
            assert!(texts(&result)[0].len() < 300, "{tool} echoed the whole value");
        }
    }

    // Bad and unknown cell ids, a parent from another session, bad code and bad times: refused
    // before any kernel sees the code.
    let run = |code: &str, more: Value| {
        let mut arguments = json!({ "session_id": session, "code": code });
        arguments.as_object_mut().unwrap().extend(more.as_object().unwrap().clone());
        arguments
    };
    let huge = "#".repeat((1 << 20) + 1);
    let not_positive = |got| format!("timeout_s must be a positive number of seconds up to 86400; got {got}");
    let negative_wait =
        |got| format!("wait_s must be a non-negative number of seconds up to 86400; got {got}");
    let cases = [
        (run("1", json!({ "parent_cell_id": "zzzzzzzzzzzz" })), "`zzzzzzzzzzzz` is not a cell id"),
        (run("1", json!({ "parent_cell_id": "../graph.json" })), "`../graph.json` is not a cell id"),
        (run("1", json!({ "parent_cell_id": "" })), "`` is not a cell id"),
        (run("1", json!({ "parent_cell_id": "aaaaaaaaaaaa" })), "no cell `aaaaaaaaaaaa`"),
        (run("1", json!({ "parent_cell_id": foreign })), &format!("no cell `{foreign}` in this session")),
        (run("", json!({})), "the code is empty"),
        (run(" \n\t", json!({})), "the code is empty"),
        (run(&huge, json!({})), "the code is 1048577 bytes, over the limit of 1048576"),
        (run("1", json!({ "timeout_s": -1 })), &not_positive("-1")),
        (run("1", json!({ "timeout_s": 0 })), &not_positive("0")),
        (run("1", json!({ "timeout_s": 1e6 })), &not_positive("1000000")),
        (run("1", json!({ "timeout_s": 1e300 })), &not_positive("1e300")),
        (run("1", json!({ "timeout_s": -1, "wait_s": 5 })), &not_positive("-1")),
        (run("1", json!({ "wait_s": -0.5 })), &negative_wait("-0.5")),
    ];
    for (arguments, expected) in &cases {
        let shown: String = arguments.to_string().chars().take(120).collect();
        assert_refused(&server.call("run_code", arguments.clone()).await, expected, &shown);
    }
    for (tool, cell_id, expected) in [
        ("get_cell", "../../etc", "`../../etc` is not a cell id"),
        ("get_cell", "aaaaaaaaaaaa", "no cell `aaaaaaaaaaaa`"),
        ("get_cell", foreign.as_str(), "in this session"),
        ("wait_cell", "abc", "`abc` is not a cell id"),
        ("export_notebook", "/etc/passwd", "`/etc/passwd` is not a cell id"),
        ("list_variables", "../x", "`../x` is not a cell id"),
        ("list_variables", "aaaaaaaaaaaa", "no cell `aaaaaaaaaaaa`"),
        ("list_variables", foreign.as_str(), "in this session"),
    ] {
        let result = server.call(tool, json!({ "session_id": session, "cell_id": cell_id })).await;
        assert_refused(&result, expected, &format!("{tool} on cell {cell_id:?}"));
    }
    let result =
        server.call("wait_cell", json!({ "session_id": session, "cell_id": cell, "wait_s": -1 })).await;
    assert_refused(&result, &negative_wait("-1"), "wait_cell");
    let result = server.call("install_packages", json!({ "session_id": session, "packages": [] })).await;
    assert_refused(&result, "packages is empty", "install_packages of nothing");
    let result = server.call("attach_kernel", json!({ "connection_file": "" })).await;
    assert_refused(&result, "connection_file is empty", "attach_kernel to no file");

    // Wrong JSON types and missing arguments: rmcp refuses them before any tool code runs, as a
    // tool error carrying serde's message (not as an `invalid_params` protocol error).
    for (tool, arguments, expected) in [
        ("run_code", json!({ "session_id": 5, "code": "1" }), "invalid type: integer `5`, expected a string"),
        (
            "run_code",
            json!({ "session_id": session, "code": ["1"] }),
            "invalid type: sequence, expected a string",
        ),
        (
            "run_code",
            json!({ "session_id": session, "code": "1", "timeout_s": "9" }),
            "invalid type: string \"9\", expected f64",
        ),
        ("run_code", json!({ "session_id": session }), "missing field `code`"),
        ("install_packages", json!({ "session_id": session, "packages": "six" }), "expected a sequence"),
        ("list_cells", json!({}), "missing field `session_id`"),
    ] {
        let result = server.call(tool, arguments.clone()).await;
        assert_refused(&result, "failed to deserialize parameters", &format!("{tool} {arguments}"));
        assert_refused(&result, expected, &format!("{tool} {arguments}"));
    }
    // An unknown tool is the one protocol error: rmcp answers `invalid_params`.
    let params = CallToolRequestParams::new("no_such_tool").with_arguments(serde_json::Map::new());
    match within(30, server.call_tool(params)).await {
        Err(ServiceError::McpError(error)) => assert_eq!(error.code, ErrorCode::INVALID_PARAMS, "{error:?}"),
        other => panic!("an unknown tool should be a protocol error: {other:?}"),
    }

    // Nothing was recorded, nothing was destroyed, and the server still runs code.
    assert_eq!(cell_count(&server, &session).await, 1);
    assert_eq!(cell_count(&server, &other).await, 1);
    let (out, _) = server.ok(&session, "print(x)", Some(&cell)).await;
    assert_eq!(out, "1\n");
    let sessions = server.call("list_sessions", json!({})).await.structured_content.unwrap();
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(2), "{sessions}");
}

/// How many cells `list_cells` reports for `session`.
async fn cell_count(server: &Client, session: &str) -> usize {
    let result = server.call("list_cells", json!({ "session_id": session })).await;
    assert_ne!(result.is_error, Some(true), "{:?}", texts(&result));
    result.structured_content.unwrap()["cells"].as_array().unwrap().len()
}

#[tokio::test]
async fn outputs_become_content_in_order_with_the_cell_id_last() {
    let server = InProcess::start().await;
    let session = server.create_repl().await;

    let code = "import sys\nprint('out')\nprint('err', file=sys.stderr)\n6 * 7";
    let result = server.run(&session, code, None).await;
    assert_eq!(result.is_error, Some(false), "{:?}", texts(&result));
    let structured = result.structured_content.clone().unwrap();
    let cell = structured["cell_id"].as_str().unwrap().to_owned();
    assert_eq!(texts(&result), ["out\n", "[stderr]\nerr\n", "42", cell.as_str()]);
    assert_eq!(result.content.len(), 4, "only text: {result:?}");
    assert_eq!(structured["status"], "ok");
    assert_eq!(structured["parent_cell_id"], Value::Null);
    // get_cell gives the code, then the same outputs.
    let detail = server.call("get_cell", json!({ "session_id": session, "cell_id": cell })).await;
    assert_eq!(texts(&detail), [code, "out\n", "[stderr]\nerr\n", "42"]);

    let failing = "def f():\n    raise ValueError('bad value')\nprint('before')\nf()";
    let result = server.run(&session, failing, Some(&cell)).await;
    assert_eq!(result.is_error, Some(true), "a traceback is an error result");
    let structured = result.structured_content.clone().unwrap();
    let texts = texts(&result);
    let [before, traceback, id] = texts.as_slice() else { panic!("{texts:?}") };
    assert_eq!(before, "before\n");
    assert!(traceback.contains("ValueError: bad value"), "{traceback}");
    assert!(traceback.contains("raise ValueError('bad value')"), "the traceback shows the line: {traceback}");
    assert!(!traceback.contains('\x1b'), "ANSI codes left: {traceback:?}");
    assert_eq!(structured["cell_id"], json!(id));
    assert_eq!(structured["parent_cell_id"], json!(cell));
    assert_eq!(structured["status"], "error");
}

#[tokio::test]
async fn a_misspelt_argument_is_refused_rather_than_ignored() {
    let server = InProcess::start().await;
    let session = server.create_repl().await;
    let (_, cell) = server.ok(&session, "x = 1", None).await;
    let arguments = json!({ "session_id": session, "code": "print(x)", "parent_id": cell });
    assert_refused(&server.call("run_code", arguments).await, "parent_id", "run_code with `parent_id`");
    assert_eq!(cell_count(&server, &session).await, 1);
}

#[tokio::test]
async fn resources_answer_while_a_cell_runs_and_bad_uris_are_refused_by_name() {
    let Blocked { server, session, cell, flag, running } = Blocked::start().await;

    // While it runs: reading the text of a recorded cell's output, and listing, answer at once.
    let output = format!("pyrepl://sessions/{session}/cells/{cell}/outputs/0");
    let missing = within(10, read_resource(&server.service, &output)).await;
    match missing {
        Err(ServiceError::McpError(error)) => {
            assert_eq!(error.code, ErrorCode::RESOURCE_NOT_FOUND, "{error:?}");
            assert!(error.message.contains(&output) && error.message.contains("0 output(s)"), "{error:?}");
        }
        other => panic!("a cell without outputs has no output 0: {other:?}"),
    }
    within(10, server.service.list_all_resources()).await.expect("resources/list while a cell runs");

    let other = "fedcba9876543210";
    for (uri, code, expected) in [
        ("file:///etc/passwd".to_owned(), ErrorCode::INVALID_PARAMS, "is not a resource of this server"),
        (
            format!("pyrepl://sessions/{session}/outputs/../graph.json"),
            ErrorCode::INVALID_PARAMS,
            "is not a resource",
        ),
        (
            format!("pyrepl://sessions/{session}/venv/bin/python"),
            ErrorCode::INVALID_PARAMS,
            "is not a resource",
        ),
        ("pyrepl://sessions/..%2Fetc/outputs/x".to_owned(), ErrorCode::INVALID_PARAMS, "is not a session id"),
        (format!("pyrepl://sessions/{other}/outputs/x.txt"), ErrorCode::RESOURCE_NOT_FOUND, "no session"),
        (
            format!("pyrepl://sessions/{session}/cells/zzz/outputs/0"),
            ErrorCode::INVALID_PARAMS,
            "not a cell id",
        ),
        (
            format!("pyrepl://sessions/{session}/cells/aaaaaaaaaaaa/outputs/0"),
            ErrorCode::RESOURCE_NOT_FOUND,
            "no cell",
        ),
        (format!("pyrepl://sessions/{session}/outputs/none.txt"), ErrorCode::RESOURCE_NOT_FOUND, "no file"),
        (
            format!("pyrepl://sessions/{session}/files/../session.json"),
            ErrorCode::INVALID_PARAMS,
            "contains `..`",
        ),
        (format!("pyrepl://sessions/{session}/files/nothing.csv"), ErrorCode::RESOURCE_NOT_FOUND, "no file"),
    ] {
        match within(10, read_resource(&server.service, &uri)).await {
            Err(ServiceError::McpError(error)) => {
                assert_eq!(error.code, code, "{uri}: {error:?}");
                assert!(error.message.contains(&uri), "{uri}: the error names the URI: {}", error.message);
                assert!(error.message.contains(expected), "{uri}: {}", error.message);
            }
            other => panic!("{uri} was not refused: {other:?}"),
        }
    }
    std::fs::write(flag.path().join("go"), "").unwrap();
    let done =
        server.call("wait_cell", json!({"session_id": session, "cell_id": running, "wait_s": 60})).await;
    assert_eq!(done.structured_content.unwrap()["status"], "ok");
}
