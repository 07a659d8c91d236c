"""The write-up of `eqgen report`: results -> markdown and plots, every verdict and observation computed by the
rule of evidence.py, which the report states."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..configs import from_preset
from ..evaluation.costs import preset_costs
from ..evaluation.plots import plot_long, plot_positions
from ..generator import GENERATOR_PRESETS, GeneratorConfig
from ..sampling import SamplingOptions
from .evidence import Z, Evidence, mean_se, ratio_se, split_names, spread_se, verdict_line, window_mean_se
from .experiments import TOKENS, Results, early_steps

FLOPS_CLOSE = 0.10       # relative difference under which a FLOP count is "close" to the paper's
PARAMS_MATCH = 0.01      # relative difference under which a parameter count matches the paper's
FIG3 = ("window", "full causal", "real equivariant", "2-D grid")
PAPER_TABLE1 = {"columns": (5.57, 8.99), "2-D grid": (7.93, 92.46)}   # gFID: all positions, 8 of 16
PAPER_TABLE4 = {"window": 7.21, "full causal": 7.35, "real equivariant": 8.87}


def improvement(r: dict, loss: dict) -> np.ndarray:
    """The window model's relative loss improvement per position from its early checkpoint to the end."""
    early = np.array(r["window"]["early_position_loss"])
    return (early - loss["window"]) / early


# ---------------------------------------------------------------------------------------------------------
# The sections, each results -> lines


def introduction(r: dict, command: str, floor: float) -> list[str]:
    cfg = r["config"]
    minutes = sum(v["seconds"] for v in r.values() if isinstance(v, dict) and "seconds" in v) / 60
    where = f" on a {r['cpus']}-core CPU" if r.get("cpus") else ""
    params = r.get("window", {}).get("gflops", {}).get("params")
    size = f" ({params / 1e6:.0f}M parameters)" if params else ""
    o = SamplingOptions()   # what the experiments sample with
    sampler = f"{o.solver.capitalize()}, {o.steps} steps, rho {o.rho:g}, cfg {o.cfg:g}"
    return [
        "# Reproducing the paper's analysis at small scale",
        "",
        f"Made by `{command}` in {minutes:.0f} minutes{where}. Every generator is the `demo` preset{size} trained "
        f"for {cfg['steps']} steps of batch {cfg['batch']} on the same token cache of {cfg['cache_images']} 64×128 "
        f"landscapes and their mirror images ({TOKENS} tokens per image, like the paper's 256² images), every "
        f"sequence starting at the image's left edge as in the official code. Samples use eqgen's default sampler "
        f"({sampler}).",
        "",
        f"Scores are *landscape*-FIDs ({cfg['per_class']} samples per class against fresh renders, features of "
        "eqgen's landscape classifier): comparable between these runs, not with the paper's Inception-FIDs. Their "
        f"noise floor, the same FID between two sets of real renders of the same size, is {floor:.2f}. Per-position "
        f"losses are on held-out renders ({cfg['held_out']} per class), with shared noise draws; error bars are "
        "standard errors over the images, combined across positions as if independent.",
        "",
        f"How the verdicts are reached: a difference is evidence when it exceeds its noise threshold — {Z:g} "
        "standard errors for losses and what is derived from them, the noise floor for landscape-FIDs. A claim is "
        "**reproduced** when at least one of its measures is evidence and all that are point the paper's way, **not "
        "reproduced** when one points the other way, **inconclusive** when none is evidence. Each measure is "
        "signed so that a positive value is the paper's direction.",
        "",
        "The paper trains for 1,200 epochs on ImageNet; these runs train for minutes, so each verdict is about "
        "the direction of an effect at this scale, not its size.",
    ]


