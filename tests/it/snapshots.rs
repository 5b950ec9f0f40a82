//! Snapshots: forked copies of a kernel that let a session go back to a recent state without
//! replaying its path, and fall back to replay, saying why, where a fork would not work.

use serde_json::{Value, json};

use super::mcp_client::{Server, data_dir, texts};

/// A first cell worth a snapshot: rebuilding its state takes well over the threshold.
const EXPENSIVE: &str = "import time\ntime.sleep(0.3)\nxs = [1, 2, 3]\nn = 0";

fn structured(result: &rmcp::model::CallToolResult) -> Value {
    result.structured_content.clone().expect("run_code has structured content")
}

/// (stdout, cell id, structured content) of a cell that must succeed.
async fn ok(server: &Server, session: &str, code: &str, parent: Option<&str>) -> (String, String, Value) {
    let result = server.run(session, code, parent).await;
    let all = texts(&result);
    assert_ne!(result.is_error, Some(true), "{code:?} failed: {}", all.join("\n"));
    (all[..all.len() - 1].join(""), all.last().unwrap().clone(), structured(&result))
}

fn served_by_snapshot(reply: &Value) -> bool {
    reply["snapshot"]["used"] == json!(true)
        && reply["replayed_cell_ids"] == json!([])
        && reply["kernel_restarted"] == json!(false)
}

#[tokio::test]
async fn a_retry_under_the_same_parent_gets_exactly_the_parents_state_from_a_snapshot() {
    let (_guard, data) = data_dir();
    // Room for the kernel of the failed attempt beside the two snapshots taken into service.
    let server = Server::start_with(&data, "", |command| {
        command.args(["--kernels-per-session", "3"]);
    })
    .await;
    let session = server.create_repl().await;
    let (_, first, _) = ok(&server, &session, EXPENSIVE, None).await;

    // The failing attempt changes the state before it fails.
    let failed = server
        .run(&session, "xs.append(4)\nn += 1\nimport os\nfailed_pid = os.getpid()\n1/0", Some(&first))
        .await;
    assert_eq!(failed.is_error, Some(true));
    let failed_id = texts(&failed).last().unwrap().clone();

    // The fix sees the parent's state, not the failed attempt's, and nothing was replayed.
    let (seen, _, reply) = ok(&server, &session, "print(xs, n, 'failed_pid' in dir())", Some(&first)).await;
    assert_eq!(seen, "[1, 2, 3] 0 False\n");
    assert!(served_by_snapshot(&reply), "the retry was not served by a snapshot: {reply}");

    // A second retry: the snapshot was copied again before it served, so it is still there.
    let (seen, _, reply) = ok(&server, &session, "xs.append(5)\nprint(xs)", Some(&first)).await;
    assert_eq!(seen, "[1, 2, 3, 5]\n");
    assert!(served_by_snapshot(&reply), "the second retry was not served by a snapshot: {reply}");

    // The kernel that ran the failed attempt still holds its own state.
    let (seen, _, reply) = ok(&server, &session, "print(xs, n)", Some(&failed_id)).await;
    assert_eq!(seen, "[1, 2, 3, 4] 1\n");
    assert_eq!(reply["replayed_cell_ids"], json!([]));
}

#[tokio::test]
async fn a_kernel_that_dies_mid_cell_leaves_its_parent_in_a_snapshot() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |_| {}).await;
    let session = server.create_repl().await;
    let (_, first, _) = ok(&server, &session, EXPENSIVE, None).await;
    let died = server.run(&session, "import os\nos._exit(3)", Some(&first)).await;
    assert_eq!(structured(&died)["status"], "kernel_died", "{:?}", texts(&died));

    let (seen, _, reply) = ok(&server, &session, "print(sum(xs))", Some(&first)).await;
    assert_eq!(seen, "6\n");
    assert!(served_by_snapshot(&reply), "the state after the parent was replayed: {reply}");
}

