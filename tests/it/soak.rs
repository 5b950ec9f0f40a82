//! A model-based soak test of `run_code`: hundreds of cells on random parents in three sessions
//! run in parallel, some raising, with kernels SIGKILLed between and during calls. A reference
//! model of the cell graph predicts what every call prints; each call must print exactly that.
//!
//! Each cell sets or deletes a few of the variables `a`..`d` from their values in its parent's
//! state and prints all of them, so the printed text names the kernel's whole state. A seeded
//! xorshift generator draws parents, code and kills; set `MCP_PYREPL_SOAK_SEED` to replay a
//! failure (the message prints the seed) and `MCP_PYREPL_SOAK_CALLS` for a longer one. The
//! ignored `long_soak_of_a_thousand_calls` runs over a thousand calls with kills (`.ci/run` runs
//! it when `MCP_PYREPL_LONG_SOAK=1`).
//!
//! The snapshot shape (`snapshot_shaped_soak…`) draws more new roots, has cells that SIGKILL
//! their own kernel (each followed by a call under its parent), and kills single kernel
//! processes, copies included, so that the pool's copies of copies, copies that die coming up
//! and copies of dying kernels are all met; its long run (`long_soak_of_two_thousand_calls`)
//! makes 2,001 calls.
//!
//! No timing decides an outcome: a cell to be killed midway touches a marker file and then waits
//! on a file the test removes after the kill, so the kill always lands in the cell's own code and
//! never in the replay before it; and a kill between calls waits until the server has reaped the
//! kernel, so the next call cannot reach a kernel the server still thinks alive.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rmcp::model::CallToolResult;
use serde_json::Value;

use super::common::within;
use super::mcp_client::{Server, data_dir, texts};

/// Sessions driven in parallel, one driver each.
const SESSIONS: usize = 3;
/// `run_code` calls per session unless `MCP_PYREPL_SOAK_CALLS` says otherwise.
const CALLS_PER_SESSION: usize = 70;
/// `run_code` calls per session of the snapshot-shaped soak unless `MCP_PYREPL_SOAK_CALLS` says
/// otherwise: enough for the lineages of copies of copies that once hit the recursion limit.
const SNAPSHOT_SOAK_CALLS_PER_SESSION: usize = 150;
/// `run_code` calls per session of the long soak: 2,001 in all.
const LONG_SOAK_CALLS_PER_SESSION: usize = 667;
/// The variables cells assign; the printed state lists those defined, in this order.
const NAMES: [char; 4] = ['a', 'b', 'c', 'd'];
/// Every value is reduced modulo this prime, so Python ints stay small and print exactly.
const MODULUS: u64 = 1_000_003;
/// The last line of every cell: the state as a dict in name order, e.g. `{'a': 5, 'c': 12}`.
const PRINT_STATE: &str = "print({k: globals()[k] for k in ('a', 'b', 'c', 'd') if k in globals()})";
/// Entries of a session's history shown in a failure message.
const HISTORY_SHOWN: usize = 12;

/// The variables of one state, by name.
type State = BTreeMap<char, u64>;

/// xorshift64*: small, seeded, and the same sequence on every platform.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds give unrelated streams and 0 is no fixed point.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability 1 in `n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<T: Copy>(&mut self, items: impl IntoIterator<Item = T>) -> T {
        let items: Vec<T> = items.into_iter().collect();
        items[self.below(items.len())]
    }
}

/// What a generated cell does besides changing the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Prints the state and succeeds.
    Ok,
    /// Prints the state after its first statement, then raises `ValueError`; the statement after
    /// the raise never runs.
    Raises,
    /// Waits after its first statement until the test kills its kernel. Replayed later, it does
    /// not wait, so its children see its full effects.
    KilledMidway,
    /// SIGKILLs its own kernel after its first statement: never a parent, never run again.
    KillsItself,
}

/// How a soak draws its calls.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// A new root one call in this many.
    roots_one_in: usize,
    /// Kills kernels between and during calls.
    kills: bool,
    /// Cells that kill their own kernel, one call in this many (0: none), and kills of one
    /// process of the session (a kernel or a copy) between calls.
    self_kills_one_in: usize,
}

