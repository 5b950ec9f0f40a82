//! Sandboxed kernels through the real server: what a `files` kernel may write and read, that
//! the sandbox survives restarts and spares, and that a `strict` kernel has no network.
//!
//! These never skip: a machine without Landlock fails them, unless
//! `MCP_PYREPL_TEST_NO_SANDBOX=1` says it cannot confine (then they end at once).

use std::path::Path;

use rmcp::model::CallToolResult;
use serde_json::json;

use super::mcp_client::{Server, data_dir, images, texts};
use super::pools::{name, wait_for_spare};

/// Whether this machine is declared unable to confine kernels.
pub(super) fn no_sandbox() -> bool {
    std::env::var_os("MCP_PYREPL_TEST_NO_SANDBOX").is_some_and(|value| value == "1")
}

/// A server at `level` with `flags`; `None` when the machine cannot confine (and says so).
async fn start(data: &Path, level: &str, flags: &[&str]) -> Option<Server> {
    if no_sandbox() {
        return None;
    }
    let flags: Vec<String> = flags.iter().map(|flag| flag.to_string()).collect();
    Some(
        Server::start_with(data, "numpy,pandas,matplotlib,plotly", |command| {
            command.args(["--sandbox", level]).args(&flags);
        })
        .await,
    )
}

/// A new session, checked to be confined at `level`.
async fn confined_session(server: &Server, level: &str) -> String {
    let created = server.call("create_repl", json!({})).await;
    let structured = created.structured_content.clone().unwrap();
    assert_eq!(structured["sandbox"], level);
    assert_eq!(
        structured["sandboxed"], true,
        "no Landlock here: set MCP_PYREPL_TEST_NO_SANDBOX=1 if this machine cannot confine kernels"
    );
    structured["session_id"].as_str().unwrap().to_owned()
}

/// Asserts that `result` is the ordinary traceback of a refused access, or of a path that does
/// not exist for the kernel (outside what its sandbox shows it).
fn assert_refused(result: &CallToolResult) {
    let text = texts(result).join("\n");
    assert_eq!(result.is_error, Some(true), "{text}");
    assert!(text.contains("PermissionError: [Errno") || text.contains("FileNotFoundError: [Errno"), "{text}");
    assert!(text.contains("Traceback") || text.contains("Cell In["), "not a traceback: {text}");
}

