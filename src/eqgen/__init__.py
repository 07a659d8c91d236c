"""eqgen: Equivariant Image Modeling in PyTorch."""
from .generator import EquivariantGenerator, GeneratorConfig
from .pipeline import Pipeline
from .tokenizer import ColumnTokenizer, TokenizerConfig

__all__ = ["ColumnTokenizer", "EquivariantGenerator", "GeneratorConfig", "Pipeline", "TokenizerConfig"]
__version__ = "0.1.0"
