//! The man page: clap_mangen renders what the option definitions describe (NAME, SYNOPSIS,
//! DESCRIPTION, OPTIONS); the other standard sections are the text below, kept next to the
//! definition so both change together. Text uses two marks: `*bold*` and `{italic}`.

use std::io::{self, Write};

/// Date of this version's release (CHANGELOG.md), shown in the page's footer.
const RELEASE_DATE: &str = "2026-11-24";

/// The hidden `--generate` option, which clap_mangen leaves out with the other hidden ones.
const GENERATE_OPTION: (&str, &str) = (
    "*--generate* {<WHAT>}",
    "Print the man page ({man}) or a shell completion script ({bash}, {zsh}, {fish}) made from \
     start_server's own option definitions, and exit. For packagers: it is hidden from --help.",
);

/// The hidden `--upgrade-check`, run by start_server itself before an upgrade.
const UPGRADE_CHECK_OPTION: (&str, &str) = (
    "*--upgrade-check*",
    "Check that this binary can take over from a running start_server given the same options: \
     print its version, the upgrade state formats it reads and whether it can roll back, and \
     exit 0 (2 if the options are not valid for it). Run by start_server before an upgrade; \
     hidden from --help.",
);

const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "Stopped by a signal after every worker exited; --restart or --reload saw the new \
         generation serve; --stop saw start_server exit; --check found it healthy.",
    ),
    (
        "1",
        "Something the system refused at run time (a socket that cannot be bound, an unwritable \
         pid file, a worker that cannot be started before any generation served), or --restart \
         or --reload saw the new generation fail to start or be rolled back during its --bake \
         (the old one keeps serving), or --check found it unhealthy or could not reach it.",
    ),
    (
        "2",
        "Bad command line or configuration (an unknown or ambiguous option, an invalid value): \
         nothing was started.",
    ),
    (
        "3",
        "Stopped by a signal, but a worker or a process one left behind had to be sent SIGKILL \
         (it outlived --kill-old-timeout, or the 5 seconds given to left-behind processes).",
    ),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "*ENVDIR*",
        "The directory of --envdir, when that option is not given.",
    ),
    (
        "*ENABLE_AUTO_RESTART*, *AUTO_RESTART_INTERVAL*, *KILL_OLD_DELAY*",
        "The settings of the options of the same names. A value from the envdir wins over the \
         command line, which wins over start_server's own environment; they are re-read at every \
         spawn.",
    ),
    (
        "*LISTEN_FDS*, *LISTEN_PID*, *LISTEN_FDNAMES*",
        "Sockets handed over by systemd (socket activation). A --port or --path at exactly a \
         socket's address takes it instead of binding; a bare --port=8080 wants \
         ListenStream=0.0.0.0:8080, not the dual-stack [::]:8080 of ListenStream=8080. Sockets \
         no option names are passed on too, keyed by their address.",
    ),
    (
        "*NOTIFY_SOCKET*, *WATCHDOG_USEC*, *WATCHDOG_PID*",
        "Where start_server sends its notifications to systemd (READY=1, RELOADING=1, \
         STOPPING=1, STATUS=, WATCHDOG=1).",
    ),
    (
        "*FDSTORE*",
        "Set by systemd (254 and later) when the unit has FileDescriptorStoreMax=: start_server \
         then keeps the sockets it binds in systemd's file descriptor store (see NOTES).",
    ),
    (
        "*JOURNAL_STREAM*",
        "When it names start_server's stderr and there is no --log-file, start_server logs \
         natively to journald.",
    ),
];

/// What the worker finds in its environment.
const WORKER_ENVIRONMENT: &[(&str, &str)] = &[
    (
        "*SERVER_STARTER_PORT*",
        "The sockets as KEY=FD entries joined with semicolons, for instance \
         8080=3;127.0.0.1:81=4;/run/app.sock=5. Always set; empty without sockets.",
    ),
    (
        "*SERVER_STARTER_GENERATION*",
        "1 for the first worker, one more for every spawn attempt.",
    ),
    (
        "*LISTEN_FDS*, *LISTEN_PID*, *LISTEN_FDNAMES*",
        "The same sockets in systemd's convention, unless --no-listen-fds is given or =FD puts \
         them elsewhere than fds 3, 4, ...",
    ),
    (
        "*NOTIFY_SOCKET*",
        "start_server's own notification socket: a worker that sends READY=1 there counts as \
         started at once.",
    ),
];

