//! The whole benchmark suite in one run, printed as one markdown table beside the machine it ran
//! on: each figure next to its reference (jupyter_client, the MCP floor, a plain round trip) or
//! its target, so the ratios come from the same run on the same (noisy, shared) machine.
//!
//! - the wire codec: sign + encode + decode + verify of an `execute_request`;
//! - the raw execute round trip of `pass` and `1+1`: our kernel client against jupyter_client,
//!   each on its own kernel of the same venv;
//! - `run_code` through rmcp's client over stdio against the built server, beside the client's
//!   floor (`ping`) and the raw round trip; the server's share is `run_code − ping − raw`;
//! - `create_repl` with the base packages from a warm uv cache and no spare session, with what
//!   it is made of (the venv, the kernel start), then with a spare session ready;
//! - switching between two sibling branches under an expensive prefix (pandas, a million-row
//!   DataFrame) against continuing a branch, with the kernel pool and with one kernel per
//!   session (restart and replay);
//! - the server process's own memory (kernels excluded) with 20 sessions;
//! - going back (`suite/going_back.rs`): a 20-call analysis conversation against its cells' own
//!   run times, fresh and warm; a retry and a return to the last five cells (back to back, and
//!   with a model's think time between calls) against a continue; `1+1` with background work
//!   due; a snapshot's memory.
//!
//! `cargo bench --bench suite` runs it in full (a few minutes on two cores); run without
//! `--bench` (as `cargo test --benches` does) it takes a few samples of each, as a smoke test.
//! With `MCP_PYREPL_WRITE_BENCHMARKS=1` a full run also writes the report to `BENCHMARKS.md`.
//!
//! uv and the venvs come from the crate's own bootstrap, cached in the integration tests' data
//! directory, like `benches/round_trip.rs`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "suite/going_back.rs"]
mod going_back;

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult, ClientRequest, PingRequest};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use mcp_pyrepl::jupyter::message::{Content, ExecuteRequest, Message};
use mcp_pyrepl::jupyter::wire::{Signer, decode, encode};
use mcp_pyrepl::kernel::{ExecutionStatus, Kernel, KernelProcess, LaunchSpec};
use mcp_pyrepl::venv::{BASE_PACKAGES, Uv, Venv};

/// Set to `1` to have a full run write its report to `BENCHMARKS.md` at the crate root.
const WRITE_ENV: &str = "MCP_PYREPL_WRITE_BENCHMARKS";

/// The expensive shared prefix of the branch-switch measurement.
const PREFIX: &str = "import numpy as np\nimport pandas as pd\n\
    df = pd.DataFrame({'a': np.arange(1_000_000), 'b': np.random.default_rng(0).random(1_000_000)})";

/// The server's share of a `run_code` we aim for.
const OVERHEAD_TARGET: Duration = Duration::from_micros(300);
/// `create_repl` with the base packages from a warm uv cache.
const CREATE_TARGET: Duration = Duration::from_millis(1500);
/// `create_repl` when a spare session is ready.
const CREATE_SPARE_TARGET: Duration = Duration::from_millis(100);
/// A branch switch counts as "about one round trip" up to this many times a continuation.
const SWITCH_FACTOR: f64 = 2.0;
/// Server RSS with [`Counts::sessions`] sessions.
const MEMORY_TARGET_KB: u64 = 30 * 1024;
/// Sign + encode + decode + verify.
const CODEC_TARGET: Duration = Duration::from_micros(5);
/// `destroy_repl`, whatever the session holds.
const DESTROY_TARGET: Duration = Duration::from_millis(100);

/// How many samples each measurement takes.
#[derive(Debug, Clone, Copy)]
struct Counts {
    /// Round trips per latency row (taken in rounds of `round` so the rows share conditions),
    /// after `warm_up` of each.
    round_trips: usize,
    round: usize,
    warm_up: usize,
    /// Measured `create_repl` calls (after one to warm up), and as many venv builds and kernel
    /// starts for the breakdown.
    creates: usize,
    /// Branch switches with the kernel pool (and as many continuations), and with one kernel.
    switches: usize,
    switches_one_kernel: usize,
    /// Sessions alive when the server's memory is read.
    sessions: usize,
    /// Cells run in each of them.
    cells_per_session: usize,
    /// Codec batches, of `codec_batch` trips each.
    codec_batches: usize,
    codec_batch: usize,
    /// Sessions destroyed, each after `cells_before_destroy` cells; `list_sessions` calls timed
    /// while a cell runs and while none does.
    destroys: usize,
    cells_before_destroy: usize,
    lists: usize,
    /// Retries (and continues) timed after a failed cell; ten times as many `1+1` round trips
    /// idle and with background work due.
    going_back: usize,
}

impl Counts {
    const FULL: Counts = Counts {
        round_trips: 1000,
        round: 100,
        warm_up: 50,
        creates: 5,
        switches: 10,
        switches_one_kernel: 4,
        sessions: 20,
        cells_per_session: 10,
        codec_batches: 200,
        codec_batch: 1000,
        destroys: 3,
        cells_before_destroy: 300,
        lists: 50,
        going_back: 5,
    };
    const QUICK: Counts = Counts {
        round_trips: 40,
        round: 20,
        warm_up: 5,
        creates: 1,
        switches: 2,
        switches_one_kernel: 1,
        sessions: 2,
        cells_per_session: 2,
        codec_batches: 10,
        codec_batch: 100,
        destroys: 1,
        cells_before_destroy: 3,
        lists: 5,
        going_back: 1,
    };
}

