"""Shared helpers of the benchmarks: builds, ports, starting either start_server, waiting for a
generation, reading /proc."""
import os, resource, signal, socket, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(ROOT, "target/release/start_server")
PERL = "/usr/bin/start_server"
HELLO = os.path.join(ROOT, "target/release/examples/hello_worker")
IMPLEMENTATIONS = (("ours", OURS), ("perl", PERL))
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "start_server",
                    "--example", "hello_worker"], cwd=ROOT, check=True)
    if not os.path.exists(PERL):
        raise SystemExit(f"{PERL} is missing: apt-get install libserver-starter-perl")


def ensure_package(command, package):
    if subprocess.run(["sh", "-c", f"command -v {command}"], capture_output=True).returncode:
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                       stdout=subprocess.DEVNULL)


def free_ports(count):
    """Ports that were free a moment ago (held together so they are distinct)."""
    held = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
    ports = [s.getsockname()[1] for s in held]
    for s in held:
        s.close()
    return ports


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    """One start_server (ours or Perl's) with a status file, in a temporary directory."""

    def __init__(self, binary, ports, worker=HELLO, options=()):
        self.dir = tempfile.mkdtemp(prefix="ss-bench-")
        self.status = os.path.join(self.dir, "status")
        args = [binary] + [f"--port=127.0.0.1:{p}" for p in ports]
        args += [f"--status-file={self.status}", *options, "--", worker]
        self.started = time.monotonic()
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=raise_fd_limit)
        self.pid = self.process.pid

    def generations(self):
        try:
            with open(self.status) as f:
                return [tuple(int(x) for x in line.split(":")) for line in f if ":" in line]
        except (FileNotFoundError, ValueError):
            return []

    def wait_sole(self, generation, limit=120):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            entries = self.generations()
            if len(entries) == 1 and entries[0][0] >= generation:
                return entries[0]
            time.sleep(0.0005)
        raise TimeoutError(f"generation {generation} never took over")

    def reload(self, generation):
        """SIGHUP, then wait for the generation after `generation` to be alone. Perl's
        start_server can miss a HUP that arrives just before it blocks in wait() (it then
        notices it only at the next event): after 5 s the HUP is sent again. Returns the new
        generation and how many HUPs had to be repeated."""
        repeated = 0
        while True:
            self.signal(signal.SIGHUP)
            try:
                return self.wait_sole(generation + 1, limit=5)[0], repeated
            except TimeoutError:
                repeated += 1
                if repeated > 5:
                    raise SystemExit(f"generation {generation + 1} never took over")

    def signal(self, sig):
        self.process.send_signal(sig)

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def http_get(port, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.decode()


def wait_serving(port, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if http_get(port).startswith("HTTP/1.0 200"):
                return
        except OSError:
            pass
        time.sleep(0.0005)
    raise SystemExit(f"nothing serves port {port}")


def summary(values, unit="", scale=1.0, digits=1):
    values = sorted(v * scale for v in values)
    median = values[len(values) // 2] if len(values) % 2 else \
        (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
    return f"{median:.{digits}f}{unit} [{values[0]:.{digits}f}-{values[-1]:.{digits}f}]"


def median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
