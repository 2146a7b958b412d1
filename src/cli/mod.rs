//! The command line: clap definitions, dispatch, and turning errors into one stderr line
//! and an exit code. Commands live one group per file; they parse, call the domain modules
//! and hand results to the [`Printer`]. No rules live here.

mod commands;
mod complete;
pub(crate) mod words;

use commands::{
    agent, budget, cell, checkpoint, events, logs, man, mcp, policy, revive, serve, status, store,
    task, top, validate,
};

pub(crate) use commands::events::parse_since;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{Error, Kind, Result};
use crate::output::{ColorChoice, Printer};
use crate::store::select::{self, EtcdOpener, Opened, Selected, Source};
use crate::store::FsStore;

/// The default missions root.
pub const DEFAULT_ROOT: &str = "/var/missions";

/// pas keeps fleets of AI agents alive: mission cells on disk, heartbeats, budgets, revival.
#[derive(Debug, Parser)]
#[command(
    name = "pas",
    version,
    about,
    max_term_width = 100,
    after_help = "Examples:\n  pas demo                                   a narrated mission in a temporary root\n  cell=$(pas cell create --name review)      create a mission cell, print its id\n  pas status --all                           the fleet at a glance\n  pas watch                                  revive agents as they die (run as a service)\n\nDocs: docs/cli.md; man pas; exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 conflict,\n5 bad data, 6 busy, 7 nothing to do, 8 timeout, 9 denied, 10 store unavailable."
)]
pub struct Cli {
    /// Missions root (default: $PAS_ROOT, else /var/missions).
    #[arg(long, global = true, value_name = "DIR", env = "PAS_ROOT")]
    pub root: Option<PathBuf>,
    /// Keep cells in this store instead of files under the root: etcd://HOST:PORT[,...]/PREFIX
    /// (default: $PAS_STORE, else `store` in the root's pas.toml; see docs/etcd.md). Logs
    /// and checkpoints stay under the root.
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,
    /// Print one JSON document on stdout instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but data (ids) and errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Act as this agent: permissions.json applies (default: $PAS_AGENT; unset: operator).
    #[arg(long = "as", global = true, value_name = "AGENT")]
    pub acting: Option<String>,
    /// When to colour tables.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
    /// Seconds (or a duration: 500ms, 1m) to wait for a lock another process holds before
    /// giving up with exit 6.
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        env = LOCK_TIMEOUT_ENV,
        default_value_t = DEFAULT_LOCK_TIMEOUT,
        value_parser = crate::cli::words::seconds
    )]
    pub lock_timeout: f64,
    /// When pas runs as root, let agents of cells that name no security_context.user run
    /// as root too (otherwise they are refused).
    #[arg(
        long,
        global = true,
        env = crate::ops::supervisor::Launch::AGENTS_AS_ROOT_ENV,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub agents_as_root: bool,
    /// This host's name (default: $PAS_HOST, else the kernel's host name): recorded as the
    /// host of agents started here, and the node a `pas watch` keeps on a shared store.
    #[arg(long, global = true, value_name = "NAME", env = crate::host::HOST_ENV)]
    pub host: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The command groups.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Create, list, show, change and remove mission cells.
    ///
    /// Example: cell=$(pas cell create --name "Code review"); pas cell show "$cell"
    #[command(subcommand)]
    Cell(cell::CellCommand),
    /// Add, list, show and remove agents.
    ///
    /// Example: pas agent add 3f2a agent_001 --role lead -- ./agent.sh && pas agent start 3f2a agent_001
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Add, list and show tasks.
    ///
    /// Example: pas task add 3f2a review --title "Review the patch" && pas task claim 3f2a --as agent_001
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Check cells against the schemas and the spec's layout.
    ///
    /// Example: pas validate --strict
    Validate(validate::ValidateArgs),
    /// The fleet at a glance: agents by health, tasks by state.
    ///
    /// Example: pas status --all --json
    Status(status::StatusArgs),
    /// One line for cron and monitoring: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    ///
    /// Example: pas check || alert "pas fleet not OK"
    Check(status::CheckArgs),
    /// Prometheus text exposition of agents, tasks and events.
    ///
    /// Example: pas metrics --output /var/lib/node_exporter/textfile/pas.prom
    Metrics(status::MetricsArgs),
    /// Show effective policies.
    ///
    /// Example: pas policy show 3f2a agent_001
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// List, follow and verify the events log.
    ///
    /// Example: pas events 3f2a --since 10m --level warn --follow
    Events(events::EventsArgs),
    /// An agent's output, journalctl style: stamped lines, a marker per run, rotated files too.
    ///
    /// Example: pas logs 3f2a agent_001 --follow --lines 20
    Logs(logs::LogsArgs),
    /// Save, list, show and restore agents' checkpoints.
    ///
    /// Example: pas checkpoint save 3f2a agent_001 --state state.json
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
    /// Budgets: context per agent, money and tokens, reservations against quota, time.
    ///
    /// Example: pas budget 3f2a --json
    Budget(budget::BudgetArgs),
    /// Reserve resources for a job (refused with the shortfall when over quota).
    ///
    /// Example: pas reserve 3f2a --job build-42 --agent agent_001 --cpu 2 --mem 4GB
    Reserve(budget::ReserveArgs),
    /// Release a job's reservation (releasing twice is harmless).
    ///
    /// Example: pas release 3f2a build-42
    Release(budget::JobArgs),
    /// List a cell's reservations.
    ///
    /// Example: pas reservations 3f2a --status active
    Reservations(budget::ReservationsArgs),
    /// A cell's quota: capacity, reserved and free, per resource.
    ///
    /// Example: pas quota 3f2a
    Quota(budget::QuotaArgs),
    /// Stop a job's process group (if it has one) and end its reservation.
    ///
    /// Example: pas kill 3f2a build-42
    Kill(budget::KillArgs),
    /// One revival pass: restart dead agents by policy (for cron; `pas watch` runs it continuously).
    ///
    /// Example: pas revive --dry-run
    Revive(revive::ReviveArgs),
    /// The Lazarus loop: watch the root and revive agents as they die.
    ///
    /// Example: pas --root /var/missions watch --interval 30
    Watch(revive::WatchArgs),
    /// A live full-screen view of the fleet: tree, bars, events; pause, revive, stop.
    ///
    /// Keys: arrows or j/k move, Enter expands, / filters (text or a health), p pauses or
    /// resumes the selected cell, r revives and s stops the selected agent (each asks first),
    /// ? shows help, q quits.
    ///
    /// Example: pas top 3f2a
    Top(top::TopArgs),
    /// A complete mission in a temporary root, narrated: agents working, one killed and
    /// revived from its checkpoint, a context breach handled, every task completed.
    ///
    /// Example: pas demo
    Demo,
    /// Serve the root over HTTP: the dashboard, a JSON API, the seed's registry, monitor,
    /// resource manager, token governor and AINS endpoints, events as server-sent events.
    ///
    /// Listens on 127.0.0.1:6101 unless --listen says otherwise; writes need the bearer
    /// token kept in ROOT/.pas/serve-token (`pas serve token` prints it). See docs/http.md.
    ///
    /// Example: pas serve --listen 127.0.0.1:6101 --cell 3f2a
    Serve(serve::ServeArgs),
    /// Serve MCP (the Model Context Protocol) on stdin and stdout, for agent runtimes:
    /// tools to beat, claim and finish tasks, save and load checkpoints, report context use;
    /// the cells, agents and events as resources. See docs/mcp.md.
    ///
    /// With PAS_CELL and PAS_AGENT set (as in every agent pas starts) the tools act as that
    /// agent, under its permissions. `pas serve` offers the same server at /mcp.
    ///
    /// Example: pas mcp --cell 3f2a --agent agent_001
    Mcp(mcp::McpArgs),
    /// Move a whole root between stores: a directory to etcd and back (see docs/etcd.md).
    ///
    /// Example: pas store copy --from /var/missions --to etcd://h1:2379,h2:2379,h3:2379/pas
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Print the script that gives a shell Tab-completion of commands, flags, cells and agents.
    ///
    /// Example: source <(pas completions bash)
    Completions(complete::CompletionsArgs),
    /// Write a man page for every command into a directory.
    ///
    /// Example: pas man --out docs/man
    Man(man::ManArgs),
    /// Internal: the supervisor of one agent process (started by `pas agent start`).
    #[command(name = "__supervise", hide = true)]
    Supervise(SuperviseArgs),
}

