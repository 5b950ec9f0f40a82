//! mcp-pyrepl: an MCP server that gives an LLM a stateful Python interpreter whose history is a
//! tree. Each session owns a uv virtualenv and a stock ipykernel in it; the server speaks the
//! Jupyter messaging protocol itself (signed multipart ZeroMQ frames) and decides from a DAG of
//! cells what a kernel must replay so that new code runs on exactly its parent's state.
//!
//! # Layout
//! - [`jupyter`]: the protocol: messages, the signed wire codec, connection files, sockets.
//! - [`kernel`]: one kernel: launch or attach, execute, interrupt, restart, shutdown, death.
//! - [`venv`]: uv: found or bootstrapped; venvs with ipykernel and the base packages.
//! - [`config`]: settings shared by every command (data directory, uv, Python).
//! - [`exec`]: the `exec` command, to drive a kernel by hand.

pub mod config;
pub mod exec;
pub mod jupyter;
pub mod kernel;
pub mod venv;
