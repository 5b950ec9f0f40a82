//! Starting and stopping a kernel process from the kernelspec shipped in `kernelspec/`.
//!
//! Owns the process side of a kernel we start: the files it needs in its private directory
//! (connection file, IPython startup file, log), the process in its own process group, the
//! task that waits on it and reports its exit, and the signals sent to its group. Knows nothing
//! of the messages it speaks (`actor.rs` does).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::sync::watch;

use super::{Death, KernelError};
use crate::jupyter::connection::{ConnectionInfo, Transport};
use crate::private_dir;
use crate::sandbox::Confinement;
use crate::util::{SpawnError, WriteError};

/// The kernelspec template: argv and env with `{python}`, `{connection_file}` and `{ipython_dir}`.
const KERNEL_JSON: &str = include_str!("../../kernelspec/kernel.json");
/// The IPython startup file that defines `display_figure(fig)`; run as a kernel's first code
/// where we cannot write its profile (a gateway's kernels).
pub const STARTUP_PY: &str = include_str!("../../kernelspec/startup.py");

/// How many bytes of the kernel log a start-up error shows.
const LOG_TAIL_BYTES: u64 = 4000;

#[derive(Debug, Deserialize)]
struct KernelSpec {
    argv: Vec<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    interrupt_mode: InterruptMode,
    metadata: KernelSpecMetadata,
}

#[derive(Debug, Deserialize)]
struct KernelSpecMetadata {
    startup_file: String,
}

/// How a kernel wants to be interrupted (`interrupt_mode` in kernel.json).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterruptMode {
    /// SIGINT to the process group.
    #[default]
    Signal,
    /// `interrupt_request` on the control channel.
    Message,
}

fn kernel_spec() -> KernelSpec {
    serde_json::from_str(KERNEL_JSON).expect("kernelspec/kernel.json is valid (checked by a test)")
}

/// What to start: which interpreter, where its files go, which transport.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The venv's `python` (must have ipykernel installed).
    pub python: PathBuf,
    /// A directory of the kernel's own, created with mode 0700: connection files, ipc sockets,
    /// log and IPython profile live here. Kernels may share one (a restart does).
    pub dir: PathBuf,
    /// The kernel's working directory, created when missing (never emptied); `dir` when `None`.
    pub working_dir: Option<PathBuf>,
    /// `Ipc` (the default: sockets in `dir`) or `Tcp` on 127.0.0.1.
    pub transport: Transport,
    /// How long the kernel may take to answer its first request.
    pub startup_timeout: Duration,
    /// Address-space limit (`RLIMIT_AS`) of the kernel, in bytes.
    pub memory_limit: Option<u64>,
    /// CPU-time limit (`RLIMIT_CPU`) of the kernel, in seconds.
    pub cpu_limit: Option<u64>,
    /// The sandbox the kernel starts in (our binary confines itself, then execs the kernel's
    /// argv), or none.
    pub confinement: Option<Confinement>,
    /// The Chromium or Chrome the kernel renders plotly figures with ([`super::browser`]);
    /// none: figures come back as text summaries.
    pub browser: Option<PathBuf>,
}

impl LaunchSpec {
    /// A spec for `python` with its files in `dir`, over ipc, with a 60 s start-up limit.
    pub fn new(python: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        LaunchSpec {
            python: python.into(),
            dir: dir.into(),
            working_dir: None,
            transport: Transport::Ipc,
            startup_timeout: Duration::from_secs(60),
            memory_limit: None,
            cpu_limit: None,
            confinement: None,
            browser: None,
        }
    }

    /// The same spec with plotly figures rendered by `browser` (none: as text summaries). A
    /// confined kernel may also read the directory the browser is installed in.
    pub fn with_browser(mut self, browser: Option<PathBuf>) -> Self {
        self.browser = browser;
        self
    }

    /// The same spec with the kernel started under `confinement` (none: unconfined).
    pub fn with_confinement(mut self, confinement: Option<Confinement>) -> Self {
        self.confinement = confinement;
        self
    }

