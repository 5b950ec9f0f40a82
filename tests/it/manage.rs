//! Managing sessions while their cells run, through the real server: reads that never wait for a
//! cell, interrupt_cell, destroy_repl at once, and what the server keeps on disk about a session
//! (its record, private directories, listings of many sessions without loading them).
//!
//! A running cell here waits on a flag file the test writes only after the call under test has
//! answered: a call that waited for the cell would never answer, and `within` fails the test.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};

use super::common::{group_alive, within};
use super::mcp_client::{Server, data_dir, texts};

/// Code that prints, then blocks until `flag` exists.
fn blocked_on(flag: &Path) -> String {
    format!(
        "import os, time\nprint('started', flush=True)\nwhile not os.path.exists({:?}): time.sleep(0.02)\nprint('released')",
        flag.to_str().unwrap()
    )
}

fn structured(result: &rmcp::model::CallToolResult) -> Value {
    result.structured_content.clone().unwrap_or_default()
}

/// Waits until `done` holds, failing the test after `seconds`.
async fn eventually(seconds: u64, done: impl Fn() -> bool) {
    within(seconds, async {
        while !done() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Waits until `path` exists (a running cell has got that far).
async fn appears(path: &Path) {
    eventually(60, || path.exists()).await;
}

#[tokio::test]
async fn reads_answer_while_cells_run_in_that_session_and_others() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |_| {}).await;
    let busy = server.create_repl().await;
    let other = server.create_repl().await;
    let (_, first) = server.ok(&busy, "x = 41", None).await;
    let (_, other_cell) = server.ok(&other, "y = 1", None).await;

    // Both inside its session: a confined kernel sees nothing outside its own files.
    let flag = data.join("sessions").join(&busy).join("work").join("release");
    let started = data.join("sessions").join(&busy).join("work").join("started");
    let code = format!("open({:?}, 'w').close()\n{}", started.to_str().unwrap(), blocked_on(&flag));
    let running =
        server.spawn_call("run_code", json!({"session_id": busy, "code": code, "parent_cell_id": first}));
    appears(&started).await;

    for session in [&busy, &other] {
        let listed = within(10, server.call("list_sessions", json!({}))).await;
        let sessions = structured(&listed)["sessions"].as_array().unwrap().clone();
        assert_eq!(sessions.len(), 2, "{sessions:?}");
        let cells = within(10, server.call("list_cells", json!({"session_id": session}))).await;
        assert_eq!(structured(&cells)["cells"].as_array().unwrap().len(), 1, "{:?}", texts(&cells));
    }
    let cell = within(10, server.call("get_cell", json!({"session_id": busy, "cell_id": first}))).await;
    assert_eq!(texts(&cell)[0], "x = 41");
    let exported =
        within(30, server.call("export_notebook", json!({"session_id": busy, "cell_id": first}))).await;
    assert_ne!(exported.is_error, Some(true), "{:?}", texts(&exported));
    let other_cell = server.call("get_cell", json!({"session_id": other, "cell_id": other_cell})).await;
    assert_eq!(texts(&other_cell)[0], "y = 1");
    assert!(!running.is_finished(), "the cell ended before the reads: nothing was shown");

    std::fs::write(&flag, "").unwrap();
    let done = running.await.unwrap();
    assert_eq!(texts(&done)[0], "started\nreleased\n");
    let cells = server.call("list_cells", json!({"session_id": busy})).await;
    assert_eq!(structured(&cells)["cells"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn interrupt_cell_stops_a_long_cell_as_a_time_limit_would() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |command| {
        command.args(["--interrupt-grace", "1"]);
    })
    .await;
    let session = server.create_repl().await;
    let (_, base) = server.ok(&session, "x = 1", None).await;

    // A cell that takes the interrupt: it is recorded as interrupted, the kernel keeps its state.
    let working = data.join("sessions").join(&session).join("work").join("working");
    let long = format!(
        "import time\nx = 2\nprint('working', flush=True)\nopen({:?}, 'w').close()\nwhile True: time.sleep(0.02)",
        working.to_str().unwrap()
    );
    let early = server
        .call("run_code", json!({"session_id": session, "code": long, "parent_cell_id": base, "wait_s": 0.2}))
        .await;
    assert_eq!(structured(&early)["status"], "running", "{:?}", texts(&early));
    let cell = texts(&early).last().unwrap().clone();
    appears(&working).await;
    let stopped =
        within(60, server.call("interrupt_cell", json!({"session_id": session, "cell_id": cell}))).await;
    let status = structured(&stopped);
    assert_eq!(status["status"], "interrupted", "{:?}", texts(&stopped));
    assert_eq!(status["stopped"], json!({"reason": "interrupt_cell", "kernel_killed": false}));
    let text = texts(&stopped).join("\n");
    assert!(text.contains("working") && text.contains("KeyboardInterrupt"), "{text}");
    assert_eq!(texts(&stopped).last().unwrap(), &cell);
    let (out, _) = server.ok(&session, "print(x)", Some(&cell)).await;
    assert_eq!(out, "2\n", "the state before the interrupt is kept");

    // Asked again, it answers from the record and says the cell had ended.
    let again = server.call("interrupt_cell", json!({"session_id": session, "cell_id": cell})).await;
    assert_eq!(structured(&again)["already_ended"], true);
    assert!(texts(&again).iter().any(|t| t.contains("had already ended")), "{:?}", texts(&again));
    assert_eq!(texts(&again).last().unwrap(), &cell);

    // A cell that ignores the interrupt loses its kernel after the grace; replay rebuilds it.
    let started = data.join("sessions").join(&session).join("work").join("stubborn-started");
    let stubborn = format!(
        "import time\nopen({:?}, 'w').close()\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass",
        started.to_str().unwrap()
    );
    let early = server
        .call(
            "run_code",
            json!({"session_id": session, "code": stubborn, "parent_cell_id": base, "wait_s": 0}),
        )
        .await;
    let cell = texts(&early).last().unwrap().clone();
    // Interrupted while its path is still replayed, the cell would never run: wait for its code.
    appears(&started).await;
    let stopped =
        within(60, server.call("interrupt_cell", json!({"session_id": session, "cell_id": cell}))).await;
    assert_eq!(structured(&stopped)["status"], "kernel_died", "{:?}", texts(&stopped));
    assert_eq!(structured(&stopped)["stopped"], json!({"reason": "interrupt_cell", "kernel_killed": true}));
    let (out, _) = server.ok(&session, "print(x)", Some(&base)).await;
    assert_eq!(out, "1\n");

    let unknown =
        server.call("interrupt_cell", json!({"session_id": session, "cell_id": "0123456789ab"})).await;
    assert_eq!(unknown.is_error, Some(true));
    assert!(texts(&unknown)[0].contains("0123456789ab"), "{:?}", texts(&unknown));
}

/// The pids of the kernels whose files are in `session_dir` (their records are the server's,
/// in `kernel.pids`).
fn kernel_pids(session_dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(session_dir.join("kernel.pids")) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
        .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
        .filter_map(|record| record["kernel"].as_u64().map(|pid| pid as u32))
        .collect()
}

#[tokio::test]
async fn destroy_repl_answers_at_once_even_while_a_cell_runs() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |_| {}).await;
    let session = server.create_repl().await;
    let (_, first) = server.ok(&session, "x = 1", None).await;
    let dir = data.join("sessions").join(&session);
    let flag = data.join("never-written");
    let started = dir.join("work").join("started");
    let code = format!("open({:?}, 'w').close()\n{}", started.to_str().unwrap(), blocked_on(&flag));
    let running =
        server.spawn_call("run_code", json!({"session_id": session, "code": code, "parent_cell_id": first}));
    appears(&started).await;
    let pids = kernel_pids(&dir);
    assert!(!pids.is_empty());

    let destroyed = within(10, server.call("destroy_repl", json!({"session_id": session}))).await;
    assert_ne!(destroyed.is_error, Some(true), "{:?}", texts(&destroyed));
    // Gone for every caller at once, the running cell included.
    let listed = server.call("list_sessions", json!({})).await;
    assert_eq!(structured(&listed)["sessions"], json!([]));
    let after = server.run(&session, "print(1)", None).await;
    assert!(texts(&after)[0].contains("no session"), "{:?}", texts(&after));
    let stopped = within(30, running).await.unwrap();
    assert_eq!(stopped.is_error, Some(true));
    assert!(texts(&stopped)[0].contains("destroyed"), "{:?}", texts(&stopped));
    // The kernel and the directory follow.
    eventually(30, || {
        pids.iter().all(|&pid| !group_alive(pid))
            && std::fs::read_dir(data.join("sessions")).unwrap().count() == 0
    })
    .await;
}

