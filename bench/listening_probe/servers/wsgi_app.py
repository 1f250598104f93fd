"""A minimal WSGI app for gunicorn."""
import os


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"pid={os.getpid()}\n".encode()]
