//! A session: its graph of cells, its pool of kernels from one provider, and its records.
//!
//! Owns running a cell on exactly its parent's state: the pool gives a kernel that reaches the
//! parent without a restart (`pool.rs`), the graph says which cells that kernel must replay,
//! and the session replays them, runs the code within its time and output limits, records the
//! cell and its outputs and saves the graph before answering. Knows nothing of MCP (the `mcp`
//! module turns its results into content), of other sessions (`manager.rs`) or of where its
//! files live (`paths.rs`); `records.rs` lets readers see the graph and outputs without the
//! session's lock, `live.rs` shows a cell that still runs, `kept_outputs.rs` keeps each cell's
//! outputs, `workdir.rs` reads and writes files of the kernels' working directory.

mod call;
mod kept_outputs;
pub mod live;
pub mod manager;
pub mod names;
mod paths;
pub mod pool;
pub mod records;
mod run;
pub mod workdir;

pub use call::{CallContext, Progress, ProgressUpdate, Stop, StopReason, parse_seconds};
pub use paths::SessionPaths;
pub use run::{CellRun, MAX_CODE_BYTES};

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{GatewaySettings, Limits};
use crate::error::{Error, Result};
use crate::graph::{CellId, CellStatus, Graph, KernelHead};
use crate::jupyter::message::ExecuteRequest;
use crate::kernel::{Execution, ExecutionStatus, Output, OutputLimits};
use crate::provider::install_in_kernel;
use crate::venv::{Uv, Venv, validate_requirement, warm_up_code};
use live::LiveCell;
use names::Names;
use pool::{KernelPool, Served};
use records::{Records, SessionRecord};
use run::{cell_status, check_code, summarize};
use workdir::WorkDir;

/// How long the names of a cell that raised may take (they come in a second request).
const NAMES_AFTER_ERROR_TIMEOUT: Duration = Duration::from_secs(10);

/// A kernel the pool served, brought to a parent's state.
struct Reached {
    /// The kernel, as the pool served it.
    served: Served,
    /// The cells replayed on it, in order.
    replayed: Vec<CellId>,
}

/// Once no cell has run for a moment (the model is thinking), keeps a copy of the state the
/// successful cell `run` left, unless the session has moved on from it or is busy: going back
/// to it (a retry of the next cell, a branch beside it) is then one round trip, whatever it
/// cost to build.
pub fn copy_when_idle(session: Arc<tokio::sync::Mutex<Session>>, run: &CellRun) {
    if run.cell.status != CellStatus::Ok {
        return;
    }
    let head = KernelHead::At(run.cell.chain_hash);
    tokio::spawn(async move {
        crate::background::idle().await;
        if let Ok(mut session) = session.try_lock() {
            session.pool.keep_copy_of(head);
        }
    });
}

/// One session.
pub struct Session {
    id: String,
    limits: Limits,
    paths: SessionPaths,
    records: Arc<Records>,
    pool: KernelPool,
}

