"""Command-line interface: ``python -m slsviz <command>`` or ``slsviz <command>``.

Results go to stdout (JSON) or to files; progress and errors to stderr. Bad input ends with a
one-line reason and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from slsviz import choices, defaults
from slsviz.errors import SlsvizError

# Upper bounds that only catch typos (an extra zero or three); real limits are checked where known.
_MAX_COUNT = 1_000_000_000
_MAX_WORKERS = 1024


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the problem and where to read more, without the usage block."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(low: int, high: int = _MAX_COUNT):
    """An argparse ``type`` accepting integers in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: give a whole number from {low} to {high:,}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def _float_in(low: float, high: float, *, low_open: bool = False, what: str = "a number"):
    """An argparse ``type`` accepting finite floats in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {what} in {bracket}{low:g}, {high:g}]")
        return value

    parse.__name__ = "number"
    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)
_seed = _int_at_least(0, 2**32 - 1)
_img_size = _int_at_least(1, 100_000)  # beyond memory far before this; load_backbone says how far


def _add_backbone_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=defaults.BACKBONE, help="'default' (DINOv2 ViT-S/14, embedded), a timm ViT name or a timm Swin name")
    p.add_argument("--checkpoint", help="local weights for --model: .npz, .pth/.pt or .safetensors")
    p.add_argument("--hub", action="store_true", help="fetch --model's pretrained weights from the model hub")
    p.add_argument("--img-size", type=_img_size, help="input size in pixels (default: 112 for the default backbone)")
    p.add_argument("--device", default=defaults.DEVICE, help=f"auto, cpu, cuda, cuda:N or mps (default: {defaults.DEVICE})")


def _cmd_inspect(args: argparse.Namespace) -> dict:
    from slsviz.models.inspect import inspect_path

    return {"files": [inspect_path(path) for path in args.paths]}


def _cmd_info(args: argparse.Namespace) -> dict:
    from slsviz.device import resolve_device
    from slsviz.environment import environment

    return environment(resolve_device(args.device))


def _cmd_backbone(args: argparse.Namespace) -> dict:
    from slsviz.device import describe_device, resolve_device
    from slsviz.models.backbones import load_backbone

    device = resolve_device(args.device)
    backbone = load_backbone(args.model, args.checkpoint, img_size=args.img_size, hub=args.hub, device=device)
    return {**backbone.describe(), "device": describe_device(device)}


def _cmd_data(args: argparse.Namespace) -> dict:
    from slsviz.data import load_dataset

    data = load_dataset(args.data, seed=args.seed)
    _note(data.skipped_note())
    return data.describe()


def _cmd_train(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from slsviz.data import load_dataset
    from slsviz.device import describe_device, resolve_device
    from slsviz.models.backbones import load_backbone
    from slsviz.models.petl import PetlConfig
    from slsviz.models.task import fit_task, save_task
    from slsviz.models.train import Recipe

    device = resolve_device(args.device)
    petl = PetlConfig(method=args.method, bottleneck=args.bottleneck, scale=args.scale)
    recipe = Recipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                    warmup_epochs=args.warmup_epochs, seed=args.train_seed)
    backbone = load_backbone(args.model, args.checkpoint, img_size=args.img_size, hub=args.hub, device=device)
    data = load_dataset(args.data, seed=args.seed)
    with tqdm(total=recipe.epochs, desc=f"train {petl.method}", unit="epoch", file=sys.stderr) as bar:
        def progress(epoch: int, total: int, info: dict) -> None:
            bar.set_postfix(loss=f"{info['loss']:.3f}", val=f"{info['val_accuracy']:.3f}")
            bar.update(1)

        model, meta, result = fit_task(backbone, data, petl, recipe, device=device, progress=progress, limit=args.limit)
    path = save_task(args.out, model, meta)
    return {"checkpoint": str(path), "bytes": path.stat().st_size, "device": describe_device(device),
            "seconds": round(result.seconds, 1), **meta.to_dict(), "history": result.history}


def _cmd_evaluate(args: argparse.Namespace) -> dict:
    import time

    import numpy as np

    from slsviz.data import make_loader
    from slsviz.device import describe_device
    from slsviz.models.train import predict
    from slsviz.storage import atomic_path, check_can_write

    if args.save_logits:
        check_can_write(args.save_logits, folder=False)
    loaded = _study(args).loaded
    if loaded.meta is None:
        raise SlsvizError("evaluate needs a task (adapters + head): give --task.")
    applies, note = loaded.head_applies, loaded.head_note
    if not applies:
        raise SlsvizError(f"Accuracy is {note} Evaluate the task on data with its classes.")
    _note(note)
    loader = make_loader(loaded.data, args.split, loaded.preprocess, args.batch_size, limit=args.limit)
    device = loaded.backbone.device
    start = time.perf_counter()
    logits, labels = predict(loaded.model, loader, device)
    seconds = time.perf_counter() - start
    if args.save_logits:
        with atomic_path(args.save_logits) as tmp, open(tmp, "wb") as f:  # np.save would append .npy to a bare name
            np.save(f, logits)
    return {"task": str(args.task or defaults.TASK_PATH), "dataset": loaded.data.name, "split": args.split,
            "num_images": len(labels), "note": note, "accuracy": float((logits.argmax(1) == labels).mean()),
            "recorded_test_accuracy": loaded.meta.test_accuracy, "depth": len(loaded.model.blocks),
            "logits": str(args.save_logits) if args.save_logits else None, "seconds": round(seconds, 2),
            "device": describe_device(device)}


def _add_task_args(p: argparse.ArgumentParser) -> None:
    _add_backbone_args(p)
    p.add_argument("--task", help="task checkpoint (default with the default backbone: the shipped task; 'none': no task)")
    p.add_argument("--data", help="dataset (default: the task's): mnist5k, digits, an image folder or a VTAB-1k root")
    p.add_argument("--batch-size", type=_positive, default=defaults.BATCH_SIZE,
                   help=f"images per forward pass (default {defaults.BATCH_SIZE})")
    p.add_argument("--limit", type=_positive, help="only the first N images of each split (quick runs)")
    p.add_argument("--task-config", help="for a task checkpoint of the official SLS code: its configs/<method>/<dataset>.yaml")
    p.add_argument("--scale", type=_float_in(0.0, 1e6, low_open=True, what="a scale"),
                   help="for a task checkpoint of the official SLS code: the adapter scale s (instead of --task-config)")


def _stderr_progress():
    """A tqdm bar per stage on stderr, as a ``progress(stage, done, total)`` callback."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, leave=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def _study(args: argparse.Namespace, workers: int | None = None):
    """The orchestrator for the task the arguments name (every command that analyses goes through it)."""
    from slsviz.study import Selection, Study

    selection = Selection(model=args.model, checkpoint=args.checkpoint, task=args.task, data=args.data,
                          img_size=args.img_size, hub=args.hub, device=args.device, limit=args.limit,
                          token=getattr(args, "token", defaults.TOKEN), batch_size=args.batch_size,
                          task_config=args.task_config, scale=args.scale)
    study = Study.open(selection, workers=workers)
    _note(study.loaded.data.skipped_note())
    return study


