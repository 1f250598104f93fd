#!/usr/bin/env python3
import os, select, signal, socket, sys
socks = []
for entry in filter(None, os.environ.get("SERVER_STARTER_PORT", "").split(";")):
    key, fd = entry.split("=", 1)
    s = socket.socket(fileno=int(fd))
    if s.type == socket.SOCK_STREAM:
        s.setblocking(False)
        socks.append(s)
gen = os.environ.get("SERVER_STARTER_GENERATION")
if os.environ.get("SEND_READY") and os.environ.get("NOTIFY_SOCKET"):
    target = os.environ["NOTIFY_SOCKET"]
    if target.startswith("@"):
        target = "\0" + target[1:]
    note = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    note.sendto(b"READY=1\nSTATUS=" + os.environb.get(b"STATUS_TEXT", b"python worker up"), target)
busy = False
stop = False
class Stop(Exception):
    pass
def on_signal(signum, frame):
    global stop
    log = os.environ.get("SIGNAL_LOG")
    if log:
        with open(log, "a") as f:
            f.write("%d %s\n" % (os.getpid(), signal.Signals(signum).name))
    stop = True
    if not busy:
        raise Stop()
for name in os.environ.get("STOP_SIGNALS", "SIGTERM").split(","):
    signal.signal(getattr(signal, name), on_signal)
# EXIT_AFTER=S: exits with status 1 S seconds after it started, between two requests (a server
# that fails a while after it came up).
failing = False
def on_alarm(signum, frame):
    global stop, failing
    failing = stop = True
    if not busy:
        raise Stop()
if os.environ.get("EXIT_AFTER"):
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(os.environ["EXIT_AFTER"]))
try:
    while True:
        ready, _, _ = select.select(socks, [], [])
        for s in ready:
            busy = True
            try:
                conn, _ = s.accept()
            except BlockingIOError:
                busy = False
                continue
            conn.setblocking(True)
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            body = ("pid=%d gen=%s\n" % (os.getpid(), gen)).encode()
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            conn.close()
            busy = False
            if stop:
                raise Stop()
except Stop:
    pass
if failing:
    sys.exit(1)
