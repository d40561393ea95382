use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // SIGPIPE stays ignored (Rust's default): a write to a QMP socket or a pipe whose peer died
    // must be an error miglab handles (and cleans up after), never a signal that kills it with
    // guests and daemons left running. A reader of our output that goes away (`miglab ... |
    // head`) makes printing panic instead; that unwinds through every guard and ends quietly.
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !miglab::cli::is_stdout_gone(info.payload()) {
            quiet(info);
        }
    }));
    let args = miglab::cli::Args::parse();
    match std::panic::catch_unwind(|| miglab::cli::run(args)) {
        Ok(code) => code,
        Err(p) if miglab::cli::is_stdout_gone(p.as_ref()) => ExitCode::from(141),
        Err(p) => std::panic::resume_unwind(p),
    }
}
