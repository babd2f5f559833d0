//! The `keyway` binary; everything is in the library so it can be tested.

fn main() -> std::process::ExitCode {
    keyway::cli::main()
}
