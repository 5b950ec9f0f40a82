//! `mcp-pyrepl exec`: run each argument as a cell in one kernel and print what it produced.
//!
//! Owns the hand-driven path to a kernel: a fresh kernel in the shared venv (built on first use
//! with the base packages, confined like a session's to its own directory) or an attached one, and the rendering of outputs for a
//! person (text, images saved to files) or for a program (`--json`, one object per output),
//! and what the command can fail with ([`ExecError`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::Settings;
use crate::kernel::{Execution, ExecutionStatus, Kernel, KernelError, LaunchSpec, Output, StreamName};
use crate::sandbox::{Sandbox, SandboxError};
use crate::venv::{Uv, VenvError};

/// Flags of `mcp-pyrepl exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Attach to a running kernel through its connection file instead of starting one
    #[arg(long, value_name = "FILE")]
    pub connection_file: Option<PathBuf>,

    /// Print one JSON object per output (and one per cell with its status)
    #[arg(long)]
    pub json: bool,

    /// Where images are saved [default: a new directory under the system temp directory]
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,

    /// Code to run; each argument is one cell, run in order in the same kernel
    #[arg(required = true, value_name = "CODE")]
    pub code: Vec<String>,
}

/// Result of the `exec` command.
pub type Result<T, E = ExecError> = std::result::Result<T, E>;

/// Why `exec` could not run its cells (a cell that fails is no error: [`run`] returns false).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// uv could not be found, or the shared venv could not be built.
    #[error(transparent)]
    Venv(#[from] VenvError),
    /// The sandbox asked for cannot be enforced.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The kernel could not be started, attached to or reached.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A kernel directory, the image directory or an image could not be written.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The directory or file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The outputs could not be printed (a closed pipe, a full disk).
    #[error("cannot print the outputs")]
    Print(#[from] std::io::Error),
}

/// Runs the cells and prints their outputs to `out` (errors and stderr text to `err`). Stops at
/// the first cell that fails, as a notebook's "run all" does.
///
/// Returns whether every cell succeeded.
///
/// # Errors
/// When the kernel cannot be started or reached, or output cannot be written.
pub async fn run(
    settings: &Settings,
    args: &ExecArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<bool> {
    let data_dir = settings.data_dir();
    // Lives as long as the kernel: its connection file, sockets and log are inside.
    let mut kernel_dir = None;
    let kernel = match &args.connection_file {
        Some(file) => Kernel::attach(file).await?,
        None => {
            let sandbox = Sandbox::resolve(&settings.sandbox.settings()).await?;
            let uv = Uv::locate(settings.uv.as_deref(), &data_dir).await?.with_sandbox(sandbox.clone());
            let venv = uv
                .ensure_venv(
                    &settings.shared_venv_dir(),
                    settings.python.as_deref(),
                    &settings.base_packages(),
                )
                .await?;
            let dir = kernel_dir.insert(tempdir_in(&data_dir.join("exec"))?);
            let confinement = sandbox.confinement(dir.path(), &[dir.path().to_owned()], venv.dir());
            let spec = LaunchSpec::new(venv.python(), dir.path())
                .with_confinement(confinement)
                .with_browser(crate::kernel::browser::find(settings.limits.chromium.as_deref()));
            Kernel::launch(spec).await?
        }
    };
    let image_dir = match &args.image_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("mcp-pyrepl-exec-{}", std::process::id())),
    };
    let mut printer = Printer { json: args.json, image_dir, images: 0 };

    let mut all_ok = true;
    for (index, code) in args.code.iter().enumerate() {
        let execution = kernel.execute(code).await?;
        printer.print(index, &execution, out, err)?;
        if execution.status != ExecutionStatus::Ok {
            all_ok = false;
            break;
        }
    }
    kernel.shutdown().await;
    drop(kernel_dir);
    Ok(all_ok)
}

struct Printer {
    json: bool,
    image_dir: PathBuf,
    images: usize,
}

