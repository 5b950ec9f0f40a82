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

/// The first ready spare of `data` other than `not`, waiting for one up to four minutes.
pub(super) async fn wait_for_spare(data: &Path, not: Option<&Path>) -> PathBuf {
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

/// The session id of a session directory.
pub(super) fn name(dir: &Path) -> String {
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
    let pid_file = std::fs::read_dir(doomed.join("kernel.pids"))
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

fn one_spare(command: &mut tokio::process::Command) {
    command.args(["--spare-sessions", "1"]);
}

#[tokio::test]
async fn a_create_repl_as_the_server_starts_gets_the_spare_being_built() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "six", one_spare).await;
    let sessions = data.join("sessions");
    let under_way = within(60, async {
        loop {
            if let Some(dir) = std::fs::read_dir(&sessions).into_iter().flatten().flatten().next() {
                return dir.path();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(ready_spares(&data).is_empty(), "the spare was ready before create_repl: nothing tested");
    let session = server.create_repl().await;
    assert_eq!(session, name(&under_way), "create_repl built a session beside the spare under way");
    let first = server.run(&session, LOOK, None).await;
    assert!(texts(&first)[0].ends_with(" True\n"), "the spare's base packages: {:?}", texts(&first));
}

#[tokio::test]
async fn a_spare_outlives_its_server_for_the_next_one_of_the_same_settings() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "six", one_spare).await;
    let spare = wait_for_spare(&data, None).await;
    server.stop().await;
    assert!(spare.join("spare").exists(), "the spare was removed when its server stopped");

    // The next server of the same settings starts its kernel and hands it out as it would its own.
    let server = Server::start_with(&data, "six", one_spare).await;
    let session = server.create_repl().await;
    assert_eq!(session, name(&spare), "the spare an earlier server left was not handed out");
    let first = server.run(&session, LOOK, None).await;
    assert_eq!(first.structured_content.clone().unwrap()["execution_count"], 1, "the warm-up left a count");
    assert!(texts(&first)[0].ends_with(" True\n"), "the spare's base packages: {:?}", texts(&first));
    let left = wait_for_spare(&data, Some(&spare)).await;
    server.stop().await;

    // A server of other settings could not hand it out as its own: it removes it.
    let server = Server::start_with(&data, "", one_spare).await;
    within(60, async {
        while left.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let session = server.create_repl().await;
    assert_ne!(session, name(&left));
    let (out, _) = server.ok(&session, "import sys\nprint('six' in sys.modules)", None).await;
    assert_eq!(out, "False\n");
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

/// Runs `code` under `parent` and returns (stdout, replayed cell ids, new cell id).
async fn step(
    server: &Server,
    session: &str,
    code: &str,
    parent: &str,
) -> (String, serde_json::Value, String) {
    let result = server.run(session, code, Some(parent)).await;
    let structured = result.structured_content.clone().unwrap();
    let text = texts(&result);
    (text[..text.len() - 1].join(""), structured["replayed_cell_ids"].clone(), text.last().unwrap().clone())
}

#[tokio::test]
async fn switching_between_recent_branches_replays_nothing_and_matches_a_replay() {
    // The same walk over the same tree, with a pool of kernels and with one kernel that replays.
    let mut seen = Vec::new();
    for kernels in ["2", "1"] {
        let (_guard, data) = data_dir();
        let server = Server::start_with(&data, "", |command| {
            command.args(["--kernels-per-session", kernels]);
        })
        .await;
        let session = server.create_repl().await;
        let (_, a) = server.ok(&session, "x = 1\nlog = ['a']", None).await;
        let (_, _, b) = step(&server, &session, "y = 2\nlog.append('b')", &a).await;
        let (_, _, c) = step(&server, &session, "y = 3\nlog.append('c')", &a).await;
        // Each step continues where its branch left off; a kernel that ran more cells after `b`
        // no longer holds the state after `b` itself, only after its own last cell.
        let mut walk = Vec::new();
        let (out, replayed_b, b1) = step(&server, &session, "print(x, y, log)", &b).await;
        walk.push(out);
        let (out, replayed_c, _) = step(&server, &session, "print(x, y, log)", &c).await;
        walk.push(out);
        let (out, replayed_b1, _) = step(&server, &session, "print(y * 10, log)", &b1).await;
        walk.push(out);
        if kernels == "2" {
            for replayed in [replayed_b, replayed_c, replayed_b1] {
                assert_eq!(replayed, json!([]), "a switch to a branch a kernel holds replayed {replayed}");
            }
        }
        seen.push(walk);
    }
    assert_eq!(seen[0], ["1 2 ['a', 'b']\n", "1 3 ['a', 'c']\n", "20 ['a', 'b']\n"]);
    assert_eq!(seen[0], seen[1], "the pool gave another state than a replay");
}

#[tokio::test]
async fn the_least_recently_used_kernel_is_evicted_and_the_memory_budget_holds() {
    let (_guard, data) = data_dir();
    // Kernels only: snapshots would serve the branches the evicted kernels held.
    let server = Server::start_with(&data, "", |command| {
        command.args(["--kernels-per-session", "2", "--snapshots-per-session", "0"]);
    })
    .await;
    let session = server.create_repl().await;
    let (_, a) = server.ok(&session, "x = 1", None).await;
    let (_, _, b) = step(&server, &session, "y = 'b'", &a).await;
    let (_, _, c) = step(&server, &session, "y = 'c'", &a).await;
    let (_, _, _d) = step(&server, &session, "y = 'd'", &a).await;
    // Two kernels: the one at `c` was used after the one at `b`, so `b`'s was taken for `d`.
    let (out, replayed, _) = step(&server, &session, "print(y)", &c).await;
    assert_eq!((out.as_str(), replayed), ("c\n", json!([])));
    let (out, replayed, _) = step(&server, &session, "print(y)", &b).await;
    assert_eq!((out.as_str(), replayed), ("b\n", json!([a, b])));

    // A budget below one kernel's memory keeps no parked kernel: every switch replays.
    let (_guard2, data2) = data_dir();
    let tight = Server::start_with(&data2, "", |command| {
        command.args([
            "--kernels-per-session",
            "3",
            "--kernel-pool-memory-mb",
            "16",
            "--snapshots-per-session",
            "0",
        ]);
    })
    .await;
    let session = tight.create_repl().await;
    let (_, a) = tight.ok(&session, "x = 1", None).await;
    let (_, _, b) = step(&tight, &session, "y = 'b'", &a).await;
    let (_, _, _c) = step(&tight, &session, "y = 'c'", &a).await;
    let (out, replayed, _) = step(&tight, &session, "print(y)", &b).await;
    assert_eq!((out.as_str(), replayed), ("b\n", json!([a, b])));
}
