//! The MCP server over streamable HTTP: the built binary listening on a loopback port, driven by
//! rmcp's streamable HTTP client. A client that reconnects finds its sessions; a token is
//! enforced when set, required off loopback, and made for the run on loopback while kernels
//! are sandboxed, so that a cell cannot call the tools; SIGTERM stops the server and its
//! kernels. Nothing here sends a byte to an address other than 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use super::common::{group_alive, uv, within};
use super::mcp_client::{data_dir, texts};

/// The server's own variables for `serve`, cleared so that the caller's environment cannot
/// change what a test asks for.
const SERVE_ENV: [&str; 4] =
    ["MCP_PYREPL_TRANSPORT", "MCP_PYREPL_HOST", "MCP_PYREPL_PORT", "MCP_PYREPL_TOKEN"];

/// `mcp-pyrepl serve --transport http` on `data_dir` (no base packages) with `extra` flags;
/// killed when dropped.
fn command(data_dir: &Path, port: u16, extra: &[&str], uv: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-pyrepl"));
    command.env("MCP_PYREPL_SPARE_SESSIONS", "0");
    for name in SERVE_ENV {
        command.env_remove(name);
    }
    command
        .args(["serve", "--transport", "http", "--port", &port.to_string()])
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--uv")
        .arg(uv)
        .args(["--base-packages", ""])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running HTTP server, its stdout and stderr in `<data dir>/server.out` and `server.log`.
struct HttpServer {
    child: tokio::process::Child,
    port: u16,
    url: String,
    /// The token the server made for this run and printed, if it did.
    token: Option<String>,
    log: PathBuf,
    out: PathBuf,
}

impl HttpServer {
    /// Starts the server and waits until it says where it serves, reading the token it made
    /// (if any) from its login line, as a user would.
    async fn start(data_dir: &Path, extra: &[&str]) -> HttpServer {
        HttpServer::start_with(data_dir, extra, |_| {}).await
    }

    /// [`HttpServer::start`] with `adjust` applied to its command first.
    async fn start_with(
        data_dir: &Path,
        extra: &[&str],
        adjust: impl FnOnce(&mut tokio::process::Command),
    ) -> HttpServer {
        let port = free_port();
        let (log, out) = (data_dir.join("server.log"), data_dir.join("server.out"));
        let mut command = command(data_dir, port, extra, uv().await.path());
        adjust(&mut command);
        command.stdout(std::fs::File::create(&out).unwrap()).stderr(std::fs::File::create(&log).unwrap());
        let child = command.spawn().unwrap();
        let url = format!("http://127.0.0.1:{port}/mcp");
        let mut server = HttpServer { child, port, url, token: None, log, out };
        within(30, async {
            while !server.log().contains("serving MCP over streamable HTTP") {
                if let Some(status) = server.child.try_wait().unwrap() {
                    panic!("the server exited with {status}: {}", server.log());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let login = format!("{}?token=", server.url);
        server.token =
            server.log().lines().find_map(|line| Some(line.split_once(&login)?.1.trim().to_owned()));
        server
    }

    /// A client that connects as the README says: with the printed token, if there is one.
    async fn connect_as_told(&self) -> RunningService<RoleClient, ()> {
        self.connect(self.token.as_deref()).await.expect("MCP handshake over HTTP")
    }

    /// What the server wrote to stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A new MCP client (a new transport session), sending `token` as a bearer token if given.
    async fn connect(&self, token: Option<&str>) -> Result<RunningService<RoleClient, ()>, String> {
        connect_to(&self.url, token).await
    }

    /// SIGTERMs the server and waits for it to exit on its own, asserting it exits cleanly, in
    /// time (kernel stops are bounded to 30s) and never wrote to stdout.
    async fn terminate(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = within(45, self.child.wait()).await.unwrap();
        assert!(status.success(), "the server exited with {status} on SIGTERM: {}", self.log());
        let stdout = std::fs::read_to_string(&self.out).unwrap();
        assert!(stdout.is_empty(), "the server wrote to stdout: {stdout:?}");
    }
}

/// A new MCP client of `url`, sending `token` as a bearer token if given.
async fn connect_to(url: &str, token: Option<&str>) -> Result<RunningService<RoleClient, ()>, String> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::with_client(http_client(), config);
    within(30, ().serve(transport)).await.map_err(|error| error.to_string())
}

/// An HTTP client that goes straight to 127.0.0.1, whatever proxy the environment names.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap()
}

/// Calls `tool`, failing the test on a protocol error or a hang.
async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    arguments: Value,
) -> CallToolResult {
    let params = CallToolRequestParams::new(tool).with_arguments(arguments.as_object().unwrap().clone());
    within(300, client.call_tool(params)).await.unwrap_or_else(|e| panic!("{tool} failed: {e}"))
}

/// Runs `code` under `parent`; returns its text without the cell id, and the cell id.
async fn ok(
    client: &RunningService<RoleClient, ()>,
    session: &str,
    code: &str,
    parent: Option<&str>,
) -> (String, String) {
    let mut arguments = json!({ "session_id": session, "code": code });
    if let Some(parent) = parent {
        arguments["parent_cell_id"] = json!(parent);
    }
    let result = call(client, "run_code", arguments).await;
    let texts = texts(&result);
    assert_ne!(result.is_error, Some(true), "{code:?} failed: {}", texts.join("\n"));
    let id = texts.last().unwrap().clone();
    (texts[..texts.len() - 1].join(""), id)
}

/// Lists the tools, asserting that the REPL's own are there.
async fn assert_tools_listed(client: &RunningService<RoleClient, ()>) {
    let tools = within(30, client.list_all_tools()).await.unwrap();
    let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    for tool in ["create_repl", "run_code", "install_packages", "reset_repl"] {
        assert!(names.contains(&tool), "{tool} missing from {names:?}");
    }
}

/// The status of a bare `initialize` POST carrying `authorization` (if any).
async fn initialize_status(url: &str, authorization: Option<&str>) -> (u16, Option<String>) {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "raw", "version": "0" }
        }
    });
    let mut request = http_client()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = within(30, request.send()).await.unwrap();
    let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), challenge)
}

