//! The MCP server end to end: the built binary as a child process, driven over stdio by rmcp's
//! client, exactly as an MCP client application would.

use rmcp::model::{CallToolRequestParams, NumberOrString, ProgressToken, RequestMetaObject};
use serde_json::json;

use super::common::within;
use super::mcp_client::{Server, data_dir, images, texts};

#[tokio::test]
async fn the_branching_example_sees_exactly_each_parents_state_across_a_server_restart() {
    let (_guard, data) = data_dir();
    let server = Server::start(&data).await;
    let session = server.create_repl().await;

    let (_, imports) = server.ok(&session, "import numpy as np\nimport matplotlib.pyplot as plt", None).await;
    let (_, wave) = server.ok(&session, "x = np.linspace(0, 10, 100)\ny = np.sin(x)", Some(&imports)).await;
    // The model reads the reply before it branches: meanwhile the server copies that state.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // Branch A: statistics printed.
    let (stats, stats_cell) = server
        .ok(
            &session,
            "mean = np.mean(y)\nstd = np.std(y)\nprint(f'Mean: {mean:.4f}, Std Dev: {std:.4f}')",
            Some(&wave),
        )
        .await;
    assert_eq!(stats, "Mean: 0.1792, Std Dev: 0.6647\n");

    // Branch B, from the same parent: a scatter plot, and none of branch A's names.
    let scatter = server
        .run(
            &session,
            "fig, ax = plt.subplots()\nax.scatter(x, y)\nax.set_title('Sine Wave Scatter')\n\
             print('mean' in dir())\ndisplay_figure(fig)",
            Some(&wave),
        )
        .await;
    assert_ne!(scatter.is_error, Some(true), "{:?}", texts(&scatter));
    assert_eq!(texts(&scatter)[0], "False\n", "branch B saw branch A's state");
    let pngs = images(&scatter);
    assert_eq!(pngs.len(), 1);
    assert!(pngs[0].starts_with(b"\x89PNG"));
    let structured = scatter.structured_content.clone().unwrap();
    assert_eq!(structured["parent_cell_id"], json!(wave));
    assert_eq!(structured["status"], "ok");
    assert!(structured["execution_count"].as_u64().is_some());
    // The kernel was at branch A: the copy of the wave's state serves branch B, so nothing is
    // replayed and no kernel started.
    assert_eq!(structured["replayed_cell_ids"], json!([]), "{structured}");
    assert_eq!(structured["kernel_restarted"], json!(false));
    assert_eq!(structured["snapshot"]["used"], json!(true));

    // Back on branch A: its state is rebuilt, and continuing a head replays nothing.
    let (again, on_a) = server.ok(&session, "print(round(mean, 4))", Some(&stats_cell)).await;
    assert_eq!(again, "0.1792\n");
    let continued = server.run(&session, "print(std > 0)", Some(&on_a)).await;
    assert_eq!(continued.structured_content.unwrap()["replayed_cell_ids"], json!([]));

    // The server dies; a new one finds the session and every cell id it reported.
    server.kill();
    let server = Server::start(&data).await;
    let (after, _) = server.ok(&session, "print(len(x), 'mean' in dir())", Some(&wave)).await;
    assert_eq!(after, "100 False\n");
    let (after, _) = server.ok(&session, "print(round(std, 4))", Some(&stats_cell)).await;
    assert_eq!(after, "0.6647\n");
}

#[tokio::test]
async fn errors_are_readable_recorded_and_can_be_parents() {
    let (_guard, data) = data_dir();
    let server = Server::start(&data).await;
    let session = server.create_repl().await;
    let failed = server.run(&session, "a = 1\nraise ValueError('no good')", None).await;
    assert_eq!(failed.is_error, Some(true));
    let text = texts(&failed);
    assert!(text[0].contains("ValueError: no good"), "{text:?}");
    assert!(!text[0].contains('\x1b'), "ANSI codes left: {text:?}");
    assert_eq!(failed.structured_content.as_ref().unwrap()["status"], "error");
    let failed_id = text.last().unwrap().clone();
    assert_eq!(failed.structured_content.unwrap()["cell_id"], json!(failed_id));

    // The failed cell's partial state is a parent like any other.
    let (out, _) = server.ok(&session, "print(a)", Some(&failed_id)).await;
    assert_eq!(out, "1\n");

    // stderr is labelled; results come back as text.
    let (out, _) = server.ok(&session, "import sys\nprint('warn', file=sys.stderr)\n6 * 7", None).await;
    assert_eq!(out, "[stderr]\nwarn\n42");
}

