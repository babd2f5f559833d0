//! Keyway's data path: moving bytes between a client socket and a node socket.
//!
//! This crate knows nothing of Redis, routes or configuration files: it takes two
//! connected TCP streams and forwards until both directions are done, one side
//! fails, the session is idle too long, or the caller cuts it. It is Linux-only
//! (`splice(2)`, `F_SETPIPE_SZ`), like Keyway.
//!
//! Modules:
//! - [`forward`](mod@forward): the session loop with `copy_bidirectional` semantics
//!   (half-close, per-side errors) plus idle timeout and cut, and the [`Engine`]
//!   choice.
//! - `direction`: one direction's copy leg, splice leg and the policy that
//!   picks between them (copy for request/response, splice for bulk).
//! - [`splice`]: the `splice(2)` leg and the pool of pipes; the only module of
//!   Keyway allowed `unsafe` (every other module and crate denies or forbids it).
//! - [`socket`]: socket options applied to both sides of a session.

mod direction;
pub mod forward;
pub mod socket;
#[allow(unsafe_code)]
pub mod splice;

pub use forward::{Close, Engine, Side, Transfer, forward, forward_with};