def every_position(r: dict, loss: dict, se: dict) -> list[str]:
    """Paper Fig. 3: the loss is the same at every position for columns, not for the 2-D grid."""
    models = [k for k in FIG3 if k in loss]
    spread = {k: spread_se(loss[k][1:], se[k][1:]) for k in models}
    lines = ["## Every position is the same task (paper Fig. 3)", "",
             "![per-position loss](images/reproduction_positions.png)", "",
             "| model | loss at position 0 | mean loss at 1–15 | spread over 1–15 (std / mean; bootstrap s.e.) |",
             "|---|---|---|---|"]
    lines += [f"| {k} | {loss[k][0]:.4f} ± {se[k][0]:.4f} | {loss[k][1:].mean():.4f} | "
              f"{spread[k][0]:.3f} ± {spread[k][1]:.3f} |" for k in models]
    if "window" in loss and "2-D grid" in loss:
        (sw, ew), (sg, eg) = spread["window"], spread["2-D grid"]
        evidence = [Evidence("the 2-D grid's spread − the column model's", sg - sw, Z * float(np.hypot(ew, eg)))]
        lines += ["", verdict_line(evidence, f"the paper finds every column position the same task and the "
                                             f"2-D grid's positions unequal. Here the column model's loss varies by "
                                             f"{sw:.3f} (std/mean) over positions 1–15, the 2-D grid's by {sg:.3f}.")]
    hardest = []
    for k in models:
        top = int(np.argmax(loss[k][1:])) + 1
        hardest.append(loss[k][0] - loss[k][top] > Z * float(np.hypot(se[k][0], se[k][top])))
    where = split_names(models, hardest, "in every model", "in none of them", preposition="in")
    lines += ["", f"Position 0 (predicted from the class alone) is the hardest position, by more than {Z:g} standard "
                  f"errors over the next hardest, {where}. The two tokenizers' token spaces differ, so compare the "
                  "curves' shapes, not their levels."]
    if "early_position_loss" in r.get("window", {}):
        steps = r["config"]["steps"]
        gain = improvement(r, loss)
        lines += ["", f"Relative improvement per position from step {early_steps(steps)} to {steps} (paper Fig. 3, "
                      f"right): mean {gain[1:].mean():.3f}, spread {gain[1:].std():.3f} over positions 1–15.",
                  "", "![relative improvement per position](images/reproduction_improvement.png)"]
    return lines


def zero_shot(r: dict, loss: dict, se: dict, floor: float) -> list[str]:
    """Paper Table 1, Fig. 4: columns generalise to positions never trained on, a 2-D grid does not."""
    lines = ["## Positions never trained on (paper Table 1, Fig. 4)", "",
             "The loss is masked to the even positions (8 of 16) or to position 8 alone; every token is still context.",
             "", "![zero-shot per-position loss](images/reproduction_zero_shot.png)", "",
             "| tokens | trained on | landscape-FID | paper gFID | loss / all-positions model's: trained positions "
             "| untrained positions |", "|---|---|---|---|---|---|"]
    odd, even = np.arange(1, TOKENS, 2), np.arange(2, TOKENS, 2)   # position 0 (the class alone) apart
    pairs = [("columns", "window", "window, 8 of 16 positions"), ("2-D grid", "2-D grid", "2-D grid, 8 of 16 positions")]
    ratio, growth = {}, {}

    def loss_ratio(part: str, full: str, at: np.ndarray) -> tuple[float, float]:
        return ratio_se(mean_se(loss[part][at], se[part][at]), mean_se(loss[full][at], se[full][at]))

    for label, full, part in pairs:
        if full in loss and part in loss:
            ratio[label], trained = loss_ratio(part, full, odd), loss_ratio(part, full, even)
            growth[label] = r[part]["landscape_fid"] - r[full]["landscape_fid"]
            paper = PAPER_TABLE1[label]
            lines.append(f"| {label} | all 16 | {r[full]['landscape_fid']:.2f} | {paper[0]} | 1 | 1 |")
            lines.append(f"| {label} | 8 of 16 | {r[part]['landscape_fid']:.2f} | {paper[1]} | "
                         f"{trained[0]:.3f} ± {trained[1]:.3f} | {ratio[label][0]:.3f} ± {ratio[label][1]:.3f} |")
    if len(ratio) == 2:
        (cols, ec), (grid, eg) = ratio["columns"], ratio["2-D grid"]
        evidence = [Evidence("untrained-position loss ratio, 2-D grid − columns", grid - cols,
                             Z * float(np.hypot(ec, eg))),
                    Evidence("landscape-FID growth, 2-D grid − columns", growth["2-D grid"] - growth["columns"], floor)]
        lines += ["", verdict_line(evidence, f"the paper finds the column model nearly as good at positions it never "
                                             f"trained on and the 2-D grid much worse. Here the column model's loss "
                                             f"there is {cols:.3f}× the fully trained model's, the 2-D grid's "
                                             f"{grid:.3f}×; landscape-FID grows by {growth['columns']:+.2f} for "
                                             f"columns and {growth['2-D grid']:+.2f} for the grid.")]
    if "window, position 8 only" in loss:
        single, s_se = loss["window, position 8 only"], se["window, position 8 only"]
        others = mean_se(np.delete(single, [0, 8]), np.delete(s_se, [0, 8]))
        word = Evidence("", others[0] - single[8], Z * float(np.hypot(others[1], s_se[8]))).word(
            "higher than", "lower than", "within noise of")
        lines += ["", f"Trained on position 8 alone, the model's loss at the other positions 1–15 is "
                      f"{others[0]:.4f} ± {others[1]:.4f}, {word} its {single[8]:.4f} ± {s_se[8]:.4f} at position 8; the "
                      f"model trained on all positions has {loss['window'][1:].mean():.4f} there (position 0, "
                      f"predicted from the class alone, is {single[0]:.4f})."]
    return lines