#[tokio::test]
async fn a_new_root_is_a_fork_of_the_fresh_kernel_not_a_kernel_start() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "six", |_| {}).await;
    let session = server.create_repl().await;
    let names = "sorted(k for k in dir() if not k.startswith('_'))";
    let first = format!("import os, sys\nprint(os.getpid(), 'six' in sys.modules, {names})\nmarker = 1");
    let (first_seen, _, _) = ok(&server, &session, &first, None).await;
    let (first_pid, first_names) = first_seen.split_once(' ').unwrap();
    let server_pid = server.pid().to_string();
    // Another root while the first kernel holds a branch of its own: the fresh copy (forked
    // from the first kernel before its first cell) serves, with the base packages imported
    // in it and nothing of the first cell.
    // It is a copy, adopted by the server once forked (so the server sees how it ends).
    let look = format!("import os, sys\nprint(os.getpid(), os.getppid(), 'six' in sys.modules, {names})");
    let (seen, _, reply) = ok(&server, &session, &look, None).await;
    assert_eq!(reply["kernel_restarted"], json!(false), "a kernel was started: {reply}");
    assert_eq!(reply["snapshot"]["used"], json!(true), "{reply}");
    let (copy_pid, seen) = seen.split_once(' ').unwrap();
    assert_ne!(copy_pid, first_pid);
    assert_eq!(seen, format!("{server_pid} {}", first_names.replacen("False", "True", 1)));
    assert_eq!(reply["execution_count"], json!(1), "the fresh copy's counter moved: {reply}");
}

/// How many kernels of the session have a pid record: the serving ones and every snapshot,
/// made (the server's record, in `kernel.pids`) or being made (the copy's, in `kernel`).
fn kernel_records(data: &std::path::Path, session: &str) -> usize {
    let session = data.join("sessions").join(session);
    let entries = ["kernel", "kernel.pids"]
        .into_iter()
        .flat_map(|dir| std::fs::read_dir(session.join(dir)).into_iter().flatten().flatten());
    entries.filter(|entry| entry.file_name().to_string_lossy().ends_with(".pid")).count()
}

#[tokio::test]
async fn cheap_cells_are_not_forked_one_by_one_and_going_back_among_them_replays_from_the_last_snapshot() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |command| {
        command.args(["--snapshots-per-session", "16"]);
    })
    .await;
    let session = server.create_repl().await;
    let (_, mut tip, _) = ok(&server, &session, EXPENSIVE, None).await;
    let mut chain = Vec::new();
    for _ in 0..10 {
        (_, tip, _) = ok(&server, &session, "n += 1", Some(&tip)).await;
        chain.push(tip.clone());
    }
    // The serving kernel, the fresh state's copy, the expensive cell's, and at most one more:
    // not one before each of the ten cheap cells.
    let records = kernel_records(&data, &session);
    assert!((3..=4).contains(&records), "{records} kernels for one expensive and ten cheap cells");

    // Back to the fourth cheap cell: from the expensive cell's copy, its cheap cells replayed.
    let (seen, _, reply) = ok(&server, &session, "print(n, xs)", Some(&chain[3])).await;
    assert_eq!(seen, "4 [1, 2, 3]\n");
    assert_eq!(reply["snapshot"]["used"], json!(true), "{reply}");
    assert_eq!(reply["kernel_restarted"], json!(false), "{reply}");
    assert_eq!(reply["replayed_cell_ids"], json!(chain[..4]), "{reply}");
}

#[tokio::test]
async fn a_cheap_state_is_copied_while_the_model_thinks_so_a_retry_replays_nothing() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |_| {}).await;
    let session = server.create_repl().await;
    let (_, first, _) = ok(&server, &session, "xs = [1]", None).await;
    let (_, second, _) = ok(&server, &session, "xs.append(2)", Some(&first)).await;
    // The model thinks: the server is idle long enough to copy the state `second` left.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let failed = server.run(&session, "xs.append(3)\n1/0", Some(&second)).await;
    assert_eq!(failed.is_error, Some(true));
    let (seen, _, reply) = ok(&server, &session, "print(xs)", Some(&second)).await;
    assert_eq!(seen, "[1, 2]\n");
    assert!(served_by_snapshot(&reply), "the retry was not served by a snapshot: {reply}");
}

#[tokio::test]
async fn threads_the_user_started_turn_snapshots_off_and_the_reply_says_why() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |_| {}).await;
    let session = server.create_repl().await;
    let threaded = "import threading, time\nthreading.Thread(target=time.sleep, args=(600,), name='worker', daemon=True).start()\ntime.sleep(0.3)\nn = 1";
    let (_, first, _) = ok(&server, &session, threaded, None).await;
    let (_, _, reply) = ok(&server, &session, "n += 1", Some(&first)).await;
    assert_eq!(reply["snapshot"]["available"], json!(false), "{reply}");
    let reason = reply["snapshot"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("threads the user started (worker)"), "{reply}");

    // Going back still gives the parent's state: by replay.
    let (seen, _, reply) = ok(&server, &session, "print(n)", Some(&first)).await;
    assert_eq!(seen, "1\n");
    assert_eq!(reply["replayed_cell_ids"], json!([first]), "{reply}");
}

