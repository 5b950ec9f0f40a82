//! The MCP face of the server: tools, the mapping of outputs to MCP content, transports.
//!
//! `tools.rs` holds the tool methods and their argument types (no kernel logic), `content.rs`
//! turns cell runs and errors into tool results (`images.rs` fits their images to a reply's
//! budget), `resources.rs` names and reads a session's resources (full-size images, spilled
//! outputs, exports, working files), `serve.rs` runs the server on stdio or streamable HTTP and
//! owns the `serve` flags, `stdio.rs` frames stdio's lines and answers the bad ones.

pub mod content;
pub mod images;
pub mod resources;
mod rich_text;
pub mod serve;
mod stdio;
pub mod tools;
