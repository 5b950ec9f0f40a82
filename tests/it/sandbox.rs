//! Sandboxed kernels through the real server: what a `files` kernel may write and read, that
//! the sandbox survives restarts and spares, and that a `strict` kernel has no network.
//!
//! These never skip: a machine without Landlock fails them, unless
//! `MCP_PYREPL_TEST_NO_SANDBOX=1` says it cannot confine (then they end at once).

use std::path::Path;

use rmcp::model::CallToolResult;
use serde_json::json;

use super::mcp_client::{Server, data_dir, images, texts};
use super::pools::{name, wait_for_spare};

/// Whether this machine is declared unable to confine kernels.
fn no_sandbox() -> bool {
    std::env::var_os("MCP_PYREPL_TEST_NO_SANDBOX").is_some_and(|value| value == "1")
}

/// A server at `level` with `flags`; `None` when the machine cannot confine (and says so).
async fn start(data: &Path, level: &str, flags: &[&str]) -> Option<Server> {
    if no_sandbox() {
        return None;
    }
    let flags: Vec<String> = flags.iter().map(|flag| flag.to_string()).collect();
    Some(
        Server::start_with(data, "numpy,pandas,matplotlib,plotly", |command| {
            command.args(["--sandbox", level]).args(&flags);
        })
        .await,
    )
}

/// A new session, checked to be confined at `level`.
async fn confined_session(server: &Server, level: &str) -> String {
    let created = server.call("create_repl", json!({})).await;
    let structured = created.structured_content.clone().unwrap();
    assert_eq!(structured["sandbox"], level);
    assert_eq!(
        structured["sandboxed"], true,
        "no Landlock here: set MCP_PYREPL_TEST_NO_SANDBOX=1 if this machine cannot confine kernels"
    );
    structured["session_id"].as_str().unwrap().to_owned()
}

/// Asserts that `result` is the ordinary traceback of a refused access, or of a path that does
/// not exist for the kernel (outside what its sandbox shows it).
fn assert_refused(result: &CallToolResult) {
    let text = texts(result).join("\n");
    assert_eq!(result.is_error, Some(true), "{text}");
    assert!(text.contains("PermissionError: [Errno") || text.contains("FileNotFoundError: [Errno"), "{text}");
    assert!(text.contains("Traceback") || text.contains("Cell In["), "not a traceback: {text}");
}

