"""An ASGI app for uvicorn answering as the HTTP worker does: pid=PID gen=GEN."""
import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = ("pid=%d gen=%s\n" % (os.getpid(), os.environ.get("SERVER_STARTER_GENERATION"))).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
