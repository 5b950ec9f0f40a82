//! A session: a venv (or a kernel we attached to), its kernel, and the graph of cells run there.
//!
//! Owns running a cell on exactly its parent's state: it asks the graph for a replay plan
//! against what the kernel holds (its head), restarts and replays as the plan says, runs the
//! code within its time and output limits, records the cell and its outputs and saves the graph
//! before answering. Knows nothing of MCP (the `mcp` module turns its results into content), of
//! other sessions (`manager.rs`) or of where its files live (`paths.rs`); `live.rs` shows a cell
//! that still runs to callers outside the session's lock; `kept_outputs.rs` keeps each cell's
//! outputs for `get_cell` and exports.

mod kept_outputs;
pub mod live;
pub mod manager;
mod paths;

pub use paths::SessionPaths;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::atomic_file;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::graph::{Cell, CellId, CellStatus, ChainHash, Graph, KernelHead, store};
use crate::kernel::{Execution, ExecutionStatus, Kernel, LaunchSpec, Output, OutputLimits};
use crate::notebook;
use crate::venv::{Uv, Venv, validate_requirement, warm_up_code};
use kept_outputs::KeptOutputs;
use live::LiveCell;

/// Largest code accepted in one cell.
pub const MAX_CODE_BYTES: usize = 1 << 20;

/// Characters of a cell's text output kept in the graph as its summary.
const SUMMARY_CHARS: usize = 200;

/// One progress report for a long operation.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressUpdate {
    /// Steps done so far.
    pub progress: f64,
    /// Steps in all, when known.
    pub total: Option<f64>,
    /// What is happening.
    pub message: String,
}

/// Where progress goes: a channel the caller forwards (as MCP progress notifications), or
/// nowhere.
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<mpsc::UnboundedSender<ProgressUpdate>>);

impl Progress {
    /// Progress sent into `sender`.
    pub fn to(sender: mpsc::UnboundedSender<ProgressUpdate>) -> Self {
        Progress(Some(sender))
    }

    /// Reports step `progress` of `total`.
    pub fn report(&self, progress: f64, total: Option<f64>, message: impl Into<String>) {
        if let Some(sender) = &self.0 {
            let _ = sender.send(ProgressUpdate { progress, total, message: message.into() });
        }
    }
}

/// What the caller of a long operation provides: where progress goes, and a token that is
/// cancelled when the caller gives up (an MCP `notifications/cancelled`).
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Progress reports.
    pub progress: Progress,
    /// Cancelled when the request is withdrawn.
    pub cancel: CancellationToken,
}

/// Why a cell was stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopReason {
    /// It ran longer than its time limit.
    Timeout(Duration),
    /// The request was cancelled.
    Cancelled,
}

/// How a cell was stopped: interrupted, and killed with its kernel when it ignored that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stop {
    /// Why.
    pub reason: StopReason,
    /// The cell survived the interrupt, so its kernel was killed: the in-memory state is lost.
    pub kernel_killed: bool,
}

/// What running one cell did.
#[derive(Debug, Clone)]
pub struct CellRun {
    /// The recorded cell (its id is what the caller uses as a parent later).
    pub cell: Cell,
    /// The new code's outputs and status.
    pub execution: Execution,
    /// The cells replayed first, in order.
    pub replayed: Vec<CellId>,
    /// Whether the kernel was (re)started first.
    pub restarted: bool,
    /// Time spent restarting and replaying.
    pub replay_time: Duration,
    /// Time spent running the new code.
    pub run_time: Duration,
    /// Set when the cell was stopped (time limit or cancellation).
    pub stopped: Option<Stop>,
}

/// What runs a session's code.
#[derive(Debug, Clone)]
pub enum Backing {
    /// A venv of the session's own, with kernels we start (and restart to replay).
    Venv(Venv),
    /// A kernel somebody else started, reached through its connection file. We never restart
    /// or kill it, so the session can only go forward from the state it holds.
    Attached(PathBuf),
}

