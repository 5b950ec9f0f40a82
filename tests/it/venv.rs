//! uv and venvs: the bootstrap, the interpreter choice, installs into a venv.

use mcp_pyrepl::kernel::{ExecutionStatus, Kernel, LaunchSpec};

use super::common::{data_dir, run, stdout_of, uv, within};

/// Python 3.13 as pyenv installs it on this kind of machine (uv cannot download interpreters
/// here, and does not look inside pyenv by itself).
fn python_313() -> String {
    let root =
        std::env::var("PYENV_ROOT").unwrap_or_else(|_| format!("{}/.pyenv", std::env::var("HOME").unwrap()));
    let versions = std::fs::read_dir(format!("{root}/versions")).expect("pyenv versions are installed");
    let dir = versions
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("3.13"))
        .expect("Python 3.13 is installed under pyenv");
    dir.join("bin/python3.13").to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_venv_on_another_python_runs_its_kernel() {
    let venv = within(
        300,
        uv().await.ensure_venv(&data_dir().join("venvs").join("py313-bare"), Some(&python_313()), &[]),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kernel = within(90, Kernel::launch(LaunchSpec::new(venv.python(), dir.path()))).await.unwrap();
    let version = stdout_of(&kernel, "import sys; print(sys.version_info[:2])").await;
    assert_eq!(version, "(3, 13)\n");
    kernel.shutdown().await;
}

#[tokio::test]
async fn packages_installed_later_import_in_the_running_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let venv = within(300, uv().await.ensure_venv(&dir.path().join("venv"), None, &[])).await.unwrap();
    let kernel =
        within(90, Kernel::launch(LaunchSpec::new(venv.python(), dir.path().join("k")))).await.unwrap();
    let missing = run(&kernel, "import six").await;
    assert_eq!(missing.status, ExecutionStatus::Error);
    let report = within(300, uv().await.install(&venv, &["six==1.16.0".to_owned()])).await.unwrap();
    assert!(report.contains("six"), "{report}");
    assert_eq!(stdout_of(&kernel, "import six; print(six.__version__)").await, "1.16.0\n");
    kernel.shutdown().await;
}

#[tokio::test]
async fn a_failed_install_says_what_uv_said() {
    let dir = tempfile::tempdir().unwrap();
    let venv = within(300, uv().await.ensure_venv(&dir.path().join("venv"), None, &[])).await.unwrap();
    let error =
        within(300, uv().await.install(&venv, &["this-package-does-not-exist-mcp-pyrepl==0.0.1".to_owned()]))
            .await
            .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("this-package-does-not-exist-mcp-pyrepl"), "{text}");
}

#[tokio::test]
async fn uv_is_installed_from_pypi_into_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let uv = within(300, mcp_pyrepl::venv::Uv::install_from_pypi(dir.path())).await.unwrap();
    assert!(uv.path().starts_with(dir.path()), "{}", uv.path().display());
    let version = std::process::Command::new(uv.path()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("uv "));
    // Once installed, it is found there again instead of being installed twice.
    let found = mcp_pyrepl::venv::Uv::locate(None, dir.path()).await.unwrap();
    if which_uv_on_path().is_none() {
        assert_eq!(found.path(), uv.path());
    }
}

fn which_uv_on_path() -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("uv")).find(|p| p.is_file())
}