/// Internal: the supervisor of one agent process (started by `pas agent start`).
#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {
    /// The cell's id.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
}

/// What every command gets: the store, the printer, and who is acting.
pub struct Ctx {
    /// The store (the file store at the missions root unless another was selected).
    pub store: Selected,
    /// Where output goes.
    pub out: Printer,
    /// The acting agent (`--as`, else `$PAS_AGENT`); `None` for an operator.
    pub acting: Option<String>,
    /// What the operator allowed agents started by this command.
    pub launch: crate::ops::supervisor::Launch,
    /// The HTTP server, in the `pas-serve` binary only (see [`run_server`]).
    pub server: Option<Server>,
}

/// What the `pas-serve` program runs: `pas serve` or `pas mcp`.
pub enum Serving<'a> {
    /// The HTTP server.
    Http(crate::serve::Options<'a>),
    /// The MCP server on stdio.
    Mcp(crate::mcp::Options),
}

/// Starts a server (see [`Serving`]), linked into `pas-serve` only: one function pointer,
/// set by [`run_server`] alone, as before `pas mcp` existed. (A struct of two pointers
/// made the fat-LTO release `pas` keep `mcp::run_stdio`, tokio and rmcp.)
pub type Server = fn(Serving<'_>) -> Result<()>;

/// Where `--lock-timeout` is read from when not given, and its default in seconds: shared
/// by clap and the supervisor's fast path (`supervise_if_asked`), which reads no clap.
const LOCK_TIMEOUT_ENV: &str = "PAS_LOCK_TIMEOUT";
const DEFAULT_LOCK_TIMEOUT: f64 = 10.0;

/// Parses the command line, runs the command, and returns the process's exit status.
/// `pas serve` is handed to the `pas-serve` program next to this one, so the HTTP server
/// (tokio, axum) is not even loaded by the short commands.
pub fn run() -> ExitCode {
    if let Some(code) = supervisor_side_if_asked() {
        return code;
    }
    run_with(None, None)
}

/// The command lines of an agent's supervisor side, which both `pas` and `pas-supervise`
/// answer: level_2's and level_3's trampolines (`__isolate`, `__contain`) and the
/// supervisor itself (`__supervise`); `None` for any other command line.
fn supervisor_side_if_asked() -> Option<ExitCode> {
    if let Some(problem) = crate::namespace::run_if_asked() {
        return Some(report(&Error::failure(problem)));
    }
    if let Some(problem) = crate::container::run_if_asked() {
        return Some(report(&Error::failure(problem)));
    }
    supervise_if_asked()
}

/// [`run`] with the HTTP server linked in: the `pas-serve` binary, which `pas serve`
/// executes with the same arguments.
pub fn run_server() -> ExitCode {
    run_with(Some(serve_or_mcp), None)
}

/// The [`Server`] of `pas-serve`.
fn serve_or_mcp(serving: Serving<'_>) -> Result<()> {
    match serving {
        Serving::Http(opts) => crate::serve::run(opts),
        Serving::Mcp(opts) => crate::mcp::run_stdio(opts),
    }
}

/// The `pas-supervise` program: the supervisor of one agent (`pas-supervise --root DIR
/// __supervise CELL AGENT`, what `pas agent start` runs when it is installed next to `pas`)
/// and the trampolines of level_2 (`__isolate`) and level_3 (`__contain`), which it runs in
/// turn. Its `main` reaches nothing else, so the fat-LTO build keeps only this code: fewer
/// relocations and dirty pages in every supervisor (docs/design.md, Processes and revival).
/// Any other command line is handed to the `pas` next to it.
pub fn run_supervisor() -> ExitCode {
    if let Some(code) = supervisor_side_if_asked() {
        return code;
    }
    match crate::process::exec_sibling("pas") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e.hint(
            "pas-supervise runs only the supervisor's command line; install pas next to it (cargo install --path . does)",
        )),
    }
}

