//! Confining the kernels we start: the sandbox levels, the policy one kernel gets, and the
//! start-up probe that decides whether this machine can enforce them.
//!
//! A confined kernel is started as `mcp-pyrepl confine --policy <json> -- <kernel argv>`: our
//! own binary confines itself (a user namespace of its own, Landlock, and for `strict` a
//! network namespace of its own) and then execs the kernel, which keeps its pid and process group. `confine.rs` owns
//! that side; this module owns what goes into a [`Policy`] and when a kernel gets one. The
//! server itself, uv and `install_packages` are never confined (the compile run that fills the
//! shared bytecode store is, like a kernel); attached kernels are not ours to confine.

mod confine;
mod sockets;
mod view;

pub use confine::{ConfineArgs, ConfineError, run as confine};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How much a kernel we start is confined (`--sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Not at all: the kernel has every right of the server's user.
    Off,
    /// Writes only inside its session directory (never its venv), reads only the system, its
    /// interpreter, uv's cache, its session and the directories named readable; network as usual.
    Files,
    /// `files`, and no network at all (no TCP, UDP or DNS); the kernel's own ipc sockets work.
    Strict,
}

impl Level {
    /// Every level, in the order `--sandbox` lists them.
    pub const ALL: [Level; 3] = [Level::Off, Level::Files, Level::Strict];

    /// What the level confines, in a sentence (the help `--sandbox` shows for it).
    pub fn meaning(self) -> &'static str {
        match self {
            Level::Off => "Not at all: the kernel has every right of the server's user",
            Level::Files => {
                "Writes only inside its session directory (never its venv), reads only the system, its \
                 interpreter, uv's cache, its session and the directories named readable; network as usual"
            }
            Level::Strict => {
                "`files`, and no network at all (no TCP, UDP or DNS); the kernel's own ipc sockets work"
            }
        }
    }

    /// The level as `--sandbox` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Files => "files",
            Level::Strict => "strict",
        }
    }
}

/// What the sandbox is asked for (`--sandbox`, `--sandbox-read`, `--sandbox-write`), before
/// [`Sandbox::resolve`] checks that this machine can enforce it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxSettings {
    /// The level named, if one was: `None` means the default, `files`, which only warns when it
    /// cannot be enforced.
    pub level: Option<Level>,
    /// Directories confined kernels may read.
    pub read: Vec<PathBuf>,
    /// Directories confined kernels may read and write.
    pub write: Vec<PathBuf>,
}

impl SandboxSettings {
    /// The level asked for, `files` unless one was named.
    pub fn level(&self) -> Level {
        self.level.unwrap_or(Level::Files)
    }
}

/// The system directories every confined kernel may read and execute from (those that exist).
const SYSTEM_DIRS: [&str; 10] =
    ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys", "/dev"];

/// Besides the system directories: `/opt`, where some systems keep their interpreters.
const OPT_DIR: &str = "/opt";

/// Devices a confined kernel may write: `/dev/null`, and pseudo-terminals (IPython runs `%pip`
/// and `!commands` on one).
const DEVICES: [&str; 3] = ["/dev/null", "/dev/ptmx", "/dev/pts"];

/// Files no kernel may read even where a directory holding them is readable (and the server
/// runs as root): password hashes and private keys. Besides these, every `*_key` of
/// [`HOST_KEYS`].
const SECRETS: [&str; 6] = [
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/security/opasswd",
    "/etc/ssl/private",
];

/// The directory of the ssh host keys (`ssh_host_*_key`).
const HOST_KEYS: &str = "/etc/ssh";

/// What one confined kernel may touch: handed as JSON to `mcp-pyrepl confine --policy`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// Directories (or files) readable and executable, with everything below them.
    pub read: Vec<PathBuf>,
    /// Directories (or files) readable and writable, with everything below them.
    pub write: Vec<PathBuf>,
    /// Whether the kernel gets a network namespace of its own (no network at all) and may
    /// neither bind nor connect TCP ports.
    pub no_network: bool,
    /// Environment variables naming directories for the kernel's temporary files, caches and
    /// private installs: each is created, then set, before the kernel starts.
    pub scratch: BTreeMap<String, PathBuf>,
}

impl Policy {
    /// The policy `confine --probe` checks: the system readable, nothing writable.
    pub fn probe(strict: bool) -> Self {
        Policy { read: system_dirs(), write: Vec::new(), no_network: strict, scratch: BTreeMap::new() }
    }
}

/// How to start one kernel confined: our binary and the policy it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// The `mcp-pyrepl` binary that confines itself and execs the kernel.
    pub program: PathBuf,
    /// What the kernel may touch.
    pub policy: Policy,
}

impl Confinement {
    /// Lets `%pip install` (and `!pip install`) in the confined kernel install into `prefix`
    /// rather than into the venv at `venv_dir`, which it may only read: `prefix` is writable, pip
    /// is pointed at it (`PIP_PREFIX`) and Python at its site-packages (`PYTHONPATH`, made before
    /// the kernel starts, so a package installed there imports at once). Unchanged when the venv
    /// has no `site_packages` (then such an install is refused like any write to the venv).
    pub fn with_installs_into(
        mut self,
        prefix: &Path,
        venv_dir: &Path,
        site_packages: Option<&Path>,
    ) -> Self {
        let Some(site_packages) = site_packages else { return self };
        let Ok(relative) = site_packages.strip_prefix(venv_dir) else { return self };
        self.policy.write.push(prefix.to_owned());
        self.policy.scratch.insert("PIP_PREFIX".to_owned(), prefix.to_owned());
        self.policy.scratch.insert("PYTHONPATH".to_owned(), prefix.join(relative));
        self
    }

    /// The command line that runs `argv` under this confinement.
    pub fn wrap(&self, argv: &[String]) -> Vec<String> {
        let policy = serde_json::to_string(&self.policy).expect("a policy serialises");
        let mut wrapped = vec![self.program.to_string_lossy().into_owned(), "confine".to_owned()];
        wrapped.extend(["--policy".to_owned(), policy, "--".to_owned()]);
        wrapped.extend(argv.iter().cloned());
        wrapped
    }
}

/// Why the server refuses to start: an explicit level this machine cannot enforce.
#[derive(Debug, thiserror::Error)]
#[error(
    "`--sandbox {}` cannot be enforced on this machine: {reason}; pass `--sandbox off` to run \
     kernels unconfined",
    level.as_str()
)]
pub struct SandboxError {
    /// The level asked for.
    pub level: Level,
    /// What the probe said.
    pub reason: String,
}

/// The sandbox in force for the kernels a server (or `exec`) starts, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct Sandbox {
    level: Level,
    enforced: bool,
    program: PathBuf,
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
}

impl Default for Sandbox {
    /// No confinement: what a session manager built without [`Sandbox::resolve`] runs with.
    fn default() -> Self {
        Sandbox {
            level: Level::Off,
            enforced: false,
            program: PathBuf::new(),
            read: Vec::new(),
            write: Vec::new(),
        }
    }
}

impl Sandbox {
    /// The sandbox `settings` ask for, checked by running `<our binary> confine --probe`: a
    /// default level that cannot be enforced logs one warning and confines nothing.
    ///
    /// # Errors
    /// When a level named explicitly (flag or environment) cannot be enforced.
    pub async fn resolve(settings: &SandboxSettings) -> Result<Sandbox, SandboxError> {
        let level = settings.level();
        if level == Level::Off {
            return Ok(Sandbox::default());
        }
        let sandbox = |enforced, program| Sandbox {
            level,
            enforced,
            program,
            read: settings.read.clone(),
            write: settings.write.clone(),
        };
        match probe(level).await {
            Ok(program) => Ok(sandbox(true, program)),
            Err(reason) if settings.level.is_none() => {
                tracing::warn!(
                    "kernels run unconfined: the default `--sandbox files` cannot be enforced on this \
                     machine ({reason}); pass `--sandbox off` to silence this"
                );
                Ok(sandbox(false, PathBuf::new()))
            }
            Err(reason) => Err(SandboxError { level, reason }),
        }
    }

    /// The level asked for.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The directories named with `--sandbox-write`, which confined kernels may write.
    pub fn writable_dirs(&self) -> &[PathBuf] {
        &self.write
    }

    /// Whether kernels are confined (false for `off`, and for the default level where the
    /// machine cannot enforce it).
    pub fn is_enforced(&self) -> bool {
        self.enforced
    }

    /// How to confine a kernel (or a compile run of ours) that runs the interpreter of
    /// `venv_dir`, whose session keeps its files in `session_dir` (readable) and which may write
    /// only `writable` (its working and kernel directory) and the scratch directories made in
    /// `session_dir`; `None` when kernels are not confined. The venv is only readable: its files
    /// are hard links shared with uv's cache, the bytecode store and every other venv. The
    /// session's records (graph, outputs, `session.json`) stay unwritable: the server trusts
    /// what it reads back.
    pub fn confinement(
        &self,
        session_dir: &Path,
        writable: &[PathBuf],
        venv_dir: &Path,
    ) -> Option<Confinement> {
        if !self.enforced {
            return None;
        }
        let mut read = system_dirs();
        read.push(session_dir.to_owned());
        read.push(venv_dir.to_owned());
        read.extend(interpreter_prefix(venv_dir));
        read.extend(uv_cache_dir());
        read.extend(
            std::env::var_os("SSL_CERT_FILE").and_then(|file| Some(Path::new(&file).parent()?.to_owned())),
        );
        read.extend(self.read.iter().cloned());
        let (tmp, cache) = (session_dir.join("tmp"), session_dir.join("cache"));
        let mut write = writable.to_vec();
        write.extend([tmp.clone(), cache.clone()]);
        write.extend(DEVICES.iter().map(PathBuf::from));
        write.extend(self.write.iter().cloned());
        let scratch = BTreeMap::from([
            ("TMPDIR".to_owned(), tmp),
            ("XDG_CACHE_HOME".to_owned(), cache.clone()),
            ("MPLCONFIGDIR".to_owned(), cache.join("matplotlib")),
        ]);
        let policy = Policy { read, write, no_network: self.level == Level::Strict, scratch };
        Some(Confinement { program: self.program.clone(), policy })
    }
}

/// `paths` with the [`SECRETS`] and host keys cut out: a path holding one is replaced by its
/// entries (as they are now), recursively, without the secret ones.
pub(crate) fn without_secrets(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn is_secret(path: &Path) -> bool {
        SECRETS.iter().any(|secret| path == Path::new(secret))
            || (path.parent() == Some(Path::new(HOST_KEYS))
                && path.file_name().is_some_and(|name| name.to_string_lossy().ends_with("_key")))
    }
    fn split(path: &Path, into: &mut Vec<PathBuf>) {
        if is_secret(path) {
            return;
        }
        let holds_secret =
            SECRETS.iter().chain([&HOST_KEYS]).any(|secret| Path::new(secret).starts_with(path));
        match std::fs::read_dir(path) {
            Ok(entries) if holds_secret => entries.flatten().for_each(|entry| split(&entry.path(), into)),
            _ => into.push(path.to_owned()),
        }
    }
    let mut cut = Vec::new();
    paths.iter().for_each(|path| split(path, &mut cut));
    cut
}

fn system_dirs() -> Vec<PathBuf> {
    SYSTEM_DIRS.iter().chain([&OPT_DIR]).map(PathBuf::from).filter(|dir| dir.exists()).collect()
}

/// The prefix of the interpreter a venv was made from: the parent of `home` in its
/// `pyvenv.cfg` (`home = /root/.pyenv/versions/3.13.0/bin`), canonicalized.
fn interpreter_prefix(venv_dir: &Path) -> Option<PathBuf> {
    let config = std::fs::read_to_string(venv_dir.join("pyvenv.cfg")).ok()?;
    let home = config.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "home").then(|| PathBuf::from(value.trim()))
    })?;
    home.parent()?.canonicalize().ok()
}

/// uv's cache: `$UV_CACHE_DIR`, else `$XDG_CACHE_HOME/uv`, else `~/.cache/uv`.
fn uv_cache_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    var("UV_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|cache| cache.join("uv")))
        .or_else(|| var("HOME").map(|home| home.join(".cache/uv")))
}

/// Runs `<our binary> confine --probe` at `level`: our binary when the confinement works, else
/// why not.
async fn probe(level: Level) -> Result<PathBuf, String> {
    let program = std::env::current_exe().map_err(|error| format!("cannot find our own binary: {error}"))?;
    let mut command = tokio::process::Command::new(&program);
    command.args(["confine", "--probe"]);
    if level == Level::Strict {
        command.arg("--strict");
    }
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|error| format!("cannot run `{} confine --probe`: {error}", program.display()))?;
    if output.status.success() {
        return Ok(program);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = stderr.trim().trim_start_matches("error: ");
    Err(if said.is_empty() { format!("the probe {}", output.status) } else { said.replace('\n', " ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enforced() -> Sandbox {
        Sandbox {
            level: Level::Strict,
            enforced: true,
            program: "/bin/mcp-pyrepl".into(),
            read: vec!["/data/in".into()],
            write: vec!["/data/out".into()],
        }
    }

    #[tokio::test]
    async fn a_default_level_that_cannot_be_enforced_confines_nothing_and_an_explicit_one_is_refused() {
        // Our own binary is this test binary here, which has no `confine` command: its probe
        // fails as on a machine without Landlock or user namespaces.
        let settings = |level| SandboxSettings { level, read: Vec::new(), write: Vec::new() };
        let default = Sandbox::resolve(&settings(None)).await.unwrap();
        assert_eq!((default.level(), default.is_enforced()), (Level::Files, false));
        assert_eq!(default.confinement(Path::new("/s/1"), &[], Path::new("/s/1/venv")), None);
        let refused = Sandbox::resolve(&settings(Some(Level::Strict))).await.unwrap_err();
        assert_eq!(refused.level, Level::Strict);
        assert!(refused.to_string().starts_with("`--sandbox strict` cannot be enforced"), "{refused}");
        let off = Sandbox::resolve(&settings(Some(Level::Off))).await.unwrap();
        assert_eq!((off.level(), off.is_enforced()), (Level::Off, false));
    }

    #[test]
    fn a_policy_writes_only_the_working_dirs_and_the_named_ones_never_the_records_nor_the_venv() {
        let writable = ["/s/1/work".into(), "/s/1/kernel".into()];
        let policy =
            enforced().confinement(Path::new("/s/1"), &writable, Path::new("/s/1/venv")).unwrap().policy;
        assert_eq!(
            policy.write[..4],
            ["/s/1/work", "/s/1/kernel", "/s/1/tmp", "/s/1/cache"].map(PathBuf::from)
        );
        assert!(!policy.write.contains(&PathBuf::from("/s/1")), "the session's records are writable");
        assert!(policy.write.iter().all(|dir| !dir.starts_with("/s/1/venv")), "the venv is writable");
        assert!(policy.read.contains(&PathBuf::from("/s/1/venv")));
        assert!(policy.read.contains(&PathBuf::from("/s/1")));
        assert_eq!(policy.write.last().unwrap(), Path::new("/data/out"));
        assert!(policy.read.contains(&PathBuf::from("/usr")));
        assert!(policy.read.contains(&PathBuf::from("/data/in")));
        assert!(policy.no_network);
        assert_eq!(policy.scratch["TMPDIR"], Path::new("/s/1/tmp"));
        assert!(policy.scratch.values().all(|dir| dir.starts_with("/s/1")));
    }

    #[test]
    fn the_interpreter_prefix_is_the_parent_of_the_venvs_home() {
        let venv = tempfile::tempdir().unwrap();
        let prefix = tempfile::tempdir().unwrap();
        let home = prefix.path().join("bin");
        std::fs::write(
            venv.path().join("pyvenv.cfg"),
            format!("home = {}\nversion_info = 3.13.0\n", home.display()),
        )
        .unwrap();
        assert_eq!(interpreter_prefix(venv.path()), Some(prefix.path().canonicalize().unwrap()));
        assert_eq!(interpreter_prefix(prefix.path()), None, "no pyvenv.cfg");
    }

    #[test]
    fn private_installs_go_to_a_writable_prefix_that_python_searches() {
        let session = tempfile::tempdir().unwrap();
        let venv = session.path().join("venv");
        std::fs::create_dir_all(venv.join("lib/python3.12/site-packages")).unwrap();
        let packages = session.path().join("packages");
        let confinement = enforced().confinement(session.path(), &[], &venv).unwrap().with_installs_into(
            &packages,
            &venv,
            Some(&venv.join("lib/python3.12/site-packages")),
        );
        let policy = confinement.policy;
        assert!(policy.write.contains(&packages));
        assert!(policy.write.iter().all(|dir| !dir.starts_with(&venv)), "the venv is writable");
        assert_eq!(policy.scratch["PIP_PREFIX"], packages);
        assert_eq!(policy.scratch["PYTHONPATH"], packages.join("lib/python3.12/site-packages"));
        let without = enforced().confinement(session.path(), &[], Path::new("/no/venv")).unwrap();
        assert_eq!(without.clone().with_installs_into(&packages, Path::new("/no/venv"), None), without);
    }

    #[test]
    fn secrets_are_cut_out_of_a_readable_etc() {
        let cut = without_secrets(&["/etc".into(), "/usr".into()]);
        assert!(cut.contains(&PathBuf::from("/usr")));
        assert!(cut.contains(&PathBuf::from("/etc/passwd")), "{cut:?}");
        assert!(!cut.contains(&PathBuf::from("/etc")));
        assert!(cut.iter().all(|path| !SECRETS.iter().any(|secret| path.starts_with(secret))), "{cut:?}");
        assert!(
            cut.iter().all(|path| !(path.starts_with(HOST_KEYS) && path.to_string_lossy().ends_with("_key")))
        );
    }

    #[test]
    fn unenforced_sandboxes_confine_nothing() {
        assert_eq!(Sandbox::default().confinement(Path::new("/s"), &[], Path::new("/v")), None);
    }

    #[test]
    fn the_wrapped_command_carries_the_policy_and_the_argv() {
        let confinement = enforced()
            .confinement(
                Path::new("/s/1"),
                &["/s/1/work".into(), "/s/1/kernel".into()],
                Path::new("/s/1/venv"),
            )
            .unwrap();
        let wrapped = confinement.wrap(&["python".to_owned(), "-m".to_owned()]);
        assert_eq!(wrapped[..3], ["/bin/mcp-pyrepl", "confine", "--policy"]);
        assert_eq!(serde_json::from_str::<Policy>(&wrapped[3]).unwrap(), confinement.policy);
        assert_eq!(wrapped[4..], ["--", "python", "-m"]);
    }
}
