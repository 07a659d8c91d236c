"""`eqgen analyze` and `eqgen report`: the paper's analyses at small scale."""
from __future__ import annotations

import argparse
import sys

from ..errors import EqgenError
from .types import at_least_two, output_dir, output_file, png_file, positive_int, seed


def add_analyze(commands) -> None:
    analyze = commands.add_parser("analyze", help="the paper's analyses: per-position loss, FLOPs and parameters")
    kinds = analyze.add_subparsers(dest="kind", required=True, metavar="ANALYSIS")
    p = kinds.add_parser("positions", help="held-out flow loss per token position (paper Fig. 3)",
                         description="Teacher-forced flow-matching loss of every token position on fresh renders of "
                                     "every class, the same noise draws at every position; optional plot.")
    p.add_argument("--model", default="builtin")
    p.add_argument("--tokens", type=at_least_two, help="tokens per render (default: the training length)")
    p.add_argument("-n", "--per-class", type=at_least_two, default=8, help="held-out renders per class (default: 8)")
    p.add_argument("--draws", type=positive_int, default=8, help="noise draws per token (default: 8)")
    p.add_argument("--plot", type=png_file, help="write a PNG plot here")
    p.set_defaults(run=_analyze_positions)
    q = kinds.add_parser("costs", help="parameters and GFLOPs of the S/B/L/H presets next to the paper's Table 2")
    q.set_defaults(run=_analyze_costs)


def _analyze_positions(args: argparse.Namespace) -> None:
    from ..evaluation.positions import held_out_tokens, position_losses
    from ..pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model)
    tokens, labels = held_out_tokens(pipe, args.per_class, args.tokens or pipe.generator.config.train_tokens)
    loss, error = position_losses(pipe.generator, tokens, labels, draws=args.draws)
    print(f"{'position':>8} {'loss':>8} {'± se':>7}")
    for i, (m, e) in enumerate(zip(loss, error)):
        print(f"{i:8d} {m:8.4f} {e:7.4f}")
    print(f"positions 1..{len(loss) - 1}: mean {loss[1:].mean():.4f}, std/mean {loss[1:].std() / loss[1:].mean():.3f}")
    if args.plot:
        from ..report import plot_positions

        plot_positions(args.plot, {args.model: (loss, error)}, "held-out flow loss per position")
        print(f"wrote {args.plot}")


def _analyze_costs(args: argparse.Namespace) -> None:
    from ..evaluation.costs import preset_costs

    print(f"{'preset':<6} {'params':>9} {'paper':>6} {'transformer GFLOPs':>19} {'head GFLOPs/eval':>17} {'paper GFLOPs':>13}")
    for row in preset_costs():
        print(f"{row['preset']:<6} {row['params'] / 1e6:8.1f}M {row['paper_params']:>6} {row['transformer_gflops']:19.2f} "
              f"{row['head_gflops']:17.2f} {row['paper_gflops']:13.2f}")


def add_report(commands) -> None:
    p = commands.add_parser("report", help="reproduce the paper's analysis at small scale and write the report",
                            description="Trains the demo generator in every experiment of the paper's analysis "
                                        "(zero-shot positions, window vs full vs real equivariant, 2-D grid baseline, "
                                        "RoPE shift), measures them and writes a markdown report with plots. "
                                        "About 45 minutes on a 2-core CPU; a rerun continues where it stopped.")
    p.add_argument("--out", default="runs/report", type=output_dir,
                   help="where runs and results.json go (default: runs/report)")
    p.add_argument("--doc", default="docs/reproduction.md", type=output_file(),
                   help="the report (default: docs/reproduction.md)")
    p.add_argument("--steps", type=positive_int, default=800, help="generator steps per experiment (default: 800)")
    p.add_argument("--tokenizer-steps", type=positive_int, default=300,
                   help="tokenizer fine-tuning steps (default: 300)")
    p.add_argument("--per-class", type=at_least_two, default=16, help="samples per class for the scores (default: 16)")
    p.add_argument("--cache-images", type=positive_int, default=1000, help="renders per token cache (default: 1000)")
    p.add_argument("--only", help="comma-separated experiment names (default: all)")
    p.add_argument("--seed", type=seed, default=0)
    p.set_defaults(run=_report)


def _report(args: argparse.Namespace) -> None:
    from ..report import EXPERIMENTS, ReportConfig, run_experiments, write_report

    names = [n.strip() for n in args.only.split(",")] if args.only else list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise EqgenError(f"unknown experiment(s) {unknown}; choose from: {'; '.join(EXPERIMENTS)}")
    cfg = ReportConfig(steps=args.steps, tokenizer_steps=args.tokenizer_steps, per_class=args.per_class,
                       cache_images=args.cache_images, seed=args.seed, experiments=names)
    results = run_experiments(cfg, args.out)
    command = "eqgen report " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["report"] else "eqgen report"
    write_report(results, args.doc, command.strip())
    print(f"wrote {args.doc}")
