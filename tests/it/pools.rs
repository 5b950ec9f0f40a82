//! Kernels kept ready and kernels let go: spare sessions for create_repl, idle kernels stopped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::common::within;
use super::mcp_client::{Server, data_dir, texts};

/// The spare session directories of a data directory that are ready to hand out.
fn ready_spares(data: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data.join("sessions")) else { return Vec::new() };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|dir| dir.join("spare").exists() && dir.join("graph.json").exists())
        .collect()
}

async fn wait_for_spare(data: &Path, not: Option<&Path>) -> PathBuf {
    within(240, async {
        loop {
            if let Some(spare) = ready_spares(data).into_iter().find(|dir| Some(dir.as_path()) != not) {
                return spare;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// What a first cell sees of its interpreter.
const LOOK: &str =
    "import sys\nprint(sorted(k for k in dir() if not k.startswith('_')), 'six' in sys.modules)";

#[tokio::test]
async fn a_spare_is_handed_out_once_refilled_and_leaks_nothing() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "six", |command| {
        command.args(["--spare-sessions", "1"]);
    })
    .await;
    let spare = wait_for_spare(&data, None).await;
    let session = server.create_repl().await;
    assert_eq!(session, name(&spare), "create_repl did not hand out the ready spare");
    assert!(!spare.join("spare").exists());

    let first = server.run(&session, LOOK, None).await;
    assert_eq!(first.structured_content.clone().unwrap()["execution_count"], 1, "the warm-up left a count");
    let seen = texts(&first)[0].clone();
    assert!(seen.ends_with(" True\n"), "base packages are imported in a spare: {seen}");

    // A session built the slow way sees the same names.
    let (_guard2, plain_data) = data_dir();
    let plain = Server::start_with(&plain_data, "six", |_| {}).await;
    let plain_session = plain.create_repl().await;
    let (plain_seen, _) = plain.ok(&plain_session, LOOK, None).await;
    assert_eq!(seen.replace(" True", ""), plain_seen.replace(" False", ""), "a spare leaked state");

    // Another spare is built to replace the one handed out.
    let next = wait_for_spare(&data, Some(&spare)).await;
    assert_ne!(name(&next), session);
    // Spares are no sessions yet: they are neither listed nor reachable by id.
    let listed = server.call("list_sessions", json!({})).await;
    assert_eq!(listed.structured_content.unwrap()["sessions"].as_array().unwrap().len(), 1);
    let reached = server.run(&name(&next), "1", None).await;
    assert_eq!(reached.is_error, Some(true));
}

#[tokio::test]
async fn concurrent_creates_never_share_a_spare_and_a_dead_spare_is_replaced() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |command| {
        command.args(["--spare-sessions", "1"]);
    })
    .await;
    let spare = wait_for_spare(&data, None).await;
    let (a, b) = tokio::join!(server.create_repl(), server.create_repl());
    assert_ne!(a, b);
    for session in [&a, &b] {
        let (out, _) = server.ok(session, &format!("print('{session}')"), None).await;
        assert_eq!(out, format!("{session}\n"));
    }
    assert!([&a, &b].contains(&&name(&spare)));

    // A spare whose kernel dies while it waits is not handed out.
    let doomed = wait_for_spare(&data, Some(&spare)).await;
    let pid_file = std::fs::read_dir(doomed.join("kernel"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".pid"))
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(pid_file.path()).unwrap()).unwrap();
    let pid = nix::unistd::Pid::from_raw(record["kernel"].as_i64().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = server.create_repl().await;
    assert_ne!(fresh, name(&doomed));
    let (out, _) = server.ok(&fresh, "print('works')", None).await;
    assert_eq!(out, "works\n");
    assert!(!doomed.exists(), "the dead spare's directory was kept");
}

#[tokio::test]
async fn an_idle_kernel_is_stopped_and_comes_back_by_replay() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |command| {
        command.args(["--kernel-idle-timeout", "1"]);
    })
    .await;
    let session = server.create_repl().await;
    let (_, cell) = server.ok(&session, "z = 5", None).await;
    within(60, async {
        loop {
            let listed = server.call("list_sessions", json!({})).await;
            if listed.structured_content.unwrap()["sessions"][0]["kernel_running"] == false {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let back = server.run(&session, "print(z)", Some(&cell)).await;
    assert_eq!(texts(&back)[0], "5\n");
    assert_eq!(back.structured_content.unwrap()["replayed_cell_ids"], json!([cell]));
}