/// [`run`] with the etcd store linked in: the `pas-etcd` binary, which `pas` executes with
/// the same arguments when the command line selects an etcd store (`store::select`).
#[cfg(feature = "etcd")]
pub fn run_etcd() -> ExitCode {
    run_with(None, Some(select::open_etcd))
}

/// The program that links the etcd store, installed next to `pas`.
const ETCD_PROGRAM: &str = "pas-etcd";

/// Runs `pas-etcd` with this command line (it does not return when that works).
fn exec_etcd() -> ExitCode {
    match exec_etcd_error() {
        Some(e) => report(&e),
        None => ExitCode::SUCCESS,
    }
}

/// Runs `pas-etcd` with this command line; the error when that fails.
fn exec_etcd_error() -> Option<Error> {
    crate::process::exec_sibling(ETCD_PROGRAM).err().map(|e| {
        e.hint(format!(
            "the etcd store is in the {ETCD_PROGRAM} program installed next to pas; build both with `cargo install --path . --features etcd` (needs protoc)"
        ))
    })
}

/// The etcd store's opener, set in `pas-etcd` only.
static ETCD_OPENER: std::sync::OnceLock<EtcdOpener> = std::sync::OnceLock::new();

/// Opens etcd stores other than the selected one (`pas store copy`): in `pas`, which does
/// not link the etcd store, this runs `pas-etcd` with the same command line instead.
pub(crate) fn etcd_opener() -> Result<EtcdOpener> {
    if let Some(opener) = ETCD_OPENER.get() {
        return Ok(*opener);
    }
    Err(exec_etcd_error().unwrap_or_else(|| Error::failure("pas-etcd did not start")))
}

