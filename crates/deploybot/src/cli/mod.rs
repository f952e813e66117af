//! The command-line client: every subcommand that talks to a controller
//! over its HTTP API (`deploy`, `jobs`, `logs`, `tokens`, …), plus `login`
//! and `completions`.
//!
//! Layout: this module holds the clap types and the dispatch; `client`
//! the HTTP calls and errors (whose kind is the exit code); `config` the
//! URL and token precedence and the login file; `output` tables, colours,
//! times and escaping; `sse` the log stream; `wait` following jobs to their
//! end; one module per command group (`jobs`, `info`, `admin`, `login`).

/// `println!` that ends the process quietly when stdout's reader has gone
/// (`deploybot logs … | head`) instead of panicking.
macro_rules! outln {
    () => {
        $crate::cli::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod admin;
mod client;
mod config;
mod filters;
mod info;
mod jobs;
mod login;
mod output;
mod sse;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use deploybot_wire::{JobStatus, TokenRole};

pub use client::{CliError, Kind};
use client::{Client, Result};
pub use output::write_stdout;
use output::{Paint, Style};

/// Exit codes and where the URL and token come from: the top command's
/// `--help` ends with this.
pub const TOP_AFTER_HELP: &str = "\
Client commands find the controller and token in this order:
  --url / --token / --ca-cert, then DEPLOYBOT_URL / DEPLOYBOT_TOKEN /
  DEPLOYBOT_CA_CERT, then the file `deploybot login` writes
  ($XDG_CONFIG_HOME/deploybot/cli.toml or ~/.config/deploybot/cli.toml),
  then http://127.0.0.1:8080 with no token.

Exit codes of client commands:
    0  ok
    1  a deploy (or the wait for it) ended failed, cancelled, superseded or
       lost; or another failure on this machine
    2  usage error
    3  the controller cannot be reached
    4  the token was refused (401) or lacks the right (403)
    5  not found, or an ambiguous short job id
    6  another error answer from the controller
  130  interrupted (Ctrl-C)

Examples:
  deploybot login --url http://deploy.internal:8080 --token-stdin < token.txt
  deploybot deploy --app web --ref main --wait
  deploybot jobs --status failed
  deploybot logs -f --app web";

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// The options every client command takes, before or after its name.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The controller's URL [env: DEPLOYBOT_URL; default: the one `deploybot
    /// login` saved, else http://127.0.0.1:8080].
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// API token [env: DEPLOYBOT_TOKEN; default: the one `deploybot login`
    /// saved]. Prefer the variable or `login`: other users of this machine
    /// can see a command line.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// `table` for people, `json` for scripts (the API's JSON).
    #[arg(long, short = 'o', global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
    /// Trust this PEM CA certificate (bundle) for an HTTPS controller, on
    /// top of the system's roots [env: DEPLOYBOT_CA_CERT].
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// The same options where the top command takes them (`deploybot --url U
/// jobs`); clap cannot make one argument global to some subcommands only.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Client options (deploy, jobs, logs, …)")]
pub struct TopArgs {
    /// The controller's URL [env: DEPLOYBOT_URL].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// API token [env: DEPLOYBOT_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// `table` for people, `json` for scripts.
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
    /// CA certificate for an HTTPS controller [env: DEPLOYBOT_CA_CERT].
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl TopArgs {
    pub fn is_empty(&self) -> bool {
        self.url.is_none()
            && self.token.is_none()
            && self.output.is_none()
            && self.ca_cert.is_none()
    }

    /// The options given after the subcommand win.
    fn under(self, given: &GlobalArgs) -> GlobalArgs {
        GlobalArgs {
            url: given.url.clone().or(self.url),
            token: given.token.clone().or(self.token),
            output: given.output.or(self.output),
            ca_cert: given.ca_cert.clone().or(self.ca_cert),
        }
    }
}

fn job_status_parser() -> impl TypedValueParser<Value = JobStatus> {
    PossibleValuesParser::new(JobStatus::ALL.map(JobStatus::as_str))
        .try_map(|s| s.parse::<JobStatus>())
}

fn role_parser() -> impl TypedValueParser<Value = TokenRole> {
    PossibleValuesParser::new(["read", "deploy", "admin", "enroll"])
        .try_map(|s| TokenRole::parse(&s).ok_or_else(|| format!("unknown role {s:?}")))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Queue a deployment: one job for a host, or one per host of an app.
    #[command(after_help = "Examples:\n  \
        deploybot deploy --repo acme/web --ref main --host web-01\n  \
        deploybot deploy --app web --ref refs/tags/v1.4.0 --wait\n  \
        deploybot deploy --app web --host web-02 --ref main --sha 9f2c1e4b7a0d3c6e8f1a2b3c4d5e6f708192a3b4\n\n\
        With --wait the command follows the jobs' output and exits 1 unless every job succeeded.")]
    Deploy(DeployArgs),
    /// List recent jobs, newest first.
    #[command(after_help = "Examples:\n  \
        deploybot jobs\n  \
        deploybot jobs --status running --host web-01\n  \
        deploybot jobs --app web --limit 10 -o json")]
    Jobs(JobsArgs),
    /// Show one job: its id, the short id tables print (its last 8
    /// characters), or the start of the id.
    #[command(after_help = "Examples:\n  deploybot job 5d85f476\n  deploybot job 5d85f476 -o json")]
    Job(JobArgs),
    /// Print a job's output, or follow output live with -f.
    #[command(after_help = "Examples:\n  \
        deploybot logs 5d85f476\n  \
        deploybot logs -f 5d85f476           # until the job ends\n  \
        deploybot logs -f --app web          # every job of web, until Ctrl-C\n  \
        deploybot logs -f                    # everything\n\n\
        Control characters in deploy output are shown escaped (\\x1b), never sent to the terminal.")]
    Logs(LogsArgs),
    /// Cancel a pending job, or ask a running job's agent to stop it.
    #[command(after_help = "Example:\n  deploybot cancel 5d85f476")]
    Cancel(JobArgs),
    /// Run a finished job again, as a new job.
    #[command(
        after_help = "Examples:\n  deploybot retry 5d85f476\n  deploybot retry 5d85f476 --wait"
    )]
    Retry(RetryArgs),
    /// The controller on one screen: version, uptime, database, agents,
    /// queue, recent failures.
    #[command(after_help = "Examples:\n  deploybot status\n  deploybot status -o json")]
    Status(PlainArgs),
    /// Hosts: their agent, running and last job, pending jobs, apps;
    /// `hosts forget HOST` removes one no app lists and no agent uses (admin).
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:\n  deploybot hosts\n  deploybot hosts forget old-web-03"
    )]
    Hosts(HostsArgs),
    /// Registered agents; `agents revoke ID` shuts one out (admin).
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:\n  deploybot agents\n  deploybot agents revoke web-01"
    )]
    Agents(AgentsArgs),
    /// The controller's apps, as its apps.yaml says now.
    #[command(after_help = "Example:\n  deploybot apps -o json")]
    Apps(PlainArgs),
    /// What a push would deploy, and why any other app of the repository would not.
    #[command(after_help = "Examples:\n  \
        deploybot explain --repo acme/web --ref refs/heads/main\n  \
        deploybot explain --repo acme/web --ref refs/tags/v1.4.0")]
    Explain(ExplainArgs),
    /// Recent webhook deliveries: what each did, or why it did nothing.
    #[command(after_help = "Example:\n  deploybot deliveries --limit 20")]
    Deliveries(LimitArgs),
    /// Make, list and revoke API and enrollment tokens (admin).
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:\n  \
        deploybot tokens create --name ci-web --role deploy --app web --expires-in 90d\n  \
        deploybot tokens create --name web-03 --role enroll --single-use --expires-in 1h\n  \
        deploybot tokens list\n  \
        deploybot tokens revoke tok_0123456789ab"
    )]
    Tokens(TokensArgs),
    /// Who did what, newest first (admin).
    #[command(after_help = "Examples:\n  deploybot audit\n  deploybot audit --limit 200 -o json")]
    Audit(AuditArgs),
    /// Check a token against a controller and save both for later commands.
    #[command(after_help = "Examples:\n  \
        deploybot login --url http://deploy.internal:8080            # asks for the token\n  \
        pass show deploybot | deploybot login --url http://deploy.internal:8080 --token-stdin\n\n\
        The file ($XDG_CONFIG_HOME/deploybot/cli.toml or ~/.config/deploybot/cli.toml) is\n\
        written with mode 0600. --url/--token and DEPLOYBOT_URL/DEPLOYBOT_TOKEN still win over it.")]
    Login(LoginArgs),
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  \
        deploybot completions bash > ~/.local/share/bash-completion/completions/deploybot\n  \
        deploybot completions zsh > ~/.zfunc/_deploybot\n  \
        deploybot completions fish > ~/.config/fish/completions/deploybot.fish")]
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").args(["host", "app"]).required(true).multiple(true)))]
#[command(group(ArgGroup::new("source").args(["repo", "app"]).required(true).multiple(true)))]
#[command(
    override_usage = "deploybot deploy --app APP --ref REF [--host HOST] [--sha SHA] [--wait]\n       \
    deploybot deploy --repo REPO --host HOST --ref REF [--sha SHA] [--wait]"
)]
pub struct DeployArgs {
    /// The repository (`owner/name`); with --app, the app's repository by default.
    #[arg(long)]
    pub repo: Option<String>,
    /// The git ref to deploy: `main` (a branch, stored as `refs/heads/main`),
    /// `refs/tags/v1.2.0`.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: String,
    /// The host to deploy to; without it, every host of --app.
    #[arg(long)]
    pub host: Option<String>,
    /// The app to deploy (needed when several apps pair the repo and host).
    #[arg(long)]
    pub app: Option<String>,
    /// The commit (40 hex digits). Without it the job carries only the ref:
    /// DEPLOYBOT_SHA is not set, and the deploy command deploys whatever
    /// commit the ref points to when it fetches it.
    #[arg(long)]
    pub sha: Option<String>,
    /// Follow the jobs' output until they end; exit 1 unless all succeeded.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs with this status.
    #[arg(long, value_parser = job_status_parser())]
    pub status: Option<JobStatus>,
    /// Only jobs for this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only jobs of this app.
    #[arg(long)]
    pub app: Option<String>,
    /// Only jobs of this repository.
    #[arg(long)]
    pub repo: Option<String>,
    /// How many (1-1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job's id, or the start of it.
    #[arg(value_name = "ID")]
    pub id: String,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The finished job's id, or the start of it.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Follow the new job until it ends; exit 1 unless it succeeded.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow live output (Server-Sent Events) instead of printing stored lines.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// The job (an id or the start of one), as `job ID`, `cancel ID` take it.
    #[arg(value_name = "ID", conflicts_with_all = ["job", "host", "app"])]
    pub id: Option<String>,
    /// The job, as an option (same as ID).
    #[arg(long, value_name = "ID", conflicts_with_all = ["host", "app"])]
    pub job: Option<String>,
    /// With -f: only jobs on this host.
    #[arg(long, requires = "follow")]
    pub host: Option<String>,
    /// With -f: only jobs of this app.
    #[arg(long, requires = "follow")]
    pub app: Option<String>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct PlainArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// How many (1-1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The repository (`owner/name`).
    #[arg(long)]
    pub repo: String,
    /// The pushed ref: `refs/heads/main`, `refs/tags/v1.2.0`; a bare name is a branch.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: String,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct HostsArgs {
    #[command(subcommand)]
    pub command: Option<HostsCommand>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Forget a host (admin): one that no app lists any more and whose agent
    /// has gone silent. It leaves the hosts list; its jobs stay in the history.
    #[command(after_help = "Example:\n  deploybot hosts forget old-web-03")]
    Forget {
        /// The host's name.
        #[arg(value_name = "HOST")]
        hostname: String,
    },
}

