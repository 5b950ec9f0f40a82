//! The `mcp-pyrepl` binary: parses the command line, sets up logging to stderr, runs the command
//! and turns its outcome into an exit code.
//!
//! The hidden `confine` command runs before any tokio runtime exists: it must stay a
//! single-threaded process to enter namespaces of its own.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcp_pyrepl::config::Settings;
use mcp_pyrepl::demo::{self, DemoArgs};
use mcp_pyrepl::exec::{self, ExecArgs};
use mcp_pyrepl::mcp::serve::{self, ServeArgs};
use mcp_pyrepl::sandbox::{self, ConfineArgs};

/// An MCP server that gives an LLM a stateful, branching Python interpreter.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Each command has flags of its own: `mcp-pyrepl serve --help` (--transport, --host, --port, \
                  --token and their MCP_PYREPL_* variables), `mcp-pyrepl exec --help`, `mcp-pyrepl demo --help`.\n\
                  RUST_LOG sets what is logged to stderr (default `warn`); stdout carries only MCP messages."
)]
struct Cli {
    #[command(flatten)]
    settings: Settings,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve MCP over stdio or streamable HTTP (the default, over stdio, when no command is
    /// given)
    Serve(ServeArgs),
    /// Run each CODE argument as a cell in one fresh (or attached) kernel and print the outputs
    Exec(ExecArgs),
    /// Run the branching sine-wave example through a real MCP client and print what the model
    /// would see (the quickest way to see the product work)
    Demo(DemoArgs),
    /// Confine ourselves with a sandbox policy, then exec a kernel (what the server runs)
    #[command(hide = true)]
    Confine(ConfineArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Some(Command::Confine(args)) => {
            return exit_code(sandbox::confine(args).map(|()| true).map_err(Into::into));
        }
        Some(command) => command,
        None => Command::Serve(ServeArgs::from_env().unwrap_or_else(|error| error.exit())),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,zeromq=error")),
        )
        .with_writer(std::io::stderr)
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    exit_code(runtime.map_err(Into::into).and_then(|runtime| runtime.block_on(run(cli.settings, command))))
}

/// Success, failure (a cell or reply that failed), or 2 with the error's chain on stderr.
fn exit_code(outcome: anyhow::Result<bool>) -> ExitCode {
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("error: {}\n", chain.join("\n  Caused by: ")).as_bytes(),
            );
            ExitCode::from(2)
        }
    }
}

/// Runs `command`: whether it succeeded (every cell of `exec`, every reply of `demo`), or why
/// it could not run.
async fn run(settings: Settings, command: Command) -> anyhow::Result<bool> {
    Ok(match command {
        Command::Serve(args) => {
            serve::run(settings, &args, shutdown_signal()).await?;
            true
        }
        Command::Exec(args) => {
            exec::run(&settings, &args, &mut std::io::stdout(), &mut std::io::stderr()).await?
        }
        Command::Demo(args) => demo::run(&settings, &args, &mut std::io::stdout()).await?,
        Command::Confine(_) => unreachable!("`confine` runs before the runtime exists"),
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