fn run_with(server: Option<Server>, etcd: Option<EtcdOpener>) -> ExitCode {
    if let Some(opener) = etcd {
        let _ = ETCD_OPENER.set(opener);
    }
    complete::answer_if_asked();
    if let Some(code) = version_verbose(etcd) {
        return code;
    }
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    if cli.json {
        if let Some(e) = no_json_form(&cli.command) {
            return report(&e);
        }
    }
    let out = Printer::new(cli.json, cli.quiet, cli.color);
    // The demo runs in a fresh temporary root unless --root is given on its command line.
    let explicit_root =
        std::env::args_os().any(|a| a == "--root" || a.to_string_lossy().starts_with("--root="));
    let root = match (&cli.command, explicit_root) {
        (Command::Demo, false) => std::env::temp_dir().join(format!(
            "pas-demo-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )),
        _ => cli
            .root
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
    };
    let acting = cli
        .acting
        .clone()
        .or_else(|| std::env::var("PAS_AGENT").ok())
        .filter(|a| !a.is_empty());
    if let Some(agent) = &acting {
        if let Err(e) = crate::store::check_id(crate::store::IdKind::Agent, agent) {
            return report(&e);
        }
    }
    if let Some(host) = cli.host.as_deref().filter(|h| !h.is_empty()) {
        if let Err(e) = crate::host::set(host) {
            return report(&e);
        }
    }
    if !(cli.lock_timeout.is_finite() && cli.lock_timeout >= 0.0) {
        return report(&Error::usage(format!(
            "--lock-timeout {} is not a number of seconds",
            cli.lock_timeout
        )));
    }
    let lock_wait = std::time::Duration::from_secs_f64(cli.lock_timeout);
    // Writing scripts and man pages needs no policy and no store, so a broken pas.toml or
    // an unreachable cluster cannot block them; the demo runs on files in its own root.
    let store = if matches!(
        cli.command,
        Command::Completions(_) | Command::Man(_) | Command::Demo
    ) {
        Ok(Opened::Store(Selected::File(
            FsStore::new(root).with_lock_wait(lock_wait),
        )))
    } else {
        open_store(cli.store.as_deref(), root, lock_wait, etcd)
    };
    let store = match store {
        Ok(Opened::Store(store)) => store,
        Ok(Opened::NeedsEtcd) => return exec_etcd(),
        // Monitoring speaks its own convention: a root it cannot use is UNKNOWN.
        Err(e) if matches!(cli.command, Command::Check(_)) => {
            let outcome = crate::ops::status::check(&[], &[e]);
            out.line(&outcome.line);
            return ExitCode::from(outcome.code);
        }
        Err(e) => return report(&with_outcome(e, 0)),
    };
    let launch = crate::ops::supervisor::Launch {
        agents_as_root: cli.agents_as_root,
    };
    let ctx = Ctx {
        store,
        out,
        acting,
        launch,
        server,
    };
    match dispatch(&ctx, cli.command) {
        Ok(()) => match ctx.out.output_error() {
            Some(e) => report(&e),
            None => ExitCode::SUCCESS,
        },
        Err(e) => report(&with_outcome(e, ctx.store.commits())),
    }
}

/// The store a command uses: `--store`, else `$PAS_STORE`, else `store` in the root's
/// `pas.toml`, else the file store at `root`; with the `pas.toml` policy layer.
fn open_store(
    flag: Option<&str>,
    root: PathBuf,
    lock_wait: std::time::Duration,
    etcd: Option<EtcdOpener>,
) -> Result<Opened> {
    let files = FsStore::new(root.clone()).with_lock_wait(lock_wait);
    let config = crate::config::load(&files)?;
    let env = std::env::var(crate::store::etcd::STORE_ENV).ok();
    let spec = flag
        .map(|s| (s, Source::Flag))
        .or(env.as_deref().map(|s| (s, Source::Env)))
        .or(config.store.as_deref().map(|s| (s, Source::Config)));
    if spec.is_none_or(|(s, _)| s.is_empty()) {
        return Ok(Opened::Store(Selected::File(
            files.with_root_policies(config.policies),
        )));
    }
    select::open(
        spec,
        root,
        lock_wait,
        config.policies,
        config.blobs.as_deref(),
        etcd,
    )
}

/// `pas --version --verbose`: the version and the store this command line would use
/// (`--store`, `--root`, `$PAS_STORE`, `pas.toml`), before clap, which answers `--version`
/// on its own.
fn version_verbose(etcd: Option<EtcdOpener>) -> Option<ExitCode> {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if !(args.iter().any(|a| a == "--version" || a == "-V")
        && args.iter().any(|a| a == "--verbose"))
    {
        return None;
    }
    let value = |name: &str| -> Option<String> {
        let eq = format!("{name}=");
        args.iter().enumerate().find_map(|(i, a)| {
            if a == name {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&eq).map(str::to_string)
            }
        })
    };
    let root = value("--root")
        .or_else(|| std::env::var("PAS_ROOT").ok())
        .unwrap_or_else(|| DEFAULT_ROOT.to_string());
    println!("pas {}", env!("CARGO_PKG_VERSION"));
    match open_store(
        value("--store").as_deref(),
        PathBuf::from(root),
        std::time::Duration::from_secs_f64(DEFAULT_LOCK_TIMEOUT),
        etcd,
    ) {
        Ok(Opened::Store(store)) => {
            println!("store: {}", store.describe());
            Some(ExitCode::SUCCESS)
        }
        Ok(Opened::NeedsEtcd) => Some(exec_etcd()),
        Err(e) => Some(report(&e)),
    }
}

/// `pas --root DIR __supervise CELL AGENT`, the command line `pas agent start` gives a
/// supervisor, runs before clap builds anything: a supervisor lives as long as its agent,
/// and this way it holds no argument tree. Anything else (another spelling, a lock timeout
/// or `PAS_AGENTS_AS_ROOT` value this does not read) goes through clap as any command.
fn supervise_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let (Some(flag), Some(root), Some(word), Some(cell), Some(agent), None) = (
        args.next(),
        args.next(),
        args.next(),
        args.next(),
        args.next(),
        args.next(),
    ) else {
        return None;
    };
    if flag != "--root" || word != "__supervise" {
        return None;
    }
    let (Some(cell), Some(agent)) = (cell.to_str(), agent.to_str()) else {
        return None;
    };
    let lock_timeout = match std::env::var(LOCK_TIMEOUT_ENV) {
        Err(std::env::VarError::NotPresent) => DEFAULT_LOCK_TIMEOUT,
        Ok(text) => match words::seconds(&text) {
            Ok(t) if t.is_finite() && t >= 0.0 => t,
            _ => return None,
        },
        Err(_) => return None,
    };
    let agents_as_root = match std::env::var_os(crate::ops::supervisor::Launch::AGENTS_AS_ROOT_ENV)
    {
        None => false,
        Some(v) if v == "1" => true,
        Some(_) => return None,
    };
    // Reading pas.toml goes deep; on a stack of its own, it leaves none of that resident
    // in the supervisor (`process::on_own_stack`).
    let opened = crate::process::on_own_stack(|| {
        let store = FsStore::new(PathBuf::from(&root))
            .with_lock_wait(std::time::Duration::from_secs_f64(lock_timeout));
        crate::config::load(&store).map(|config| store.with_root_policies(config.policies))
    });
    let store = match opened {
        Ok(store) => store,
        Err(e) => return Some(report(&with_outcome(e, 0))),
    };
    let launch = crate::ops::supervisor::Launch { agents_as_root };
    Some(
        match crate::ops::supervisor::supervise(&store, cell, agent, &launch) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(&with_outcome(e, crate::store::Store::commits(&store))),
        },
    )
}

