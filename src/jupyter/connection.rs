//! Connection files: what a kernel binds and how its messages are signed.
//!
//! Owns reading and writing the JSON file (written with mode 0600: it holds the signing key) and
//! turning it into ZeroMQ endpoints. With `ipc` the endpoint of a channel is
//! `ipc://{ip}-{port}`, `ip` being a path prefix; we keep it absolute and short because a unix
//! socket path has at most 107 usable bytes.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::message::Channel;

/// Longest unix socket path the kernel can bind (sun_path is 108 bytes with its NUL).
const MAX_IPC_PATH: usize = 107;

/// Transport named in a connection file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP on `ip`.
    Tcp,
    /// Unix domain sockets at `{ip}-{port}`.
    Ipc,
}

/// Errors reading, writing or making connection files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The file could not be read or written.
    #[error("cannot {action} connection file `{path}`")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a connection file.
    #[error("`{path}` is not a valid Jupyter connection file")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A signature scheme other than `hmac-sha256`.
    #[error("connection file `{path}` asks for signature scheme `{scheme}`; only `hmac-sha256` is supported")]
    UnsupportedScheme {
        /// The file.
        path: PathBuf,
        /// The scheme it names.
        scheme: String,
    },
    /// An ipc path prefix too long for a unix socket.
    #[error(
        "ipc socket path `{path}` is {len} bytes, over the 107-byte limit of unix sockets; use a shorter data directory"
    )]
    IpcPathTooLong {
        /// The longest socket path.
        path: String,
        /// Its length.
        len: usize,
    },
    /// No free TCP port could be reserved.
    #[error("cannot reserve a free TCP port on {ip}")]
    NoFreePort {
        /// The address tried.
        ip: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The content of a Jupyter connection file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// `tcp` or `ipc`.
    pub transport: Transport,
    /// An IP address for tcp, a path prefix for ipc.
    pub ip: String,
    /// Shell channel port (or ipc suffix).
    pub shell_port: u16,
    /// IOPub channel port.
    pub iopub_port: u16,
    /// Stdin channel port.
    pub stdin_port: u16,
    /// Control channel port.
    pub control_port: u16,
    /// Heartbeat port.
    pub hb_port: u16,
    /// The HMAC key, used as its UTF-8 bytes.
    pub key: String,
    /// Must be `hmac-sha256`.
    pub signature_scheme: String,
    /// The kernel's name, informational.
    #[serde(default)]
    pub kernel_name: String,
}

impl ConnectionInfo {
    /// A connection over unix sockets named `{prefix}-{n}`, with a fresh random key.
    ///
    /// # Errors
    /// When the socket paths would be too long for the kernel to bind.
    pub fn ipc(prefix: &Path) -> Result<Self, ConnectionError> {
        let ip = prefix.to_string_lossy().into_owned();
        let info = ConnectionInfo::with_ports(Transport::Ipc, ip, [1, 2, 3, 4, 5]);
        let longest = info.ipc_path(Channel::Heartbeat);
        let len = longest.as_os_str().len();
        if len > MAX_IPC_PATH {
            return Err(ConnectionError::IpcPathTooLong { path: longest.display().to_string(), len });
        }
        Ok(info)
    }

    /// A connection over TCP on `ip` (e.g. `127.0.0.1`), on ports free at the time of the call.
    ///
    /// # Errors
    /// When no port can be reserved.
    pub fn tcp(ip: Ipv4Addr) -> Result<Self, ConnectionError> {
        // Hold all five listeners until every port is chosen so no two are the same; the kernel
        // binds them a moment later (a small race with other processes, as in jupyter_client).
        let listeners = (0..5)
            .map(|_| TcpListener::bind((ip, 0)))
            .collect::<std::io::Result<Vec<_>>>()
            .and_then(|ls| {
                ls.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<Vec<_>>>()
            })
            .map_err(|source| ConnectionError::NoFreePort { ip: ip.to_string(), source })?;
        let ports: [u16; 5] = listeners.try_into().expect("five ports");
        Ok(ConnectionInfo::with_ports(Transport::Tcp, ip.to_string(), ports))
    }

    fn with_ports(transport: Transport, ip: String, ports: [u16; 5]) -> Self {
        let [shell_port, iopub_port, stdin_port, control_port, hb_port] = ports;
        ConnectionInfo {
            transport,
            ip,
            shell_port,
            iopub_port,
            stdin_port,
            control_port,
            hb_port,
            key: uuid::Uuid::new_v4().to_string(),
            signature_scheme: "hmac-sha256".to_owned(),
            kernel_name: "mcp-pyrepl".to_owned(),
        }
    }