#[tokio::test]
async fn a_reconnecting_client_finds_its_sessions_and_sigterm_stops_every_kernel() {
    let (_guard, data) = data_dir();
    let server = HttpServer::start(&data, &[]).await;

    let first = server.connect_as_told().await;
    assert_tools_listed(&first).await;

    let created = call(&first, "create_repl", json!({})).await;
    assert_ne!(created.is_error, Some(true), "create_repl failed: {:?}", texts(&created));
    let session = created.structured_content.unwrap()["session_id"].as_str().unwrap().to_owned();
    let (_, assigned) = ok(&first, &session, "x = 41", None).await;
    let (answer, _) = ok(&first, &session, "x + 1", Some(&assigned)).await;
    assert_eq!(answer.trim(), "42");
    within(30, first.cancel()).await.unwrap();

    // A new client is a new transport session; the REPL session and its cells are still there.
    let second = server.connect_as_told().await;
    let (printed, _) = ok(&second, &session, "print(x)", Some(&assigned)).await;
    assert_eq!(printed, "41\n");
    let (pid, _) = ok(&second, &session, "import os\nprint(os.getpid())", Some(&assigned)).await;
    let kernel: u32 = pid.trim().parse().unwrap();
    assert!(group_alive(kernel));

    // SIGTERM while a cell runs: the server stops without waiting for it, and the kernel with it.
    let busy = tokio::spawn(async move {
        let code = json!({ "session_id": session, "code": "import time\ntime.sleep(600)" });
        let _ = call(&second, "run_code", code).await;
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.terminate().await;
    assert!(!group_alive(kernel), "the kernel outlived the server");
    busy.abort();
}

#[tokio::test]
async fn a_token_is_required_from_every_request_when_one_is_set() {
    let (_guard, data) = data_dir();
    let server = HttpServer::start(&data, &["--host", "127.0.0.1", "--token", "s3cret"]).await;

    for refused in [None, Some("Bearer nope"), Some("Bearer s3cret2"), Some("Basic s3cret"), Some("s3cret")] {
        let (status, challenge) = initialize_status(&server.url, refused).await;
        assert_eq!(status, 401, "{refused:?} was let in");
        assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "401 without a Bearer challenge");
    }
    let get = within(30, http_client().get(&server.url).send()).await.unwrap();
    assert_eq!(get.status().as_u16(), 401, "a GET without the token was let in");
    let (status, _) = initialize_status(&server.url, Some("Bearer s3cret")).await;
    assert_eq!(status, 200);

    let Err(error) = server.connect(None).await else { panic!("a client without the token was let in") };
    assert!(error.to_lowercase().contains("auth"), "{error}");
    let client = server.connect(Some("s3cret")).await.expect("MCP handshake with the token");
    assert_tools_listed(&client).await;
    // A tool call goes through too (an unknown session is the model's error, not a 401).
    let unknown = call(&client, "run_code", json!({ "session_id": "0123456789abcdef", "code": "1" })).await;
    assert_eq!(unknown.is_error, Some(true));
    assert!(texts(&unknown).join("").contains("0123456789abcdef"), "{:?}", texts(&unknown));
}

#[tokio::test]
async fn an_address_other_machines_reach_needs_a_token() {
    let (_guard, data) = data_dir();
    let uv = uv().await.path();
    let refused = within(30, command(&data, free_port(), &["--host", "0.0.0.0"], uv).output()).await.unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "started on 0.0.0.0 without a token: {stderr}");
    assert!(stderr.contains("token") && stderr.contains("--token"), "{stderr}");
    assert!(refused.stdout.is_empty(), "{:?}", String::from_utf8_lossy(&refused.stdout));

    let server = HttpServer::start(&data, &["--host", "0.0.0.0", "--token", "s3cret"]).await;
    // Reached through 127.0.0.1 only.
    let (status, _) = initialize_status(&server.url, None).await;
    assert_eq!(status, 401);
    let client = server.connect(Some("s3cret")).await.expect("MCP handshake with the token");
    assert_tools_listed(&client).await;
    within(30, client.cancel()).await.unwrap();
    server.terminate().await;
}