def attention_kinds(r: dict, loss: dict, se: dict, floor: float) -> list[str]:
    """Paper Table 4: a window is as good as full causal attention, real-equivariant crops are worse."""
    lines = ["## Windowed vs full causal vs real-equivariant attention (paper Table 4)", "",
             "| model | landscape-FID | class accuracy | paper gFID | self-attention MFLOPs / image "
             "| GFLOPs / image (transformer + one head evaluation) |", "|---|---|---|---|---|---|"]
    for k, paper in PAPER_TABLE4.items():
        if k in r:
            g = r[k]["gflops"]
            lines.append(f"| {k} | {r[k]['landscape_fid']:.2f} | {r[k]['class_accuracy']:.2f} | {paper} | "
                         f"{1000 * r[k]['attention_gflops']:.3f} | {g['transformer_gflops'] + g['head_gflops']:.3f} |")
    if not all(k in loss for k in PAPER_TABLE4):
        return lines
    mean = {k: mean_se(loss[k][1:], se[k][1:]) for k in PAPER_TABLE4}
    saved = 1 - r["window"]["attention_gflops"] / r["full causal"]["attention_gflops"]
    window = from_preset(GeneratorConfig, GENERATOR_PRESETS, "demo").window

    evidence = [Evidence(f"held-out loss, {k} − window", mean[k][0] - mean["window"][0],
                         Z * float(np.hypot(mean[k][1], mean["window"][1]))) for k in ("full causal", "real equivariant")]
    evidence += [Evidence(f"landscape-FID, {k} − window", r[k]["landscape_fid"] - r["window"]["landscape_fid"], floor)
                 for k in ("full causal", "real equivariant")]
    by_fid = [e for e in evidence[2:] if e.tells]
    lines += ["", "Held-out loss over positions 1–15 (mean ± standard error): " + ", ".join(
                  f"{k} {m:.4f} ± {e:.4f}" for k, (m, e) in mean.items()) + ".", "",
              f"The window saves {saved:.1%} of the self-attention FLOPs at {TOKENS} tokens (paper: 42.9%; the "
              f"paper's accounting is not given). By the held-out loss the window is "
              f"{evidence[0].word('better than', 'worse than', 'within noise of')} full causal attention, and "
              f"real-equivariant crops are {evidence[1].word('worse than', 'better than', 'within noise of')} "
              f"the window, at equal steps and batch, though their sequences of {window + 1} tokens hold "
              f"{(window + 1) / TOKENS:.0%} of the tokens. The landscape-FIDs "
              + ("differ by less than their floor, so they cannot tell." if not by_fid else
                 "tell: " + "; ".join(map(str, by_fid)) + "."),
              "", verdict_line(evidence, "the paper finds the window as good as full attention and real-equivariant "
                                         "crops (window + 1 tokens) clearly worse.")]
    return lines


def columns_vs_grid(r: dict, floor: float) -> list[str]:
    """Paper Table 3: column tokens with a window are competitive with a 2-D grid in raster order."""
    if "window" not in r or "2-D grid" not in r:
        return []
    tc, tg = r.get("tokenizer columns", {}), r.get("tokenizer grid", {})
    cols, grid = r["window"]["landscape_fid"], r["2-D grid"]["landscape_fid"]
    nan = float("nan")
    evidence = [Evidence("landscape-FID, 2-D grid − columns", grid - cols, floor)]
    return ["## Column tokens vs a 2-D grid at equal token count (paper Table 3)", "",
            "| tokens | tokenizer PSNR (dB, held out) | tokenizer landscape-rFID | generator | landscape-FID | "
            "class accuracy |", "|---|---|---|---|---|---|",
            f"| {TOKENS} columns | {tc.get('psnr', nan):.2f} | {tc.get('landscape_rfid', nan):.3f} | window | "
            f"{cols:.2f} | {r['window']['class_accuracy']:.2f} |",
            f"| 4×4 grid, raster order | {tg.get('psnr', nan):.2f} | {tg.get('landscape_rfid', nan):.3f} | full causal | "
            f"{grid:.2f} | {r['2-D grid']['class_accuracy']:.2f} |", "",
            verdict_line(evidence, "the paper finds column tokens with windowed attention competitive with (better "
                                   "than, at its scale) the 2-D AR baseline.")]


