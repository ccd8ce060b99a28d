//! The `folio` command-line tool.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = api::cli::Cli::parse();
    api::cli::init_logging();
    api::cli::run(cli)
}
