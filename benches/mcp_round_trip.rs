//! `run_code('1+1')` through a real MCP client (rmcp over stdio, against the built server
//! binary), beside the MCP client's own floor (`ping`) and our kernel client's raw round trip of
//! the same code on a kernel of the same venv, all in one run.
//!
//! The server adds `run_code − ping − raw` on top of the kernel: MCP routing, the replay plan,
//! recording the cell and writing the graph file.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, ClientRequest, PingRequest};
use rmcp::transport::TokioChildProcess;
use rmcp::{ServiceExt, model::CallToolResult};
use serde_json::json;

use mcp_pyrepl::config::Settings;
use mcp_pyrepl::kernel::{Kernel, LaunchSpec};
use mcp_pyrepl::venv::Uv;

/// Round trips per measurement.
const SAMPLES: usize = 1000;

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    (micros(samples[samples.len() / 2]), micros(samples[samples.len() * 99 / 100]))
}

async fn measure<F: AsyncFnMut()>(mut round_trip: F) -> (f64, f64) {
    for _ in 0..50 {
        round_trip().await;
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        round_trip().await;
        samples.push(start.elapsed());
    }
    percentiles(samples)
}

fn last_text(result: &CallToolResult) -> String {
    result.content.iter().rev().find_map(|c| c.as_text()).unwrap().text.clone()
}

#[tokio::main]
async fn main() {
    let bench_dir = tempfile::tempdir().unwrap();
    let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("data");
    let uv = Uv::locate(None, &data_dir).await.expect("uv");
    let mut settings = Settings::with_data_dir(bench_dir.path());
    settings.base_packages.clear();

    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-pyrepl"));
    command.arg("--data-dir").arg(bench_dir.path()).arg("--uv").arg(uv.path()).args(["--base-packages", ""]);
    let client = ().serve(TokioChildProcess::new(command).unwrap()).await.expect("MCP handshake");
    let call = async |tool: &'static str, arguments: serde_json::Value| {
        let params = CallToolRequestParams::new(tool).with_arguments(arguments.as_object().unwrap().clone());
        client.call_tool(params).await.unwrap()
    };
    let created = call("create_repl", json!({})).await;
    let session = last_text(&created);

    let ping = measure(async || {
        client.send_request(ClientRequest::PingRequest(PingRequest::default())).await.unwrap();
    })
    .await;
    let mut parent = last_text(&call("run_code", json!({"session_id": session, "code": "1+1"})).await);
    let run_code = measure(async || {
        let result =
            call("run_code", json!({"session_id": session, "code": "1+1", "parent_cell_id": parent})).await;
        parent = last_text(&result);
    })
    .await;

    // The same venv, our client straight to a kernel.
    let venv = mcp_pyrepl::venv::Venv::at(bench_dir.path().join("sessions").join(&session).join("venv"));
    let kernel_dir = tempfile::tempdir().unwrap();
    let kernel = Kernel::launch(LaunchSpec::new(venv.python(), kernel_dir.path())).await.unwrap();
    let raw = measure(async || {
        kernel.execute("1+1").await.unwrap();
    })
    .await;
    kernel.shutdown().await;
    client.cancel().await.unwrap();

    println!("\n`1+1`, {SAMPLES} round trips each, one run (µs)");
    println!("| path | p50 | p99 |");
    println!("|---|---|---|");
    for (name, (p50, p99)) in
        [("MCP ping (client floor)", ping), ("kernel client raw execute", raw), ("MCP run_code", run_code)]
    {
        println!("| {name} | {p50:.0} | {p99:.0} |");
    }
    println!("| server overhead (run_code − ping − raw) | {:.0} | |", run_code.0 - ping.0 - raw.0);
}