def long_images(r: dict) -> list[str]:
    """Paper Fig. 7: without the RoPE shift, seams appear beyond the trained positions."""
    if "long" not in r.get("window", {}) or "long" not in r.get("window, no RoPE shift", {}):
        return []
    cfg = r["config"]
    runs = {"with the shift": r["window"]["long"], "without": r["window, no RoPE shift"]["long"]}
    lines = [f"## The RoPE shift and long images (paper Fig. 7): {cfg['long_multiple']}× the training width", "",
             f"{cfg['long_per_class']} panoramas of every class, {cfg['long_multiple'] * TOKENS} tokens wide, cut into "
             f"{TOKENS}-token windows and compared with renders of the same class at the same offsets "
             "(`eqgen eval long`). The dotted line is the training width. A seam ratio of 1 is as sharp a "
             "column-to-column jump as ground truth's; colour z is the distance of the mean colour from ground "
             "truth's in units of its spread between images, per class. Standard errors beyond the training width "
             "are over its windows.", "",
             "![long images with and without the RoPE shift](images/reproduction_long.png)", "",
             "| model | colour z, first window → beyond training | seam ratio, first window → beyond | "
             "texture ratio beyond |", "|---|---|---|---|"]
    seams, drift = {}, {}
    for label, rows in runs.items():
        seams[label] = window_mean_se(rows[1:], "seam_ratio")
        colour = window_mean_se(rows[1:], "colour_z")
        drift[label] = (colour[0] - rows[0]["colour_z"], colour[1])
        lines.append(f"| {label} | {rows[0]['colour_z']:.2f} → {colour[0]:.2f} ± {colour[1]:.2f} | "
                     f"{rows[0]['seam_ratio']:.2f} → {seams[label][0]:.2f} ± {seams[label][1]:.2f} | "
                     f"{np.mean([x['texture_ratio'] for x in rows[1:]]):.2f} |")
    def difference(what: str, a: tuple[float, float], b: tuple[float, float]) -> Evidence:
        return Evidence(what, a[0] - b[0], Z * float(np.hypot(a[1], b[1])))

    evidence = [difference("seam ratio beyond the training width, without − with the shift", seams["without"],
                           seams["with the shift"])]
    jumps = {label: difference("", s, (1.0, 0.0)).word("sharper than ground truth's (seams)",
                                                       "softer than ground truth's", "like ground truth's")
             for label, s in seams.items()}
    moves = {label: difference("", d, (0.0, 0.0)).word("moves away from", "comes closer to", "stays as far from")
             for label, d in drift.items()}
    alike = difference("", drift["without"], drift["with the shift"]).word("more without the shift",
                                                                           "more with the shift", "alike")
    lines += ["", verdict_line(evidence, "the paper shows seams beyond the trained positions without the shift, "
                                         "none with it."),
              "", f"Beyond the training width the column-to-column jumps are {jumps['with the shift']} with the shift "
                  f"and {jumps['without']} without. Past it the colour {moves['with the shift']} ground truth's "
                  f"with the shift ({drift['with the shift'][0]:+.2f} ± {drift['with the shift'][1]:.2f} in z) and "
                  f"{moves['without']} it without ({drift['without'][0]:+.2f} ± {drift['without'][1]:.2f}): the two "
                  f"drift {alike}."]
    return lines


def count(printed: str) -> float:
    """A parameter count as the paper prints it: '151M', '1.2B'."""
    number, unit = re.fullmatch(r"([\d.]+)([MB])", printed).groups()
    return float(number) * {"M": 1e6, "B": 1e9}[unit]


