//! The Jupyter messaging protocol, client side: typed messages, the signed multipart codec,
//! connection files and the five ZeroMQ sockets.
//!
//! Owns everything that is a fact of the protocol; nothing here knows about cells, venvs or MCP.
//! `message.rs` and `wire.rs` are pure; `socket.rs` adds the I/O.

pub mod connection;
pub mod message;
pub mod socket;
pub mod wire;
