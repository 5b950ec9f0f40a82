//! Where a session's kernels come from: the seam between a session's kernel pool and kernels.
//!
//! A [`KernelProvider`] starts, interrupts, kills and stops the kernels of one session, and says
//! whether it can restart them (a provider that cannot is a pool of one that only goes
//! forward). The pool (`session/pool.rs`) goes through it for every lifecycle step and never
//! looks at what kind of provider it has. [`ProviderRecord`] is what a session's record says
//! about its provider, so that a restarted server opens the same one again.
//!
//! A new place to run kernels is one new file here implementing [`KernelProvider`], a variant
//! of [`ProviderRecord`] with its arm in [`ProviderRecord::open`], and its settings.
//! - `local.rs`: kernels in the session's own uv venv, which we start, restart and stop.
//! - `attached.rs`: one kernel somebody else started, reached through its connection file.
//! - `gateway/`: kernels on a Jupyter gateway, through its REST API and kernel WebSocket.

mod attached;
mod gateway;
mod local;

pub use attached::{AttachedProvider, refuse_kernel_written};
pub use gateway::GatewayProvider;
pub use local::LocalProvider;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{GatewaySettings, Limits};
use crate::kernel::{ExecutionStatus, Kernel, KernelError, Output, OutputLimits, PendingFork};
use crate::venv::{Venv, pip_install_code};

/// The file in a session's kernel directory that lists the ids of the gateway kernels it runs.
const GATEWAY_KERNELS_FILE: &str = "gateway-kernels";

/// How long an install through a kernel (`%pip install`) may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Starts, interrupts, kills and stops the kernels of one session.
///
/// The defaults act on the kernel itself, which is right wherever the kernel's connection
/// reaches its process (a local or attached kernel); a provider whose kernels live behind
/// another API (a gateway's REST calls) overrides them.
#[async_trait::async_trait]
pub trait KernelProvider: Send + Sync {
    /// Where the kernels run, for messages: "a kernel attached through `…`".
    fn describe(&self) -> String;

    /// Whether a kernel can be replaced by a fresh one (to replay another branch). Without it
    /// the session keeps one kernel that it never restarts or stops.
    fn can_restart(&self) -> bool;

    /// The venv of the session's own that the kernels run in, when there is one (installs and
    /// `uv pip freeze` need it).
    fn venv(&self) -> Option<&Venv> {
        None
    }

    /// The kernels' working directory, when it is ours to read and write (`upload_file`,
    /// `download_file`); `None` for a kernel whose working directory we do not know.
    fn working_dir(&self) -> Option<&Path> {
        None
    }

    /// What the session's record says of this provider.
    fn record(&self) -> ProviderRecord;

    /// Whether `install_packages` installs through the kernels themselves (`%pip install`),
    /// for kernels in no venv of ours that we may still install into; the provider then
    /// remembers the installs ([`KernelProvider::remember_installs`]) and every kernel it
    /// starts later installs them before it serves anything.
    fn installs_through_kernels(&self) -> bool {
        false
    }

    /// Remembers that `requirements` were installed into the running kernels, for the kernels
    /// started later (and the session's record).
    fn remember_installs(&self, _requirements: &[String]) {}

    /// Stops the kernels an earlier server started from this provider and left running when it
    /// stopped without cleaning up (a crash); returns how many were stopped by the time it
    /// returns. Local kernels are killed through their pid records
    /// ([`stop_left_behind`](crate::kernel::launch::stop_left_behind)), a gateway's are deleted in
    /// the background, and attached ones are not ours, so the default does nothing.
    async fn stop_left_behind(self: Arc<Self>) -> usize {
        0
    }

    /// A new kernel, answering requests, with a fresh state (or, for a kernel somebody else
    /// started, whatever state it holds).
    ///
    /// # Errors
    /// When the kernel does not start or answer; the error carries what the kernel said.
    async fn start(&self) -> Result<Kernel, KernelError>;

    /// Asks `kernel` to fork into a snapshot of the state it will hold once what was sent to
    /// it has run (the request is queued before anything sent later), which must be `state`
    /// (a chain hash in hex, empty for a fresh kernel).
    ///
    /// # Errors
    /// [`KernelError::ForkRefused`] where the kernels cannot be forked (the default: a kernel
    /// somebody else started, or one on another machine).
    fn fork(&self, kernel: &Kernel, state: String) -> Result<PendingFork, KernelError> {
        let _ = (kernel, state);
        Err(KernelError::ForkRefused { reason: format!("{} cannot be forked", self.describe()) })
    }

    /// Interrupts the code `kernel` runs (a `KeyboardInterrupt`; the state is kept).
    ///
    /// # Errors
    /// When the interrupt cannot be delivered.
    async fn interrupt(&self, kernel: &Kernel) -> Result<(), KernelError> {
        kernel.interrupt().await
    }

    /// Kills `kernel` at once, for code that ignores interrupts; its running execution ends as
    /// a death, with the outputs captured so far.
    ///
    /// # Errors
    /// When the kernel is not ours to kill.
    async fn kill(&self, kernel: &Kernel) -> Result<(), KernelError> {
        kernel.kill()
    }

    /// Stops `kernel` gracefully (it may still flush its files), bounded in time.
    async fn stop(&self, kernel: Kernel) {
        kernel.shutdown().await
    }

