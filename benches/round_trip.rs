//! The execute round trip of `pass` against a real ipykernel, over ipc and over tcp, and, side by
//! side on the same kernel, jupyter_client's (the reference Python client) for comparison.
//!
//! The kernels run in a cached venv (ipykernel + jupyter_client) built through the crate's own uv
//! bootstrap, in the same data directory the integration tests use.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_pyrepl::jupyter::connection::Transport;
use mcp_pyrepl::kernel::{ExecutionStatus, Kernel, LaunchSpec};
use mcp_pyrepl::venv::Uv;

/// Round trips per percentile measurement.
const SAMPLES: usize = 2000;

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    (micros(samples[samples.len() / 2]), micros(samples[samples.len() * 99 / 100]))
}

fn round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("data");
    let venv = runtime.block_on(async {
        let uv = Uv::locate(None, &data_dir).await.expect("uv");
        uv.ensure_venv(&data_dir.join("venvs").join("bench"), None, &["jupyter_client".to_owned()])
            .await
            .expect("bench venv")
    });

    let mut table = Vec::new();
    for (name, transport) in [("ipc", Transport::Ipc), ("tcp", Transport::Tcp)] {
        let dir = tempfile::tempdir().unwrap();
        let spec = LaunchSpec::new(venv.python(), dir.path()).with_transport(transport);
        let kernel = runtime.block_on(Kernel::launch(spec)).expect("kernel starts");

        c.bench_function(&format!("execute `pass` round trip ({name})"), |b| {
            b.to_async(&runtime).iter(|| async {
                let execution = kernel.execute("pass").await.unwrap();
                assert_eq!(execution.status, ExecutionStatus::Ok);
            })
        });

        let ours = runtime.block_on(async {
            let mut samples = Vec::with_capacity(SAMPLES);
            for _ in 0..SAMPLES {
                let start = Instant::now();
                kernel.execute("pass").await.unwrap();
                samples.push(start.elapsed());
            }
            percentiles(samples)
        });
        let reference = std::process::Command::new(venv.python())
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/jupyter_client_round_trip.py"))
            .arg(kernel.connection_file().expect("a launched kernel has a connection file"))
            .arg(SAMPLES.to_string())
            .output()
            .expect("jupyter_client bench runs");
        assert!(reference.status.success(), "{}", String::from_utf8_lossy(&reference.stderr));
        let reference: serde_json::Value = serde_json::from_slice(&reference.stdout).unwrap();
        let theirs = (reference["p50_us"].as_f64().unwrap(), reference["p99_us"].as_f64().unwrap());
        table.push((name, ours, theirs));
        runtime.block_on(kernel.shutdown());
    }

    println!("\nexecute `pass` round trip, {SAMPLES} samples each, same kernel for both clients");
    println!("| transport | mcp-pyrepl p50 | p99 | jupyter_client p50 | p99 | p50 ratio (ours/theirs) |");
    println!("|---|---|---|---|---|---|");
    for (name, (our50, our99), (their50, their99)) in table {
        println!(
            "| {name} | {our50:.0} µs | {our99:.0} µs | {their50:.0} µs | {their99:.0} µs | {:.2} |",
            our50 / their50
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = round_trip
}
criterion_main!(benches);
