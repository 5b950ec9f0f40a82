//! mcp-pyrepl: an MCP server that gives an LLM a stateful Python interpreter whose history is a
//! tree. Each session owns a uv virtualenv and a stock ipykernel in it; the server speaks the
//! Jupyter messaging protocol itself (signed multipart ZeroMQ frames) and decides from a DAG of
//! cells what a kernel must replay so that new code runs on exactly its parent's state.
//!
//! # Layout
//! - [`jupyter`]: the protocol: messages, the signed wire codec, connection files, sockets; the
//!   JSON form and the WebSocket of a Jupyter server's kernel channels.
//! - [`kernel`]: one kernel: launch or attach, execute, interrupt, kill, shutdown, death,
//!   forking it into a snapshot; one actor over either transport (ZeroMQ, or a Jupyter
//!   server's WebSocket); the browser its plotly figures are drawn with.
//! - [`graph`]: the DAG of cells: ids, chain hashes, the replay plan; persisted atomically.
//! - [`venv`]: uv: found or bootstrapped; venvs with ipykernel and the base packages, reusing
//!   the last resolution of their versions and the bytecode compiled for them.
//! - [`provider`]: where a session's kernels come from (a local uv venv, a connection file, a
//!   Jupyter gateway), behind one trait the kernel pool goes through.
//! - [`sandbox`]: confining the kernels we start (Landlock, a network namespace): levels,
//!   policies, the start-up probe and the `confine` re-exec.
//! - [`session`]: a graph, a pool of kernels from one provider, the records readers see;
//!   running a cell with replay; all sessions.
//! - [`mcp`]: the MCP tools, outputs as MCP content (images fitted to a reply), the session's
//!   resources, the stdio and streamable HTTP transports.
//! - [`notebook`]: outputs and cell paths in nbformat 4.5 (kept outputs, exports).
//! - [`error`]: what a session operation can fail with, as the MCP layer sees it.
//! - [`background`]: background work (spares, the bytecode store) waits while cells run and
//!   runs its processes at idle priority.
//! - [`atomic_file`]: replacing a small file atomically and durably.
//! - [`private_dir`]: directories only the server's user may enter.
//! - [`util`]: small shared helpers: shortening text, `PATH` lookup, the OS failures errors wrap.
//! - [`config`]: settings shared by every command (data directory, uv, Python, limits), each
//!   number checked against its range as the command line is read.
//! - [`exec`]: the `exec` command, to drive a kernel by hand.
//! - [`demo`]: the `demo` command: the branching example through a real MCP client.

pub mod atomic_file;
pub mod background;
pub mod config;
pub mod demo;
pub mod error;
pub mod exec;
pub mod graph;
pub mod jupyter;
pub mod kernel;
pub mod mcp;
pub mod notebook;
pub mod private_dir;
pub mod provider;
pub mod sandbox;
pub mod session;
pub mod util;
pub mod venv;
