"""The out-of-distribution score (inference/ood.py), its calibration in the checkpoint (ood_calibration.py),
`bisenetv2 calibrate-ood` / `info` / `export`, and `frames.jsonl` from `bisenetv2 segment`."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from bisenetv2_ros.benchmarks import corruptions
from bisenetv2_ros.benchmarks.ood_benchmark import auroc
from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.inference.ood import (BANDS, PARTS, OODCalibration, OODScorer, calibrate, frame_evidence,
                                         ood_score)
from bisenetv2_ros.inference.ood_calibration import (OODCalibrationError, calibrate_ood_file, embed_ood_calibration,
                                                     frame_files)
from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.ros import messages
from bisenetv2_ros.weights.checkpoint import load_checkpoint

C = 11


def street(seed: int, height: int = 48, width: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, labels, confidence) of a synthetic street: sky on top, buildings, road below; textured."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.uint8)
    labels[height // 3:2 * height // 3] = 1
    labels[2 * height // 3:] = 3
    labels[rng.integers(0, height, 20), rng.integers(0, width, 20)] = 8
    confidence = rng.integers(170, 256, (height, width)).astype(np.uint8)
    frame = rng.integers(40, 200, (height, width, 3)).astype(np.uint8)
    return frame, labels, confidence


def evidence_of(frame, labels, confidence):
    return frame_evidence(labels, confidence, C, frame)


@pytest.fixture(scope="module")
def street_calibration() -> OODCalibration:
    references = [evidence_of(*street(i)) for i in range(6)]
    held_out = [evidence_of(*street(100 + i)) for i in range(8)]
    return calibrate(references, held_out, {"split": "streets", "frames": 6}, {"split": "other streets"})


def test_frame_evidence_reads_layout_confidence_detail_and_clipping():
    frame, labels, confidence = street(0)
    evidence = evidence_of(frame, labels, confidence)
    assert evidence.layout.shape == (BANDS * C,)
    np.testing.assert_allclose(evidence.layout.reshape(BANDS, C).sum(axis=1), 1.0)
    assert evidence.layout[0] > 0.95 and evidence.layout[2 * C + 3] > 0.9  # sky on top, road at the bottom
    assert evidence.unsure_fraction == 0.0 and 0.66 < evidence.mean_confidence <= 1.0
    assert evidence.clipped_fraction == 0.0 and evidence.detail > 10
    white = np.full_like(frame, 255)
    assert evidence_of(white, labels, confidence).clipped_fraction == 1.0
    assert evidence_of(white, labels, confidence).detail == 0.0
    with pytest.raises(ValueError, match="must share one"):
        frame_evidence(labels, confidence[:, 1:], C, frame)


def test_the_score_flags_what_the_held_out_frames_never_show(street_calibration):
    threshold = street_calibration.threshold
    assert 0 < threshold < 5
    for seed in range(200, 206):  # more frames like the held-out ones pass
        assert ood_score(evidence_of(*street(seed)), street_calibration) <= threshold
    frame, labels, confidence = street(300)
    upside_down = evidence_of(frame[::-1], labels[::-1], confidence[::-1])
    unsure = evidence_of(frame, labels, confidence // 3)
    blurred = evidence_of(cv2.blur(frame, (9, 9)), labels, confidence)
    clipped = evidence_of(np.full_like(frame, 255), labels, confidence)
    for name, evidence in [("upside down", upside_down), ("unsure", unsure), ("blurred", blurred), ("clipped", clipped)]:
        assert ood_score(evidence, street_calibration) > threshold, name


def test_calibration_round_trips_through_a_dict_and_rejects_others(street_calibration):
    stored = json.loads(json.dumps(street_calibration.to_dict()))  # plain data, as torch.save keeps it
    again = OODCalibration.from_dict(stored)
    assert again.threshold == pytest.approx(street_calibration.threshold)
    assert set(again.scales) == set(PARTS) and again.measured_on == {"split": "other streets", "frames": 8}
    np.testing.assert_allclose(again.references, street_calibration.references, atol=1e-4)
    seen = OODCalibration.from_dict({**stored, "measured_on": {"split": "camvid:drive_val", "frames": 62,
                                                               "seen_in_training": True}})
    assert seen.summary().endswith("measured on 62 frames of camvid:drive_val (frames the model trained on), "
                                   "references 6 frames of streets")
    assert OODCalibration.from_dict({**stored, "threshold": float("nan")}) is None
    assert OODCalibration.from_dict(None) is None
    assert OODCalibration.from_dict({**stored, "format": 99}) is None
    assert OODCalibration.from_dict({**stored, "scales": {"layout": 1.0}}) is None
    assert not OODScorer({**stored, "references": [[0.5] * (BANDS * 5)]}, C).calibrated  # other class count
    with pytest.raises(ValueError, match="at least 3 reference and 4 held-out"):
        calibrate([evidence_of(*street(0))], [evidence_of(*street(1))] * 4, {}, {})


def test_an_uncalibrated_scorer_reports_the_raw_score_and_no_flag():
    frame, labels, confidence = street(0)
    score, flagged = OODScorer(None, C).score(frame, labels, np.full_like(confidence, 100))
    assert (score, flagged) == (1.0, None)  # every pixel unsure, no threshold to judge it by


def test_auroc_is_the_share_of_pairs_ranked_right():
    assert auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert auroc([0.1, 0.3], [0.2, 0.3]) == pytest.approx(0.625)


@pytest.mark.parametrize("name", sorted(corruptions.CORRUPTIONS))
def test_every_corruption_keeps_the_frame_shape_and_worsens_with_severity(name):
    frame = cv2.resize(np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8), (64, 48))
    outputs = [corruptions.CORRUPTIONS[name](frame, s, np.random.default_rng(1)) for s in range(1, 6)]
    assert all(o.shape == frame.shape and o.dtype == np.uint8 for o in outputs)
    assert not np.array_equal(outputs[0], outputs[4])
    with pytest.raises(ValueError, match="severity must be 1..5"):
        corruptions.CORRUPTIONS[name](frame, 6, np.random.default_rng(1))


# --------------------------------------------------------------------------------------------
# In the checkpoint, through the command line


def write_frames(folder, count: int, seed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rng = np.random.default_rng(seed + i)
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), cv2.resize(small, (64, 48), interpolation=cv2.INTER_LINEAR))
    return folder


@pytest.fixture(scope="module")
def calibrated_tiny(tiny_weights, tmp_path_factory):
    path = tmp_path_factory.mktemp("ood") / "tiny_ood.pt"
    shutil.copyfile(tiny_weights, path)
    frames = write_frames(tmp_path_factory.mktemp("frames") / "camera", 12)
    assert cli.main(["calibrate-ood", str(path), str(frames)]) == 0
    return path


def test_calibrate_ood_stores_the_calibration_and_info_shows_it(calibrated_tiny, tiny_weights, tmp_path, capsys):
    stored = load_checkpoint(calibrated_tiny).info.ood
    calibration = OODCalibration.from_dict(stored)
    assert calibration is not None and calibration.threshold > 0
    assert calibration.measured_on == {"split": "camera", "frames": 6, "seen_in_training": False}
    assert calibration.references_from == {"split": "camera (even frames)", "frames": 6}
    before, after = load_checkpoint(tiny_weights), load_checkpoint(calibrated_tiny)
    assert all((before.state_dict[k] == after.state_dict[k]).all() for k in before.state_dict)  # weights untouched
    capsys.readouterr()
    assert cli.main(["info", str(calibrated_tiny)]) == 0
    assert f"ood calibration:  threshold {calibration.threshold:.3f}, measured on 6 frames of camera" in capsys.readouterr().out
    assert cli.main(["info", str(tiny_weights), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ood_calibration"].startswith("uncalibrated (bisenetv2 calibrate-ood")
    # export keeps it (the weights' dataset has no known frames to measure again)
    assert cli.main(["export", str(calibrated_tiny), "-o", str(tmp_path / "deploy.pt")]) == 0
    assert "ood calibration: kept: threshold" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "deploy.pt").info.ood == stored
    # removing it leaves the checkpoint uncalibrated
    embed_ood_calibration(tmp_path / "deploy.pt", None)
    assert load_checkpoint(tmp_path / "deploy.pt").info.ood is None


def test_calibrate_ood_errors_are_one_clear_line(tiny_weights, tmp_path, capsys):
    path = tmp_path / "t.pt"
    shutil.copyfile(tiny_weights, path)
    assert cli.main(["calibrate-ood", str(path)]) == 1
    assert "no held-out frames are known for weights trained on 'synthetic'" in capsys.readouterr().err
    assert cli.main(["calibrate-ood", str(path), str(write_frames(tmp_path / "few", 5))]) == 1
    assert "needs at least 4 held-out and 3 reference frames" in capsys.readouterr().err
    assert cli.main(["calibrate-ood", str(path), str(tmp_path / "nowhere")]) == 1
    assert "is neither a folder of frames nor a known frame set (camvid:drive_train" in capsys.readouterr().err
    assert load_checkpoint(path).info.ood is None


def read_records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_record(record, segmenter, frame, calibrated: bool = True):
    labels, confidence = segmenter.segment(frame, "bgr", confidence=True)
    score, flagged = OODScorer(segmenter.info.ood, len(segmenter.classes)).score(frame, labels, confidence)
    assert record["ood_score"] == pytest.approx(score, abs=1e-5)
    assert record["ood"] is (flagged if calibrated else None)
    assert record["mean_confidence"] == pytest.approx(confidence.mean() / 255.0, abs=1e-5)
    assert list(record["class_fractions"]) == list(segmenter.classes.names)
    counts = np.bincount(labels.ravel(), minlength=C)
    assert [record["class_fractions"][n] for n in segmenter.classes.names] == pytest.approx(counts / labels.size, abs=1e-5)


def test_frames_jsonl_for_a_folder_and_a_video(calibrated_tiny, tmp_path, capsys):
    segmenter = Segmenter(calibrated_tiny, backend="torch", device="cpu")
    folder = write_frames(tmp_path / "images", 3, seed=50)
    cv2.imwrite(str(folder / "black.png"), np.zeros((48, 64, 3), np.uint8))
    args = ["--weights", str(calibrated_tiny), "--backend", "torch", "--device", "cpu", "--quiet"]
    assert cli.main(["segment", str(folder), "-o", str(tmp_path / "out"), "--outputs", "labels", "--batch", "2", *args]) == 0
    records = read_records(tmp_path / "out" / "frames.jsonl")
    assert [r["file"] for r in records] == ["black.png", "frame_000.png", "frame_001.png", "frame_002.png"]
    for record in records:
        check_record(record, segmenter, cv2.imread(str(folder / record["file"])))
    assert records[0]["ood"] is True  # black
    flagged = sum(r["ood"] for r in records)
    assert f"{flagged} of 4 frames flagged out of distribution" in capsys.readouterr().out

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(4):
        writer.write(cv2.imread(str(folder / f"frame_{i % 3:03d}.png")))
    writer.release()
    capture, decoded = cv2.VideoCapture(str(video)), []
    while (frame := capture.read()[1]) is not None:
        decoded.append(frame)
    assert cli.main(["segment", str(video), "-o", str(tmp_path / "vid"), "--outputs", "color", *args]) == 0
    records = read_records(tmp_path / "vid" / "frames.jsonl")
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    for record, frame in zip(records, decoded):
        check_record(record, segmenter, frame)


def test_frames_jsonl_of_uncalibrated_weights_says_so(tiny_weights, tmp_path, capsys):
    folder = write_frames(tmp_path / "images", 2)
    assert cli.main(["segment", str(folder), "-o", str(tmp_path / "out"), "--outputs", "labels", "--weights",
                     str(tiny_weights), "--backend", "torch", "--device", "cpu", "--quiet"]) == 0
    records = read_records(tmp_path / "out" / "frames.jsonl")
    assert len(records) == 2 and all(r["ood"] is None and 0.0 <= r["ood_score"] <= 1.0 for r in records)
    assert "ood uncalibrated (bisenetv2 calibrate-ood)" in capsys.readouterr().out


def test_frames_jsonl_for_a_bag(calibrated_tiny, tmp_path, capsys):
    from rosbags.rosbag2 import StoragePlugin

    from test_bags import write_bag

    bag = tmp_path / "drive"
    expected = write_bag(bag, StoragePlugin.MCAP)["raw"]
    assert cli.main(["segment", str(bag), "--topic", "/camera/image", "-o", str(tmp_path / "out"), "--skip-bad",
                     "--weights", str(calibrated_tiny), "--backend", "torch", "--device", "cpu", "--quiet"]) == 0
    records = read_records(tmp_path / "out" / "frames.jsonl")
    segmenter = Segmenter(calibrated_tiny, backend="torch", device="cpu")
    assert [(r["topic"], r["stamp"]) for r in records] == [
        ("/camera/image", f"{h.stamp.sec}.{h.stamp.nanosec:09d}") for _, h, _ in expected]
    for record, (_, _, rgb) in zip(records, expected):
        check_record(record, segmenter, np.ascontiguousarray(rgb[..., ::-1]))
    assert "frames flagged out of distribution" in capsys.readouterr().out
    # the output bag's info topic (a default output) carries the same ood fields, one message per frame;
    # a bag with a black frame among real-looking ones, so that both a flagged and an unflagged frame compare
    from test_bags import Image, TYPESTORE, raw_image, rgb_frame
    from rosbags.rosbag2 import Writer

    mixed = tmp_path / "mixed"
    with Writer(mixed, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/camera/image", Image.__msgtype__, typestore=TYPESTORE)
        for i, rgb in enumerate((rgb_frame(1), np.zeros_like(rgb_frame(1)), rgb_frame(2))):
            writer.write(conn, 10 + i, TYPESTORE.serialize_cdr(raw_image(i, rgb, "rgb8"), Image.__msgtype__))
    assert cli.main(["segment", str(mixed), "-o", str(tmp_path / "mixed_out"), "--weights", str(calibrated_tiny),
                     "--backend", "torch", "--device", "cpu", "--quiet"]) == 0
    records = read_records(tmp_path / "mixed_out" / "frames.jsonl")
    assert [r["ood"] for r in records] == [False, True, False]
    infos = read_infos(tmp_path / "mixed_out")
    assert [(m.header.stamp.sec, m.header.stamp.nanosec) for m in infos] == [
        tuple(int(part) for part in r["stamp"].split(".")) for r in records]
    for record, info in zip(records, infos):
        assert info.ood_calibrated is True and info.ood is record["ood"]
        assert info.ood_score == pytest.approx(record["ood_score"], rel=1e-6, abs=1e-6)  # float32 in the message
        assert list(info.class_fractions) == pytest.approx(list(record["class_fractions"].values()), abs=1e-6)
        assert len(info.class_confidence) == 0  # as the node without publish_confidence

    # with the confidence output, info also carries each class's mean confidence (the node's publish_confidence)
    assert cli.main(["segment", str(bag), "--topic", "/camera/image", "-o", str(tmp_path / "conf"), "--skip-bad",
                     "--outputs", "info,confidence", "--weights", str(calibrated_tiny), "--backend", "torch",
                     "--device", "cpu", "--quiet"]) == 0
    infos = read_infos(tmp_path / "conf")
    assert len(infos) == len(expected)
    for info, (_, _, rgb) in zip(infos, expected):
        labels, confidence = segmenter.segment(np.ascontiguousarray(rgb), "rgb", confidence=True)
        np.testing.assert_allclose(info.class_confidence, messages.class_confidence(labels, confidence, C), atol=1e-4)


def read_infos(bag):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = messages.register_rosbags_types(get_typestore(Stores.ROS2_JAZZY))
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == "/segmentation/info"]
        return [store.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]


# --------------------------------------------------------------------------------------------
# The embedded model on real CamVid frames


@pytest.fixture(scope="module")
def shipped_calibrated(camvid_dir, tmp_path_factory):
    """The embedded weights with their stored calibration, or (for a drive_train model without one) a copy
    calibrated here as promote.py does for it: references from drive_train, threshold on drive_val."""
    from bisenetv2_ros.weights.known_weights import DEFAULT_WEIGHTS, resolve_weights

    shipped = resolve_weights(DEFAULT_WEIGHTS)
    if load_checkpoint(shipped).info.ood is not None:
        return shipped
    path = tmp_path_factory.mktemp("shipped") / "camvid.pt"
    shutil.copyfile(shipped, path)
    if load_checkpoint(path).info.dataset.lower() != "camvid:drive_train":
        pytest.skip("the embedded weights are not the drive_train model and carry no ood calibration")
    calibrate_ood_file(path, "camvid:drive_val", "camvid:drive_train", dataset_root=camvid_dir)
    return path


def test_shipped_threshold_passes_drive_val_and_flags_black_noise_and_covered(shipped_calibrated, camvid_dir):
    segmenter = Segmenter(shipped_calibrated, backend="torch", device="cpu", precision="fp32")
    scorer = OODScorer(segmenter.info.ood, len(segmenter.classes))
    measured_on = segmenter.info.ood["measured_on"]
    assert scorer.calibrated and measured_on["frames"] >= 8
    # drive_val is unseen only for a model trained on drive_train; the shipped all-data model says it saw its frames
    assert measured_on["seen_in_training"] == (segmenter.info.dataset.lower() != "camvid:drive_train")

    def flagged(frame):
        labels, confidence = segmenter.segment(frame, "bgr", confidence=True)
        return scorer.score(frame, labels, confidence)[1]

    drive_val = frame_files("camvid:drive_val", 8, camvid_dir)
    assert len(drive_val) == 8 and all(p.name.startswith("0001TP") for p in drive_val)
    frames = [cv2.imread(str(p)) for p in drive_val]
    assert [flagged(f) for f in frames] == [False] * 8
    rng = np.random.default_rng(0)
    assert flagged(np.zeros_like(frames[0]))
    assert flagged(corruptions.gaussian_noise(frames[1], 5, rng))
    assert flagged(corruptions.occlusion(frames[2], 5, rng))


def test_named_frame_sets_are_the_drive_disjoint_split(camvid_dir):
    drive_train = frame_files("camvid:drive_train", 1000, camvid_dir)
    drive_val = frame_files("camvid:drive_val", 1000, camvid_dir)
    assert len(drive_val) == 62 and {p.name[:6] for p in drive_train} == {"0006R0", "0016E5"}
    assert not {p.name for p in drive_train} & {p.name for p in drive_val}
    with pytest.raises(OODCalibrationError, match="are not here"):
        frame_files("camvid:drive_val", 4, camvid_dir / "missing")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _tensorrt_with_gpu() -> bool:
    import torch

    return torch.cuda.is_available() and _importable("tensorrt")


@pytest.mark.parametrize("backend,device,precision", [
    ("torch", "cpu", "fp32"), ("onnxruntime", "cpu", "fp32"), ("onnxruntime", "cpu", "int8"),
    pytest.param("openvino", "cpu", "fp32", marks=pytest.mark.skipif(not _importable("openvino"),
                                                                      reason="OpenVINO is not installed here")),
    pytest.param("tensorrt", "cuda", "fp32", marks=pytest.mark.skipif(not _tensorrt_with_gpu(),
                                                                       reason="TensorRT with a CUDA GPU is not available here")),
    pytest.param("tensorrt", "cuda", "fp16", marks=pytest.mark.skipif(not _tensorrt_with_gpu(),
                                                                       reason="TensorRT with a CUDA GPU is not available here")),
])
def test_every_backend_and_precision_scores_frames(calibrated_tiny, backend, device, precision, tmp_path):
    """The score reads the labels and confidence every backend's graph has: each one gives (within its
    precision) the score of eager torch fp32, and flags a black frame."""
    frames = [cv2.imread(str(p)) for p in sorted(write_frames(tmp_path / "f", 4, seed=70).glob("*.png"))]
    options = {"calibration_frames": np.stack(frames)} if precision == "int8" else None
    segmenter = Segmenter(calibrated_tiny, backend=backend, device=device, precision=precision,
                          engine_cache_dir=tmp_path, backend_options=options)
    reference = Segmenter(calibrated_tiny, backend="torch", device="cpu", precision="fp32")
    scorer = OODScorer(segmenter.info.ood, C)

    def score(seg, frame):
        labels, confidence = seg.segment(frame, "bgr", confidence=True)
        return scorer.score(frame, labels, confidence)

    tolerance = 0.02 if precision == "fp32" else 0.35
    for frame in frames:
        assert score(segmenter, frame)[0] == pytest.approx(score(reference, frame)[0], rel=tolerance, abs=tolerance)
    assert score(segmenter, np.zeros_like(frames[0]))[1] is True


def test_benchmark_ood_reports_every_corruption_and_severity(calibrated_tiny, tmp_path, capsys):
    frames = write_frames(tmp_path / "held_out", 6, seed=20)
    assert cli.main(["benchmark-ood", "--weights", str(calibrated_tiny), "--frames", str(frames), "--count", "2",
                     "--corruptions", "black,fog", "--repeats", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [(r["corruption"], r["severity"]) for r in result["rows"]] == [
        (name, s) for name in ("black", "fog") for s in range(1, 6)]
    assert all(r["flagged"] == 1.0 and r["auroc"] == 1.0 for r in result["rows"] if r["corruption"] == "black")
    assert all(0.0 <= r["auroc"] <= 1.0 and 0.0 <= r["flagged"] <= 1.0 for r in result["rows"])
    assert result["calibration"].startswith("stored in the weights: threshold") and result["clean_frames"] == 6
    assert 0.0 <= result["false_alarms"] <= 1.0 and result["cost"]["score"] > 0
    assert set(result["candidates_mean_auroc_severity_4_5"]) >= {"score", "1 - mean confidence", "layout alone"}
    assert cli.main(["benchmark-ood", "--weights", str(calibrated_tiny), "--frames", str(frames),
                     "--corruptions", "hail"]) == 1
    assert "unknown corruption(s) hail; choose from gaussian_noise" in capsys.readouterr().err