fn dispatch(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::Cell(c) => cell::run(ctx, c),
        Command::Agent(c) => agent::run(ctx, c),
        Command::Task(c) => task::run(ctx, c),
        Command::Validate(a) => validate::run(ctx, a),
        Command::Status(a) => status::run_status(ctx, a),
        Command::Check(a) => status::run_check(ctx, a),
        Command::Metrics(a) => status::run_metrics(ctx, a),
        Command::Policy(c) => policy::run(ctx, c),
        Command::Events(a) => events::run(ctx, a),
        Command::Logs(a) => logs::run(ctx, a),
        Command::Checkpoint(c) => checkpoint::run(ctx, c),
        Command::Budget(a) => budget::run(ctx, a),
        Command::Reserve(a) => budget::reserve(ctx, a),
        Command::Release(a) => budget::release(ctx, a),
        Command::Reservations(a) => budget::list(ctx, a),
        Command::Quota(a) => budget::quota(ctx, a),
        Command::Kill(a) => budget::kill(ctx, a),
        Command::Demo => demo(ctx),
        Command::Revive(a) => revive::run(ctx, a),
        Command::Watch(a) => revive::run_watch(ctx, a),
        Command::Completions(a) => complete::run(ctx, a),
        Command::Man(a) => man::run(ctx, a),
        Command::Top(a) => top::run(ctx, a),
        Command::Serve(a) => serve::run(ctx, a),
        Command::Mcp(a) => mcp::run(ctx, a),
        Command::Store(c) => store::run(ctx, c),
        Command::Supervise(SuperviseArgs { cell, agent }) => {
            crate::ops::supervisor::supervise(&ctx.store, &cell, &agent, &ctx.launch)
        }
    }
}