impl Shape {
    /// The first soak's: few roots, kills of every kernel of the session when `kills`.
    const fn plain(kills: bool) -> Self {
        Shape { roots_one_in: 8, kills, self_kills_one_in: 0 }
    }

    /// The snapshot shape: a root one call in five, a self-kill one in 25, and single kills,
    /// but no kill of every kernel (that would start each lineage of copies afresh).
    const SNAPSHOTS: Shape = Shape { roots_one_in: 5, kills: false, self_kills_one_in: 25 };
}

/// A generated cell: its code, the state it leaves and what it prints when it runs to the end.
struct Generated {
    code: String,
    kind: Kind,
    state: State,
    printed: String,
}

/// One statement on `state`: an assignment from existing variables and constants, or a `del`.
fn statement(rng: &mut Rng, state: &mut State) -> String {
    if state.len() >= 2 && rng.one_in(8) {
        let name = rng.pick(state.keys().copied());
        state.remove(&name);
        return format!("del {name}");
    }
    let target = rng.pick(NAMES);
    let constant = rng.below(1000) as u64;
    let (code, value) = if state.is_empty() {
        (format!("{target} = {constant}"), constant)
    } else {
        let source = rng.pick(state.keys().copied());
        let factor = 2 + rng.below(9) as u64;
        let mut expression = format!("{source} * {factor} + {constant}");
        let mut value = state[&source] * factor + constant;
        if state.len() >= 2 && rng.one_in(3) {
            let other = rng.pick(state.keys().copied());
            write!(expression, " + {other}").unwrap();
            value += state[&other];
        }
        (format!("{target} = ({expression}) % {MODULUS}"), value % MODULUS)
    };
    state.insert(target, value);
    code
}

/// What `PRINT_STATE` prints for `state`.
fn printed(state: &State) -> String {
    let entries: Vec<String> = state.iter().map(|(name, value)| format!("'{name}': {value}")).collect();
    format!("{{{}}}\n", entries.join(", "))
}

/// A new cell on `parent_state`. A `KilledMidway` cell touches `marker` once it runs its own
/// code, then waits (at most 10 s) while `hold` exists.
fn generate(rng: &mut Rng, parent_state: &State, kind: Kind, marker: &Path, hold: &Path) -> Generated {
    let mut state = parent_state.clone();
    let first = statement(rng, &mut state);
    let code = match kind {
        Kind::Ok if rng.one_in(2) => {
            let second = statement(rng, &mut state);
            format!("{first}\n{second}\n{PRINT_STATE}")
        }
        Kind::Ok => format!("{first}\n{PRINT_STATE}"),
        Kind::Raises => {
            let mut unreached = state.clone();
            let second = statement(rng, &mut unreached);
            format!("{first}\n{PRINT_STATE}\nraise ValueError('soak')\n{second}")
        }
        Kind::KilledMidway => format!(
            "{first}\n__import__('pathlib').Path({marker:?}).touch()\n\
             for _hold in range(1000):\n    \
                 if not __import__('os').path.exists({hold:?}):\n        break\n    \
                 __import__('time').sleep(0.01)\n\
             {PRINT_STATE}"
        ),
        Kind::KillsItself => format!("{first}\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
    };
    let printed = printed(&state);
    Generated { code, kind, state, printed }
}

/// A cell the server reported, as the model sees it.
struct ModelCell {
    id: String,
    parent: Option<usize>,
    code: String,
    kind: Kind,
    state: State,
}

/// One session's model and its driver's state.
struct SessionModel {
    index: usize,
    id: String,
    rng: Rng,
    cells: Vec<ModelCell>,
    /// Calls and kills so far, for failure messages.
    history: Vec<String>,
    /// The kernel was killed since the last call: the next one must report a new kernel or a
    /// snapshot.
    kernel_killed: bool,
    /// The last call ran the code of this earlier cell again.
    rerun_of: Option<usize>,
}

impl SessionModel {
    /// Whether `ancestor` is on the path to `cell` (and is not `cell`).
    fn descends(&self, cell: usize, ancestor: usize) -> bool {
        let mut next = self.cells[cell].parent;
        while let Some(index) = next {
            if index == ancestor {
                return true;
            }
            next = self.cells[index].parent;
        }
        false
    }

    /// Cell ids from the root to `cell`, inclusive.
    fn path(&self, cell: Option<usize>) -> Vec<String> {
        let mut path = Vec::new();
        let mut next = cell;
        while let Some(index) = next {
            path.push(self.cells[index].id.clone());
            next = self.cells[index].parent;
        }
        path.reverse();
        path
    }

    /// A random parent: none (one call in `roots_one_in`), the latest cell (the common
    /// "continue" case), or any cell; never a cell that killed its own kernel. Right after a
    /// rerun of cell X, often a descendant of X: the kernel holds X's chain hash, so it only has
    /// to run the rest of the path, a case nothing else reaches.
    fn pick_parent(&mut self, roots_one_in: usize) -> Option<usize> {
        let parents: Vec<usize> =
            (0..self.cells.len()).filter(|&c| self.cells[c].kind != Kind::KillsItself).collect();
        if let Some(original) = self.rerun_of.take() {
            let below: Vec<usize> =
                parents.iter().copied().filter(|&c| c > original && self.descends(c, original)).collect();
            if !below.is_empty() && !self.rng.one_in(3) {
                return Some(self.rng.pick(below));
            }
        }
        if parents.is_empty() || self.rng.one_in(roots_one_in) {
            return None;
        }
        if self.rng.below(7) < 4 { parents.last().copied() } else { Some(self.rng.pick(parents)) }
    }
}

/// What one driver needs besides its session.
struct Soak<'a> {
    server: &'a Server,
    data: &'a Path,
    seed: u64,
    calls_per_session: usize,
    shape: Shape,
    /// Numbers calls across the sessions, in the order they start.
    counter: AtomicUsize,
}