const SIGNALS: &[(&str, &str)] = &[
    (
        "*SIGHUP*",
        "Start a new generation of workers; once it is up, send --signal-on-hup to the old \
         ones. A HUP that arrives while a generation is starting is kept: another generation \
         follows it.",
    ),
    (
        "*SIGTERM*",
        "Keep serving for --shutdown-delay seconds if set (a second SIGTERM skips the delay), \
         then send --signal-on-term to every worker, wait for all of them, remove the pid, \
         status and socket files, and exit 0 (3 if one had to be killed).",
    ),
    (
        "*SIGINT*, *SIGQUIT*, *SIGUSR1*",
        "The same, sending SIGTERM.",
    ),
    (
        "*SIGUSR2*",
        "Upgrade start_server itself in place: run the binary now at the path start_server was \
         started as with --upgrade-check, and if it passes, execute it with the same pid, pid \
         file, sockets, notification socket, control socket, status file and generation count; \
         every worker runs on untouched (a SIGHUP afterwards restarts them, as usual). A binary that is \
         missing, fails the check or cannot be executed leaves start_server as it was, with the \
         reason in the log and in {PID_FILE}.upgrade. Under systemd the upgrade is a reload: \
         RELOADING=1 before, READY=1 with the new version in STATUS= after.",
    ),
    (
        "other signals",
        "Signals whose default would end start_server (SIGPWR, SIGVTALRM, real-time signals, \
         ...) are logged and ignored, whether start_server is PID 1 or not.",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "/usr/lib/systemd/system/server-starter@.service",
        "With *server-starter@.socket*, a template: instance {NAME} runs the application \
         described in /etc/server-starter/{NAME}.env on /run/server-starter/{NAME}.sock.",
    ),
    (
        "/usr/lib/systemd/system/server-starter-example.service",
        "With *server-starter-example.socket*, an example (Type=notify, reloaded with \
         start_server --reload) to copy under an application's name.",
    ),
    (
        "/usr/share/doc/server-starter/examples/",
        "An example env file for the template.",
    ),
    (
        "{PID_FILE}.upgrade",
        "Next to --pid-file: the outcome of the last upgrade in place (OK or FAILED, a \
         monotonic stamp in microseconds, then the new version or the reason), read by --upgrade.",
    ),
    (
        "{PID_FILE}.control",
        "The control socket when --pid-file is given without --control (else \
         $RUNTIME_DIRECTORY/start_server.control under systemd): JSON requests, one a line \
         ({\"command\":\"status\"}, with \"usage\":true what each generation and worker costs and \
         holds; reload, stop, workers with a count, upgrade, metrics), one JSON reply a line.",
    ),
    (
        "{STATUS_FILE}.failed",
        "Next to --status-file: why the last start failed, or that it was rolled back during its \
         --bake (GEN:why lines), read by --restart.",
    ),
];