def _settings(args: argparse.Namespace):
    from slsviz.layers.analysis import AnalysisSettings

    return AnalysisSettings(projection=args.projection, metric=args.metric, space=args.space, alpha=args.alpha)


def _cmd_analyze(args: argparse.Namespace) -> dict:
    from slsviz.study.report import write_report

    settings = _settings(args)
    study = _study(args, args.workers)
    _note(study.loaded.head_note if study.loaded.meta is not None else None)
    r, written = write_report(study, settings, args.out, save_features=args.save_features, progress=_stderr_progress())
    print(f"SLS recommends keeping {r['recommended_depth']} of {r['num_layers']} blocks "
          f"({r['metric']} on {r['projection']} {r['space']}, alpha {r['alpha']}): {r['reason']}", file=sys.stderr)
    return {key: r[key] for key in ("recommended_depth", "num_layers", "threshold", "accuracy_full",
                                    "accuracy_at_recommended_depth", "accuracy_head_refit_at_recommended_depth",
                                    "timings")} | {"written": [str(p) for p in written]}


def _cmd_compare(args: argparse.Namespace) -> dict:

    study = _study(args, args.workers)
    _note(study.loaded.head_note if study.loaded.meta is not None else None)
    settings = {name: value for name, value in (("knn_accuracy", args.knn_within), ("sls_probe", args.probe_within),
                                                ("block_influence", args.bi_ratio),
                                                ("angular_distance", args.angular_max), ("cka_to_last", args.cka_min),
                                                ("reverse_order", args.reverse_share), ("taylor", args.taylor_ratio),
                                                ("val_loss", args.loss_within))
                if value is not None}
    comparison = study.compare(oracle_within=args.oracle_within, settings=settings, time_budget_s=args.seconds,
                               resamples=args.stability, depgraph=args.depgraph,
                               depgraph_retrain=args.depgraph_retrain, progress=_stderr_progress())
    written = comparison.write(args.out)
    if args.save_features:
        written.append(study.features.write_scored(Path(args.out) / "features.npz"))
    for row in comparison.rows:
        spread = (f"; over {args.stability} resamples mode {row['stability']['mode']}, 90% in "
                  f"{row['stability']['interval'][0]}-{row['stability']['interval'][1]}") if "stability" in row else ""
        print(f"{row['label']}: depth {row['depth']} ({row['oracle_distance']:+d} from the oracle){spread}", file=sys.stderr)
        _note(row.get("width_note"))
    if comparison.depgraph and "skipped" in comparison.depgraph:
        _note(f"DepGraph baseline: {comparison.depgraph['skipped']}")
    elif comparison.depgraph:
        d = comparison.depgraph
        print(f"{d['label']}: {100 * d['accuracy_head_refit']:.2f}% (head re-fit), {d['images_per_s']:.1f} images/s "
              f"(SLS at {d['depth']} blocks, same rounds: {d['sls_images_per_s_same_rounds']:.1f})"
              + (f"; retrained {d['retrain_epochs']} epochs: {100 * d['accuracy_retrained']:.2f}%" if "accuracy_retrained" in d
                 else ""), file=sys.stderr)
        _note(d.get("width_note"))
        _note(d.get("retrained_note"))
    return {"depths": {row["name"]: row["depth"] for row in comparison.rows}, "written": [str(p) for p in written]}