#[derive(Debug, Args)]
pub struct AgentsArgs {
    #[command(subcommand)]
    pub command: Option<AgentsCommand>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Revoke an agent (admin): its token stops working and its running job becomes lost.
    #[command(
        after_help = "Examples:\n  deploybot agents revoke web-01\n  deploybot agents revoke 0195ab3f\n\n\
        An agent that still has a valid enrollment token enrolls again by itself:\n\
        revoke that token too (deploybot tokens revoke) to keep the host out."
    )]
    Revoke {
        /// The agent's hostname, id, or the start of its id (`deploybot
        /// agents` lists them).
        #[arg(value_name = "HOST|ID")]
        id: String,
    },
    /// Let a new agent take a host over (admin): prints a single-use
    /// enrollment token for that host only.
    #[command(
        after_help = "Example:\n  deploybot agents replace web-01 > web-01.token\n\n\
        A host that has an agent is registered again only by that agent (with its own\n\
        token) or with a token made for the host, as this command makes. When the new\n\
        agent enrolls with it, the current agent's token stops working and the job it\n\
        runs, if any, becomes lost."
    )]
    Replace {
        /// The host's name, as its agent registers it.
        #[arg(value_name = "HOST")]
        hostname: String,
        /// The token stops working after this long if unused.
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
        expires_in: Duration,
    },
}

