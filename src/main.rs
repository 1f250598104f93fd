//! `start_server`: parse the command line, run the chosen mode, map errors to exit codes.
//!
//! Data flows through the folders in order: [`config`] (what the operator asks for) →
//! [`sockets`] (bound here or inherited from systemd) → [`supervisor`] (the state machine, plain
//! data) ← [`server`] (the OS side: event loop, workers, files, notifications). [`client`]
//! talks to a running start_server; [`wire`] holds the formats both sides share, [`vocab`] the
//! words every folder shares. `docs/ARCHITECTURE.md` follows one reload through them.

mod client;
mod config;
mod error;
mod fs;
mod server;
mod sockets;
mod supervisor;
mod vocab;
mod wire;

use config::cli::{self, Cli};
use server::process::{hygiene, signals};
use server::serve::{self, Ending};
use server::{log, upgrade};

fn main() {
    let cli = Cli::from_env();
    // With --log-file, stderr is about to become that file: the journal is not the target then.
    log::init(cli.log_file.is_none() && log::stderr_is_journal());
    let result = if let Some(what) = &cli.generate {
        cli::generate(what, &mut std::io::stdout().lock())
            .map_err(|e| error::Error::runtime(format!("cannot write the {what} output: {e}")))
    } else if cli.json && !cli.status {
        Err(error::Error::usage(
            "--json is an option of --status: use start_server --status --json",
        ))
    } else if cli.check {
        client::control::check(&cli)
    } else if cli.status {
        client::control::status(&cli)
    } else if cli.metrics {
        client::control::metrics(&cli)
    } else if cli.reload {
        client::control::reload(&cli)
    } else if cli.stop {
        client::process::stop(&cli)
    } else if cli.restart {
        client::process::restart(&cli)
    } else if cli.upgrade {
        client::upgrade::upgrade(&cli)
    } else if cli.upgrade_check {
        upgrade_check(cli)
    } else if let Some(state_fd) = cli.upgrade_state {
        // The image before this one set the process up (fds, signal mask, sockets): go on. Its
        // fds stay as they are until taken over (a way back needs them open across an exec).
        let handed = serve::Handed {
            state_fd,
            way_back: cli
                .upgrade_rollback
                .as_deref()
                .and_then(upgrade::rollback::WayBack::parse),
            rolled_back: cli.upgrade_rolled_back.clone(),
        };
        signals::ignore_write_faults();
        signals::block_handled()
            .and_then(|()| config::Config::new(cli, std::env::vars_os()))
            .and_then(|config| serve::resume(config, handed))
            .map(exit_as)
    } else {
        hygiene::standard_fds_and_no_leaks();
        signals::ignore_write_faults();
        signals::block_handled()
            .and_then(|()| sockets::activation::take_from_env())
            .and_then(|inherited| {
                config::Config::new(cli, std::env::vars_os())
                    .and_then(|config| serve::serve(config, inherited))
            })
            .map(exit_as)
    };
    finish(result)
}

/// A stop that had to kill says so in the exit status.
fn exit_as(ending: Ending) {
    if ending != Ending::Clean {
        std::process::exit(ending.exit_code());
    }
}

/// `--upgrade-check`: the options must be valid for this binary; then its version and the state
/// formats it reads.
fn upgrade_check(cli: Cli) -> error::Result<()> {
    config::Config::new(cli, std::env::vars_os())?;
    use std::io::Write;
    std::io::stdout()
        .write_all(upgrade::check::report().as_bytes())
        .map_err(|e| error::Error::runtime(format!("cannot write the check's report: {e}")))
}

fn finish(result: error::Result<()>) {
    if let Err(error) = result {
        log::print(&format!("start_server: {error}"));
        std::process::exit(error.exit_code());
    }
}
