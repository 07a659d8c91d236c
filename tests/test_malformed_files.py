"""Every file eqgen reads, malformed, is refused in one line that names the file: pipeline and model configs,
class lists, safetensors weights, token-cache shards, official YAML configs and checkpoints. Each case goes
through a real entry point (`Pipeline.from_pretrained`, `TokenCache`, the official loaders, or `eqgen.cli.main`
in-process, exit status 2 and one `eqgen: error:` line on stderr)."""
import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline, save_flat_pipeline
from safetensors.torch import load_file, save_file

from eqgen import Pipeline
from eqgen.cli import main
from eqgen.configs import from_preset
from eqgen.convert import load_official_generator, load_official_tokenizer
from eqgen.data.sources import ImageSource
from eqgen.errors import EqgenError
from eqgen.token_cache import TokenCache, build_token_cache
from eqgen.tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/official"
OFFICIAL_TOKENIZER = FIXTURES / "tokenizer_tiny_state_dict_ema_only.safetensors"
OFFICIAL_GENERATOR = FIXTURES / "generator_tiny_state_dict.safetensors"
official = pytest.mark.skipif(not FIXTURES.is_dir(), reason="official fixtures (../shared/fixtures/official) absent")
CACHE_IMAGES = 4


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The valid files the cases damage: a tiny pipeline, a tokenizer directory and a token cache of it."""
    root = tmp_path_factory.mktemp("valid")
    save_flat_pipeline(make_tiny_pipeline(), root / "pipe")   # the layout of the shipped model and earlier runs
    make_tiny_pipeline().save_pretrained(root / "parts")       # today's: one sub-folder per component
    torch.manual_seed(0)
    tokenizer = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, "tiny"))
    tokenizer.save_pretrained(root / "tok")
    # what `eqgen train generator --cache-images 4` builds for the landscapes at the tokenizer's height
    build_token_cache(tokenizer, ImageSource("landscapes", 16, 16), root / "cache", CACHE_IMAGES, batch_size=4)
    return root


def copy(made: Path, name: str, tmp: Path) -> Path:
    return Path(shutil.copytree(made / name, tmp / name))


def edit_json(path: Path, edit) -> Path:
    values = json.loads(path.read_text())
    path.write_text(json.dumps(edit(values)))
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# -- the cases: make(valid files, tmp dir) -> (the call that must refuse, the file it must name) ---------------


def pipeline_config(edit):
    def make(made, tmp):
        directory = copy(made, "pipe", tmp)
        return lambda: Pipeline.from_pretrained(directory), edit_json(directory / "config.json", edit)
    return make


def generator_field(**values):
    return pipeline_config(lambda c: {**c, "generator": {**c["generator"], **values}})


def tokenizer_field(**values):
    return pipeline_config(lambda c: {**c, "tokenizer": {**c["tokenizer"], **values}})


def pipeline_file(name: str, damage, layout: str = "pipe"):
    """A file of a pipeline directory, damaged: of the layout before the sub-folders ("pipe") or of today's
    ("parts": one sub-folder per component)."""
    def make(made, tmp):
        directory = copy(made, layout, tmp)
        damage(directory / name)
        return lambda: Pipeline.from_pretrained(directory), directory / name
    return make


def parts_file(name: str, damage):
    return pipeline_file(name, damage, "parts")


def parts_json(name: str, **values):
    return parts_file(name, lambda path: edit_json(path, lambda c: {**c, **values}))


def config_text(text: bytes):
    return pipeline_file("config.json", lambda path: path.write_bytes(text))


def weights_of_other_shapes(path: Path):
    other = make_tiny_pipeline().generator.state_dict()
    other["blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    save_file(other, path)


def weights_without(key: str):
    def damage(path: Path):
        save_file({k: v for k, v in load_file(path).items() if k != key}, path)
    return damage


def cli(argv, target: str, damage):
    """`eqgen ARGV...` in-process; ARGV names the copied files as {pipe}, {parts}, {tok}, {cache}, {tmp}."""
    def make(made, tmp):
        dirs = {name: copy(made, name, tmp) for name in ("pipe", "parts", "tok", "cache")} | {"tmp": tmp}
        file = Path(target.format(**dirs))
        damage(file)
        return lambda: main([a.format(**dirs) for a in argv]), file
    return make


SAMPLE = ["sample", "--model", "{pipe}", "-n", "1", "--steps", "1", "-o", "{tmp}/grid.png"]
APP = ["app", "--model", "{pipe}", "--port", "0"]
TRAIN = ["train", "generator", "--tokenizer", "{tok}", "--preset", "tiny", "--steps", "1", "--batch-size", "2",
         "--cache-images", str(CACHE_IMAGES), "--device", "cpu"]
RESUME = TRAIN + ["--out", "{pipe}", "--resume"]
WITH_CACHE = TRAIN + ["--out", "{tmp}/run", "--cache", "{cache}"]


def generator_json(path: Path, **values):
    edit_json(path, lambda c: {**c, "generator": {**c["generator"], **values}})


def cache_index(edit):
    def make(made, tmp):
        directory = copy(made, "cache", tmp)
        return lambda: TokenCache(directory), edit_json(directory / "index.json", edit)
    return make


def cache_file(name: str, damage):
    def make(made, tmp):
        directory = copy(made, "cache", tmp)
        damage(directory / name)
        return lambda: TokenCache(directory), directory / name
    return make


def tokenizer_dir(edit):
    def make(made, tmp):
        directory = copy(made, "tok", tmp)
        return lambda: ColumnTokenizer.from_pretrained(directory), edit_json(directory / "config.json", edit)
    return make


RELEASED_PARAMS = json.loads((FIXTURES / "tokenizer_tiny_config.json").read_text())["constructor_kwargs"] \
    if FIXTURES.is_dir() else {}


def official_yaml(text_or_edit):
    """`eqgen convert official --tokenizer W --config YAML` with YAML written from text, or from an edit of
    the fixture's parameters under model.params."""
    def make(made, tmp):
        import yaml

        path = tmp / "tokenizer_config.yaml"
        if isinstance(text_or_edit, str):
            path.write_text(text_or_edit)
        else:
            path.write_text(yaml.safe_dump({"model": {"params": text_or_edit(RELEASED_PARAMS)}}))
        argv = ["convert", "official", "--tokenizer", str(OFFICIAL_TOKENIZER), "--config", str(path),
                "-o", str(tmp / "out")]
        return lambda: main(argv), path
    return make