def preset_table(rows: list[dict]) -> list[str]:
    """Paper Table 2: parameters and FLOPs of the presets, next to the paper's."""
    names = [x["preset"] for x in rows]
    ours = [x["transformer_gflops"] + x["head_gflops"] for x in rows]
    paper = [x["paper_gflops"] for x in rows]
    close = [abs(a - b) / b <= FLOPS_CLOSE for a, b in zip(ours, paper)]
    match = [abs(x["params"] - count(x["paper_params"])) / count(x["paper_params"]) <= PARAMS_MATCH for x in rows]
    lines = ["## Parameters and FLOPs of the presets (paper Table 2)", "",
             "Counted by `torch.utils.flop_counter` (`eqgen analyze costs`), 1,000 classes, 16 tokens of 256 channels:",
             "", "| preset | parameters | paper | transformer GFLOPs / image | one head evaluation, all tokens | "
             "paper GFLOPs |", "|---|---|---|---|---|---|"]
    lines += [f"| {x['preset']} | {x['params'] / 1e6:.1f}M | {x['paper_params']} | {x['transformer_gflops']:.2f} | "
              f"{x['head_gflops']:.2f} | {x['paper_gflops']} |" for x in rows]
    growth = f"from {names[0]} to {names[-1]} the paper's GFLOPs grow {paper[-1] / paper[0]:.1f}×, these counts " \
             f"{ours[-1] / ours[0]:.1f}× and the parameters {rows[-1]['params'] / rows[0]['params']:.1f}×"
    lines += ["", "The paper does not say what its GFLOPs count. The transformer's forward over 16 tokens (with its "
              "16 class tokens) plus one flow-head evaluation per token gives "
              + ", ".join(f"{n} {g:.2f}" for n, g in zip(names, ours)) + " against the paper's "
              + ", ".join(f"{g}" for g in paper) + ": within "
              f"{FLOPS_CLOSE:.0%} {split_names(names, close, 'for every preset', 'for none')} ({growth}). The "
              f"parameters match the paper's within {PARAMS_MATCH:.0%} "
              f"{split_names(names, match, 'for every preset', 'for none')}."]
    return lines


def run_times(r: dict, loss: dict) -> list[str]:
    lines = ["## The runs", "", "| experiment | minutes (train + measure) |", "|---|---|"]
    lines += [f"| {k} | {r[k]['seconds'] / 60:.1f} |" for k in loss]
    for layout in ("columns", "grid"):
        if f"tokenizer {layout}" in r:
            lines.append(f"| tokenizer ({layout}, {r['config']['tokenizer_steps']} fine-tuning steps) | "
                         f"{r[f'tokenizer {layout}']['seconds'] / 60:.1f} |")
    return lines


# ---------------------------------------------------------------------------------------------------------


def _losses(r: dict) -> tuple[dict, dict]:
    runs = [k for k, v in r.items() if isinstance(v, dict) and "position_loss" in v]
    return ({k: np.array(r[k]["position_loss"]) for k in runs}, {k: np.array(r[k]["position_loss_se"]) for k in runs})


def markdown(r: dict, command: str, costs: list[dict]) -> str:
    """The report for results `r` (results.json's contents) and the preset costs (`preset_costs()`)."""
    loss, se = _losses(r)
    floor = max(r[k]["reference_fid_real_vs_real"] for k in loss)
    sections = [introduction(r, command, floor), every_position(r, loss, se), zero_shot(r, loss, se, floor),
                attention_kinds(r, loss, se, floor), columns_vs_grid(r, floor), long_images(r), preset_table(costs),
                run_times(r, loss)]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def plot(r: dict, images: Path) -> None:
    """The report's figures, into `images`."""
    loss, se = _losses(r)
    images.mkdir(parents=True, exist_ok=True)
    plot_positions(images / "reproduction_positions.png", {k: (loss[k], se[k]) for k in FIG3 if k in loss},
                   "held-out flow loss per position")
    if "early_position_loss" in r.get("window", {}):
        gain = improvement(r, loss)
        plot_positions(images / "reproduction_improvement.png", {"window": (gain, np.zeros_like(gain))},
                       f"relative loss improvement, step {early_steps(r['config']['steps'])} → {r['config']['steps']}",
                       "(early − late) / early")
    zero_shot_runs = ("window", "window, 8 of 16 positions", "window, position 8 only", "2-D grid",
                      "2-D grid, 8 of 16 positions")
    plot_positions(images / "reproduction_zero_shot.png", {k: (loss[k], se[k]) for k in zero_shot_runs if k in loss},
                   "loss per position; subsets trained on")
    if "long" in r.get("window", {}) and "long" in r.get("window, no RoPE shift", {}):
        plot_long(images / "reproduction_long.png",
                  {"with RoPE shift": r["window"]["long"], "without": r["window, no RoPE shift"]["long"]}, TOKENS)


def write_report(results: Results, path: str | Path, command: str) -> None:
    """docs/reproduction.md (or `path`) and its plots beside it, from the results of `run_experiments`."""
    path = Path(path)
    plot(results.data, path.parent / "images")
    path.write_text(markdown(results.data, command, preset_costs()))
