//! Other MCP clients than rmcp's against the built server: the official Python SDK and the MCP
//! Inspector's CLI, each installed from its registry into the test data directory.

use std::process::Command;

use super::common::{data_dir, uv, within};

#[tokio::test]
async fn the_official_python_sdk_drives_the_server() {
    let venv = within(
        300,
        uv().await.ensure_venv(&data_dir().join("venvs").join("mcp-sdk"), None, &["mcp".to_owned()]),
    )
    .await
    .expect("a venv with the mcp package");
    let server_data = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(venv.python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/python_sdk.py"))
        .arg(env!("CARGO_BIN_EXE_mcp-pyrepl"))
        .arg(server_data.path())
        .arg(uv().await.path())
        .output();
    let output = within(300, output).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout, "python sdk: ok\n");
}

#[tokio::test]
async fn the_mcp_inspector_cli_lists_and_calls_tools() {
    let prefix = data_dir().join("inspector");
    let cli = prefix.join("node_modules/.bin/mcp-inspector");
    if !cli.exists() {
        std::fs::create_dir_all(&prefix).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&prefix)
            .arg("@modelcontextprotocol/inspector@0.15")
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm could not install the MCP Inspector");
    }
    let server_data = tempfile::tempdir().unwrap();
    let uv = uv().await.path().to_owned();
    let inspector = |args: &[&str]| {
        let output = Command::new(&cli)
            .arg("--cli")
            .arg(env!("CARGO_BIN_EXE_mcp-pyrepl"))
            .arg("--data-dir")
            .arg(server_data.path())
            .arg("--uv")
            .arg(&uv)
            .args(["--base-packages", "", "--spare-sessions", "0"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let tools = inspector(&["--method", "tools/list"]);
    assert!(tools["tools"].as_array().unwrap().iter().any(|t| t["name"] == "run_code"));
    let created = inspector(&["--method", "tools/call", "--tool-name", "create_repl"]);
    let session = created["structuredContent"]["session_id"].as_str().unwrap().to_owned();
    // Each Inspector call is a new server process: the session comes back from disk.
    let ran = inspector(&[
        "--method",
        "tools/call",
        "--tool-name",
        "run_code",
        "--tool-arg",
        &format!("session_id={session}"),
        "--tool-arg",
        "code=print(6 * 7)",
    ]);
    assert_eq!(ran["content"][0]["text"], "42\n", "{ran}");
    assert_eq!(ran["isError"], false);
}
