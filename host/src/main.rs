//! `smoltalk`: parse the command line, run the command, turn any failure into one line and a non-zero exit
//! (whose code tells the client failures apart).

use clap::Parser;
use smoltalk::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    // Servers and clients log what happens at info; the lab and the benchmark print reports, so their logs
    // stay quiet unless RUST_LOG asks for them.
    let default_filter = match cli.command {
        Command::Lab(_) | Command::Compare(_) | Command::Bench(_) | Command::Throughput(_) => {
            "error"
        }
        _ => "info,smoltcp=warn",
    };
    // --trace: the packet trace is at debug level on its own target, on top of whatever else is asked.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| default_filter.to_string());
    let filter = match cli.command.trace() {
        true => format!("{filter},smoltalk::trace=debug"),
        false => filter,
    };
    env_logger::Builder::new()
        .parse_filters(&filter)
        .format_timestamp_millis()
        .init();
    if let Err(error) = smoltalk::cli::run(cli) {
        eprintln!("smoltalk: error: {error}");
        // 1 for most errors; a code of its own for each client failure (README, `smoltalk --help`).
        std::process::exit(error.exit_code());
    }
}
