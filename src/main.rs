//! Thin binary: all behaviour lives in the library (`earmark::cli`).
fn main() -> std::process::ExitCode {
    earmark::cli::main()
}
