"""Training data: the built-in procedural landscapes and image folders."""
from .landscapes import CLASSES, class_index, iterate_landscapes, render, render_batch
from .folders import FolderIndex, ImageFolder, describe, index_folder, to_rgb

__all__ = ["CLASSES", "class_index", "iterate_landscapes", "render", "render_batch",
           "FolderIndex", "ImageFolder", "describe", "index_folder", "to_rgb"]