/// Paragraphs of NOTES: what differs from the original.
const NOTES: &[&str] = &[
    "start_server is a drop-in replacement for the start_server of Perl's Server::Starter 0.35: \
     same options (with one dash or two, abbreviated to any unambiguous prefix), environment \
     variables, status and pid files, and log lines. These differences are deliberate:",
    "An empty --envdir file removes its variable, and a removed file no longer applies. An \
     unknown or ambiguous option exits with status 2 and the usage. Failed starts back off \
     after three in a row. SIGINT, SIGQUIT and SIGUSR1 stop gracefully; SIGUSR2, which kills \
     the original, upgrades start_server in place. --port=P=FD \
     never clobbers another socket. Socket activation, readiness, the control socket and every \
     option the original lacks (--ready-timeout, --ready, --bake, --workers, --cgroups, the \
     metrics, ...) are additions. The README lists every difference.",
    "With --ready=listening, a new worker also counts as started the moment it, or a process it \
     started, waits for connections on a socket start_server passed it, seen in /proc with no \
     change to the worker: a thread blocked in accept or accept4 on it (recvmsg or recvfrom for \
     UDP), the socket in an epoll set, or a thread in poll or select on it. Sockets are told \
     apart by inode: one the worker made itself does not count. start_server looks only while \
     a start is awaited, every 5 to 20 ms. Measured on 2 cores, a reload then takes as long as \
     the server needs to start (nginx and a Go program on net.FileListener 7 ms, h2o 14 ms, \
     Starlet 65 ms, Starman 85 ms, uvicorn 165 ms) instead of --interval, for about 1 ms of \
     start_server's CPU. A worker seen neither listening nor sending READY=1 is judged by \
     --interval (said once in the log), or fails under --ready-timeout. Use it for any server \
     that does not send READY=1.",
    "With --bake=SECONDS, the old generation keeps serving beside the new one for SECONDS after \
     the new one is up, and is signalled only then. If a worker of the new generation exits or \
     misses its --worker-watchdog meanwhile, it is rolled back: its workers get --signal-on-hup \
     (SIGKILL after --kill-old-timeout, or 5 seconds), the old generation serves on, nothing \
     retries it, and the reload's outcome is \"rolled back: generation N failed during the \
     bake: WHY\" in the log, {STATUS_FILE}.failed, --restart and --reload (exit 1), the \
     control socket's reply, the status and systemd's STATUS=. --reload, the control socket \
     and systemd's READY=1 answer when the bake ends (EXTEND_TIMEOUT_USEC= is sent for a bake \
     longer than the unit's TimeoutStartSec=); --status shows the new generation baking, \
     --check stays healthy. With --workers and --max-extra, the first slot replaced bakes alone \
     (a canary) before the others are replaced; a canary that fails is rolled back alone. A \
     bake is a --kill-old-delay that can roll back: given both, the delay counts from the end \
     of the bake. Use it where a version that starts fine may fail soon after (its first real \
     requests); both generations run meanwhile.",
    "With FileDescriptorStoreMax= in the unit (systemd then sets *FDSTORE*; before systemd 254, \
     set Environment=FDSTORE= to the same number too), start_server keeps every socket it binds \
     itself in systemd's file descriptor store, named after its --port or --path, and the next \
     start takes it back instead of binding (the sockets of a socket unit need nothing: systemd \
     holds them anyway). Stored sockets that no option names any more are removed from the \
     store; the file of a --path socket stays when start_server exits, for the next start. A \
     systemctl restart, a kill -9 of start_server under Restart=always, or a crash then refuses \
     no connection: clients wait in the listen backlog (--backlog bounds how many) until the new \
     workers accept. It does not save the requests that workers killed along with start_server \
     were serving (a graceful stop lets them finish), nor clients that stop waiting.",
    "A cgroup per generation: where start_server may manage its cgroup (--cgroups=auto, the \
     default: under systemd with Delegate=yes, as the shipped units set, or in a writable cgroup2 \
     directory of its own, a container's), it moves itself into a leaf, supervisor, and starts \
     each worker directly in gen-N (gen-N/slot-K with --workers; clone3 with \
     CLONE_INTO_CGROUP). What a worker starts stays in its generation whatever it does to its \
     environment, session or process group: once a generation has no worker left, what remains \
     gets SIGTERM, and cgroup.kill once --kill-old-timeout after the workers' signal (else 5 \
     seconds) has passed; a stop does the same for every generation; empty cgroups are removed. \
     --status and the metrics show each generation's and worker's cgroup, CPU time, memory \
     (memory.current where the memory controller is delegated, else the sum of the processes' \
     PSS) and processes. Elsewhere (no delegation, cgroup v1, the hierarchy's root, a cgroup \
     other processes share) start_server says why once, and attributes what workers leave \
     behind by SERVER_STARTER_GENERATION, process group and session, as before.",
    "Metrics: start_server --metrics prints, and --metrics-listen serves at GET /metrics over \
     HTTP (from its one event loop: at most 16 connections, 8 KiB requests, 10 seconds each; \
     other paths 404, other methods 405), the Prometheus text format: server_starter_info, \
     _start_time_seconds, _generation, _workers (by state), _crash_loop, _reloads_total (by \
     result), _reload_duration_seconds, _worker_starts_total, _worker_exits_total (by reason), \
     _crash_loops_total, _worker_memory_recycles_total, _upgrades_total (by result), \
     _log_lines_dropped_total, _notify_rejected_total and, for each live generation, _generation_cpu_seconds_total, _generation_memory_bytes, \
     _generation_processes and _generation_connections. The counts survive reloads and \
     upgrades in place. What a generation costs and holds is read at each scrape (and for \
     --status), never on a timer.",
    "systemd empties the store when the unit stops for good, and keeps it while the unit \
     restarts (FileDescriptorStorePreserve=restart, the default). FileDescriptorStorePreserve=yes \
     (systemd 254 and later) keeps it across systemctl stop and start too, as long as the unit \
     stays loaded (an enabled unit does): even a stopped service then queues its clients instead \
     of refusing them. systemctl clean --what=fdstore empties it.",
];