    /// The same spec with resource limits on the kernel process (and what it starts).
    pub fn with_resource_limits(mut self, memory_bytes: Option<u64>, cpu_seconds: Option<u64>) -> Self {
        self.memory_limit = memory_bytes;
        self.cpu_limit = cpu_seconds;
        self
    }

    /// The same spec with the kernel started in `dir` rather than in its own files' directory.
    pub fn with_working_dir(mut self, dir: PathBuf) -> Self {
        self.working_dir = Some(dir);
        self
    }

    /// The same spec with another transport.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The file the kernel's stdout and stderr go to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("kernel.log")
    }
}

/// A kernel process we started, in its own process group.
///
/// Dropping it kills the group and removes the connection file and sockets, so no kernel
/// outlives its owner.
#[derive(Debug)]
pub struct KernelProcess {
    pid: Pid,
    connection: ConnectionInfo,
    connection_file: PathBuf,
    /// The connection file named on the process's command line: its own, or for a fork the
    /// one of the kernel first launched (a fork keeps its parent's command line).
    command_file: String,
    pid_file: PathBuf,
    log_path: PathBuf,
    interrupt_mode: InterruptMode,
    exit: watch::Receiver<Option<Death>>,
}

impl KernelProcess {
    /// Writes the kernel's files and starts it. Returns once the process is running and has
    /// bound its sockets, not once it answers (the caller's handshake does that).
    ///
    /// # Errors
    /// When the directory or files cannot be written, the interpreter cannot be run, or the
    /// kernel exits or fails to bind before `spec.startup_timeout`; the error then carries the
    /// tail of the kernel's log.
    pub async fn start(spec: &LaunchSpec) -> Result<KernelProcess, KernelError> {
        let kernel_spec = kernel_spec();
        private_dir::create(&spec.dir)
            .map_err(|source| KernelError::Io(WriteError { path: spec.dir.clone(), source }))?;
        let working_dir = spec.working_dir.as_ref().unwrap_or(&spec.dir);
        private_dir::create(working_dir)
            .map_err(|source| KernelError::Io(WriteError { path: working_dir.clone(), source }))?;
        // Each start gets its own file names, so a kernel being replaced cannot remove or hold
        // the files of the one replacing it.
        let instance = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let connection = match spec.transport {
            Transport::Ipc => ConnectionInfo::ipc(&spec.dir.join(instance))?,
            Transport::Tcp => ConnectionInfo::tcp(std::net::Ipv4Addr::LOCALHOST)?,
        };
        let connection_file = spec.dir.join(format!("kernel-{instance}.json"));
        connection.write(&connection_file)?;

        let ipython_dir = spec.dir.join("ipython");
        let startup_file = ipython_dir.join(&kernel_spec.metadata.startup_file);
        write_file(&startup_file, STARTUP_PY)?;

        let substitute = |s: &str| {
            s.replace("{python}", &spec.python.to_string_lossy())
                .replace("{connection_file}", &connection_file.to_string_lossy())
                .replace("{ipython_dir}", &ipython_dir.to_string_lossy())
        };
        let argv: Vec<String> = kernel_spec.argv.iter().map(|a| substitute(a)).collect();
        // Confined, our binary runs first and execs the kernel in place: same pid, same group.
        let argv = match &spec.confinement {
            Some(confinement) => {
                let mut confinement = confinement.clone();
                confinement.policy.read.extend(spec.browser.as_deref().and_then(super::browser::install_dir));
                confinement.wrap(&argv)
            }
            None => argv,
        };
        let log_path = spec.log_path();
        // Appended to, so a restart keeps the log of the kernel before it.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| KernelError::Io(WriteError { path: log_path.clone(), source }))?;
        let log_err = log
            .try_clone()
            .map_err(|source| KernelError::Io(WriteError { path: log_path.clone(), source }))?;

        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .envs(kernel_spec.env.iter().map(|(k, v)| (k, substitute(v))))
            .env("JPY_PARENT_PID", std::process::id().to_string())
            // The caller's environment is passed through (certificates, proxies), except the
            // switch that stops bytecode caches being written: with it every kernel start pays
            // the full compile of numpy, pandas and matplotlib again.
            .env_remove("PYTHONDONTWRITEBYTECODE")
            .current_dir(working_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0)
            .kill_on_drop(true);
        remove_server_env(&mut command);
        command.env(super::browser::BROWSER_ENV, spec.browser.as_deref().unwrap_or(Path::new("")));
        set_resource_limits(&mut command, spec.memory_limit, spec.cpu_limit);
        let mut child = command
            .spawn()
            .map_err(|source| KernelError::Spawn(SpawnError { command: argv.join(" "), source }))?;
        let pid = Pid::from_raw(child.id().expect("a just-spawned child has a pid") as i32);
        let command_file = format!("kernel-{instance}.json");
        let pid_file = write_pid_record(&spec.dir, instance, pid)?;

        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let death = match child.wait().await {
                Ok(status) => match (status.code(), status.signal()) {
                    (Some(code), _) => Death::Exited { code },
                    (None, Some(signal)) => Death::Signalled { signal },
                    (None, None) => Death::Exited { code: -1 },
                },
                Err(error) => Death::WaitFailed { error: error.to_string() },
            };
            exit_tx.send_replace(Some(death));
        });

        let process = KernelProcess {
            pid,
            connection,
            connection_file,
            command_file,
            pid_file,
            log_path,
            interrupt_mode: kernel_spec.interrupt_mode,
            exit,
        };
        process.wait_for_sockets(spec.startup_timeout).await?;
        // Listening, a confined kernel is in its namespaces: recorded for a leaderless group.
        write_pid_record(&spec.dir, instance, pid)?;
        Ok(process)
    }

    /// Takes charge of `pid`, a copy forked from the kernel `origin` (a snapshot) that listens
    /// as `connection` says: an orphan the server adopts (`reaper.rs`), in a process group of
    /// its own, sharing its origin's log. The pid file the copy wrote for us in its directory
    /// is replaced by a record of ours.
    ///
    /// # Errors
    /// When its pid record cannot be written.
    pub(crate) fn adopt(
        origin: &Lineage,
        pid: i32,
        instance: &str,
        connection: ConnectionInfo,
        connection_file: PathBuf,
    ) -> Result<KernelProcess, KernelError> {
        let pid = Pid::from_raw(pid);
        let dir = connection_file.parent().map(Path::to_owned).unwrap_or_default();
        let pid_file = write_pid_record(&dir, instance, pid)?;
        let _ = std::fs::remove_file(dir.join(format!("kernel-{instance}.pid")));
        let (exit_tx, exit) = watch::channel(None);
        super::reaper::watch_exit(pid, exit_tx);
        Ok(KernelProcess {
            pid,
            connection,
            connection_file,
            command_file: origin.command_file.clone(),
            pid_file,
            log_path: origin.log_path.clone(),
            interrupt_mode: origin.interrupt_mode,
            exit,
        })
    }

    /// What a fork of this kernel inherits.
    pub(crate) fn lineage(&self) -> Lineage {
        Lineage {
            command_file: self.command_file.clone(),
            log_path: self.log_path.clone(),
            interrupt_mode: self.interrupt_mode,
        }
    }

    /// Waits until the kernel has bound all five sockets, it exits, or `timeout` passes.
    async fn wait_for_sockets(&self, timeout: Duration) -> Result<(), KernelError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut exit = self.exit.clone();
        loop {
            if let Some(death) = exit.borrow_and_update().clone() {
                return Err(self.start_failed(format!("the kernel {death} during start-up")));
            }
            if self.sockets_bound().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.start_failed(format!(
                    "the kernel did not bind its sockets within {}s",
                    timeout.as_secs_f32()
                )));
            }
            // Poll often: a bare kernel is up in about 0.2 s and every millisecond counts.
            let _ = tokio::time::timeout(Duration::from_millis(5), exit.changed()).await;
        }
    }

    async fn sockets_bound(&self) -> bool {
        match self.connection.transport {
            Transport::Ipc => ConnectionInfo::CHANNELS.iter().all(|c| self.connection.ipc_path(*c).exists()),
            Transport::Tcp => {
                for channel in ConnectionInfo::CHANNELS {
                    let address = (self.connection.ip.as_str(), self.connection.port(channel));
                    if tokio::net::TcpStream::connect(address).await.is_err() {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// A start-up error carrying the tail of the kernel's log.
    pub(crate) fn start_failed(&self, reason: String) -> KernelError {
        KernelError::StartFailed {
            reason,
            log: self.log_path.clone(),
            log_tail: read_tail(&self.log_path, LOG_TAIL_BYTES),
        }
    }

    /// The connection the kernel was started with.
    pub fn connection(&self) -> &ConnectionInfo {
        &self.connection
    }

    /// The connection file written for the kernel.
    pub fn connection_file(&self) -> &Path {
        &self.connection_file
    }

    /// The exit watch: `Some(cause)` once the process has exited.
    pub fn exit(&self) -> watch::Receiver<Option<Death>> {
        self.exit.clone()
    }

    /// How the kernelspec wants interrupts delivered.
    pub fn interrupt_mode(&self) -> InterruptMode {
        self.interrupt_mode
    }

    /// The process group id (the kernel's pid).
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Whether the process is still running: its exit not seen yet, and no zombie or gone in
    /// `/proc` either (a killed kernel is so before its exit is seen).
    pub fn is_running(&self) -> bool {
        self.exit.borrow().is_none() && super::reaper::process_lives(self.pid)
    }

    /// Sends `signal` to the kernel's whole process group. A group that is already gone is not
    /// an error.
    pub fn signal_group(&self, signal: Signal) {
        match killpg(self.pid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(error) => tracing::warn!(pid = self.pid.as_raw(), ?signal, %error, "cannot signal kernel"),
        }
    }

    /// Waits up to `timeout` for the process to exit; whether it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        let mut exit = self.exit.clone();
        tokio::time::timeout(timeout, exit.wait_for(Option::is_some)).await.is_ok()
    }

    /// Stops the process for good: SIGTERM to the group, a bounded wait, then SIGKILL to whatever
    /// of the group is left (user code may have started children of its own).
    pub async fn terminate(&self, grace: Duration) {
        if self.is_running() {
            self.signal_group(Signal::SIGTERM);
            self.wait_exit(grace).await;
        }
        self.kill(grace).await;
    }

    /// Kills the process group at once (SIGKILL), waiting up to `timeout` until no process of
    /// it is left.
    pub async fn kill(&self, timeout: Duration) {
        self.signal_group(Signal::SIGKILL);
        self.wait_exit(timeout).await;
        // Wait (bounded) until the rest of the group has been reaped, so that "stopped" means
        // no process of the kernel is left.
        let deadline = tokio::time::Instant::now() + timeout;
        while self.group_exists() && tokio::time::Instant::now() < deadline {
            // Adopted by the server (a child subreaper), they are its zombies to reap.
            super::reaper::reap_group(self.pid);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn group_exists(&self) -> bool {
        killpg(self.pid, None).is_ok()
    }
}

impl Drop for KernelProcess {
    fn drop(&mut self) {
        self.signal_group(Signal::SIGKILL);
        let _ = std::fs::remove_file(&self.connection_file);
        let _ = std::fs::remove_file(&self.pid_file);
        remove_stale_sockets(&self.connection);
    }
}

/// What a forked kernel inherits from the kernel it was forked from.
#[derive(Debug, Clone)]
pub(crate) struct Lineage {
    command_file: String,
    log_path: PathBuf,
    interrupt_mode: InterruptMode,
}

impl Lineage {
    /// The connection file the command line of every kernel of this lineage names.
    pub(crate) fn command_file(&self) -> &str {
        &self.command_file
    }
}

/// Who started a kernel, so that a server started after a crash can tell orphans from kernels
/// of a server still running, and prove that a pid still names the process we started.
///
/// Written by the server only, in the kernel directory's records directory
/// ([`records_dir`]), which no kernel may write: a kernel can write its own directory, so
/// anything there could name any process on the machine.
#[derive(Debug, PartialEq, serde::Serialize, Deserialize)]
struct PidRecord {
    /// The kernel's pid, which is also its process group id.
    kernel: i32,
    /// The pid of the server that started it.
    server: i32,
    /// When the kernel started, in clock ticks after boot (`/proc/<pid>/stat`), and the boot
    /// it started in: a pid reused since names another start.
    started: Start,
    /// The kernel's user namespace (`user:[…]`), when it has one of its own (a confined
    /// kernel): what proves the processes of its group ours once it has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

/// When a process started: its boot's id and the clock tick it started at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
struct Start {
    boot: String,
    tick: u64,
}

impl Start {
    /// The start of process `pid`; `None` when there is no such process.
    fn of(pid: i32) -> Option<Start> {
        Some(Stat::of(pid)?.start)
    }
}

/// What the server reads of a process to prove it one of its kernels.
struct Stat {
    group: i32,
    start: Start,
}

impl Stat {
    fn of(pid: i32) -> Option<Stat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields 5 and 22; the command name (field 2) is in parentheses and may hold any byte.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let group = fields.get(2)?.parse().ok()?;
        let tick = fields.get(19)?.parse().ok()?;
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Some(Stat { group, start: Start { boot: boot.trim().to_owned(), tick } })
    }
}

/// The user namespace of `pid`, when it is not the server's own.
fn own_namespace(pid: i32) -> Option<String> {
    let of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let namespace = of(&pid.to_string())?;
    (Some(&namespace) != of("self").as_ref()).then(|| namespace.to_string_lossy().into_owned())
}

/// The processes of the group `record.kernel` whose leader has exited that the record proves
/// ours: in the kernel's own user namespace, started since it, in the same boot.
fn proven_members(record: &PidRecord) -> Vec<Pid> {
    let Some(namespace) = &record.namespace else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            Stat::of(pid).is_some_and(|stat| {
                stat.group == record.kernel
                    && stat.start.boot == record.started.boot
                    && stat.start.tick >= record.started.tick
            }) && own_namespace(pid).as_ref() == Some(namespace)
        })
        .map(Pid::from_raw)
        .collect()
}

/// Where the pid records of the kernels with their files in `kernel_dir` are kept: beside it,
/// `<kernel dir>.pids`, out of reach of a kernel that writes only its own directory.
pub fn records_dir(kernel_dir: &Path) -> PathBuf {
    let name = kernel_dir.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    kernel_dir.with_file_name(format!("{name}.pids"))
}

/// Writes the record `kernel-<instance>.pid` of the kernel `pid` of this server, whose files are
/// in `kernel_dir`; returns its path.
fn write_pid_record(kernel_dir: &Path, instance: &str, pid: Pid) -> Result<PathBuf, KernelError> {
    let dir = records_dir(kernel_dir);
    private_dir::create(&dir).map_err(|source| KernelError::Io(WriteError { path: dir.clone(), source }))?;
    let pid_file = dir.join(format!("kernel-{instance}.pid"));
    // A process gone already has no start: its record never proves anything.
    let started = Start::of(pid.as_raw()).unwrap_or(Start { boot: String::new(), tick: 0 });
    let namespace = own_namespace(pid.as_raw());
    let record = PidRecord { kernel: pid.as_raw(), server: std::process::id() as i32, started, namespace };
    std::fs::write(&pid_file, serde_json::to_vec(&record).expect("pid record serialises"))
        .map_err(|source| KernelError::Io(WriteError { path: pid_file.clone(), source }))?;
    Ok(pid_file)
}

/// Cleans a kernel directory after a server crash: kills the process groups of kernels whose
/// server is gone (user code may have started children that outlived the kernel), and removes
/// their connection files, sockets and pid records. Kernels of a server still running are
/// left alone, and so is every process whose record does not prove it ours: a group is killed
/// while its leader is the process recorded, started at the recorded time; once the leader
/// has exited, only the processes of its group in its own user namespace are (a confined
/// kernel's; an unconfined kernel's leaderless group is left alone). Returns how many process
/// groups were killed, once they are gone (or a second has passed).
pub async fn stop_left_behind(dir: &Path) -> usize {
    // Pid files in the kernel directory itself are the kernels' to write: never acted on.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".pid") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(records_dir(dir)) else { return 0 };
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(instance) = name.strip_prefix("kernel-").and_then(|n| n.strip_suffix(".pid")) else {
            continue;
        };
        let Ok(record) = std::fs::read(entry.path())
            .map_err(|_| ())
            .and_then(|bytes| serde_json::from_slice::<PidRecord>(&bytes).map_err(|_| ()))
        else {
            continue;
        };
        if is_running_server(record.server) {
            continue;
        }
        let group = Pid::from_raw(record.kernel);
        if Start::of(record.kernel).is_none_or(|start| start != record.started) {
            // The kernel exited (its server gone, it does) and may have left processes.
            let members = proven_members(&record);
            if !members.is_empty() {
                tracing::info!(pid = record.kernel, "killing what an exited orphaned kernel left running");
                for pid in members {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                }
                killed.push(group);
            }
        } else if killpg(group, None).is_ok() {
            tracing::info!(pid = record.kernel, "killing the process group of an orphaned kernel");
            let _ = killpg(group, Signal::SIGKILL);
            killed.push(group);
        }
        let _ = std::fs::remove_file(entry.path());
        let connection_file = format!("kernel-{instance}.json");
        // The sockets the connection file names (a fork's carry its origin's prefix), as long
        // as they are in this directory: the kernel could have written anything there.
        let written = ConnectionInfo::read(&dir.join(&connection_file))
            .ok()
            .filter(|connection| Path::new(&connection.ip).parent() == Some(dir));
        let _ = std::fs::remove_file(dir.join(&connection_file));
        // What a fork's copy writes on its way to listening.
        for unfinished in ["part", "tmp", "failed"] {
            let _ = std::fs::remove_file(dir.join(format!("{connection_file}.{unfinished}")));
        }
        if let Some(connection) = written.or_else(|| ConnectionInfo::ipc(&dir.join(instance)).ok()) {
            remove_stale_sockets(&connection);
        }
    }
    // A killed process is gone only once it has been scheduled to die: wait (bounded) for
    // that, so that what the caller does next finds nothing of the old kernels running.
    let deadline = tokio::time::Instant::now() + ORPHAN_EXIT_WAIT;
    while killed.iter().any(|&group| killpg(group, None).is_ok()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    killed.len()
}

/// Whether the command line of process `pid` names the kernel connection file `command_file`
/// (as every kernel of ours and its forks do); `None` when there is no such process. A pid
/// read from a file a kernel can write is acted on only when this says yes.
pub(crate) fn names_kernel_file(pid: i32, command_file: &str) -> Option<bool> {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => Some(String::from_utf8_lossy(&cmdline).contains(command_file)),
        Err(_) => None,
    }
}

/// How long [`stop_left_behind`] waits for the process groups it killed to be gone.
const ORPHAN_EXIT_WAIT: Duration = Duration::from_secs(1);

/// Whether `pid` is a live mcp-pyrepl process (its pid may have been reused by something else).
fn is_running_server(pid: i32) -> bool {
    if pid as u32 == std::process::id() {
        return true;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("mcp-pyrepl"))
}

/// Environment variables of the server that kernels never see.
const SERVER_ENV_PREFIX: &str = "MCP_PYREPL_";

/// Keeps the server's own configuration (tokens included) away from user code.
fn remove_server_env(command: &mut tokio::process::Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with(SERVER_ENV_PREFIX) {
            command.env_remove(name);
        }
    }
}

/// Applies `RLIMIT_AS` and `RLIMIT_CPU` to the child between fork and exec.
#[allow(unsafe_code)]
fn set_resource_limits(command: &mut tokio::process::Command, memory: Option<u64>, cpu: Option<u64>) {
    use nix::sys::resource::{Resource, setrlimit};
    if memory.is_none() && cpu.is_none() {
        return;
    }
    // SAFETY: the closure runs in the forked child before exec; it only calls setrlimit(2),
    // which is async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if let Some(bytes) = memory {
                setrlimit(Resource::RLIMIT_AS, bytes, bytes)?;
            }
            if let Some(seconds) = cpu {
                setrlimit(Resource::RLIMIT_CPU, seconds, seconds)?;
            }
            Ok(())
        });
    }
}

