//! `pas serve`: the HTTP server (see `crate::serve` and docs/http.md). This file only reads
//! the options. The server itself is linked into the `pas-serve` program only, which `pas
//! serve` executes with the same arguments: the `pas` binary carries no tokio or axum, so
//! no other command pays for them, not even in page faults at start.

use clap::{Args, Subcommand};
use serde_json::json;

use crate::cli::Ctx;
use crate::error::{Error, Result};
use crate::ops::cell;

/// The program that runs the server, installed next to `pas`.
pub const SERVER_PROGRAM: &str = "pas-serve";

/// The address `pas serve` listens on when no --listen is given: loopback, on the port
/// the seed planned for its dashboard (HMI, 6101).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6101";

// Arguments of `pas serve` (its help text is on `Command::Serve`: the variant's doc wins).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    /// The bearer token instead of serving.
    #[command(subcommand)]
    pub command: Option<ServeCommand>,
    /// Address and port to listen on; repeat for more (default 127.0.0.1:6101). Port 0
    /// picks a free port; the addresses are printed when listening.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<String>,
    /// The cell the seed's endpoints use when a request names none (default: the only
    /// cell, when the root has one).
    #[arg(long, value_name = "CELL")]
    pub cell: Option<String>,
    /// Replace the bearer token before serving (clients holding the old one are refused).
    #[arg(long)]
    pub rotate_token: bool,
    /// Seconds (or a duration: 500ms, 1m) one request may take, from its first byte to the
    /// answer's head; a slower client gets 408 and its connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = crate::cli::words::seconds)]
    pub request_timeout: f64,
    /// Writes from loopback (127.0.0.1, ::1) need no token, so the seed's clients and
    /// curl examples work unchanged. Only for a machine whose local users you all trust:
    /// any of them can then change the root through this server, as the server's user.
    #[arg(long)]
    pub trust_loopback: bool,
}

// Subcommands of `pas serve`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ServeCommand {
    /// Print the bearer token writes need (creating it, 0600, when there is none).
    ///
    /// Example: curl -H "Authorization: Bearer $(pas serve token)" -X POST http://127.0.0.1:6101/register -d @svc.json
    Token(TokenArgs),
}

// Arguments of `pas serve token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Replace the token with a new random one first.
    #[arg(long)]
    pub rotate: bool,
}

/// Runs `pas serve`.
pub fn run(ctx: &Ctx, args: ServeArgs) -> Result<()> {
    let ServeArgs {
        command,
        listen,
        cell,
        rotate_token,
        request_timeout,
        trust_loopback,
    } = args;
    if let Some(ServeCommand::Token(TokenArgs { rotate })) = command {
        let (token, path) = ctx.store.file("pas serve")?.serve_token(rotate)?;
        if ctx.out.is_json() {
            ctx.out
                .json(&json!({ "token": token, "path": path, "rotated": rotate }));
        } else {
            ctx.out.line(&token);
        }
        return Ok(());
    }
    let listen = if listen.is_empty() {
        vec![DEFAULT_LISTEN.to_string()]
    } else {
        listen
    };
    let mut addrs = Vec::new();
    for text in &listen {
        let addr: std::net::SocketAddr = text.parse().map_err(|_| {
            Error::usage(format!("--listen {text:?} is not an address and port"))
                .hint("write it as 127.0.0.1:6101 or [::1]:6101")
        })?;
        addrs.push(addr);
    }
    let default_cell = cell.map(|q| cell::resolve(&ctx.store, &q)).transpose()?;
    let Some(server) = ctx.server else {
        // Checked above first, so a bad address or cell is refused by `pas` itself.
        return crate::process::exec_sibling(SERVER_PROGRAM);
    };
    let files = ctx.store.file("pas serve")?;
    let (token, token_path) = files.serve_token(rotate_token)?;
    server(crate::cli::Serving::Http(crate::serve::Options {
        store: files.fresh(),
        addrs,
        default_cell,
        token,
        token_path,
        launch: ctx.launch,
        trust_loopback,
        request_timeout: std::time::Duration::from_secs_f64(request_timeout.clamp(0.001, 86_400.0)),
        announce: &|line| ctx.out.line(line),
    }))
}
