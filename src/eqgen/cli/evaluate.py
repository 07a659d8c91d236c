"""`eqgen eval`: scores of samples, long images, tokenizers; the landscape classifier."""
from __future__ import annotations

import argparse
import os

from ..sampling import PANORAMA, SamplingOptions
from .common import print_scores, sampling_flags, sampling_options
from .types import at_least_two, device, nonnegative_int, output_dir, output_file, png_file, positive_int, seed


def add_eval(commands) -> None:
    evaluate = commands.add_parser("eval", help="measure a model")
    kinds = evaluate.add_subparsers(dest="kind", required=True, metavar="METRIC")
    p = kinds.add_parser("long", help="long-image fidelity: per-offset statistics of panoramas vs ground-truth renders",
                         description="Generates panoramas of --multiple × the training width and compares each "
                                     "training-width window with landscape renders of the class at that offset.")
    p.add_argument("--model", default="builtin")
    p.add_argument("--class", dest="cls", required=True)
    p.add_argument("--multiple", type=positive_int, default=32, help="panorama width in training widths (default: 32)")
    p.add_argument("-n", "--images", type=positive_int, default=4, help="panoramas to generate (default: 4)")
    sampling_flags(p, PANORAMA)
    p.add_argument("--every", type=positive_int, default=4, help="print every k-th offset window (default: 4)")
    p.set_defaults(run=_eval_long)
    q = kinds.add_parser("samples", help="landscape-FID, IS-style score, precision/recall, class accuracy",
                         description="Scores samples of every class against fresh landscape renders with eqgen's "
                                     "own landscape classifier as the feature extractor (not Inception-FID).")
    q.add_argument("--model", default="builtin")
    q.add_argument("-n", "--per-class", type=at_least_two, default=16)
    sampling_flags(q, SamplingOptions())
    q.add_argument("--inception", help="also Inception-FID: the TorchScript inception-2015-12-05.pt (a local file)")
    q.add_argument("--per-class-fid", action="store_true", help="also the landscape-FID of every class on its own")
    _classifier_flag(q)
    q.set_defaults(run=_eval_samples)
    t = kinds.add_parser("tokenizer", help="reconstruction PSNR and rFID of a tokenizer on fresh renders",
                         description="Encodes and decodes fresh landscape renders of every class; prints PSNR and "
                                     "the landscape-rFID (and Inception-rFID with --inception).")
    source = t.add_mutually_exclusive_group()
    source.add_argument("--tokenizer", help="a tokenizer directory (eqgen train tokenizer --out)")
    source.add_argument("--model", default="builtin", help="or the tokenizer of a model directory (default: built-in)")
    t.add_argument("-n", "--images", type=at_least_two, default=256, help="renders to reconstruct (default: 256)")
    t.add_argument("--tokens", type=at_least_two, default=16, help="render width in tokens (default: 16)")
    t.add_argument("--seed", type=seed, default=0)
    t.add_argument("--inception", help="also Inception-rFID: the TorchScript inception-2015-12-05.pt")
    t.add_argument("--png", type=png_file,
                   help="also write one fresh render per class here, each above its reconstruction")
    _classifier_flag(t)
    t.set_defaults(run=_eval_tokenizer)
    f = kinds.add_parser("fid", help="Inception-FID, IS, precision and recall of samples against a reference",
                         description="The ADM evaluator's protocol: FID on Inception pool features, IS in 10 parts, "
                                     "precision/recall (k=3) against 10,000 reference images. SAMPLES: a folder of "
                                     "images or an npz (arr_0). REFERENCE: a folder of real images (centre-cropped "
                                     "to the samples' size the way ADM prepares its reference), an npz with images "
                                     "(ADM's reference batch) or a statistics npz (mu, sigma). Under torchrun the "
                                     "features are computed across the ranks.")
    f.add_argument("samples", metavar="SAMPLES")
    f.add_argument("reference", metavar="REFERENCE")
    _feature_flags(f)
    f.set_defaults(run=_eval_fid)
    w = kinds.add_parser("long-fid", help="long images on any data: crop-FID and seam ratio per offset band",
                         description="Cuts every wide image of PANORAMAS (a folder or an npz, e.g. eqgen sample "
                                     "--out-dir --width 8W) into windows of --window px at increasing offsets and "
                                     "scores each band of offsets against REFERENCE (real images of the window's "
                                     "size, an npz, or statistics): crop-FID, seam and texture ratios.")
    w.add_argument("panoramas", metavar="PANORAMAS")
    w.add_argument("reference", metavar="REFERENCE")
    w.add_argument("--window", type=positive_int, help="window width in pixels, the training width (default: the images' height)")
    w.add_argument("--bands", type=positive_int, default=4, help="bands of consecutive offsets (default: 4)")
    _feature_flags(w)
    w.set_defaults(run=_eval_long_fid)
    c = kinds.add_parser("train-classifier", help="train the landscape classifier that the landscape scores use",
                         description="Trains eqgen's landscape classifier on fresh renders (the shipped one was "
                                     "made this way) and prints its held-out accuracy.")
    c.add_argument("--out", required=True, type=output_dir,
                   help="a directory for the classifier (config.json + safetensors)")
    c.add_argument("--steps", type=positive_int, default=1200)
    c.add_argument("--batch-size", type=at_least_two, default=64)
    c.add_argument("--seed", type=seed, default=0)
    c.set_defaults(run=_eval_train_classifier)