def _cmd_pick(args: argparse.Namespace) -> dict:
    study = _study(args)
    within = args.within / 100 if args.within is not None else None
    picked = study.timing.pick_depth(study.depths.table(), within=within, min_images_per_s=args.min_images_per_s,
                                     kind=args.kind, time_budget_s=args.seconds)
    print(f"Keep {picked['depth']} of {study.num_layers} blocks: {picked['rule']}.", file=sys.stderr)
    return picked


def _cmd_export(args: argparse.Namespace) -> dict:

    from slsviz.export import save_config
    from slsviz.storage import atomic_path

    study = _study(args)
    settings = _settings(args)
    depth = args.depth if args.depth is not None else int(study.layers.recommend(settings).depth_)
    out = Path(args.out)
    if args.as_format != "slsviz":
        written = study.exports.for_tool(args.as_format, depth, out, settings, time_budget_s=args.seconds)
        return {"depth": depth, "format": args.as_format, "written": [str(p) for p in written]}
    config = study.exports.config(settings, depth, time_budget_s=args.seconds)
    config_path = save_config(config, out / f"slsviz-config.{args.format}")
    task_path = out / f"task-depth{depth}.safetensors"
    with atomic_path(task_path) as tmp:
        tmp.write_bytes(study.exports.task_checkpoint(depth))
    return {"depth": depth, "recommended_depth": config["results"]["recommended_depth"],
            "written": [str(config_path), str(task_path)]}