#[tokio::test]
async fn every_figure_form_gives_one_image() {
    let (_guard, data) = data_dir();
    let server = Server::start(&data).await;
    let session = server.create_repl().await;
    let (_, setup) = server.ok(&session, "import matplotlib.pyplot as plt", None).await;
    for code in [
        "fig, ax = plt.subplots()\nax.plot([1, 2, 3])\ndisplay_figure(fig)",
        "plt.plot([3, 2, 1])\nplt.show()",
        "fig, ax = plt.subplots()\nax.plot([1, 3, 2])\nfig",
    ] {
        let result = server.run(&session, code, Some(&setup)).await;
        assert_eq!(images(&result).len(), 1, "{code}: {:?}", texts(&result));
        // Only the cell id is left as text: no `<Figure ...>` noise.
        assert_eq!(texts(&result).len(), 1, "{code}: {:?}", texts(&result));
    }
}

#[tokio::test]
async fn bad_ids_and_inputs_get_clear_errors_and_the_server_stays_up() {
    let (_guard, data) = data_dir();
    let server = Server::start(&data).await;

    for (session, expected) in [
        ("0123456789abcdef", "no session `0123456789abcdef`"),
        ("../../etc", "is not a session id"),
        ("", "is not a session id"),
    ] {
        let result = server.run(session, "1", None).await;
        assert_eq!(result.is_error, Some(true));
        assert!(texts(&result)[0].contains(expected), "{session:?}: {:?}", texts(&result));
    }
    let session = server.create_repl().await;
    let result = server.run(&session, "1", Some("aaaaaaaaaaaa")).await;
    assert_eq!(result.is_error, Some(true));
    assert!(texts(&result)[0].contains("aaaaaaaaaaaa"), "{:?}", texts(&result));
    let result = server.run(&session, "1", Some("../graph.json")).await;
    assert_eq!(result.is_error, Some(true));
    let result = server.run(&session, "   ", None).await;
    assert!(texts(&result)[0].contains("empty"), "{:?}", texts(&result));

    // Wrong JSON types are refused before any tool code runs, with what was wrong.
    let result = server.call("run_code", json!({ "session_id": session, "code": 5 })).await;
    assert_eq!(result.is_error, Some(true));
    assert!(
        texts(&result)[0].contains("invalid type: integer `5`, expected a string"),
        "{:?}",
        texts(&result)
    );

    // And the server still works.
    let (out, _) = server.ok(&session, "print('alive')", None).await;
    assert_eq!(out, "alive\n");
}

#[tokio::test]
async fn packages_install_into_the_running_kernel_and_hostile_specs_are_refused() {
    let (_guard, data) = data_dir();
    let server = Server::start(&data).await;
    let session = server.create_repl().await;
    let (_, before) = server.ok(&session, "import sys", None).await;

    for hostile in [
        "--index-url=https://evil.example/simple",
        "-e .",
        "file:///etc/passwd",
        "pkg; rm -rf ~",
        "git+https://github.com/x/y",
    ] {
        let result = server
            .call("install_packages", json!({ "session_id": session, "packages": ["six", hostile] }))
            .await;
        assert_eq!(result.is_error, Some(true), "{hostile} accepted");
        assert!(texts(&result)[0].contains("refused package"), "{hostile}: {:?}", texts(&result));
    }
    let check = server.run(&session, "import six", Some(&before)).await;
    assert_eq!(check.is_error, Some(true), "six was installed although the call was refused");

    let result =
        server.call("install_packages", json!({ "session_id": session, "packages": ["six==1.16.0"] })).await;
    assert_ne!(result.is_error, Some(true), "{:?}", texts(&result));
    assert_eq!(result.structured_content.unwrap()["installed"], json!(["six==1.16.0"]));
    let (out, _) = server.ok(&session, "import six\nprint(six.__version__)", Some(&before)).await;
    assert_eq!(out, "1.16.0\n");
}

