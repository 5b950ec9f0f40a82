//! The `mcp-pyrepl exec` command, run as the built binary.

use std::process::Command;

use super::common::{data_dir, default_venv};

fn exec(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mcp-pyrepl"))
        .arg("--data-dir")
        .arg(data_dir())
        .arg("exec")
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn cells_share_one_kernel_and_print_like_a_repl() {
    default_venv().await; // built once for the whole suite; exec finds it in the same data dir
    let output = exec(&["x = 41", "x + 1"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "42\n");
}

#[tokio::test]
async fn json_mode_prints_one_object_per_output_and_saves_images() {
    default_venv().await;
    let images = tempfile::tempdir().unwrap();
    let output = exec(&[
        "--json",
        "--image-dir",
        images.path().to_str().unwrap(),
        "print('hi')",
        "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["type"], "stream");
    assert_eq!(lines[0]["text"], "hi\n");
    assert_eq!(lines[1]["type"], "status");
    assert_eq!(lines[1]["status"], "ok");
    assert_eq!(lines[2]["type"], "display_data");
    let image = lines[2]["image"].as_str().unwrap();
    assert!(std::fs::read(image).unwrap().starts_with(b"\x89PNG"));
    assert_eq!(lines.len(), 4);
}

#[tokio::test]
async fn a_failing_cell_stops_the_run_and_sets_the_exit_code() {
    default_venv().await;
    let output = exec(&["print('first')", "1/0", "print('never')"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "first\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ZeroDivisionError: division by zero"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "ANSI codes in {stderr:?}");
}

#[tokio::test]
async fn a_kernel_that_dies_is_reported() {
    default_venv().await;
    let output = exec(&["import os; os._exit(7)"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("exited with code 7"), "{stderr}");
}

#[test]
fn a_bad_connection_file_is_an_error_naming_it() {
    let output = exec(&["--connection-file", "/nonexistent/conn.json", "1"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/conn.json"), "{stderr}");
}

#[tokio::test]
async fn demo_runs_the_branching_example_through_a_real_mcp_client() {
    let data = tempfile::tempdir().unwrap();
    let images = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-pyrepl"))
        .env("MCP_PYREPL_SPARE_SESSIONS", "0")
        .arg("--data-dir")
        .arg(data.path())
        .arg("--uv")
        .arg(super::common::uv().await.path())
        .args(["--base-packages", "numpy,matplotlib", "demo", "--image-dir"])
        .arg(images.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("Mean: 0.1792, Std Dev: 0.6647"), "{stdout}");
    assert!(stdout.contains("    False\n"), "branch B must not see branch A: {stdout}");
    let image = images.path().join("image-1.png");
    assert!(stdout.contains(&image.display().to_string()), "{stdout}");
    assert!(std::fs::read(&image).unwrap().starts_with(b"\x89PNG"));
    assert!(stdout.contains("[in kernel]"), "{stdout}");
}
