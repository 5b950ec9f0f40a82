//! All sessions of one server: session ids to sessions, created, found on disk, reset.
//!
//! Owns the session directory layout under `<data dir>/sessions/` and the rule that calls on one
//! session run one at a time (each session sits behind its own async mutex, which serves waiters
//! in order) while different sessions run in parallel.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

use super::live::LiveCell;
use super::{Attachment, Backing, CallContext, Progress, Session, SessionPaths};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::graph::{CellId, Graph, KernelHead, store};
use crate::kernel::launch::reap_orphans;
use crate::venv::{Uv, Venv};

/// Length of a session id: lowercase hex characters.
const SESSION_ID_LEN: usize = 16;

/// A session shared between the calls that use it; lock it to use it.
pub type SharedSession = Arc<tokio::sync::Mutex<Session>>;

/// A line about one session, for listings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSummary {
    /// The session id.
    pub id: String,
    /// How many cells it has.
    pub cells: usize,
    /// Whether a kernel runs for it now.
    pub kernel_running: bool,
}

/// The sessions of one server.
pub struct SessionManager {
    settings: Settings,
    uv: OnceCell<Uv>,
    sessions: Mutex<HashMap<String, SharedSession>>,
    /// The cell each session is running in the background (`run_code` with `wait_s`).
    live: Mutex<HashMap<String, Arc<LiveCell>>>,
    /// Sessions built ahead of time (marked as spares on disk), handed out by `create`.
    spares: Mutex<Vec<Session>>,
    /// Held while spares are being built, so one task at a time builds them.
    filling: tokio::sync::Mutex<()>,
}

impl SessionManager {
    /// A manager keeping its sessions under `settings.data_dir()`. Kernels left running by a
    /// server that crashed are killed and their files removed first.
    pub fn new(settings: Settings) -> Self {
        let manager = SessionManager {
            settings,
            uv: OnceCell::new(),
            sessions: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            spares: Mutex::new(Vec::new()),
            filling: tokio::sync::Mutex::new(()),
        };
        if let Ok(sessions) = std::fs::read_dir(manager.sessions_dir()) {
            let mut killed = 0;
            for entry in sessions.flatten() {
                let paths = SessionPaths::new(entry.path());
                killed += reap_orphans(&paths.kernel());
                // A spare of an earlier server was never handed out: nobody knows its id.
                if paths.spare_marker().exists() {
                    let _ = std::fs::remove_dir_all(paths.dir());
                }
            }
            if killed > 0 {
                tracing::warn!(
                    killed,
                    "killed kernels left behind by a server that stopped without cleaning up"
                );
            }
        }
        manager
    }

    /// uv, found or installed on first use.
    ///
    /// # Errors
    /// When there is no uv and it cannot be installed.
    pub async fn uv(&self) -> Result<&Uv> {
        let data_dir = self.settings.data_dir();
        Ok(self.uv.get_or_try_init(|| Uv::locate(self.settings.uv.as_deref(), &data_dir)).await?)
    }

    fn sessions_dir(&self) -> PathBuf {
        self.settings.data_dir().join("sessions")
    }

