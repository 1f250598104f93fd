//! Processes: start_server's own set-up ([`hygiene`], [`signals`], [`daemon`]), its workers
//! ([`spawner`] prepares, [`spawn`] forks and execs), its children that exit ([`reap`]) and what
//! workers leave behind ([`strays`]).

pub mod daemon;
pub mod hygiene;
pub mod reap;
pub mod signals;
pub mod spawn;
pub mod spawner;
pub mod strays;
