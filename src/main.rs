//! The `feedgraph` binary: parses the command line and runs it.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use clap::Parser;

/// mimalloc instead of glibc malloc: the request path, the bulk loader and sled allocate
/// many short-lived small blocks from several threads, where glibc's arenas spent a
/// sixth of the server's time (see the commit that brought it in for the figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc option numbers, from the `mi_option_e` enum of the mimalloc headers bundled
/// with `libmimalloc-sys` (the same numbers in its v2 and v3 headers; it builds v3). Its
/// bindings name only some options. Re-check them when that crate is upgraded (it is
/// pinned in Cargo.toml for this reason).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets how eagerly mimalloc hands freed memory back to the OS. The server purges freed
/// memory at once while it starts: building the graph frees a lot of temporary memory on a
/// thread that then idles, and with mimalloc's defaults it stays resident (about 640 MiB
/// instead of 465 MiB after opening 1M items, together with the arena option below). A
/// bulk load is a short-lived process that frees as it goes; purging there would only
/// add system time. `MIMALLOC_PURGE_DELAY` is not consulted.
fn tune_allocator(command: &feedgraph::cli::Command) {
    let purge_delay_ms = match command {
        feedgraph::cli::Command::Load { .. } => -1,
        _ => 0,
    };
    set_purge_delay(purge_delay_ms);
}

/// Once the server is ready, freed memory is purged after a second instead of at once.
/// Purging at once cost the request path an `madvise` per free and a page fault per reuse:
/// under a durable submit load the server took 1.5 page faults per request with a 10 ms
/// delay and 0.2 with 1 s (sled allocates a fresh log buffer for every flush), about a
/// tenth of its CPU. Memory a big query freed still goes back to the OS a second later.
///
/// mimalloc purges only when some thread allocates or frees. A small thread asks it every
/// second to purge what has expired in its arenas (where the empty pages of every thread
/// go), so a big query's memory goes back to the OS even if no request follows: at 1M,
/// 725 MiB right after the benchmark's query suite became 496 MiB two seconds later.
/// Pages still partly in use by an idle thread wait for that thread.
fn serving_allocator() {
    set_purge_delay(1000);
    let purger = std::thread::Builder::new()
        .name("feedgraph-purge".into())
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                // SAFETY: a plain call into the allocator with no pointers involved.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
    if let Err(e) = purger {
        tracing::warn!("freed memory is returned to the OS only as the server works: {e}");
    }
}

fn set_purge_delay(ms: std::ffi::c_long) {
    // SAFETY: stores a process-wide option value in mimalloc's static option table; the
    // option number matches the bundled header. mimalloc calls the setter not thread-safe
    // because of the option's lazy initialisation; this option is set before any thread
    // starts, so a later set is one aligned word store, and a thread purging meanwhile
    // reads the old delay or the new one.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// Commits arena memory only as it is used. This must happen before the first arena is
/// made, that is before the Rust runtime's first allocation, so it runs as an ELF
/// constructor rather than from `main`.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static LAZY_ARENA_COMMIT: extern "C" fn() = lazy_arena_commit;

#[cfg(target_os = "linux")]
extern "C" fn lazy_arena_commit() {
    // SAFETY: runs before `main`, on the only thread; `mi_option_set` writes mimalloc's
    // static option table and marks the option set, so mimalloc's own start-up keeps it.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

fn main() -> std::process::ExitCode {
    let cli = feedgraph::cli::Cli::parse();
    // The log format is a setting; a configuration that does not load is reported by the
    // command itself, after logging started in the default format.
    let format = cli.load_config().map(|c| c.log.format).unwrap_or_default();
    feedgraph::cli::init_logging(format);
    tune_allocator(&cli.command);
    match feedgraph::cli::run_with(&cli, serving_allocator) {
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