impl Soak<'_> {
    async fn drive(&self, mut session: SessionModel) {
        let shape = self.shape;
        // After a cell that killed its own kernel: its parent, for the next call.
        let mut under: Option<Option<usize>> = None;
        for call in 0..self.calls_per_session {
            // Touched by the kernel, and the hold it waits on, inside its session: a confined
            // kernel sees nothing of the machine outside its own files.
            let marker = self
                .data
                .join("sessions")
                .join(&session.id)
                .join("work")
                .join(format!("soak-{call}.started"));
            let hold = marker.with_extension("hold");
            // Kills are random, plus one of each kind at a fixed call so that every run has them.
            let kill_midway = shape.kills && (call == self.calls_per_session / 2 || session.rng.one_in(25));
            let kill_after = shape.kills && (call == self.calls_per_session / 3 || session.rng.one_in(15));
            let kills_itself = shape.self_kills_one_in > 0
                && !kill_midway
                && (call == self.calls_per_session / 4 || session.rng.one_in(shape.self_kills_one_in));
            let kill_one = shape.self_kills_one_in > 0 && !kill_after && session.rng.one_in(10);
            let again = session.rng.below(session.cells.len().max(1));
            let mut rerun = None;
            let (parent, generated) = if !kill_midway
                && !kills_itself
                && under.is_none()
                && session.rng.one_in(12)
                && session.cells.get(again).is_some_and(|c| matches!(c.kind, Kind::Ok | Kind::Raises))
            {
                // The code of an earlier cell again, under the same parent: a new cell with the
                // same chain hash, which a kernel holding the first one may take as its state.
                rerun = Some(again);
                let cell = &session.cells[again];
                let generated = Generated {
                    code: cell.code.clone(),
                    kind: cell.kind,
                    state: cell.state.clone(),
                    printed: printed(&cell.state),
                };
                (cell.parent, generated)
            } else {
                let parent = match under.take() {
                    Some(parent) => parent,
                    None => session.pick_parent(shape.roots_one_in),
                };
                let kind = if kill_midway {
                    Kind::KilledMidway
                } else if kills_itself {
                    under = Some(parent);
                    Kind::KillsItself
                } else if session.rng.one_in(10) {
                    Kind::Raises
                } else {
                    Kind::Ok
                };
                let parent_state = parent.map(|p| session.cells[p].state.clone()).unwrap_or_default();
                (parent, generate(&mut session.rng, &parent_state, kind, &marker, &hold))
            };
            self.call(&mut session, parent, generated, &marker, &hold).await;
            session.rerun_of = rerun;
            if kill_after {
                let killed = kill_kernels(&session.id, None).await;
                if !killed.is_empty() {
                    session.kernel_killed = true;
                }
                session.history.push(format!("killed kernel {killed:?} between calls"));
            } else if kill_one {
                // A kernel or a copy: the others may still serve, so no restart is expected.
                let pick = session.rng.next();
                let killed = kill_kernels(&session.id, Some(pick)).await;
                session.history.push(format!("killed one process {killed:?} between calls"));
            }
        }
    }

    /// Runs one generated cell and checks it against the model, then records it.
    async fn call(
        &self,
        session: &mut SessionModel,
        parent: Option<usize>,
        generated: Generated,
        marker: &Path,
        hold: &Path,
    ) {
        let index = self.counter.fetch_add(1, Ordering::Relaxed);
        let parent_id = parent.map(|p| session.cells[p].id.clone());
        let context =
            Context { soak: self, session, index, parent: parent_id.as_deref(), generated: &generated };
        let result = match generated.kind {
            Kind::KilledMidway => {
                std::fs::write(hold, "").unwrap();
                let call = self.server.run(&session.id, &generated.code, parent_id.as_deref());
                tokio::pin!(call);
                tokio::select! {
                    result = &mut call => context.fail(
                        "the call ended before its kernel was killed",
                        Some(&result),
                    ),
                    () = appears(marker) => {}
                }
                let killed = kill_kernels(&session.id, None).await;
                if killed.is_empty() {
                    context.fail("no kernel process to kill while the call ran", None);
                }
                std::fs::remove_file(hold).unwrap();
                call.await
            }
            Kind::Ok | Kind::Raises | Kind::KillsItself => {
                self.server.run(&session.id, &generated.code, parent_id.as_deref()).await
            }
        };
        let cell_id = context.check(&result);

        // A cell that killed its own kernel leaves the other kernels and copies alive.
        session.kernel_killed = generated.kind == Kind::KilledMidway;
        let note = match generated.kind {
            Kind::KilledMidway => " (killed midway)",
            Kind::KillsItself => " (killed itself)",
            Kind::Ok | Kind::Raises => "",
        };
        session.history.push(format!("call #{index} on {parent_id:?} -> {cell_id}{note}"));
        session.cells.push(ModelCell {
            id: cell_id,
            parent,
            code: generated.code,
            kind: generated.kind,
            state: generated.state,
        });
    }
}

