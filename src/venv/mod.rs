//! uv and virtual environments: finding or bootstrapping `uv`, creating a venv with ipykernel
//! and the base packages, installing into it.
//!
//! Owns every `uv` invocation. uv needs the caller's environment (certificates, proxies), so it
//! is passed through untouched. Knows nothing of kernels or sessions.
//!
//! Resolving packages against the index costs more than installing them from uv's cache (about
//! 0.55 s of a 0.7 s install of the base packages here), so a new venv reuses the versions the
//! last one with the same interpreter and packages resolved to, for a day: they are pinned in a
//! file and installed with `--offline`, falling back to a normal install when uv's cache no
//! longer has them. The bytecode a kernel compiles is shared the same way (`bytecode.rs`).

mod bytecode;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use sha2::Digest;
use tokio::process::Command;

use crate::atomic_file;
use crate::sandbox::Sandbox;
use crate::util::{SpawnError, WriteError};
use bytecode::BytecodeStore;

/// The packages a session's venv gets besides ipykernel.
pub const BASE_PACKAGES: &[&str] =
    &["numpy", "pandas", "matplotlib", "scipy", "scikit-learn", "seaborn", "plotly", "kaleido", "jinja2"];

/// What every venv that runs a kernel needs: ipykernel, and pip for `%pip install` in a cell
/// (uv's venvs have none of their own).
pub const KERNEL_PACKAGES: [&str; 2] = ["ipykernel", "pip"];

/// Where Linux distributions keep the system CA bundle (Debian/Ubuntu, Fedora/RHEL).
const SYSTEM_CA_BUNDLES: [&str; 2] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"];

/// Marker written into a venv once it is complete; holds what it was built with.
const READY_MARKER: &str = ".mcp-pyrepl-ready";