/// (what it does, the command lines).
const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "Run a PSGI application on port 8080:",
        &["start_server --port=8080 -- plackup -s Starlet app.psgi"],
    ),
    (
        "The same with Starman, whose graceful stop is SIGQUIT (SIGTERM stops it mid-request):",
        &[
            "start_server --port=8080 --signal-on-hup=QUIT --signal-on-term=QUIT \\",
            "    -- starman --workers=4 app.psgi",
        ],
    ),
    (
        "Listen on IPv6 loopback and on a unix socket, with pid and status files:",
        &[
            "start_server --port=[::1]:80 --path=/run/app.sock \\",
            "    --pid-file=app.pid --status-file=app.status -- ./server",
        ],
    ),
    (
        "Deploy a new version and wait until it serves, then stop:",
        &[
            "start_server --restart --pid-file=app.pid --status-file=app.status",
            "start_server --stop --pid-file=app.pid",
        ],
    ),
    (
        "Reload an unmodified Starlet in milliseconds, the old generation serving on 30 seconds \
         beside the new one, which is rolled back if it fails meanwhile:",
        &["start_server --port=8080 --ready=listening --bake=30 -- plackup -s Starlet app.psgi"],
    ),
    (
        "Look at it, reload it and wait for the outcome, probe its health:",
        &[
            "start_server --status --pid-file=app.pid",
            "start_server --reload --pid-file=app.pid",
            "start_server --check --control=/run/app/control",
        ],
    ),
    (
        "Serve the metrics to a Prometheus server on this host, and print them:",
        &[
            "start_server --port=8080 --metrics-listen=127.0.0.1:9100 -- ./server",
            "start_server --metrics --pid-file=app.pid",
        ],
    ),
    (
        "Run an instance of the template unit:",
        &[
            "printf 'APP_COMMAND=/usr/local/bin/app\\n' > /etc/server-starter/app.env",
            "systemctl enable --now server-starter@app.socket",
            "systemctl reload server-starter@app.service",
        ],
    ),
];

const SEE_ALSO: &str = "{Server::Starter}(3pm), {systemd.socket}(5), {systemd.service}(5), \
                        {sd_notify}(3), {sd_listen_fds}(3)";

/// Writes the whole man page for `command` (start_server's clap definition) to `out`.
pub fn render(command: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let mut headings: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_help_heading())
        .map(str::to_string)
        .collect();
    headings.dedup();
    let man = clap_mangen::Man::new(command)
        .title("START_SERVER")
        .section("1")
        .date(RELEASE_DATE)
        .source(concat!("server-starter ", env!("CARGO_PKG_VERSION")))
        .manual("User Commands");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let mut roff = options_grouped(&String::from_utf8_lossy(&page), &headings);
    roff.push_str(".SS \"Hidden from --help\"\n");
    tagged(&mut roff, &[UPGRADE_CHECK_OPTION, GENERATE_OPTION]);
    section(&mut roff, "EXIT STATUS");
    tagged(&mut roff, EXIT_STATUS);
    section(&mut roff, "ENVIRONMENT");
    tagged(&mut roff, ENVIRONMENT);
    roff.push_str(
        ".PP\nThe worker gets start_server's environment, the variables of the envdir, \
                   and:\n",
    );
    tagged(&mut roff, WORKER_ENVIRONMENT);
    section(&mut roff, "SIGNALS");
    tagged(&mut roff, SIGNALS);
    section(&mut roff, "FILES");
    tagged(&mut roff, FILES);
    section(&mut roff, "NOTES");
    for (i, paragraph) in NOTES.iter().enumerate() {
        paragraph_break(&mut roff, i);
        text(&mut roff, paragraph);
    }
    section(&mut roff, "EXAMPLES");
    for (i, (what, lines)) in EXAMPLES.iter().enumerate() {
        paragraph_break(&mut roff, i);
        text(&mut roff, what);
        roff.push_str(".PP\n.RS 4\n.nf\n");
        for line in *lines {
            roff.push_str(&escape(line));
            roff.push('\n');
        }
        roff.push_str(".fi\n.RE\n");
    }
    section(&mut roff, "SEE ALSO");
    text(&mut roff, SEE_ALSO);
    out.write_all(wrap(&roff).as_bytes())
}

