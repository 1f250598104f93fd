#!/usr/bin/env python3
import os, select, signal, socket
fd = int(os.environ["SERVER_STARTER_PORT"].split(";")[0].split("=")[1])
listener = socket.socket(fileno=fd)
listener.setblocking(False)
held, stopping = [], False
def on_term(signum, frame):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, on_term)
# A signal wakes the select below (a handler alone would not: select is retried after it).
wake, woken = os.pipe()
os.set_blocking(woken, False)
signal.set_wakeup_fd(woken)
target = os.environ["NOTIFY_SOCKET"]
if target.startswith("@"):
    target = "\0" + target[1:]
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", target)
while not (stopping and not held and os.path.exists(os.environ.get("RELEASE", "/"))):
    watched = [wake] + held + ([] if stopping else [listener])
    ready, _, _ = select.select(watched, [], [], 0.1 if stopping else None)
    for s in ready:
        if s == wake:
            os.read(wake, 64)
        elif s is listener:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            conn.sendall(b"hello\n")
            held.append(conn)
        elif not s.recv(4096):
            s.close()
            held.remove(s)
