"""The interactive web page (`eqgen app`)."""
from .server import App, serve

__all__ = ["App", "serve"]
