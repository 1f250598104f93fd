//! `start_server`: parse the command line, run the chosen mode, map errors to exit codes.
//!
//! Data flows through the folders in order: [`config`] (what the operator asks for) →
//! [`sockets`] (bound here or inherited from systemd) → [`supervisor`] (the state machine, plain
//! data) ← [`runtime`] (the OS side: event loop, workers, files, notifications). [`control`]
//! talks to a running start_server. `docs/ARCHITECTURE.md` follows one reload through them.

mod config;
mod control;
mod error;
mod runtime;
// The OS-facing pieces of cgroups per generation, on-demand probes and metrics, not wired in yet.
#[allow(dead_code)]
mod server {
    pub mod cgroup;
    pub mod metrics;
    pub mod probe {
        pub mod connections;
        pub mod usage;
    }
}
mod sockets;
mod supervisor;

use config::cli::{self, Cli};
use control::{client, operator};
use runtime::{hygiene, logging, serve, signals};
use sockets::activation;

fn main() {
    let cli = Cli::from_env();
    // With --log-file, stderr is about to become that file: the journal is not the target then.
    logging::init(cli.log_file.is_none() && logging::stderr_is_journal());
    let result = if let Some(what) = &cli.generate {
        cli::generate(what, &mut std::io::stdout().lock())
            .map_err(|e| error::Error::runtime(format!("cannot write the {what} output: {e}")))
    } else if cli.json && !cli.status {
        Err(error::Error::usage(
            "--json is an option of --status: use start_server --status --json",
        ))
    } else if cli.check {
        operator::check(&cli)
    } else if cli.status {
        operator::status(&cli)
    } else if cli.reload {
        operator::reload(&cli)
    } else if cli.stop {
        client::stop(&cli)
    } else if cli.restart {
        client::restart(&cli)
    } else if cli.upgrade {
        control::upgrade::upgrade(&cli)
    } else if cli.upgrade_check {
        upgrade_check(cli)
    } else if let Some(state_fd) = cli.upgrade_state {
        // The image before this one set the process up (fds, signal mask, sockets): go on.
        hygiene::standard_fds_and_no_leaks();
        signals::ignore_write_faults();
        signals::block_handled()
            .and_then(|()| config::Config::new(cli, std::env::vars_os(), Vec::new()))
            .and_then(|config| serve::resume(config, state_fd))
            .map(|ending| {
                if ending != runtime::event_loop::Ending::Clean {
                    std::process::exit(ending.exit_code());
                }
            })
    } else {
        hygiene::standard_fds_and_no_leaks();
        signals::ignore_write_faults();
        signals::block_handled()
            .and_then(|()| activation::take_from_env())
            .and_then(|inherited| config::Config::new(cli, std::env::vars_os(), inherited))
            .and_then(serve::serve)
            .map(|ending| {
                // A stop that had to kill says so in the exit status.
                if ending != runtime::event_loop::Ending::Clean {
                    std::process::exit(ending.exit_code());
                }
            })
    };
    finish(result)
}

/// `--upgrade-check`: the options must be valid for this binary; then its version and the state
/// formats it reads.
fn upgrade_check(cli: Cli) -> error::Result<()> {
    config::Config::new(cli, std::env::vars_os(), Vec::new())?;
    use std::io::Write;
    std::io::stdout()
        .write_all(runtime::upgrade::check_report().as_bytes())
        .map_err(|e| error::Error::runtime(format!("cannot write the check's report: {e}")))
}

fn finish(result: error::Result<()>) {
    if let Err(error) = result {
        logging::print(&format!("start_server: {error}"));
        std::process::exit(error.exit_code());
    }
}