/// clap_mangen writes each help heading of the options (`Sockets`, ...) as a section of its own
/// (`.SH SOCKETS`); in a man page they are subsections of OPTIONS (`.SS Sockets`).
fn options_grouped(roff: &str, headings: &[String]) -> String {
    let mut in_options = false;
    let mut out = String::with_capacity(roff.len());
    for line in roff.lines() {
        if let Some(name) = line.strip_prefix(".SH ") {
            let name = name.trim_matches('"');
            if name == "OPTIONS" {
                in_options = true;
            } else if in_options {
                let heading = headings.iter().find(|h| h.to_uppercase() == name);
                if let Some(heading) = heading {
                    out.push_str(&format!(".SS \"{heading}\"\n"));
                    continue;
                }
                in_options = false;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A `.PP` before every paragraph but the first of a section (where it is implied).
fn paragraph_break(roff: &mut String, index: usize) {
    if index > 0 {
        roff.push_str(".PP\n");
    }
}

fn section(roff: &mut String, name: &str) {
    roff.push_str(&format!(".SH \"{name}\"\n"));
}

/// A list of `.TP` entries: the tag on its own line, then its text.
fn tagged(roff: &mut String, entries: &[(&str, &str)]) {
    for (tag, description) in entries {
        roff.push_str(".TP\n");
        roff.push_str(&marked(tag));
        roff.push('\n');
        text(roff, description);
    }
}

fn text(roff: &mut String, text: &str) {
    roff.push_str(&marked(text));
    roff.push('\n');
}

/// Escapes `text` for roff and turns `*bold*` and `{italic}` into font changes.
fn marked(text: &str) -> String {
    let mut out = String::new();
    let mut bold = false;
    for c in text.chars() {
        match c {
            '*' => {
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            '{' => out.push_str("\\fI"),
            '}' => out.push_str("\\fR"),
            '-' => out.push_str("\\-"),
            '\\' => out.push_str("\\e"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes a literal line (a command in EXAMPLES).
fn escape(line: &str) -> String {
    line.replace('\\', "\\e").replace('-', "\\-")
}

/// Breaks text lines longer than 80 bytes at spaces (the same text when filled), leaving alone
/// control lines, `.TP` tags and unfilled (`.nf`) blocks. Keeps linters quiet and diffs small.
fn wrap(roff: &str) -> String {
    const WIDTH: usize = 80;
    let mut out = String::new();
    let mut filled = true;
    let mut tag_next = false;
    for line in roff.lines() {
        let control = line.starts_with('.') || line.starts_with('\'');
        if control {
            filled = match line {
                ".nf" => false,
                ".fi" => true,
                _ => filled,
            };
        }
        if control || !filled || tag_next || line.len() <= WIDTH {
            tag_next = line == ".TP";
            out.push_str(line.trim_end());
            out.push('\n');
            continue;
        }
        let mut current = String::new();
        for word in line.split(' ').filter(|w| !w.is_empty()) {
            if !current.is_empty() && current.len() + 1 + word.len() > WIDTH {
                out.push_str(&current);
                out.push('\n');
                current.clear();
            }
            if current.is_empty() && (word.starts_with('.') || word.starts_with('\'')) {
                current.push_str("\\&");
            }
            if !current.is_empty() && !current.ends_with("\\&") {
                current.push(' ');
            }
            current.push_str(word);
        }
        out.push_str(&current);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_become_fonts_and_dashes_are_escaped() {
        assert_eq!(marked("*--port* {N}"), "\\fB\\-\\-port\\fR \\fIN\\fR");
        assert_eq!(marked("a\\b"), "a\\eb");
    }

    #[test]
    fn long_text_lines_are_broken_at_spaces_and_nothing_else() {
        // 16 words fill 79 bytes: the 17th starts a line, where a leading dot needs escaping.
        let long = format!("{}.dot {}", "word ".repeat(16), "word ".repeat(20));
        let roff = format!(".TP\n{long}\n{long}\n.nf\n{long}\n.fi\n");
        let out = wrap(&roff);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[1], long.trim_end(), "a .TP tag stays one line");
        assert_eq!(
            lines[lines.len() - 2],
            long.trim_end(),
            "unfilled text stays"
        );
        let wrapped = &lines[2..lines.len() - 3];
        assert!(wrapped.len() > 1 && wrapped.iter().all(|l| l.len() <= 80));
        assert_eq!(wrapped[1].split(' ').next(), Some("\\&.dot"), "{wrapped:?}");
        assert_eq!(
            wrapped.join(" ").replace("\\&", ""),
            long.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
}