def _cmd_benchmark(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from slsviz.device import check_timing_precision, timing_precisions
    from slsviz.models.depth import check_depth, prune_to_depth
    from slsviz.pruning.bench import benchmark_models, speedups
    from slsviz.pruning.footprint import storage_per_task

    loaded = _study(args).loaded
    num_layers = len(loaded.model.blocks)
    pruned = prune_to_depth(loaded.model, check_depth(args.depth, num_layers))
    size, device = loaded.backbone.img_size, loaded.backbone.device
    offered = timing_precisions(device)
    precisions = list(dict.fromkeys(args.precisions or offered))
    for precision in precisions:  # all refused before any is timed
        check_timing_precision(device, precision, fix=f"Use --precisions {' '.join(offered)}.")
    results = []
    runs = [(batch, precision) for batch in args.batch_sizes for precision in precisions]
    for batch, precision in tqdm(runs, desc="batch sizes x precisions", unit="run", file=sys.stderr):
        # Full and pruned timed in turn, round after round, so that drift of the machine hits both alike.
        timed = benchmark_models({"full": loaded.model, "pruned": pruned}, size, batch_size=batch, device=device,
                                 time_budget_s=args.seconds, rounds=args.rounds, precision=precision)
        full, cut = timed["full"], timed["pruned"]
        results.append({"batch_size": batch, "precision": precision, "full": full.to_dict(), "pruned": cut.to_dict(),
                        **speedups(full, cut)})
    return {"depth": args.depth, "num_layers": num_layers, "img_size": size, "precisions_offered": list(offered),
            "benchmarks": results, "storage_per_task": storage_per_task(loaded.model, args.depth)}


def _cmd_prune(args: argparse.Namespace) -> dict:
    from slsviz.data import make_loader
    from slsviz.export import save_pruned_task
    from slsviz.models.depth import prune_to_depth
    from slsviz.models.train import evaluate

    loaded = _study(args).loaded
    if loaded.meta is None:
        raise SlsvizError("prune needs a task (adapters + head) to cut; give --task.")
    pruned = prune_to_depth(loaded.model, args.depth)
    applies, note = loaded.head_applies, loaded.head_note
    _note(note)
    accuracy = {split: evaluate(pruned, make_loader(loaded.data, split, loaded.preprocess, args.batch_size, limit=args.limit))
                if applies else None for split in ("val", "test")}
    path = save_pruned_task(loaded.model, loaded.meta, args.depth, args.out, val_accuracy=accuracy["val"],
                            test_accuracy=accuracy["test"])
    return {"checkpoint": str(path), "bytes": path.stat().st_size, "depth": args.depth,
            "val_accuracy": accuracy["val"], "test_accuracy": accuracy["test"], "limit": args.limit}


def _cmd_sweep(args: argparse.Namespace) -> dict:
    from slsviz.sweep import load_spec, run_sweep

    spec = load_spec(args.spec)
    run = run_sweep(spec, args.out, backend=args.backend, address=args.address, num_cpus=args.num_cpus,
                    retries=args.retries, use_cache=not args.no_cache)
    for failure in run.failed:
        _note(f"task {failure['task']} failed in {failure['stage']}: {failure['reason']}")
    print(f"{len(run.finished)} finished, {len(run.skipped)} skipped (finished before), {len(run.failed)} failed; "
          f"results in {Path(args.out) / 'results.csv'}", file=sys.stderr)
    return run.summary()


def _cmd_leaderboard(args: argparse.Namespace) -> dict:
    from slsviz.sweep.results import SweepResults

    results = SweepResults.open(args.folder)
    if not results.tasks:
        raise SlsvizError(f"No task of the sweep in {args.folder} has finished yet: nothing to rank.")
    board = results.leaderboard()
    written = board.write(args.folder)
    for kind in ("fixed", "leave-one-task-out"):
        best = board.best(kind)
        if best is not None:
            print(f"nearest the oracle, {kind}: {best['criterion']} (mean |depth - oracle| {best['abs_distance']:.2f} "
                  f"over {best['tasks']} tasks)", file=sys.stderr)
    return {"tasks": board.tasks, "best_fixed": board.best("fixed"), "best_calibrated": board.best("leave-one-task-out"),
            "calibrated_on_all_tasks": board.calibrated, "written": [str(p) for p in written]}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from slsviz import __version__

    parser = _Parser(prog="slsviz", description="SLS layer-wise pruning analysis for PETL vision transformers.")
    parser.add_argument("--version", action="version", version=f"slsviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    sub.add_parser("app", help="start the app in the browser (what `make run` starts), from any folder; "
                   "Streamlit options (e.g. --server.port 8600) follow", add_help=False)

    p = sub.add_parser("info", help="versions and the compute device that would be used")
    p.add_argument("--device", default=defaults.DEVICE, help=f"auto, cpu, cuda, cuda:N or mps (default: {defaults.DEVICE})")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("inspect", help="what each file is: an slsviz task, an official SLS task, weights; what is missing")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("backbone", help="load a backbone (converting the default once) and describe it")
    _add_backbone_args(p)
    p.set_defaults(func=_cmd_backbone)

    p = sub.add_parser("data", help="load a dataset and describe its classes and splits")
    p.add_argument("--data", default=defaults.DATASET, help="mnist5k, digits, an image-folder path or a VTAB-1k root")
    p.add_argument("--seed", type=_seed, default=0, help="split seed (built-ins and image folders)")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train a PETL task (adapters + head) and save its task checkpoint")
    _add_backbone_args(p)
    p.add_argument("--data", default=defaults.DATASET, help="mnist5k, digits, an image-folder path or a VTAB-1k root")
    p.add_argument("--seed", type=_seed, default=0, help="split seed (built-ins and image folders)")
    p.add_argument("--method", choices=choices.PETL_METHODS, default="convpass", help="PETL method (default convpass)")
    p.add_argument("--bottleneck", type=_positive, default=8, help="adapter width / LoRA rank (default 8)")
    p.add_argument("--scale", type=_float_in(-1e6, 1e6, what="a finite number"), help="adapter scale s (default: the method's own)")
    p.add_argument("--epochs", type=_positive, default=defaults.TRAIN_EPOCHS, help=f"epochs (paper: {defaults.TRAIN_EPOCHS})")
    p.add_argument("--warmup-epochs", type=_non_negative,
                   help="linear warm-up epochs (default: a tenth of the epochs, at least one; the paper's 10 of 100)")
    p.add_argument("--lr", type=_float_in(0.0, 10.0, low_open=True, what="a learning rate"), default=defaults.TRAIN_LR,
                   help=f"peak learning rate (paper: {defaults.TRAIN_LR:g})")
    p.add_argument("--batch-size", type=_positive, default=defaults.TRAIN_BATCH_SIZE,
                   help=f"batch size (paper: {defaults.TRAIN_BATCH_SIZE})")
    p.add_argument("--train-seed", type=_seed, default=0, help="seed of shuffling, dropout and head init")
    p.add_argument("--limit", type=_positive, help="use only the first N images of each split (quick runs)")
    p.add_argument("--out", required=True, help="task checkpoint to write (.safetensors)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="accuracy (and logits) of a task checkpoint on a split")
    _add_task_args(p)
    p.set_defaults(batch_size=256)
    p.add_argument("--split", choices=choices.SPLITS, default="test", help="split to evaluate (default: test)")
    p.add_argument("--save-logits", help="write the logits (N x classes, float32 .npy) in the split's order")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("analyze", help="per-layer maps and scores, the SLS recommendation, per-depth accuracy")
    _add_task_args(p)
    _add_rule_args(p)
    p.add_argument("--token", choices=choices.TOKENS, default=defaults.TOKEN,
                   help=f"{'/'.join(choices.TOKENS)}: CLS before the final norm, mean of patches, CLS after it (default {defaults.TOKEN})")
    _add_output_args(p, "report.json, scores.csv")
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("compare", help="SLS beside other layer criteria and the oracle: each one's depth, accuracy, speed")
    _add_task_args(p)
    fraction = _float_in(0.0, 1.0, what="a fraction (0.01 = 1 point)")
    p.add_argument("--oracle-within", type=fraction, default=defaults.ORACLE_WITHIN,
                   help=f"the oracle: the smallest depth within this of the full model's val accuracy, head re-fit (default {defaults.ORACLE_WITHIN})")
    p.add_argument("--knn-within", type=fraction, help=f"kNN: blocks within this of the last block's accuracy qualify (default {defaults.KNN_WITHIN})")
    p.add_argument("--bi-ratio", type=_float_in(0.0, 10.0, what="a ratio"),
                   help=f"Block Influence: blocks at most this x the mean are redundant (default {defaults.BI_RATIO})")
    p.add_argument("--angular-max", type=fraction, help=f"angular distance to the last block that qualifies (default {defaults.ANGULAR_MAX})")
    p.add_argument("--cka-min", type=fraction, help=f"linear CKA with the last block that qualifies (default {defaults.CKA_MIN})")
    p.add_argument("--probe-within", type=fraction,
                   help=f"SLS's linear probe: blocks within this of the last block's val accuracy qualify (default {defaults.PROBE_WITHIN})")
    p.add_argument("--reverse-share", type=fraction, help=f"reverse order: the share of top blocks dropped (default {defaults.REVERSE_SHARE})")
    p.add_argument("--taylor-ratio", type=_float_in(0.0, 10.0, what="a ratio"),
                   help=f"Taylor importance: blocks at most this x the mean are redundant (default {defaults.TAYLOR_RATIO})")
    p.add_argument("--loss-within", type=_float_in(0.0, 10.0, what="nats"),
                   help=f"the oracle's loss twin: within this of the full model's val loss, head re-fit (default {defaults.LOSS_WITHIN})")
    p.add_argument("--seconds", type=_float_in(0.0, 3600.0, low_open=True, what="seconds"), default=defaults.TIMING_S,
                   help=f"timing per depth, all depths in turn (default {defaults.TIMING_S:g})")
    p.add_argument("--stability", type=_int_at_least(0, 1000), default=0, metavar="B",
                   help="bootstrap resamples of the scored images (new maps each) for every criterion's spread of depths (default 0: none)")
    p.add_argument("--depgraph", type=_int_at_least(1, 10_000), nargs="?", const=0, metavar="DEPTH",
                   help="add the paper's baseline: the backbone width-pruned with DepGraph to the FLOPs of DEPTH blocks "
                        "(default: the SLS depth)")
    p.add_argument("--depgraph-retrain", type=_int_at_least(0, 1000), default=0, metavar="EPOCHS",
                   help="also train the width-pruned model's adapters and head further (the paper's FT) and report its test accuracy")
    _add_output_args(p, "compare.json, compare.csv")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("pick", help="the depth that fits a budget: fastest within --within points, or most accurate at --min-images-per-s")
    _add_task_args(p)
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--within", type=_float_in(0.0, 100.0, what="points"),
                        help="the fastest depth within this many points of the full model's accuracy")
    budget.add_argument("--min-images-per-s", type=_float_in(0.0, 1e9, low_open=True, what="images/s"),
                        help="the most accurate depth measured at this throughput or more (batch 1)")
    p.add_argument("--kind", choices=("accuracy_head_refit", "accuracy_as_is"), default="accuracy_head_refit",
                   help="which test accuracy (default: head re-fit)")
    p.add_argument("--seconds", type=_float_in(0.0, 3600.0, low_open=True, what="seconds"), default=defaults.TIMING_S,
                   help=f"timing per depth, all depths in turn (default {defaults.TIMING_S:g})")
    p.set_defaults(func=_cmd_pick)

    p = sub.add_parser("benchmark", help="throughput, latency, FLOPs, memory and storage: full vs pruned at --depth")
    _add_task_args(p)
    p.add_argument("--depth", type=_positive, required=True, help="blocks kept")
    p.add_argument("--batch-sizes", type=_positive, nargs="+", default=[1, 64], help="batch sizes to time (default: 1 64)")
    p.add_argument("--seconds", type=_float_in(0.0, 3600.0, low_open=True, what="seconds"), default=2.0, help="timing per model and batch size (default 2)")
    p.add_argument("--rounds", type=_int_at_least(1, 10_000), default=10, help="full and pruned timed in turn this many times (default 10)")
    p.add_argument("--precisions", nargs="+", choices=choices.PRECISIONS, metavar="PRECISION",
                   help="fp32 and/or bf16 (autocast), side by side (default: fp32, and bf16 where the device computes it "
                        "natively: CUDA, or a CPU with AVX-512 BF16 or AMX)")
    p.set_defaults(func=_cmd_benchmark)

    p = sub.add_parser("prune", help="cut the task at --depth and save its checkpoint (kept adapters + head + depth)")
    _add_task_args(p)
    p.add_argument("--depth", type=_positive, required=True, help="blocks kept")
    p.add_argument("--out", required=True, help="task checkpoint to write (.safetensors)")
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser("export", help="the configuration (why this depth, what it gives) and the pruned task checkpoint")
    _add_task_args(p)
    _add_rule_args(p)
    p.add_argument("--depth", type=_positive, help="blocks kept (default: the SLS recommendation)")
    p.add_argument("--format", choices=("json", "yaml"), default="json", help="configuration format (default json)")
    p.add_argument("--seconds", type=_float_in(0.0, 3600.0, low_open=True, what="seconds"), default=defaults.TIMING_S,
                   help=f"timing per depth for the measured speed it records, all depths in turn (default {defaults.TIMING_S:g})")
    p.add_argument("--as", dest="as_format", choices=("slsviz", *choices.EXPORT_FORMATS), default="slsviz",
                   help="slsviz: the configuration and the pruned task checkpoint (default). The model cut at --depth "
                        "for the user's own tools, with a model card: timm (timm.create_model(arch, depth=D), "
                        "LoRA/RepAdapter merged), transformers (ViTForImageClassification, num_hidden_layers=D, "
                        "merged), peft (a LoRA adapter folder and its base cut to D blocks), official (the SLS "
                        "code's <name>_<D>blocks.pt and task config)")
    p.add_argument("--out", default="out", help="folder for slsviz-config.* and task-depth<d>.safetensors, or the "
                                                "--as format's files (default: out)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("sweep", help="many tasks x criteria x alphas x seeds from a YAML spec, here or on Ray; one results table")
    p.add_argument("spec", help="the sweep spec (YAML; see examples/sweep_quick.yaml)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="run in this process or on Ray (default local)")
    p.add_argument("--address", help="an existing Ray cluster: auto, or ray://host:10001 (default: start one on this machine)")
    p.add_argument("--num-cpus", type=_int_at_least(1, _MAX_WORKERS), help="CPUs of the Ray cluster started here (default: all)")
    p.add_argument("--retries", type=_int_at_least(0, 100), default=0,
                   help="times a Ray task whose worker died runs again (default 0: recorded as failed)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write slsviz's cache of features and maps")
    p.add_argument("--out", default="sweep-out", help="folder for results.csv/.parquet, failures.csv, sweep.json, tasks/ (default: sweep-out)")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("leaderboard", help="which criterion lands nearest the oracle across a sweep's tasks, fixed and "
                                           "calibrated leave-one-task-out; (re)writes leaderboard.csv/.json")
    p.add_argument("folder", help="a sweep's output folder (slsviz sweep --out)")
    p.set_defaults(func=_cmd_leaderboard)
    return parser


def _add_output_args(p: argparse.ArgumentParser, files: str) -> None:
    """Where a command that scores layers writes, and how many maps it computes at once."""
    p.add_argument("--out", default="out", help=f"folder for {files} (default: out)")
    p.add_argument("--save-features", action="store_true", help="also write features.npz (the scored features and labels)")
    p.add_argument("--workers", type=_int_at_least(1, _MAX_WORKERS), help="maps computed at once (default: one per core); results do not depend on it")


def _add_rule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--projection", choices=choices.PROJECTIONS, default=defaults.PROJECTION,
                   help=f"2-D map (default: {defaults.PROJECTION}, the paper's)")
    p.add_argument("--metric", choices=list(choices.METRICS), default=defaults.METRIC,
                   help=f"score the rule reads (default: {defaults.METRIC})")
    p.add_argument("--space", choices=choices.SPACES, default=defaults.SPACE,
                   help=f"score the 2-D map or the raw features (default: {defaults.SPACE})")
    p.add_argument("--alpha", type=_float_in(0.0, 1.0, low_open=True, what="a fraction"), default=defaults.ALPHA, help=f"SLS threshold fraction (default {defaults.ALPHA})")


# Commands that write --out, and whether it is a folder; checked before any work starts.
_OUTPUTS = {"analyze": True, "export": True, "sweep": True, "train": False, "prune": False}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2: bad input or out of memory, with a one-line reason)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["app"]:  # the rest are Streamlit's options, which argparse must not read
        from slsviz.app import serve

        serve.run(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed --help, --version or its one-line error
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command in _OUTPUTS:
            from slsviz.storage import check_can_write

            check_can_write(args.out, folder=_OUTPUTS[args.command])
        result = args.func(args)
    except SlsvizError as exc:
        return _fail(str(exc))
    except (MemoryError, RuntimeError) as exc:
        from slsviz.device import is_out_of_memory

        if not is_out_of_memory(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _fail(f"Ran out of memory ({first[:160]}): lower --batch-size, --img-size or --limit, "
                     "or use a device with more free memory.")
    except KeyboardInterrupt:
        return _fail("Interrupted; nothing half-written was left behind.", code=130)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _note(note: str | None) -> None:
    """A fact the user should know about a result (not an error), on stderr."""
    if note:
        print(f"slsviz: note: {note}", file=sys.stderr)


def _fail(message: str, code: int = 2) -> int:
    """Print one line (newlines inside a reason are folded) and return the exit code."""
    print("slsviz: error: " + " ".join(message.split()), file=sys.stderr)
    return code