/// How long a resolution of a venv's packages is reused before the index is asked again.
const PINS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Errors finding uv or building venvs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VenvError {
    /// No uv on PATH and no Python to install it with.
    #[error(
        "`uv` is not on PATH and there is no `python3` to install it with; install uv (https://docs.astral.sh/uv/) or pass its path with `--uv`"
    )]
    NoPython,
    /// The uv path given does not exist.
    #[error("uv was given as `{}` but there is no such file", path.display())]
    UvMissing {
        /// The path given.
        path: PathBuf,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status})\n{stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A file or directory could not be written.
    #[error(transparent)]
    Io(#[from] WriteError),
}

/// The `uv` executable we use.
#[derive(Debug, Clone)]
pub struct Uv {
    path: PathBuf,
    /// Where the versions new venvs resolved to are pinned, one file per recipe.
    pins_dir: PathBuf,
    /// What confines the Python runs of ours in the venvs it builds (the bytecode compile).
    sandbox: Sandbox,
}

impl Uv {
    /// Finds uv: the `explicit` path (flag or environment) when given, else `uv` on PATH, else a
    /// copy installed earlier in `data_dir`, else installs one there from PyPI with
    /// `python3 -m pip install --target`.
    ///
    /// # Errors
    /// When an explicit path does not exist, or uv must be installed and cannot be.
    pub async fn locate(explicit: Option<&Path>, data_dir: &Path) -> Result<Uv, VenvError> {
        let path = if let Some(path) = explicit {
            if !path.exists() && which(path).is_none() {
                return Err(VenvError::UvMissing { path: path.to_owned() });
            }
            path.to_owned()
        } else if let Some(path) = which(Path::new("uv")) {
            path
        } else if Uv::installed_path(data_dir).exists() {
            Uv::installed_path(data_dir)
        } else {
            Uv::install_from_pypi(data_dir).await?
        };
        Ok(Uv { path, pins_dir: data_dir.join("venvs").join("pins"), sandbox: Sandbox::default() })
    }

    /// This uv, with the Python that runs in the venvs it builds to fill the bytecode store
    /// confined by `sandbox` as a kernel would be: that run imports the packages, and what it
    /// compiles every later venv of the set runs.
    pub fn with_sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = sandbox;
        self
    }

    fn installed_path(data_dir: &Path) -> PathBuf {
        data_dir.join("tools").join("uv").join("bin").join("uv")
    }

    /// Installs uv from PyPI into `data_dir` with `python3 -m pip install --target`; returns its
    /// path. Installs into a temporary sibling and renames it into place, so a crash never
    /// leaves half a uv.
    ///
    /// # Errors
    /// When there is no `python3`, or pip fails.
    pub async fn install_from_pypi(data_dir: &Path) -> Result<PathBuf, VenvError> {
        let python = which(Path::new("python3")).ok_or(VenvError::NoPython)?;
        let path = Uv::installed_path(data_dir);
        let install_dir = path.parent().and_then(Path::parent).expect("uv's path has two parents");
        let parent = install_dir.parent().expect("install dir has a parent");
        std::fs::create_dir_all(parent)
            .map_err(|source| VenvError::Io(WriteError { path: parent.to_owned(), source }))?;
        let staging = parent.join(format!(".uv-{}", uuid::Uuid::new_v4().simple()));
        tracing::info!(target = %install_dir.display(), "installing uv from PyPI");
        let mut pip = Command::new(python);
        pip.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
            .arg(&staging)
            .arg("uv");
        // As for uv: with a reduced environment, point pip at the platform's CA bundle.
        let cert_configured =
            ["PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"].iter().any(|v| std::env::var_os(v).is_some());
        if let Some(bundle) = SYSTEM_CA_BUNDLES.iter().map(Path::new).find(|p| p.is_file())
            && !cert_configured
        {
            pip.arg("--cert").arg(bundle);
        }
        if let Err(error) = run(pip).await {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
        match std::fs::rename(&staging, install_dir) {
            Ok(()) => Ok(path),
            // Another process got there first: theirs is as good as ours.
            Err(_) if path.exists() => {
                let _ = std::fs::remove_dir_all(&staging);
                Ok(path)
            }
            Err(source) => Err(VenvError::Io(WriteError { path: install_dir.to_owned(), source })),
        }
    }

    /// The executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a venv at `dir` with ipykernel and `packages`, using `python` (a version such as
    /// `3.13` or a path; uv's default when `None`).
    ///
    /// # Errors
    /// When uv fails; its stderr is in the error.
    pub async fn create_venv(
        &self,
        dir: &Path,
        python: Option<&str>,
        packages: &[String],
    ) -> Result<Venv, VenvError> {
        let venv = self.empty_venv(dir, python).await?;
        let mut all: Vec<String> = KERNEL_PACKAGES.map(str::to_owned).into();
        all.extend(packages.iter().cloned());
        let Some(pins) = self.pins_path(&venv, &all) else {
            self.install(&venv, &all).await?;
            return Ok(venv);
        };
        let installed = is_fresh(&pins)
            && match self.install_pinned(&venv, &pins).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::info!(%error, "the pinned versions are not all in uv's cache; resolving again");
                    false
                }
            };
        if !installed {
            self.install(&venv, &all).await?;
            self.pin(&venv, &pins).await;
        }
        self.share_bytecode(&venv, &pins, python, packages).await;
        Ok(venv)
    }

    /// `uv venv <dir>`: a venv with nothing installed.
    async fn empty_venv(&self, dir: &Path, python: Option<&str>) -> Result<Venv, VenvError> {
        let mut venv = self.command();
        venv.arg("venv").arg(dir);
        if let Some(python) = python {
            venv.arg("--python").arg(python);
        }
        run(venv).await?;
        Ok(Venv { dir: dir.to_owned() })
    }

    /// Installs exactly the versions pinned in `pins` into the empty `venv`, from uv's cache
    /// only.
    async fn install_pinned(&self, venv: &Venv, pins: &Path) -> Result<(), VenvError> {
        let mut offline = self.command();
        offline.args(["pip", "sync", "--offline", "--python"]).arg(venv.python()).arg(pins);
        run(offline).await.map(drop)
    }

    /// Gives `venv`, built from `pins` with `python` and `packages`, the bytecode its pinned
    /// set has compiled already; when none has been, has it compiled in the background. Best
    /// effort: without it a kernel compiles what it imports itself.
    async fn share_bytecode(&self, venv: &Venv, pins: &Path, python: Option<&str>, packages: &[String]) {
        let store = BytecodeStore::for_pins(pins);
        match store.link_into(venv).await {
            Ok(true) => {}
            Ok(false) => {
                let (uv, pins) = (self.clone(), pins.to_owned());
                let (python, packages) = (python.map(str::to_owned), packages.to_vec());
                tokio::spawn(async move {
                    if let Err(error) = store.fill(&uv, &pins, python.as_deref(), &packages).await {
                        tracing::info!(%error, "could not compile the bytecode to share between venvs");
                    }
                });
            }
            Err(error) => tracing::info!(%error, "could not link shared bytecode into a new venv"),
        }
    }

    /// Where the versions a venv like `venv` (same interpreter, same `requirements`) resolved to
    /// are pinned; `None` when its interpreter cannot be told from `pyvenv.cfg`.
    fn pins_path(&self, venv: &Venv, requirements: &[String]) -> Option<PathBuf> {
        let config = std::fs::read_to_string(venv.dir.join("pyvenv.cfg")).ok()?;
        let interpreter: Vec<&str> = config
            .lines()
            .filter(|line| ["home", "implementation", "version_info"].iter().any(|key| line.starts_with(key)))
            .collect();
        let recipe = format!("{}\n{}", interpreter.join("\n"), requirements.join("\n"));
        let digest = sha2::Sha256::digest(recipe.as_bytes());
        Some(self.pins_dir.join(format!("{}.txt", &hex::encode(digest)[..16])))
    }

    /// Pins what `venv` holds in `pins` for the next venv like it. A failure only costs the next
    /// venv a resolution, so it is logged.
    async fn pin(&self, venv: &Venv, pins: &Path) {
        let written = async {
            let frozen = self.freeze(venv).await?;
            std::fs::create_dir_all(&self.pins_dir)
                .map_err(|source| VenvError::Io(WriteError { path: self.pins_dir.clone(), source }))?;
            let frozen = frozen + "\n";
            if std::fs::read_to_string(pins).is_ok_and(|old| old == frozen) {
                // Touched, so that it counts as fresh for another day.
                return std::fs::File::options()
                    .append(true)
                    .open(pins)
                    .and_then(|file| file.set_modified(std::time::SystemTime::now()))
                    .map_err(|source| VenvError::Io(WriteError { path: pins.to_owned(), source }));
            }
            BytecodeStore::for_pins(pins).discard();
            atomic_file::replace(pins, frozen.as_bytes())
                .map_err(|error| VenvError::Io(WriteError { path: error.path, source: error.source }))
        };
        if let Err(error) = written.await {
            tracing::warn!(%error, "cannot pin the versions of a new venv");
        }
    }

    /// Returns the venv at `dir` if an earlier call built it with the same `python` and
    /// `packages`; builds it (replacing anything half-made there) otherwise. Safe to call from
    /// several processes at once: they take turns on a lock file.
    ///
    /// # Errors
    /// As [`Uv::create_venv`].
    pub async fn ensure_venv(
        &self,
        dir: &Path,
        python: Option<&str>,
        packages: &[String],
    ) -> Result<Venv, VenvError> {
        let recipe = format!("python={}\npackages={}\n", python.unwrap_or("default"), packages.join(" "));
        let marker = dir.join(READY_MARKER);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| VenvError::Io(WriteError { path, source })
        };
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let lock_path = dir.with_extension("lock");
        let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .expect("lock task does not panic")
            .map_err(io(&lock_path))?;

        if std::fs::read_to_string(&marker).is_ok_and(|built| built == recipe) {
            return Ok(Venv { dir: dir.to_owned() });
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
        }
        let venv = self.create_venv(dir, python, packages).await?;
        std::fs::write(&marker, recipe).map_err(io(&marker))?;
        drop(lock);
        Ok(venv)
    }

    /// `uv pip install --python <venv python> <requirements…>`; returns uv's report of what
    /// changed.
    ///
    /// # Errors
    /// When uv fails; its stderr is in the error.
    pub async fn install(&self, venv: &Venv, requirements: &[String]) -> Result<String, VenvError> {
        let mut install = self.command();
        install.args(["pip", "install", "--python"]).arg(venv.python()).args(requirements);
        let (stdout, stderr) = run(install).await?;
        // uv reports what it did on stderr.
        Ok([stdout, stderr].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("\n"))
    }

    /// `uv pip freeze` of `venv`: every installed package with its exact version.
    ///
    /// # Errors
    /// When uv fails.
    pub async fn freeze(&self, venv: &Venv) -> Result<String, VenvError> {
        let mut freeze = self.command();
        freeze.args(["pip", "freeze", "--python"]).arg(venv.python());
        Ok(run(freeze).await?.0)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.path);
        command.arg("--no-progress");
        // MCP clients often start servers with a reduced environment (the Python SDK keeps only
        // HOME, PATH, SHELL, TERM, USER, LOGNAME), which drops `SSL_CERT_FILE`. The platform's
        // certificate store is where such machines keep their CAs, so uv reads it unless the
        // caller chose otherwise. (`UV_NATIVE_TLS` is the older name of the same switch.)
        for switch in ["UV_SYSTEM_CERTS", "UV_NATIVE_TLS"] {
            if std::env::var_os(switch).is_none() {
                command.env(switch, "1");
            }
        }
        command
    }
}

