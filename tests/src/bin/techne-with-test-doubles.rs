//! The `techne` CLI with the scripted test-double model backend compiled in
//! (cargo feature `test-doubles`), for the integration tests' CLI runs.

fn main() -> std::process::ExitCode {
    techne::cli::main()
}