#[tokio::test]
async fn files_confines_writes_and_reads_to_the_session() {
    let (_guard, data) = data_dir();
    let outside = tempfile::tempdir().unwrap();
    let readable = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "hunter2").unwrap();
    std::fs::write(readable.path().join("shared.txt"), "shared data").unwrap();
    let read_flag = readable.path().to_str().unwrap();
    let Some(server) = start(&data, "files", &["--sandbox-read", read_flag]).await else { return };
    let session = confined_session(&server, "files").await;
    let other = confined_session(&server, "files").await;

    // The working directory is the session's `work/`, and writable.
    let (written, _) = server
        .ok(&session, "import os\nopen('ok.txt', 'w').write('x')\nprint(os.path.abspath('ok.txt'))", None)
        .await;
    let written = Path::new(written.trim());
    assert_eq!(written, data.join("sessions").join(&session).join("work").join("ok.txt"));
    assert!(written.exists(), "{written:?}");

    // Nothing outside it is: a temp dir of ours, the home directory, another session.
    let home = std::env::var("HOME").unwrap();
    let marker = format!("mcp-pyrepl-sandbox-{}", std::process::id());
    let targets = [
        outside.path().join("escaped"),
        Path::new(&home).join(&marker),
        data.join("sessions").join(&other).join("escaped"),
    ];
    for target in &targets {
        assert_refused(&server.run(&session, &format!("open({target:?}, 'w').write('x')"), None).await);
        assert!(!target.exists(), "{target:?} was written");
    }
    // Nor the session's own records, which the server trusts when it reads them back.
    let own = data.join("sessions").join(&session);
    for record in ["session.json", "graph.json"] {
        let before = std::fs::read(own.join(record)).unwrap();
        let tamper = format!("open({:?}, 'w').write('{{}}')", own.join(record));
        assert_refused(&server.run(&session, &tamper, None).await);
        assert_eq!(
            std::fs::read(own.join(record)).unwrap()[..before.len()],
            before[..],
            "{record} was changed"
        );
    }

    // A secret outside the allowed directories cannot be read; `--sandbox-read` can, not written.
    let secret = outside.path().join("secret");
    assert_refused(&server.run(&session, &format!("print(open({secret:?}).read())"), None).await);
    let shared = readable.path().join("shared.txt");
    let (seen, _) = server.ok(&session, &format!("print(open({shared:?}).read())"), None).await;
    assert_eq!(seen, "shared data\n");
    assert_refused(&server.run(&session, &format!("open({shared:?}, 'a').write('x')"), None).await);
    assert_eq!(std::fs::read_to_string(&shared).unwrap(), "shared data");

    // The server cannot be signalled, and lives on.
    let kill = format!("import os, signal\nos.kill({}, signal.SIGTERM)", server.pid());
    assert_refused(&server.run(&session, &kill, None).await);
    let (alive, _) = server.ok(&session, "print('still here')", None).await;
    assert_eq!(alive, "still here\n");

    // Ordinary work goes on: numpy and a matplotlib PNG, shell commands on a pty, installs.
    let plot = "import numpy as np, matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n\
                ax.plot(np.sin(np.linspace(0, 6, 50)))\ndisplay_figure(fig)";
    let plotted = server.run(&session, plot, None).await;
    assert_ne!(plotted.is_error, Some(true), "{:?}", texts(&plotted));
    assert!(images(&plotted)[0].starts_with(b"\x89PNG"));
    let frames = "import pandas as pd, plotly.express as px\ndf = pd.DataFrame({'a': [1, 2, 3]})\n\
                  fig = px.line(df, y='a')\nprint(df.shape, len(fig.data))";
    let (shapes, _) = server.ok(&session, frames, None).await;
    assert_eq!(shapes, "(3, 1) 1\n");
    let (echoed, _) = server.ok(&session, "!echo from-a-shell", None).await;
    assert!(echoed.contains("from-a-shell"), "{echoed}");
    let install = server.call("install_packages", json!({"session_id": session, "packages": ["six"]})).await;
    assert_ne!(install.is_error, Some(true), "{:?}", texts(&install));
    let (six, _) = server.ok(&session, "import six\nprint(six.__name__)", None).await;
    assert_eq!(six, "six\n");
    let pip = server
        .run(&session, "%pip install --quiet iniconfig\nimport iniconfig\nprint(iniconfig.__name__)", None)
        .await;
    assert_ne!(pip.is_error, Some(true), "{:?}", texts(&pip));
    assert!(texts(&pip).join("").contains("iniconfig\n"), "{:?}", texts(&pip));

    // In its own user namespace the kernel cannot read the server's environment.
    let environ = format!("open('/proc/{}/environ').read()", server.pid());
    assert_refused(&server.run(&session, &environ, None).await);
}

#[tokio::test]
async fn restarted_kernels_and_spares_are_confined_alike() {
    let (_guard, data) = data_dir();
    let outside = tempfile::tempdir().unwrap();
    let flags = ["--kernels-per-session", "1", "--spare-sessions", "1"];
    let Some(server) = start(&data, "files", &flags).await else { return };
    let spare = wait_for_spare(&data, None).await;
    let session = confined_session(&server, "files").await;
    assert_eq!(session, name(&spare), "create_repl did not hand out the spare");

    let escape = format!("open({:?}, 'w').write('x')", outside.path().join("escaped"));
    let (_, first) = server.ok(&session, "x = 1", None).await;
    server.ok(&session, "x = 2", Some(&first)).await;
    assert_refused(&server.run(&session, &escape, None).await);
    // Back to the first cell: the only kernel is replaced by a fresh one that replays it.
    let back = server.run(&session, &format!("print(x)\n{escape}"), Some(&first)).await;
    assert_eq!(texts(&back)[0], "1\n", "{:?}", texts(&back));
    assert_refused(&back);
    assert!(!outside.path().join("escaped").exists());
}