def dd(**values):
    return official_yaml(lambda p: {**p, "ddconfig": {**p["ddconfig"], **values}})


def official_generator_checkpoint(**entries):
    def make(made, tmp):
        state = load_file(OFFICIAL_GENERATOR)
        args = argparse.Namespace(model="tiny_model", cond_length=3, shift_num=16, token_num=8, diffusion_batch_mul=1)
        path = tmp / "checkpoint-last.pth"
        torch.save({"model_ema": state, "args": args, **entries}, path)
        return lambda: load_official_generator(path), path
    return make


def official_file(loader, make_file):
    def make(made, tmp):
        path = make_file(tmp)
        return lambda: loader(path), path
    return make


def torch_saved(name: str, value, keep: float = 1.0):
    def make_file(tmp):
        torch.save(value(), tmp / name)
        return truncate(tmp / name, keep)
    return make_file


def safetensors_of(name: str, state):
    def make_file(tmp):
        save_file(state(), tmp / name)
        return tmp / name
    return make_file


def official_tokenizer_ckpt(make_file):
    return official_file(lambda path: load_official_tokenizer(path, FIXTURES / "tokenizer_tiny_config.json"), make_file)


CASES = {
    # a pipeline's config.json, through Pipeline.from_pretrained (what `sample`, `app`, `eval` ... call)
    "config: depth a string": (generator_field(depth="two"), "'generator.depth' must be an integer, got \"two\""),
    "config: depth a float": (generator_field(depth=2.5), "'generator.depth' must be an integer"),
    "config: depth a bool": (generator_field(depth=True), "'generator.depth' must be an integer, got true"),
    "config: mlp_ratio a string": (generator_field(mlp_ratio="4"), "'generator.mlp_ratio' must be a number"),
    "config: window a list": (generator_field(window=[3]), "'generator.window' must be an integer or null"),
    "config: ch_mult a number": (tokenizer_field(ch_mult=3), "'tokenizer.ch_mult' must be a list of integers"),
    "config: ch_mult with a string": (tokenizer_field(ch_mult=[1, "2", 2]), "must be a list of integers"),
    "config: posterior a number": (tokenizer_field(posterior=5), "'tokenizer.posterior' must be a string"),
    "config: unknown field": (generator_field(dept=2), "no field(s) 'generator.dept'"),
    "config: generator a list": (pipeline_config(lambda c: {**c, "generator": [1, 2]}), "must be an object"),
    "config: generator null": (pipeline_config(lambda c: {**c, "generator": None}), "must be an object, got null"),
    "config: a JSON list": (pipeline_config(lambda c: [c]), "must hold a JSON object"),
    "config: JSON null": (pipeline_config(lambda c: None), "must hold a JSON object"),
    "config: no generator": (pipeline_config(lambda c: {k: v for k, v in c.items() if k != "generator"}),
                             "lacks generator"),
    "config: bad JSON": (config_text(b'{"tokenizer": {"height": 16,\n  "ch": }'), "line 2, column"),
    "config: not UTF-8": (config_text(b"\xff\xfe\x00garbage"), "not valid JSON"),
    "config: heads do not split width": (generator_field(heads=3), "generator: width 32 must split into 3 heads"),
    "config: negative width": (generator_field(width=-4), "these sizes do not make a model"),
    "config: height of no latent rows": (tokenizer_field(height=15), "height 15 must be a multiple of 4"),
    # the class list in config.json
    "classes: a number": (pipeline_config(lambda c: {**c, "classes": 8}), "classes must be a list of class names"),
    "classes: repeated": (pipeline_config(lambda c: {**c, "classes": ["a", "b", "a", "d"]}), "repeated: 'a'"),
    "classes: too few": (pipeline_config(lambda c: {**c, "classes": ["a", "b", "c"]}),
                         "3 class names for a generator of 4 classes"),
    "classes: an empty name": (pipeline_config(lambda c: {**c, "classes": ["a", " ", "c", "d"]}),
                               "class name 1 must be a non-empty string"),
    "classes: a number among names": (pipeline_config(lambda c: {**c, "classes": ["a", 2, "c", "d"]}),
                                      "class name 1 must be a non-empty string, got 2"),
    # safetensors weights
    "weights: truncated": (pipeline_file("generator.safetensors", truncate), "not a readable safetensors file"),
    "weights: empty": (pipeline_file("tokenizer.safetensors", lambda p: p.write_bytes(b"")), "not a readable"),
    "weights: missing": (pipeline_file("generator.safetensors", Path.unlink), "not found"),
    "weights: other shapes": (pipeline_file("generator.safetensors", weights_of_other_shapes),
                              "wrong shape: blocks.0.mlp.fc1.weight (3, 3)"),
    "weights: a key missing": (pipeline_file("generator.safetensors", weights_without("head.input_proj.weight")),
                               "missing: head.input_proj.weight"),
    # a pipeline directory of today's layout: its components' sub-folders and its config.json
    "parts: depth a string": (parts_json("generator/config.json", depth="two"), "field 'depth' must be an integer"),
    "parts: heads do not split width": (parts_json("generator/config.json", heads=3), "width 32 must split into 3"),
    "parts: negative width": (parts_json("generator/config.json", width=-4), "these sizes do not make a model"),
    "parts: height of no latent rows": (parts_json("tokenizer/config.json", height=15), "must be a multiple of 4"),
    "parts: config missing": (parts_file("tokenizer/config.json", Path.unlink), "not found"),
    "parts: weights truncated": (parts_file("generator/model.safetensors", truncate), "not a readable safetensors"),
    "parts: weights missing": (parts_file("tokenizer/model.safetensors", Path.unlink), "not found"),
    "parts: weights of other shapes": (parts_file("generator/model.safetensors", weights_of_other_shapes),
                                       "wrong shape: blocks.0.mlp.fc1.weight (3, 3)"),
    "parts: a component of another class": (parts_json("config.json", generator="UNet"),
                                            "generator must be 'EquivariantGenerator'"),
    "parts: classes too few": (parts_json("config.json", classes=["a", "b", "c"]), "3 class names for a generator"),
    # a tokenizer directory (checkpoint.Pretrained)
    "tokenizer dir: ch a string": (tokenizer_dir(lambda c: {**c, "ch": "8"}), "field 'ch' must be an integer"),
    "tokenizer dir: a list": (tokenizer_dir(lambda c: [c]), "must hold a JSON object"),
    # the CLI: one `eqgen: error:` line, exit status 2
    "cli sample: depth a string": (cli(SAMPLE, "{pipe}/config.json", lambda p: generator_json(p, depth="two")),
                                   "'generator.depth' must be an integer"),
    "cli sample: classes a number": (cli(SAMPLE, "{pipe}/config.json",
                                         lambda p: edit_json(p, lambda c: {**c, "classes": 8})), "classes must be"),
    "cli sample: truncated weights": (cli(SAMPLE, "{pipe}/tokenizer.safetensors", truncate), "not a readable"),
    "cli sample: a truncated component": (cli([a.replace("{pipe}", "{parts}") for a in SAMPLE],
                                              "{parts}/generator/model.safetensors", truncate), "not a readable"),
    "cli app: depth a string": (cli(APP, "{pipe}/config.json", lambda p: generator_json(p, depth="two")),
                                "'generator.depth' must be an integer"),
    "cli app: JSON null": (cli(APP, "{pipe}/config.json", lambda p: p.write_text("null")), "must hold a JSON object"),
    "cli resume: depth a string": (cli(RESUME, "{pipe}/config.json", lambda p: generator_json(p, depth="two")),
                                   "'generator.depth' must be an integer"),
    "cli train: truncated shard": (cli(WITH_CACHE, "{cache}/tokens_00000.npy", truncate),
                                   "truncated"),
    # token-cache shards and index
    "cache: truncated tokens": (cache_file("tokens_00000.npy", truncate), "is truncated"),
    "cache: truncated header": (cache_file("tokens_00000.npy", lambda p: truncate(p, 0.002)), "not a readable .npy"),
    "cache: truncated labels": (cache_file("labels_00000.npy", lambda p: truncate(p, 0.9)), "is truncated"),
    "cache: wrong shape": (cache_file("tokens_00000.npy", lambda p: np.save(p, np.zeros((8, 3, 4), np.float16))),
                           "the index says float16 [8, 4, 4]"),
    "cache: labels out of range": (cache_file("labels_00000.npy", lambda p: np.save(p, np.full(8, 99))),
                                   "labels outside 0..7"),
    "cache: shard missing": (cache_file("tokens_00000.npy", Path.unlink), "is missing"),
    "cache: index length a string": (cache_index(lambda i: {**i, "length": "4"}), "'length' must be an integer"),
    "cache: index shards wrong": (cache_index(lambda i: {**i, "shards": [{"tokens": 1, "labels": "l.npy", "rows": 8}]}),
                                  "field 'shards.tokens' must be a string, got 1"),
    "cache: index a list": (cache_index(lambda i: [i]), "must hold a JSON object"),
}
OFFICIAL_CASES = {
    # `eqgen convert official --config` (YAML) and the official checkpoints
    "yaml: a list": (official_yaml("- model\n- params\n"), "has no model.params mapping"),
    "yaml: no model.params": (official_yaml("model:\n  target: x\n"), "has no model.params mapping"),
    "yaml: params a string": (official_yaml("model:\n  params: oops\n"), "has no model.params mapping"),
    "yaml: not YAML": (official_yaml("model: {params: [\n"), "is not valid YAML"),
    "yaml: no ddconfig": (official_yaml(lambda p: {k: v for k, v in p.items() if k != "ddconfig"}),
                          "lacks 'model.params.ddconfig'"),
    "yaml: ddconfig a list": (official_yaml(lambda p: {**p, "ddconfig": [1]}),
                              "field 'model.params.ddconfig' must be an object"),
    "yaml: ch_mult a string": (dd(ch_mult="abc"), "'model.params.ddconfig.ch_mult' must be a list of integers"),
    "yaml: resolution a string": (dd(resolution="32"), "'model.params.ddconfig.resolution' must be an integer"),
    "yaml: empty ch_mult": (dd(ch_mult=[]), "at least one ch_mult entry"),
    "yaml: embed_dim null": (official_yaml(lambda p: {**p, "embed_dim": None}), "'model.params.embed_dim'"),
    "checkpoint: generator args a list": (official_generator_checkpoint(args=[1, 2]), "args must be"),
    "checkpoint: generator args wrong type": (official_generator_checkpoint(
        args=argparse.Namespace(model="tiny_model", cond_length="three")), "args.cond_length must be an integer"),
    "checkpoint: generator weights a list": (official_generator_checkpoint(model_ema=[1, 2]),
                                             "holds no generator weights"),
    "checkpoint: generator truncated": (official_file(load_official_generator, torch_saved(
        "g.pth", lambda: {"model_ema": load_file(OFFICIAL_GENERATOR)}, keep=0.5)), "can read safely"),
    "checkpoint: generator tensor of another rank": (official_file(
        lambda path: load_official_generator(path, heads=4), safetensors_of(
            "g.safetensors", lambda: {**load_file(OFFICIAL_GENERATOR), "z_proj.weight": torch.zeros(3)})),
        "unexpected shape"),
    "checkpoint: tokenizer truncated": (official_tokenizer_ckpt(torch_saved(
        "t.ckpt", lambda: {"state_dict": load_file(OFFICIAL_TOKENIZER)}, keep=0.5)), "can read safely"),
    "checkpoint: tokenizer non-tensor entry": (official_tokenizer_ckpt(torch_saved(
        "t.ckpt", lambda: {"state_dict": {**load_file(OFFICIAL_TOKENIZER), "encoder.note": 3}})),
        "holds no official tokenizer weights"),
}


