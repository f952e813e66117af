//! `deploybot`: one binary for the controller and its tools.
//!
//! Thin by design: parse arguments, set up logging, call into the library
//! crates.

// Only the allocator needs `unsafe` (see its module).
#![deny(unsafe_code)]

mod agent;
#[cfg(target_os = "linux")]
mod allocator;
#[macro_use]
mod cli;
mod dev;
mod logging;
mod server;
mod signals;
#[cfg(feature = "otel")]
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: allocator::ConnectionBuffers = allocator::ConnectionBuffers::new();

/// The controller holds a connection per agent: from now on their buffers
/// take whole pages of their own (see `allocator`). Called by the commands
/// that run a controller, before it starts.
fn serving_connections() {
    #[cfg(target_os = "linux")]
    ALLOCATOR.serve_blocks();
}

#[derive(Parser)]
#[command(
    name = "deploybot",
    version,
    about = "Self-hosted push-to-deploy: controller, agent and CLI",
    after_help = cli::TOP_AFTER_HELP
)]
struct Cli {
    #[command(flatten)]
    client: cli::TopArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: webhooks in, jobs out to agents.
    #[command(after_help = "Examples:\n  \
        DEPLOYBOT_WEBHOOK_SECRET=s3cret deploybot server --apps apps.yaml\n  \
        deploybot server --config /etc/deploybot/server.toml\n\n\
        SIGHUP reloads apps.yaml; an invalid file keeps the running config.")]
    Server(server::ServerArgs),
    /// Run the agent of this host: take its jobs, run them, stream their output.
    #[command(after_help = "Examples:\n  \
        deploybot agent --controller http://deploy.internal:8080\n  \
        DEPLOYBOT_HOSTNAME=web-01 deploybot agent --state-dir /var/lib/deploybot-agent")]
    Agent(agent::AgentArgs),
    /// Try DeployBot on this machine: controller, local agent and a demo app.
    Dev(dev::DevArgs),
    /// Inspect and validate configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The client commands: they talk to a controller over its API.
    #[command(flatten)]
    Client(cli::Command),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented server config file with every default.
    Example,
    /// Validate an apps.yaml without starting anything.
    #[command(after_help = "Example:\n  deploybot config check /etc/deploybot/apps.yaml")]
    Check {
        /// Path of the apps.yaml to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Client(_)) && !cli.client.is_empty() {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--url, --token, --output and --ca-cert belong to the client commands (deploy, jobs, logs, …)",
            )
            .exit();
    }
    let result = match cli.command {
        Command::Client(command) => return cli::run(cli.client, command, Cli::command),
        Command::Server(args) => server::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Dev(args) => dev::run(args),
        Command::Config { command } => match command {
            ConfigCommand::Example => {
                cli::write_stdout(format_args!(
                    "{}",
                    deploybot_server::settings::example_config()
                ));
                Ok(())
            }
            ConfigCommand::Check { file } => check_apps(&file),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: our error types already put
/// their cause in their message, `anyhow` contexts do not.
fn describe(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

fn check_apps(file: &std::path::Path) -> anyhow::Result<()> {
    let config = deploybot_apps::AppsConfig::load(file)?;
    outln!("{}: ok, {} app(s)", file.display(), config.apps().len());
    for app in config.apps() {
        outln!("  {} ({}) → {}", app.name, app.repo, app.hosts.join(", "));
        outln!("    {}", app.push_rule());
    }
    Ok(())
}
