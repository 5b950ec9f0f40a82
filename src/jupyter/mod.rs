//! The Jupyter messaging protocol, client side: typed messages, the signed multipart codec,
//! connection files and the five ZeroMQ sockets; and the JSON form a Jupyter server's kernel
//! WebSocket carries.
//!
//! Owns everything that is a fact of the protocol; nothing here knows about cells, venvs or MCP.
//! `message.rs`, `wire.rs` and `json_wire.rs` are pure; `socket.rs` and `websocket.rs` add the I/O.

pub mod connection;
pub mod json_wire;
pub mod message;
pub mod socket;
pub mod websocket;
pub mod wire;