/// One call being checked: what a failure message needs.
struct Context<'a> {
    soak: &'a Soak<'a>,
    session: &'a SessionModel,
    index: usize,
    parent: Option<&'a str>,
    generated: &'a Generated,
}

impl Context<'_> {
    /// Checks `result` against the model; returns the new cell id.
    fn check(&self, result: &CallToolResult) -> String {
        let texts = texts(result);
        let Some(structured) = &result.structured_content else {
            self.fail("no structuredContent: the cell was not recorded", Some(result));
        };
        let (status, is_error) = match self.generated.kind {
            Kind::Ok => ("ok", false),
            Kind::Raises => ("error", true),
            Kind::KilledMidway | Kind::KillsItself => ("kernel_died", true),
        };
        if structured["status"] != status || result.is_error.unwrap_or(false) != is_error {
            self.fail(&format!("expected status {status:?} with is_error {is_error}"), Some(result));
        }
        let cell_id = structured["cell_id"].as_str().unwrap_or_default().to_owned();
        if texts.last() != Some(&cell_id) {
            self.fail("the last text item is not structuredContent.cell_id", Some(result));
        }
        if structured["parent_cell_id"] != self.parent.map_or(Value::Null, Value::from) {
            self.fail("structuredContent.parent_cell_id is not the parent sent", Some(result));
        }
        self.check_replay(structured, result);

        let outputs = &texts[..texts.len() - 1];
        let stdout = match self.generated.kind {
            Kind::Ok => outputs.join(""),
            Kind::Raises => match outputs.split_last() {
                Some((traceback, stdout)) if traceback.contains("ValueError: soak") => stdout.join(""),
                _ => self.fail("expected a `ValueError: soak` traceback", Some(result)),
            },
            // What a killed cell printed is not checked; its effects are, through its children.
            Kind::KilledMidway | Kind::KillsItself => return cell_id,
        };
        if stdout != self.generated.printed {
            self.fail(
                &format!("stdout differs\n  expected: {:?}\n  got:      {stdout:?}", self.generated.printed),
                Some(result),
            );
        }
        cell_id
    }

    /// The cells replayed must be the end of the parent's path (all of it on a new kernel), and
    /// a kernel killed since the last call must show as a new kernel.
    fn check_replay(&self, structured: &Value, result: &CallToolResult) {
        let parent = self.parent.map(|id| self.session.cells.iter().position(|c| c.id == id).unwrap());
        let path = self.session.path(parent);
        let replayed: Option<Vec<String>> = structured["replayed_cell_ids"]
            .as_array()
            .and_then(|ids| ids.iter().map(|id| id.as_str().map(str::to_owned)).collect());
        let Some(replayed) = replayed else {
            self.fail("structuredContent.replayed_cell_ids is not a list of ids", Some(result));
        };
        let restarted = structured["kernel_restarted"] == true;
        if !path.ends_with(&replayed) || restarted && replayed != path {
            self.fail(
                &format!(
                    "replayed {replayed:?} (kernel_restarted: {restarted}), but the parent's path is {path:?}"
                ),
                Some(result),
            );
        }
        // Or a snapshot: one being forked as the kill came (the state the last call left, or the
        // fresh state's copy) may come up after it.
        let from_snapshot = structured["snapshot"]["used"] == true;
        if self.session.kernel_killed && !restarted && !from_snapshot {
            self.fail(
                "the kernel was killed before this call, yet neither kernel_restarted nor snapshot.used",
                Some(result),
            );
        }
    }

    fn fail(&self, what: &str, result: Option<&CallToolResult>) -> ! {
        let session = self.session;
        let seed = self.soak.seed;
        let mut message = format!(
            "soak (seed {seed}; rerun with MCP_PYREPL_SOAK_SEED={seed}, {:?}) diverged at call #{} \
             (session {} = {}, its call #{}) on parent {:?}: {what}\n",
            self.soak.shape,
            self.index,
            session.index,
            session.id,
            session.cells.len(),
            self.parent,
        );
        write!(message, "--- code ({:?})\n{}\n", self.generated.kind, self.generated.code).unwrap();
        write!(message, "--- expected stdout\n{:?}\n", self.generated.printed).unwrap();
        if let Some(result) = result {
            write!(
                message,
                "--- got (is_error {:?})\n{:#?}\n--- structuredContent\n{}\n",
                result.is_error,
                texts(result),
                result.structured_content.as_ref().map(Value::to_string).unwrap_or_default(),
            )
            .unwrap();
        }
        message.push_str("--- the parent's path (cell: state after it; code)\n");
        let mut next = self.parent.and_then(|id| session.cells.iter().position(|c| c.id == id));
        let mut path = Vec::new();
        while let Some(index) = next {
            let cell = &session.cells[index];
            path.push(format!("{}: {}\n{}\n", cell.id, printed(&cell.state).trim_end(), cell.code));
            next = cell.parent;
        }
        path.reverse();
        message.push_str(&path.concat());
        let shown = session.history.len().saturating_sub(HISTORY_SHOWN);
        message.push_str("--- the session's last events\n");
        message.push_str(&session.history[shown..].join("\n"));
        panic!("{message}");
    }
}