fn demo(ctx: &Ctx) -> Result<()> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::failure(format!("cannot find the pas executable: {e}")))?;
    let started = std::time::Instant::now();
    ctx.out.line(&format!(
        "pas demo: a mission in {}",
        crate::store::Store::location(&ctx.store)
    ));
    // The demo's agent script and mission file go next to its cells.
    let work = ctx.store.file("pas demo")?.root().join(".demo");
    let cell = crate::ops::demo::run(
        &ctx.store,
        &work,
        &exe,
        &mut |line| ctx.out.line(&line),
        &mut |state| ctx.out.progress(&state),
    );
    ctx.out.progress_done();
    let cell = cell?;
    ctx.out.line(&format!(
        "mission completed in {:.1}s; the final status:",
        started.elapsed().as_secs_f64()
    ));
    ctx.out.line("");
    status::run_status(
        ctx,
        status::StatusArgs {
            cell: Some(cell),
            all: false,
            watch: false,
            interval: None,
            health: Vec::new(),
        },
    )?;
    ctx.out.line("");
    ctx.out.line(&format!(
        "explore it: pas --root {} events",
        crate::store::Store::location(&ctx.store)
    ));
    Ok(())
}

/// The refusal of `--json` for a command that has no JSON form (rather than text that a
/// script would fail to parse); `None` for the others.
fn no_json_form(command: &Command) -> Option<Error> {
    let (name, instead) = match command {
        Command::Metrics(_) => (
            "metrics",
            "its output is the Prometheus text format; `pas status --json` has the same numbers",
        ),
        Command::Completions(_) => ("completions", "it prints a shell script"),
        Command::Top(_) => (
            "top",
            "it is a full-screen view; poll `pas status --json` from a script",
        ),
        Command::Serve(serve::ServeArgs { command: None, .. }) => (
            "serve",
            "it is a server; its API answers in JSON (docs/http.md)",
        ),
        Command::Demo => (
            "demo",
            "it narrates for people; explore its root with `pas --json status` afterwards",
        ),
        _ => return None,
    };
    Some(
        Error::usage(format!(
            "`pas {name}` has no JSON form, so --json is refused"
        ))
        .hint(instead),
    )
}

