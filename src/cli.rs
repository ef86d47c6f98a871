//! The command line: `stockpool serve` and the client subcommands that talk
//! to a running server. (Client subcommands being written.)

use crate::config::ServeArgs;

/// stockpool: multi-channel inventory allocation.
#[derive(Debug, clap::Parser)]
#[command(name = "stockpool", version, about)]
pub struct Cli {
    /// Server to talk to (client subcommands).
    #[arg(
        long,
        global = true,
        env = "STOCKPOOL_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Bearer token sent with every call (client subcommands).
    #[arg(long, global = true, env = "STOCKPOOL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the service.
    Serve(ServeArgs),
}

/// Runs a client subcommand against `cli.server`.
pub async fn run_client(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(_) => unreachable!("serve is handled by main"),
    }
}