def refusal(call, capsys) -> str:
    """The one line a refused file gives: the EqgenError's message, or the CLI's single stderr line (exit 2)."""
    try:
        code = call()
    except EqgenError as err:
        return str(err)
    assert code == 2, "the malformed file was accepted"
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("eqgen: error:")]
    assert len(lines) == 1, err
    return lines[0]


def check_refused(case, made, tmp_path, capsys):
    make, expected = case
    call, file = make(made, tmp_path)
    message = refusal(call, capsys)
    assert "\n" not in message
    assert str(file) in message, f"the message does not name {file}"
    assert expected in message


@pytest.mark.parametrize("name", CASES)
def test_a_malformed_file_is_refused_in_one_line_that_names_it(name, made, tmp_path, capsys):
    check_refused(CASES[name], made, tmp_path, capsys)


@official
@pytest.mark.parametrize("name", OFFICIAL_CASES)
def test_a_malformed_official_file_is_refused_in_one_line_that_names_it(name, made, tmp_path, capsys):
    check_refused(OFFICIAL_CASES[name], made, tmp_path, capsys)


def test_class_names_may_be_any_unicode(made, tmp_path):
    directory = copy(made, "pipe", tmp_path)
    names = ["草原", "мыс", "🏔 peaks", "a,b"]
    edit_json(directory / "config.json", lambda c: {**c, "classes": names})
    assert Pipeline.from_pretrained(directory).classes == names
