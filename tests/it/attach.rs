//! A kernel somebody else started (`python -m ipykernel_launcher -f conn.json` by hand), driven
//! through its connection file only.

use std::path::Path;
use std::time::Duration;

use mcp_pyrepl::jupyter::connection::{ConnectionInfo, Transport};
use mcp_pyrepl::kernel::{Death, ExecutionStatus, Kernel, KernelError, Output};
use mcp_pyrepl::provider::{AttachedProvider, KernelProvider};

use super::common::{default_venv, stdout_of, within};

/// Starts a kernel the way a person would, outside our launch code.
async fn start_by_hand(connection_file: &Path) -> tokio::process::Child {
    tokio::process::Command::new(default_venv().await.python())
        .args(["-m", "ipykernel_launcher", "-f"])
        .arg(connection_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn attach_when_ready(connection_file: &Path) -> Kernel {
    // A kernel given a file that does not exist yet writes it once its ports are chosen.
    within(60, async {
        while !connection_file.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    within(60, Kernel::attach(connection_file)).await.expect("attach")
}

#[tokio::test]
async fn attach_over_tcp_runs_interrupts_and_never_kills() {
    let dir = tempfile::tempdir().unwrap();
    let connection_file = dir.path().join("kernel-by-hand.json");
    let mut process = start_by_hand(&connection_file).await;
    let kernel = attach_when_ready(&connection_file).await;
    assert_eq!(ConnectionInfo::read(&connection_file).unwrap().transport, Transport::Tcp);
    assert_eq!(kernel.pid(), None, "an attached kernel is not ours");

    assert_eq!(stdout_of(&kernel, "x = 5\nprint(x)").await, "5\n");

    // Interrupt through `interrupt_request` on control: we may not signal a process we do not own.
    let (execution, ()) = within(60, async {
        tokio::join!(kernel.execute("while True: pass"), async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            kernel.interrupt().await.unwrap();
        })
    })
    .await;
    let execution = execution.unwrap();
    assert!(
        execution
            .outputs
            .iter()
            .any(|o| matches!(o, Output::Error { ename, .. } if ename == "KeyboardInterrupt")),
        "{:?}",
        execution.outputs
    );

    // Killing is refused with a reason, its provider never restarts it, and the kernel keeps its
    // state.
    let error = kernel.kill().unwrap_err();
    assert!(matches!(error, KernelError::NotOwned { .. }), "{error}");
    assert!(!AttachedProvider::new(connection_file.clone()).can_restart());
    assert!(error.to_string().contains("kernel-by-hand.json"), "{error}");
    assert_eq!(stdout_of(&kernel, "print(x)").await, "5\n");

    // Shutting our side down only disconnects.
    within(30, kernel.shutdown()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(process.try_wait().unwrap().is_none(), "shutdown killed a kernel we do not own");

    // A second client finds the state the first one left.
    let again = within(60, Kernel::attach(&connection_file)).await.unwrap();
    assert_eq!(stdout_of(&again, "print(x)").await, "5\n");
    drop(again);
    assert!(process.try_wait().unwrap().is_none(), "dropping the client killed the kernel");
    process.kill().await.unwrap();
}

#[tokio::test]
async fn attach_over_ipc_and_notice_the_kernel_dying() {
    let dir = tempfile::tempdir().unwrap();
    let connection_file = dir.path().join("ipc-kernel.json");
    ConnectionInfo::ipc(&dir.path().join("sock")).unwrap().write(&connection_file).unwrap();
    let mut process = start_by_hand(&connection_file).await;
    let kernel = attach_when_ready(&connection_file).await;
    assert_eq!(stdout_of(&kernel, "print('over ipc')").await, "over ipc\n");

    // Its process is not ours to wait on: the heartbeat tells us it is gone.
    let (execution, ()) = within(60, async {
        tokio::join!(kernel.execute("import time\ntime.sleep(300)"), async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            process.kill().await.unwrap();
        })
    })
    .await;
    assert!(
        matches!(execution.unwrap().status, ExecutionStatus::Died(Death::HeartbeatLost { .. })),
        "a dead attached kernel was not noticed"
    );
    assert!(!kernel.is_alive());
}

#[tokio::test]
async fn attach_to_a_missing_or_bad_connection_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let error = Kernel::attach(&missing).await.err().unwrap();
    assert!(error.to_string().contains("nope.json"), "{error}");

    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{\"shell_port\": \"x\"}").unwrap();
    let error = Kernel::attach(&garbage).await.err().unwrap();
    assert!(error.to_string().contains("not a valid Jupyter connection file"), "{error}");

    // Nothing listening: the attach gives up with an error instead of waiting forever.
    let silent = dir.path().join("silent.json");
    ConnectionInfo::ipc(&dir.path().join("nothing")).unwrap().write(&silent).unwrap();
    let error = within(60, Kernel::attach(&silent)).await.err().unwrap();
    assert!(error.to_string().contains("nothing-"), "{error}");
}

#[tokio::test]
async fn attach_kernel_makes_a_session_that_goes_forward_and_never_stops_the_kernel() {
    use super::mcp_client::{Server, data_dir, texts};
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let connection_file = dir.path().join("lab-kernel.json");
    let mut process = start_by_hand(&connection_file).await;
    within(60, async {
        while !connection_file.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |_| {}).await;
    let attached = server.call("attach_kernel", json!({"connection_file": connection_file})).await;
    assert_ne!(attached.is_error, Some(true), "{:?}", texts(&attached));
    let structured = attached.structured_content.unwrap();
    assert_eq!(structured["sandboxed"], false, "attached kernels are not ours to confine");
    let session = structured["session_id"].as_str().unwrap().to_owned();

    let first = server.run(&session, "x = 1", None).await;
    assert_ne!(first.is_error, Some(true), "{:?}", texts(&first));
    let a = texts(&first).last().unwrap().clone();
    // No snapshots of a kernel that is not ours, and the reply says so.
    let snapshot = first.structured_content.unwrap()["snapshot"].clone();
    assert_eq!(snapshot["available"], false, "{snapshot}");
    assert!(snapshot["reason"].as_str().unwrap_or_default().contains("cannot be forked"), "{snapshot}");
    let (out, b) = server.ok(&session, "x += 1\nprint(x)", Some(&a)).await;
    assert_eq!(out, "2\n");
    let (out, _) = server.ok(&session, "print(x * 10)", Some(&b)).await;
    assert_eq!(out, "20\n");

    // Branching back would need a restart: refused, with the reason.
    let branch = server.run(&session, "print(x)", Some(&a)).await;
    assert_eq!(branch.is_error, Some(true));
    let text = texts(&branch).join("\n");
    assert!(text.contains("cannot be restarted") && text.contains("lab-kernel.json"), "{text}");
    assert!(!text.contains("   "), "a run of spaces in the refusal: {text}");

    let install = server.call("install_packages", json!({"session_id": session, "packages": ["six"]})).await;
    assert!(texts(&install)[0].contains("%pip install"), "{:?}", texts(&install));

    // reset_repl forgets the cells but keeps the kernel, and its state.
    let reset = server.call("reset_repl", json!({"session_id": session})).await;
    assert_ne!(reset.is_error, Some(true), "{:?}", texts(&reset));
    let (out, _) = server.ok(&session, "print(x)", None).await;
    assert_eq!(out, "2\n");

    server.call("destroy_repl", json!({"session_id": session})).await;
    drop(server);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(process.try_wait().unwrap().is_none(), "the attached kernel was stopped");
    process.kill().await.unwrap();
}
