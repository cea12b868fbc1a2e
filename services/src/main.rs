//! `bulkhead`: parses the command line and hands it to [`bulkhead::cli`], which runs a
//! service (`up`, `scheduler`, `failover`, `node`, `api`, `scanner`) or talks to them.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = bulkhead::cli::args::Cli::parse();
    std::process::exit(bulkhead::cli::main(cli).await);
}
