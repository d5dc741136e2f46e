"""A cheaper forward pass? Each option beside the fp32 pass, on the default task and real images.

The shipped default task (DINOv2 ViT-S/14 + Convpass at 112 px) on the first 64 test images of mnist5k, one
batch of 64: milliseconds per image (the best of 3 timed runs after one untimed), and how far each option
moves the logits from fp32's (the largest absolute difference, and on how many images the predicted class
stays the same). Options: bf16 autocast, a bf16 copy of the model, int8 dynamic quantization of the
Linear layers (CPU), onnxruntime in fp32 (CPU; the export's own seconds reported beside), and fp16
autocast on CUDA. Whatever does not hold the fp32 figures cannot replace the exact pass; it could only
give provisional ones.

Run: .venv/bin/python benchmarks/pass_precision.py [--device auto]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from common import default_task
from report import write_section

from slsviz.data import make_loader
from slsviz.device import bf16_native, describe_device


def best_ms(run, x: torch.Tensor, repeats: int = 3) -> tuple[float, np.ndarray]:
    """Milliseconds per image of ``run(x)`` (the best of ``repeats`` after one untimed run), and its logits."""
    out = run(x)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - started)
    return 1000 * min(times) / len(x), np.asarray(torch.as_tensor(out).float().cpu())


def options(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> dict:
    """Each option's ``run(x) -> logits`` and a note; those that do not apply on ``device`` are left out."""
    runs = {"fp32": (model, "")}
    runs["bf16 autocast"] = (lambda t: _autocast(model, t, torch.bfloat16), "")
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    runs["bf16 copy of the model"] = (lambda t: bf16(t.to(torch.bfloat16)), "")
    if device.type == "cuda":
        runs["fp16 autocast"] = (lambda t: _autocast(model, t, torch.float16), "")
    else:
        with warnings.catch_warnings():  # torch.ao's eager quantization is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
        runs["int8 dynamic (Linear layers)"] = (int8, "")
        runs["onnxruntime, fp32"] = _onnxruntime(model, x)
    return runs


def _autocast(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    with torch.autocast(x.device.type, dtype=dtype):
        return model(x)


def _onnxruntime(model: torch.nn.Module, x: torch.Tensor) -> tuple:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(folder) / "task.onnx"
        started = time.perf_counter()
        torch.onnx.export(model, (x[:1],), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}},
                          opset_version=17)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        seconds = time.perf_counter() - started
    return (lambda t: session.run(None, {"x": t.numpy()})[0],
            f"export and session: {seconds:.1f} s, once per model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--print-only", action="store_true", help="print the table; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    loaded = default_task(args.device)
    device, model = loaded.backbone.device, loaded.model.eval()
    x = next(iter(make_loader(loaded.data, "test", loaded.preprocess, 64)))[0].to(device)
    rows, reference = [], None
    with torch.inference_mode():
        for name, (run, note) in options(model, x, device).items():
            ms, logits = best_ms(run, x)
            if reference is None:
                reference = (ms, logits)  # fp32 comes first
            same = int((logits.argmax(1) == reference[1].argmax(1)).sum())
            rows.append(f"| {name} | {ms:.1f} | {reference[0] / ms:.2f}x | {np.abs(logits - reference[1]).max():.2g} | "
                        f"{same} / {len(x)} | {note} |")
    body = (f"The shipped default task at {loaded.backbone.img_size} px on {describe_device(device)} "
            f"({torch.get_num_threads()} threads; bf16 native here: {'yes' if bf16_native(device) else 'no'}), "
            f"one batch of the first {len(x)} test images:\n\n"
            "| pass | ms / image | speed vs fp32 | max abs logit difference from fp32 | same predicted class | note |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows))
    if args.print_only:
        print(body)
        return
    write_section("pass_precision", "A cheaper pass? fp32 beside bf16, int8 and onnxruntime", "python benchmarks/"
                  "pass_precision.py", body, device=device)


if __name__ == "__main__":
    main()
