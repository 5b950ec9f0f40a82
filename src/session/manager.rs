//! All sessions of one server: session ids to sessions, created, found on disk, destroyed.
//!
//! Owns the session directory layout under `<data dir>/sessions/`, the index of sessions in
//! memory (each with its [`Records`], so reads never take a session's lock), and the rule that
//! calls on one session run one at a time (each session sits behind its own async mutex, which
//! serves waiters in order) while different sessions run in parallel. A destroyed session's
//! directory is first renamed to a name no session id can have, then removed in the
//! background, so a crash half-way leaves nothing a restarted server mistakes for a session.
//!
//! Spare sessions are built ahead so that `create_repl` answers at once, and they outlive the
//! server: a spare's directory (venv, bytecode, font caches) stays on disk at shutdown with the
//! recipe it was built from written in its marker, and the next server with the same recipe
//! starts only its kernel. A `create` that finds no spare ready waits for the one being built,
//! which is further along than anything it could start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

use super::live::LiveCell;
use super::records::{Records, SessionRecord};
use super::{CallContext, Progress, Session, SessionPaths};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::graph::{CellId, Graph, store};
use crate::private_dir;
use crate::provider::ProviderRecord;
use crate::sandbox::Sandbox;
use crate::util::WriteError;
use crate::venv::Uv;

/// Length of a session id: lowercase hex characters.
const SESSION_ID_LEN: usize = 16;

/// A session shared between the calls that use it; lock it to use it.
pub type SharedSession = Arc<tokio::sync::Mutex<Session>>;

/// Where a destroyed session's directory goes until it is removed: a name starting with this is
/// no session id.
const DESTROYED_PREFIX: &str = ".destroyed-";

/// A line about one session, for listings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSummary {
    /// The session id.
    pub id: String,
    /// How many cells it has (`None` for a graph file of an old format, not counted).
    pub cells: Option<usize>,
    /// Whether a kernel runs for it now.
    pub kernel_running: bool,
}

/// A session in memory: the session (lock it to act on it) and its records (read them without).
#[derive(Clone)]
struct Entry {
    session: SharedSession,
    records: Arc<Records>,
}

impl Entry {
    fn new(session: Session) -> Self {
        let records = session.records().clone();
        Entry { session: Arc::new(tokio::sync::Mutex::new(session)), records }
    }
}

/// The sessions of one server.
pub struct SessionManager {
    settings: Settings,
    uv: OnceCell<Uv>,
    sessions: Mutex<HashMap<String, Entry>>,
    /// The cell each session is running in the background (`run_code` with `wait_s`).
    live: Mutex<HashMap<String, Arc<LiveCell>>>,
    /// Sessions built ahead of time (marked as spares on disk), handed out by `create`.
    spares: Mutex<Vec<Session>>,
    /// Held while spares are being built, so one task at a time builds them.
    filling: tokio::sync::Mutex<()>,
    /// `true` while a spare is being built (not while its builder waits for the machine).
    building: tokio::sync::watch::Sender<bool>,
    /// Spares an earlier server left built for this recipe, whose kernels are to be started.
    left_spares: Mutex<Vec<SessionPaths>>,
}