impl Printer {
    fn print(
        &mut self,
        cell: usize,
        execution: &Execution,
        out: &mut impl Write,
        err: &mut impl Write,
    ) -> Result<()> {
        for output in &execution.outputs {
            let image = self.save_image(output)?;
            if self.json {
                writeln!(out, "{}", output_json(cell, output, image.as_deref()))?;
            } else {
                print_text(output, image.as_deref(), out, err)?;
            }
        }
        let status = match &execution.status {
            ExecutionStatus::Ok => "ok".to_owned(),
            ExecutionStatus::Error => "error".to_owned(),
            ExecutionStatus::Aborted => "aborted".to_owned(),
            ExecutionStatus::Died(death) => format!("kernel died: the kernel {death}"),
        };
        if self.json {
            let line = json!({"cell": cell, "type": "status", "status": status, "execution_count": execution.execution_count});
            writeln!(out, "{line}")?;
        } else if let ExecutionStatus::Died(_) | ExecutionStatus::Aborted = execution.status {
            writeln!(err, "cell {}: {status}", cell + 1)?;
        }
        Ok(())
    }

    /// Saves the first image of a display or result to a file; its path.
    fn save_image(&mut self, output: &Output) -> Result<Option<PathBuf>> {
        for (mime, extension) in [("image/png", "png"), ("image/jpeg", "jpg")] {
            if let Some(bytes) = output.image(mime) {
                std::fs::create_dir_all(&self.image_dir).map_err(cannot_write(&self.image_dir))?;
                self.images += 1;
                let path = self.image_dir.join(format!("image-{}.{extension}", self.images));
                std::fs::write(&path, bytes).map_err(cannot_write(&path))?;
                return Ok(Some(path));
            }
        }
        Ok(None)
    }
}

fn print_text(
    output: &Output,
    image: Option<&Path>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> std::io::Result<()> {
    match output {
        Output::Stream { name: StreamName::Stdout, text } => write!(out, "{text}"),
        Output::Stream { name: StreamName::Stderr, text } => write!(err, "{text}"),
        Output::Error { .. } => writeln!(err, "{}", output.traceback_text().unwrap_or_default()),
        Output::Omitted { .. } => writeln!(err, "{}", output.omission_note().unwrap_or_default()),
        Output::ExecuteResult { .. } | Output::DisplayData { .. } => match image {
            Some(path) => writeln!(out, "[image saved to {}]", path.display()),
            None => writeln!(out, "{}", output.text_plain().unwrap_or("[output with no text form]")),
        },
    }
}

fn output_json(cell: usize, output: &Output, image: Option<&Path>) -> Value {
    match output {
        Output::Stream { name, text } => {
            json!({"cell": cell, "type": "stream", "name": name.as_str(), "text": text})
        }
        Output::Error { ename, evalue, .. } => json!({
            "cell": cell, "type": "error", "ename": ename, "evalue": evalue,
            "traceback": output.traceback_text(),
        }),
        Output::ExecuteResult { execution_count, .. } => json!({
            "cell": cell, "type": "execute_result", "execution_count": execution_count,
            "text": output.text_plain(), "image": image,
        }),
        Output::DisplayData { .. } => json!({
            "cell": cell, "type": "display_data", "text": output.text_plain(), "image": image,
        }),
        Output::Omitted { bytes, images, full_output } => json!({
            "cell": cell, "type": "omitted", "bytes": bytes, "images": images, "full_output": full_output,
        }),
    }
}

/// The error for a failure to write `path`.
fn cannot_write(path: &Path) -> impl FnOnce(std::io::Error) -> ExecError + '_ {
    move |source| ExecError::Write { path: path.to_owned(), source }
}

/// A fresh private directory under `parent`, removed when dropped.
fn tempdir_in(parent: &Path) -> Result<TempDir> {
    let path = parent.join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&path).map_err(cannot_write(&path))?;
    Ok(TempDir(path))
}

struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
