//! What every worker is started with: the program and its directory, the environment
//! (start_server's own, the envdir re-read for each spawn, then the socket, notification and
//! generation variables), and the sockets at their fds ([`spawn`] forks and execs).

use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::config::worker_env::{self, Env};
use crate::server::process::signals::child_xfsz;
use crate::server::process::spawn::{self, Launch, SpawnError};
use crate::sockets::Bound;
use crate::sockets::for_workers::ForWorkers;
use crate::sockets::placement::FdLayout;
use crate::supervisor::Tunables;
use crate::vocab::Pid;

/// The server program as the operator gave it.
#[derive(Debug)]
pub struct Program {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// The workers' directory.
    pub dir: Option<PathBuf>,
    /// Re-read before every spawn.
    pub envdir: Option<PathBuf>,
    /// The environment under the envdir.
    pub base_env: Env,
}

/// Starts workers.
#[derive(Debug)]
pub struct Spawner {
    program: Program,
    sockets: ForWorkers,
    /// The socket files start_server created, removed when the spawner goes (at exit).
    bound: Bound,
    /// The open-file limit workers get (start_server raised its own).
    nofile: libc::rlimit,
    /// `NOTIFY_SOCKET` for the workers.
    notify_socket: String,
}

/// The sockets and limits as an upgrade hands them over (under `sockets` and `nofile`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpawnerState {
    pub sockets: SocketsState,
    /// The open-file limit workers get.
    pub nofile: (u64, u64),
}

/// The sockets: where each is in start_server and in the worker, and how workers are told.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SocketsState {
    /// `(fd in start_server, fd in the worker)`, in command-line order.
    pub slots: Vec<(RawFd, RawFd)>,
    pub floor: RawFd,
    pub port_env: String,
    pub listen_env: Option<(String, String)>,
    /// Socket files to remove at exit.
    pub unix_paths: Vec<String>,
}

impl Spawner {
    /// A spawner for `program` on `sockets`.
    pub fn new(
        program: Program,
        sockets: ForWorkers,
        bound: Bound,
        nofile: libc::rlimit,
        notify_socket: String,
    ) -> Spawner {
        Spawner {
            program,
            sockets,
            bound,
            nofile,
            notify_socket,
        }
    }

    /// Starts generation `generation`'s worker in `slot` (named to it only when there are
    /// several), in `cgroup` if given (its directory and `cgroup.procs`, open): the settings its
    /// environment gave, and its pid or why it did not start.
    pub fn spawn_into(
        &self,
        generation: u64,
        slot: Option<usize>,
        cgroup: Option<(RawFd, RawFd)>,
    ) -> (Tunables, Result<Pid, SpawnError>) {
        let (env, tunables) = self.environment(generation, slot);
        let launched = self
            .launch(&env)
            .and_then(|launch| spawn::spawn(&self.sockets.layout, &Launch { cgroup, ..launch }));
        (tunables, launched)
    }

    /// The listening sockets' fds in start_server.
    pub fn listener_fds(&self) -> Vec<RawFd> {
        self.sockets
            .layout
            .export()
            .0
            .iter()
            .map(|&(fd, _)| fd)
            .collect()
    }

    /// The environment of generation `generation`'s worker in `slot`, and the settings it
    /// implies.
    fn environment(&self, generation: u64, slot: Option<usize>) -> (Env, Tunables) {
        let mut env = self.program.base_env.clone();
        if let Some(dir) = &self.program.envdir {
            match worker_env::read_envdir(dir) {
                Ok(mut overlay) => {
                    for refused in std::mem::take(&mut overlay.refused) {
                        warn!("{refused}; skipped");
                    }
                    overlay.apply_to(&mut env);
                }
                Err(e) => warn!("failed to read envdir {}: {e}", dir.display()),
            }
        }
        let tunables = worker_env::tunables(&env);
        env.insert(
            "SERVER_STARTER_PORT".into(),
            (&self.sockets.port_env).into(),
        );
        if let Some((count, names)) = &self.sockets.listen_env {
            env.insert("LISTEN_FDS".into(), count.into());
            env.insert("LISTEN_FDNAMES".into(), names.into());
        }
        env.insert("NOTIFY_SOCKET".into(), (&self.notify_socket).into());
        env.insert(
            "SERVER_STARTER_GENERATION".into(),
            generation.to_string().into(),
        );
        if let Some(slot) = slot {
            env.insert("SERVER_STARTER_WORKER".into(), slot.to_string().into());
        }
        (env, tunables)
    }

    /// The worker's exec, prepared before fork.
    fn launch(&self, env: &Env) -> Result<Launch, SpawnError> {
        let program = &self.program;
        let path = crate::config::program::resolve(
            &program.command[0],
            env.get(OsStr::new("PATH")).map(OsString::as_os_str),
            program.dir.as_deref(),
        )?;
        Ok(Launch {
            program: spawn::c_string(path.into_os_string(), "the program path")?,
            argv: program
                .command
                .iter()
                .map(|a| spawn::c_string(a.clone(), "an argument"))
                .collect::<Result<_, _>>()?,
            env: worker_env::entries(env)
                .filter_map(|e| spawn::c_string(e, "").ok())
                .collect(),
            dir: program
                .dir
                .as_ref()
                .map(|d| spawn::c_string(d.clone().into_os_string(), "--dir"))
                .transpose()?,
            nofile: self.nofile,
            listen_pid: self.sockets.listen_env.is_some(),
            watchdog_pid: env.contains_key(OsStr::new("WATCHDOG_USEC")),
            xfsz: child_xfsz(),
            cgroup: None,
        })
    }

    /// The sockets and limits, for an upgrade in place.
    pub fn export(&self) -> Result<SpawnerState, String> {
        let (slots, floor) = self.sockets.layout.export();
        let unix_paths = self
            .bound
            .unix_paths()
            .map(|p| {
                p.to_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("a socket path is not UTF-8: {p:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SpawnerState {
            sockets: SocketsState {
                slots,
                floor,
                port_env: self.sockets.port_env.clone(),
                listen_env: self.sockets.listen_env.clone(),
                unix_paths,
            },
            nofile: (self.nofile.rlim_cur, self.nofile.rlim_max),
        })
    }

    /// The spawner an earlier image exported (see [`Spawner::export`]), for `program`.
    ///
    /// # Safety
    ///
    /// The sockets the state names must be open, and owned by nothing else.
    pub unsafe fn adopt(
        state: SpawnerState,
        program: Program,
        notify_socket: String,
    ) -> crate::error::Result<Spawner> {
        let sockets = state.sockets;
        let bound = Bound::adopt(sockets.unix_paths.iter().map(PathBuf::from).collect())?;
        Ok(Spawner {
            program,
            sockets: ForWorkers {
                // SAFETY: the caller promises the sockets are open and ours alone.
                layout: unsafe { FdLayout::adopt(&sockets.slots, sockets.floor) },
                port_env: sockets.port_env,
                listen_env: sockets.listen_env,
            },
            bound,
            nofile: libc::rlimit {
                rlim_cur: state.nofile.0,
                rlim_max: state.nofile.1,
            },
            notify_socket,
        })
    }

    /// The sockets' inodes (what a worker waiting on one of them is recognized by).
    pub fn socket_inodes(&self) -> std::collections::BTreeSet<u64> {
        self.sockets.layout.inodes().into_iter().collect()
    }

    /// The sockets' fds in start_server (kept open across an upgrade's exec).
    pub fn fds(state: &SpawnerState) -> Vec<RawFd> {
        state.sockets.slots.iter().map(|&(fd, _)| fd).collect()
    }
}