#[tokio::test]
async fn a_cut_output_links_its_full_text_which_reads_back_over_http() {
    let (_guard, data) = data_dir();
    let server = HttpServer::start(&data, &["--max-output-bytes", "4096"]).await;
    let client = server.connect_as_told().await;
    let created = call(&client, "create_repl", json!({})).await;
    let session = created.structured_content.unwrap()["session_id"].as_str().unwrap().to_owned();

    let code = "for i in range(20000): print(f'line {i}')";
    let result = call(&client, "run_code", json!({ "session_id": session, "code": code })).await;
    let note = texts(&result).into_iter().find(|t| t.contains("omitted")).expect("a note on the cut");
    let links = super::mcp_client::links(&result);
    let [link] = links.as_slice() else { panic!("one link expected: {:?}", result.content) };
    assert!(note.contains(&link.name), "the note names the file the link reads: {note}");
    assert!(link.uri.starts_with(&format!("pyrepl://sessions/{session}/outputs/")), "{link:?}");

    let read = super::mcp_client::read_resource(&client, &link.uri).await.expect("resources/read over HTTP");
    let expected: String = (0..20000).map(|i| format!("line {i}\n")).collect();
    let text = super::mcp_client::resource_text(&read);
    assert_eq!(text.len(), expected.len());
    assert!(text == expected, "the full text differs");
    let listed = within(30, client.list_all_resources()).await.unwrap();
    assert!(listed.iter().any(|r| r.uri == link.uri), "{listed:?}");

    // An exported notebook is a resource too, and reads back as the notebook.
    let cell = texts(&result).last().unwrap().clone();
    let exported = call(&client, "export_notebook", json!({ "session_id": session, "cell_id": cell })).await;
    assert_ne!(exported.is_error, Some(true), "{:?}", texts(&exported));
    let links = super::mcp_client::links(&exported);
    assert_eq!(links.len(), 2, "{links:?}");
    let notebook = super::mcp_client::read_resource(&client, &links[0].uri).await.unwrap();
    let notebook: Value = serde_json::from_str(super::mcp_client::resource_text(&notebook)).unwrap();
    assert_eq!(notebook["cells"][0]["source"], code);
    let requirements = super::mcp_client::read_resource(&client, &links[1].uri).await.unwrap();
    assert!(super::mcp_client::resource_text(&requirements).contains("ipykernel=="));
    let listed = within(30, client.list_all_resources()).await.unwrap();
    for link in &links {
        assert!(listed.iter().any(|r| r.uri == link.uri), "{link:?} not in {listed:?}");
    }
    within(30, client.cancel()).await.unwrap();
    server.terminate().await;
}

