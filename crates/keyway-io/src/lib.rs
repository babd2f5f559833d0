//! Keyway's data path: moving bytes between a client socket and a node socket.
//!
//! This crate knows nothing of Redis, routes or configuration files: it takes two
//! connected TCP streams and forwards until both directions are done, one side
//! fails, the session is idle too long, or the caller cuts it.
//!
//! Modules:
//! - [`forward`]: the forwarding loop with `copy_bidirectional` semantics
//!   (half-close, per-side errors) plus idle timeout and cut.
//! - [`socket`]: socket options applied to both sides of a session.
//!
//! The zero-copy `splice(2)` engine (the only `unsafe` in Keyway) will live here,
//! behind the same [`forward::forward`] API, with the copy loop as its fallback.

pub mod forward;
pub mod socket;

pub use forward::{Close, Side, Transfer, forward};
