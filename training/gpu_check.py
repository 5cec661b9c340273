"""Everything a lent NVIDIA GPU must check, in one run that prints one JSON object (scripts/gpu_check.sh).

Run it first whenever a GPU is at hand (docs/backends-and-speed.md#first-thing-on-a-gpu): PyTorch
preinstalled, no network, under 8 minutes. Sections, each ``ok``, ``skipped`` (with the reason) or
``failed`` (with the one-line error); a failed section never stops the others:

- environment: torch, CUDA, the GPU, which of the package's dependencies import;
- labels: torch CUDA fp32 and fp16 labels against torch CPU fp32 on real CamVid frames (>= 99.5 % equal);
- onnxruntime_cuda, tensorrt: the same comparison where importable, else skipped with the reason;
- paper_speed: the paper's protocol (random C_t 1024 network, 1024x512 input, 2048x1024 frames),
  batch 1 and the multi-camera batch, torch fp16 and TensorRT fp16 (``bisenetv2 benchmark``);
- node_pipeline: the node's pipeline end to end with 1 and 4 cameras (``bisenetv2 benchmark-cameras``);
- training_amp: 50 training iterations with fp16 AMP, then the same through torchrun with one process.

``--wired`` checks only that all of it is wired: the same code on the CPU, a tiny size, 2 iterations,
fp32 / bf16 in place of fp16 (CI runs it: test/test_gpu_check.py). Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
AGREEMENT = 0.995  # labels equal to CPU fp32, the bar for fp16 / TensorRT
DEPENDENCIES = ("numpy", "cv2", "yaml", "onnx", "onnxruntime", "tensorrt", "rosbags", "openvino")


class Skipped(Exception):
    """A section that cannot run here; the message says why."""


class Plan:
    """What each section runs: the real GPU plan, or the wired check's small CPU stand-in."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.wired = args.wired
        self.device = "cpu" if args.wired else "cuda"
        self.weights = args.weights
        self.data = Path(args.data) if args.data else None
        self.frames = 2 if args.wired else 6
        self.half = "fp32" if args.wired else "fp16"  # the CPU has no fp16 path: the wired run repeats fp32
        self.iterations = 2 if args.wired else 50
        self.deadline = time.monotonic() + args.budget_s
        self.paper = (["--input-size", "64x128", "--frame-size", "128x256", "--iters", "2", "--warmup", "1"] if args.wired
                      else ["--input-size", "512x1024", "--frame-size", "1024x2048", "--iters", "50", "--warmup", "10"])
        self.batches = [1, 2] if args.wired else [1, 4]

    def left_s(self) -> float:
        return self.deadline - time.monotonic()


def run_python(plan: Plan, arguments: list[str], limit_s: float, env: dict[str, str] | None = None) -> str:
    """stdout of ``python ARGUMENTS`` in the repository; a failure raises with the last stderr line."""
    timeout = min(limit_s, plan.left_s())
    if timeout < 5:
        raise Skipped("no time left in the 8-minute budget")
    result = subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()] or ["(no output)"]
        raise RuntimeError(f"exit {result.returncode}: {lines[-1]}")
    return result.stdout