/// Runs one command in this process as `pas --json ARGS...` would, over `store` and as
/// `acting`, and returns its JSON result (several JSON lines become an array, no output
/// `null`). This is how `pas serve` makes an HTTP control do exactly what the CLI command
/// does: the same parsing, checks, permissions, operations, events and result. Long-running
/// commands (serve, watch, top, follow modes) are refused.
pub(crate) fn run_captured(
    store: FsStore,
    acting: Option<String>,
    launch: crate::ops::supervisor::Launch,
    args: &[&str],
) -> Result<serde_json::Value> {
    let text = run_in_process(store, acting, launch, args, true)?;
    let mut docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::failure(format!("pas {} printed no JSON: {e}", args.join(" "))))?;
    Ok(match docs.len() {
        0 => serde_json::Value::Null,
        1 => docs.remove(0),
        _ => serde_json::Value::Array(docs),
    })
}

/// [`run_captured`] for a command whose output is text (`pas metrics`), as an operator.
pub(crate) fn run_captured_text(
    store: FsStore,
    launch: crate::ops::supervisor::Launch,
    args: &[&str],
) -> Result<String> {
    run_in_process(store, None, launch, args, false)
}

/// Runs one command in this process (as `pas [--json] ARGS...`) and returns what it
/// printed on stdout, as [`run_captured`] does without parsing it.
pub(crate) fn run_in_process(
    store: FsStore,
    acting: Option<String>,
    launch: crate::ops::supervisor::Launch,
    args: &[&str],
    json: bool,
) -> Result<String> {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let argv = ["pas"]
        .into_iter()
        .chain(json.then_some("--json"))
        .chain(args.iter().copied());
    let cli = command
        .try_get_matches_from_mut(argv)
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches))
        .map_err(|e| Error::usage(e.kind().to_string()))?;
    if matches!(
        cli.command,
        Command::Serve(_)
            | Command::Mcp(_)
            | Command::Watch(_)
            | Command::Top(_)
            | Command::Demo
            | Command::Supervise(_)
            | Command::Man(_)
            | Command::Completions(_)
    ) || args
        .iter()
        .any(|a| matches!(*a, "--follow" | "-f" | "--watch"))
    {
        return Err(Error::usage(format!(
            "`pas {}` cannot run inside the server",
            args.first().copied().unwrap_or_default()
        )));
    }
    let ctx = Ctx {
        store: Selected::File(store),
        out: Printer::capture(json),
        acting,
        launch,
        server: None,
    };
    if let Err(e) = dispatch(&ctx, cli.command) {
        return Err(with_outcome(e, crate::store::Store::commits(&ctx.store)));
    }
    Ok(ctx.out.take_captured())
}

