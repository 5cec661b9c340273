"""Reduced-precision CPU paths: the auto rule, int8 (ONNX Runtime) and its cache, bf16 (torch), errors."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from conftest import AMX_FLAGS as SAPPHIRE_RAPIDS
from conftest import AVX2_FLAGS as AVX2
from test_backends import random_frames

from bisenetv2_ros.inference import cpu, int8
from bisenetv2_ros.inference.backends import BackendError
from bisenetv2_ros.inference.cpu import auto_precision, native_bf16, parse_cpuinfo
from bisenetv2_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.weights.known_weights import load_model

# ------------------------------------------------------------------------------------------------
# CPU flags and the auto rule (pure functions)


def test_parse_cpuinfo_x86_and_arm():
    x86 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 amx_bf16 avx512_bf16\n"
    assert parse_cpuinfo(x86) == ("Intel(R) Xeon(R) Platinum 8480+", frozenset({"fpu", "avx2", "amx_bf16", "avx512_bf16"}))
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp bf16 i8mm\nCPU part\t: 0xd0c\n"
    model, flags = parse_cpuinfo(arm)
    assert model == "" and {"asimddp", "i8mm"} <= flags


@pytest.mark.parametrize("flags,backend,calibration,machine,expected", [
    (SAPPHIRE_RAPIDS, "auto", True, "x86_64", ("bf16", "torch")),
    (AVX2 | {"avx512_bf16"}, "auto", False, "x86_64", ("bf16", "torch")),  # bf16 needs no calibration
    (SAPPHIRE_RAPIDS, "onnxruntime", True, "x86_64", ("int8", "onnxruntime")),  # a named backend is kept
    (AVX2, "auto", True, "x86_64", ("int8", "onnxruntime")),
    (AVX2, "auto", False, "x86_64", ("fp32", "auto")),  # int8 without calibration frames: never on noise
    (AVX2, "torch", True, "x86_64", ("fp32", "torch")),
    (frozenset({"sse4_2", "avx"}), "auto", True, "x86_64", ("fp32", "auto")),
    (frozenset({"fp", "asimd", "asimddp"}), "auto", True, "aarch64", ("int8", "onnxruntime")),
    (frozenset({"fp", "asimd"}), "auto", True, "aarch64", ("fp32", "auto")),
])
def test_auto_precision_rule(flags, backend, calibration, machine, expected):
    precision, chosen, reason = auto_precision(flags, backend, calibration, machine)
    assert (precision, chosen) == expected
    assert reason  # every choice says why


def test_native_bf16_flags():
    assert native_bf16(SAPPHIRE_RAPIDS) and native_bf16({"avx512_bf16"}) and not native_bf16(AVX2)


def test_quantizer_avoids_int16_saturation_without_vnni():
    assert int8.quantizer_settings(AVX2)["reduce_range"] is True
    assert int8.quantizer_settings(SAPPHIRE_RAPIDS)["reduce_range"] is False


def test_segmenter_auto_follows_the_flags(tiny_weights, tmp_path, monkeypatch, caplog):
    """Wiring of auto in create_backend, with the CPU's flags replaced."""
    def fake(flags):
        monkeypatch.setattr(cpu, "cpu_info", lambda: cpu.CpuInfo("Fake CPU", frozenset(flags), "AVX512"))

    fake(SAPPHIRE_RAPIDS)
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        # calibration_images (the node passes it when set) is dropped when auto picks another path
        seg = Segmenter(tiny_weights, device="cpu", backend_options={"calibration_images": str(tmp_path)})
    assert (seg.backend_name, seg.precision) == ("torch", "bf16")
    assert "precision auto -> bf16 with the torch backend" in caplog.text and "amx_bf16" in caplog.text
    fake(AVX2)
    # The synthetic checkpoint's training frames are unknown: fp32, not int8 on made-up frames.
    assert Segmenter(tiny_weights, device="cpu").precision == "fp32"
    folder = tmp_path / "calib"
    folder.mkdir()
    for i, frame in enumerate(random_frames((3, 48, 64))):
        cv2.imwrite(str(folder / f"{i}.png"), frame)
    seg = Segmenter(tiny_weights, device="cpu", backend_options={"calibration_images": str(folder)},
                    engine_cache_dir=tmp_path / "cache")
    assert (seg.backend_name, seg.precision) == ("onnxruntime", "int8")
    assert Segmenter(tiny_weights, device="cpu", precision="fp32").precision == "fp32"  # one parameter away