#[tokio::main]
async fn main() {
    // cargo passes `--bench` under `cargo bench`; `cargo test --benches` runs us without it.
    let full = std::env::args().any(|arg| arg == "--bench");
    let counts = if full { Counts::FULL } else { Counts::QUICK };
    let started = Instant::now();
    let build = build();

    let data_dir = uv_data_dir();
    let uv = within(600, Uv::locate(None, &data_dir)).await.expect("uv");
    let bench_venv = within(
        600,
        uv.ensure_venv(&data_dir.join("venvs").join("bench"), None, &["jupyter_client".to_owned()]),
    )
    .await
    .expect("bench venv");
    let stand_in_packages = ["mcp".to_owned(), "jupyter_client".to_owned()];
    let stand_in_venv =
        within(600, uv.ensure_venv(&data_dir.join("venvs").join("stand-in"), None, &stand_in_packages))
            .await
            .expect("stand-in venv");

    step("codec");
    let codec = codec(counts);
    step("round trips: ping, raw and run_code, then jupyter_client");
    let latency = latency(&uv, &bench_venv, counts).await;
    step("create_repl with the base packages, without and with a spare session");
    let create = create_repl(&uv, counts).await;
    step("branch switches with the kernel pool");
    let switch = branch_switch(&uv, counts.switches, None).await;
    step("branch switches with one kernel per session");
    let switch_one_kernel = branch_switch(&uv, counts.switches_one_kernel, Some(1)).await;
    step("server memory");
    let memory = memory(&uv, counts).await;
    step("destroy_repl, and list_sessions while a cell runs");
    let admin = admin(&uv, counts).await;
    step("going back: the conversation, retries, background work, snapshot memory");
    let going_back = going_back::going_back(&uv, &stand_in_venv, counts.going_back).await;

    let results = Results { counts, build, codec, latency, create, switch, switch_one_kernel, memory, admin };
    let report = results.report(full, started.elapsed()) + &going_back.report();
    println!("\n{report}");
    if full && std::env::var(WRITE_ENV).is_ok_and(|v| v == "1") {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
        std::fs::write(path, &report).unwrap_or_else(|e| panic!("cannot write `{path}`: {e}"));
        eprintln!("wrote `{path}`");
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// The data directory of the `Uv` the bench builds venvs with directly.
fn uv_data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("data")
}

/// Per-trip times of the codec, from batches (one trip is too short to time alone).
fn codec(counts: Counts) -> Stats {
    let signer = Signer::new(b"3f7c2f9e-5f4b-4b8e-9d1a-8f0e6c2b1a77");
    let request = Message::new(Content::ExecuteRequest(ExecuteRequest::new("x = 1 + 1")), "bench-session");
    let batch = |n: usize| {
        let start = Instant::now();
        for _ in 0..n {
            black_box(decode(encode(black_box(&request), &signer), &signer).unwrap());
        }
        start.elapsed() / n as u32
    };
    for _ in 0..counts.codec_batches / 10 {
        batch(counts.codec_batch);
    }
    Stats::of((0..counts.codec_batches).map(|_| batch(counts.codec_batch)).collect())
}

/// The round-trip rows, all on kernels of one session venv (ipykernel only).
struct Latency {
    ping: Stats,
    /// Per code (`pass`, `1+1`): our client's raw round trip, jupyter_client's, `run_code`'s,
    /// and the kernel's run time as the server reports it (`run_ms`).
    rows: Vec<CodeRow>,
    /// Server overhead of `1+1` in the first and the last round (the graph grows meanwhile).
    overhead_first_last: (f64, f64),
    /// Cells in the `1+1` session at the end, the size of its graph file then, and a durable
    /// rewrite of a file that size (write, fsync, rename, fsync the directory), for scale.
    graph_cells: usize,
    graph_bytes: u64,
    durable_write: Stats,
    python: String,
    ipython: String,
}

struct CodeRow {
    code: &'static str,
    raw: Stats,
    jupyter_client: Stats,
    run_code: Stats,
    run_ms: Stats,
    /// CPU time (user + system, all threads) per call: of the server process over the
    /// `run_code` rounds, and of this process (our kernel client) over the raw rounds.
    server_cpu: Duration,
    client_cpu: Duration,
}

async fn latency(uv: &Uv, bench_venv: &Venv, counts: Counts) -> Latency {
    let server = Server::start(uv, "", &["--spare-sessions", "0"]).await;
    let codes = ["pass", "1+1"];
    let sessions = [server.create_repl().await, server.create_repl().await];
    wait_for_shared_bytecode(server.data_dir.path(), &[]).await;
    let python = Venv::at(server.session_dir(&sessions[0]).join("venv")).python();
    let kernel_dir = tempfile::tempdir().unwrap();
    let kernel = within(90, Kernel::launch(LaunchSpec::new(&python, kernel_dir.path()))).await.unwrap();

    let ping = async || {
        let request = ClientRequest::PingRequest(PingRequest::default());
        within(30, server.client.send_request(request)).await.unwrap();
    };
    let raw = async |code: &str| {
        let execution = within(30, kernel.execute(code)).await.unwrap();
        assert_eq!(execution.status, ExecutionStatus::Ok);
    };
    let mut parents: [Option<String>; 2] = [None, None];
    let mut run_ms = [Vec::new(), Vec::new()];
    let mut run = async |i: usize| {
        let result = server.run(&sessions[i], codes[i], parents[i].as_deref()).await;
        let structured = result.structured_content.unwrap();
        parents[i] = Some(structured["cell_id"].as_str().unwrap().to_owned());
        run_ms[i].push(Duration::from_secs_f64(structured["run_ms"].as_f64().unwrap() / 1e3));
    };

    for _ in 0..counts.warm_up {
        ping().await;
        for (i, code) in codes.iter().enumerate() {
            raw(code).await;
            run(i).await;
        }
    }
    let graph = server.session_dir(&sessions[1]).join("graph.json");
    let mut pings = Vec::new();
    let mut raws = [Vec::new(), Vec::new()];
    let mut runs = [Vec::new(), Vec::new()];
    let (mut server_cpu, mut client_cpu) = ([Duration::ZERO; 2], [Duration::ZERO; 2]);
    let mut overheads = Vec::new();
    for _ in 0..counts.round_trips / counts.round {
        pings.push(time_each(counts.round, async || ping().await).await);
        for (i, code) in codes.iter().enumerate() {
            let before = cpu_time(std::process::id());
            raws[i].push(time_each(counts.round, async || raw(code).await).await);
            client_cpu[i] += cpu_time(std::process::id()) - before;
            let before = cpu_time(server.pid);
            runs[i].push(time_each(counts.round, async || run(i).await).await);
            server_cpu[i] += cpu_time(server.pid) - before;
        }
        let p50 = |samples: &Vec<Vec<Duration>>| Stats::of(samples.last().unwrap().clone()).p50_us();
        overheads.push(p50(&runs[1]) - p50(&pings) - p50(&raws[1]));
    }
    for samples in &mut run_ms {
        samples.drain(..counts.warm_up);
    }
    let info = kernel.info();
    let python_version = info.language_info["version"].as_str().unwrap_or("?").to_owned();
    let ipython = info.implementation_version.clone();
    kernel.shutdown().await;

    // jupyter_client on a kernel of its own (ours would otherwise hear its iopub traffic).
    let reference_dir = tempfile::tempdir().unwrap();
    let spec = LaunchSpec::new(&python, reference_dir.path());
    let reference_kernel = within(90, KernelProcess::start(&spec)).await.unwrap();
    let mut jupyter_client = Vec::new();
    for code in codes {
        jupyter_client
            .push(reference(bench_venv, reference_kernel.connection_file(), code, counts.round_trips).await);
    }
    reference_kernel.terminate(Duration::from_secs(5)).await;

    let graph_bytes = std::fs::metadata(&graph).unwrap().len();
    let durable_write = durable_write(graph.parent().unwrap(), graph_bytes as usize, 200);
    let graph_cells = counts.warm_up + counts.round_trips;
    server.stop().await;

    let flatten = |rounds: &[Vec<Duration>]| Stats::of(rounds.concat());
    let rows = (0..2)
        .map(|i| CodeRow {
            code: codes[i],
            raw: flatten(&raws[i]),
            jupyter_client: jupyter_client[i],
            run_code: flatten(&runs[i]),
            run_ms: Stats::of(run_ms[i].clone()),
            server_cpu: server_cpu[i] / counts.round_trips as u32,
            client_cpu: client_cpu[i] / counts.round_trips as u32,
        })
        .collect();
    Latency {
        ping: flatten(&pings),
        rows,
        overhead_first_last: (overheads[0], *overheads.last().unwrap()),
        graph_cells,
        graph_bytes,
        durable_write,
        python: python_version,
        ipython,
    }
}

/// jupyter_client's round trips of `code`, from `benches/jupyter_client_round_trip.py`.
async fn reference(venv: &Venv, connection_file: &Path, code: &str, n: usize) -> Stats {
    let output = tokio::process::Command::new(venv.python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/jupyter_client_round_trip.py"))
        .arg(connection_file)
        .arg(n.to_string())
        .arg(code)
        .output()
        .await
        .expect("jupyter_client bench runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let figures: Value = serde_json::from_slice(&output.stdout).unwrap();
    let us = |key: &str| Duration::from_secs_f64(figures[key].as_f64().unwrap() / 1e6);
    Stats { p50: us("p50_us"), p99: us("p99_us"), max: us("max_us"), n }
}

/// What the graph file's write protocol costs on this disk: a temp file written and synced,
/// renamed into place, the directory synced.
fn durable_write(dir: &Path, bytes: usize, n: usize) -> Stats {
    let data = vec![b'x'; bytes];
    let target = dir.join("durable-write-probe");
    let samples = (0..n)
        .map(|i| {
            let start = Instant::now();
            let temp = dir.join(format!(".probe-{i}.tmp"));
            let mut file = std::fs::File::create(&temp).unwrap();
            file.write_all(&data).unwrap();
            file.sync_all().unwrap();
            std::fs::rename(&temp, &target).unwrap();
            std::fs::File::open(dir).unwrap().sync_all().unwrap();
            start.elapsed()
        })
        .collect();
    std::fs::remove_file(&target).unwrap();
    Stats::of(samples)
}

struct Create {
    /// Without spares: the venv is built (and the kernel started, or started in the background)
    /// while the caller waits.
    create_repl: Stats,
    /// The first `run_code` (`1+1`) of each of those sessions, which waits for a kernel still
    /// starting.
    first_run: Stats,
    /// With a spare ready (the server's default of one, waited for before each call).
    from_spare: Stats,
    venv: Stats,
    kernel_start: Stats,
    /// A second start in the same venv (its bytecode compiled by the first).
    kernel_restart: Stats,
}

async fn create_repl(uv: &Uv, counts: Counts) -> Create {
    let base = BASE_PACKAGES.join(",");
    let packages: Vec<String> = BASE_PACKAGES.iter().map(|p| p.to_string()).collect();
    let server = Server::start(uv, &base, &["--spare-sessions", "0"]).await;
    // The first one warms uv's cache (and the page cache) for the rest, and pins the versions
    // and compiles the bytecode that later venvs of the same packages share (as a server does
    // once a day); done directly too, for the breakdown.
    let session = server.create_repl().await;
    server.destroy(&session).await;
    let dir = tempfile::tempdir().unwrap();
    within(600, uv.create_venv(&dir.path().join("venv"), None, &packages)).await.unwrap();
    for data_dir in [server.data_dir.path(), &uv_data_dir()] {
        wait_for_shared_bytecode(data_dir, &packages).await;
    }
    // Each create_repl, then its two steps done directly, in the same conditions: where the
    // time goes.
    let (mut cold, mut first_runs) = (Vec::new(), Vec::new());
    let (mut venvs, mut starts, mut restarts) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..counts.creates {
        let start = Instant::now();
        let session = server.create_repl().await;
        cold.push(start.elapsed());
        let start = Instant::now();
        server.run(&session, "1+1", None).await;
        first_runs.push(start.elapsed());
        server.destroy(&session).await;

        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let venv = within(600, uv.create_venv(&dir.path().join("venv"), None, &packages)).await.unwrap();
        venvs.push(start.elapsed());
        for samples in [&mut starts, &mut restarts] {
            let start = Instant::now();
            let spec = LaunchSpec::new(venv.python(), dir.path().join("kernel"));
            let kernel = within(90, Kernel::launch(spec)).await.unwrap();
            samples.push(start.elapsed());
            kernel.shutdown().await;
        }
    }
    server.stop().await;

    let server = Server::start(uv, &base, &[]).await;
    let mut from_spare = Vec::new();
    for _ in 0..counts.creates {
        server.wait_for_spare().await;
        let start = Instant::now();
        let session = server.create_repl().await;
        from_spare.push(start.elapsed());
        server.destroy(&session).await;
    }
    server.stop().await;
    Create {
        create_repl: Stats::of(cold),
        first_run: Stats::of(first_runs),
        from_spare: Stats::of(from_spare),
        venv: Stats::of(venvs),
        kernel_start: Stats::of(starts),
        kernel_restart: Stats::of(restarts),
    }
}

struct Switch {
    prefix: Duration,
    switch: Stats,
    replay: Stats,
    continue_branch: Stats,
    restarts: usize,
    replayed_cells: usize,
}

/// Alternates between two sibling branches under an expensive prefix, with the server's kernel
/// pool (`kernels_per_session` of its default) or with one kernel (`Some(1)`), then continues
/// the last branch as often as it switched.
async fn branch_switch(uv: &Uv, switches: usize, kernels_per_session: Option<usize>) -> Switch {
    let kernels = kernels_per_session.map(|n| n.to_string());
    let mut flags = vec!["--spare-sessions", "0"];
    if let Some(kernels) = &kernels {
        flags.extend(["--kernels-per-session", kernels]);
    }
    let server = Server::start(uv, "pandas", &flags).await;
    let session = server.create_repl().await;
    let start = Instant::now();
    let prefix = server.cell_id(&server.run(&session, PREFIX, None).await);
    let prefix_time = start.elapsed();
    let mut tips = [
        server.cell_id(&server.run(&session, "total = int(df['a'].sum())", Some(&prefix)).await),
        server.cell_id(&server.run(&session, "mean = float(df['b'].mean())", Some(&prefix)).await),
    ];

    // The last run was on the second branch: from here every run alternates, so every run is
    // a switch, each back to the branch used just before.
    let (mut samples, mut replays, mut restarts, mut replayed_cells) = (Vec::new(), Vec::new(), 0, 0);
    for i in 0..switches {
        let branch = i % 2;
        let start = Instant::now();
        let result = server.run(&session, "1+1", Some(&tips[branch])).await;
        samples.push(start.elapsed());
        let structured = result.structured_content.as_ref().unwrap();
        replays.push(Duration::from_secs_f64(structured["replay_ms"].as_f64().unwrap() / 1e3));
        restarts += usize::from(structured["kernel_restarted"].as_bool().unwrap());
        replayed_cells += structured["replayed_cell_ids"].as_array().unwrap().len();
        tips[branch] = server.cell_id(&result);
    }
    // Continuing the branch the last run was on: one round trip, the same state in memory.
    let mut tip = tips[(switches + 1) % 2].clone();
    let continue_branch = time_each(switches, async || {
        tip = server.cell_id(&server.run(&session, "1+1", Some(&tip)).await);
    })
    .await;
    server.stop().await;
    Switch {
        prefix: prefix_time,
        switch: Stats::of(samples),
        replay: Stats::of(replays),
        continue_branch: Stats::of(continue_branch),
        restarts,
        replayed_cells,
    }
}

struct Memory {
    idle: (u64, u64),
    loaded: (u64, u64),
}

/// The server with its default spare session, `sessions` sessions created and used.
async fn memory(uv: &Uv, counts: Counts) -> Memory {
    let server = Server::start(uv, "", &[]).await;
    let idle = server.memory_kb();
    for _ in 0..counts.sessions {
        let session = server.create_repl().await;
        let mut parent = None;
        for cell in 0..counts.cells_per_session {
            let code = format!("x{cell} = list(range(1000))\nprint('line ' * 100)\nlen(x{cell})");
            parent = Some(server.cell_id(&server.run(&session, &code, parent.as_deref()).await));
        }
    }
    let loaded = server.memory_kb();
    server.stop().await;
    Memory { idle, loaded }
}

struct Admin {
    destroy: Stats,
    list_idle: Stats,
    list_busy: Stats,
}

/// `destroy_repl` of sessions with `cells_before_destroy` cells and a live kernel; then
/// `list_sessions` with no cell running, and while another session's cell runs.
async fn admin(uv: &Uv, counts: Counts) -> Admin {
    let server = Server::start(uv, "", &["--spare-sessions", "0"]).await;
    let mut destroys = Vec::new();
    for _ in 0..counts.destroys {
        let session = server.create_repl().await;
        let mut parent = None;
        for cell in 0..counts.cells_before_destroy {
            let code = format!("x{cell} = {cell}");
            parent = Some(server.cell_id(&server.run(&session, &code, parent.as_deref()).await));
        }
        let start = Instant::now();
        server.destroy(&session).await;
        destroys.push(start.elapsed());
    }
    let list = async || server.call("list_sessions", json!({})).await;
    let idle_session = server.create_repl().await;
    server.run(&idle_session, "pass", None).await;
    let list_idle = time_each(counts.lists, async || drop(list().await)).await;
    let busy = server.create_repl().await;
    // In the session's working directory: a confined kernel sees nothing of the data directory
    // outside its session.
    let flag = server.session_dir(&busy).join("work").join("release");
    let code =
        format!("import os, time\nwhile not os.path.exists({:?}): time.sleep(0.01)", flag.to_str().unwrap());
    let params = CallToolRequestParams::new("run_code")
        .with_arguments(json!({ "session_id": busy, "code": code }).as_object().unwrap().clone());
    let peer = rmcp::Peer::clone(&server.client);
    let running = tokio::spawn(async move { peer.call_tool(params).await });
    // The kernel starts and the cell begins before the first list is timed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let list_busy = time_each(counts.lists, async || drop(list().await)).await;
    assert!(!running.is_finished(), "the cell ended before the lists were timed");
    std::fs::write(&flag, "").unwrap();
    within(60, running).await.unwrap().unwrap();
    server.stop().await;
    Admin { destroy: Stats::of(destroys), list_idle: Stats::of(list_idle), list_busy: Stats::of(list_busy) }
}

// ---------------------------------------------------------------------------------------------
// The server and its client

/// The pids of the kernels of the session in `dir`, from its pid records.
fn kernel_pids(dir: &Path) -> Vec<u32> {
    let records = std::fs::read_dir(dir.join("kernel.pids")).into_iter().flatten().flatten();
    records
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".pid"))
        .filter_map(|entry| {
            let record: Value = serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
            Some(record["kernel"].as_u64()? as u32)
        })
        .collect()
}

/// User and system CPU time of `pid` so far, in clock ticks (0 once it is gone).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, of the whole line).
    fields.get(11..13).map_or(0, |times| times.iter().filter_map(|t| t.parse::<u64>().ok()).sum())
}

