use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = miglab::cli::Args::parse();
    miglab::cli::run(args)
}