def real_frames(plan: Plan):
    """RGB frames of CamVid's val split (the held-out drive's images), else a skip saying where it looked."""
    import cv2

    folder = plan.data / "val" if plan.data else None
    files = sorted(folder.glob("*.png")) + sorted(folder.glob("*.jpg")) if folder and folder.is_dir() else []
    if not files:
        raise Skipped(f"no CamVid frames in {folder} (give --data DIR with val/)")
    step = max(1, len(files) // plan.frames)
    from bisenetv2_ros.image_files import read_image_file

    return [cv2.cvtColor(read_image_file(path), cv2.COLOR_BGR2RGB) for path in files[::step][:plan.frames]], folder


def compare_labels(plan: Plan, paths: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Labels of each (backend, device, precision) against torch CPU fp32 on the same real frames."""
    import numpy as np

    from bisenetv2_ros.inference.segmenter import Segmenter

    frames, folder = real_frames(plan)
    reference = Segmenter(plan.weights, backend="torch", device="cpu", precision="fp32")
    expected = [reference.segment(frame) for frame in frames]
    result: dict[str, Any] = {"frames": len(frames), "from": str(folder), "reference": "torch cpu fp32"}
    for backend, device, precision in paths:
        segmenter = Segmenter(plan.weights, backend=backend, device=device, precision=precision)
        equal = float(np.mean([np.mean(segmenter.segment(frame) == labels) for frame, labels in zip(frames, expected)]))
        result[f"{backend} {device} {precision}"] = {"labels_equal": round(equal, 5), "pass": equal >= AGREEMENT}
    if not all(entry["pass"] for entry in result.values() if isinstance(entry, dict)):
        raise RuntimeError(f"labels below {AGREEMENT:.1%} equal to CPU fp32: {json.dumps(result)}")
    return result


def environment(plan: Plan) -> dict[str, Any]:
    import torch

    found = {}
    for name in DEPENDENCIES:
        try:
            module = importlib.import_module(name)
            found[name] = str(getattr(module, "__version__", "present"))
        except Exception as error:  # noqa: BLE001 - a broken install is reported, not raised
            found[name] = f"missing ({type(error).__name__})"
    result = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "modules": found,
              "python": sys.version.split()[0], "wired": plan.wired}
    if torch.cuda.is_available():
        result.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                      memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    elif not plan.wired:
        raise RuntimeError("torch sees no CUDA GPU")
    return result


def labels(plan: Plan) -> dict[str, Any]:
    return compare_labels(plan, [("torch", plan.device, "fp32"), ("torch", plan.device, plan.half)])


def onnxruntime_cuda(plan: Plan) -> dict[str, Any]:
    try:
        import onnxruntime
    except ImportError as error:
        raise Skipped(f"onnxruntime does not import ({error})") from None
    providers = onnxruntime.get_available_providers()
    if not plan.wired and "CUDAExecutionProvider" not in providers:
        raise Skipped(f"onnxruntime has no CUDA provider (providers: {', '.join(providers)}; needs onnxruntime-gpu)")
    return compare_labels(plan, [("onnxruntime", plan.device, "fp32")])


def tensorrt(plan: Plan) -> dict[str, Any]:
    try:
        import tensorrt as trt
    except ImportError as error:
        raise Skipped(f"tensorrt does not import ({error})") from None
    if plan.wired:
        raise Skipped(f"tensorrt {trt.__version__} imports; its engines need a GPU")
    return {"tensorrt": trt.__version__, **compare_labels(plan, [("tensorrt", "cuda", "fp32"), ("tensorrt", "cuda", "fp16")])}


def paper_speed(plan: Plan) -> dict[str, Any]:
    paths = [("torch", plan.half)]
    if not plan.wired and importlib.util.find_spec("tensorrt") is not None:
        paths.append(("tensorrt", "fp16"))
    result = {}
    for backend, precision in paths:
        for batch in plan.batches:
            out = run_python(plan, ["-m", "bisenetv2_ros.benchmarks.backends_benchmark", "--weights", "random",
                                    "--backend", backend, "--device", plan.device, "--precision", precision,
                                    "--batch", str(batch), *plan.paper, "--json"], 240)
            report = json.loads(out)
            result[f"{backend} {precision} batch {batch}"] = {
                part: report[part] for part in ("model_only", "end_to_end") if isinstance(report.get(part), dict)}
            result[f"{backend} {precision} batch {batch}"]["gpu_peak_allocated_mib"] = report.get("gpu_peak_allocated_mib")
    return result


def node_pipeline(plan: Plan) -> dict[str, Any]:
    size = ["--frame-size", "48x64", "--seconds", "1", "--warmup", "0.5"] if plan.wired else [
        "--frame-size", "1080x1920", "--seconds", "5", "--warmup", "2"]
    out = run_python(plan, ["-m", "bisenetv2_ros.benchmarks.cameras_benchmark", "--weights", plan.weights,
                            "--backend", "torch", "--device", plan.device, "--cameras", "2" if plan.wired else "1,4",
                            "--rounds", "1", *size, "--json"], 180)
    return {"benchmark_cameras": json.loads(out)}


def synthetic_folder(root: Path) -> Path:
    """A small learnable folder dataset (stripes of three grey levels), for runs without CamVid."""
    import cv2
    import numpy as np

    from bisenetv2_ros.fileio import write_atomic

    write_atomic(root / "classes.txt", b"dark\nbright\nmid\n")
    rng = np.random.default_rng(0)
    for index in range(4):
        label = np.zeros((32, 48), np.uint8)
        label[:, int(rng.integers(8, 24)):] = 1
        label[:, int(rng.integers(30, 44)):] = 2
        image = np.repeat(np.choose(label, [20, 230, 120]).astype(np.uint8)[..., None], 3, axis=2)
        for split in ("train", "val"):
            for kind, pixels in (("images", image), ("labels", label)):
                # written by Python, not cv2.imwrite (which answers a failure with False only)
                write_atomic(root / split / kind / f"{index:03d}.png", cv2.imencode(".png", pixels)[1].tobytes())
    return root


def training_amp(plan: Plan) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        if plan.wired or plan.data is None:
            root = synthetic_folder(Path(scratch) / "stripes")
            data = ["--set", "data.dataset=folder", "--set", f"data.root={root}", "--set", "data.crop_size=[32, 48]",
                    "--set", "data.eval_size=[32, 48]", "--set", "data.base_size=null", "--set", "run.batch_size=2",
                    "--set", "data.train_split=train", "--set", "data.val_split=val",
                    "--set", "model.width_multiplier=0.25", "--set", "model.head_channels=16"]
        else:
            data = ["--data-root", str(plan.data), "--set", "run.batch_size=16"]
        amp = "bf16" if plan.wired else "fp16"
        common = ["training/train.py", "--config", "training/configs/camvid.yaml", *data, "--iterations",
                  str(plan.iterations), "--set", f"run.amp={amp}", "--set", f"run.device={plan.device}",
                  "--set", "data.workers=0" if plan.wired else "data.workers=4", "--set", "run.eval_every=100000",
                  "--set", "run.checkpoint_every=100000", "--set", "run.log_every=1", "--no-progress"]
        result = {}
        for name, launcher in (("single process", []), ("torchrun, 1 process",
                                                         ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"])):
            out_dir = Path(scratch) / name.split(",")[0].replace(" ", "_")
            started = time.monotonic()
            run_python(plan, [*launcher, *common, "--out-dir", str(out_dir)], 200)
            log = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines() if line.strip()]
            losses = [entry["loss"] for entry in log if "loss" in entry]
            if not losses or any(loss != loss for loss in losses):
                raise RuntimeError(f"{name}: no finite loss logged ({losses[:5]})")
            result[name] = {"iterations": plan.iterations, "amp": amp, "seconds": round(time.monotonic() - started, 1),
                            "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4)}
        return result


SECTIONS: dict[str, Callable[[Plan], dict[str, Any]]] = {
    "environment": environment, "labels": labels, "onnxruntime_cuda": onnxruntime_cuda, "tensorrt": tensorrt,
    "paper_speed": paper_speed, "node_pipeline": node_pipeline, "training_amp": training_amp,
}


def main(argv: list[str] | None = None) -> int:
    from bisenetv2_ros.cli.arguments import float_in_range  # the package's bounded numbers (ROOT is on the path)

    parser = argparse.ArgumentParser(prog="training/gpu_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--wired", action="store_true", help="CPU only, tiny sizes: check the wiring (CI)")
    parser.add_argument("--weights", default="camvid", help="weights for the label and node checks (default camvid)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"),
                        help="CamVid folder with val/ (default ../shared/data/camvid)")
    parser.add_argument("--budget-s", type=float_in_range(0.0, 86400.0, low_open=True), default=470.0,
                        help="stop starting sections after this many seconds (default 470, at most a day)")
    parser.add_argument("--only", default=None, help="comma-separated sections to run (default all)")
    args = parser.parse_args(argv)
    plan = Plan(args)
    chosen = args.only.split(",") if args.only else list(SECTIONS)
    report: dict[str, Any] = {"script": "training/gpu_check.py", "wired": plan.wired, "sections": {}}
    started = time.monotonic()
    for name in chosen:
        section_started = time.monotonic()
        try:
            if plan.left_s() < 5:
                raise Skipped("no time left in the budget")
            entry = {"status": "ok", **SECTIONS[name](plan)}
        except Skipped as reason:
            entry = {"status": "skipped", "reason": str(reason)}
        except Exception as error:  # noqa: BLE001 - one failed section must not hide the others
            entry = {"status": "failed", "error": f"{type(error).__name__}: {' '.join(str(error).split())[:2000]}"}
            print(traceback.format_exc(), file=sys.stderr)
        entry["seconds"] = round(time.monotonic() - section_started, 1)
        report["sections"][name] = entry
        print(f"gpu_check: {name}: {entry['status']} ({entry['seconds']} s)", file=sys.stderr)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["failed"] = [name for name, entry in report["sections"].items() if entry["status"] == "failed"]
    print(json.dumps(report, indent=1))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
