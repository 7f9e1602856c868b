//! The `feedgraph` binary: parses the command line and runs it.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use clap::Parser;

/// mimalloc instead of glibc malloc: the request path, the bulk loader and sled allocate
/// many short-lived small blocks from several threads, where glibc's arenas spent a
/// sixth of the server's time (see the commit that brought it in for the figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = feedgraph::cli::Cli::parse();
    match feedgraph::cli::run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Output piped into `head` and closed early is not an error worth a message.
        Err(feedgraph::cli::CliError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