/// `Cli::try_parse`, without freeing clap's command tree afterwards: the tree is only needed
/// to parse, and freeing it node by node costs a beat (mostly process start) more than the
/// parse itself; the process ends soon after and returns the memory at once.
fn parse_args() -> std::result::Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches))
        .map_err(|e| e.format(&mut command));
    std::mem::forget(command);
    parsed
}

/// A failure (I/O, a process) that does not say whether the command changed anything gets
/// told: nothing, when no change was committed, else that earlier changes were made. Refusals
/// (usage, not found, conflict, ...) happen before any change and need no such note.
fn with_outcome(e: Error, commits: usize) -> Error {
    if e.kind != Kind::Failure || e.committed.is_some() {
        return e;
    }
    if commits == 0 {
        e.outcome(false)
    } else {
        let message = format!(
            "{}; the change was made, then a later step failed (see `pas events`)",
            e.message
        );
        Error {
            message,
            committed: Some(true),
            ..e
        }
    }
}

/// One line on stderr: what is wrong, then how to fix it.
pub fn report(e: &Error) -> ExitCode {
    if e.message.is_empty() {
        return ExitCode::from(e.kind.exit_code());
    }
    match &e.hint {
        Some(hint) => eprintln!("pas: {}; {hint}", e.message),
        None => eprintln!("pas: {}", e.message),
    }
    ExitCode::from(e.kind.exit_code())
}

/// clap's own errors, folded into one line (help and version go to stdout, exit 0).
fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(Kind::Usage.exit_code())
        } else {
            ExitCode::SUCCESS
        };
    }
    let rendered = e.render().to_string();
    let mut parts: Vec<String> = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("For more information") {
            continue;
        }
        if let Some(u) = line.strip_prefix("Usage: ") {
            usage = Some(u.to_string());
            continue;
        }
        parts.push(line.trim_start_matches("error: ").to_string());
    }
    let mut message = parts.join(" ");
    if let Some(usage) = usage {
        message.push_str(&format!("; usage: {usage}"));
    }
    report(&Error::usage(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    /// Every visible command, as `pas cell create`, with its rendered long help.
    fn every_command() -> Vec<(String, Option<String>, String)> {
        fn walk(
            cmd: &mut clap::Command,
            path: String,
            out: &mut Vec<(String, Option<String>, String)>,
        ) {
            let about = cmd.get_about().map(|a| a.to_string());
            let help = cmd.render_long_help().to_string();
            out.push((path.clone(), about, help));
            for sub in cmd.get_subcommands_mut().filter(|s| !s.is_hide_set()) {
                let name = format!("{path} {}", sub.get_name());
                walk(sub, name, out);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut out = Vec::new();
        walk(&mut cmd, "pas".into(), &mut out);
        out
    }

    #[test]
    fn every_command_has_a_one_line_summary_and_an_example() {
        let mut missing = Vec::new();
        for (path, about, help) in every_command() {
            if path.split(' ').any(|w| w == "help") {
                continue;
            }
            match about {
                Some(a)
                    if !a.trim().is_empty()
                        && !a.contains('\n')
                        && !a.starts_with("Arguments of") => {}
                _ => missing.push(format!("{path}: no one-line summary")),
            }
            if !help.contains("Example") {
                missing.push(format!("{path}: no example in --help"));
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
