//! `smoltalk`: parse the command line, run the command, turn any failure into one line and a non-zero exit.

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,smoltcp=warn"),
    )
    .format_timestamp_millis()
    .init();
    let cli = smoltalk::cli::Cli::parse();
    if let Err(message) = smoltalk::cli::run(cli) {
        eprintln!("smoltalk: error: {message}");
        std::process::exit(1);
    }
}
