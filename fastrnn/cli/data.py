"""fastrnn-data: write a synthetic COCO captioning folder, or summarise any COCO folder."""
import argparse
import json
import os
import sys

import numpy as np

from fastrnn.captioning.data import coco, load_coco_data, synthetic
from fastrnn.cli._common import CliError, Parser, check_writable_dir, non_negative_int, run_main

PROG = "fastrnn-data"


def _size(text):
    if text in synthetic.NAMED_SIZES:
        return text
    try:
        synthetic.split_sizes(int(text))
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(synthetic.NAMED_SIZES)} or a number of train captions "
            f"(>= 2), got {text!r}") from None


def build_parser():
    parser = Parser(
        prog=PROG,
        description="COCO captioning data: write a synthetic folder in the CS231n layout, or "
                    "summarise an existing folder (real or synthetic).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{synth,info}")

    synth = sub.add_parser(
        "synth", help="write a synthetic COCO captioning folder",
        description="Write the six CS231n COCO files plus synthetic_info.json to --out, then "
                    "print a summary and the oracle BLEU (one human-like caption scored against "
                    "the others of its image).")
    synth.add_argument("--out", required=True, metavar="DIR",
                       help="folder to create (must not exist or be empty, unless --overwrite)")
    synth.add_argument("--size", type=_size, default="small", metavar="tiny|small|full|N",
                       help="tiny: 1,500 train captions (tests); small: 20,000 (the built-in "
                            "default for fastrnn-train); full: COCO's 400,135 train / 195,954 "
                            "val captions of 82,783 / 40,504 images; N: N train captions with "
                            "val scaled alike (default: small)")
    synth.add_argument("--seed", type=non_negative_int, default=0, help="random seed of the images and "
                       "captions (default: 0)")
    synth.add_argument("--raw-features", action="store_true",
                       help="also write the raw 4096-d fc7 feature files (2 GB at full size)")
    synth.add_argument("--overwrite", action="store_true",
                       help="replace --out if it already holds files")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")

    info = sub.add_parser(
        "info", help="summarise a COCO captioning folder",
        description="Load a COCO captioning folder with fastrnn.captioning.data.load_coco_data (checking "
                    "it on the way) and print its counts, vocabulary and caption lengths.")
    info.add_argument("dir", metavar="DIR", help="the folder (CS231n coco_captioning layout)")
    info.add_argument("--raw-features", action="store_true",
                      help="read the raw 4096-d fc7 files instead of the 512-d PCA ones")
    return parser


def main(argv=None):
    return run_main(PROG, build_parser(), run, argv)


def run(args):
    try:
        if args.command == "synth":
            # The parent must take the finished folder (renamed into place at the end).
            check_writable_dir(os.path.dirname(os.path.abspath(args.out)), "--out")
            if os.path.isfile(args.out):
                raise CliError(f"--out {args.out}: expected a folder, but it is a file")
            info = synthetic.generate(args.out, size=args.size, seed=args.seed,
                                      raw_features=args.raw_features,
                                      progress=not args.no_progress, overwrite=args.overwrite)
            print(f"wrote {os.path.abspath(args.out)}")
            print(format_synthetic_info(info))
        else:
            data = load_coco_data(args.dir, pca_features=not args.raw_features)
            print(format_summary(args.dir, data))
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
        raise CliError(str(e)) from None
    return 0


def format_synthetic_info(info):
    oracle = info["oracle"]
    lines = [
        f"synthetic COCO (generator v{info['version']}, size {info['size']}, seed {info['seed']})",
        f"  train: {info['train_captions']:,} captions of {info['train_images']:,} images",
        f"  val:   {info['val_captions']:,} captions of {info['val_images']:,} images",
        f"  vocabulary: {info['vocab_size']} words; features: {info['feature_dim']}-d PCA"
        + (" + 4096-d raw" if info["raw_features"] else ""),
        f"  words per train caption: mean {info['caption_words']['mean']:.2f}, "
        f"{info['caption_words']['min']}-{info['caption_words']['max']}, "
        f"{100 * info['caption_words']['share_8_to_13']:.0f}% in 8-13",
    ]
    if oracle.get("unigram_bleu") is not None:
        bleu = oracle["corpus_bleu"]
        lines.append(f"  oracle ({oracle['split']}, held-out human caption): unigram BLEU "
                     f"{oracle['unigram_bleu']:.3f}; corpus BLEU-1..4 "
                     + " / ".join(f"{bleu[k]:.3f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4")))
    return "\n".join(lines)


def format_summary(folder, data):
    null = data["word_to_idx"]["<NULL>"]
    start, end = data["word_to_idx"]["<START>"], data["word_to_idx"]["<END>"]
    lines = [f"COCO captioning folder {os.path.abspath(folder)}"]
    for split in coco.SPLITS:
        caps, idxs = data[f"{split}_captions"], data[f"{split}_image_idxs"]
        feats = data[f"{split}_features"]
        words = ((caps != null) & (caps != start) & (caps != end)).sum(axis=1)
        with_caption = len(np.unique(idxs))
        lines.append(
            f"  {split}: {len(caps):,} captions x {caps.shape[1]} tokens, {len(feats):,} images "
            f"({with_caption:,} with captions), features {feats.shape[1]}-d {feats.dtype}")
        if len(words):
            lines.append(
                f"    words per caption: mean {words.mean():.2f}, min {words.min()}, "
                f"median {int(np.median(words))}, max {words.max()}, "
                f"{100 * ((words >= 8) & (words <= 13)).mean():.0f}% in 8-13")
    lines.append(f"  vocabulary: {len(data['idx_to_word'])} words, first "
                 f"{', '.join(data['idx_to_word'][:8])}")
    info_path = os.path.join(folder, "synthetic_info.json")
    if os.path.isfile(info_path):
        try:
            with open(info_path, encoding="utf-8") as f:
                info = json.load(f)
            format_synthetic_info(info)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise CliError(f"{info_path} is not a readable synthetic_info.json "
                           f"({type(err).__name__}: {err})") from None
        lines.append("  synthetic: " + format_synthetic_info(info).splitlines()[0])
        oracle = format_synthetic_info(info).splitlines()[-1].strip()
        if oracle.startswith("oracle"):
            lines.append("  " + oracle)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