    /// The port (or ipc suffix) of `channel`.
    pub fn port(&self, channel: Channel) -> u16 {
        match channel {
            Channel::Shell => self.shell_port,
            Channel::Iopub => self.iopub_port,
            Channel::Stdin => self.stdin_port,
            Channel::Control => self.control_port,
            Channel::Heartbeat => self.hb_port,
        }
    }

    /// The ZeroMQ endpoint of `channel`, e.g. `tcp://127.0.0.1:5555` or `ipc:///dir/k-1`.
    pub fn endpoint(&self, channel: Channel) -> String {
        match self.transport {
            Transport::Tcp => format!("tcp://{}:{}", self.ip, self.port(channel)),
            Transport::Ipc => format!("ipc://{}", self.ipc_path(channel).display()),
        }
    }

    /// The socket file of `channel` for ipc transport (`{ip}-{port}`).
    pub fn ipc_path(&self, channel: Channel) -> PathBuf {
        PathBuf::from(format!("{}-{}", self.ip, self.port(channel)))
    }

    /// Every channel a client connects to.
    pub const CHANNELS: [Channel; 5] =
        [Channel::Shell, Channel::Iopub, Channel::Stdin, Channel::Control, Channel::Heartbeat];

    /// Reads a connection file.
    ///
    /// # Errors
    /// When the file cannot be read, is not a connection file, or uses another signature scheme.
    pub fn read(path: &Path) -> Result<Self, ConnectionError> {
        let bytes = std::fs::read(path).map_err(|source| ConnectionError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        let info: ConnectionInfo = serde_json::from_slice(&bytes)
            .map_err(|source| ConnectionError::Invalid { path: path.to_owned(), source })?;
        if info.signature_scheme != "hmac-sha256" {
            return Err(ConnectionError::UnsupportedScheme {
                path: path.to_owned(),
                scheme: info.signature_scheme,
            });
        }
        Ok(info)
    }

    /// Writes the connection file with mode 0600, replacing any file there.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&self, path: &Path) -> Result<(), ConnectionError> {
        let io_error = |source| ConnectionError::Io { action: "write", path: path.to_owned(), source };
        // Remove first: `mode` only applies when the file is created.
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(e)),
            _ => {}
        }
        let json = serde_json::to_vec_pretty(self).expect("connection info serialises");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut file| file.write_all(&json))
            .map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ipc_endpoints_use_the_prefix_and_port() {
        let info = ConnectionInfo::ipc(Path::new("/tmp/s/k")).unwrap();
        assert_eq!(info.endpoint(Channel::Shell), "ipc:///tmp/s/k-1");
        assert_eq!(info.endpoint(Channel::Heartbeat), "ipc:///tmp/s/k-5");
    }

    #[test]
    fn overlong_ipc_prefix_is_refused() {
        let prefix = format!("/tmp/{}", "d".repeat(120));
        assert!(matches!(
            ConnectionInfo::ipc(Path::new(&prefix)),
            Err(ConnectionError::IpcPathTooLong { .. })
        ));
    }

    #[test]
    fn tcp_ports_are_distinct() {
        let info = ConnectionInfo::tcp(Ipv4Addr::LOCALHOST).unwrap();
        let mut ports: Vec<u16> = ConnectionInfo::CHANNELS.iter().map(|c| info.port(*c)).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 5);
        assert_eq!(info.endpoint(Channel::Shell), format!("tcp://127.0.0.1:{}", info.shell_port));
    }

    #[test]
    fn written_file_is_private_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conn.json");
        std::fs::write(&path, "old, world-readable").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let info = ConnectionInfo::tcp(Ipv4Addr::LOCALHOST).unwrap();
        info.write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(ConnectionInfo::read(&path).unwrap(), info);
    }

    #[test]
    fn reads_a_file_written_by_jupyter_client() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel-1.json");
        std::fs::write(
            &path,
            r#"{"shell_port": 5001, "iopub_port": 5002, "stdin_port": 5003, "control_port": 5004,
                "hb_port": 5005, "ip": "127.0.0.1", "key": "abc", "transport": "tcp",
                "signature_scheme": "hmac-sha256", "kernel_name": "", "jupyter_session": "x"}"#,
        )
        .unwrap();
        let info = ConnectionInfo::read(&path).unwrap();
        assert_eq!(info.endpoint(Channel::Iopub), "tcp://127.0.0.1:5002");
    }

    #[test]
    fn bad_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = ConnectionInfo::read(&missing).unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");

        let md5 = dir.path().join("md5.json");
        std::fs::write(
            &md5,
            r#"{"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5,
                "ip": "127.0.0.1", "key": "k", "transport": "tcp", "signature_scheme": "hmac-md5"}"#,
        )
        .unwrap();
        assert!(matches!(ConnectionInfo::read(&md5), Err(ConnectionError::UnsupportedScheme { .. })));
    }
}
