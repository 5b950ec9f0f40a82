//! Going back: what a model's analysis conversation costs against the cells' own run times and
//! against the stand-in (`benches/stand_in_server.py`), a new server's first session on a warm
//! data directory, a retry under the same parent and a return to each of the last five cells
//! against a continue, a round trip while background work is due against an idle one, and the
//! memory a snapshot costs.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Server, Stats, duration, met, time_each};
use mcp_pyrepl::session::pool::proportional_bytes;
use mcp_pyrepl::venv::{Uv, Venv};

/// The base packages of every server here, ours and the stand-in.
const BASE_PACKAGES: &str = "numpy,pandas,matplotlib";
/// A new server's first `create_repl` on a warm data directory, called as the server starts.
const WARM_CREATE: Duration = Duration::from_millis(500);
/// ... and that session's first cell, the base imports.
const WARM_IMPORTS: Duration = Duration::from_secs(1);
/// The stand-in's conversation against ours: in a warm data directory, and in a fresh one.
const STAND_IN_WARM_FACTOR: f64 = 3.0;
const STAND_IN_FRESH_FACTOR: f64 = 2.0;

/// The conversation's total against create_repl plus the cells' own run times.
const CONVERSATION_FACTOR: f64 = 1.3;
/// The conversation in a fresh data directory against the same one warm.
const FRESH_FACTOR: f64 = 1.15;
/// A retry, or a return to one of the last five cells, against a continue.
const GOING_BACK_FACTOR: f64 = 3.0;
/// `1+1` while background work is due against idle.
const BACKGROUND_FACTOR: f64 = 1.2;
/// A snapshot's own memory against its kernel's PSS.
const SNAPSHOT_SHARE: f64 = 0.2;
/// The least a model takes to read a reply and write its next call: the server is idle then.
const THINK_TIME: Duration = Duration::from_secs(1);

/// One call of the scripted conversation: what it runs, and under which earlier call.
struct Step {
    label: &'static str,
    code: &'static str,
    /// The index of the call whose cell is the parent (`None`: a root).
    parent: Option<usize>,
    /// Instead of `parent`: the tip of the branch started by this call (for the alternation).
    tip_of: Option<usize>,
}

const fn step(label: &'static str, code: &'static str, parent: Option<usize>) -> Step {
    Step { label, code, parent, tip_of: None }
}

/// The 20 calls: imports, a 1M-row frame, derived columns, a groupby, two branches off the
/// derived cell (a histogram and a statistic, a scatter and a correlation), ten calls
/// alternating between the two branch tips, a cell under the groupby and one under the frame.
fn script() -> Vec<Step> {
    let mut steps = vec![
        step(
            "imports",
            "import numpy as np\nimport pandas as pd\nimport matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as plt",
            None,
        ),
        step(
            "1M-row frame",
            "rng = np.random.default_rng(0)\ndf = pd.DataFrame({'a': rng.normal(size=1_000_000), 'b': rng.integers(0, 50, 1_000_000), 'c': rng.random(1_000_000)})\nlen(df)",
            Some(0),
        ),
        step(
            "derive + describe",
            "df['d'] = df['a'] * df['c']\ndf['e'] = np.log1p(df['c'])\ndf.describe()",
            Some(1),
        ),
        step("groupby", "g = df.groupby('b')[['a', 'd']].mean()\ng.head()", Some(2)),
        step(
            "histogram",
            "fig, ax = plt.subplots()\nax.hist(df['d'], bins=50)\nfig.savefig('/dev/null', format='png')\nplt.close(fig)",
            Some(2),
        ),
        step("statistic", "float(df['d'].std())", Some(4)),
        step(
            "scatter",
            "s = df.sample(5000, random_state=0)\nfig, ax = plt.subplots()\nax.scatter(s['a'], s['e'], s=2)\nfig.savefig('/dev/null', format='png')\nplt.close(fig)",
            Some(2),
        ),
        step("correlation", "float(s['a'].corr(s['e']))", Some(6)),
    ];
    for i in 0..10 {
        let (label, code, tip) = if i % 2 == 0 {
            ("histogram tip", "float(df['d'].quantile(0.9))", 5)
        } else {
            ("scatter tip", "float(s['e'].mean())", 7)
        };
        steps.push(Step { label, code, parent: None, tip_of: Some(tip) });
    }
    steps.push(step("under the groupby", "float(g['a'].max())", Some(3)));
    steps.push(step("under the frame", "float(df['a'].abs().mean())", Some(1)));
    steps
}