#[tokio::test]
async fn reset_forgets_the_cells_and_starts_fresh() {
    let (_guard, data) = data_dir();
    let server = Server::start(&data).await;
    let session = server.create_repl().await;
    let (_, cell) = server.ok(&session, "kept = 1", None).await;
    let result = server.call("reset_repl", json!({ "session_id": session })).await;
    assert_ne!(result.is_error, Some(true), "{:?}", texts(&result));
    let result = server.run(&session, "print(kept)", Some(&cell)).await;
    assert_eq!(result.is_error, Some(true), "an old cell survived the reset");
    let result = server.run(&session, "kept", None).await;
    assert!(texts(&result)[0].contains("NameError"), "{:?}", texts(&result));
}

#[tokio::test]
async fn create_repl_reports_progress_when_asked() {
    let (_guard, data) = data_dir();
    let server = Server::start(&data).await;
    let mut meta = RequestMetaObject::new();
    meta.set_progress_token(ProgressToken(NumberOrString::Number(7)));
    let mut params = CallToolRequestParams::new("create_repl").with_arguments(serde_json::Map::new());
    params.meta = Some(meta);
    let result = within(300, server.client.call_tool(params)).await.unwrap();
    assert_ne!(result.is_error, Some(true), "{:?}", texts(&result));
    let progress = server.recorder.progress.lock().unwrap().clone();
    assert!(progress.len() >= 3, "{progress:?}");
    // rmcp's client puts its own token on the request; every notification must carry that one.
    assert!(progress.iter().all(|p| p.progress_token == progress[0].progress_token), "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0].progress <= w[1].progress), "{progress:?}");
    assert!(progress.iter().any(|p| p.message.as_deref().unwrap_or("").contains("numpy")), "{progress:?}");
}

#[tokio::test]
async fn sessions_run_in_parallel_and_calls_on_one_session_in_order() {
    let (_guard, data) = data_dir();
    let server = Server::start(&data).await;
    let (a, b) = tokio::join!(server.create_repl(), server.create_repl());
    // Inside A's session: a confined kernel sees nothing of the machine outside its own files.
    let flag = data.join("sessions").join(&a).join("work").join("flag");

    // A waits for a file the test writes only once B's call has answered: if the two sessions
    // were served one after the other, B would never answer and A never finish.
    let wait = format!(
        "import os, time\nwhile not os.path.exists({:?}): time.sleep(0.02)\nprint('released')",
        flag.to_str().unwrap()
    );
    let (waited, created) = within(120, async {
        tokio::join!(server.ok(&a, &wait, None), async {
            let created = server.ok(&b, "print('created')", None).await;
            std::fs::write(&flag, "").unwrap();
            created
        })
    })
    .await;
    assert_eq!((waited.0.as_str(), created.0.as_str()), ("released\n", "created\n"));

    // Two calls on one session: the second is served after the first, whatever their timing.
    let log = data.join("sessions").join(&a).join("work").join("order.log");
    let log = log.to_str().unwrap();
    let first = format!("import time\ntime.sleep(0.5)\nopen({log:?}, 'a').write('1')");
    let second = format!("open({log:?}, 'a').write('2')");
    within(120, async {
        tokio::join!(server.ok(&a, &first, None), async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            server.ok(&a, &second, None).await
        })
    })
    .await;
    assert_eq!(std::fs::read_to_string(log).unwrap(), "12");
}

#[tokio::test]
async fn works_with_the_reduced_environment_mcp_clients_give_their_servers() {
    // The official Python SDK starts servers with only these variables: no SSL_CERT_FILE.
    let (_guard, data) = data_dir();
    // An empty uv cache makes uv reach the package index for real.
    let cache = data.join("uv-cache");
    let server = Server::start_with(&data, "", |command| {
        command.env_clear().env("UV_CACHE_DIR", &cache);
        for name in ["HOME", "PATH", "SHELL", "TERM", "USER", "LOGNAME"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
    })
    .await;
    let session = server.create_repl().await;
    let result =
        server.call("install_packages", json!({ "session_id": session, "packages": ["six==1.16.0"] })).await;
    assert_ne!(result.is_error, Some(true), "{:?}", texts(&result));
    let (out, _) = server.ok(&session, "import six\nprint(six.__version__)", None).await;
    assert_eq!(out, "1.16.0\n");
}
