use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`miglab ... | head`) instead of panicking on the broken pipe.
    // SAFETY: restoring the default disposition of a signal has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args = miglab::cli::Args::parse();
    miglab::cli::run(args)
}