#[tokio::test]
async fn strict_has_no_network_but_answers() {
    let (_guard, data) = data_dir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(server) = start(&data, "strict", &[]).await else { return };
    let session = confined_session(&server, "strict").await;
    let probe = format!(
        "import socket\n\
         try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n    print('connected')\n\
         except OSError as error:\n    print('no tcp:', type(error).__name__)\n\
         try:\n    socket.getaddrinfo('pypi.org', 443)\n    print('resolved')\n\
         except OSError as error:\n    print('no dns:', type(error).__name__)"
    );
    let (seen, _) = server.ok(&session, &probe, None).await;
    assert!(seen.contains("no tcp:") && seen.contains("no dns:"), "{seen}");
    let (answer, _) = server.ok(&session, "print(6 * 7)", None).await;
    assert_eq!(answer, "42\n");
}

#[tokio::test]
async fn a_bogus_level_is_refused_at_start_up() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-pyrepl"))
        .args(["--sandbox", "bogus", "serve"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bogus") && stderr.contains("files"), "{stderr}");
}

/// A server at `level` with `six` as its only base package (a pin set of its own, so its
/// bytecode store is filled anew), `env` set and `flags` given; `None` as [`start`].
async fn start_six(data: &Path, level: &str, env: &[(&str, &Path)], flags: &[&str]) -> Option<Server> {
    if no_sandbox() {
        return None;
    }
    let flags: Vec<String> = flags.iter().map(|flag| flag.to_string()).collect();
    let env: Vec<(String, std::path::PathBuf)> =
        env.iter().map(|(name, value)| (name.to_string(), value.to_path_buf())).collect();
    Some(
        Server::start_with(data, "six", |command| {
            command.envs(env).args(["--sandbox", level]).args(&flags);
        })
        .await,
    )
}

/// Waits until the bytecode store of the server's pin set is filled (whatever its layout).
async fn wait_for_bytecode_store(data: &Path) {
    let pins = data.join("venvs").join("pins");
    super::common::within(300, async {
        loop {
            let filled = std::fs::read_dir(&pins).into_iter().flatten().flatten().any(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                entry.path().is_dir() && !name.ends_with(".build")
            });
            if filled {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
}

/// Every file below `dir` whose inode is `ino`.
fn files_with_inode(dir: &Path, ino: u64) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            found.extend(files_with_inode(&entry.path(), ino));
        } else if kind.is_file() && entry.metadata().unwrap().ino() == ino {
            found.push(entry.path());
        }
    }
    found
}

/// Whether the payload the attacks below plant ran in a new session's kernel as it started
/// (its kernel imports both zmq and traitlets).
async fn payload_ran(server: &Server, level: &str) -> String {
    let session = confined_session(server, level).await;
    let check =
        "import builtins, zmq, traitlets\nprint(getattr(builtins, 'MCP_PYREPL_PAYLOAD', 'no payload'))";
    server.ok(&session, check, None).await.0
}

/// The venv's files are hard links into uv's cache (here a cache of the test's own, so that
/// the attack on code without the fix poisons no other venv of this machine), and its bytecode
/// links from the shared store: a kernel can write neither, nor link them where it may write,
/// and no other venv, the cache or a new session sees a change.
async fn shared_venv_files_are_read_only(level: &str) {
    use std::os::unix::fs::MetadataExt;
    let (_guard, data) = data_dir();
    let cache = tempfile::tempdir().unwrap();
    let Some(server) = start_six(&data, level, &[("UV_CACHE_DIR", cache.path())], &[]).await else { return };
    let first = confined_session(&server, level).await;
    wait_for_bytecode_store(&data).await;
    let session = confined_session(&server, level).await;

    let where_ = "import zmq, traitlets, importlib.util\n\
                  print(zmq.__file__)\nprint(importlib.util.cache_from_source(traitlets.__file__))";
    let (paths, cell) = server.ok(&session, where_, None).await;
    let [zmq, pyc] = [0, 1].map(|line| std::path::PathBuf::from(paths.lines().nth(line).unwrap()));
    assert!(zmq.metadata().unwrap().nlink() > 1, "{zmq:?} is not shared: the attack proves nothing");
    assert!(pyc.metadata().unwrap().nlink() > 1, "{pyc:?} is not linked from the store");
    let in_cache = files_with_inode(cache.path(), zmq.metadata().unwrap().ino());
    assert!(!in_cache.is_empty(), "{zmq:?} is not a hard link into uv's cache");
    let in_first = data
        .join("sessions")
        .join(&first)
        .join(zmq.strip_prefix(data.join("sessions").join(&session)).unwrap());
    let before = [std::fs::read(&zmq).unwrap(), std::fs::read(&pyc).unwrap()];

    // A payload appended to zmq's source, run by every kernel that imports zmq.
    let append =
        "open(zmq.__file__, 'a').write('\\nimport builtins; builtins.MCP_PYREPL_PAYLOAD = \"ran\"\\n')";
    assert_refused(&server.run(&session, append, Some(&cell)).await);
    // traitlets' bytecode rewritten with its header kept, so Python takes it as valid.
    let poison = "import marshal\n\
                  source = open(traitlets.__file__).read() + '\\nimport builtins; builtins.MCP_PYREPL_PAYLOAD = \"ran\"\\n'\n\
                  with open(importlib.util.cache_from_source(traitlets.__file__), 'r+b') as pyc:\n    \
                  header = pyc.read(16)\n    pyc.seek(0)\n    \
                  pyc.write(header + marshal.dumps(compile(source, traitlets.__file__, 'exec')))\n    pyc.truncate()";
    assert_refused(&server.run(&session, poison, Some(&cell)).await);
    // Nor truncated, renamed or removed (to put another file in its place); nor linked where
    // the kernel may write, where the same inode would be writable.
    let others = "import os\n\
                  attempts = {'truncate': lambda: os.truncate(zmq.__file__, 0),\n\
                  'rename': lambda: os.rename(zmq.__file__, zmq.__file__ + '.old'),\n\
                  'remove': lambda: os.remove(zmq.__file__),\n\
                  'link': lambda: os.link(zmq.__file__, 'zmq_init.py')}\n\
                  for name, attempt in attempts.items():\n    try:\n        attempt()\n        print(name, 'done')\n    \
                  except OSError as error:\n        print(name, 'refused', error.errno)";
    let (tried, _) = server.ok(&session, others, Some(&cell)).await;
    assert_eq!(tried.matches("refused").count(), 4, "{tried}");

    assert_eq!(
        [std::fs::read(&zmq).unwrap(), std::fs::read(&pyc).unwrap()],
        before,
        "the venv's files changed"
    );
    for file in in_cache.iter().chain([&in_first]) {
        assert_eq!(std::fs::read(file).unwrap(), before[0], "{file:?} changed");
    }
    assert_eq!(payload_ran(&server, level).await, "no payload\n", "a new session ran the payload");
}

#[tokio::test]
async fn files_kernels_cannot_write_what_their_venv_shares_with_uvs_cache_and_the_bytecode_store() {
    shared_venv_files_are_read_only("files").await;
}

#[tokio::test]
async fn strict_kernels_cannot_write_what_their_venv_shares_with_uvs_cache_and_the_bytecode_store() {
    shared_venv_files_are_read_only("strict").await;
}

/// `%pip install` in a confined kernel cannot write its venv, so it installs into the
/// session's own `packages/`, which imports at once and is the session's alone.
#[tokio::test]
async fn pip_in_a_cell_installs_into_the_sessions_own_packages() {
    let (_guard, data) = data_dir();
    let Some(server) = start_six(&data, "files", &[], &[]).await else { return };
    let session = confined_session(&server, "files").await;
    let other = confined_session(&server, "files").await;
    let pip = "%pip install --quiet iniconfig\nimport iniconfig\nprint(iniconfig.__file__)";
    let (installed, _) = server.ok(&session, pip, None).await;
    let packages = data.join("sessions").join(&session).join("packages");
    let file = Path::new(installed.lines().last().unwrap());
    assert!(file.starts_with(&packages), "{installed}");
    let missing = server.run(&other, "import iniconfig", None).await;
    assert_eq!(missing.is_error, Some(true), "another session sees it: {:?}", texts(&missing));
}

/// The compile run that fills the bytecode store for a new pin set runs confined as a kernel:
/// code it runs (here a `sitecustomize` the server's environment puts on its path, acting only
/// in that run) cannot write outside, only where a kernel could.
#[tokio::test]
async fn the_bytecode_compile_of_a_new_pin_set_runs_confined() {
    let (_guard, data) = data_dir();
    let (site, outside, allowed) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (escaped, refused) = (outside.path().join("escaped"), allowed.path().join("refused"));
    std::fs::write(
        site.path().join("sitecustomize.py"),
        format!(
            "import sys\n\
             if any('_mcp_pyrepl_warm' in arg for arg in sys.orig_argv):\n    \
             try:\n        open({escaped:?}, 'w').write('x')\n    \
             except OSError as error:\n        open({refused:?}, 'w').write(repr(error))\n"
        ),
    )
    .unwrap();
    let flags = [
        "--sandbox-read",
        site.path().to_str().unwrap(),
        "--sandbox-write",
        allowed.path().to_str().unwrap(),
    ];
    let Some(server) = start_six(&data, "files", &[("PYTHONPATH", site.path())], &flags).await else {
        return;
    };
    confined_session(&server, "files").await;
    wait_for_bytecode_store(&data).await;
    assert!(!escaped.exists(), "the compile run wrote outside the sandbox");
    let said = std::fs::read_to_string(&refused).expect("the compile run did not run the sitecustomize");
    // Refused by Landlock, or not there at all in the kernel's view of the filesystem.
    assert!(said.contains("PermissionError") || said.contains("FileNotFoundError"), "{said}");
}

/// The ipc sockets in the kernel directory of `session`, once its kernel and at least one
/// snapshot of it listen (up to 30 s).
async fn sockets_with_a_snapshot(data: &Path, session: &str) -> Vec<String> {
    use std::os::unix::fs::FileTypeExt;
    let dir = data.join("sessions").join(session).join("kernel");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let sockets: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_socket()))
            .map(|entry| entry.path().to_string_lossy().into_owned())
            .collect();
        if sockets.len() >= 10 || std::time::Instant::now() > deadline {
            assert!(sockets.len() >= 10, "no snapshot of {session} listens: {sockets:?}");
            return sockets;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A kernel that knows the exact paths of another session's sockets (its kernel's five
/// channels and its snapshots'), as `/proc/<pid>/cmdline` and `/proc/net/unix` tell anyone,
/// cannot connect to any of them, nor hear that session's outputs on a SUB socket.
async fn other_kernels_sockets_are_out_of_reach(level: &str) {
    let (_guard, data) = data_dir();
    let Some(server) = start(&data, level, &[]).await else { return };
    let spy = confined_session(&server, level).await;
    let victim = confined_session(&server, level).await;
    server.ok(&victim, "import time\ntime.sleep(0.5)\nx = 1", None).await;
    let sockets = sockets_with_a_snapshot(&data, &victim).await;

    let listen = format!(
        "import socket, threading, zmq, json\n\
         paths = {sockets:?}\n\
         reached = []\n\
         for path in paths:\n\
         \x20   s = socket.socket(socket.AF_UNIX)\n\
         \x20   try:\n\
         \x20       s.connect(path)\n\
         \x20       reached.append(path)\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         \x20   s.close()\n\
         heard = []\n\
         context = zmq.Context()\n\
         sub = context.socket(zmq.SUB)\n\
         sub.setsockopt(zmq.SUBSCRIBE, b'')\n\
         dealers = []\n\
         for path in paths:\n\
         \x20   sub.connect('ipc://' + path)\n\
         \x20   dealer = context.socket(zmq.DEALER)\n\
         \x20   dealer.connect('ipc://' + path)\n\
         \x20   dealers.append(dealer)\n\
         def drain():\n\
         \x20   while True:\n\
         \x20       heard.append(b''.join(sub.recv_multipart()))\n\
         threading.Thread(target=drain, daemon=True).start()\n\
         print('reached', len(reached))"
    );
    let (reached, listening) = server.ok(&spy, &listen, None).await;
    server.ok(&victim, "print('SECRET-OUTPUT-' + 'of-the-victim')", None).await;
    let (heard, _) = server
        .ok(
            &spy,
            "import time\ntime.sleep(1)\nprint('heard', len(heard), any(b'SECRET-OUTPUT' in m for m in heard))\n\
             print('connected', reached)",
            Some(&listening),
        )
        .await;
    assert_eq!(reached, "reached 0\n", "{heard}");
    assert!(heard.starts_with("heard 0 False\n"), "{heard}");
}

#[tokio::test]
async fn files_kernels_cannot_reach_other_kernels_sockets() {
    other_kernels_sockets_are_out_of_reach("files").await;
}

#[tokio::test]
async fn strict_kernels_cannot_reach_other_kernels_sockets() {
    other_kernels_sockets_are_out_of_reach("strict").await;
}

/// Starts `sh -c <script> <tag>` in a process group of its own, outside every sandbox.
fn bystander(script: &str, tag: &str) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sh").args(["-c", script, tag]).process_group(0).spawn().unwrap()
}