#[tokio::test]
async fn loopback_needs_a_token_exactly_while_kernels_are_sandboxed() {
    let (_guard, data) = data_dir();
    let off = HttpServer::start(&data, &["--sandbox", "off"]).await;
    assert_eq!(off.token, None, "a token was made for unconfined kernels: {}", off.log());
    assert_eq!(initialize_status(&off.url, None).await.0, 200);
    off.terminate().await;
    if super::sandbox::no_sandbox() {
        return;
    }

    let (_guard, data) = data_dir();
    let server = HttpServer::start(&data, &[]).await;
    let token = server.token.clone().unwrap_or_else(|| panic!("no token printed: {}", server.log()));
    assert_eq!(token.len(), 64, "{token}");
    let (status, challenge) = initialize_status(&server.url, None).await;
    assert_eq!(status, 401, "loopback let a request without the token in");
    assert!(challenge.is_some_and(|c| c.starts_with("Bearer")));
    assert_eq!(initialize_status(&server.url, Some(&format!("Bearer {token}"))).await.0, 200);
    // For clients that take only a URL, the URL printed with the token.
    let with_token = format!("{}?token={token}", server.url);
    assert_eq!(initialize_status(&with_token, None).await.0, 200);
    assert_eq!(initialize_status(&format!("{}?token=nope", server.url), None).await.0, 401);
    let client = connect_to(&with_token, None).await.expect("MCP handshake through the printed URL");
    assert_tools_listed(&client).await;
    within(30, client.cancel()).await.unwrap();
    server.terminate().await;
}

/// A cell that looks for another session through the server's loopback HTTP listener, as a
/// model's code would: `initialize`, `list_sessions`, `list_cells`, then `run_code` printing
/// `secret` under every cell of every other session. It tries no token, the one in its environment and any `--token` on a
/// server's command line, and prints `STOLEN …` or `refused: …` for each.
const STEER_THE_SERVER: &str = r#"
import glob, http.client, json, os, re
PORT = {port}

class Refused(Exception):
    pass

def rpc(method, params, token, id=None, sid=None):
    headers = {'content-type': 'application/json', 'accept': 'application/json, text/event-stream'}
    if sid:
        headers['mcp-session-id'] = sid
    if token:
        headers['authorization'] = 'Bearer ' + token
    body = {'jsonrpc': '2.0', 'method': method, 'params': params}
    if id is not None:
        body['id'] = id
    connection = http.client.HTTPConnection('127.0.0.1', PORT, timeout=60)
    connection.request('POST', '/mcp', json.dumps(body), headers)
    response = connection.getresponse()
    if response.status >= 300:
        raise Refused(f'HTTP {response.status}')
    sid = response.getheader('mcp-session-id') or sid
    if id is None:
        return sid, None
    for line in response:
        data = line[5:].strip() if line.startswith(b'data:') else b''
        message = json.loads(data) if data.startswith(b'{') else {}
        if message.get('id') == id:
            return sid, message
    raise RuntimeError('no reply')

def steal(token):
    hello = {'protocolVersion': '2025-06-18', 'capabilities': {}, 'clientInfo': {'name': 'cell', 'version': '0'}}
    sid, _ = rpc('initialize', hello, token, id=1)
    rpc('notifications/initialized', {}, token, sid=sid)
    _, listed = rpc('tools/call', {'name': 'list_sessions', 'arguments': {}}, token, id=2, sid=sid)
    mine = os.path.basename(os.path.dirname(os.getcwd()))
    stolen = []
    for other in set(re.findall(r'\b[0-9a-f]{16}\b', json.dumps(listed))) - {mine}:
        cells = {'name': 'list_cells', 'arguments': {'session_id': other}}
        cells = rpc('tools/call', cells, token, id=3, sid=sid)[1]['result'].get('structuredContent', {})
        for cell in cells.get('cells', []):
            code = {'session_id': other, 'code': 'print(secret)', 'parent_cell_id': cell['cell_id']}
            run = rpc('tools/call', {'name': 'run_code', 'arguments': code}, token, id=4, sid=sid)[1]
            stolen += [item['text'] for item in run['result']['content'] if item['type'] == 'text']
    return stolen