impl Session {
    /// A session whose kernels come from the provider `record` names (a gateway's token from
    /// `gateway`), holding `graph`, its files in `paths`, within `limits`; kernels start on
    /// first use.
    ///
    /// # Errors
    /// When the provider cannot be opened (no TLS configuration for a gateway).
    /// A fresh kernel's snapshot imports `base_packages` silently, as a spare does.
    pub fn open(
        id: String,
        limits: Limits,
        gateway: &GatewaySettings,
        paths: SessionPaths,
        record: &SessionRecord,
        graph: Graph,
        base_packages: &[String],
    ) -> Result<Self> {
        let provider = record.provider.open(paths.provider_context(&limits, gateway))?;
        let work_dir = provider.working_dir().map(WorkDir::new);
        let records = Arc::new(Records::new(paths.clone(), graph, provider.venv().cloned(), work_dir));
        let budget = limits.kernel_pool_memory_mb.map(|mb| mb << 20);
        let pool = KernelPool::new(provider, limits.kernels_per_session, budget)
            .with_next_head(record.kernel_head.map_or(KernelHead::Fresh, KernelHead::At))
            .with_snapshots(limits.snapshots_per_session, warm_up_code(base_packages));
        Ok(Session { id, limits, paths, records, pool })
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the session has recorded, readable without its lock.
    pub fn records(&self) -> &Arc<Records> {
        &self.records
    }

    /// Starts a kernel now if none runs (so the first `run_code` is quick).
    ///
    /// # Errors
    /// When the kernel does not start.
    pub async fn start_kernel(&mut self) -> Result<()> {
        self.serve(None).await.map(drop)
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
        check_code(code)?;
        // Refuse an unknown parent before any kernel work.
        if let Some(parent) = parent {
            self.records.graph().cell(parent)?;
        }
        let timeout = timeout.unwrap_or_else(|| Duration::from_secs_f64(self.limits.cell_timeout));
        let run = self.run_checked(code, parent, timeout, context, live).await;
        self.publish_kernels();
        run
    }

    async fn run_checked(
        &mut self,
        code: &str,
        parent: Option<&CellId>,
        timeout: Duration,
        context: &CallContext,
        live: Option<&LiveCell>,
    ) -> Result<CellRun> {
        let replay_started = Instant::now();
        let Reached { served: Served { index, started, snapshot }, replayed } =
            self.reach(parent, timeout, context).await?;
        self.pool.keep_copy(index);
        let replay_time = replay_started.elapsed();
        let parent_head = self.pool.get(index).head;

        // Withdrawn while the kernel started or replayed: the new code never runs.
        if context.cancel.is_cancelled() || context.interrupt.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let run_started = Instant::now();
        let request = ExecuteRequest::new(code).with_expressions(names::bound_by_cell());
        let (execution, stopped) = self.execute_bounded(index, request, timeout, context, live).await?;
        let run_time = run_started.elapsed();
        let status = cell_status(&execution);
        let names = match status {
            CellStatus::Ok => names::parse(&execution.user_expressions),
            // The kernel evaluates no user expression after an error: ask again, silently (the
            // namespace noted before the cell is still the one to compare with).
            CellStatus::Error | CellStatus::Interrupted => {
                let kernel = &self.pool.get(index).kernel;
                kernel
                    .evaluate(names::bound_by_cell(), NAMES_AFTER_ERROR_TIMEOUT)
                    .await
                    .map(|values| names::parse(&values))
                    .unwrap_or_default()
            }
            CellStatus::KernelDied => Names::default(),
        };
        let summary = summarize(&execution.outputs);
        let id = live.map_or_else(CellId::new, |live| live.id().clone());
        let cell = self
            .records
            .graph_mut()
            .add(id, parent, code.to_owned(), status, execution.execution_count, summary)?
            .clone();
        let head = match status {
            CellStatus::KernelDied => KernelHead::Unknown,
            _ => KernelHead::At(cell.chain_hash),
        };
        self.pool.set_head(index, head);
        self.pool.note_cost(parent_head, cell.chain_hash, run_time);
        self.records.keep_outputs(&cell.id, &execution.outputs);
        self.records.save_new_cell()?;
        if !self.pool.provider().can_restart() {
            // The kernel outlives the server: a restarted server must know what it holds.
            self.save_record()?;
        }
        self.pool.fit_memory_budget(index).await;
        self.pool.settle().await;
        Ok(CellRun {
            cell,
            execution,
            names,
            replayed,
            restarted: started,
            replay_time,
            run_time,
            stopped,
            from_snapshot: snapshot,
            snapshots: self.pool.snapshots().clone(),
        })
    }

    /// Lists the user namespace at exactly the state after `cell`, reached as
    /// [`Session::run_cell`] reaches a parent (a kernel of the pool, the cells it lacks
    /// replayed, each within the session's cell timeout, as is the listing); no cell is
    /// created, and the kernel still holds that state after.
    ///
    /// # Errors
    /// An unknown cell; a kernel that cannot start or reach it (a replayed cell that no longer
    /// succeeds, a kernel that cannot branch).
    pub async fn variables(&mut self, cell: &CellId, context: &CallContext) -> Result<Names> {
        self.ensure_open()?;
        self.records.graph().cell(cell)?;
        let timeout = Duration::from_secs_f64(self.limits.cell_timeout);
        let reached = self.reach(Some(cell), timeout, context).await;
        self.publish_kernels();
        let Reached { served: Served { index, .. }, .. } = reached?;
        let values = self.pool.get(index).kernel.evaluate(names::whole_namespace(), timeout).await?;
        Ok(names::parse(&values))
    }

    /// A kernel of the pool at exactly `parent`'s state: served without a restart, then the
    /// cells it lacks replayed (reported as progress).
    async fn reach(
        &mut self,
        parent: Option<&CellId>,
        timeout: Duration,
        context: &CallContext,
    ) -> Result<Reached> {
        let served = self.serve(parent).await?;
        let index = served.index;
        let plan = self.records.graph().plan(self.pool.get(index).head, parent)?;
        debug_assert!(!plan.restart, "the pool serves kernels that reach the parent without a restart");
        let total = plan.replay.len() as f64 + 1.0;
        if !plan.replay.is_empty() {
            // Replay changes the state this kernel holds: keep a copy of it first.
            self.pool.keep_copy(index);
        }
        for (step, id) in plan.replay.iter().enumerate() {
            let message = format!("replaying cell {id} ({} of {})", step + 1, plan.replay.len());
            context.progress.report(step as f64, Some(total), message);
            self.replay(index, id, timeout, context).await?;
        }
        Ok(Reached { served, replayed: plan.replay })
    }

    /// A kernel of the pool that reaches `parent` without a restart; readers learn of the
    /// kernels started or stopped for it.
    async fn serve(&mut self, parent: Option<&CellId>) -> Result<Served> {
        let records = self.records.clone();
        let served = self.pool.serve(|head| records.graph().reach(head, parent)).await;
        self.publish_kernels();
        served?.ok_or_else(|| Error::CannotBranch {
            provider: self.pool.provider().describe(),
            held: self.records.held_cells().last().map_or_else(
                || "the state it had when attached".to_owned(),
                |id| format!("the state after cell `{id}`"),
            ),
        })
    }

    /// Replays one recorded cell on the kernel at `index`. One that succeeded before must
    /// succeed again; one that failed (or was interrupted) before may fail again.
    async fn replay(
        &mut self,
        index: usize,
        id: &CellId,
        timeout: Duration,
        context: &CallContext,
    ) -> Result<()> {
        let cell = self.records.graph().cell(id)?.clone();
        let before = self.pool.get(index).head;
        let started = Instant::now();
        let request = ExecuteRequest::new(&cell.code);
        let (execution, stopped) = self.execute_bounded(index, request, timeout, context, None).await?;
        self.pool.note_cost(before, cell.chain_hash, started.elapsed());
        if stopped.is_some_and(|stop| matches!(stop.reason, StopReason::Cancelled | StopReason::Interrupted))
        {
            return Err(Error::Cancelled);
        }
        if let ExecutionStatus::Died(death) = &execution.status {
            return Err(Error::ReplayFailed { cell: id.to_string(), detail: format!("the kernel {death}") });
        }
        if execution.status == ExecutionStatus::Ok || cell.status != CellStatus::Ok {
            // It succeeded again, or it failed before too: replay goes on from the same state.
            self.pool.set_head(index, KernelHead::At(cell.chain_hash));
            return Ok(());
        }
        let detail = match stopped {
            Some(stop) => stop.reason.to_string(),
            None => {
                execution.outputs.iter().filter_map(Output::traceback_text).collect::<Vec<_>>().join("\n")
            }
        };
        Err(Error::ReplayFailed { cell: id.to_string(), detail })
    }

    /// Runs `request` on the kernel at `index` within the session's output limits, stopping it
    /// after `timeout`, on cancellation or on `interrupt_cell`: first an interrupt (the kernel
    /// keeps its state), then, when the code ignores it for the grace period, a kill of the
    /// kernel (state lost; replay rebuilds it). A destroyed session's cell is killed at once.
    /// While the code runs the kernel's head is unknown; the caller names it once it is known.
    async fn execute_bounded(
        &mut self,
        index: usize,
        request: ExecuteRequest,
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
        let _busy = crate::background::busy();
        self.pool.set_head(index, KernelHead::Unknown);
        let provider = self.pool.provider();
        let kernel = &self.pool.get(index).kernel;
        let mut running = kernel.start_request(request, limits)?;
        if let Some(live) = live {
            live.started(running.view());
        }
        let execution = running.finish();
        tokio::pin!(execution);
        let destroyed = self.records.destroyed();
        let reason = tokio::select! {
            finished = &mut execution => return Ok((finished?, None)),
            () = tokio::time::sleep(timeout) => StopReason::Timeout(timeout),
            () = context.cancel.cancelled() => StopReason::Cancelled,
            () = context.interrupt.cancelled() => StopReason::Interrupted,
            () = destroyed.cancelled() => {
                provider.kill(kernel).await?;
                let _ = execution.await;
                return Err(Error::Destroyed { id: self.id.clone() });
            }
        };
        tracing::info!(session = %self.id, ?reason, "interrupting a cell");
        if let Err(error) = provider.interrupt(kernel).await {
            tracing::warn!(%error, "interrupt failed");
        }
        if let Ok(finished) = tokio::time::timeout(grace, &mut execution).await {
            let finished = finished?;
            // It may have ended by itself as the interrupt was sent: then nothing was stopped.
            let stopped =
                (finished.status != ExecutionStatus::Ok).then_some(Stop { reason, kernel_killed: false });
            return Ok((finished, stopped));
        }
        tracing::warn!(session = %self.id, "the cell ignored the interrupt; killing its kernel");
        provider.kill(kernel).await?;
        Ok((execution.await?, Some(Stop { reason, kernel_killed: true })))
    }

    /// Installs `requirements` into the session's venv, or, for kernels in no venv of ours
    /// that the provider installs into, through each running kernel (`%pip install`; a kernel is
    /// started when none runs), then records them so that every later kernel installs them
    /// first. The running kernels can import them at once. Every requirement is validated
    /// before anything runs.
    ///
    /// # Errors
    /// A refused requirement (nothing is installed), a session whose kernels' environment is
    /// not ours, or uv's or pip's failure.
    pub async fn install(
        &mut self,
        uv: &Uv,
        requirements: &[String],
        context: &CallContext,
    ) -> Result<String> {
        self.ensure_open()?;
        let venv = match self.pool.provider().installs_through_kernels() {
            true => None,
            false => Some(self.own_venv("install_packages")?.clone()),
        };
        if requirements.is_empty() {
            return Err(Error::InvalidArgument(
                "packages is empty; pass a list of requirements such as [\"requests\", \"polars>=1\"]".into(),
            ));
        }
        for requirement in requirements {
            validate_requirement(requirement).map_err(|reason| Error::InvalidRequirement {
                requirement: crate::util::shown(requirement),
                reason,
            })?;
        }
        let requirements: Vec<String> = requirements.iter().map(|r| r.trim().to_owned()).collect();
        context.progress.report(0.0, Some(1.0), format!("installing {}", requirements.join(", ")));
        let report = match venv {
            Some(venv) => uv.install(&venv, &requirements).await?,
            None => self.install_through_kernels(&requirements).await?,
        };
        context.progress.report(1.0, Some(1.0), "installed");
        Ok(report)
    }

    /// Writes `bytes` as the file `path` of the kernels' working directory (replacing one of
    /// that name), after the calls before it on this session.
    ///
    /// # Errors
    /// A session whose kernels' working directory is not ours, or the file's refusal
    /// ([`FileError`](crate::error::FileError): a path leaving the directory, a link in the way).
    pub fn upload(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        self.ensure_open()?;
        let Some(work_dir) = self.records.work_dir() else {
            let provider = self.pool.provider();
            return Err(Error::Unsupported {
                operation: "upload_file",
                provider: provider.describe(),
                advice: "its working directory is not ours; write the file from a cell with run_code",
            });
        };
        Ok(work_dir.write(path, bytes)?)
    }

    /// `%pip install` of `requirements` in every running kernel (one is started when none
    /// runs), then recorded for the kernels started later.
    async fn install_through_kernels(&mut self, requirements: &[String]) -> Result<String> {
        if !self.kernel_running() {
            self.start_kernel().await?;
        }
        let mut report = String::new();
        for held in self.pool.iter().filter(|held| held.kernel.is_alive()) {
            report = install_in_kernel(&held.kernel, requirements).await.map_err(|output| {
                Error::KernelInstallFailed {
                    requirements: requirements.join(" "),
                    provider: self.pool.provider().describe(),
                    output,
                }
            })?;
        }
        self.pool.provider().remember_installs(requirements);
        self.save_record()?;
        Ok(report)
    }

    fn own_venv(&self, operation: &'static str) -> Result<&Venv> {
        let provider = self.pool.provider();
        provider.venv().ok_or_else(|| Error::Unsupported {
            operation,
            provider: provider.describe(),
            advice: "its environment is not ours; run `%pip install …` in a cell to install into it",
        })
    }

    /// Stops the kernels and clears the graph; the next cell starts from a fresh kernel.
    ///
    /// # Errors
    /// When the empty graph cannot be saved.
    pub async fn reset(&mut self) -> Result<()> {
        self.ensure_open()?;
        self.stop_kernels().await;
        self.records.graph_mut().clear();
        self.save()?;
        self.records.clear_outputs();
        Ok(())
    }

    /// Starts importing `packages` in a kernel without a trace in the user's namespace, history
    /// or execution counter, so the session's first cells do not pay for them: one package at a
    /// time in the background, so a cell that comes meanwhile waits for one import at most (and
    /// finds the ones before done). Packages that do not import are skipped.
    ///
    /// # Errors
    /// When the kernel cannot be started or reached.
    pub async fn warm_up(&mut self, packages: &[String]) -> Result<()> {
        let Served { index, .. } = self.serve(None).await?;
        let imports = packages.iter().map(|package| warm_up_code(std::slice::from_ref(package))).collect();
        self.pool.get(index).kernel.execute_silently_in_turn(imports);
        Ok(())
    }

    /// How long since a call last used a kernel, when kernels run that may be stopped for it.
    pub fn idle_kernels(&self) -> Option<Duration> {
        self.pool.idle_for()
    }

    /// Whether a kernel runs for this session.
    pub fn kernel_running(&self) -> bool {
        self.pool.iter().any(|held| held.kernel.is_alive())
    }

    /// Stops the session's kernels gracefully, if any run.
    pub async fn stop_kernels(&mut self) {
        self.pool.stop_all().await;
        self.publish_kernels();
    }

    /// Gets rid of the session's kernels at once (a destroyed session's state is not needed).
    pub async fn discard_kernels(&mut self) {
        self.pool.discard_all().await;
        self.publish_kernels();
    }

    fn ensure_open(&self) -> Result<()> {
        if self.records.destroyed().is_cancelled() {
            return Err(Error::UnknownSession { id: self.id.clone() });
        }
        Ok(())
    }

    /// Tells readers what the kernels hold now.
    fn publish_kernels(&self) {
        self.records.set_kernels(self.pool.iter().map(|held| (held.head, held.kernel.death_watch())));
    }

    /// Writes the session's record and its whole graph (new or cleared).
    pub(crate) fn save(&self) -> Result<()> {
        self.records.save_graph()?;
        self.save_record()
    }

    /// Writes the session's record: which provider, and for a kernel that outlives the server
    /// (one that cannot be restarted) the state it holds now.
    fn save_record(&self) -> Result<()> {
        let provider = self.pool.provider();
        let kernel_head = match self.pool.iter().next().map(|held| held.head) {
            Some(KernelHead::At(hash)) => Some(hash),
            _ => None,
        };
        let kernel_head = kernel_head.filter(|_| !provider.can_restart());
        SessionRecord { provider: provider.record(), kernel_head }.save(&self.paths)
    }
}