/// A virtual environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// The venv in `dir`, built earlier.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Venv { dir: dir.into() }
    }

    /// The venv's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its interpreter, `<dir>/bin/python`.
    pub fn python(&self) -> PathBuf {
        self.dir.join("bin").join("python")
    }

    /// Where its packages are installed, `<dir>/lib/python3.X/site-packages`.
    ///
    /// # Errors
    /// When `<dir>/lib` cannot be read or holds no `python*` directory.
    pub fn site_packages(&self) -> std::io::Result<PathBuf> {
        let lib = self.dir.join("lib");
        for entry in std::fs::read_dir(&lib)? {
            let name = entry?.file_name();
            if name.to_string_lossy().starts_with("python") {
                return Ok(lib.join(name).join("site-packages"));
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no python* directory in `{}`", lib.display()),
        ))
    }
}

/// Python source that imports each module named by `packages` (package names, mapped to their
/// module: `scikit-learn` → `sklearn`), skipping those that fail, and leaves no name behind.
pub fn warm_up_code(packages: &[String]) -> String {
    let modules: Vec<String> = packages.iter().map(|p| format!("{:?}", import_name(p))).collect();
    format!(
        "def _mcp_pyrepl_warm(names):\n    import importlib\n    for name in names:\n        try:\n            \
         importlib.import_module(name)\n        except Exception:\n            pass\n\
         _mcp_pyrepl_warm([{}])\ndel _mcp_pyrepl_warm",
        modules.join(", ")
    )
}

