//! Numeric settings checked at start-up, run as the built binary: a value out of its range, given
//! as a flag or as its `MCP_PYREPL_*` variable, stops the program with exit code 2 and a message
//! naming the setting, the value and the range, before anything is served or written. Each run
//! gets an MCP `initialize` request and then the end of stdin, so a server that wrongly starts
//! answers it and exits instead of waiting.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The request an MCP client opens with.
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"settings-test","version":"1"}}}"#;

/// How a test gives a setting its value.
enum Given {
    /// In its environment variable.
    Variable,
    /// As its flag, before any command.
    Flag,
    /// As its flag, after `serve`.
    FlagAfterServe,
}

/// The binary with none of the caller's `MCP_PYREPL_*` variables, its data in `data_dir`.
fn mcp_pyrepl(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcp-pyrepl"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MCP_PYREPL_") {
            command.env_remove(name);
        }
    }
    command.env("MCP_PYREPL_DATA_DIR", data_dir).env("MCP_PYREPL_SPARE_SESSIONS", "0");
    command
}

/// Runs `command` as an MCP client would: sends `initialize`, closes stdin, and collects what
/// the program wrote.
fn run_as_client(command: &mut Command) -> Output {
    let mut child =
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // A program that refused to start may be gone already: a broken pipe is no failure here.
    let _ = writeln!(child.stdin.take().unwrap(), "{INITIALIZE}");
    child.wait_with_output().unwrap()
}

/// Starts the server with `value` for the setting `flag` / `variable`, as a client would, and
/// asserts that it refused to start naming the setting, the value and the accepted `range`.
fn refused(given: Given, flag: &str, variable: &str, value: &str, range: &str) {
    let data = tempfile::tempdir().unwrap();
    let mut command = mcp_pyrepl(data.path());
    match given {
        Given::Variable => command.env(variable, value),
        Given::Flag => command.args([flag, value]),
        Given::FlagAfterServe => command.args(["serve", flag, value]),
    };
    let output = run_as_client(&mut command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let message = format!("invalid value `{value}` for `{flag}` (or `{variable}`): expected ");
    assert!(stderr.contains(&message) && stderr.contains(range), "{stderr}");
    assert!(output.stdout.is_empty(), "served: {}", String::from_utf8_lossy(&output.stdout));
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0, "wrote to the data directory");
}

#[test]
fn a_negative_cell_timeout_variable_is_refused() {
    refused(
        Given::Variable,
        "--cell-timeout",
        "MCP_PYREPL_CELL_TIMEOUT",
        "-1",
        "greater than 0 and at most 86400",
    );
}

#[test]
fn a_nan_interrupt_grace_flag_is_refused() {
    refused(Given::Flag, "--interrupt-grace", "MCP_PYREPL_INTERRUPT_GRACE", "NaN", "from 0 to 3600");
}

#[test]
fn an_infinite_output_budget_after_serve_is_refused() {
    refused(
        Given::FlagAfterServe,
        "--max-output-bytes",
        "MCP_PYREPL_MAX_OUTPUT_BYTES",
        "inf",
        "whole number from 1024 to 1073741824",
    );
}

#[test]
fn an_idle_timeout_that_overflows_to_infinity_is_refused() {
    refused(
        Given::Variable,
        "--kernel-idle-timeout",
        "MCP_PYREPL_KERNEL_IDLE_TIMEOUT",
        "1e400",
        "from 0 to 604800",
    );
}

#[test]
fn zero_kernels_per_session_are_refused() {
    refused(Given::Variable, "--kernels-per-session", "MCP_PYREPL_KERNELS_PER_SESSION", "0", "from 1 to 64");
}

#[test]
fn a_kernel_memory_limit_python_cannot_start_in_is_refused() {
    refused(Given::Flag, "--kernel-memory-mb", "MCP_PYREPL_KERNEL_MEMORY_MB", "8", "from 16 to 16777216");
}

#[test]
fn a_negative_port_variable_is_refused_without_a_command() {
    refused(Given::Variable, "--port", "MCP_PYREPL_PORT", "-1", "whole number from 0 to 65535");
}

#[test]
fn values_at_the_bounds_are_served() {
    let data = tempfile::tempdir().unwrap();
    let Output { status, stdout, stderr } = run_as_client(
        mcp_pyrepl(data.path())
            .env("MCP_PYREPL_CELL_TIMEOUT", "86400")
            .args(["--interrupt-grace", "0", "--kernel-idle-timeout", "604800"])
            .args(["--max-output-bytes", "1024", "--max-images", "0", "--max-image-bytes", "0"])
            .args(["--kernels-per-session", "64", "--kernel-memory-mb", "16", "--kernel-cpu-seconds", "1"]),
    );
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(status.success(), "{status}: {stderr}");
    assert!(String::from_utf8_lossy(&stdout).contains(r#""serverInfo":{"name":"mcp-pyrepl""#), "{stderr}");
}
