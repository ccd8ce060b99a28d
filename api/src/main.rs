//! The `folio` command-line tool.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = api::cli::Cli::parse();
    let _telemetry = api::cli::init_logging(cli.command.default_log_level());
    api::cli::run(cli)
}