def test_default_calibration_folder(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert int8.default_calibration_folder("camvid:train", repo) is None  # not present
    frames = tmp_path / "shared" / "data" / "camvid" / "train"
    frames.mkdir(parents=True)
    assert int8.default_calibration_folder("camvid:train", repo) == frames.resolve()
    assert int8.default_calibration_folder("camvid", repo) == frames.resolve()
    assert int8.default_calibration_folder("synthetic", repo) is None


def test_drive_disjoint_weights_calibrate_on_their_own_drives_only(tmp_path, monkeypatch):
    """Weights trained on camvid:drive_train calibrate on drives 0006R0/0016E5 of the train folder,
    never on the held-out drive 0001TP that measures them."""
    repo = tmp_path / "repo"
    repo.mkdir()
    frames = tmp_path / "shared" / "data" / "camvid" / "train"
    frames.mkdir(parents=True)
    for name in ("0001TP_006690", "0006R0_f00930", "0016E5_00390", "0016E5_00420"):
        cv2.imwrite(str(frames / f"{name}.png"), np.full((8, 8, 3), 7, np.uint8))
    assert int8.default_calibration_folder("camvid:drive_train", repo) == frames.resolve()
    assert int8.training_frame_prefixes("camvid:drive_train") == ("0006R0", "0016E5")
    assert int8.training_frame_prefixes("camvid:train") == ()
    monkeypatch.setattr(int8, "REPOSITORY_ROOT", repo)
    monkeypatch.setattr(int8.default_calibration_folder, "__defaults__", (repo,))
    chosen = int8.CalibrationSet(dataset="camvid:drive_train").files
    assert [p.stem for p in chosen] == ["0006R0_f00930", "0016E5_00390", "0016E5_00420"]
    assert len(int8.CalibrationSet(dataset="camvid:train").files) == 4


# ------------------------------------------------------------------------------------------------
# Clear errors


UNSUPPORTED = [  # (backend, device, precision) -> what the error says
    ("torch", "cpu", "fp16", "no CPU backend runs fp16 faster than fp32"),
    ("onnxruntime", "cpu", "fp16", "no CPU backend runs fp16"),
    ("auto", "cpu", "fp16", "no CPU backend runs fp16"),
    ("torch", "cpu", "int8", "'int8' is not available with the torch backend on cpu.*onnxruntime on cpu"),
    ("onnxruntime", "cpu", "bf16", "'bf16' is not available with the onnxruntime backend"),
    ("tensorrt", "auto", "bf16", "'bf16' is not available with the tensorrt backend"),
    ("onnxruntime", "cpu", "int8", "needs calibration frames and none are known for weights trained on "
                                   "'synthetic'.*calibration_images"),
]


@pytest.mark.parametrize("backend, device, precision, message", UNSUPPORTED)
def test_unsupported_precisions_fail_clearly(tiny_weights, backend, device, precision, message):
    with pytest.raises(BackendError, match=message):
        Segmenter(tiny_weights, backend=backend, device=device, precision=precision)


def test_bad_calibration_sets_fail_clearly(tiny_weights, tmp_path):
    with pytest.raises(BackendError, match="does not exist"):
        Segmenter(tiny_weights, device="cpu", precision="int8",
                  backend_options={"calibration_images": str(tmp_path / "missing")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match="holds no images"):
        Segmenter(tiny_weights, device="cpu", precision="int8",
                  backend_options={"calibration_images": str(tmp_path / "empty")})
    with pytest.raises(BackendError, match="calibration_frames must be uint8"):
        Segmenter(tiny_weights, device="cpu", precision="int8",
                  backend_options={"calibration_frames": np.zeros((2, 8, 8), np.uint8)})


def test_bf16_without_native_support_fails_clearly(tiny_weights, simulated_cpu):
    simulated_cpu(AVX2)
    with pytest.raises(BackendError, match="'bf16' needs a CPU with native bf16 .*amx_bf16 or avx512_bf16.*'fp32'"):
        Segmenter(tiny_weights, backend="torch", device="cpu", precision="bf16")


# ------------------------------------------------------------------------------------------------
# int8 cache


def _int8_backend(tiny, cache, frames):
    model, info = tiny
    return OnnxRuntimeBackend(model, info.normalization, info.train_resolution, "cpu", "int8",
                              calibration_frames=frames, cache_dir=cache)


@pytest.fixture(scope="module")
def tiny(tiny_weights):
    return load_model(tiny_weights)


def test_int8_cache_hit_stale_and_corrupt(tiny, tmp_path, monkeypatch, caplog):
    frames = random_frames((1, 64, 96), seed=3)
    calibration = random_frames((4, 64, 96), seed=4)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        first = _int8_backend(tiny, cache, calibration).run(frames)
    files = list(cache.glob("onnxruntime-*-int8-*.engine"))
    assert len(files) == 1 and "engine cache miss" in caplog.text
    built = files[0].read_bytes()

    # A second backend finds the file and never quantises.
    calls = []
    real = int8.quantize_fused_onnx
    monkeypatch.setattr(int8, "quantize_fused_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        assert np.array_equal(_int8_backend(tiny, cache, calibration).run(frames), first)
    assert calls == [] and "engine cache hit" in caplog.text

    # Other calibration frames: same slot, stale key -> rebuilt with a log line naming what changed.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        _int8_backend(tiny, cache, random_frames((4, 64, 96), seed=5)).run(frames)
    assert calls == [1] and "is stale (changed: calibration)" in caplog.text
    assert files[0].read_bytes() != built

    # A truncated file is corrupt -> rebuilt, and the rebuilt file is whole again.
    files[0].write_bytes(files[0].read_bytes()[:-100])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        assert np.array_equal(_int8_backend(tiny, cache, calibration).run(frames), first)
    assert calls == [1, 1] and "is corrupt" in caplog.text
    assert files[0].read_bytes() == built  # quantisation is deterministic
    assert not list(cache.glob(".*.tmp")), "atomic writes leave no temporary files"


def test_int8_keeps_preprocessing_and_labels_tail_float(tiny):
    import onnx

    model, info = tiny
    from bisenetv2_ros.inference.onnx_graph import fused_onnx_bytes

    data = fused_onnx_bytes(model, info.normalization, info.train_resolution, "dynamic", channels_last_tail=True)
    quantised, kept = int8.network_nodes(onnx.load_from_string(data))
    assert quantised and all(name.startswith("/model/") for name in quantised)
    assert "/model/head/classifier/Conv" in kept and "/model/Resize" in kept and "/ArgMax" in kept
    assert any(name in kept for name in ("/Mul", "/Add"))  # the normalisation
    graph = onnx.load_from_string(int8.quantize_fused_onnx(data, random_frames((2, 64, 96)))).graph
    producers = {out: node for node in graph.node for out in node.output}
    argmax = next(node for node in graph.node if node.op_type == "ArgMax")
    tail = producers[producers[argmax.input[0]].input[0]]  # ArgMax <- Resize <- Transpose
    assert producers[tail.input[0]].op_type == "Conv", "the classifier's logits reach the tail unquantised"
    assert sum(node.op_type == "QuantizeLinear" for node in graph.node) > 10


# ------------------------------------------------------------------------------------------------
# Accuracy


def test_bf16_emulated_labels_match_fp32(tiny_weights):
    """The bf16 code path (bf16 network, float32 tail), run emulated where the CPU lacks bf16."""
    frames = random_frames((2, 64, 96), seed=7)
    fp32 = Segmenter(tiny_weights, backend="torch", device="cpu", precision="fp32").segment_batch(frames)
    seg = Segmenter(tiny_weights, backend="torch", device="cpu", precision="bf16",
                    backend_options={"emulate_bf16": True})
    bf16 = seg.segment_batch(frames)
    assert seg.precision == "bf16" and bf16.dtype == np.uint8 and bf16.shape == fp32.shape
    assert (bf16 == fp32).mean() >= 0.95


def _camvid_frames(camvid_dir, count):
    files = int8.calibration_files(camvid_dir / "val", count)
    return [np.ascontiguousarray(cv2.imread(str(p))[..., ::-1]) for p in files]


def test_int8_label_agreement_on_camvid(camvid_dir, tmp_path):
    frames = _camvid_frames(camvid_dir, 8)
    fp32 = Segmenter("camvid", backend="onnxruntime", device="cpu", precision="fp32")
    quantised = Segmenter("camvid", backend="onnxruntime", device="cpu", precision="int8", engine_cache_dir=tmp_path,
                          backend_options={"calibration_images": str(camvid_dir / "train")})
    agreement = np.mean([(quantised.segment(f) == fp32.segment(f)).mean() for f in frames])
    assert agreement >= 0.99, f"int8 labels agree with fp32 on {100 * agreement:.2f} % of pixels"


def test_bf16_label_agreement_on_camvid(camvid_dir):
    here = cpu.cpu_info()  # at run time: the host's, or the family BISENETV2_TEST_CPU simulates
    if not native_bf16(here.flags):
        pytest.skip(f"this CPU ({here.model}) has no native bf16 (amx_bf16 / avx512_bf16); emulated bf16 is "
                    "checked on a tiny model above")
    frames = _camvid_frames(camvid_dir, 8)
    fp32 = Segmenter("camvid", backend="torch", device="cpu", precision="fp32")
    bf16 = Segmenter("camvid", backend="torch", device="cpu", precision="bf16")
    agreement = np.mean([(bf16.segment(f) == fp32.segment(f)).mean() for f in frames])
    assert agreement >= 0.99, f"bf16 labels agree with fp32 on {100 * agreement:.2f} % of pixels"