/// Waits until the venvs with `packages` that a server (or `Uv`) with data directory `data_dir`
/// builds share their compiled bytecode: the store that the first such venv has filled in the
/// background, beside the pinned versions.
async fn wait_for_shared_bytecode(data_dir: &Path, packages: &[String]) {
    let pins_dir = data_dir.join("venvs").join("pins");
    let pins_of_these_packages = || {
        let entries = std::fs::read_dir(&pins_dir).into_iter().flatten().flatten();
        entries.map(|entry| entry.path()).filter(|path| {
            path.extension().is_some_and(|e| e == "txt")
                && std::fs::read_to_string(path).is_ok_and(|pinned| {
                    let pinned = pinned.to_lowercase();
                    packages.iter().all(|p| pinned.lines().any(|line| line.starts_with(&format!("{p}=="))))
                })
        })
    };
    within(300, async {
        loop {
            let mut pins = pins_of_these_packages().peekable();
            if pins.peek().is_some() && pins.all(|pins| pins.with_extension("bytecode").is_dir()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// An MCP server on a data directory of its own, driven over stdio by rmcp's client: the built
/// `mcp-pyrepl`, or the stand-in.
struct Server {
    client: RunningService<RoleClient, ()>,
    pid: u32,
    data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server with `base_packages` and `flags` in a new data directory; its logs go
    /// to our stderr.
    async fn start(uv: &Uv, base_packages: &str, flags: &[&str]) -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), uv, base_packages, flags).await
    }

    /// [`Server::start`] on `data_dir`, which an earlier server may have used.
    async fn start_in(data_dir: tempfile::TempDir, uv: &Uv, base_packages: &str, flags: &[&str]) -> Server {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-pyrepl"));
        command
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--uv")
            .arg(uv.path())
            .args(["--base-packages", base_packages])
            .args(flags)
            .env_remove("RUST_LOG");
        Server::connect(command, data_dir).await
    }

    /// The stand-in (`benches/stand_in_server.py`, run by the Python of `venv`) with
    /// `base_packages`, in a new data directory.
    async fn stand_in(uv: &Uv, venv: &Venv, base_packages: &str) -> Server {
        let data_dir = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(venv.python());
        command
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/stand_in_server.py"))
            .arg(data_dir.path())
            .arg(uv.path())
            .arg(base_packages.replace(' ', ","))
            .stderr(std::process::Stdio::null());
        Server::connect(command, data_dir).await
    }

    async fn connect(command: tokio::process::Command, data_dir: tempfile::TempDir) -> Server {
        let transport = TokioChildProcess::new(command).unwrap();
        let pid = transport.id().unwrap();
        let client = within(60, ().serve(transport)).await.expect("MCP handshake");
        Server { client, pid, data_dir }
    }

    fn session_dir(&self, session: &str) -> PathBuf {
        self.data_dir.path().join("sessions").join(session)
    }

    /// Calls `tool`, which must succeed.
    async fn call(&self, tool: &'static str, arguments: Value) -> CallToolResult {
        let result = self.call_any(tool, arguments).await;
        assert_ne!(result.is_error, Some(true), "{tool} failed: {:?}", result.content);
        result
    }

    /// Calls `tool`, which may fail as a tool.
    async fn call_any(&self, tool: &'static str, arguments: Value) -> CallToolResult {
        let params = CallToolRequestParams::new(tool).with_arguments(arguments.as_object().unwrap().clone());
        within(600, self.client.call_tool(params)).await.unwrap()
    }

    async fn create_repl(&self) -> String {
        let result = self.call("create_repl", json!({})).await;
        result.structured_content.unwrap()["session_id"].as_str().unwrap().to_owned()
    }

    async fn run(&self, session: &str, code: &str, parent: Option<&str>) -> CallToolResult {
        self.call("run_code", run_arguments(session, code, parent)).await
    }

    /// Runs `code`, which may fail.
    async fn run_any(&self, session: &str, code: &str, parent: Option<&str>) -> CallToolResult {
        self.call_any("run_code", run_arguments(session, code, parent)).await
    }

    async fn destroy(&self, session: &str) {
        self.call("destroy_repl", json!({ "session_id": session })).await;
    }

    /// Waits until a spare session is ready: built, its kernel started and its graph saved,
    /// which is the last step before the server hands it out.
    /// Waits until a spare session is ready and warm: built, its kernel started and its graph
    /// saved (the last step before the server hands it out), and its kernel done importing the
    /// base packages (no CPU used for half a second).
    async fn wait_for_spare(&self) {
        let sessions = self.data_dir.path().join("sessions");
        let ready = || {
            std::fs::read_dir(&sessions).into_iter().flatten().flatten().find_map(|entry| {
                let dir = entry.path();
                (dir.join("spare").exists() && dir.join("graph.json").exists()).then_some(dir)
            })
        };
        let spare = within(600, async {
            loop {
                if let Some(spare) = ready() {
                    return spare;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let kernels = kernel_pids(&spare);
        let cpu = || kernels.iter().map(|&pid| cpu_ticks(pid)).sum::<u64>();
        within(600, async {
            let mut before = cpu();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = cpu();
                if now == before {
                    return;
                }
                before = now;
            }
        })
        .await;
    }

    fn cell_id(&self, result: &CallToolResult) -> String {
        result.structured_content.as_ref().unwrap()["cell_id"].as_str().unwrap().to_owned()
    }

    /// The server process's resident set now and at its peak (`VmRSS`, `VmHWM`), in KiB. Its
    /// kernels are processes of their own and not counted.
    fn memory_kb(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{}/status", self.pid))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Closes stdin; the server stops its kernels and exits.
    async fn stop(self) {
        within(60, self.client.cancel()).await.unwrap();
    }

    /// Stops the server as a client that goes away does and waits until it has exited; its
    /// data directory stays until the returned handle is dropped.
    async fn stop_for_restart(self) -> tempfile::TempDir {
        within(60, self.client.cancel()).await.unwrap();
        let gone = async {
            while std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|stat| {
                !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'))
            }) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        within(120, gone).await;
        self.data_dir
    }
}

fn run_arguments(session: &str, code: &str, parent: Option<&str>) -> Value {
    let mut arguments = json!({ "session_id": session, "code": code });
    if let Some(parent) = parent {
        arguments["parent_cell_id"] = json!(parent);
    }
    arguments
}

// ---------------------------------------------------------------------------------------------
// Figures

/// Percentiles of a set of samples.
#[derive(Debug, Clone, Copy)]
struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
    n: usize,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Stats {
        assert!(!samples.is_empty());
        samples.sort();
        let n = samples.len();
        Stats { p50: samples[n / 2], p99: samples[n * 99 / 100], max: samples[n - 1], n }
    }

    fn p50_us(&self) -> f64 {
        self.p50.as_secs_f64() * 1e6
    }

    /// `p50 / p99`, or `p50 / max` when there are too few samples for a 99th percentile.
    fn spread(&self) -> String {
        if self.n >= 100 {
            format!("{} / {}", duration(self.p50), duration(self.p99))
        } else {
            format!("{} / max {}", duration(self.p50), duration(self.max))
        }
    }
}

/// Awaits `round_trip` `n` times, timing each.
/// CPU time (user + system, all threads) that process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    static TICKS_PER_SECOND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks_per_second = *TICKS_PER_SECOND.get_or_init(|| {
        let output = std::process::Command::new("getconf").arg("CLK_TCK").output().unwrap();
        String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name, from the state (field 3): utime is field 14,
    // stime field 15.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / ticks_per_second)
}

async fn time_each(n: usize, mut round_trip: impl AsyncFnMut()) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        round_trip().await;
        samples.push(start.elapsed());
    }
    samples
}

fn duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 {
        format!("{us:.2} µs")
    } else if us < 1e3 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn us(value: f64) -> String {
    format!("{value:.0} µs")
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn met(ok: bool) -> String {
    if ok { "yes" } else { "**no**" }.to_owned()
}

/// Every figure of one run.
struct Results {
    counts: Counts,
    /// What [`build`] said when the run started.
    build: String,
    codec: Stats,
    latency: Latency,
    create: Create,
    switch: Switch,
    switch_one_kernel: Switch,
    memory: Memory,
    admin: Admin,
}

impl Results {
    /// The report: how to reproduce it, the machine, the table, and the causes of the gaps.
    fn report(&self, full: bool, elapsed: Duration) -> String {
        let Results {
            counts,
            build: _,
            codec: _,
            latency,
            create,
            switch,
            switch_one_kernel,
            memory,
            admin: _,
        } = self;
        let mut out = String::new();
        let _ = writeln!(out, "# Benchmarks\n");
        if !full {
            let _ = writeln!(
                out,
                "**Quick mode (a smoke test, not the benchmark): run `cargo bench --bench suite`.**\n"
            );
        }
        let _ = writeln!(
            out,
            "Reproduce with `cargo bench --bench suite`: it prints this report, and with `{WRITE_ENV}=1` \
             also writes it to `BENCHMARKS.md` (which is how this file was made). Every figure comes \
             from one run of {:.1} minutes; on a shared machine compare the ratios, not the \
             absolute times. Latencies are p50 / p99 over {} round trips per row, taken in interleaved \
             rounds of {} so that the rows share conditions; with fewer samples, p50 / max.\n",
            elapsed.as_secs_f64() / 60.0,
            counts.round_trips,
            counts.round,
        );
        let _ = writeln!(out, "{}\n", machine(&self.build, latency));
        let _ = writeln!(out, "| metric | ours | reference | ratio or target | met? |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for [metric, ours, reference, ratio, met] in self.rows() {
            let _ = writeln!(out, "| {metric} | {ours} | {reference} | {ratio} | {met} |");
        }

        let _ = writeln!(out, "\n## Gaps and their causes\n");
        let sum = &latency.rows[1];
        let overhead = sum.run_code.p50_us() - latency.ping.p50_us() - sum.raw.p50_us();
        let (first, last) = latency.overhead_first_last;
        let inside = sum.run_ms.p50_us() - sum.raw.p50_us();
        let inside = if inside > 0.1 * overhead {
            format!(
                ", so {} of the overhead is inside that execution (the same kernel client, run with the \
                 cell's time limit, output limits and live-output tracking)",
                us(inside)
            )
        } else {
            ", so the overhead is all around that execution".to_owned()
        };
        let server_work = sum.server_cpu.saturating_sub(sum.client_cpu);
        let _ = writeln!(
            out,
            "- **Server overhead.** Of the {} overhead on `1+1`, the server's own work is about {}: its \
             process used {} of CPU per call (all threads: the MCP transport and JSON, the replay plan, \
             its kernel client, recording the cell by appending one line to the graph file and one to \
             the outputs log), and our kernel client in this process {} per raw round trip. The rest \
             is waiting, not work: a `run_code` has one more process to wake than a raw round trip, \
             twice (on the request and on the kernel's reply), and each wake of an idle process costs \
             scheduling latency on this shared virtual machine. The kernel part of a run (`run_ms`) \
             took {} p50 against {} raw{inside}. The overhead was {} in the first round of {} calls \
             and {} in the last, when the graph held {} cells. For scale, a durable rewrite (write + \
             fsync + rename + fsync of the directory) of the whole graph file at that size ({} KB) \
             would cost {} p50 / {} p99 on this disk.",
            us(overhead),
            us(server_work.as_secs_f64() * 1e6),
            duration(sum.server_cpu),
            duration(sum.client_cpu),
            duration(sum.run_ms.p50),
            duration(sum.raw.p50),
            us(first),
            counts.round,
            us(last),
            latency.graph_cells,
            latency.graph_bytes / 1024,
            duration(latency.durable_write.p50),
            duration(latency.durable_write.p99),
        );
        let _ = writeln!(
            out,
            "- **`create_repl` without a spare** builds a venv with ipykernel and {}: `uv venv`, then \
             `uv pip sync --offline` of the versions the last venv of this package set resolved to \
             (resolving against the index again, once a day, costs about 0.5 s more), hard-linked from \
             uv's warm cache, and the bytecode that set compiled once hard-linked in: {} p50 done \
             directly. Its kernel's start ({} p50 for the first start in a new venv; {} for a second \
             start in the same venv) is paid by `create_repl` or, when the server starts it in the \
             background, by the first `run_code`: here `create_repl` took {} and the first `run_code` \
             {}. With a spare ready (the server keeps one by default, built in the background), \
             `create_repl` only hands it out: {} p50.",
            BASE_PACKAGES.join(", "),
            duration(create.venv.p50),
            duration(create.kernel_start.p50),
            duration(create.kernel_restart.p50),
            duration(create.create_repl.p50),
            duration(create.first_run.p50),
            duration(create.from_spare.p50),
        );
        let _ = writeln!(
            out,
            "- **Branch switch.** The shared prefix (importing pandas and numpy, building the DataFrame) \
             took {} on its first run. With the kernel pool, {} of {} switches started or restarted a \
             kernel ({} cells replayed in all): each branch's kernel is kept, so a switch is a round trip \
             on another kernel. With one kernel per session, {} of {} switches restarted it and replayed \
             {} cells in all (replay {} p50, restart included): that is what the pool saves.",
            duration(switch.prefix),
            switch.restarts,
            switch.switch.n,
            switch.replayed_cells,
            switch_one_kernel.restarts,
            switch_one_kernel.switch.n,
            switch_one_kernel.replayed_cells,
            duration(switch_one_kernel.replay.p50),
        );
        let _ = writeln!(
            out,
            "- **Memory** is the server process alone (`VmRSS` / `VmHWM` from `/proc/<pid>/status`), with \
             its default spare session besides the {} created: {} per session over the idle server ({}).",
            counts.sessions,
            mb(memory.loaded.0.saturating_sub(memory.idle.0) / counts.sessions as u64),
            mb(memory.idle.0),
        );
        out
    }

    /// The table: metric, ours, reference, ratio or target, met.
    fn rows(&self) -> Vec<[String; 5]> {
        let Results { counts, build: _, codec, latency, create, switch, switch_one_kernel, memory, admin } =
            self;
        let ratio = |a: Duration, b: Duration| format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64());
        let target = |d: Duration| format!("≤ {}", duration(d));
        let none = || "–".to_owned();
        let mut rows = vec![[
            "codec: sign + encode + decode + verify an `execute_request`".to_owned(),
            codec.spread(),
            none(),
            target(CODEC_TARGET),
            met(codec.p50 <= CODEC_TARGET),
        ]];
        for r in &latency.rows {
            rows.push([
                format!("raw execute round trip of `{}`: our kernel client vs jupyter_client (ipc)", r.code),
                r.raw.spread(),
                r.jupyter_client.spread(),
                ratio(r.raw.p50, r.jupyter_client.p50),
                none(),
            ]);
        }
        rows.push([
            "MCP `ping` through rmcp's client over stdio (the floor)".to_owned(),
            latency.ping.spread(),
            none(),
            none(),
            none(),
        ]);
        for r in &latency.rows {
            let floor = latency.ping.p50 + r.raw.p50;
            rows.push([
                format!("MCP `run_code` of `{}` vs ping + raw (p50)", r.code),
                r.run_code.spread(),
                duration(floor),
                ratio(r.run_code.p50, floor),
                none(),
            ]);
        }
        for r in &latency.rows {
            let overhead = r.run_code.p50_us() - latency.ping.p50_us() - r.raw.p50_us();
            rows.push([
                format!("server overhead on `{}`: run_code − ping − raw (p50)", r.code),
                us(overhead),
                none(),
                target(OVERHEAD_TARGET),
                met(overhead <= OVERHEAD_TARGET.as_secs_f64() * 1e6),
            ]);
        }
        rows.push([
            format!("`create_repl`, base packages, warm uv cache, no spare (n = {})", create.create_repl.n),
            create.create_repl.spread(),
            format!(
                "venv {} + kernel start {}",
                duration(create.venv.p50),
                duration(create.kernel_start.p50)
            ),
            target(CREATE_TARGET),
            met(create.create_repl.p50 <= CREATE_TARGET),
        ]);
        rows.push([
            format!("… then that session's first `run_code` of `1+1` (n = {})", create.first_run.n),
            create.first_run.spread(),
            format!("kernel start {}", duration(create.kernel_start.p50)),
            none(),
            none(),
        ]);
        rows.push([
            format!("`create_repl`, base packages, a spare session ready (n = {})", create.from_spare.n),
            create.from_spare.spread(),
            format!("no spare: {}", duration(create.create_repl.p50)),
            target(CREATE_SPARE_TARGET),
            met(create.from_spare.p50 <= CREATE_SPARE_TARGET),
        ]);
        let switch_ratio = switch.switch.p50.as_secs_f64() / switch.continue_branch.p50.as_secs_f64();
        rows.push([
            format!(
                "switch to the recently used sibling branch under pandas + a 1M-row DataFrame, kernel pool \
                 (n = {})",
                switch.switch.n
            ),
            switch.switch.spread(),
            format!("continue the branch: {}", switch.continue_branch.spread()),
            format!("{switch_ratio:.2}× (≈ 1 round trip: ≤ {SWITCH_FACTOR:.0}×)"),
            met(switch_ratio <= SWITCH_FACTOR),
        ]);
        rows.push([
            format!(
                "the same switch with one kernel per session: restart + replay (n = {})",
                switch_one_kernel.switch.n
            ),
            switch_one_kernel.switch.spread(),
            format!("with the pool: {}", duration(switch.switch.p50)),
            ratio(switch_one_kernel.switch.p50, switch.switch.p50),
            none(),
        ]);
        rows.push([
            format!(
                "server RSS (kernels excluded) with {} sessions × {} cells: VmRSS (peak VmHWM)",
                counts.sessions, counts.cells_per_session
            ),
            format!("{} (peak {})", mb(memory.loaded.0), mb(memory.loaded.1)),
            format!("no sessions: {}", mb(memory.idle.0)),
            format!("≤ {}", mb(MEMORY_TARGET_KB)),
            met(memory.loaded.0 <= MEMORY_TARGET_KB),
        ]);
        rows.push([
            format!(
                "`destroy_repl` of a session with {} cells and a live kernel (n = {})",
                counts.cells_before_destroy, admin.destroy.n
            ),
            admin.destroy.spread(),
            none(),
            target(DESTROY_TARGET),
            met(admin.destroy.p50 <= DESTROY_TARGET),
        ]);
        rows.push([
            format!("`list_sessions` while another session's cell runs (n = {})", admin.list_busy.n),
            admin.list_busy.spread(),
            format!("no cell running: {}", admin.list_idle.spread()),
            ratio(admin.list_busy.p50, admin.list_idle.p50),
            none(),
        ]);
        rows
    }
}

/// The commit the server was built from, and whether `src/` differed from it. Read when the run
/// starts, right after cargo built the server, as others may commit while it runs.
fn build() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])
        .filter(|o| o.status.success())
        .map_or("?".to_owned(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    // `git diff` exits with 1 when there are differences (and does not write the index).
    let src_changed =
        git(&["diff", "--quiet", "HEAD", "--", "src"]).is_some_and(|o| o.status.code() == Some(1));
    let changes = if src_changed { " with uncommitted changes in `src/`" } else { "" };
    format!("commit `{commit}`{changes}")
}

/// Date, machine, build and the kernel's versions.
fn machine(build: &str, latency: &Latency) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
        .map_or("unknown CPU".to_owned(), |(_, model)| model.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("?".to_owned(), |kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)));
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let os = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} · {nproc} CPUs ({cpu}) · {memory} RAM · Linux {} · {build}, release build · Python {}, IPython {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        os.trim(),
        latency.python,
        latency.ipython,
    )
}

// ---------------------------------------------------------------------------------------------

fn step(what: &str) {
    eprintln!("suite: {what}");
}

/// Awaits `future`, panicking instead of hanging when it takes over `seconds`.
async fn within<T>(seconds: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .unwrap_or_else(|_| panic!("no answer within {seconds}s"))
}