/// Whether any process of the group `pgid` runs (zombies, which nobody may reap soon once
/// their server is gone, do not count).
fn group_lives(pgid: u32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        fields.len() > 2 && fields[2] == pgid.to_string() && !matches!(fields[0], "Z" | "X")
    })
}

/// Pid records a kernel writes in its own directory make the next server kill nothing: not a
/// group whose leader is gone (its other processes live on), not a process whose command
/// line names a kernel file. The server's own record of a kernel it started still is acted on,
/// even for the child it left once it exited.
async fn forged_pid_records_kill_nothing(level: &str) {
    let (_guard, data) = data_dir();
    let Some(server) = start(&data, level, &[]).await else { return };
    // A group whose leader has exited, and a leader whose command line names a kernel file.
    let mut exited_leader = bystander("sleep 300 & exit 0", "x");
    let leaderless = exited_leader.id();
    exited_leader.wait().unwrap();
    let mut named = bystander("sleep 300; true", "kernel-bbbb2222.json");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(group_lives(leaderless));

    let session = confined_session(&server, level).await;
    let kernel_dir = data.join("sessions").join(&session).join("kernel");
    let forge = format!(
        "import os, json\n\
         d = {:?}\n\
         json.dump({{'kernel': {leaderless}, 'server': 1}}, open(d + '/kernel-aaaa1111.pid', 'w'))\n\
         json.dump({{'kernel': {}, 'server': 1}}, open(d + '/kernel-bbbb2222.pid', 'w'))\n\
         import subprocess\n\
         subprocess.Popen(['sleep', '300'])\n\
         print(os.getpid())",
        kernel_dir.to_str().unwrap(),
        named.id()
    );
    // The kernel's own group, with a child that outlives the kernel once the server is gone.
    let (kernel, _) = server.ok(&session, &forge, None).await;
    let kernel: u32 = kernel.trim().parse().unwrap();
    server.kill();

    let restarted = start(&data, level, &[]).await.unwrap();
    restarted.call("list_sessions", json!({})).await;
    let (leaderless_lives, named_lives, kernel_lives) =
        (group_lives(leaderless), named.try_wait().unwrap().is_none(), group_lives(kernel));
    let _ =
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(leaderless as i32), nix::sys::signal::SIGKILL);
    named.kill().unwrap();
    named.wait().unwrap();
    assert!(leaderless_lives, "a forged record killed a group whose leader is gone");
    assert!(named_lives, "a forged record killed a process naming a kernel file");
    assert!(!kernel_lives, "the orphaned kernel {kernel} of the killed server, or its child, lives on");
}

