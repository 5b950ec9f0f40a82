//! Faults, through the real server and real kernels: runaway code, cancellation, dead kernels,
//! floods of output, hostile input, isolation, and the server itself being killed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use mcp_pyrepl::graph::{CellStatus, store};
use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
use rmcp::service::PeerRequestOptions;
use serde_json::{Value, json};

use super::common::within;
use super::mcp_client::{Server, data_dir, images, texts};

/// A server with no base packages (the faults need plain Python) and extra flags.
async fn server(data: &Path, flags: &[&str]) -> Server {
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    Server::start_with(data, "", |command| {
        command.args(&flags);
    })
    .await
}

fn structured(result: &rmcp::model::CallToolResult) -> Value {
    result.structured_content.clone().expect("structured content")
}

async fn run_with(server: &Server, arguments: Value) -> rmcp::model::CallToolResult {
    server.call("run_code", arguments).await
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

#[tokio::test]
async fn a_cell_past_its_time_limit_is_interrupted_and_the_state_kept() {
    let (_guard, data) = data_dir();
    let server = server(&data, &[]).await;
    let session = server.create_repl().await;
    let code = "import time\nx = 41\nprint('started', flush=True)\ntime.sleep(120)";
    let result = run_with(&server, json!({"session_id": session, "code": code, "timeout_s": 1.5})).await;
    assert_eq!(result.is_error, Some(true));
    let text = texts(&result).join("\n");
    assert!(text.contains("started"), "output so far is kept: {text}");
    assert!(text.contains("KeyboardInterrupt"), "{text}");
    assert!(text.contains("time limit of 1.5s") && text.contains("kept its state"), "{text}");
    let status = structured(&result);
    assert_eq!(status["status"], "interrupted");
    assert_eq!(status["stopped"], json!({"reason": "timeout", "kernel_killed": false}));

    let cell = texts(&result).last().unwrap().clone();
    let next = server.run(&session, "print(x + 1)", Some(&cell)).await;
    assert_eq!(texts(&next)[0], "42\n");
    assert_eq!(structured(&next)["replayed_cell_ids"], json!([]), "the kernel kept its state");
}

#[tokio::test]
async fn code_that_survives_the_interrupt_gets_its_kernel_killed_and_state_rebuilt() {
    let (_guard, data) = data_dir();
    let server = server(&data, &["--interrupt-grace", "1"]).await;
    let session = server.create_repl().await;
    let (_, base) = server.ok(&session, "y = 'rebuilt'", None).await;
    let stubborn = "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass";
    let result = run_with(
        &server,
        json!({"session_id": session, "code": stubborn, "parent_cell_id": base, "timeout_s": 1}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    let status = structured(&result);
    assert_eq!(status["status"], "kernel_died");
    assert_eq!(status["stopped"], json!({"reason": "timeout", "kernel_killed": true}));
    let text = texts(&result).join("\n");
    assert!(text.contains("in-memory state is lost") && text.contains("rebuilt by replay"), "{text}");

    let next = server.run(&session, "print(y)", Some(&base)).await;
    assert_eq!(texts(&next)[0], "rebuilt\n");
    assert_eq!(structured(&next)["replayed_cell_ids"], json!([base]));
}

#[tokio::test]
async fn a_cancelled_request_interrupts_its_cell() {
    let (_guard, data) = data_dir();
    let server = server(&data, &[]).await;
    let session = server.create_repl().await;
    // The kernel starts in the background after create_repl: let it be up, so that the cancel
    // reaches a running cell.
    let (_, ready) = server.ok(&session, "pass", None).await;
    let params = CallToolRequestParams::new("run_code").with_arguments(
        json!({
            "session_id": session,
            "code": "import time\nmarker = 'set before the sleep'\ntime.sleep(300)",
            "parent_cell_id": ready,
        })
        .as_object()
        .unwrap()
        .clone(),
    );
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
    let handle =
        server.client.send_request_with_option(request, PeerRequestOptions::no_options()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    handle.cancel(Some("the user changed their mind".into())).await.unwrap();

    // Calls on one session are served in order: this one only runs once the cancelled cell
    // has stopped, which the interrupt makes happen at once rather than after 300 s.
    let (out, _) = within(60, server.ok(&session, "print('next')", None)).await;
    assert_eq!(out, "next\n");
    let graph = store::load(&data.join("sessions").join(&session).join("graph.json")).unwrap();
    let cancelled = graph.cells().find(|c| c.code.contains("marker"));
    assert_eq!(cancelled.expect("the cancelled cell is recorded").status, CellStatus::Interrupted);
}

#[tokio::test]
async fn a_kernel_that_dies_is_reported_with_its_cause_and_replaced_on_the_next_call() {
    let (_guard, data) = data_dir();
    // Replay, not a snapshot, brings the parent back here (`snapshots.rs` has the other way).
    let server = server(&data, &["--snapshots-per-session", "0"]).await;
    let session = server.create_repl().await;
    let (_, base) = server.ok(&session, "z = 7", None).await;

    for (code, cause) in [
        ("import os\nos._exit(3)", "exited with code 3"),
        ("import ctypes\nctypes.string_at(0)", "was killed by signal 11 (SIGSEGV)"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "was killed by signal 9 (SIGKILL)"),
    ] {
        let result = server.run(&session, code, Some(&base)).await;
        assert_eq!(result.is_error, Some(true));
        assert_eq!(structured(&result)["status"], "kernel_died", "{code}");
        let text = texts(&result).join("\n");
        assert!(text.contains(cause), "{code}: {text}");
        // The next call needs nothing from the user: a new kernel replays the parent.
        let next = server.run(&session, "print(z)", Some(&base)).await;
        assert_eq!(texts(&next)[0], "7\n", "{code}");
        assert_eq!(structured(&next)["replayed_cell_ids"], json!([base]), "{code}: {}", structured(&next));
    }
}

#[tokio::test]
async fn a_memory_limit_turns_a_huge_allocation_into_a_memory_error() {
    let (_guard, data) = data_dir();
    let server = server(&data, &["--kernel-memory-mb", "1024"]).await;
    let session = server.create_repl().await;
    let result = server.run(&session, "block = bytearray(4 * 2**30)", None).await;
    assert_eq!(result.is_error, Some(true));
    assert!(texts(&result)[0].contains("MemoryError"), "{:?}", texts(&result));
    let (out, _) = server.ok(&session, "print('still alive')", None).await;
    assert_eq!(out, "still alive\n");
}

#[tokio::test]
async fn a_flood_of_output_is_cut_saved_in_full_and_does_not_grow_the_server() {
    let (_guard, data) = data_dir();
    let server = server(&data, &["--max-output-bytes", "4096", "--max-images", "3"]).await;
    let session = server.create_repl().await;
    // About 200 MB of text.
    let flood = "import sys\nline = 'x' * 999 + '\\n'\nfor i in range(200_000):\n    sys.stdout.write(line)\nprint('the end')";
    let result = within(600, server.run(&session, flood, None)).await;
    assert_ne!(result.is_error, Some(true));
    let text = texts(&result);
    let returned: usize = text.iter().map(String::len).sum();
    assert!(returned < 8 * 1024, "{returned} bytes returned");
    assert!(text.last().is_some_and(|id| id.len() == 12));
    assert!(text.iter().any(|t| t.ends_with("the end\n")), "the tail is kept");
    let note = text.iter().find(|t| t.contains("omitted")).expect("a note says what was cut");
    let path = note.split('`').nth(1).expect("the note names the file");
    let full = std::fs::metadata(path).unwrap();
    assert!(full.len() > 190_000_000, "the full output is on disk: {} bytes", full.len());
    assert!(path.starts_with(data.join("sessions").join(&session).to_str().unwrap()));

    // The server held a few kilobytes of it at a time, not 200 MB.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kb < 100 * 1024, "server peak memory {peak_kb} kB");

    // Images are capped too.
    let many = "import base64\nfrom IPython.display import Image, display\n\
                png = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==')\n\
                for _ in range(5):\n    display(Image(data=png))";
    let result = server.run(&session, many, None).await;
    assert_eq!(images(&result).len(), 3);
    assert!(texts(&result).iter().any(|t| t.contains("2 image(s)")), "{:?}", texts(&result));
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let (_guard, data) = data_dir();
    let server = server(&data, &[]).await;
    let session = server.create_repl().await;
    let other = server.create_repl().await;
    let (_, mine) = server.ok(&session, "a = 1", None).await;

    let too_big = "x = 1\n".repeat(200_000);
    let cases = [
        (json!({"session_id": session, "code": too_big}), "over the limit"),
        (json!({"session_id": session, "code": "1", "timeout_s": -1}), "timeout_s must be a positive number"),
        (
            json!({"session_id": session, "code": "1", "timeout_s": 1e12}),
            "timeout_s must be a positive number",
        ),
        (json!({"session_id": other, "code": "1", "parent_cell_id": mine}), "no cell"),
        (json!({"session_id": "a".repeat(5000), "code": "1"}), "is not a session id"),
        (json!({"session_id": "/etc", "code": "1"}), "is not a session id"),
        (json!({"session_id": session, "code": "1", "parent_cell_id": "../../../etc/passwd"}), "cell id"),
        (json!({"session_id": session, "code": ["not", "a", "string"]}), "invalid type"),
    ];
    for (arguments, expected) in cases {
        let result = run_with(&server, arguments.clone()).await;
        assert_eq!(result.is_error, Some(true), "{arguments}");
        let text = texts(&result).join("\n");
        assert!(text.contains(expected), "{expected:?} not in {text:?}");
        assert!(text.len() < 2000, "the error echoes too much input: {} bytes", text.len());
    }
    for packages in [json!("six"), json!([]), json!(["-r requirements.txt"]), json!(["six", "../evil"])] {
        let result =
            server.call("install_packages", json!({"session_id": session, "packages": packages})).await;
        assert_eq!(result.is_error, Some(true), "{packages}");
    }
    // Nothing was recorded by the refused calls.
    let graph = store::load(&data.join("sessions").join(&session).join("graph.json")).unwrap();
    assert_eq!(graph.len(), 1);
    let (out, _) = server.ok(&session, "print(a)", Some(&mine)).await;
    assert_eq!(out, "1\n");
}

#[tokio::test]
async fn sessions_are_private_and_kernels_see_no_server_secrets() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |command| {
        command.env("MCP_PYREPL_SECRET_TOKEN", "hunter2");
    })
    .await;
    let session = server.create_repl().await;
    let (out, _) = server
        .ok(&session, "import os\nprint(sorted(k for k in os.environ if k.startswith('MCP_PYREPL')))", None)
        .await;
    assert_eq!(out, "[]\n");

    let dir = data.join("sessions").join(&session);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("kernel")), 0o700);
    let entries: Vec<_> = std::fs::read_dir(dir.join("kernel")).unwrap().flatten().collect();
    let connection = entries.iter().find(|e| e.file_name().to_string_lossy().ends_with(".json")).unwrap();
    assert_eq!(mode(&connection.path()), 0o600);
    let connection: Value = serde_json::from_slice(&std::fs::read(connection.path()).unwrap()).unwrap();
    assert_eq!(connection["transport"], "ipc");
    assert!(
        connection["ip"].as_str().unwrap().starts_with(dir.to_str().unwrap()),
        "sockets live in the session"
    );
}

