"""`bisenetv2 benchmark-cameras`: the node's pipeline with several synthetic cameras, batched vs separate."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from bisenetv2_ros.benchmarks import cameras_benchmark

pytest.importorskip("rosbags.typesys", reason="rosbags is needed for ROS message definitions")


def parse(argv):
    parser = argparse.ArgumentParser()
    cameras_benchmark.add_arguments(parser)
    return parser.parse_args(argv)


def test_one_node_process_measures_its_cameras(tiny_weights, monkeypatch):
    args = parse(["--child-cameras", "3", "--weights", str(tiny_weights), "--backend", "torch", "--device", "cpu",
                  "--frame-size", "48x64", "--rate", "20", "--seconds", "1.5", "--warmup", "0.5"])
    monkeypatch.setattr("sys.stdin", io.StringIO("go\n"))
    result = cameras_benchmark.run_node(args)
    assert result["cameras"] == 3 and result["backend"] == "torch" and result["model_input"] == [64, 96]
    assert len(result["fps_per_camera"]) == 3 and all(fps > 0 for fps in result["fps_per_camera"])
    assert result["fps_total"] == pytest.approx(sum(result["fps_per_camera"]), abs=0.05)
    assert result["fps_total"] <= 3 * 20 * 1.2, "cannot process more frames than the cameras send"
    assert 1 <= result["frames_per_batch"] <= 3 and result["batch_ms_p50"] > 0
    assert result["peak_rss_mib"] >= result["rss_mib"] * 0.9 > 0


def fake_process(cameras, fps_total, rss, batch_ms=50.0):
    return {"cameras": cameras, "backend": "onnxruntime", "device": "cpu", "fps_total": fps_total,
            "batch_ms_p50": batch_ms, "frames_per_batch": float(cameras), "latency_p50_ms": 80.0,
            "peak_rss_mib": rss}


def test_summary_ratios_compare_the_same_round():
    args = parse(["--cameras", "1,4", "--rounds", "2"])
    runs = {
        "batched 1": [[fake_process(1, 20.0, 400.0)], [fake_process(1, 10.0, 410.0)]],
        "batched 4": [[fake_process(4, 60.0, 450.0)], [fake_process(4, 30.0, 440.0)]],
        "separate 4x1": [[fake_process(1, 8.0, 400.0)] * 4, [fake_process(1, 5.0, 400.0)] * 4],
    }
    summary = cameras_benchmark._summarise(args, runs)
    assert summary["runs"]["separate 4x1"]["fps_total_rounds"] == [32.0, 20.0]
    assert summary["runs"]["batched 4"]["fps_per_camera_median"] == pytest.approx(45.0 / 4, abs=0.01)
    # per round: 60/32 = 1.875 and 30/20 = 1.5 -> median 1.69 (not the ratio of medians 45/26)
    ratio = summary["ratios"]["4 cameras: batched / separate fps"]
    assert ratio["rounds"] == [1.88, 1.5] and ratio["median"] == pytest.approx(1.69, abs=0.01)
    assert summary["ratios"]["4 cameras: memory of one batched process / one single-camera process"] == round(
        450.0 / 410.0, 2)
    assert summary["frame"] == "480x640 (HxW) bgr8" and summary["machine"]["cores"] >= 1


def test_command_runs_batched_and_separate_side_by_side(tiny_weights, capsys):
    args = parse(["--cameras", "2", "--weights", str(tiny_weights), "--backend", "torch", "--device", "cpu",
                  "--frame-size", "48x64", "--seconds", "1", "--warmup", "0.3", "--rounds", "1", "--json"])
    assert cameras_benchmark.run(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["runs"]) == {"batched 2", "separate 2x1"}
    assert summary["runs"]["separate 2x1"]["processes"] == 2 and summary["runs"]["batched 2"]["processes"] == 1
    assert all(row["fps_total_median"] > 0 for row in summary["runs"].values())
    assert summary["ratios"]["2 cameras: batched / separate fps"]["median"] > 0


@pytest.mark.parametrize("argv,message", [(["--cameras", "0"], "camera counts must be 1..16"),
                                          (["--frame-size", "640"], "expected HEIGHTxWIDTH"),
                                          (["--size", "640"], "expected WIDTHxHEIGHT")])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse(argv)
    assert message in capsys.readouterr().err


def test_old_size_flag_is_width_by_height_with_a_deprecation_line(capsys):
    assert parse(["--size", "640x360"]).frame_size == (360, 640)
    assert "--size 640x360 (WIDTHxHEIGHT) is deprecated; use --frame-size 360x640" in capsys.readouterr().err
    assert parse([]).frame_size == (480, 640)
