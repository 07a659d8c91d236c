"""Official checkpoints -> eqgen."""
from .generator import convert_generator_state_dict, load_official_generator
from .tokenizer import convert_tokenizer_state_dict, load_official_tokenizer

__all__ = ["convert_generator_state_dict", "load_official_generator", "convert_tokenizer_state_dict",
           "load_official_tokenizer"]
