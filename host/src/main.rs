//! The `techne` binary: all logic lives in the library (`techne::cli`).
fn main() -> std::process::ExitCode {
    techne::cli::main()
}
