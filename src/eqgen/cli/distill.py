"""`eqgen distill head`: a few-step flow head for a trained pipeline."""
from __future__ import annotations

import argparse

from .train import run_config, run_flags
from .types import guidance_scale, positive_int


def add_distill(commands) -> None:
    from ..distill import GUIDANCE, METHODS
    from ..distill_training import DistillConfig

    defaults = DistillConfig()
    distill = commands.add_parser("distill", help="a few-step flow head for a trained pipeline")
    kinds = distill.add_subparsers(dest="kind", required=True, metavar="KIND")
    p = kinds.add_parser(
        "head", help="distil the flow head into one of --evals evaluations per token",
        description="The transformer stays frozen and no data is needed: the pipeline samples its own conditions "
                    "and the flow head (the teacher) solves its ODE finely for each. --out becomes a pipeline "
                    "directory carrying the distilled head (distilled-K/) beside the teacher; sample with "
                    "--solver distilled --steps K. Multi-GPU: torchrun --nproc_per_node N $(which eqgen) distill head ...")
    p.add_argument("--model", default="builtin", help="the pipeline directory (or Hub id) whose flow head to distil")
    p.add_argument("--evals", type=positive_int, default=defaults.evals, help="head evaluations per token")
    p.add_argument("--method", default=defaults.method, choices=METHODS,
                   help="trajectory: follow the teacher's solve step by step; reflow: the straight path to its token")
    p.add_argument("--guidance", default=defaults.guidance, choices=GUIDANCE,
                   help="distilled: the head learns the guided flow (one branch); per-evaluation: it learns both "
                        "branches and sampling guides each evaluation")
    p.add_argument("--cfg-max", type=guidance_scale, default=defaults.cfg_range[1],
                   help="largest guidance scale the head learns (distilled guidance: it samples with cfg 1 to this)")
    p.add_argument("--images-per-class", type=positive_int, default=defaults.images_per_class,
                   help="sequences the pipeline samples per class for the conditions")
    p.add_argument("--tokens", type=positive_int, default=defaults.tokens, help="tokens per sampled sequence")
    p.add_argument("--draws", type=positive_int, default=defaults.draws,
                   help="lessons per condition (start noises, each with its guidance scale and the teacher's solve)")
    p.add_argument("--data", help="also learn the conditions of real images (teacher forcing): 'landscapes' or an "
                                  "image folder with the model's class names (default: the model's own samples only)")
    p.add_argument("--data-images", type=positive_int, default=defaults.data_images, help="images of --data")
    p.add_argument("--teacher-steps", type=positive_int, default=defaults.teacher_steps,
                   help="Heun steps of the teacher's solve (rounded up to a multiple of --evals)")
    run_flags(p, steps=2000, batch_size=1024, what="tokens", changeable="--lr, --warmup, --ema, --device, --precision")
    p.set_defaults(run=_distill_head, ema=0.99)


def _distill_head(args: argparse.Namespace) -> None:
    from ..distill_training import DistillConfig, distill_head

    config = DistillConfig(evals=args.evals, method=args.method, guidance=args.guidance,
                           cfg_range=(1.0, args.cfg_max), images_per_class=args.images_per_class, tokens=args.tokens,
                           draws=args.draws, data=args.data, data_images=args.data_images,
                           teacher_steps=args.teacher_steps,
                           **{field: value for field, value in (("lr", args.lr), ("warmup_steps", args.warmup))
                              if value is not None})
    distill_head(args.model, args.out, run_config(args), config, resume=args.resume)
    print(args.out)
