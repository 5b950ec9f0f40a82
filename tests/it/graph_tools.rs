//! The graph tools through the real server: list_sessions, list_cells, get_cell,
//! export_notebook (validated with the `nbformat` package), destroy_repl.

use serde_json::{Value, json};

use super::common::{data_dir as shared_data_dir, uv, within};
use super::mcp_client::{Server, data_dir, texts};

#[tokio::test]
async fn the_tree_can_be_listed_inspected_exported_and_destroyed() {
    let (_guard, data) = data_dir();
    // One kernel, so exactly the path to the last cell is "in kernel".
    let server = Server::start_with(&data, "", |command| {
        command.args(["--kernels-per-session", "1"]);
    })
    .await;
    let session = server.create_repl().await;
    let (_, a) = server.ok(&session, "x = 1", None).await;
    let (_, b) = server.ok(&session, "print('b sees', x)\nx * 10", Some(&a)).await;
    let (_, c) = server.ok(&session, "from IPython.display import HTML\nHTML('<b>c</b>')", Some(&a)).await;
    let (_, d) = server.ok(&session, "y = 2", None).await;

    // list_cells: every cell with its parent, and what the kernel holds (the path to `d`).
    let listed = server.call("list_cells", json!({"session_id": session})).await;
    let cells = listed.structured_content.clone().unwrap()["cells"].as_array().unwrap().clone();
    let by_id = |id: &str| cells.iter().find(|cell| cell["cell_id"] == id).unwrap().clone();
    assert_eq!(cells.len(), 4);
    assert_eq!(by_id(&b)["parent_cell_id"], json!(a));
    assert_eq!(by_id(&c)["first_line"], "from IPython.display import HTML");
    assert_eq!(by_id(&d)["in_kernel"], true);
    assert_eq!(by_id(&a)["in_kernel"], false);
    let tree = texts(&listed)[0].clone();
    assert!(tree.contains(&format!("\n  {b}")), "children are indented under their parent:\n{tree}");

    // get_cell: the code, then the outputs as run_code gave them.
    let cell = server.call("get_cell", json!({"session_id": session, "cell_id": b})).await;
    assert_eq!(texts(&cell), ["print('b sees', x)\nx * 10", "b sees 1\n", "10"]);
    let missing = server.call("get_cell", json!({"session_id": session, "cell_id": "000000000000"})).await;
    assert_eq!(missing.is_error, Some(true));

    // export_notebook: root → b as a valid notebook, plus the frozen requirements.
    let exported = server.call("export_notebook", json!({"session_id": session, "cell_id": b})).await;
    assert_ne!(exported.is_error, Some(true), "{:?}", texts(&exported));
    let paths = exported.structured_content.unwrap();
    let notebook_path = paths["notebook"].as_str().unwrap().to_owned();
    let requirements = std::fs::read_to_string(paths["requirements"].as_str().unwrap()).unwrap();
    assert!(requirements.lines().any(|l| l.starts_with("ipykernel==")), "{requirements}");
    let notebook: Value = serde_json::from_slice(&std::fs::read(&notebook_path).unwrap()).unwrap();
    let sources: Vec<&str> =
        notebook["cells"].as_array().unwrap().iter().map(|c| c["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["x = 1", "print('b sees', x)\nx * 10"]);
    let nbformat = within(
        300,
        uv().await.ensure_venv(
            &shared_data_dir().join("venvs").join("nbformat"),
            None,
            &["nbformat".to_owned()],
        ),
    )
    .await
    .unwrap();
    let validation = std::process::Command::new(nbformat.python())
        .args(["-c", "import nbformat, sys; nbformat.validate(nbformat.read(sys.argv[1], as_version=4)); print('valid')"])
        .arg(&notebook_path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&validation.stdout),
        "valid\n",
        "{}",
        String::from_utf8_lossy(&validation.stderr)
    );

    // list_sessions and destroy_repl.
    let other = server.create_repl().await;
    // Answered at once, so a kernel still starting in the background is not yet running: run a
    // cell to know it is.
    server.ok(&other, "pass", None).await;
    let listed = server.call("list_sessions", json!({})).await;
    let sessions = listed.structured_content.unwrap()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().any(|s| s["id"] == session && s["cells"] == 4));
    let destroyed = server.call("destroy_repl", json!({"session_id": session})).await;
    assert_ne!(destroyed.is_error, Some(true), "{:?}", texts(&destroyed));
    assert!(!data.join("sessions").join(&session).exists());
    let gone = server.run(&session, "1", None).await;
    assert!(texts(&gone)[0].contains("no session"), "{:?}", texts(&gone));
    let listed = server.call("list_sessions", json!({})).await;
    assert_eq!(
        listed.structured_content.unwrap()["sessions"],
        json!([{"id": other, "cells": 1, "kernel_running": true}])
    );
}
