//! The `fedsim` command line; the library does the work.

fn main() -> std::process::ExitCode {
    fedsim::cli::main()
}
