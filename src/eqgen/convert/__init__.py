"""Official checkpoints -> eqgen."""
from __future__ import annotations

from pathlib import Path

from ..errors import EqgenError
from .generator import convert_generator_state_dict, load_official_generator
from .tokenizer import convert_tokenizer_state_dict, load_official_tokenizer

__all__ = ["convert_generator_state_dict", "load_official_generator", "convert_tokenizer_state_dict",
           "load_official_tokenizer", "convert_official"]


def convert_official(out: str | Path, tokenizer: str | None = None, config: str | None = None,
                     generator: str | None = None, classes: str | None = None, trust_pickle: bool = False) -> None:
    """`eqgen convert official`: a tokenizer directory (tokenizer alone), a generator directory (generator
    alone) or, with both, a pipeline directory in `out`. classes: a text file, one class name per line
    (default: class0, class1, ...)."""
    from ..pipeline import Pipeline, check_parts

    if not (tokenizer or generator):
        raise EqgenError("give --tokenizer, --generator, or both")
    tok = load_official_tokenizer(tokenizer, config, trust_pickle=trust_pickle) if tokenizer else None
    gen = load_official_generator(generator) if generator else None
    if tok is None or gen is None:
        (tok or gen).save_pretrained(out)
        return
    names = [f"class{i}" for i in range(gen.config.num_classes)]
    if classes:
        try:
            names = [line.strip() for line in Path(classes).read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise EqgenError(f"cannot read {classes}: {getattr(err, 'strerror', None) or err}") from None
        check_parts(tok.config, gen.config, names, source=f"{classes}: ")
    Pipeline(tok, gen, names).save_pretrained(out)
