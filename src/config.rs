//! Settings shared by every command, from flags and environment variables.
//!
//! Owns where things live on disk and which uv and Python are used; each command adds its own
//! flags next to its code.

use std::path::PathBuf;

/// Where data lives and which tools build the venvs.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Directory for sessions, venvs and the bootstrapped uv
    /// [default: `$XDG_DATA_HOME/mcp-pyrepl`, else `~/.local/share/mcp-pyrepl`]
    #[arg(long, env = "MCP_PYREPL_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// The `uv` executable [default: `uv` on PATH, else one installed from PyPI into the data
    /// directory]
    #[arg(long, env = "MCP_PYREPL_UV", global = true)]
    pub uv: Option<PathBuf>,

    /// Python for new venvs: a version (`3.13`) or an interpreter path [default: uv's choice]
    #[arg(long, env = "MCP_PYREPL_PYTHON", global = true)]
    pub python: Option<String>,
}

impl Settings {
    /// The data directory, resolved to its default when not set.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("mcp-pyrepl")
    }
}