/// Waits until `path` exists.
async fn appears(path: &Path) {
    while !path.exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// SIGKILLs the kernel processes of session `session_id` (those whose command line names the
/// session's kernel directory: its kernels and their snapshots), or only the one `pick` draws,
/// then waits until they are dead, so that the server knows it before the next call. Returns
/// their pids.
async fn kill_kernels(session_id: &str, pick: Option<u64>) -> Vec<i32> {
    let needle = format!("/sessions/{session_id}/kernel/");
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // A snapshot is a fork of a kernel, and an orphan once that kernel is gone: the
            // session's directory (in this test's own data directory) is what tells them apart.
            cmdline.split(|&b| b == 0).any(|arg| String::from_utf8_lossy(arg).contains(&needle))
        })
        .collect();
    if let Some(pick) = pick
        && !pids.is_empty()
    {
        pids.sort_unstable();
        pids = vec![pids[(pick % pids.len() as u64) as usize]];
    }
    for &pid in &pids {
        // Gone already (it may have just exited) is fine.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    within(10, async {
        // Dead: gone, or a zombie (one the server does not wait for, such as a copy still
        // coming up, stays one until a sweep reaps it; the server takes a zombie for dead).
        while pids.iter().any(|&pid| runs(pid)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    pids
}

/// Whether process `pid` exists and is no zombie.
fn runs(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) state …`, and comm may hold any byte.
        stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// The seed from `MCP_PYREPL_SOAK_SEED`, else a new one from the clock.
fn seed() -> u64 {
    match std::env::var("MCP_PYREPL_SOAK_SEED") {
        Ok(seed) => seed.parse().expect("MCP_PYREPL_SOAK_SEED is a u64"),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        }
    }
}

/// The calls per session from `MCP_PYREPL_SOAK_CALLS`, else `default`.
fn calls_per_session(default: usize) -> usize {
    std::env::var("MCP_PYREPL_SOAK_CALLS")
        .map(|calls| calls.parse().expect("MCP_PYREPL_SOAK_CALLS is a number"))
        .unwrap_or(default)
}

/// Drives `SESSIONS` sessions of one server in parallel against the model, `calls_per_session`
/// `run_code` calls each, drawn as `shape` says.
async fn soak(shape: Shape, calls_per_session: usize) {
    let seed = seed();
    let (_guard, data) = data_dir();
    // Plain Python is all the cells need: no base packages, so kernels start fast.
    let server = Server::start_with(&data, "", |_| {}).await;
    let mut sessions = Vec::new();
    for index in 0..SESSIONS {
        sessions.push(SessionModel {
            index,
            id: server.create_repl().await,
            rng: Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            cells: Vec::new(),
            history: Vec::new(),
            kernel_killed: false,
            rerun_of: None,
        });
    }
    let soak =
        Soak { server: &server, data: &data, seed, calls_per_session, shape, counter: AtomicUsize::new(0) };
    let mut sessions = sessions.into_iter();
    let [first, second, third] = [(); SESSIONS].map(|()| sessions.next().unwrap());
    tokio::join!(soak.drive(first), soak.drive(second), soak.drive(third));
    assert_eq!(soak.counter.into_inner(), SESSIONS * calls_per_session, "calls made");
}

#[tokio::test]
async fn random_branching_matches_the_model() {
    soak(Shape::plain(false), calls_per_session(CALLS_PER_SESSION)).await;
}

#[tokio::test]
async fn random_branching_matches_the_model_while_kernels_are_killed() {
    soak(Shape::plain(true), calls_per_session(CALLS_PER_SESSION)).await;
}

#[tokio::test]
async fn snapshot_shaped_soak_matches_the_model() {
    soak(Shape::SNAPSHOTS, calls_per_session(SNAPSHOT_SOAK_CALLS_PER_SESSION)).await;
}

#[tokio::test]
#[ignore = "2,001 calls of the snapshot shape, about 12 minutes; `.ci/run` runs it when MCP_PYREPL_LONG_SOAK=1"]
async fn long_soak_of_two_thousand_calls() {
    soak(Shape::SNAPSHOTS, LONG_SOAK_CALLS_PER_SESSION).await;
}
