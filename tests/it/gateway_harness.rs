//! A real Jupyter Kernel Gateway for the tests: installed from PyPI through uv into a cached venv,
//! started on `127.0.0.1` with a token, its `python3` kernelspec pointing at a venv of the test's
//! own (so what a test installs into its kernels is gone with it), and stopped when it drops:
//! never left running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mcp_pyrepl::venv::Venv;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::OnceCell;

use super::common::{data_dir, uv, within};

/// The token every test gateway wants.
pub const TOKEN: &str = "test-gateway-token-5d1c";

/// The venv the gateway itself runs in: Kernel Gateway (and ipykernel, pip).
async fn gateway_venv() -> &'static Venv {
    static VENV: OnceCell<Venv> = OnceCell::const_new();
    VENV.get_or_init(|| async {
        uv().await
            .ensure_venv(
                &data_dir().join("venvs/kernel-gateway"),
                None,
                &["jupyter_kernel_gateway".to_owned()],
            )
            .await
            .expect("the gateway venv builds")
    })
    .await
}

/// A running Kernel Gateway, stopped (and its kernels with it) when dropped.
pub struct Gateway {
    port: u16,
    dir: tempfile::TempDir,
    kernel_venv: Venv,
    child: Option<Child>,
}

impl Gateway {
    /// A gateway on a free port whose `python3` kernels run in a new venv (ipykernel, pip).
    pub async fn start() -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let kernel_venv = uv()
            .await
            .create_venv(&dir.path().join("kernel-venv"), None, &[])
            .await
            .expect("kernel venv builds");
        let spec_dir = dir.path().join("jupyter/kernels/python3");
        std::fs::create_dir_all(&spec_dir).unwrap();
        let spec = serde_json::json!({
            "argv": [kernel_venv.python(), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (test)",
            "language": "python",
        });
        std::fs::write(spec_dir.join("kernel.json"), spec.to_string()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut gateway = Gateway { port, dir, kernel_venv, child: None };
        gateway.resume().await;
        gateway
    }

    /// The gateway's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The venv its kernels run in.
    pub fn kernel_venv(&self) -> &Venv {
        &self.kernel_venv
    }

    /// Starts the gateway process again on the same port (after [`Gateway::stop`]) and waits
    /// until it answers.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "the gateway runs already");
        let jupyter = self.dir.path().join("jupyter");
        let log = std::fs::File::create(self.dir.path().join("gateway.log")).unwrap();
        let child = Command::new(gateway_venv().await.python())
            .args(["-m", "jupyter", "kernelgateway", "--ip=127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--KernelGatewayApp.auth_token={TOKEN}"))
            .arg("--JupyterWebsocketPersonality.list_kernels=True")
            .env("JUPYTER_DATA_DIR", &jupyter)
            .env("JUPYTER_PATH", &jupyter)
            .env("JUPYTER_CONFIG_DIR", jupyter.join("config"))
            .env("JUPYTER_RUNTIME_DIR", jupyter.join("runtime"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the gateway starts");
        self.child = Some(child);
        let client = reqwest::Client::new();
        let url = format!("{}/api/kernelspecs", self.url());
        within(60, async {
            loop {
                let answer = client.get(&url).header("Authorization", format!("token {TOKEN}")).send().await;
                if answer.is_ok_and(|response| response.status().is_success()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }

    /// Stops the gateway as an operator would (SIGTERM: it shuts its kernels down), killing it
    /// when it takes more than 10 s.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        for _ in 0..100 {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A REST call to the gateway with its token, as somebody else would make it.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.url()))
            .header("Authorization", format!("token {TOKEN}"))
            .send()
            .await
            .expect("the gateway answers")
    }

    /// The ids of the kernels the gateway runs.
    pub async fn kernel_ids(&self) -> Vec<String> {
        let kernels: serde_json::Value =
            self.call(reqwest::Method::GET, "/api/kernels").await.json().await.unwrap();
        kernels.as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap().to_owned()).collect()
    }

    /// The gateway's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        for _ in 0..100 {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The flags that point a server at `gateway` (with its token unless `token` says otherwise).
pub fn gateway_flags(gateway: &Gateway, token: &str) -> Vec<String> {
    vec!["--kernel-gateway".into(), gateway.url(), "--gateway-token".into(), token.into()]
}

/// The session directory of `session` under `data`.
pub fn session_dir(data: &Path, session: &str) -> PathBuf {
    data.join("sessions").join(session)
}
