//! `start_server`: parse the command line, run the chosen mode, map errors to exit codes.
//!
//! Data flows config → sockets → supervisor → workers:
//! `cli` → `config` (`port_spec`, `signals`, `program`, `worker_env`; `activation` for sockets
//! from systemd) → `serve` (`pid_file`, `output`, `sockets`, `spawn::FdLayout`) → `event_loop`
//! (`supervisor`, the state machine; `spawn`; `status_file`; `notify` to systemd,
//! `worker_notify` from workers; `strays` for what workers leave behind). `files` creates files
//! without following planted links. `client` is the `--restart`/`--stop` side; `hygiene` what
//! start_server sets up about itself first.

mod activation;
mod cli;
mod client;
mod config;
mod error;
mod event_loop;
mod files;
mod hygiene;
mod logging;
mod man_page;
mod notify;
mod output;
mod pid_file;
mod port_spec;
mod program;
mod serve;
mod signals;
mod sockets;
mod spawn;
mod status_file;
mod strays;
mod supervisor;
mod worker_env;
mod worker_notify;

use cli::Cli;

fn main() {
    let cli = Cli::from_env();
    // With --log-file, stderr is about to become that file: the journal is not the target then.
    logging::init(cli.log_file.is_none() && logging::stderr_is_journal());
    let result = if let Some(what) = &cli.generate {
        cli::generate(what, &mut std::io::stdout().lock())
            .map_err(|e| error::Error::runtime(format!("cannot write the {what} output: {e}")))
    } else if cli.stop {
        client::stop(&cli)
    } else if cli.restart {
        client::restart(&cli)
    } else {
        hygiene::standard_fds_and_no_leaks();
        signals::block_handled()
            .and_then(|()| activation::take_from_env())
            .and_then(|inherited| config::Config::new(cli, std::env::vars_os(), inherited))
            .and_then(serve::serve)
    };
    if let Err(error) = result {
        eprintln!("start_server: {error}");
        std::process::exit(error.exit_code());
    }
}