print('environment token:', repr(os.environ.get('MCP_PYREPL_TOKEN')))
candidates = [('no token', None), ('the environment', os.environ.get('MCP_PYREPL_TOKEN'))]
for cmdline in glob.glob('/proc/[0-9]*/cmdline'):
    try:
        argv = open(cmdline, 'rb').read().decode(errors='replace').split('\0')
    except OSError:
        continue
    candidates += [(cmdline, argv[i + 1]) for i, arg in enumerate(argv[:-1]) if arg == '--token']
for name, token in candidates:
    if name != 'no token' and not token:
        continue
    try:
        print(f'STOLEN with {name}:', steal(token))
    except Exception as error:
        print(f'refused: {name}: {type(error).__name__}: {error}')
"#;

/// Runs [`STEER_THE_SERVER`] in a kernel confined at `level`, with another session holding a
/// secret, and asserts that the cell reached no tool. The server makes its token, or is given
/// `token_in_env` in `MCP_PYREPL_TOKEN`.
async fn a_cell_cannot_call_the_tools_at(level: &str, token_in_env: Option<&str>) {
    if super::sandbox::no_sandbox() {
        return;
    }
    let (_guard, data) = data_dir();
    let server = HttpServer::start_with(&data, &["--sandbox", level], |command| {
        if let Some(token) = token_in_env {
            command.env("MCP_PYREPL_TOKEN", token);
        }
    })
    .await;
    let client = match token_in_env {
        Some(token) => server.connect(Some(token)).await.expect("MCP handshake with the token"),
        None => server.connect_as_told().await,
    };
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let created = call(&client, "create_repl", json!({})).await;
        let structured =
            created.structured_content.clone().unwrap_or_else(|| panic!("{:?}", texts(&created)));
        assert_eq!((&structured["sandbox"], &structured["sandboxed"]), (&json!(level), &json!(true)));
        sessions.push(structured["session_id"].as_str().unwrap().to_owned());
    }
    let [victim, attacker] = sessions.as_slice() else { unreachable!() };
    let (_, holding) = ok(&client, victim, "secret = 'hunter2' + '-of-the-victim'", None).await;

    let code = STEER_THE_SERVER.replace("{port}", &server.port.to_string());
    let result = call(&client, "run_code", json!({ "session_id": attacker, "code": code })).await;
    let printed = texts(&result).join("");
    assert_ne!(result.is_error, Some(true), "the attack cell itself failed: {printed}");
    assert!(
        !printed.contains("hunter2-of-the-victim"),
        "a cell read another session through the server: {printed}"
    );
    assert!(!printed.contains("STOLEN"), "a cell called the server's tools: {printed}");
    // Refused by the server (files: the token), or unreachable (strict: no network at all).
    let refusal = if level == "strict" { "[Errno" } else { "Refused: HTTP 401" };
    let tried = printed.lines().find(|line| line.starts_with("refused: no token: ")).unwrap_or_default();
    assert!(tried.contains(refusal), "not refused as expected ({refusal}): {printed}");
    assert!(printed.contains("environment token: None"), "the kernel sees the server's token: {printed}");
    // The victim's state is what it was, and the server still serves its own client.
    let (secret, _) = ok(&client, victim, "print(secret)", Some(&holding)).await;
    assert_eq!(secret, "hunter2-of-the-victim\n");
    within(30, client.cancel()).await.unwrap();
    server.terminate().await;
}

#[tokio::test]
async fn a_files_cell_cannot_call_the_tools_over_loopback_http() {
    a_cell_cannot_call_the_tools_at("files", None).await;
}

#[tokio::test]
async fn a_files_cell_cannot_use_the_token_the_server_was_given_in_its_environment() {
    a_cell_cannot_call_the_tools_at("files", Some("chosen-by-the-user-0f3a9c")).await;
}

#[tokio::test]
async fn a_strict_cell_cannot_call_the_tools_over_loopback_http() {
    a_cell_cannot_call_the_tools_at("strict", None).await;
}
