//! Shared set-up: the cached venvs the tests run kernels in, and small helpers.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_pyrepl::config::Settings;
use mcp_pyrepl::kernel::{Execution, ExecutionStatus, Kernel, LaunchSpec, Output, StreamName};
use mcp_pyrepl::venv::{Uv, Venv};
use tokio::sync::OnceCell;

/// The data directory of the tests: the bootstrapped uv and the cached venvs live here.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("data")
}

/// uv, found or bootstrapped exactly as the server does it.
pub async fn uv() -> &'static Uv {
    static UV: OnceCell<Uv> = OnceCell::const_new();
    UV.get_or_init(|| async { Uv::locate(None, &data_dir()).await.expect("uv is found or installed") }).await
}

/// The venv `mcp-pyrepl exec --data-dir <data_dir()>` uses: ipykernel and the base packages.
pub async fn default_venv() -> &'static Venv {
    static VENV: OnceCell<Venv> = OnceCell::const_new();
    VENV.get_or_init(|| async {
        let settings = Settings::with_data_dir(data_dir());
        uv().await
            .ensure_venv(&settings.shared_venv_dir(), None, &settings.base_packages())
            .await
            .expect("the default venv builds")
    })
    .await
}

/// A kernel in the default venv with its files in `dir`.
pub async fn launch_in(dir: &Path) -> Kernel {
    within(90, Kernel::launch(LaunchSpec::new(default_venv().await.python(), dir)))
        .await
        .expect("kernel starts")
}

/// Awaits `future`, failing the test instead of hanging when it takes over `seconds`.
pub async fn within<T>(seconds: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .unwrap_or_else(|_| panic!("no answer within {seconds}s"))
}

/// Runs `code`, failing the test on a transport error or a hang.
pub async fn run(kernel: &Kernel, code: &str) -> Execution {
    within(60, kernel.execute(code)).await.expect("execute request goes through")
}

/// Runs `code` and returns its stdout, asserting that it succeeded.
pub async fn stdout_of(kernel: &Kernel, code: &str) -> String {
    let execution = run(kernel, code).await;
    assert_eq!(execution.status, ExecutionStatus::Ok, "{code:?} failed: {:?}", execution.outputs);
    stdout(&execution)
}

/// All stdout text of an execution.
pub fn stdout(execution: &Execution) -> String {
    execution
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Stream { name: StreamName::Stdout, text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The PNG images of an execution, decoded.
pub fn pngs(execution: &Execution) -> Vec<Vec<u8>> {
    execution.outputs.iter().filter_map(|o| o.image("image/png")).collect()
}

/// Whether any process of the group `pgid` is left.
pub fn group_alive(pgid: u32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), None).is_ok()
}
