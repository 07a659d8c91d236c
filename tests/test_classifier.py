"""The shipped landscape classifier: right on fresh renders, and not fooled into a spread by noise."""
import torch

from eqgen.data.landscapes import iterate_landscapes
from eqgen.evaluation.classifier import LandscapeClassifier


@torch.no_grad()
def test_shipped_classifier_on_fresh_renders_any_width():
    classifier = LandscapeClassifier.from_pretrained()
    for width in (64, 256):
        images, labels = next(iterate_landscapes(64, 64, width, seed=123_457))
        assert (classifier(images).argmax(1) == labels).float().mean() >= 0.95
    assert classifier.features(images).shape == (64, classifier.config.feature_dim)


def test_training_the_classifier_from_the_command_line(tmp_path, capsys):
    from eqgen.cli import main

    assert main(["eval", "train-classifier", "--out", str(tmp_path / "c"), "--steps", "60", "--batch-size", "16"]) == 0
    accuracy = float(capsys.readouterr().out.split()[2].rstrip(";"))
    assert accuracy > 0.4                                # 8 classes: chance is 0.125
    assert LandscapeClassifier.from_pretrained(tmp_path / "c").config.num_classes == 8


def test_eval_commands_score_with_the_classifier_given(tmp_path, capsys):
    from conftest import make_tiny_pipeline

    from eqgen.cli import main

    torch.manual_seed(0)
    LandscapeClassifier().save_pretrained(tmp_path / "mine")   # random weights: features unlike the shipped one's
    pipe = make_tiny_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    pipe.tokenizer.save_pretrained(tmp_path / "tok")

    def score(command: list[str], name: str, *flags: str) -> float:
        assert main(["eval", *command, *flags]) == 0
        return float(dict(line.split() for line in capsys.readouterr().out.splitlines())[name])

    tokenizer = ["tokenizer", "--tokenizer", str(tmp_path / "tok"), "-n", "8", "--tokens", "4"]
    mine = ["--classifier", str(tmp_path / "mine")]
    assert score(tokenizer, "landscape_rfid", *mine) != score(tokenizer, "landscape_rfid")
    samples = ["samples", "--model", str(tmp_path / "model"), "-n", "2", "--steps", "1"]
    assert score(samples, "landscape_fid", *mine) != score(samples, "landscape_fid")
    assert main(["eval", *tokenizer, "--classifier", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.strip() == f"eqgen: error: model directory {tmp_path / 'nothing'} not found"
