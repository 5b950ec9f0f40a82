//! Kernels on a Jupyter gateway (Enterprise Gateway, Kernel Gateway, Jupyter Server): each one
//! started with `POST /api/kernels`, reached through its `/channels` WebSocket, interrupted with
//! `POST …/interrupt`, and deleted (`DELETE`) to kill, stop or discard it. The gateway is asked
//! every few seconds whether it still has each kernel, so a culled or deleted one is seen dead
//! even while no cell runs.
//!
//! The kernels' environment is the gateway's, not a venv of ours: packages are installed
//! through the kernels themselves (`%pip install`), and the provider remembers them, in the
//! session's record, so that every kernel it starts later installs them again before it serves
//! anything (before any replay). The gateway runs and confines the kernels; our sandbox does
//! not apply to them, and neither do the local memory and CPU limits.

mod api;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use self::api::{GatewayApi, KernelState, START_TIMEOUT};
use super::{KernelProvider, ProviderRecord, install_in_kernel};
use crate::kernel::launch::STARTUP_PY;
use crate::kernel::{Death, ExecutionStatus, Kernel, KernelAddress, KernelError};

/// How often the gateway is asked whether it still has a kernel.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(5);

/// Starts kernels of one kernelspec on one gateway.
#[derive(Debug)]
pub struct GatewayProvider {
    api: GatewayApi,
    kernel_name: String,
    /// The requirements installed so far, in order; every new kernel installs them first.
    installs: Mutex<Vec<String>>,
    /// The ids of the kernels started and not yet deleted, and the file that lists them (one
    /// per line), so a server started after a crash deletes what this one left running.
    started: Mutex<BTreeSet<String>>,
    started_file: Option<PathBuf>,
}

impl GatewayProvider {
    /// Kernels of the kernelspec `kernel_name` on the gateway at `url`, sending `token` when
    /// given (`no_token_because` says why there is none, for the error a refusal gets); each
    /// new kernel first installs `installs`.
    ///
    /// # Errors
    /// When no TLS configuration can be built from the system's roots.
    pub fn new(
        url: &str,
        token: Option<String>,
        no_token_because: &'static str,
        kernel_name: String,
        installs: Vec<String>,
    ) -> Result<Self, KernelError> {
        let api = GatewayApi::new(url, token, no_token_because)?;
        let (installs, started) = (Mutex::new(installs), Mutex::new(BTreeSet::new()));
        Ok(GatewayProvider { api, kernel_name, installs, started, started_file: None })
    }

    /// The same provider, listing the kernels it runs in `file`.
    pub fn with_started_record(mut self, file: PathBuf) -> Self {
        self.started_file = Some(file);
        self
    }

    /// Records that kernel `id` runs (`true`) or was deleted (`false`). A failure to write is
    /// logged: the record only helps a later server clean up.
    fn note(&self, id: &str, running: bool) {
        let mut started = self.started.lock().expect("started lock");
        let changed = if running { started.insert(id.to_owned()) } else { started.remove(id) };
        let Some(file) = self.started_file.as_ref().filter(|_| changed) else { return };
        let text: String = started.iter().map(|id| format!("{id}\n")).collect();
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(|error| error.to_string())
            .and_then(|()| crate::atomic_file::replace(file, text.as_bytes()).map_err(|e| e.to_string()));
        if let Err(error) = written {
            tracing::warn!(file = %file.display(), %error, "cannot record the gateway kernels of a session");
        }
    }

    /// The gateway's id of `kernel`, to `action` it.
    fn id_of<'k>(&self, kernel: &'k Kernel, action: &'static str) -> Result<&'k str, KernelError> {
        match kernel.address() {
            KernelAddress::Gateway { id, url } if url == self.api.url() => Ok(id),
            address => Err(KernelError::NotOwned { action, address: address.clone() }),
        }
    }

    /// Kernel `id`, connected and with the recorded installs done.
    async fn connect(&self, id: &str) -> Result<Kernel, KernelError> {
        let socket = self.api.channels(id).await?;
        let (death_tx, liveness) = watch::channel(None);
        tokio::spawn(watch_liveness(self.api.clone(), id.to_owned(), death_tx));
        let address = KernelAddress::Gateway { url: self.api.url().to_owned(), id: id.to_owned() };
        let kernel = Kernel::over_websocket(socket, address, liveness, START_TIMEOUT).await?;
        // No profile of ours there: define `display_figure` and the figure hooks as a local
        // kernel's startup file does, leaving no trace in history or the execution counter.
        let startup = kernel.execute_silently(STARTUP_PY).await?;
        if startup.status != ExecutionStatus::Ok {
            let answer = format!("started kernel `{id}`, but it could not run mcp-pyrepl's startup code");
            return Err(KernelError::Gateway { url: self.api.url().to_owned(), answer });
        }
        let installs = self.installs.lock().expect("installs lock").clone();
        if !installs.is_empty() {
            install_in_kernel(&kernel, &installs).await.map_err(|answer| KernelError::Gateway {
                url: self.api.url().to_owned(),
                answer: format!(
                    "started kernel `{id}`, but it could not install the session's packages again: {answer}"
                ),
            })?;
        }
        Ok(kernel)
    }