#[derive(Debug, Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    pub command: Option<TokensCommand>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token; its secret is printed once, on stdout.
    #[command(after_help = "Examples:\n  \
        deploybot tokens create --name dashboard --role read\n  \
        deploybot tokens create --name ci-web --role deploy --app web --expires-in 90d\n  \
        deploybot tokens create --name web-03 --role enroll --single-use --expires-in 1h\n\n\
        Roles: read (GETs and logs), deploy (read + create, cancel, retry jobs; --app limits\n\
        it to some apps), admin (everything), enroll (registering agents only).")]
    Create(CreateTokenArgs),
    /// List tokens (never their secrets).
    List,
    /// Revoke a token: it stops working at once.
    #[command(after_help = "Example:\n  deploybot tokens revoke tok_0123456789ab")]
    Revoke {
        /// The token's id (`tok_…`).
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateTokenArgs {
    /// Who or what it is for, e.g. `ci-web`.
    #[arg(long)]
    pub name: String,
    /// What it may do.
    #[arg(long, value_parser = role_parser())]
    pub role: TokenRole,
    /// With role deploy: an app it may deploy (repeatable); without: all apps.
    #[arg(long = "app", value_name = "APP")]
    pub apps: Vec<String>,
    /// It stops working after this long: `1h`, `30d`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub expires_in: Option<Duration>,
    /// With role enroll: it works for one registration.
    #[arg(long)]
    pub single_use: bool,
    /// With role enroll: it registers this host only, and may take it from
    /// the agent that has it (see `deploybot agents replace`).
    #[arg(long, value_name = "HOST")]
    pub hostname: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many entries (1-1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Only entries older than this entry id (the next page).
    #[arg(long, value_name = "ID")]
    pub before: Option<i64>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Read the token from standard input instead of asking for it.
    #[arg(long)]
    pub token_stdin: bool,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl Command {
    fn global(&self) -> Option<&GlobalArgs> {
        Some(match self {
            Command::Deploy(a) => &a.global,
            Command::Jobs(a) => &a.global,
            Command::Job(a) | Command::Cancel(a) => &a.global,
            Command::Logs(a) => &a.global,
            Command::Retry(a) => &a.global,
            Command::Apps(a) | Command::Status(a) => &a.global,
            Command::Hosts(a) => &a.global,
            Command::Agents(a) => &a.global,
            Command::Explain(a) => &a.global,
            Command::Deliveries(a) => &a.global,
            Command::Tokens(a) => &a.global,
            Command::Audit(a) => &a.global,
            Command::Login(a) => &a.global,
            Command::Completions(_) => return None,
        })
    }
}

/// What every command needs: the API and how to print.
pub struct Ctx {
    pub client: Client,
    pub json: bool,
}

/// Runs a client command; `top` holds the options given before its name,
/// `whole` builds the whole command line (for completions).
pub fn run(top: TopArgs, command: Command, whole: impl FnOnce() -> clap::Command) -> ExitCode {
    if let Command::Completions(args) = &command {
        let mut whole = whole();
        // Into memory first: clap_complete panics when its writer fails.
        let mut script = Vec::new();
        clap_complete::generate(args.shell, &mut whole, "deploybot", &mut script);
        write_stdout(format_args!("{}", String::from_utf8_lossy(&script)));
        return ExitCode::SUCCESS;
    }
    let global = top.under(command.global().unwrap_or(&GlobalArgs::default()));
    let login_token = match &command {
        Command::Login(args) => match login::read_token(&global, args.token_stdin) {
            Ok(token) => Some(token),
            Err(err) => return report(&err),
        },
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            return report(&CliError::new(
                Kind::Failed,
                format!("cannot start the async runtime: {err}"),
            ));
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            // Commands that wait handle Ctrl-C themselves, with a better hint.
            biased;
            result = dispatch(global, command, login_token) => result,
            _ = tokio::signal::ctrl_c() => Err(CliError::new(Kind::Interrupted, "interrupted")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

/// `error: …` and `hint: …` on stderr; the exit code of the error's kind.
fn report(err: &CliError) -> ExitCode {
    let style = Style::stderr();
    if err.kind == Kind::Interrupted {
        // Asked for: not an error worth red.
        eprintln!("{}", err.message);
    } else {
        eprintln!("{} {}", style.paint(Paint::Red, "error:"), err.message);
    }
    if let Some(hint) = &err.hint {
        eprintln!("{} {hint}", style.paint(Paint::Yellow, "hint:"));
    }
    ExitCode::from(err.kind.exit_code())
}

async fn dispatch(global: GlobalArgs, command: Command, login_token: Option<String>) -> Result<()> {
    let json = global.output == Some(Format::Json);
    if let Some(token) = login_token {
        return login::login(global, token).await;
    }
    let target = config::resolve(&global)?;
    let ctx = Ctx {
        client: Client::new(&target)?,
        json,
    };
    match command {
        Command::Deploy(args) => jobs::deploy(&ctx, args).await,
        Command::Jobs(args) => jobs::list(&ctx, args).await,
        Command::Job(args) => jobs::show(&ctx, &args.id).await,
        Command::Logs(args) => jobs::logs(&ctx, args).await,
        Command::Cancel(args) => jobs::cancel(&ctx, &args.id).await,
        Command::Retry(args) => jobs::retry(&ctx, args).await,
        Command::Status(_) => info::status(&ctx).await,
        Command::Hosts(args) => match args.command {
            None => info::hosts(&ctx).await,
            Some(HostsCommand::Forget { hostname }) => admin::forget_host(&ctx, &hostname).await,
        },
        Command::Agents(args) => match args.command {
            None => info::agents(&ctx).await,
            Some(AgentsCommand::Revoke { id }) => admin::revoke_agent(&ctx, &id).await,
            Some(AgentsCommand::Replace {
                hostname,
                expires_in,
            }) => admin::replace_agent(&ctx, hostname, expires_in).await,
        },
        Command::Apps(_) => info::apps(&ctx).await,
        Command::Explain(args) => info::explain(&ctx, args).await,
        Command::Deliveries(args) => info::deliveries(&ctx, args.limit).await,
        Command::Tokens(args) => match args.command {
            None | Some(TokensCommand::List) => admin::list_tokens(&ctx).await,
            Some(TokensCommand::Create(create)) => admin::create_token(&ctx, create).await,
            Some(TokensCommand::Revoke { id }) => admin::revoke_token(&ctx, &id).await,
        },
        Command::Audit(args) => admin::audit(&ctx, args).await,
        // Both were handled before the runtime started.
        Command::Login(_) | Command::Completions(_) => Ok(()),
    }
}