/// One run of the conversation.
pub(super) struct Conversation {
    total: Duration,
    create: Duration,
    /// Per call: label, wall time, the cell's own run time, cells replayed, served by a snapshot.
    calls: Vec<(&'static str, Duration, Duration, usize, bool)>,
}

impl Conversation {
    fn own_run_times(&self) -> Duration {
        self.calls.iter().map(|call| call.2).sum()
    }
}

async fn conversation(server: &Server) -> Conversation {
    let started = Instant::now();
    let session = server.create_repl().await;
    let create = started.elapsed();
    let mut ids: Vec<String> = Vec::new();
    let mut tips: Vec<Option<String>> = Vec::new();
    let mut calls = Vec::new();
    for step in script() {
        let parent = match (step.parent, step.tip_of) {
            (_, Some(tip)) => tips[tip].clone(),
            (Some(parent), None) => Some(ids[parent].clone()),
            (None, None) => None,
        };
        let start = Instant::now();
        let result = server.run(&session, step.code, parent.as_deref()).await;
        let wall = start.elapsed();
        let structured = result.structured_content.clone().unwrap();
        let id = server.cell_id(&result);
        if let Some(tip) = step.tip_of {
            tips[tip] = Some(id.clone());
        }
        tips.push(Some(id.clone()));
        ids.push(id);
        calls.push((
            step.label,
            wall,
            millis(&structured["run_ms"]),
            structured["replayed_cell_ids"].as_array().map_or(0, Vec::len),
            structured["snapshot"]["used"] == Value::Bool(true),
        ));
    }
    Conversation { total: started.elapsed(), create, calls }
}

fn millis(value: &Value) -> Duration {
    Duration::from_secs_f64(value.as_f64().unwrap_or(0.0) / 1e3)
}

/// What a snapshot costs in memory.
pub(super) struct SnapshotMemory {
    kernel_pss: u64,
    /// Private (not shared) memory of the newest snapshot, made while the session was idle
    /// after its last cell, before the kernel ran anything else.
    newest_private: u64,
    /// Private memory of each snapshot of the session, the older ones after the kernel has
    /// written over much of what they shared.
    snapshot_private: Vec<u64>,
}

pub(super) struct GoingBack {
    fresh: Conversation,
    warm: Conversation,
    /// The conversation on a new server in the data directory of `fresh` and `warm`: its first
    /// two calls come as the server starts.
    restarted: Conversation,
    /// The stand-in's conversation on a new stand-in, and its second one there.
    stand_in_fresh: Conversation,
    stand_in_warm: Conversation,
    retry: Stats,
    continue_cell: Stats,
    last_five: Vec<Duration>,
    /// The same with [`THINK_TIME`] before each call.
    last_five_thinking: Vec<Duration>,
    idle: Stats,
    background: Stats,
    memory: SnapshotMemory,
}

/// Runs every measurement of this section.
pub(super) async fn going_back(uv: &Uv, stand_in_venv: &Venv, repeats: usize) -> GoingBack {
    // The stand-in first, on a quiet machine; the uv cache is warm for both.
    let stand_in = Server::stand_in(uv, stand_in_venv, BASE_PACKAGES).await;
    let stand_in_fresh = conversation(&stand_in).await;
    let stand_in_warm = conversation(&stand_in).await;
    stand_in.stop().await;

    // A fresh data directory: the conversation runs while the shared venv's bytecode store and
    // the spare session are due in the background.
    let server = Server::start(uv, BASE_PACKAGES, &["--spare-sessions", "1"]).await;
    let fresh = conversation(&server).await;
    server.wait_for_spare().await;
    let warm = conversation(&server).await;

    // A retry under the parent of a failed cell, after a path holding a 1M-row frame, and a
    // return to each of the last five cells of a path, against a continue.
    let session = server.create_repl().await;
    let steps = script();
    let mut parent = None;
    for step in &steps[..3] {
        parent = Some(server.cell_id(&server.run(&session, step.code, parent.as_deref()).await));
    }
    let base = parent.clone().unwrap();
    let (mut retries, mut continues) = (Vec::new(), Vec::new());
    let mut tip = base.clone();
    for _ in 0..repeats {
        let failed = server.run_any(&session, "df['f'] = df['a'] * 2\nundefined_name", Some(&base)).await;
        assert_eq!(failed.is_error, Some(true));
        let start = Instant::now();
        server.run(&session, "df['f'] = df['a'] * 2", Some(&base)).await;
        retries.push(start.elapsed());
        let start = Instant::now();
        tip = server.cell_id(&server.run(&session, "df['f'] = df['a'] * 2", Some(&tip)).await);
        continues.push(start.elapsed());
    }
    let last_five = back_to_each_of_the_last_five(&server, &session, &tip, Duration::ZERO).await;
    let last_five_thinking = back_to_each_of_the_last_five(&server, &session, &tip, THINK_TIME).await;
    // A copy made while the model thinks, measured before the kernel runs anything else.
    server.run(&session, "float(df['a'].sum())", Some(&tip)).await;
    tokio::time::sleep(2 * THINK_TIME).await;
    let memory = snapshot_memory(&server, &session);

    // `1+1` with nothing due in the background, then in a new server whose spare and bytecode
    // store are due.
    let mut tip = server.cell_id(&server.run(&session, "1+1", None).await);
    let idle = time_each(repeats * 10, async || {
        tip = server.cell_id(&server.run(&session, "1+1", Some(&tip)).await);
    })
    .await;

    // A new server in that data directory, called at once.
    server.wait_for_spare().await;
    let data_dir = server.stop_for_restart().await;
    let server = Server::start_in(data_dir, uv, BASE_PACKAGES, &["--spare-sessions", "1"]).await;
    let restarted = conversation(&server).await;
    server.stop().await;

    let busy_server = Server::start(uv, BASE_PACKAGES, &["--spare-sessions", "1"]).await;
    let session = busy_server.create_repl().await;
    let mut tip = busy_server.cell_id(&busy_server.run(&session, "1+1", None).await);
    let background = time_each(repeats * 10, async || {
        tip = busy_server.cell_id(&busy_server.run(&session, "1+1", Some(&tip)).await);
    })
    .await;
    busy_server.stop().await;

    GoingBack {
        fresh,
        warm,
        restarted,
        stand_in_fresh,
        stand_in_warm,
        retry: Stats::of(retries),
        continue_cell: Stats::of(continues),
        last_five,
        last_five_thinking,
        idle: Stats::of(idle),
        background: Stats::of(background),
        memory,
    }
}

/// Builds a path of five cheap cells under `tip`, then goes back to each of them (the last
/// first), `think` before each call; how long each return took.
async fn back_to_each_of_the_last_five(
    server: &Server,
    session: &str,
    tip: &str,
    think: Duration,
) -> Vec<Duration> {
    let mut path = vec![tip.to_owned()];
    for i in 0..5 {
        tokio::time::sleep(think).await;
        let code = format!("x{i} = df['a'].iloc[{i}]");
        path.push(server.cell_id(&server.run(session, &code, path.last().map(String::as_str)).await));
    }
    let mut back = Vec::new();
    for cell in path.iter().rev().skip(1).take(5) {
        tokio::time::sleep(think).await;
        let start = Instant::now();
        server.run(session, "float(df['a'].iloc[0])", Some(cell)).await;
        back.push(start.elapsed());
    }
    back
}

/// The PSS of the session's serving kernel and the private memory of each of its snapshots,
/// the newest apart, from the pid records in its kernel directory.
fn snapshot_memory(server: &Server, session: &str) -> SnapshotMemory {
    let dir = server.session_dir(session).join("kernel.pids");
    let mut kernels: Vec<(u32, u64, u64, std::time::SystemTime)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".pid"))
        .filter_map(|entry| {
            let record: Value = serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
            let pid = record["kernel"].as_u64()? as u32;
            let made = entry.metadata().ok()?.modified().ok()?;
            Some((pid, proportional_bytes(pid)?, private_bytes(pid)?, made))
        })
        .collect();
    // The serving kernel is the one with the most private memory: the snapshots share theirs.
    kernels.sort_by_key(|&(_, _, private, _)| std::cmp::Reverse(private));
    let kernel_pss = kernels.first().map_or(0, |k| k.1);
    let snapshots = kernels.get(1..).unwrap_or_default();
    let newest_private = snapshots.iter().max_by_key(|k| k.3).map_or(0, |k| k.2);
    SnapshotMemory { kernel_pss, newest_private, snapshot_private: snapshots.iter().map(|k| k.2).collect() }
}

