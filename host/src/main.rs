//! `smoltalk`: parse the command line, run the command, turn any failure into one line and a non-zero exit.

use clap::Parser;
use smoltalk::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    // Servers and clients log what happens at info; the lab and the benchmark print reports, so their logs
    // stay quiet unless RUST_LOG asks for them.
    let default_filter = match cli.command {
        Command::Lab | Command::Bench(_) | Command::Throughput(_) => "error",
        _ => "info,smoltcp=warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
        .format_timestamp_millis()
        .init();
    if let Err(message) = smoltalk::cli::run(cli) {
        eprintln!("smoltalk: error: {message}");
        std::process::exit(1);
    }
}
