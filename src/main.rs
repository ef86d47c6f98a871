//! `stockpool`: parse the command line, start logging, build, run.

use clap::Parser;
use stockpool::cli::{Cli, Command};
use stockpool::config::Config;
use stockpool::server::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Command::Serve(args) = &cli.command else {
        if let Err(e) = stockpool::cli::run_client(cli).await {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        return Ok(());
    };
    stockpool::telemetry::init_logging(args.log_format);
    let config = Config::resolve(args)?;
    let app = Application::build(config).await?;
    app.run(stockpool::telemetry::shutdown_signal()).await
}