def _feature_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inception", required=True,
                        help="the TorchScript inception-2015-12-05.pt (a local file; python -m "
                             "eqgen.evaluation.stand_in FILE writes a random stand-in with its interface)")
    parser.add_argument("--save-stats", metavar="OUT.npz", type=output_file(".npz"),
                        help="also write the reference's statistics here: pass that file as REFERENCE next time")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per Inception batch (default: 64)")
    parser.add_argument("--workers", type=nonnegative_int, default=min(8, os.cpu_count() or 1),
                        help="processes decoding image files (default: min(8, CPUs))")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def _eval_fid(args: argparse.Namespace) -> None:
    from ..evaluation.fid import evaluate_fid

    scores = evaluate_fid(args.samples, args.reference, args.inception, device=args.device, batch=args.batch_size,
                          workers=args.workers, save_stats=args.save_stats)
    if scores:
        print_scores(scores)
        if args.save_stats:
            print(f"wrote {args.save_stats}")


def _eval_long_fid(args: argparse.Namespace) -> None:
    from ..evaluation.fid import long_image_scores

    rows = long_image_scores(args.panoramas, args.reference, args.inception, window=args.window, bands=args.bands,
                             device=args.device, batch=args.batch_size, workers=args.workers,
                             save_stats=args.save_stats)
    if rows:
        print(f"{'band':>4} {'offsets px':>13} {'crops':>6} {'crop-FID':>9} {'seams':>6} {'texture':>8}")
        for r in rows:
            print(f"{r['band']:4d} {r['first_px']:6d}-{r['end_px']:<6d} {r['crops']:6d} {r['crop_fid']:9.3f} "
                  f"{r['seam_ratio']:6.2f} {r['texture_ratio']:8.2f}")
        first, last = rows[0], rows[-1]
        print(f"first vs last band: crop-FID {first['crop_fid']:.3f} -> {last['crop_fid']:.3f}, seam ratio "
              f"{first['seam_ratio']:.2f} -> {last['seam_ratio']:.2f}")
        if args.save_stats:
            print(f"wrote {args.save_stats}")


def _classifier_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classifier", metavar="DIR",
                        help="the landscape classifier for the landscape scores: a directory from eval "
                             "train-classifier (default: the shipped one)")


def _eval_long(args: argparse.Namespace) -> None:
    from ..evaluation.long_images import drift_summary, panorama_drift
    from ..pipeline import Pipeline

    rows = panorama_drift(Pipeline.from_pretrained(args.model), args.cls, args.multiple, args.images,
                          sampling_options(args))
    print(f"{'offset px':>9} {'colour z':>9} {'texture':>8} {'seams':>6}")
    for row in rows[:: args.every] + ([rows[-1]] if (len(rows) - 1) % args.every else []):
        print(f"{row['offset']:9d} {row['colour_z']:9.2f} {row['texture_ratio']:8.2f} {row['seam_ratio']:6.2f}")
    summary = drift_summary(rows)
    print("first vs last quarter: " + ", ".join(f"{k} {a:.2f} -> {b:.2f}" for k, (a, b) in summary.items()))


def _eval_samples(args: argparse.Namespace) -> None:
    from ..evaluation.scores import landscape_scores
    from ..pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model)
    scores = landscape_scores(pipe, args.per_class, options=sampling_options(args), inception=args.inception,
                              classifier=args.classifier)
    print_scores(scores)
    if args.per_class_fid:
        from ..evaluation.scores import class_fids

        print(f"\n{'class':<10} {'landscape-FID':>14} {'real vs real':>13}")
        for cls, (fid, floor) in class_fids(pipe, args.per_class, options=sampling_options(args),
                                            classifier=args.classifier).items():
            print(f"{cls:<10} {fid:14.2f} {floor:13.2f}")


def _eval_train_classifier(args: argparse.Namespace) -> None:
    from ..evaluation.classifier import train_classifier

    _, accuracy = train_classifier(args.out, args.steps, args.batch_size, args.seed)
    print(f"held-out accuracy {accuracy:.3f}; wrote {args.out}")


def _eval_tokenizer(args: argparse.Namespace) -> None:
    from ..evaluation.scores import reconstructions, tokenizer_scores
    from ..imageio import save_grid
    from ..pipeline import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer or args.model)
    scores = tokenizer_scores(tokenizer, args.images, args.tokens, args.seed, inception=args.inception,
                              classifier=args.classifier)
    print_scores(scores)
    if args.png:
        print(f"wrote {save_grid(reconstructions(tokenizer, args.tokens, args.seed), args.png, nrow=1)}")
