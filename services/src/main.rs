//! `bulkhead`: parses the command line and hands it to [`bulkhead::cli`], which runs a
//! service (`up`, `scheduler`, `failover`, `node`, `api`, `scanner`) or talks to them.

use clap::Parser;

/// mimalloc: glibc's malloc was a third of a restart's replay; with mimalloc the services'
/// CPU per placement fell by about a quarter (docs/ARCHITECTURE.md has the figures).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    bulkhead::memory::small_pages_only();
    quiet_on_closed_pipe();
    let cli = bulkhead::cli::args::Cli::parse();
    std::process::exit(bulkhead::cli::main(cli).await);
}

/// A closed pipe (`bulkhead get ID | head`, `bulkhead events --json | true`) ends the command
/// quietly with exit 0, as it does for other Unix tools: printing to it fails, and that
/// failure is the reader's choice, not an error (any other panic is reported as before;
/// the services write to no pipe, so this is the CLI's stdout).
fn quiet_on_closed_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.contains("Broken pipe") || msg.contains("BrokenPipe") {
            std::process::exit(0);
        }
        report(info);
    }));
}