#[tokio::test]
async fn snapshots_off_means_replay() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |command| {
        command.args(["--snapshots-per-session", "0"]);
    })
    .await;
    let session = server.create_repl().await;
    let (_, first, _) = ok(&server, &session, EXPENSIVE, None).await;
    ok(&server, &session, "n = 5", Some(&first)).await;
    ok(&server, &session, "n = 6", None).await;
    let (seen, _, reply) = ok(&server, &session, "print(n)", Some(&first)).await;
    assert_eq!(seen, "0\n");
    assert_eq!(reply["snapshot"]["used"], json!(false), "{reply}");
    assert_eq!(reply["replayed_cell_ids"], json!([first]), "{reply}");
}

#[tokio::test]
async fn a_snapshot_of_a_kernel_holding_a_browser_draws_plotly_figures_with_its_own() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "numpy,pandas,plotly,kaleido", |_| {}).await;
    let session = server.create_repl().await;
    // The first figure starts the kernel's browser (kaleido's, in a thread of the kernel).
    let figure = "import plotly.express as px\nfig = px.scatter(x=[1, 2, 3], y=[3, 1, 2])\n\
                  fig.update_layout(width=320, height=240)\nfig.show()";
    let drawn = server.run(&session, figure, None).await;
    assert_eq!(super::mcp_client::images(&drawn).len(), 1, "{:?}", texts(&drawn));
    let first = texts(&drawn).last().unwrap().clone();
    // Copied with that browser thread in it, then the kernel moves on.
    ok(&server, &session, "y = 1", Some(&first)).await;
    let again = server.run(&session, "fig.show()", Some(&first)).await;
    let reply = structured(&again);
    assert!(served_by_snapshot(&reply), "{reply}");
    assert_eq!(super::mcp_client::images(&again).len(), 1, "the copy drew no image: {:?}", texts(&again));
}

/// How deep the cell's code runs, and in which process: `(frames on the stack, pid)`.
const DEPTH: &str = "import os, traceback\nprint(len(traceback.extract_stack()), os.getpid())";

#[tokio::test]
async fn copies_of_copies_run_cells_as_shallow_as_the_first_kernel() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |_| {}).await;
    let session = server.create_repl().await;
    // Each new root is served by the copy of the fresh state, which is itself forked before it
    // serves: the fifth root runs in a copy four generations down.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (out, _, _) = ok(&server, &session, DEPTH, None).await;
        let (depth, pid) = out.trim().split_once(' ').expect("depth and pid");
        seen.push((depth.parse::<usize>().unwrap(), pid.to_owned()));
    }
    let pids: std::collections::BTreeSet<_> = seen.iter().map(|(_, pid)| pid).collect();
    assert_eq!(pids.len(), seen.len(), "every root ran in a new copy: {seen:?}");
    // A copy serves at the bottom of its own stack, not nested in the cell that forked it (it
    // was some 20 frames deeper a generation, until cells failed at the recursion limit).
    let copies = &seen[1..];
    assert!(copies.iter().all(|&(depth, _)| depth == copies[0].0), "stack depths grow: {seen:?}");
    assert!(copies[0].0 <= seen[0].0 + 5, "a copy runs deeper than its kernel: {seen:?}");
}

#[tokio::test]
async fn a_copy_keeps_signals_interrupts_and_its_main_thread() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |_| {}).await;
    let session = server.create_repl().await;
    ok(&server, &session, "x = 1", None).await;
    // The second root runs in the copy of the fresh state.
    let probe = "import signal, os, threading\ngot = []\n\
                 signal.signal(signal.SIGUSR1, lambda *_: got.append(1))\n\
                 os.kill(os.getpid(), signal.SIGUSR1)\n\
                 print(threading.current_thread() is threading.main_thread(), \
                 threading.current_thread().name, got)";
    let (seen, _, reply) = ok(&server, &session, probe, None).await;
    assert!(served_by_snapshot(&reply), "the second root was not served by a snapshot: {reply}");
    assert_eq!(seen, "True MainThread [1]\n");
    let running = server
        .call("run_code", json!({"session_id": session, "code": "import time\ntime.sleep(30)", "wait_s": 1}))
        .await;
    let cell = structured(&running)["cell_id"].as_str().unwrap().to_owned();
    server.call("interrupt_cell", json!({"session_id": session, "cell_id": cell})).await;
    let ended = server.call("wait_cell", json!({"session_id": session, "cell_id": cell})).await;
    assert!(texts(&ended).join("\n").contains("KeyboardInterrupt"), "{:?}", texts(&ended));
    assert_eq!(structured(&ended)["status"], "interrupted");
}