/// What `<session>/attached.json` records for an attached session: the connection file, and
/// the state the kernel held when the server last wrote it (so a restarted server can go on).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    /// The kernel's connection file.
    pub connection_file: PathBuf,
    /// The chain hash of the kernel's head, `None` for the state it had when attached.
    pub head: Option<ChainHash>,
}

/// One session.
pub struct Session {
    id: String,
    limits: Limits,
    paths: SessionPaths,
    backing: Backing,
    graph: Graph,
    /// Each recorded cell's outputs, for `get_cell` and exports.
    kept: KeptOutputs,
    kernel: Option<Kernel>,
    head: KernelHead,
    /// Set by `destroy_repl`: calls that were waiting for the session find it gone.
    destroyed: bool,
    /// When a call last used the kernel (for stopping idle kernels).
    last_used: Instant,
    /// Other kernels of this session, each still holding the state it was left in: a switch
    /// back to a branch one of them holds costs no replay.
    parked: Vec<Parked>,
}

/// A kernel of the pool that is not the active one.
struct Parked {
    kernel: Kernel,
    head: KernelHead,
    last_used: Instant,
}

impl Session {
    /// A session over an existing venv (or attached kernel) and graph, within `limits`; the
    /// kernel starts (or is connected to) on first use.
    pub fn open(id: String, limits: Limits, paths: SessionPaths, backing: Backing, graph: Graph) -> Self {
        let kept = KeptOutputs::new(paths.kept_outputs(), paths.legacy_cell_outputs());
        Session {
            id,
            limits,
            paths,
            backing,
            graph,
            kept,
            kernel: None,
            head: KernelHead::Fresh,
            destroyed: false,
            last_used: Instant::now(),
            parked: Vec::new(),
        }
    }

