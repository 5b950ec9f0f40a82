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
    let installed = within(300, mcp_pyrepl::venv::Uv::install_from_pypi(dir.path())).await.unwrap();
    assert!(installed.starts_with(dir.path()), "{}", installed.display());
    let version = std::process::Command::new(&installed).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("uv "));
    // Once installed, it is found there again instead of being installed twice.
    let found = mcp_pyrepl::venv::Uv::locate(None, dir.path()).await.unwrap();
    if which_uv_on_path().is_none() {
        assert_eq!(found.path(), installed);
    }
}

fn which_uv_on_path() -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("uv")).find(|p| p.is_file())
}

/// A new venv installs the versions the last venv like it resolved to, offline from uv's cache;
/// when the cache lacks them, or the pins are a day old, it resolves again and pins anew.
#[tokio::test]
async fn a_new_venv_reuses_the_last_resolution_of_its_packages() {
    let uv_path = uv().await.path().to_owned();
    let version_of_six = async |venv: &mcp_pyrepl::venv::Venv| {
        let frozen = uv().await.freeze(venv).await.unwrap();
        frozen.lines().find_map(|line| line.strip_prefix("six==")).unwrap().to_owned()
    };
    // Puts six 1.16.0 in uv's cache.
    let elsewhere = tempfile::tempdir().unwrap();
    let uv_elsewhere = mcp_pyrepl::venv::Uv::locate(Some(&uv_path), elsewhere.path()).await.unwrap();
    within(300, uv_elsewhere.create_venv(&elsewhere.path().join("old"), None, &["six==1.16.0".to_owned()]))
        .await
        .unwrap();

    let data = tempfile::tempdir().unwrap();
    let uv = mcp_pyrepl::venv::Uv::locate(Some(&uv_path), data.path()).await.unwrap();
    let create = async |name: &str| {
        within(300, uv.create_venv(&data.path().join(name), None, &["six".to_owned()])).await.unwrap()
    };
    let first = create("first").await;
    let latest = version_of_six(&first).await;
    assert_ne!(latest, "1.16.0");
    let pins_dir = data.path().join("venvs").join("pins");
    let pins: Vec<_> = std::fs::read_dir(&pins_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    assert_eq!(pins.len(), 1, "{pins:?}");
    let pins = &pins[0];
    assert!(std::fs::read_to_string(pins).unwrap().contains(&format!("six=={latest}")));

    let resolved = std::fs::read_to_string(pins).unwrap();
    let pin_six = |version: &str| {
        let text = resolved.replace(&format!("six=={latest}"), &format!("six=={version}"));
        std::fs::write(pins, text).unwrap();
    };

    pin_six("1.16.0");
    assert_eq!(version_of_six(&create("pinned").await).await, "1.16.0", "the pinned version, from the cache");

    pin_six("99.0");
    assert_eq!(version_of_six(&create("not-cached").await).await, latest, "resolved again");
    assert_eq!(std::fs::read_to_string(pins).unwrap(), resolved, "and pinned anew");

    pin_six("1.16.0");
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options().write(true).open(pins).unwrap().set_modified(two_days_ago).unwrap();
    assert_eq!(version_of_six(&create("stale").await).await, latest, "a day-old resolution is not reused");
}

/// The bytecode a kernel compiles in the first venv of a pinned set is compiled once, in the
/// background (outside that venv), and hard-linked into the next venvs of the set, where Python
/// accepts it as is.
#[tokio::test]
async fn new_venvs_share_the_bytecode_their_pinned_set_compiled() {
    use std::os::unix::fs::MetadataExt;
    let data = tempfile::tempdir().unwrap();
    let uv = mcp_pyrepl::venv::Uv::locate(Some(uv().await.path()), data.path()).await.unwrap();
    let create = async |name: &str| {
        within(300, uv.create_venv(&data.path().join(name), None, &["six".to_owned()])).await.unwrap()
    };
    create("first").await;
    let pins_dir = data.path().join("venvs").join("pins");
    let store = within(120, async {
        loop {
            let stores: Vec<_> = std::fs::read_dir(&pins_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "bytecode") && p.is_dir())
                .collect();
            if let [store] = stores.as_slice() {
                return store.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;

    let second = create("second").await;
    let site_packages = second.site_packages().unwrap();
    let pyc_in = |cache: std::path::PathBuf, module: &str| {
        std::fs::read_dir(&cache)
            .unwrap_or_else(|e| panic!("{}: {e}", cache.display()))
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{module}.cpython-")))
            .unwrap_or_else(|| panic!("no bytecode of {module} in {}", cache.display()))
    };
    let pyc_of = |dir: &std::path::Path, module: &str| pyc_in(dir.join("__pycache__"), module);
    let six = pyc_of(&site_packages, "six");
    let kernelapp = pyc_of(&site_packages.join("ipykernel"), "kernelapp");
    let inode = |path: &std::path::Path| std::fs::metadata(path).unwrap().ino();
    // The store is laid out as `PYTHONPYCACHEPREFIX` writes bytecode: beside the sources' places.
    assert_eq!(inode(&six), inode(&pyc_in(store.clone(), "six")), "linked from the store");
    let (six_before, kernelapp_before) = (inode(&six), inode(&kernelapp));

    let import = std::process::Command::new(second.python())
        .args(["-c", "import six, ipykernel.kernelapp"])
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .status()
        .unwrap();
    assert!(import.success());
    assert_eq!(
        (inode(&six), inode(&kernelapp)),
        (six_before, kernelapp_before),
        "Python did not recompile them"
    );
}
