//! Long cells and impatient clients: `run_code` with `wait_s`, then `wait_cell`.

use serde_json::json;

use super::mcp_client::{Server, data_dir, texts};

#[tokio::test]
async fn a_long_cell_answers_early_and_wait_cell_brings_the_rest() {
    let (_guard, data) = data_dir();
    let server = Server::start_with(&data, "", |_| {}).await;
    let session = server.create_repl().await;
    let (_, a) = server.ok(&session, "x = 1", None).await;

    // Inside the session: a confined kernel sees nothing of the machine outside its own files.
    let flag = data.join("sessions").join(&session).join("work").join("go");
    let long = format!(
        "import os, time\nprint('step 1', flush=True)\nwhile not os.path.exists({:?}): time.sleep(0.05)\nprint('step 2')\nx + 1",
        flag.to_str().unwrap()
    );
    let early = server
        .call("run_code", json!({"session_id": session, "code": long, "parent_cell_id": a, "wait_s": 1.0}))
        .await;
    assert_ne!(early.is_error, Some(true), "{:?}", texts(&early));
    assert_eq!(early.structured_content.clone().unwrap()["status"], "running");
    let text = texts(&early);
    let cell = text.last().unwrap().clone();
    assert!(text[0].contains("step 1"), "the output so far: {text:?}");
    assert!(text.iter().any(|t| t.contains("Still running")), "{text:?}");

    // A second call on the session queues behind the running cell.
    let queued = tokio::spawn({
        let session = session.clone();
        let server_peer = rmcp::Peer::clone(&server.client);
        async move {
            let arguments = json!({"session_id": session, "code": "print('after')"});
            let params = rmcp::model::CallToolRequestParams::new("run_code")
                .with_arguments(arguments.as_object().unwrap().clone());
            server_peer.call_tool(params).await.unwrap()
        }
    });

    let still =
        server.call("wait_cell", json!({"session_id": session, "cell_id": cell, "wait_s": 0.3})).await;
    assert_eq!(still.structured_content.unwrap()["status"], "running");
    assert!(!queued.is_finished(), "a call ran while the cell was still running");

    std::fs::write(&flag, "").unwrap();
    let done = server.call("wait_cell", json!({"session_id": session, "cell_id": cell, "wait_s": 60})).await;
    let status = done.structured_content.clone().unwrap();
    assert_eq!(status["status"], "ok", "{:?}", texts(&done));
    assert_eq!(status["cell_id"], json!(cell));
    assert_eq!(texts(&done)[..2], ["step 1\nstep 2\n".to_owned(), "2".to_owned()]);
    assert_eq!(texts(&queued.await.unwrap())[0], "after\n");

    // Once ended, wait_cell answers from the record, and the cell is a parent like any other.
    let again = server.call("wait_cell", json!({"session_id": session, "cell_id": cell})).await;
    assert_eq!(texts(&again), ["step 1\nstep 2\n", "2", cell.as_str()]);
    let (out, _) = server.ok(&session, "print(x)", Some(&cell)).await;
    assert_eq!(out, "1\n");

    let unknown = server.call("wait_cell", json!({"session_id": session, "cell_id": "0123456789ab"})).await;
    assert_eq!(unknown.is_error, Some(true));
    let negative =
        server.call("wait_cell", json!({"session_id": session, "cell_id": cell, "wait_s": -1})).await;
    assert!(texts(&negative)[0].contains("wait_s must be"), "{:?}", texts(&negative));
}