/// A cell that installs `requirements` (each checked by [`validate_requirement`]) into the
/// environment of the kernel that runs it, with IPython's `%pip install`, and raises when pip
/// fails; imports see the new packages at once. For kernels in no venv of ours (a gateway's).
/// `%pip` goes through a shell: each requirement is single-quoted, and a validated requirement
/// holds no quote.
pub fn pip_install_code(requirements: &[String]) -> String {
    let quoted: Vec<String> = requirements.iter().map(|r| format!("'{}'", r.trim())).collect();
    format!(
        "%pip install --disable-pip-version-check --no-input {}\n\
         if _exit_code:\n    raise RuntimeError(f'pip install failed with exit code {{_exit_code}}')\n\
         __import__('importlib').invalidate_caches()",
        quoted.join(" ")
    )
}

/// The module to import for a package (its distribution name differs for a few); a dotted
/// module name is kept as it is.
fn import_name(package: &str) -> String {
    let name = package.split(['[', '=', '<', '>', '~', '!', ' ']).next().unwrap_or(package);
    if name.contains('.') {
        return name.to_owned();
    }
    match name.to_ascii_lowercase().as_str() {
        "scikit-learn" => "sklearn".to_owned(),
        "matplotlib" => "matplotlib.pyplot".to_owned(),
        other => other.replace('-', "_"),
    }
}

/// Whether `pins` exists and was written less than [`PINS_MAX_AGE`] ago.
fn is_fresh(pins: &Path) -> bool {
    let written = pins.metadata().and_then(|m| m.modified());
    written.is_ok_and(|at| at.elapsed().is_ok_and(|age| age < PINS_MAX_AGE))
}

/// Longest requirement string accepted.
const MAX_REQUIREMENT_LEN: usize = 200;