fn remove_stale_sockets(connection: &ConnectionInfo) {
    if connection.transport == Transport::Ipc {
        for channel in ConnectionInfo::CHANNELS {
            let _ = std::fs::remove_file(connection.ipc_path(channel));
        }
    }
}

fn write_file(path: &Path, contents: &str) -> Result<(), KernelError> {
    let io = |source| KernelError::Io(WriteError { path: path.to_owned(), source });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)
}

/// The last `bytes` of a file, lossily decoded; empty when it cannot be read.
fn read_tail(path: &Path, bytes: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return String::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut tail = Vec::new();
    let _ = file.read_to_end(&mut tail);
    String::from_utf8_lossy(&tail).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts `sh -c 'sleep 30; true' <tag>` in a process group of its own, as a kernel's would
    /// be (the `; true` keeps the shell, and the tag in its command line, from exec'ing `sleep`).
    fn group_leader(tag: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; true", tag])
            .process_group(0)
            .spawn()
            .unwrap();
        // Until it has exec'd, its command line is still ours.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while names_kernel_file(child.id() as i32, tag) != Some(true) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        child
    }

    #[tokio::test]
    async fn only_groups_whose_leader_is_the_recorded_start_of_the_kernel_are_stopped() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("kernel");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(records_dir(&dir)).unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead_server = gone.id() as i32;
        gone.wait().unwrap();
        let record = |at: &Path, kernel: &std::process::Child, started: Option<Start>| {
            let pid = kernel.id() as i32;
            let started = started.unwrap_or_else(|| Start::of(pid).unwrap());
            let record = PidRecord { kernel: pid, server: dead_server, started, namespace: None };
            std::fs::write(at, serde_json::to_vec(&record).unwrap()).unwrap();
        };
        // A record in the kernel's own directory (it could write it), one whose start is not
        // the process's (its pid reused since), and the record of a real orphan.
        let mut in_reach = group_leader("kernel-inreach.json");
        record(&dir.join("kernel-inreach.pid"), &in_reach, None);
        let mut reused = group_leader("kernel-reused.json");
        let earlier = Start { tick: 1, ..Start::of(reused.id() as i32).unwrap() };
        record(&records_dir(&dir).join("kernel-reused.pid"), &reused, Some(earlier));
        let mut orphan = group_leader("kernel-real.json");
        record(&records_dir(&dir).join("kernel-real.pid"), &orphan, None);
        assert_eq!(stop_left_behind(&dir).await, 1);
        for bystander in [&mut in_reach, &mut reused] {
            assert!(bystander.try_wait().unwrap().is_none(), "a process no record proves ours was killed");
            bystander.kill().unwrap();
            bystander.wait().unwrap();
        }
        assert!(orphan.wait().unwrap().signal() == Some(9), "the orphaned kernel's group lives on");
        assert!(
            !dir.join("kernel-inreach.pid").exists() && !records_dir(&dir).join("kernel-real.pid").exists()
        );
    }

    #[test]
    fn the_shipped_kernelspec_parses_and_has_its_placeholders() {
        let spec = kernel_spec();
        assert_eq!(spec.argv[0], "{python}");
        assert!(spec.argv.iter().any(|a| a == "{connection_file}"));
        assert_eq!(spec.env["IPYTHONDIR"], "{ipython_dir}");
        assert_eq!(spec.interrupt_mode, InterruptMode::Signal);
        assert!(spec.metadata.startup_file.ends_with(".py"));
    }

    #[test]
    fn read_tail_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_tail(&path, 4), "6789");
        assert_eq!(read_tail(&path, 100), "0123456789");
        assert_eq!(read_tail(&dir.path().join("missing"), 4), "");
    }
}