impl SessionManager {
    /// The sandbox the kernels of this manager's sessions start in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.settings.limits.sandbox
    }

    /// The Jupyter gateway new sessions' kernels start on, when the settings name one.
    pub fn gateway_url(&self) -> Option<&str> {
        self.settings.gateway.url.as_deref()
    }

    /// A manager keeping its sessions under `settings.data_dir()`. Kernels left running by a
    /// server that crashed are killed and their files removed first; destroyed sessions and
    /// spares that were built for other settings (or not finished) are removed, and the spares
    /// this server can use are kept for it.
    pub async fn new(settings: Settings) -> Self {
        let manager = SessionManager {
            settings,
            uv: OnceCell::new(),
            sessions: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            spares: Mutex::new(Vec::new()),
            filling: tokio::sync::Mutex::new(()),
            building: tokio::sync::watch::Sender::new(false),
            left_spares: Mutex::new(Vec::new()),
        };
        // Snapshots are orphans from birth: adopted, the server sees how each one ends.
        crate::kernel::adopt_orphans();
        if let Err(error) = private_dir::create(&manager.sessions_dir()) {
            tracing::warn!(dir = %manager.sessions_dir().display(), %error, "cannot make the sessions directory private");
        }
        if let Ok(sessions) = std::fs::read_dir(manager.sessions_dir()) {
            let mut killed = 0;
            for entry in sessions.flatten() {
                let paths = SessionPaths::new(entry.path());
                killed += manager.stop_left_behind(&paths).await;
                // A spare of an earlier server was never handed out: nobody knows its id, and
                // it is only worth keeping as a spare of this one.
                let spare = paths.spare_marker().exists();
                if spare && manager.can_use_left_spare(&paths) {
                    manager.left_spares.lock().expect("left spares lock").push(paths);
                } else if spare || entry.file_name().to_string_lossy().starts_with(DESTROYED_PREFIX) {
                    remove_in_background(paths.dir().to_owned());
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

    /// Stops, through its provider, the kernels of the session in `paths` that a server which
    /// stopped without cleaning up left running (a session without a readable record is taken
    /// for a local one: its kernels' pid records say what is ours); returns how many stopped.
    async fn stop_left_behind(&self, paths: &SessionPaths) -> usize {
        let record = SessionRecord::load(paths).map_or(ProviderRecord::Local, |record| record.provider);
        match record.open(paths.provider_context(&self.settings.limits, &self.settings.gateway)) {
            Ok(provider) => provider.stop_left_behind().await,
            Err(error) => {
                tracing::warn!(%error, "cannot open a session's provider to clean up after a crash");
                0
            }
        }
    }

    /// uv, found or installed on first use; what it runs in the venvs it builds is confined by
    /// the sessions' sandbox.
    ///
    /// # Errors
    /// When there is no uv and it cannot be installed.
    pub async fn uv(&self) -> Result<&Uv> {
        let data_dir = self.settings.data_dir();
        let sandbox = self.settings.limits.sandbox.clone();
        let locate = async || {
            Ok::<_, crate::venv::VenvError>(
                Uv::locate(self.settings.uv.as_deref(), &data_dir).await?.with_sandbox(sandbox),
            )
        };
        Ok(self.uv.get_or_try_init(locate).await?)
    }

    fn sessions_dir(&self) -> PathBuf {
        self.settings.data_dir().join("sessions")
    }

    /// Starts the background work of a server: keeping spare sessions ready, and stopping
    /// kernels idle for longer than the settings allow. Both end when the manager is dropped.
    pub fn start_background(self: &Arc<Self>) {
        self.refill_spares(true);
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
    /// the background (the first call waits for it); with a gateway, no venv, and its first
    /// kernel started on the gateway before the id is handed out. Nothing is left behind when
    /// a step fails.
    ///
    /// # Errors
    /// When uv or the kernel fails; the error carries their output.
    pub async fn create(self: &Arc<Self>, progress: &Progress) -> Result<String> {
        let spare = match self.take_spare() {
            Some(spare) => Some(spare),
            None => self.spare_under_way(progress).await,
        };
        let created = match spare {
            Some(session) => {
                let id = session.id().to_owned();
                let marker = SessionPaths::new(self.sessions_dir().join(&id)).spare_marker();
                std::fs::remove_file(&marker)
                    .map_err(|source| Error::Io(WriteError { path: marker, source }))?;
                self.sessions.lock().expect("sessions lock").insert(id.clone(), Entry::new(session));
                progress.report(3.0, Some(3.0), "a session was ready");
                Ok(id)
            }
            None => {
                let build = async |paths, id| self.new_session(paths, id, progress).await;
                // A gateway's kernel must answer now: a refused token or an unknown kernelspec
                // is told to create_repl, not to the first run_code.
                let start = if self.settings.gateway.url.is_some() {
                    KernelStart::Now
                } else {
                    KernelStart::InBackground
                };
                self.add_session(start, build).await
            }
        };
        self.refill_spares(false);
        created
    }

    /// A new session in `paths`, not started: its kernels on the gateway the settings name, or
    /// else in a new venv of its own.
    async fn new_session(&self, paths: SessionPaths, id: String, progress: &Progress) -> Result<Session> {
        let gateway = &self.settings.gateway;
        let provider = match &gateway.url {
            Some(url) => {
                progress.report(3.0, Some(3.0), format!("the kernel is starting on the gateway `{url}`"));
                let kernel_name = gateway.gateway_kernel_name.clone();
                ProviderRecord::Gateway { url: url.clone(), kernel_name, installs: Vec::new() }
            }
            None => {
                let packages = self.settings.base_packages();
                progress.report(1.0, Some(3.0), "finding uv");
                let uv = self.uv().await?;
                let mut installing: Vec<String> = crate::venv::KERNEL_PACKAGES.map(str::to_owned).into();
                installing.extend(packages.iter().cloned());
                progress.report(2.0, Some(3.0), format!("creating the venv with {}", installing.join(", ")));
                // The local provider runs the session's kernels in this venv.
                uv.create_venv(&paths.venv(), self.settings.python.as_deref(), &packages).await?;
                progress.report(3.0, Some(3.0), "the kernel is starting");
                ProviderRecord::Local
            }
        };
        let record = SessionRecord::new(provider);
        Session::open(
            id,
            self.settings.limits.clone(),
            gateway,
            paths,
            &record,
            Graph::new(),
            &self.settings.base_packages(),
        )
    }

    /// The spare being built now, once it is ready (`None` when none is, or it failed).
    async fn spare_under_way(&self, progress: &Progress) -> Option<Session> {
        let mut building = self.building.subscribe();
        if !*building.borrow_and_update() {
            return None;
        }
        progress.report(1.0, Some(3.0), "waiting for the session being prepared");
        building.wait_for(|building| !*building).await.ok()?;
        self.take_spare()
    }

    /// What a spare of this server is built from, written in its marker once it is ready; a
    /// spare left by an earlier server is kept when its recipe is this one. `None` for sessions
    /// on a gateway, whose spares are not kept.
    fn spare_recipe(&self) -> Option<String> {
        if self.settings.gateway.url.is_some() {
            return None;
        }
        let recipe = serde_json::json!({
            "server": env!("CARGO_PKG_VERSION"),
            "python": self.settings.python,
            "base_packages": self.settings.base_packages(),
        });
        Some(recipe.to_string())
    }

    /// Whether the spare an earlier server left in `paths` is one this server would have built,
    /// finished, and wanted (no more spares kept than the settings ask for).
    fn can_use_left_spare(&self, paths: &SessionPaths) -> bool {
        let wanted = self.left_spares.lock().expect("left spares lock").len() < self.settings.spare_sessions;
        let recipe = std::fs::read_to_string(paths.spare_marker()).ok();
        wanted && recipe.is_some() && recipe == self.spare_recipe()
    }

    /// A ready spare whose kernel still runs; spares whose kernel died meanwhile are thrown away.
    fn take_spare(&self) -> Option<Session> {
        loop {
            let spare = self.spares.lock().expect("spares lock").pop()?;
            if spare.kernel_running() {
                return Some(spare);
            }
            tracing::warn!(session = spare.id(), "a spare session's kernel died; discarding it");
            remove_in_background(self.sessions_dir().join(spare.id()));
        }
    }

    /// Builds spares in the background until as many as the settings ask for are ready. A spare
    /// that fails to build is retried a few times, then given up until the next `create`. Each
    /// build waits for the machine to be free of cells, except a server's first (`at_once`),
    /// which counts as under way from this call on.
    fn refill_spares(self: &Arc<Self>, at_once: bool) {
        if self.settings.spare_sessions == 0 {
            return;
        }
        if at_once {
            self.building.send_replace(true);
        }
        let manager = Arc::downgrade(self);
        tokio::spawn(async move {
            let Some(manager) = manager.upgrade() else { return };
            manager.fill_spares(at_once).await;
            manager.building.send_replace(false);
        });
    }

    async fn fill_spares(&self, at_once: bool) {
        let Ok(_filling) = self.filling.try_lock() else { return };
        let mut failures = 0u32;
        let mut wait = !at_once;
        while self.spares.lock().expect("spares lock").len() < self.settings.spare_sessions {
            if std::mem::replace(&mut wait, true) {
                crate::background::idle().await;
            }
            self.building.send_replace(true);
            let built = self.build_spare().await;
            // The spare joins the list before a `create` waiting for it is woken.
            let failed = built.map(|spare| self.spares.lock().expect("spares lock").push(spare)).err();
            self.building.send_replace(false);
            if let Some(error) = failed {
                failures += 1;
                tracing::warn!(%error, failures, "could not build a spare session");
                if failures >= 3 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(5) * failures).await;
            }
        }
    }

    /// A session built ahead of time, or left built by an earlier server: venv, started kernel
    /// importing the base packages (no trace in the user's namespace), marked as a spare on disk
    /// until it is handed out.
    async fn build_spare(&self) -> Result<Session> {
        loop {
            let Some(paths) = self.left_spares.lock().expect("left spares lock").pop() else { break };
            match self.revive_spare(&paths).await {
                Ok(spare) => return Ok(spare),
                Err(error) => {
                    tracing::info!(%error, "a spare left by an earlier server does not start: removing it");
                    remove_in_background(paths.dir().to_owned());
                }
            }
        }
        let id = new_session_id();
        let paths = SessionPaths::new(self.sessions_dir().join(&id));
        let built = async {
            create_session_dir(paths.dir())?;
            let marker = paths.spare_marker();
            std::fs::write(&marker, b"").map_err(|source| Error::Io(WriteError { path: marker, source }))?;
            let mut session = self.new_session(paths.clone(), id.clone(), &Progress::default()).await?;
            self.ready_spare(&mut session).await?;
            Ok::<_, Error>(session)
        };
        let built = built.await;
        if built.is_err() {
            let _ = std::fs::remove_dir_all(paths.dir());
        }
        built
    }

    /// The spare an earlier server left in `paths`, ready again.
    async fn revive_spare(&self, paths: &SessionPaths) -> Result<Session> {
        let id = paths.dir().file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let record = SessionRecord::load(paths)?;
        let (limits, base_packages) = (self.settings.limits.clone(), self.settings.base_packages());
        let mut spare = Session::open(
            id,
            limits,
            &self.settings.gateway,
            paths.clone(),
            &record,
            Graph::new(),
            &base_packages,
        )?;
        let readied = self.ready_spare(&mut spare).await;
        if readied.is_err() {
            spare.discard_kernels().await;
        }
        readied.map(|()| spare)
    }

    /// Starts `spare`'s kernel, sets it importing the base packages and saves it: from then on
    /// it may be handed out. Its marker gets the recipe, so a later server may keep it.
    async fn ready_spare(&self, spare: &mut Session) -> Result<()> {
        spare.start_kernel().await?;
        spare.warm_up(&self.settings.base_packages()).await?;
        spare.save()?;
        let marker = SessionPaths::new(self.sessions_dir().join(spare.id())).spare_marker();
        let recipe = self.spare_recipe().unwrap_or_default();
        std::fs::write(&marker, recipe).map_err(|source| Error::Io(WriteError { path: marker, source }))
    }

    /// Stops the kernels of sessions nobody has used for `idle`; they come back by replay.
    async fn stop_idle_kernels(&self, idle: Duration) {
        for session in self.in_memory() {
            // A session in use is not idle: skip it rather than wait for it.
            let Ok(mut session) = session.try_lock() else { continue };
            if session.idle_kernels().is_some_and(|idle_for| idle_for >= idle) {
                tracing::info!(session = session.id(), "stopping idle kernels");
                session.stop_kernels().await;
            }
        }
    }

    fn in_memory(&self) -> Vec<SharedSession> {
        self.sessions.lock().expect("sessions lock").values().map(|entry| entry.session.clone()).collect()
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
            create_session_dir(paths.dir())?;
            let mut session = build(paths.clone(), id.clone()).await?;
            if kernel == KernelStart::Now {
                session.start_kernel().await?;
            }
            session.save()?;
            Ok::<_, Error>(session)
        };
        match built.await {
            Ok(session) => {
                let entry = Entry::new(session);
                let session = entry.session.clone();
                self.sessions.lock().expect("sessions lock").insert(id.clone(), entry);
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
        Ok(self.entry(id)?.session)
    }

    /// What the session `id` has recorded, readable while its cells run.
    ///
    /// # Errors
    /// As [`SessionManager::get`].
    pub fn records(&self, id: &str) -> Result<Arc<Records>> {
        Ok(self.entry(id)?.records)
    }

    fn entry(&self, id: &str) -> Result<Entry> {
        let paths = self.session_paths(id)?;
        if let Some(entry) = self.sessions.lock().expect("sessions lock").get(id) {
            return Ok(entry.clone());
        }
        let graph = store::load(&paths.graph())?;
        let record = SessionRecord::load(&paths)?;
        // Written by an older server, or its mode changed since: only we may enter it.
        create_session_dir(paths.dir())?;
        tracing::info!(session = id, cells = graph.len(), "session brought back from disk");
        let limits = self.settings.limits.clone();
        let session = Session::open(
            id.to_owned(),
            limits,
            &self.settings.gateway,
            paths,
            &record,
            graph,
            &self.settings.base_packages(),
        )?;
        // Another call may have brought it back meanwhile: keep the first.
        let mut sessions = self.sessions.lock().expect("sessions lock");
        Ok(sessions.entry(id.to_owned()).or_insert_with(|| Entry::new(session)).clone())
    }

    /// The files of the session `id`, checked to be a session's.
    fn session_paths(&self, id: &str) -> Result<SessionPaths> {
        if !is_session_id(id) {
            return Err(Error::InvalidSessionId { given: crate::util::shown(id) });
        }
        let paths = SessionPaths::new(self.sessions_dir().join(id));
        let in_memory = self.sessions.lock().expect("sessions lock").contains_key(id);
        if !in_memory && (!paths.graph().exists() || paths.spare_marker().exists()) {
            return Err(Error::UnknownSession { id: id.to_owned() });
        }
        Ok(paths)
    }

    /// Makes a session on a kernel somebody else started, given its connection file. The
    /// kernel must answer now; it is never restarted or killed by us.
    ///
    /// # Errors
    /// A connection file that cannot be read, one a kernel may have written (in the data
    /// directory or a `--sandbox-write` directory), or a kernel that does not answer.
    pub async fn attach(&self, connection_file: &Path) -> Result<String> {
        if connection_file.as_os_str().is_empty() {
            return Err(Error::InvalidArgument(
                "connection_file is empty; pass the path of the running kernel's connection file".into(),
            ));
        }
        let connection_file = std::path::absolute(connection_file)
            .map_err(|source| Error::Io(WriteError { path: connection_file.to_owned(), source }))?;
        let kernel_writable: Vec<PathBuf> = [self.settings.data_dir()]
            .into_iter()
            .chain(self.settings.limits.sandbox.writable_dirs().iter().cloned())
            .collect();
        crate::provider::refuse_kernel_written(&connection_file, &kernel_writable)
            .map_err(Error::InvalidArgument)?;
        // The kernel must answer now: an attach that cannot reach it is refused.
        self.add_session(KernelStart::Now, async |paths: SessionPaths, id: String| {
            let record = SessionRecord::new(ProviderRecord::Attached { connection_file });
            Session::open(
                id,
                self.settings.limits.clone(),
                &self.settings.gateway,
                paths,
                &record,
                Graph::new(),
                &self.settings.base_packages(),
            )
        })
        .await
    }

    /// Every session on disk, in memory or not, sorted by id; answered from records, without
    /// waiting for any session or loading the graphs of sessions not in memory.
    pub fn list(&self) -> Vec<SessionSummary> {
        let Ok(entries) = std::fs::read_dir(self.sessions_dir()) else { return Vec::new() };
        let mut ids: Vec<String> = entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|id| is_session_id(id))
            .collect();
        ids.sort();
        let in_memory = self.sessions.lock().expect("sessions lock").clone();
        ids.into_iter()
            .filter_map(|id| match in_memory.get(&id) {
                Some(entry) => Some(SessionSummary {
                    cells: Some(entry.records.graph().len()),
                    kernel_running: entry.records.kernel_running(),
                    id,
                }),
                None => {
                    let paths = SessionPaths::new(self.sessions_dir().join(&id));
                    let listed = paths.graph().exists() && !paths.spare_marker().exists();
                    listed.then(|| SessionSummary {
                        cells: store::count_cells(&paths.graph()),
                        kernel_running: false,
                        id,
                    })
                }
            })
            .collect()
    }

    /// Destroys the session `id` at once: it is unregistered (later and waiting calls find no
    /// session), a cell it runs is stopped, its kernels are got rid of, and its directory is
    /// renamed out of the way and removed in the background.
    ///
    /// # Errors
    /// A bad id, or a directory that cannot be renamed (then nothing changed).
    pub async fn destroy(&self, id: &str) -> Result<()> {
        let paths = self.session_paths(id)?;
        let trash =
            self.sessions_dir().join(format!("{DESTROYED_PREFIX}{id}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::rename(paths.dir(), &trash)
            .map_err(|source| Error::Io(WriteError { path: paths.dir().to_owned(), source }))?;
        let entry = self.sessions.lock().expect("sessions lock").remove(id);
        let Some(entry) = entry else {
            remove_in_background(trash);
            return Ok(());
        };
        entry.records.destroyed().cancel();
        match entry.session.clone().try_lock_owned() {
            Ok(mut session) => {
                session.discard_kernels().await;
                remove_in_background(trash);
            }
            // A cell runs: it sees the cancellation and kills its kernel; the rest follows.
            Err(_) => {
                tokio::spawn(async move {
                    entry.session.lock().await.discard_kernels().await;
                    remove_in_background(trash);
                });
            }
        }
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
            let context = CallContext { interrupt: running.interrupter().clone(), ..CallContext::default() };
            let outcome = session.run_cell(&code, parent.as_ref(), timeout, &context, Some(&running)).await;
            if let Ok(run) = &outcome {
                super::copy_when_idle(tokio::sync::OwnedMutexGuard::mutex(&session).clone(), run);
            }
            running.finish(outcome);
            let mut live = manager.live.lock().expect("live lock");
            if live.get(&session_id).is_some_and(|current| current.id() == running.id()) {
                live.remove(&session_id);
            }
            // The session lock is released here, after the outcome is visible.
        });
        live
    }

    /// The limits of cells, replies and files.
    pub fn limits(&self) -> &crate::config::Limits {
        &self.settings.limits
    }

    /// How long an interrupted cell gets to stop before its kernel is killed.
    pub fn interrupt_grace(&self) -> Duration {
        Duration::from_secs_f64(self.settings.limits.interrupt_grace)
    }

    /// The cell `cell` of `session`, if it is still running in the background.
    pub fn live_cell(&self, session: &str, cell: &CellId) -> Option<Arc<LiveCell>> {
        self.live.lock().expect("live lock").get(session).filter(|live| live.id() == cell).cloned()
    }

    /// Stops every kernel (on server shutdown). The spares' directories stay for the next
    /// server, unless no server could keep them (a gateway's).
    pub async fn shutdown(&self) {
        let spares = std::mem::take(&mut *self.spares.lock().expect("spares lock"));
        for mut spare in spares {
            spare.discard_kernels().await;
            if self.spare_recipe().is_none() {
                let _ = std::fs::remove_dir_all(self.sessions_dir().join(spare.id()));
            }
        }
        for session in self.in_memory() {
            session.lock().await.stop_kernels().await;
        }
    }
}

/// When a new session's kernel starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KernelStart {
    /// Before the session is handed out (it must answer: an attached kernel, a gateway's).
    Now,
    /// Right after, in the background: the caller gets the session id while the kernel starts.
    InBackground,
}

fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..SESSION_ID_LEN].to_owned()
}

/// Whether `id` has the form of the ids we generate (so it names no path but its own).
fn is_session_id(id: &str) -> bool {
    id.len() == SESSION_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn create_session_dir(dir: &Path) -> Result<()> {
    private_dir::create(dir).map_err(|source| Error::Io(WriteError { path: dir.to_owned(), source }))
}

/// Removes a directory nobody uses any more, off the caller's path.
fn remove_in_background(dir: PathBuf) {
    tokio::task::spawn_blocking(move || {
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), %error, "cannot remove a directory");
        }
    });
}
