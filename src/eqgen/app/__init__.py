"""The interactive web page (`eqgen app`)."""
from .server import App, Limits, Server, serve

__all__ = ["App", "Limits", "Server", "serve"]
