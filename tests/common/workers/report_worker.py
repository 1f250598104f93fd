#!/usr/bin/env python3
import json, os, signal, socket, time
sockets = {}
for entry in filter(None, os.environ.get("SERVER_STARTER_PORT", "").split(";")):
    key, fd = entry.split("=", 1)
    s = socket.socket(fileno=int(fd))
    sockets[key] = {"fd": int(fd), "family": s.family.name, "type": s.type.name,
                    "name": str(s.getsockname())}
    s.detach()
report = {"env": dict(os.environ), "sockets": sockets, "cwd": os.getcwd(), "pid": os.getpid()}
tmp = os.environ["REPORT"] + ".tmp"
with open(tmp, "w") as f:
    json.dump(report, f)
os.rename(tmp, os.environ["REPORT"])
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
while True:
    time.sleep(3600)
