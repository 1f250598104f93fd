//! `start_server`: parse the command line, run the chosen mode, map errors to exit codes.
//!
//! Data flows config → sockets → supervisor → workers:
//! `cli` → `config` (`port_spec`, `signals`, `program`, `worker_env`) → `serve` (`pid_file`,
//! `output`, `sockets`, `spawn::FdLayout`) → `event_loop` (`supervisor`, `spawn`,
//! `status_file`). `client` is the `--restart`/`--stop` side.

mod cli;
mod client;
mod config;
mod error;
mod event_loop;
mod hygiene;
mod logging;
mod output;
mod pid_file;
mod port_spec;
mod program;
mod serve;
mod signals;
mod sockets;
mod spawn;
mod status_file;
mod supervisor;
mod worker_env;

use cli::Cli;

fn main() {
    let cli = Cli::from_env();
    logging::init();
    let result = if cli.stop {
        client::stop(&cli)
    } else if cli.restart {
        client::restart(&cli)
    } else {
        hygiene::standard_fds_and_no_leaks();
        signals::block_handled()
            .and_then(|()| config::Config::new(cli, std::env::vars_os()))
            .and_then(serve::serve)
    };
    if let Err(error) = result {
        eprintln!("start_server: {error}");
        std::process::exit(error.exit_code());
    }
}