    async fn delete(&self, kernel: &Kernel) -> Result<(), KernelError> {
        self.delete_id(self.id_of(kernel, "delete")?).await
    }

    async fn delete_id(&self, id: &str) -> Result<(), KernelError> {
        self.api.delete(id).await?;
        self.note(id, false);
        Ok(())
    }
}

#[async_trait::async_trait]
impl KernelProvider for GatewayProvider {
    fn describe(&self) -> String {
        format!("a kernel on the Jupyter gateway `{}` (kernelspec `{}`)", self.api.url(), self.kernel_name)
    }

    fn can_restart(&self) -> bool {
        true
    }

    fn record(&self) -> ProviderRecord {
        ProviderRecord::Gateway {
            url: self.api.url().to_owned(),
            kernel_name: self.kernel_name.clone(),
            installs: self.installs.lock().expect("installs lock").clone(),
        }
    }

    async fn start(&self) -> Result<Kernel, KernelError> {
        let id = self.api.start_kernel(&self.kernel_name).await.map_err(|error| match error {
            KernelError::Gateway { url, answer } => KernelError::Gateway {
                url,
                answer: format!(
                    "{answer} (the kernelspec asked for is `{}`: --gateway-kernel-name, MCP_PYREPL_GATEWAY_KERNEL_NAME)",
                    self.kernel_name
                ),
            },
            other => other,
        })?;
        self.note(&id, true);
        match self.connect(&id).await {
            Ok(kernel) => Ok(kernel),
            Err(error) => {
                if let Err(cleanup) = self.delete_id(&id).await {
                    tracing::warn!(%cleanup, kernel = id, "cannot delete a gateway kernel that did not come up");
                }
                Err(error)
            }
        }
    }

    async fn interrupt(&self, kernel: &Kernel) -> Result<(), KernelError> {
        self.api.interrupt(self.id_of(kernel, "interrupt")?).await
    }

    /// Deletes the kernel: its WebSocket closes, so a running execution ends as a death.
    async fn kill(&self, kernel: &Kernel) -> Result<(), KernelError> {
        self.delete(kernel).await
    }

    async fn stop(&self, kernel: Kernel) {
        if let Err(error) = self.delete(&kernel).await {
            tracing::warn!(%error, "cannot delete a gateway kernel");
        }
    }

    async fn discard(&self, kernel: Kernel) {
        self.stop(kernel).await
    }

    fn installs_through_kernels(&self) -> bool {
        true
    }

    fn remember_installs(&self, requirements: &[String]) {
        self.installs.lock().expect("installs lock").extend(requirements.iter().cloned());
    }

    async fn stop_left_behind(self: Arc<Self>) -> usize {
        drop(tokio::spawn(async move { self.delete_left_behind().await }));
        0
    }
}

impl GatewayProvider {
    /// Deletes the kernels the started-kernels file names: an earlier server started them and
    /// did not delete them.
    async fn delete_left_behind(&self) {
        let Some(file) = &self.started_file else { return };
        let Ok(text) = std::fs::read_to_string(file) else { return };
        for id in text.lines().map(str::trim).filter(|id| !id.is_empty()) {
            self.started.lock().expect("started lock").insert(id.to_owned());
            match self.delete_id(id).await {
                Ok(()) => {
                    tracing::warn!(kernel = id, "deleted a gateway kernel an earlier server left running")
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot delete a gateway kernel an earlier server left running")
                }
            }
        }
    }
}

/// Asks the gateway every [`LIVENESS_INTERVAL`] whether it still has kernel `id`, and reports
/// its death once it has not (deleted, culled) or says it is dead. A gateway that does not
/// answer is no death (the WebSocket says when the gateway itself is gone). Ends when nobody
/// watches any more.
async fn watch_liveness(api: GatewayApi, id: String, death: watch::Sender<Option<Death>>) {
    let url = api.url().to_owned();
    loop {
        tokio::select! {
            () = death.closed() => return,
            () = tokio::time::sleep(LIVENESS_INTERVAL) => {}
        }
        let detail = match api.state(&id).await {
            Ok(KernelState::Unknown) => {
                format!(
                    "is gone from the gateway `{url}` (it no longer has kernel `{id}`: deleted or culled)"
                )
            }
            Ok(KernelState::Known(state)) if state == "dead" => {
                format!("is dead, says the gateway `{url}` (kernel `{id}`)")
            }
            Ok(KernelState::Known(_)) => continue,
            Err(error) => {
                tracing::debug!(%error, "gateway liveness check failed");
                continue;
            }
        };
        death.send_replace(Some(Death::Remote { detail }));
        return;
    }
}