    /// Gets rid of `kernel` whose state is being thrown away (a restart, a destroyed session):
    /// no graceful shutdown to wait for.
    async fn discard(&self, kernel: Kernel) {
        kernel.terminate().await
    }
}

/// What a session's record says about where its kernels come from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum ProviderRecord {
    /// Kernels in the session's venv (`<session>/venv`).
    Local,
    /// A kernel somebody else started.
    Attached {
        /// Its connection file.
        connection_file: PathBuf,
    },
    /// Kernels on a Jupyter gateway. The token is never recorded: it comes from the settings,
    /// and only when they name this same gateway.
    Gateway {
        /// The gateway's base URL.
        url: String,
        /// The kernelspec its kernels are started from.
        kernel_name: String,
        /// The requirements installed through the kernels, in order; every new kernel
        /// installs them before it serves anything.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        installs: Vec<String>,
    },
}

/// What a provider needs besides its record: where the session keeps its files, and limits.
#[derive(Debug, Clone)]
pub struct ProviderContext {
    /// The session directory: all a confined kernel may write.
    pub session_dir: PathBuf,
    /// The session's venv directory.
    pub venv_dir: PathBuf,
    /// The directory for the kernels' own files (connection files, sockets, log).
    pub kernel_dir: PathBuf,
    /// The kernels' working directory: the files the code reads and writes by relative paths.
    pub work_dir: PathBuf,
    /// The limits (and the sandbox) each kernel runs under.
    pub limits: Limits,
    /// The gateway settings: the token of the gateway they name.
    pub gateway: GatewaySettings,
}

impl ProviderRecord {
    /// The provider this record names.
    ///
    /// # Errors
    /// When a gateway's TLS configuration cannot be built.
    pub fn open(&self, context: ProviderContext) -> Result<Arc<dyn KernelProvider>, KernelError> {
        Ok(match self {
            ProviderRecord::Local => Arc::new(LocalProvider::new(context)),
            ProviderRecord::Attached { connection_file } => {
                Arc::new(AttachedProvider::new(connection_file.clone()))
            }
            ProviderRecord::Gateway { url, kernel_name, installs } => {
                // The token is the configured gateway's: never sent to another one.
                let configured = context.gateway.url.as_deref().is_some_and(|configured| configured == url);
                let (token, no_token_because) = match (configured, &context.gateway.gateway_token) {
                    (true, Some(token)) => (Some(token.clone()), ""),
                    (true, None) => (None, "set --gateway-token or MCP_PYREPL_GATEWAY_TOKEN"),
                    (false, _) => (
                        None,
                        "the session's gateway is not the one --kernel-gateway names, and a token goes only to that one",
                    ),
                };
                let started = context.kernel_dir.join(GATEWAY_KERNELS_FILE);
                let provider = GatewayProvider::new(
                    url,
                    token,
                    no_token_because,
                    kernel_name.clone(),
                    installs.clone(),
                )?;
                Arc::new(provider.with_started_record(started))
            }
        })
    }
}

/// Runs `%pip install` of `requirements` (validated) in `kernel`; pip's output.
///
/// # Errors
/// pip's output, or the kernel's death, when the install fails.
pub async fn install_in_kernel(kernel: &Kernel, requirements: &[String]) -> Result<String, String> {
    let code = pip_install_code(requirements);
    let run =
        tokio::time::timeout(INSTALL_TIMEOUT, kernel.execute_unrecorded(&code, OutputLimits::default()));
    let execution = match run.await {
        Err(_) => return Err(format!("the install took longer than {}s", INSTALL_TIMEOUT.as_secs())),
        Ok(Err(error)) => return Err(error.to_string()),
        Ok(Ok(execution)) => execution,
    };
    let text: String = execution
        .outputs
        .iter()
        .filter_map(|output| match output {
            Output::Stream { text, .. } => Some(text.clone()),
            other => other.traceback_text(),
        })
        .collect();
    match execution.status {
        ExecutionStatus::Ok => Ok(text),
        ExecutionStatus::Died(death) => Err(format!("the kernel {death}\n{text}")),
        ExecutionStatus::Error | ExecutionStatus::Aborted => Err(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_name_their_provider() {
        let attached = ProviderRecord::Attached { connection_file: "/run/k.json".into() };
        assert_eq!(
            serde_json::to_value(&attached).unwrap(),
            json!({ "provider": "attached", "connection_file": "/run/k.json" })
        );
        assert_eq!(serde_json::to_value(ProviderRecord::Local).unwrap(), json!({ "provider": "local" }));
        let back: ProviderRecord = serde_json::from_value(json!({ "provider": "local" })).unwrap();
        assert_eq!(back, ProviderRecord::Local);
        assert!(serde_json::from_value::<ProviderRecord>(json!({ "provider": "moon" })).is_err());
        let gateway = ProviderRecord::Gateway {
            url: "https://eg.example:8888".into(),
            kernel_name: "python3".into(),
            installs: vec!["six>=1".into()],
        };
        let value = json!({
            "provider": "gateway", "url": "https://eg.example:8888", "kernel_name": "python3", "installs": ["six>=1"]
        });
        assert_eq!(serde_json::to_value(&gateway).unwrap(), value);
        assert_eq!(serde_json::from_value::<ProviderRecord>(value).unwrap(), gateway);
    }
}
