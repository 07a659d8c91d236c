"""`Pipeline`: the user's object — tokenizer + generator + class names in one directory.

    pipe = Pipeline.from_pretrained()                      # the built-in model; or a directory, or a Hub id
    images = pipe.generate(["alpine", "coast"], seed=0)    # [B,3,H,W] in [-1,1]
    strip = pipe.panorama("coast", width=8192)             # uint8 [H, 8192, 3], bounded memory
    pipe.save_pretrained("my_model")

A pipeline directory holds one sub-folder per component, each a model directory of its own (config.json +
model.safetensors) that its class loads alone, and a config.json that names the components' classes and the
class names:

    my_model/config.json               {"tokenizer": "ColumnTokenizer", "generator": "EquivariantGenerator",
                                        "classes": [...]}
    my_model/tokenizer/                ColumnTokenizer.from_pretrained("my_model/tokenizer")
    my_model/generator/                EquivariantGenerator.from_pretrained("my_model/generator")
    my_model/distilled-4/              a distilled few-step flow head (eqgen distill head; --solver distilled)

An `eqgen train generator` run is one. Directories written before the sub-folders (the shipped model, earlier
runs) keep both configs in config.json ({"tokenizer": {...}, "generator": {...}, "classes": [...]}) beside
`tokenizer.safetensors` and `generator.safetensors`; they load as they are.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import CONFIG, WEIGHTS, model_files
from .configs import from_dict, to_dict
from .errors import EqgenError
from .distill import load_students, student_files
from .files import JsonObject, commit_files, json_bytes, load_json
from .generator import EquivariantGenerator, GeneratorConfig
from .imageio import to_uint8
from .sampling import PANORAMA, SamplingOptions, TokenSampler, generate_tokens
from .tokenizer import ColumnTokenizer, TokenizerConfig
from .devices import resolve_device

BUILTIN = Path(__file__).parent / "assets" / "builtin"
# Outpainting: the given image's last column cross-fades into this many decoded columns. The decoder's output
# starts from its reconstruction of the image, not the image, so with no blend the join jumps 4.6× as much as
# its neighbouring columns; with 4 columns 0.84×, a render's own join 1.11× (benchmarks/bench_outpainting.py).
SEAM_BLEND = 4
COMPONENTS = {"tokenizer": ColumnTokenizer, "generator": EquivariantGenerator}  # sub-folder -> class


class Pipeline:
    def __init__(self, tokenizer: ColumnTokenizer, generator: EquivariantGenerator, classes: Sequence[str]):
        check_parts(tokenizer.config, generator.config, classes)
        self.tokenizer, self.generator, self.classes = tokenizer.eval(), generator.eval(), list(classes)

    # -- loading and saving -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path = "builtin", device: str | torch.device = "cpu") -> "Pipeline":
        """A pipeline directory (either layout), "builtin" (the shipped model) or a Hub id."""
        directory = _resolve(path)
        config = read_config(directory)
        tokenizer, generator = (_component(directory, config, name) for name in COMPONENTS)
        check_parts(tokenizer.config, generator.config, config["classes"], source=f"{directory / CONFIG}: ")
        generator = generator.load()
        generator.students = load_students(directory, generator)
        return cls(tokenizer.load(), generator, config["classes"]).to(device)  # the weights once all fit

    def save_pretrained(self, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
        """Write the pipeline directory, config.json last; dtype=torch.float16 halves its size."""
        files = {}
        for name, module in (("tokenizer", self.tokenizer), ("generator", self.generator)):
            files |= model_files(to_dict(module.config), module.state_dict(), folder=name, dtype=dtype)
        files |= student_files(self.generator.students, dtype)
        commit_files(path, {**files, CONFIG: json_bytes(pipeline_config(self.classes))})

    def to(self, device: str | torch.device) -> "Pipeline":
        device = resolve_device(str(device))  # "auto" allowed; an absent CUDA is one line, not a traceback
        self.tokenizer.to(device)
        self.generator.to(device)
        for head in self.generator.students.values():
            head.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def token_width(self) -> int:
        return self.tokenizer.token_width

    @property
    def height(self) -> int:
        return self.tokenizer.config.height

    # -- classes and tokens -------------------------------------------------------------------------------

    def labels(self, classes: Sequence[str | int] | str | int) -> torch.Tensor:
        """Class names or indices ("3" too) -> labels [B], with a clear error for anything else."""
        if isinstance(classes, (str, int)):
            classes = [classes]
        labels = []
        for c in classes:
            if isinstance(c, str) and c in self.classes:
                labels.append(self.classes.index(c))
                continue
            if isinstance(c, str) and not (c.isascii() and c.isdecimal()):  # "²" is a digit, not a number
                raise EqgenError(f"unknown class {c!r}; this model knows: {', '.join(self.classes)}")
            if not 0 <= int(c) < len(self.classes):
                raise EqgenError(f"class index {c} outside 0..{len(self.classes) - 1}")
            labels.append(int(c))
        return torch.tensor(labels, device=self.device)

    def tokens_for_width(self, width: int) -> int:
        if width % self.token_width or width // self.token_width < 2:
            raise EqgenError(f"width {width} must be a multiple of {self.token_width} px and at least "
                             f"{2 * self.token_width} px")
        return width // self.token_width

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B,3,H,W] in [-1,1] -> generator tokens (latent scale applied)."""
        with torch.no_grad():
            return self.tokenizer.encode(images.to(self.device)) * self.tokenizer.config.latent_scale

    def decode(self, tokens: torch.Tensor, batch: int = 32) -> torch.Tensor:
        """Generator tokens [B, N, C] -> images [B,3,H,N·f] in [-1, 1], `batch` images at a time (the paper
        tokenizer's activations at batch 256 outgrow 32-bit indexing in the reflect padding)."""
        with torch.no_grad():
            scale = self.tokenizer.config.latent_scale
            return torch.cat([self.tokenizer.decode(chunk / scale) for chunk in tokens.split(batch)]).clamp(-1, 1)

    def compile(self) -> "Pipeline":
        """torch.compile the flow head's velocity (and the distilled heads'), which sampling calls once per head
        evaluation: worth its compile time (tens of seconds) for long runs such as panoramas and evaluations."""
        for head in (self.generator.head, *self.generator.students.values()):
            head.velocity = torch.compile(head.velocity, dynamic=False)
        return self

    def sampler(self, classes, num_tokens: int, options: SamplingOptions = SamplingOptions(),
                **changes) -> TokenSampler:
        """A `TokenSampler` for interactive work: step, roll back, continue (see eqgen.sampling). `options`
        (eqgen's defaults) or keywords changing single fields: seed, cfg, cfg_schedule, temperature, steps,
        solver, rho."""
        return TokenSampler(self.generator, self.labels(classes), num_tokens, options.replace(**changes))

    # -- generation ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, classes, num_tokens: int | None = None, *, options: SamplingOptions = SamplingOptions(),
                 rng=None, progress: bool = False, **changes) -> torch.Tensor:
        """One image per entry of `classes`: [B,3,H,num_tokens·f] in [-1, 1] (default: the training length).
        `options` (eqgen's defaults), or keywords changing single fields: `generate(labels, seed=1, cfg=2)`.
        rng: one seed (or torch.Generator) per image instead of `options.seed`: each image then depends on its
        own seed only, whatever batch it is made in."""
        num_tokens = num_tokens or self.generator.config.train_tokens
        tokens = generate_tokens(self.generator, self.labels(classes), num_tokens, options.replace(**changes),
                                 rng=rng, progress=progress)
        return self.decode(tokens)

    @torch.no_grad()
    def panorama(self, cls: str | int, width: int, *, left: torch.Tensor | None = None, tile: int = 64,
                 overlap: int = 8, blend: int = SEAM_BLEND, progress: bool = True,
                 options: SamplingOptions = PANORAMA, **changes) -> np.ndarray:
        """One very wide image, uint8 [H, width, 3]: tokens generated one by one with the windowed cache,
        then decoded in overlapping tiles, so memory does not grow with the width beyond the uint8 result.

        left: an image [3, H, w] in [-1, 1] to continue to the right (outpainting; w a multiple of the token
        width, see `eqgen.imageio.fit_image`). Its pixels are kept exactly: they replace the decoder's
        reconstruction of its tokens, and the decoded continuation starts where those tokens end, its first
        `blend` columns cross-faded from the image's last column (`join`). Options and keyword changes as for
        `panorama_tokens`."""
        _check_tiles(tile, overlap)  # before the tokens are generated, not after
        tokens = self.panorama_tokens(cls, width, left=left, progress=progress, options=options.replace(**changes))
        canvas = np.empty((self.height, width, 3), np.uint8)
        for x0, pixels in self.decode_tiles(tokens, tile, overlap, progress):
            canvas[:, x0:x0 + pixels.shape[1]] = pixels
        if left is not None:
            canvas[:, :left.shape[-1]] = to_uint8(left)
            join(canvas, left.shape[-1], blend)
        return canvas

    @torch.no_grad()
    def panorama_tokens(self, cls: str | int, width: int, *, left: torch.Tensor | None = None, progress: bool = False,
                        options: SamplingOptions = PANORAMA, **changes) -> torch.Tensor:
        """The generator tokens [1, width/f, C] of a panorama.

        left: an image [3, H, w] in [-1, 1], w a multiple of the token width, to continue to the right: it is
        encoded and its tokens start the sequence. `options` default to `sampling.PANORAMA` (constant guidance);
        keywords change single fields."""
        num_tokens = self.tokens_for_width(width)
        prefix = None
        if left is not None:
            self._check_left(left, width)
            prefix = self.encode(left[None])
        sampler = self.sampler([cls], num_tokens, options.replace(**changes))
        sampler.start(prefix)
        for _ in tqdm(range(sampler.length, num_tokens), disable=not progress, desc="tokens"):
            sampler.step()
        return sampler.tokens

    def _check_left(self, left: torch.Tensor, width: int) -> None:
        f = self.token_width
        if left.ndim != 3 or left.shape[0] != 3 or left.shape[1] != self.height or left.shape[2] % f:
            raise EqgenError(f"the left image must be [3, {self.height}, w] with w a multiple of {f} px, got "
                             f"{list(left.shape)} (eqgen.imageio.fit_image fits any image)")
        if left.shape[2] < 2 * f or left.shape[2] >= width:
            raise EqgenError(f"the left image must be at least {2 * f} px wide and narrower than the panorama "
                             f"({width} px), got {left.shape[2]} px")

    def decode_tiles(self, tokens: torch.Tensor, tile: int = 64, overlap: int = 8,
                     progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Decode tokens [1, N, C] in tiles of `tile` tokens that overlap by `overlap`, cross-fading each
        overlap linearly; yields (first pixel column, uint8 [H, w, 3]) pieces left to right. Only one tile's
        floats are held at a time, whatever N is."""
        N, f = tokens.shape[1], self.token_width
        _check_tiles(tile, overlap)
        starts = list(range(0, max(N - tile, 0) + 1, tile - overlap))
        if starts[-1] + tile < N:
            starts.append(N - tile)
        done, pending, weights = 0, None, None  # pending: weighted sums of the columns from `done` on
        for i, a in enumerate(tqdm(starts, disable=not progress, desc="decode")):
            b = min(a + tile, N)
            pixels = self.decode(tokens[:, a:b])[0].float()  # [3, H, (b−a)·f]
            w = torch.ones((b - a) * f)
            ramp = (torch.arange(overlap * f) + 0.5) / (overlap * f)
            if a > 0:
                w[: overlap * f] = ramp
            if b < N:
                w[-overlap * f:] = ramp.flip(0)
            if pending is None:
                pending, weights = pixels * w, w.clone()
            else:  # pending starts where this tile starts: widen it to the tile's end and add the tile
                extra = (b - a) * f - pending.shape[-1]
                pending = torch.cat([pending, pending.new_zeros(*pending.shape[:2], extra)], dim=-1) + pixels * w
                weights = torch.cat([weights, weights.new_zeros(extra)]) + w
            final = (starts[i + 1] * f if i + 1 < len(starts) else N * f) - done
            yield done, to_uint8(pending[..., :final] / weights[:final])
            pending, weights, done = pending[..., final:], weights[final:], done + final


def check_parts(tokenizer: TokenizerConfig, generator: GeneratorConfig, classes, source: str = "") -> None:
    """A pipeline's parts must fit together: distinct, non-empty class names (any Unicode), one per generator
    class, and tokens of the width the generator models. `source` ("path/config.json: ") prefixes the errors."""
    if not isinstance(classes, (list, tuple)):
        raise EqgenError(f"{source}classes must be a list of class names, got {classes!r:.40}")
    for i, name in enumerate(classes):
        if not isinstance(name, str) or not name.strip():
            raise EqgenError(f"{source}class name {i} must be a non-empty string, got {name!r:.40}")
    repeated = sorted(name for name, n in Counter(classes).items() if n > 1)
    if repeated:
        raise EqgenError(f"{source}the class names must be distinct; repeated: {', '.join(map(repr, repeated))}")
    if len(classes) != generator.num_classes:
        raise EqgenError(f"{source}{len(classes)} class names for a generator of {generator.num_classes} classes")
    if tokenizer.embed_dim != generator.token_dim:
        raise EqgenError(f"{source}the tokenizer makes {tokenizer.embed_dim}-channel tokens, the generator "
                         f"models {generator.token_dim}")


def pipeline_config(classes: Sequence[str]) -> dict[str, Any]:
    """The config.json of a pipeline directory: the class of each component's sub-folder, and the class names."""
    return {**{name: module_class.__name__ for name, module_class in COMPONENTS.items()}, "classes": list(classes)}


def read_config(directory: Path) -> JsonObject:
    """The config.json of a pipeline directory, with the keys every pipeline has."""
    file = directory / CONFIG
    config = load_json(file)
    missing = [key for key in (*COMPONENTS, "classes") if key not in config]
    if missing:
        raise EqgenError(f"{directory} is not an eqgen pipeline ({file} lacks {', '.join(missing)})")
    return config


class _Component(NamedTuple):
    """A component of a pipeline directory, its config read and checked, its weights not yet loaded."""
    module_class: type
    config: Any
    weights: Path
    source: str       # where the config is, as errors name it ("path/config.json: generator: ")
    verdict: str      # what weights that do not fit the config are told

    def load(self) -> torch.nn.Module:
        return self.module_class.from_weights(self.config, self.weights, self.source, self.verdict)


def _component(directory: Path, config: JsonObject, name: str) -> _Component:
    """Component `name` of the pipeline directory whose config.json is `config`: its sub-folder, which
    config.json names by class, or, in directories written before the sub-folders, its section of config.json
    and NAME.safetensors beside it."""
    module_class, value, file = COMPONENTS[name], config[name], directory / CONFIG
    if value == module_class.__name__:
        part = directory / name / CONFIG
        return _Component(module_class, from_dict(module_class.config_class, load_json(part)), part.parent / WEIGHTS,
                          f"{part}: ", "does not hold weights for its config.json")
    if isinstance(value, str):
        raise EqgenError(f"{file}: {name} must be {module_class.__name__!r} (the class of its sub-folder) or "
                         f"its config, got {value[:40]!r}")
    return _Component(module_class, from_dict(module_class.config_class, value, str(file)),
                      directory / f"{name}.safetensors", f"{file}: {name}: ",
                      f"does not fit the {name} config in {file}")


def load_tokenizer(path: str | Path) -> ColumnTokenizer:
    """A tokenizer directory, or the tokenizer of a pipeline directory (either layout, "builtin", a Hub id)."""
    directory = _resolve(path)
    config = load_json(directory / CONFIG)
    if "tokenizer" not in config:   # a tokenizer directory of its own
        return ColumnTokenizer.from_pretrained(directory)
    return _component(directory, config, "tokenizer").load()


def _check_tiles(tile: int, overlap: int) -> None:
    if overlap < 1 or tile < 2 * overlap + 2:
        raise EqgenError(f"decode tiles need overlap ≥ 1 and tile ≥ 2·overlap + 2 (got tile {tile}, "
                         f"overlap {overlap})")


def join(canvas: np.ndarray, x: int, columns: int) -> np.ndarray:
    """Cross-fade column x − 1 of a uint8 [H, W, 3] image into the `columns` columns from x on, in place: the
    weight of the columns' own pixels rises linearly, 1/(columns+1) … columns/(columns+1)."""
    n = min(columns, canvas.shape[1] - x)
    own = (np.arange(1, n + 1) / (columns + 1))[None, :, None]
    canvas[:, x:x + n] = ((1 - own) * canvas[:, x - 1:x] + own * canvas[:, x:x + n]).round().astype(np.uint8)
    return canvas


def _resolve(path: str | Path) -> Path:
    if str(path) == "builtin":
        if not (BUILTIN / CONFIG).exists():
            raise EqgenError("this installation has no built-in model; pass --model DIR")
        return BUILTIN
    directory = Path(path)
    if directory.is_dir():
        return directory
    if not directory.exists() and str(path).count("/") == 1 and not str(path).startswith((".", "/")):
        try:  # a Hub repo id such as "user/eqgen-landscapes"
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(str(path)))
        except Exception as err:  # offline, unknown repo, no permission: one line, not a traceback
            raise EqgenError(f"{path} is not a local directory and could not be fetched from the Hub "
                             f"({type(err).__name__})") from None
    raise EqgenError(f"model directory {path} not found")