#[tokio::test]
async fn a_server_killed_mid_cell_leaves_nothing_running_and_loses_no_reported_cell() {
    let (_guard, data) = data_dir();
    let server = server(&data, &[]).await;
    let session = server.create_repl().await;
    let (_, first) = server.ok(&session, "kept = 'yes'", None).await;
    let (child, _) = server
        .ok(&session, "import subprocess\np = subprocess.Popen(['sleep', '313'])\nprint(p.pid)", Some(&first))
        .await;
    let child: i32 = child.trim().parse().unwrap();

    // Kill the server while a cell runs.
    let running = tokio::spawn({
        let session = session.clone();
        let arguments = json!({"session_id": session, "code": "import time\ntime.sleep(300)"});
        let params =
            CallToolRequestParams::new("run_code").with_arguments(arguments.as_object().unwrap().clone());
        let client = rmcp::Peer::clone(&server.client);
        async move { client.call_tool(params).await }
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let kernel_dir = data.join("sessions").join(&session).join("kernel");
    server.kill();
    assert!(within(30, running).await.unwrap().is_err(), "the call cannot have an answer");

    // A new server: orphans are gone, stale files removed, every reported cell works.
    let server = self::server(&data, &[]).await;
    assert!(!alive(child), "the kernel's child survived the crash");
    assert!(
        processes_mentioning(kernel_dir.to_str().unwrap()).iter().all(|pid| !alive(*pid)),
        "a kernel of the dead server is still running"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&kernel_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        leftovers.iter().all(|name| name == "kernel.log" || name == "ipython"),
        "stale files: {leftovers:?}"
    );
    let (out, _) = server.ok(&session, "print(kept)", Some(&first)).await;
    assert_eq!(out, "yes\n");
}

#[tokio::test]
async fn a_server_killed_mid_install_comes_back_whole() {
    let (_guard, data) = data_dir();
    let server = server(&data, &[]).await;
    let session = server.create_repl().await;
    let (_, cell) = server.ok(&session, "v = 3", None).await;
    let install = tokio::spawn({
        let arguments = json!({"session_id": session, "packages": ["six==1.16.0", "attrs"]});
        let params = CallToolRequestParams::new("install_packages")
            .with_arguments(arguments.as_object().unwrap().clone());
        let client = rmcp::Peer::clone(&server.client);
        async move { client.call_tool(params).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill();
    let _ = install.await;

    let server = self::server(&data, &[]).await;
    let (out, _) = server.ok(&session, "print(v)", Some(&cell)).await;
    assert_eq!(out, "3\n");
    let result =
        server.call("install_packages", json!({"session_id": session, "packages": ["six==1.16.0"]})).await;
    assert_ne!(result.is_error, Some(true), "{:?}", texts(&result));
    let (out, _) = server.ok(&session, "import six\nprint(six.__version__)", None).await;
    assert_eq!(out, "1.16.0\n");
}
