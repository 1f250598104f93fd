#!/usr/bin/env python3
# Written for systemd socket activation only: LISTEN_PID must be this very process.
import os, signal, socket, sys
if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
    sys.exit("LISTEN_PID=%s LISTEN_FDS=%s, pid %d" % (
        os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS"), os.getpid()))
assert os.environ["LISTEN_FDNAMES"] == "127.0.0.1_" + os.environ["PORT"], os.environ["LISTEN_FDNAMES"]
listener = socket.socket(fileno=3)
gen = os.environ.get("SERVER_STARTER_GENERATION")
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
listener.settimeout(0.05)
while not stop:
    try:
        conn, _ = listener.accept()
    except (socket.timeout, BlockingIOError, InterruptedError):
        continue
    conn.settimeout(10)
    conn.setblocking(True)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    body = ("pid=%d gen=%s\n" % (os.getpid(), gen)).encode()
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    conn.close()