    /// Starts the background work of a server: keeping spare sessions ready, and stopping
    /// kernels idle for longer than the settings allow. Both end when the manager is dropped.
    pub fn start_background(self: &Arc<Self>) {
        self.refill_spares();
        if self.settings.kernel_idle_timeout > 0.0 {
            let idle = Duration::from_secs_f64(self.settings.kernel_idle_timeout);
            let period = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
            let manager = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(period).await;
                    let Some(manager) = manager.upgrade() else { return };
                    manager.stop_idle_kernels(idle).await;
                }
            });
        }
    }

    /// Creates a session: a spare one when one is ready, else a new private directory, a venv
    /// with ipykernel and the base packages and an empty graph on disk, its kernel starting in
    /// the background (the first call waits for it). Nothing is left behind when a step fails.
    ///
    /// # Errors
    /// When uv or the kernel fails; the error carries their output.
    pub async fn create(self: &Arc<Self>, progress: &Progress) -> Result<String> {
        let created = match self.take_spare() {
            Some(session) => {
                let id = session.id().to_owned();
                let marker = SessionPaths::new(self.sessions_dir().join(&id)).spare_marker();
                std::fs::remove_file(&marker).map_err(|source| Error::Io { path: marker, source })?;
                self.sessions.lock().expect("sessions lock").insert(id.clone(), Arc::new(session.into()));
                progress.report(3.0, Some(3.0), "a session was ready");
                Ok(id)
            }
            None => {
                let build = async |paths, id| self.venv_session(paths, id, progress).await;
                self.add_session(KernelStart::InBackground, build).await
            }
        };
        self.refill_spares();
        created
    }

    /// A session with a new venv in `paths`, not started.
    async fn venv_session(&self, paths: SessionPaths, id: String, progress: &Progress) -> Result<Session> {
        let packages = self.settings.base_packages();
        progress.report(1.0, Some(3.0), "finding uv");
        let uv = self.uv().await?;
        let mut installing = vec!["ipykernel".to_owned()];
        installing.extend(packages.iter().cloned());
        progress.report(2.0, Some(3.0), format!("creating the venv with {}", installing.join(", ")));
        let venv = uv.create_venv(&paths.venv(), self.settings.python.as_deref(), &packages).await?;
        progress.report(3.0, Some(3.0), "the kernel is starting");
        Ok(Session::open(id, self.settings.limits.clone(), paths, Backing::Venv(venv), Graph::new()))
    }

    /// A ready spare whose kernel still runs; spares whose kernel died meanwhile are thrown away.
    fn take_spare(&self) -> Option<Session> {
        loop {
            let spare = self.spares.lock().expect("spares lock").pop()?;
            if spare.kernel_running() {
                return Some(spare);
            }
            tracing::warn!(session = spare.id(), "a spare session's kernel died; discarding it");
            let _ = std::fs::remove_dir_all(self.sessions_dir().join(spare.id()));
        }
    }

    /// Builds spares in the background until as many as the settings ask for are ready. A spare
    /// that fails to build is retried a few times, then given up until the next `create`.
    fn refill_spares(self: &Arc<Self>) {
        if self.settings.spare_sessions == 0 {
            return;
        }
        let manager = Arc::downgrade(self);
        tokio::spawn(async move {
            let Some(manager) = manager.upgrade() else { return };
            let Ok(_filling) = manager.filling.try_lock() else { return };
            let mut failures = 0u32;
            while manager.spares.lock().expect("spares lock").len() < manager.settings.spare_sessions {
                match manager.build_spare().await {
                    Ok(spare) => manager.spares.lock().expect("spares lock").push(spare),
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(%error, failures, "could not build a spare session");
                        if failures >= 3 {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(5) * failures).await;
                    }
                }
            }
        });
    }

    /// A session built ahead of time: venv, started kernel with the base packages imported (no
    /// trace in the user's namespace), marked as a spare on disk until it is handed out.
    async fn build_spare(&self) -> Result<Session> {
        let id = new_session_id();
        let paths = SessionPaths::new(self.sessions_dir().join(&id));
        let built = async {
            create_private_dir(paths.dir())?;
            let marker = paths.spare_marker();
            std::fs::write(&marker, b"").map_err(|source| Error::Io { path: marker, source })?;
            let mut session = self.venv_session(paths.clone(), id.clone(), &Progress::default()).await?;
            session.start_kernel().await?;
            session.warm_up(&self.settings.base_packages()).await?;
            session.save()?;
            Ok::<_, Error>(session)
        };
        let built = built.await;
        if built.is_err() {
            let _ = std::fs::remove_dir_all(paths.dir());
        }
        built
    }

    /// Stops the kernels of sessions nobody has used for `idle`; they come back by replay.
    async fn stop_idle_kernels(&self, idle: Duration) {
        let sessions: Vec<SharedSession> =
            self.sessions.lock().expect("sessions lock").values().cloned().collect();
        for session in sessions {
            // A session in use is not idle: skip it rather than wait for it.
            let Ok(mut session) = session.try_lock() else { continue };
            if session.idle_kernel().is_some_and(|idle_for| idle_for >= idle) {
                tracing::info!(session = session.id(), "stopping an idle kernel");
                session.stop_kernel().await;
            }
        }
    }

    /// Makes a new session: a private directory, the session `build` makes in it (its kernel
    /// started and its graph saved here), registered under a fresh id. Nothing is left behind
    /// when a step fails.
    async fn add_session(
        &self,
        kernel: KernelStart,
        build: impl AsyncFnOnce(SessionPaths, String) -> Result<Session>,
    ) -> Result<String> {
        let id = new_session_id();
        let paths = SessionPaths::new(self.sessions_dir().join(&id));
        let built = async {
            create_private_dir(paths.dir())?;
            let mut session = build(paths.clone(), id.clone()).await?;
            if kernel == KernelStart::Now {
                session.start_kernel().await?;
            }
            session.save()?;
            Ok::<_, Error>(session)
        };
        match built.await {
            Ok(session) => {
                let session: SharedSession = Arc::new(session.into());
                self.sessions.lock().expect("sessions lock").insert(id.clone(), session.clone());
                if kernel == KernelStart::InBackground {
                    // Calls on the session queue behind this start; a failure shows on the next call.
                    tokio::spawn(async move {
                        if let Err(error) = session.lock().await.start_kernel().await {
                            tracing::warn!(%error, "a new session's kernel did not start");
                        }
                    });
                }
                Ok(id)
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(paths.dir());
                Err(error)
            }
        }
    }

    /// The session `id`: in memory, or brought back from its directory (its kernel starts on
    /// first use and replays what is needed).
    ///
    /// # Errors
    /// A malformed id, or one with no session behind it.
    pub fn get(&self, id: &str) -> Result<SharedSession> {
        let valid = id.len() == SESSION_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(Error::InvalidSessionId { given: crate::graph::shown(id) });
        }
        if let Some(session) = self.sessions.lock().expect("sessions lock").get(id) {
            return Ok(session.clone());
        }
        let paths = SessionPaths::new(self.sessions_dir().join(id));
        if !paths.graph().exists() || paths.spare_marker().exists() {
            return Err(Error::UnknownSession { id: id.to_owned() });
        }
        let graph = store::load(&paths.graph())?;
        tracing::info!(session = id, cells = graph.len(), "session brought back from disk");
        let limits = self.settings.limits.clone();
        let session = match std::fs::read(paths.attachment()) {
            Ok(bytes) => {
                let attachment: Attachment = serde_json::from_slice(&bytes).map_err(|error| {
                    Error::InvalidArgument(format!("`{}` is damaged: {error}", paths.attachment().display()))
                })?;
                let head = attachment.head.map_or(KernelHead::Fresh, KernelHead::At);
                Session::open(
                    id.to_owned(),
                    limits,
                    paths,
                    Backing::Attached(attachment.connection_file),
                    graph,
                )
                .with_head(head)
            }
            Err(_) => {
                let venv = Venv::at(paths.venv());
                Session::open(id.to_owned(), limits, paths, Backing::Venv(venv), graph)
            }
        };
        let session = Arc::new(tokio::sync::Mutex::new(session));
        // Another call may have brought it back meanwhile: keep the first.
        let mut sessions = self.sessions.lock().expect("sessions lock");
        Ok(sessions.entry(id.to_owned()).or_insert(session).clone())
    }

    /// Makes a session on a kernel somebody else started, given its connection file. The
    /// kernel must answer now; it is never restarted or killed by us.
    ///
    /// # Errors
    /// A connection file that cannot be read, or a kernel that does not answer.
    pub async fn attach(&self, connection_file: &Path) -> Result<String> {
        let connection_file = std::path::absolute(connection_file)
            .map_err(|source| Error::Io { path: connection_file.to_owned(), source })?;
        // The kernel must answer now: an attach that cannot reach it is refused.
        self.add_session(KernelStart::Now, async |paths: SessionPaths, id: String| {
            let backing = Backing::Attached(connection_file);
            Ok(Session::open(id, self.settings.limits.clone(), paths, backing, Graph::new()))
        })
        .await
    }

    /// Every session on disk, in memory or not, sorted by id.
    pub async fn list(&self) -> Vec<SessionSummary> {
        let Ok(entries) = std::fs::read_dir(self.sessions_dir()) else { return Vec::new() };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|entry| {
                let paths = SessionPaths::new(entry.path());
                paths.graph().exists() && !paths.spare_marker().exists()
            })
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        let mut summaries = Vec::with_capacity(ids.len());
        for id in ids {
            let Ok(session) = self.get(&id) else { continue };
            let session = session.lock().await;
            summaries.push(SessionSummary {
                cells: session.graph().len(),
                kernel_running: session.kernel_running(),
                id,
            });
        }
        summaries
    }

    /// Stops the session's kernel and removes the session and its directory.
    ///
    /// # Errors
    /// A bad id, or a directory that cannot be removed.
    pub async fn destroy(&self, id: &str) -> Result<()> {
        let session = self.get(id)?;
        let mut session = session.lock().await;
        session.destroy().await;
        let dir = self.sessions_dir().join(id);
        std::fs::remove_dir_all(&dir).map_err(|source| Error::Io { path: dir, source })?;
        self.sessions.lock().expect("sessions lock").remove(id);
        Ok(())
    }

    /// Runs `code` in the background on the session (whose lock the caller holds) and returns
    /// the [`LiveCell`] that shows it; the lock is released when the cell ends, so later calls on
    /// the session queue behind it as usual.
    pub fn run_in_background(
        self: &Arc<Self>,
        mut session: tokio::sync::OwnedMutexGuard<Session>,
        code: String,
        parent: Option<CellId>,
        timeout: Option<std::time::Duration>,
    ) -> Arc<LiveCell> {
        let live = Arc::new(LiveCell::new(CellId::new()));
        let session_id = session.id().to_owned();
        self.live.lock().expect("live lock").insert(session_id.clone(), live.clone());
        let manager = self.clone();
        let running = live.clone();
        tokio::spawn(async move {
            let context = CallContext::default();
            let outcome = session.run_cell(&code, parent.as_ref(), timeout, &context, Some(&running)).await;
            running.finish(outcome);
            let mut live = manager.live.lock().expect("live lock");
            if live.get(&session_id).is_some_and(|current| current.id() == running.id()) {
                live.remove(&session_id);
            }
            // The session lock is released here, after the outcome is visible.
        });
        live
    }

    /// The cell `cell` of `session`, if it is still running in the background.
    pub fn live_cell(&self, session: &str, cell: &CellId) -> Option<Arc<LiveCell>> {
        self.live.lock().expect("live lock").get(session).filter(|live| live.id() == cell).cloned()
    }

    /// Stops every kernel (on server shutdown), and removes the spares.
    pub async fn shutdown(&self) {
        let spares = std::mem::take(&mut *self.spares.lock().expect("spares lock"));
        for mut spare in spares {
            spare.stop_kernel().await;
            let _ = std::fs::remove_dir_all(self.sessions_dir().join(spare.id()));
        }
        let sessions: Vec<SharedSession> =
            self.sessions.lock().expect("sessions lock").values().cloned().collect();
        for session in sessions {
            session.lock().await.stop_kernel().await;
        }
    }
}

/// When a new session's kernel starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KernelStart {
    /// Before the session is handed out (it must answer: an attached kernel).
    Now,
    /// Right after, in the background: the caller gets the session id while the kernel starts.
    InBackground,
}

fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..SESSION_ID_LEN].to_owned()
}

fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Io { path: dir.to_owned(), source })
}