#[tokio::test]
async fn files_confines_writes_and_reads_to_the_session() {
    let (_guard, data) = data_dir();
    let outside = tempfile::tempdir().unwrap();
    let readable = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "hunter2").unwrap();
    std::fs::write(readable.path().join("shared.txt"), "shared data").unwrap();
    let read_flag = readable.path().to_str().unwrap();
    let Some(server) = start(&data, "files", &["--sandbox-read", read_flag]).await else { return };
    let session = confined_session(&server, "files").await;
    let other = confined_session(&server, "files").await;

    // The working directory is the session's `work/`, and writable.
    let (written, _) = server
        .ok(&session, "import os\nopen('ok.txt', 'w').write('x')\nprint(os.path.abspath('ok.txt'))", None)
        .await;
    let written = Path::new(written.trim());
    assert_eq!(written, data.join("sessions").join(&session).join("work").join("ok.txt"));
    assert!(written.exists(), "{written:?}");

    // Nothing outside it is: a temp dir of ours, the home directory, another session.
    let home = std::env::var("HOME").unwrap();
    let marker = format!("mcp-pyrepl-sandbox-{}", std::process::id());
    let targets = [
        outside.path().join("escaped"),
        Path::new(&home).join(&marker),
        data.join("sessions").join(&other).join("escaped"),
    ];
    for target in &targets {
        assert_refused(&server.run(&session, &format!("open({target:?}, 'w').write('x')"), None).await);
        assert!(!target.exists(), "{target:?} was written");
    }
    // Nor the session's own records, which the server trusts when it reads them back.
    let own = data.join("sessions").join(&session);
    for record in ["session.json", "graph.json"] {
        let before = std::fs::read(own.join(record)).unwrap();
        let tamper = format!("open({:?}, 'w').write('{{}}')", own.join(record));
        assert_refused(&server.run(&session, &tamper, None).await);
        assert_eq!(
            std::fs::read(own.join(record)).unwrap()[..before.len()],
            before[..],
            "{record} was changed"
        );
    }

    // A secret outside the allowed directories cannot be read; `--sandbox-read` can, not written.
    let secret = outside.path().join("secret");
    assert_refused(&server.run(&session, &format!("print(open({secret:?}).read())"), None).await);
    let shared = readable.path().join("shared.txt");
    let (seen, _) = server.ok(&session, &format!("print(open({shared:?}).read())"), None).await;
    assert_eq!(seen, "shared data\n");
    assert_refused(&server.run(&session, &format!("open({shared:?}, 'a').write('x')"), None).await);
    assert_eq!(std::fs::read_to_string(&shared).unwrap(), "shared data");

    // The server cannot be signalled, and lives on.
    let kill = format!("import os, signal\nos.kill({}, signal.SIGTERM)", server.pid());
    assert_refused(&server.run(&session, &kill, None).await);
    let (alive, _) = server.ok(&session, "print('still here')", None).await;
    assert_eq!(alive, "still here\n");

    // Ordinary work goes on: numpy and a matplotlib PNG, shell commands on a pty, installs.
    let plot = "import numpy as np, matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n\
                ax.plot(np.sin(np.linspace(0, 6, 50)))\ndisplay_figure(fig)";
    let plotted = server.run(&session, plot, None).await;
    assert_ne!(plotted.is_error, Some(true), "{:?}", texts(&plotted));
    assert!(images(&plotted)[0].starts_with(b"\x89PNG"));
    let frames = "import pandas as pd, plotly.express as px\ndf = pd.DataFrame({'a': [1, 2, 3]})\n\
                  fig = px.line(df, y='a')\nprint(df.shape, len(fig.data))";
    let (shapes, _) = server.ok(&session, frames, None).await;
    assert_eq!(shapes, "(3, 1) 1\n");
    let (echoed, _) = server.ok(&session, "!echo from-a-shell", None).await;
    assert!(echoed.contains("from-a-shell"), "{echoed}");
    let install = server.call("install_packages", json!({"session_id": session, "packages": ["six"]})).await;
    assert_ne!(install.is_error, Some(true), "{:?}", texts(&install));
    let (six, _) = server.ok(&session, "import six\nprint(six.__name__)", None).await;
    assert_eq!(six, "six\n");
    let pip = server
        .run(&session, "%pip install --quiet iniconfig\nimport iniconfig\nprint(iniconfig.__name__)", None)
        .await;
    assert_ne!(pip.is_error, Some(true), "{:?}", texts(&pip));
    assert!(texts(&pip).join("").contains("iniconfig\n"), "{:?}", texts(&pip));

    // In its own user namespace the kernel cannot read the server's environment.
    let environ = format!("open('/proc/{}/environ').read()", server.pid());
    assert_refused(&server.run(&session, &environ, None).await);
}

#[tokio::test]
async fn restarted_kernels_and_spares_are_confined_alike() {
    let (_guard, data) = data_dir();
    let outside = tempfile::tempdir().unwrap();
    let flags = ["--kernels-per-session", "1", "--spare-sessions", "1"];
    let Some(server) = start(&data, "files", &flags).await else { return };
    let spare = wait_for_spare(&data, None).await;
    let session = confined_session(&server, "files").await;
    assert_eq!(session, name(&spare), "create_repl did not hand out the spare");

    let escape = format!("open({:?}, 'w').write('x')", outside.path().join("escaped"));
    let (_, first) = server.ok(&session, "x = 1", None).await;
    server.ok(&session, "x = 2", Some(&first)).await;
    assert_refused(&server.run(&session, &escape, None).await);
    // Back to the first cell: the only kernel is replaced by a fresh one that replays it.
    let back = server.run(&session, &format!("print(x)\n{escape}"), Some(&first)).await;
    assert_eq!(texts(&back)[0], "1\n", "{:?}", texts(&back));
    assert_refused(&back);
    assert!(!outside.path().join("escaped").exists());
}

#[tokio::test]
async fn strict_has_no_network_but_answers() {
    let (_guard, data) = data_dir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(server) = start(&data, "strict", &[]).await else { return };
    let session = confined_session(&server, "strict").await;
    let probe = format!(
        "import socket\n\
         try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n    print('connected')\n\
         except OSError as error:\n    print('no tcp:', type(error).__name__)\n\
         try:\n    socket.getaddrinfo('pypi.org', 443)\n    print('resolved')\n\
         except OSError as error:\n    print('no dns:', type(error).__name__)"
    );
    let (seen, _) = server.ok(&session, &probe, None).await;
    assert!(seen.contains("no tcp:") && seen.contains("no dns:"), "{seen}");
    let (answer, _) = server.ok(&session, "print(6 * 7)", None).await;
    assert_eq!(answer, "42\n");
}

#[tokio::test]
async fn a_bogus_level_is_refused_at_start_up() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-pyrepl"))
        .args(["--sandbox", "bogus", "serve"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bogus") && stderr.contains("files"), "{stderr}");
}