/// Private memory (clean and dirty) of `pid`, from `/proc/<pid>/smaps_rollup`.
fn private_bytes(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> Option<u64> {
        rollup.lines().find_map(|l| l.strip_prefix(name))?.trim().trim_end_matches("kB").trim().parse().ok()
    };
    Some((field("Private_Clean:")? + field("Private_Dirty:")?) << 10)
}

impl GoingBack {
    /// The section of the report: the targets, then the conversation call by call.
    pub(super) fn report(&self) -> String {
        let mut out = String::new();
        let floor = self.warm.create + self.warm.own_run_times();
        let conversation = self.warm.total.as_secs_f64() / floor.as_secs_f64();
        let fresh = self.fresh.total.as_secs_f64() / self.warm.total.as_secs_f64();
        let retry = ratio(self.retry.p50, self.continue_cell.p50);
        let worst = |back: &[Duration]| back.iter().max().copied().unwrap_or_default();
        let (worst_back, worst_thinking) = (worst(&self.last_five), worst(&self.last_five_thinking));
        let back = ratio(worst_back, self.continue_cell.p50);
        let back_thinking = ratio(worst_thinking, self.continue_cell.p50);
        let list = |back: &[Duration]| back.iter().map(|d| duration(*d)).collect::<Vec<_>>().join(", ");
        let background = ratio(self.background.p50, self.idle.p50);
        let worst_share = self
            .memory
            .snapshot_private
            .iter()
            .map(|&private| private as f64 / self.memory.kernel_pss.max(1) as f64)
            .fold(0.0, f64::max);
        let newest_share = self.memory.newest_private as f64 / self.memory.kernel_pss.max(1) as f64;
        let _ = writeln!(out, "\n## Going back (snapshots, warm restarts, quiet background work)\n");
        let _ = writeln!(out, "| target | this run | met |\n|---|---|---|");
        let _ = writeln!(
            out,
            "| conversation (warm) ≤ {CONVERSATION_FACTOR} × (create_repl + cells' own run times) | {} vs {} + {} = {conversation:.2}× | {} |",
            duration(self.warm.total),
            duration(self.warm.create),
            duration(self.warm.own_run_times()),
            met(conversation <= CONVERSATION_FACTOR)
        );
        let _ = writeln!(
            out,
            "| conversation in a fresh data directory ≤ {FRESH_FACTOR} × warm | {} = {fresh:.2}× | {} |",
            duration(self.fresh.total),
            met(fresh <= FRESH_FACTOR)
        );
        let (create, imports) = (self.restarted.create, self.restarted.calls[0].1);
        let _ = writeln!(
            out,
            "| a new server on a warm data directory: `create_repl` as it starts ≤ {} (stand-in: {}) | {} | {} |",
            duration(WARM_CREATE),
            duration(self.stand_in_warm.create),
            duration(create),
            met(create <= WARM_CREATE)
        );
        let _ = writeln!(
            out,
            "| … then the base imports ≤ {} (stand-in: {}) | {} | {} |",
            duration(WARM_IMPORTS),
            duration(self.stand_in_warm.calls[0].1),
            duration(imports),
            met(imports <= WARM_IMPORTS)
        );
        let first_two = |c: &Conversation| c.create + c.calls[0].1;
        let _ = writeln!(
            out,
            "| `create_repl` + the base imports in a fresh data directory ≤ the stand-in's | {} vs {} | {} |",
            duration(first_two(&self.fresh)),
            duration(first_two(&self.stand_in_fresh)),
            met(first_two(&self.fresh) <= first_two(&self.stand_in_fresh))
        );
        let faster = |stand_in: &Conversation, ours: &Conversation| ratio(stand_in.total, ours.total);
        let warm_faster = faster(&self.stand_in_warm, &self.restarted);
        let _ = writeln!(
            out,
            "| the conversation, a new server on a warm data directory, ≥ {STAND_IN_WARM_FACTOR} × faster than the stand-in's second | {} vs {} = {warm_faster:.2}× | {} |",
            duration(self.restarted.total),
            duration(self.stand_in_warm.total),
            met(warm_faster >= STAND_IN_WARM_FACTOR)
        );
        let fresh_faster = faster(&self.stand_in_fresh, &self.fresh);
        let _ = writeln!(
            out,
            "| the conversation in a fresh data directory ≥ {STAND_IN_FRESH_FACTOR} × faster than the stand-in's first | {} vs {} = {fresh_faster:.2}× | {} |",
            duration(self.fresh.total),
            duration(self.stand_in_fresh.total),
            met(fresh_faster >= STAND_IN_FRESH_FACTOR)
        );
        let _ = writeln!(
            out,
            "| retry under the same parent (1M-row frame path) ≤ {GOING_BACK_FACTOR} × a continue | {} vs {} = {retry:.2}× | {} |",
            duration(self.retry.p50),
            duration(self.continue_cell.p50),
            met(retry <= GOING_BACK_FACTOR)
        );
        let _ = writeln!(
            out,
            "| any of the last 5 (cheap) cells of the path ≤ {GOING_BACK_FACTOR} × a continue, calls back to back | worst {} = {back:.2}× ({}) | {} |",
            duration(worst_back),
            list(&self.last_five),
            met(back <= GOING_BACK_FACTOR)
        );
        let _ = writeln!(
            out,
            "| the same, {} of think time before each call | worst {} = {back_thinking:.2}× ({}) | {} |",
            duration(THINK_TIME),
            duration(worst_thinking),
            list(&self.last_five_thinking),
            met(back_thinking <= GOING_BACK_FACTOR)
        );
        let _ = writeln!(
            out,
            "| `1+1` while a spare and the bytecode store are due ≤ {BACKGROUND_FACTOR} × idle | {} vs {} = {background:.2}× | {} |",
            duration(self.background.p50),
            duration(self.idle.p50),
            met(background <= BACKGROUND_FACTOR)
        );
        let _ = writeln!(
            out,
            "| a snapshot's own memory ≤ {:.0} % of its kernel's PSS until it diverges (the newest copy, the kernel having run nothing since) | {:.1} MiB = {:.1} % of {} MiB | {} |",
            SNAPSHOT_SHARE * 100.0,
            mib(self.memory.newest_private),
            newest_share * 100.0,
            self.memory.kernel_pss >> 20,
            met(newest_share <= SNAPSHOT_SHARE && self.memory.newest_private > 0)
        );
        let _ = writeln!(
            out,
            "| … every snapshot of that session, the older ones after the kernel wrote over what they shared | {} snapshots, worst {:.1} % | – |",
            self.memory.snapshot_private.len(),
            worst_share * 100.0,
        );
        let _ = writeln!(
            out,
            "\nThe conversation, call by call: in a fresh data directory, again in the same server (warm), on a new server in that directory; wall / own run time / cells replayed / served by a snapshot. The stand-in: wall times of its first and second conversation.\n"
        );
        let _ = writeln!(
            out,
            "| call | fresh | warm | new server | stand-in: first / second |\n|---|---|---|---|---|"
        );
        let _ = writeln!(
            out,
            "| create_repl | {} | {} | {} | {} / {} |",
            duration(self.fresh.create),
            duration(self.warm.create),
            duration(self.restarted.create),
            duration(self.stand_in_fresh.create),
            duration(self.stand_in_warm.create),
        );
        let cell = |c: &(&str, Duration, Duration, usize, bool)| {
            format!("{} / {} / {} / {}", duration(c.1), duration(c.2), c.3, if c.4 { "yes" } else { "no" })
        };
        for (i, fresh) in self.fresh.calls.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} / {} |",
                fresh.0,
                cell(fresh),
                cell(&self.warm.calls[i]),
                cell(&self.restarted.calls[i]),
                duration(self.stand_in_fresh.calls[i].1),
                duration(self.stand_in_warm.calls[i].1),
            );
        }
        out
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}