#[tokio::test]
async fn files_forged_pid_records_kill_nothing() {
    forged_pid_records_kill_nothing("files").await;
}

#[tokio::test]
async fn strict_forged_pid_records_kill_nothing() {
    forged_pid_records_kill_nothing("strict").await;
}

/// A server started in `/` shows its kernels no more than one started anywhere else: not
/// another session's files (its connection key), and not the system's secrets even as root.
async fn nothing_depends_on_where_the_server_started(level: &str) {
    let (_guard, data) = data_dir();
    if no_sandbox() {
        return;
    }
    let server = Server::start_with(&data, "numpy", |command| {
        command.args(["--sandbox", level]).current_dir("/");
    })
    .await;
    let spy = confined_session(&server, level).await;
    let victim = confined_session(&server, level).await;
    server.ok(&victim, "x = 1", None).await;
    let victim_dir = data.join("sessions").join(&victim);
    let connection = std::fs::read_dir(victim_dir.join("kernel"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "json"))
        .unwrap();
    let probes = [
        format!("open({:?}).read()", connection.to_str().unwrap()),
        format!("os.listdir({:?})", victim_dir.join("kernel").to_str().unwrap()),
        format!("open({:?}).read()", victim_dir.join("graph.json").to_str().unwrap()),
        "open('/etc/shadow').read()".to_owned(),
        "open('/etc/gshadow').read()".to_owned(),
        "os.listdir('/root')".to_owned(),
    ];
    let code = probes
        .iter()
        .map(|probe| {
            format!(
                "try:\n    {probe}\n    print('READ', {probe:?})\nexcept OSError as error:\n    \
                 print('refused', type(error).__name__)"
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (seen, _) = server.ok(&spy, &format!("import os\n{code}"), None).await;
    assert!(!seen.contains("READ"), "{seen}");
    assert_eq!(seen.matches("refused").count(), probes.len(), "{seen}");
}

#[tokio::test]
async fn files_shows_no_other_session_from_a_server_started_in_root_nor_system_secrets() {
    nothing_depends_on_where_the_server_started("files").await;
}

#[tokio::test]
async fn strict_shows_no_other_session_from_a_server_started_in_root_nor_system_secrets() {
    nothing_depends_on_where_the_server_started("strict").await;
}

#[tokio::test]
async fn strict_makes_no_socket_but_unix_ip_and_routing_ones() {
    let (_guard, data) = data_dir();
    let Some(server) = start(&data, "strict", &[]).await else { return };
    let session = confined_session(&server, "strict").await;
    // AF_VSOCK, AF_PACKET, AF_NETLINK with NETLINK_AUDIT and AF_ALG, each with a type it supports.
    let probe = "import socket\n\
                 kinds = {40: (socket.SOCK_STREAM, 0), 17: (socket.SOCK_RAW, 0), 16: (socket.SOCK_RAW, 9), 38: (socket.SOCK_SEQPACKET, 0)}\n\
                 for family, (kind, protocol) in kinds.items():\n\
                 \x20   try:\n\
                 \x20       socket.socket(family, kind, protocol).close()\n\
                 \x20       print(family, 'made')\n\
                 \x20   except OSError as error:\n\
                 \x20       print(family, error.errno)\n\
                 socket.socket(socket.AF_UNIX).close()\n\
                 print('unix made')";
    let (seen, _) = server.ok(&session, probe, None).await;
    assert_eq!(seen, "40 97\n17 97\n16 97\n38 97\nunix made\n", "not all refused with EAFNOSUPPORT");
}

#[tokio::test]
async fn attach_kernel_refuses_connection_files_written_inside_sessions() {
    let (_guard, data) = data_dir();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(server) = start(&data, "files", &[]).await else { return };
    let spy = confined_session(&server, "files").await;
    let victim = confined_session(&server, "files").await;
    server.ok(&victim, "x = 'the victim'", None).await;
    // A connection file the kernel writes, naming an address of its choosing.
    let forged = format!(
        "import json, os\n\
         ports = dict((f'{{c}}_port', {port}) for c in ('shell', 'iopub', 'stdin', 'control', 'hb'))\n\
         json.dump(dict(ports, transport='tcp', ip='127.0.0.1', key='k', signature_scheme='hmac-sha256'), \
         open('forged.json', 'w'))\n\
         print(os.path.abspath('forged.json'))"
    );
    let (written, _) = server.ok(&spy, &forged, None).await;
    let victims = std::fs::read_dir(data.join("sessions").join(&victim).join("kernel"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "json"))
        .unwrap();
    for file in [written.trim(), victims.to_str().unwrap()] {
        let attached = server.call("attach_kernel", json!({ "connection_file": file })).await;
        let text = texts(&attached).join("\n");
        assert_eq!(attached.is_error, Some(true), "{file} was attached: {text}");
        assert!(text.contains("may have been written by one of them"), "{text}");
    }
    let connected = tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
    assert!(connected.is_err(), "the server connected to the address a kernel chose");
}
