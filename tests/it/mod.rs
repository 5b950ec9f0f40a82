mod attach;
mod common;
mod exec_cli;
mod kernel;
mod mcp;
mod venv;
