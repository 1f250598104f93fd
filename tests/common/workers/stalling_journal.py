#!/usr/bin/env python3
import os, socket, subprocess, sys, time
tmp, command = sys.argv[1], sys.argv[2:]
os.makedirs("/run/systemd/journal", exist_ok=True)
journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
journal.bind("/run/systemd/journal/socket")
journal.settimeout(0.05)
err = open(os.path.join(tmp, "stderr"), "w")
st = os.fstat(err.fileno())
env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
server = subprocess.Popen(command, stderr=err, env=env)
with open(os.path.join(tmp, "pid.tmp"), "w") as f:
    f.write(str(server.pid))
os.rename(os.path.join(tmp, "pid.tmp"), os.path.join(tmp, "pid"))
out = open(os.path.join(tmp, "journal"), "a")
def fields(datagram):
    # journald's native protocol: KEY=VALUE lines, or KEY, newline, 64-bit length, VALUE.
    out, i = [], 0
    while i < len(datagram):
        nl = datagram.find(b"\n", i)
        if nl < 0:
            break
        line = datagram[i:nl]
        if b"=" in line:
            out.append(line.decode(errors="replace"))
            i = nl + 1
        else:
            size = int.from_bytes(datagram[nl + 1:nl + 9], "little")
            value = datagram[nl + 9:nl + 9 + size].decode(errors="replace")
            out.append(line.decode(errors="replace") + "=" + value)
            i = nl + 9 + size + 1
    return "\n".join(out)
def read_one():
    try:
        entry = journal.recv(65536)
    except socket.timeout:
        return
    text = fields(entry)
    if "=" in text:
        out.write(text + "\n--\n")
        out.flush()
while not os.path.exists(os.path.join(tmp, "stall")):
    read_one()
# Stuck: the queue is filled until a fresh sender cannot add a single datagram.
fillers = []
while True:
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    filler.setblocking(False)
    fillers.append(filler)
    sent = 0
    try:
        while True:
            filler.sendto(b"x", "/run/systemd/journal/socket")
            sent += 1
    except BlockingIOError:
        pass
    if sent == 0:
        break
open(os.path.join(tmp, "stalled"), "w").close()
while not os.path.exists(os.path.join(tmp, "drain")):
    time.sleep(0.05)
while server.poll() is None:
    read_one()