/// Checks that `requirement` is a plain PEP 508 requirement: a name, optional extras and
/// optional version specifiers (`pandas`, `requests[socks]>=2.31,<3`). Everything else that uv or
/// pip would accept is refused (options such as `--index-url=…` or `-e .`, paths, URLs, direct
/// references with `@`, environment markers), so a model cannot point an install anywhere but
/// the package index. No shell ever sees the string; this is about where packages come from.
///
/// # Errors
/// A sentence saying what is wrong with it.
pub fn validate_requirement(requirement: &str) -> Result<(), String> {
    let text = requirement.trim();
    if text.is_empty() {
        return Err("an empty requirement".into());
    }
    if text.len() > MAX_REQUIREMENT_LEN {
        return Err(format!("longer than {MAX_REQUIREMENT_LEN} characters"));
    }
    if text.starts_with('-') {
        return Err("options are not accepted, only package names with optional extras and versions".into());
    }
    let mut rest = text;
    let name_len = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
    let name = &rest[..name_len];
    if name.is_empty()
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err("it does not start with a package name (letters, digits, `.`, `_`, `-`)".into());
    }
    rest = rest[name_len..].trim_start();
    if let Some(extras) = rest.strip_prefix('[') {
        let end = extras.find(']').ok_or("an unclosed `[` of extras")?;
        for extra in extras[..end].split(',') {
            let extra = extra.trim();
            if extra.is_empty() || !extra.chars().all(is_name_char) {
                return Err(format!("`{extra}` is not an extra name"));
            }
        }
        rest = extras[end + 1..].trim_start();
    }
    if rest.is_empty() {
        return Ok(());
    }
    for specifier in rest.split(',') {
        let specifier = specifier.trim();
        let operator = ["===", "==", "!=", "~=", ">=", "<=", ">", "<"]
            .into_iter()
            .find(|op| specifier.starts_with(op))
            .ok_or_else(|| format!("`{specifier}` is not a version specifier such as `>=1.2` (URLs, paths, `@` references and markers are refused)"))?;
        let version = specifier[operator.len()..].trim();
        let version_ok =
            !version.is_empty() && version.chars().all(|c| c.is_ascii_alphanumeric() || ".*+!_-".contains(c));
        if !version_ok {
            return Err(format!("`{version}` is not a version"));
        }
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Runs `command` to completion; its stdout and stderr on success, an error with its stderr
/// otherwise.
async fn run(mut command: Command) -> Result<(String, String), VenvError> {
    let line = describe(&command);
    tracing::debug!(command = %line, "running");
    let output = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| VenvError::Spawn(SpawnError { command: line.clone(), source }))?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if !output.status.success() {
        return Err(VenvError::CommandFailed { command: line, status: output.status, stderr });
    }
    Ok((String::from_utf8_lossy(&output.stdout).trim().to_owned(), stderr))
}

fn describe(command: &Command) -> String {
    let command = command.as_std();
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The path of `program`: itself when it has a directory part, else the first match on PATH.
fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    crate::util::on_path(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_requirements_are_accepted() {
        for good in [
            "numpy",
            "scikit-learn",
            "requests[socks,security]>=2.31,<3",
            "pandas == 2.2.*",
            "zope.interface~=6.0",
            "a",
            "torch!=2.0.0",
        ] {
            assert_eq!(validate_requirement(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn hostile_requirements_are_refused_with_a_reason() {
        for bad in [
            "",
            "   ",
            "--index-url=https://evil.example/simple",
            "-r requirements.txt",
            "-e .",
            "file:///etc/passwd",
            "./local/package",
            "/abs/path.whl",
            "pkg; rm -rf ~",
            "git+https://github.com/x/y",
            "pkg @ https://evil.example/pkg.whl",
            "pkg[extra",
            "pkg>=",
            "pkg>=1.0; python_version < '3.12'",
            "-",
            ".hidden",
            "pkg$(whoami)",
            "pkg`id`",
            &"a".repeat(201),
        ] {
            let reason = validate_requirement(bad).expect_err(bad);
            assert!(!reason.is_empty());
        }
    }

    #[test]
    fn packages_map_to_their_module_and_dotted_modules_are_kept() {
        assert_eq!(import_name("scikit-learn>=1"), "sklearn");
        assert_eq!(import_name("Jinja2"), "jinja2");
        assert_eq!(import_name("typing-extensions"), "typing_extensions");
        assert_eq!(import_name("IPython.core.oinspect"), "IPython.core.oinspect");
    }

    #[test]
    fn which_finds_programs_on_path_and_rejects_missing_ones() {
        assert!(which(Path::new("sh")).is_some());
        assert!(which(Path::new("definitely-not-a-program-xyz")).is_none());
        assert!(which(Path::new("/bin/sh")).is_some());
        assert!(which(Path::new("/nonexistent/uv")).is_none());
    }

    #[tokio::test]
    async fn a_missing_explicit_uv_is_named_in_the_error() {
        let error = Uv::locate(Some(Path::new("/nonexistent/uv")), Path::new("/tmp")).await.unwrap_err();
        assert!(error.to_string().contains("/nonexistent/uv"), "{error}");
    }

    #[tokio::test]
    async fn a_failing_command_reports_its_stderr() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo broken >&2; exit 3"]);
        let error = run(command).await.unwrap_err();
        let text = error.to_string();
        assert!(text.contains("sh -c") && text.contains("broken") && text.contains('3'), "{text}");
    }
}
