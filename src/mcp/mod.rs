//! The MCP face of the server: tools, the mapping of outputs to MCP content, transports.
//!
//! `tools.rs` holds the tool methods and their argument types (no kernel logic), `content.rs`
//! turns cell runs and errors into tool results, `serve.rs` runs the server on stdio or streamable
//! HTTP and owns the `serve` flags.

pub mod content;
mod rich_text;
pub mod serve;
pub mod tools;