    /// The same session, its kernel at `head` already (an attached kernel found again).
    pub fn with_head(mut self, head: KernelHead) -> Self {
        self.head = head;
        self
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The session's cells.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// What runs the session's code.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    fn own_venv(&self, what: &str) -> Result<&Venv> {
        match &self.backing {
            Backing::Venv(venv) => Ok(venv),
            Backing::Attached(file) => Err(Error::InvalidArgument(format!(
                "{what} is not available in a session attached to a kernel we did not start (`{}`): its \
                 environment is not ours; run `%pip install …` in a cell to install into it",
                file.display()
            ))),
        }
    }

    /// Starts the kernel now if it is not running (so the first `run_code` is quick).
    ///
    /// # Errors
    /// When the kernel does not start.
    pub async fn start_kernel(&mut self) -> Result<()> {
        self.live_kernel().await.map(drop)
    }

    /// Runs `code` on exactly the state after `parent` (a fresh state when `None`), replaying
    /// what the kernel lacks, and records it as a new cell. The code (and each replayed cell)
    /// may run for `timeout` (the session's default when `None`) before it is interrupted.
    /// [`parse_seconds`] turns a caller's number of seconds into one.
    ///
    /// # Errors
    /// Bad code or parent ids (nothing changes); a kernel that cannot start; a replayed cell that
    /// no longer succeeds. A Python exception in `code` is not an error: it is the cell's status.
    pub async fn run_cell(
        &mut self,
        code: &str,
        parent: Option<&CellId>,
        timeout: Option<Duration>,
        context: &CallContext,
        live: Option<&LiveCell>,
    ) -> Result<CellRun> {
        self.ensure_open()?;
        self.last_used = Instant::now();
        if code.trim().is_empty() {
            return Err(Error::InvalidArgument("the code is empty; send the Python source to run".into()));
        }
        if code.len() > MAX_CODE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "the code is {} bytes, over the limit of {MAX_CODE_BYTES}; split it into several cells",
                code.len()
            )));
        }
        let timeout = timeout.unwrap_or_else(|| Duration::from_secs_f64(self.limits.cell_timeout));
        // Refuse an unknown parent before any kernel work.
        if let Some(parent) = parent {
            self.graph.cell(parent)?;
        }

        let replay_started = Instant::now();
        self.choose_kernel(parent).await?;
        let kernel_was_running = self.kernel.as_ref().is_some_and(Kernel::is_alive);
        self.live_kernel().await?;
        let plan = self.graph.plan(self.head, parent)?;
        let restarted = plan.restart || !kernel_was_running;
        if let (true, Backing::Attached(file)) = (plan.restart, &self.backing) {
            let held = self.held_cells().last().map_or("the state it had when attached".to_owned(), |id| {
                format!("the state after cell `{id}`")
            });
            return Err(Error::InvalidArgument(format!(
                "this session runs on a kernel we did not start (attached through `{}`), so it cannot be \
                 restarted to replay another branch. The kernel holds {held}: continue from that cell or its \
                 descendants, or create_repl for a session of your own to branch freely",
                file.display()
            )));
        }
        if plan.restart {
            context.progress.report(0.0, None, "restarting the kernel");
            self.kernel.as_mut().expect("started above").restart().await?;
            self.head = KernelHead::Fresh;
        }
        let total = plan.replay.len() as f64 + 1.0;
        for (step, id) in plan.replay.iter().enumerate() {
            let message = format!("replaying cell {id} ({} of {})", step + 1, plan.replay.len());
            context.progress.report(step as f64, Some(total), message);
            self.replay(id, timeout, context).await?;
        }
        let replay_time = replay_started.elapsed();

        // Withdrawn while the kernel started or replayed: the new code never runs.
        if context.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let run_started = Instant::now();
        let (execution, stopped) = self.execute_bounded(code, timeout, context, live).await?;
        let run_time = run_started.elapsed();
        let status = cell_status(&execution);
        let summary = summarize(&execution.outputs);
        let id = live.map_or_else(CellId::new, |live| live.id().clone());
        let cell =
            self.graph.add(id, parent, code.to_owned(), status, execution.execution_count, summary)?.clone();
        self.head = match status {
            CellStatus::KernelDied => KernelHead::Unknown,
            _ => KernelHead::At(cell.chain_hash),
        };
        self.keep_outputs(&cell.id, &execution.outputs);
        self.save_new_cell()?;
        self.fit_memory_budget().await;
        Ok(CellRun { cell, execution, replayed: plan.replay, restarted, replay_time, run_time, stopped })
    }

    /// Replays one recorded cell. One that succeeded before must succeed again; one that failed
    /// (or was interrupted) before may fail again.
    async fn replay(&mut self, id: &CellId, timeout: Duration, context: &CallContext) -> Result<()> {
        let cell = self.graph.cell(id)?.clone();
        let (execution, stopped) = self.execute_bounded(&cell.code, timeout, context, None).await?;
        let failed_now = execution.status != ExecutionStatus::Ok;
        let died = matches!(execution.status, ExecutionStatus::Died(_));
        if failed_now && cell.status == CellStatus::Ok
            || died
            || stopped.is_some_and(|s| s.reason == StopReason::Cancelled)
        {
            self.head = KernelHead::Unknown;
            let detail = match (&execution.status, stopped) {
                (_, Some(Stop { reason: StopReason::Cancelled, .. })) => {
                    "the request was cancelled".to_owned()
                }
                (_, Some(Stop { reason: StopReason::Timeout(limit), .. })) => {
                    format!("it ran longer than the time limit of {}s", limit.as_secs_f64())
                }
                (ExecutionStatus::Died(death), None) => format!("the kernel {death}"),
                _ => {
                    execution.outputs.iter().filter_map(Output::traceback_text).collect::<Vec<_>>().join("\n")
                }
            };
            return Err(Error::ReplayFailed { cell: id.to_string(), detail });
        }
        self.head = KernelHead::At(cell.chain_hash);
        Ok(())
    }

    /// Runs `code` within the session's output limits, stopping it after `timeout` or on
    /// cancellation: first an interrupt (the kernel keeps its state), then, when the code ignores
    /// it for the grace period, a kill of the kernel (state lost; replay rebuilds it).
    async fn execute_bounded(
        &mut self,
        code: &str,
        timeout: Duration,
        context: &CallContext,
        live: Option<&LiveCell>,
    ) -> Result<(Execution, Option<Stop>)> {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f");
        let limits = OutputLimits {
            max_text_bytes: self.limits.max_output_bytes,
            max_images: self.limits.max_images,
            max_image_bytes: self.limits.max_image_bytes,
            spill_to: Some(self.paths.outputs().join(format!("{stamp}.txt"))),
        };
        let grace = Duration::from_secs_f64(self.limits.interrupt_grace);
        let kernel = self.kernel.as_ref().expect("the kernel is started before use");
        let mut running = kernel.start(code, limits)?;
        if let Some(live) = live {
            live.started(running.view());
        }
        let execution = running.finish();
        tokio::pin!(execution);
        let reason = tokio::select! {
            finished = &mut execution => return Ok((finished?, None)),
            () = tokio::time::sleep(timeout) => StopReason::Timeout(timeout),
            () = context.cancel.cancelled() => StopReason::Cancelled,
        };
        tracing::info!(session = %self.id, ?reason, "interrupting a cell");
        if let Err(error) = kernel.interrupt().await {
            tracing::warn!(%error, "interrupt failed");
        }
        if let Ok(finished) = tokio::time::timeout(grace, &mut execution).await {
            return Ok((finished?, Some(Stop { reason, kernel_killed: false })));
        }
        tracing::warn!(session = %self.id, "the cell ignored the interrupt; killing its kernel");
        self.head = KernelHead::Unknown;
        kernel.kill()?;
        let killed = execution.await?;
        self.head = KernelHead::Unknown;
        Ok((killed, Some(Stop { reason, kernel_killed: true })))
    }

    /// Installs `requirements` into the session's venv; the running kernel can import them at
    /// once. Every requirement is validated before uv runs.
    ///
    /// # Errors
    /// A refused requirement (nothing is installed), or uv's failure.
    pub async fn install(
        &mut self,
        uv: &Uv,
        requirements: &[String],
        context: &CallContext,
    ) -> Result<String> {
        self.ensure_open()?;
        self.own_venv("install_packages")?;
        let progress = &context.progress;
        if requirements.is_empty() {
            return Err(Error::InvalidRequirement {
                requirement: String::new(),
                reason: "no packages given; pass a list such as [\"requests\", \"polars>=1\"]".into(),
            });
        }
        for requirement in requirements {
            validate_requirement(requirement).map_err(|reason| Error::InvalidRequirement {
                requirement: crate::graph::shown(requirement),
                reason,
            })?;
        }
        let requirements: Vec<String> = requirements.iter().map(|r| r.trim().to_owned()).collect();
        progress.report(0.0, Some(1.0), format!("installing {}", requirements.join(", ")));
        let report = uv.install(self.own_venv("install_packages")?, &requirements).await?;
        progress.report(1.0, Some(1.0), "installed");
        Ok(report)
    }

    /// Stops the kernel and clears the graph; the next cell starts from a fresh kernel.
    ///
    /// # Errors
    /// When the empty graph cannot be saved.
    pub async fn reset(&mut self) -> Result<()> {
        self.ensure_open()?;
        self.stop_kernel().await;
        self.graph.clear();
        self.save()?;
        if let Err(error) = self.kept.clear() {
            tracing::warn!(session = %self.id, %error, "cannot remove the outputs of the cleared cells");
        }
        Ok(())
    }

    /// Imports `packages` in the kernel without a trace in the user's namespace, history or
    /// execution counter, so the session's first cells do not pay for them. Packages that do not
    /// import are skipped.
    ///
    /// # Errors
    /// When the kernel cannot be started or reached.
    pub async fn warm_up(&mut self, packages: &[String]) -> Result<()> {
        self.live_kernel().await?.execute_silently(&warm_up_code(packages)).await?;
        Ok(())
    }

    /// How long since a call last used the kernel, when one runs that we may stop (not an
    /// attached one).
    pub fn idle_kernel(&self) -> Option<Duration> {
        let ours = matches!(self.backing, Backing::Venv(_));
        (ours && self.kernel_running()).then(|| self.last_used.elapsed())
    }

    /// Stops the kernel for good: later calls on this session fail as for an unknown session.
    pub async fn destroy(&mut self) {
        self.stop_kernel().await;
        self.destroyed = true;
    }

    fn ensure_open(&self) -> Result<()> {
        if self.destroyed {
            return Err(Error::UnknownSession { id: self.id.clone() });
        }
        Ok(())
    }

    /// Stops the session's kernels, if any run.
    pub async fn stop_kernel(&mut self) {
        if let Some(kernel) = self.kernel.take() {
            kernel.shutdown().await;
        }
        for parked in std::mem::take(&mut self.parked) {
            parked.kernel.shutdown().await;
        }
        self.head = KernelHead::Fresh;
    }

    /// Makes the best kernel of the pool the active one for running under `parent`: the one
    /// that needs the least replay and no restart. When every kernel would need a restart, the
    /// active one is parked (keeping its state) and a new kernel starts while the pool has room;
    /// when it is full, the least recently used kernel is the one restarted.
    async fn choose_kernel(&mut self, parent: Option<&CellId>) -> Result<()> {
        if !matches!(self.backing, Backing::Venv(_)) || self.limits.kernels_per_session <= 1 {
            return Ok(());
        }
        self.parked.retain(|parked| parked.kernel.is_alive());
        let cost = |head: KernelHead| self.graph.replay_cost(head, parent);
        let active_alive = self.kernel.as_ref().is_some_and(Kernel::is_alive);
        let active = if active_alive { Some(cost(self.head)?) } else { None };
        let mut best: Option<(usize, (bool, usize))> = None;
        for (index, parked) in self.parked.iter().enumerate() {
            let parked_cost = cost(parked.head)?;
            if !parked_cost.0 && best.is_none_or(|(_, b)| parked_cost < b) {
                best = Some((index, parked_cost));
            }
        }
        match (active, best) {
            // A parked kernel is closer to the parent than the active one.
            (_, Some((index, parked_cost))) if active.is_none_or(|a| parked_cost < a) => {
                let parked = self.parked.swap_remove(index);
                self.park_active();
                self.kernel = Some(parked.kernel);
                self.head = parked.head;
            }
            // The active kernel would have to restart: keep its state in the pool instead.
            (Some((true, _)), _) if self.parked.len() + 1 < self.limits.kernels_per_session => {
                self.park_active()
            }
            (Some((true, _)), _) => {
                // The pool is full: the least recently used kernel is the one to sacrifice.
                if let Some(oldest) = (0..self.parked.len()).min_by_key(|&i| self.parked[i].last_used) {
                    let parked = self.parked.swap_remove(oldest);
                    self.park_active();
                    self.kernel = Some(parked.kernel);
                    self.head = parked.head;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Moves the active kernel (if alive) into the pool with its state.
    fn park_active(&mut self) {
        if let Some(kernel) = self.kernel.take().filter(Kernel::is_alive) {
            self.parked.push(Parked { kernel, head: self.head, last_used: self.last_used });
        }
        self.head = KernelHead::Fresh;
    }

    /// Shuts parked kernels down, least recently used first, while the pool's kernels together
    /// use more memory than the budget allows.
    async fn fit_memory_budget(&mut self) {
        let Some(budget_mb) = self.limits.kernel_pool_memory_mb else { return };
        let budget = budget_mb << 20;
        let rss = |kernel: &Kernel| kernel.pid().and_then(resident_bytes).unwrap_or(0);
        let mut total: u64 = self.kernel.iter().map(rss).sum::<u64>()
            + self.parked.iter().map(|p| rss(&p.kernel)).sum::<u64>();
        while total > budget && !self.parked.is_empty() {
            let oldest = (0..self.parked.len()).min_by_key(|&i| self.parked[i].last_used).expect("not empty");
            let parked = self.parked.swap_remove(oldest);
            total = total.saturating_sub(rss(&parked.kernel));
            tracing::info!(session = %self.id, "memory budget: stopping a parked kernel");
            parked.kernel.shutdown().await;
        }
    }

    /// Keeps a cell's (bounded) outputs next to the graph, for `get_cell` and exports. A
    /// failure is logged: the cell itself is what must not be lost.
    fn keep_outputs(&self, id: &CellId, outputs: &[Output]) {
        if let Err(error) = self.kept.keep(id, &notebook::to_nbformat(outputs)) {
            tracing::warn!(session = %self.id, cell = %id, %error, "cannot keep the outputs of a cell");
        }
    }

    /// The kept outputs of cell `id` (none when they could not be kept).
    ///
    /// # Errors
    /// When there is no such cell.
    pub fn outputs_of(&self, id: &CellId) -> Result<Vec<Output>> {
        self.graph.cell(id)?;
        Ok(self.kept.read(id).map(|outputs| notebook::from_nbformat(&outputs)).unwrap_or_default())
    }

    /// The cells whose effects some kernel of the session holds now: the paths to their heads
    /// (the active kernel's last).
    pub fn held_cells(&self) -> Vec<CellId> {
        let parked = self.parked.iter().filter(|p| p.kernel.is_alive()).map(|p| p.head);
        let active = self.kernel.as_ref().filter(|k| k.is_alive()).map(|_| self.head);
        let mut held = Vec::new();
        for head in parked.chain(active) {
            let KernelHead::At(hash) = head else { continue };
            let path = self
                .graph
                .cells()
                .find(|cell| cell.chain_hash == hash)
                .and_then(|cell| self.graph.path_to(&cell.id).ok())
                .unwrap_or_default();
            held.retain(|id| !path.contains(id));
            held.extend(path);
        }
        held
    }

    /// Whether a kernel is running for this session.
    pub fn kernel_running(&self) -> bool {
        self.kernel.as_ref().is_some_and(Kernel::is_alive)
    }

    /// Writes the path root → `cell` as a notebook with the kept outputs, and the venv's
    /// `uv pip freeze` beside it (not for attached kernels, whose environment is not ours);
    /// returns both paths.
    ///
    /// # Errors
    /// An unknown cell, uv's failure, or files that cannot be written.
    pub async fn export_notebook(&self, uv: &Uv, cell: &CellId) -> Result<(PathBuf, Option<PathBuf>)> {
        let path = self.graph.path_to(cell)?;
        let cells = path.iter().map(|id| {
            let cell = self.graph.cell(id).expect("ids on a path are in the graph");
            (cell, self.kept.read(id).unwrap_or_default())
        });
        let notebook = notebook::notebook(cells, None);
        let dir = self.paths.exports();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let notebook_path = dir.join(format!("{cell}.ipynb"));
        let json = serde_json::to_vec_pretty(&notebook).expect("a notebook serialises");
        std::fs::write(&notebook_path, json).map_err(io(&notebook_path))?;
        let Backing::Venv(venv) = &self.backing else { return Ok((notebook_path, None)) };
        let requirements_path = dir.join(format!("{cell}-requirements.txt"));
        let frozen = uv.freeze(venv).await?;
        std::fs::write(&requirements_path, frozen + "\n").map_err(io(&requirements_path))?;
        Ok((notebook_path, Some(requirements_path)))
    }

    /// Writes the whole graph (new or cleared) and, for an attached kernel, its head.
    pub(crate) fn save(&self) -> Result<()> {
        store::save(&self.graph, &self.paths.graph())?;
        self.save_attachment()
    }

    /// Records the cell just added to the graph, appending it to the graph file. When that
    /// fails the cell leaves the graph too, so the file always holds exactly the graph (a later
    /// cell under this one would otherwise be saved without its parent).
    fn save_new_cell(&mut self) -> Result<()> {
        if let Err(error) = store::append(&self.graph, &self.paths.graph()) {
            self.graph.pop();
            return Err(error.into());
        }
        self.save_attachment()
    }

    fn save_attachment(&self) -> Result<()> {
        if let Backing::Attached(file) = &self.backing {
            let head = match self.head {
                KernelHead::At(hash) => Some(hash),
                KernelHead::Fresh | KernelHead::Unknown => None,
            };
            let record = Attachment { connection_file: file.clone(), head };
            let json = serde_json::to_vec_pretty(&record).expect("an attachment serialises");
            atomic_file::replace(&self.paths.attachment(), &json).map_err(store::StoreError::from)?;
        }
        Ok(())
    }

    /// The kernel, started (or started again after its death) when needed; an attached kernel
    /// is connected to, never started.
    async fn live_kernel(&mut self) -> Result<&Kernel> {
        if let Some(dead) = self.kernel.take_if(|kernel| !kernel.is_alive()) {
            let death = dead.death();
            tracing::info!(session = %self.id, ?death, "kernel died");
            dead.shutdown().await;
            if let Backing::Attached(file) = &self.backing {
                self.head = KernelHead::Unknown;
                return Err(Error::InvalidArgument(format!(
                    "the attached kernel (`{}`) is gone: {}. Start it again and attach_kernel anew",
                    file.display(),
                    death.map_or("it stopped answering".to_owned(), |d| format!("it {d}"))
                )));
            }
        }
        if self.kernel.is_none() {
            match &self.backing {
                Backing::Venv(venv) => {
                    let memory = self.limits.kernel_memory_mb.map(|mb| mb << 20);
                    let spec = LaunchSpec::new(venv.python(), self.paths.kernel())
                        .with_resource_limits(memory, self.limits.kernel_cpu_seconds);
                    self.kernel = Some(Kernel::launch(spec).await?);
                    self.head = KernelHead::Fresh;
                }
                Backing::Attached(file) => self.kernel = Some(Kernel::attach(file).await?),
            }
        }
        Ok(self.kernel())
    }

    fn kernel(&self) -> &Kernel {
        self.kernel.as_ref().expect("the kernel is started before use")
    }
}

/// Resident memory of process `pid`, from `/proc/<pid>/status`.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb << 10)
}

/// Longest time limit a caller may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A caller's number of seconds for the argument `name`, checked: finite, at most a day, and
/// positive (or zero, with `zero_allowed`).
///
/// # Errors
/// When it is out of that range, naming the argument.
pub fn parse_seconds(name: &str, seconds: f64, zero_allowed: bool) -> Result<Duration> {
    let lowest_ok = if zero_allowed { seconds >= 0.0 } else { seconds > 0.0 };
    if !(seconds.is_finite() && lowest_ok && seconds <= MAX_TIMEOUT.as_secs_f64()) {
        let kind = if zero_allowed { "non-negative" } else { "positive" };
        return Err(Error::InvalidArgument(format!(
            "{name} must be a {kind} number of seconds up to {}; got {seconds}",
            MAX_TIMEOUT.as_secs()
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn cell_status(execution: &Execution) -> CellStatus {
    match &execution.status {
        ExecutionStatus::Ok => CellStatus::Ok,
        ExecutionStatus::Died(_) => CellStatus::KernelDied,
        ExecutionStatus::Error | ExecutionStatus::Aborted => {
            let interrupted = execution
                .outputs
                .iter()
                .any(|o| matches!(o, Output::Error { ename, .. } if ename == "KeyboardInterrupt"));
            if interrupted { CellStatus::Interrupted } else { CellStatus::Error }
        }
    }
}

/// The first characters of a cell's text output, for listings.
fn summarize(outputs: &[Output]) -> String {
    let text: String = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Stream { text, .. } => Some(text.clone()),
            Output::Error { ename, evalue, .. } => Some(format!("{ename}: {evalue}")),
            _ => o.text_plain().map(str::to_owned),
        })
        .collect::<Vec<_>>()
        .join("");
    shorten(text.trim(), SUMMARY_CHARS)
}

/// The first `max` characters of `text`, with `…` when it was cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