#[tokio::test]
async fn what_a_crash_leaves_of_a_destroy_is_no_session_and_is_cleaned_up() {
    let (_guard, data) = data_dir();
    // What a server killed half-way through removing a destroyed session leaves behind.
    let leftover = data.join("sessions").join(".destroyed-0123456789abcdef-1");
    std::fs::create_dir_all(leftover.join("kernel")).unwrap();
    std::fs::write(leftover.join("graph.json"), "{\"version\":2}\n").unwrap();
    let server = Server::start_with(&data, "", |_| {}).await;
    let listed = server.call("list_sessions", json!({})).await;
    assert_eq!(structured(&listed)["sessions"], json!([]));
    eventually(30, || !leftover.exists()).await;
}

#[tokio::test]
async fn a_thousand_sessions_on_disk_are_listed_without_loading_their_graphs() {
    let (_guard, data) = data_dir();
    for n in 0..1000u32 {
        let dir = data.join("sessions").join(format!("{n:016x}"));
        std::fs::create_dir_all(&dir).unwrap();
        // Lines that are no cells: loading the graph would refuse them, counting does not.
        let lines = "x\n".repeat((n % 3) as usize);
        std::fs::write(dir.join("graph.json"), format!("{{\"version\":2}}\n{lines}")).unwrap();
    }
    let server = Server::start_with(&data, "", |_| {}).await;
    let listed = within(30, server.call("list_sessions", json!({}))).await;
    let sessions = structured(&listed)["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 1000);
    assert_eq!(sessions[5], json!({"id": format!("{:016x}", 5), "cells": 2, "kernel_running": false}));
}

#[tokio::test]
async fn session_directories_are_made_private_and_a_damaged_record_is_named() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |_| {}).await;
    let session = server.create_repl().await;
    let (_, cell) = server.ok(&session, "x = 1", None).await;
    server.kill();

    let sessions = data.join("sessions");
    let dir = sessions.join(&session);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    for path in [&sessions, &dir] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let server = Server::start_with(&data, "", |_| {}).await;
    let (out, _) = server.ok(&session, "print(x)", Some(&cell)).await;
    assert_eq!(out, "1\n");
    assert_eq!(mode(&sessions), 0o700);
    assert_eq!(mode(&dir), 0o700);
    server.kill();

    std::fs::write(dir.join("session.json"), "{ not json").unwrap();
    let server = Server::start_with(&data, "", |_| {}).await;
    let damaged = server.run(&session, "print(x)", Some(&cell)).await;
    assert_eq!(damaged.is_error, Some(true));
    let text = texts(&damaged)[0].clone();
    assert!(text.contains("session.json") && text.contains("damaged"), "{text}");
}
