//! Keyway's benchmarks. Nothing here is a library for others: `benches/forward.rs`
//! is the criterion bench of the forwarding engines, and `src/bin/load.rs` the
//! load, memory and scale benchmark against direct Redis and HAProxy. Results
//! and the commands that produced them are in `benches/README.md`.
