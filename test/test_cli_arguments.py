"""The shared size flags: HEIGHTxWIDTH everywhere, the old spellings converted with a deprecation line."""

from __future__ import annotations

import argparse

import pytest

from bisenetv2_ros.benchmarks import messages_benchmark
from bisenetv2_ros.cli import arguments as cli_args


def parser_with(add) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prog")
    add(parser)
    return parser


def test_size_or_comma_takes_both_spellings_height_first():
    assert cli_args.size_or_comma("360x480") == (360, 480)
    assert cli_args.size_or_comma("360,480") == (360, 480)
    with pytest.raises(argparse.ArgumentTypeError, match="expected HEIGHTxWIDTH"):
        cli_args.size_or_comma("360")


def test_positive_int_rejects_zero_and_words():
    assert cli_args.positive_int("3") == 3
    for bad in ("0", "-2", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a positive integer"):
            cli_args.positive_int(bad)


def test_old_sides_replace_one_side_of_the_default(capsys):
    parser = parser_with(lambda p: cli_args.add_size(p, "--frame-size", "frame_size", default=(1080, 1920),
                                                     old_sides=("--height", "--width")))
    assert parser.parse_args([]).frame_size == (1080, 1920)
    assert capsys.readouterr().err == ""
    assert parser.parse_args(["--width", "640"]).frame_size == (1080, 640)
    assert capsys.readouterr().err == "prog: warning: --width is deprecated; use --frame-size HxW\n"
    assert parser.parse_args(["--frame-size", "480x640"]).frame_size == (480, 640)


def test_complete_fills_a_missing_side_or_names_the_new_flag():
    assert cli_args.complete(None, (5, 6), "--input-size") is None
    assert cli_args.complete((3, 4), None, "--input-size") == (3, 4)
    assert cli_args.complete((3, None), (5, 6), "--input-size") == (3, 6)
    with pytest.raises(SystemExit, match="give both --height and --width, or better --input-size HxW"):
        cli_args.complete((None, 4), None, "--input-size")


def test_old_width_by_height_flag_is_converted_not_reinterpreted(capsys):
    parser = parser_with(lambda p: cli_args.add_size(p, "--frame-size", "frame_size",
                                                     old_width_by_height="--source-size"))
    assert parser.parse_args(["--source-size", "1280x720"]).frame_size == (720, 1280)
    assert capsys.readouterr().err == ("prog: warning: --source-size 1280x720 (WIDTHxHEIGHT) is deprecated; "
                                       "use --frame-size 720x1280\n")


def test_messages_benchmark_frame_size(capsys):
    parser = parser_with(messages_benchmark.add_arguments)
    assert parser.parse_args([]).frame_size == (1080, 1920)
    assert parser.parse_args(["--frame-size", "48x64"]).frame_size == (48, 64)
    assert parser.parse_args(["--height", "48", "--width", "64"]).frame_size == (48, 64)
    assert capsys.readouterr().err.count("is deprecated; use --frame-size HxW") == 2
    assert messages_benchmark.run(parser.parse_args(["--frame-size", "24x32", "--repeats", "1"])) == 0
    assert "per-frame message overhead, 24x32 (HxW) bgr8, 1 runs" in capsys.readouterr().out


def test_training_step_benchmark_takes_height_by_width(capsys):
    from training.benchmark_step import main

    args = ["--batch", "2", "--threads", "1", "--rounds", "1", "--warmup", "0", "--variants", "fp32"]
    assert set(main(["--size", "64x96", *args])) == {"fp32"}
    assert "batch 2 x 64x96" in capsys.readouterr().out
    main(["--size", "64", "96", *args])  # the old two-number form
    captured = capsys.readouterr()
    assert "batch 2 x 64x96" in captured.out and "--size 64 96 is deprecated; use --size 64x96" in captured.err


def test_training_step_benchmark_runs_the_bf16_channels_last_variant_and_prints_iterations_per_hour(capsys):
    from training.benchmark_step import main

    medians = main(["--size", "32x48", "--batch", "2", "--threads", "1", "--rounds", "1", "--warmup", "0",
                    "--head-channels", "8", "--variants", "fp32", "bf16_channels_last"])
    assert set(medians) == {"fp32", "bf16_channels_last"} and all(v > 0 for v in medians.values())
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("bf16_channels_last"))
    assert line.endswith("iterations/hour") and f"{3600 / medians['bf16_channels_last']:6.0f}" in line


def test_training_step_benchmark_compares_loss_curves_block_by_block(tmp_path, capsys):
    import json

    from training.benchmark_step import main

    logs = []
    for name, scale in (("fp32", 1.0), ("bf16", 1.1)):
        (tmp_path / name).mkdir()
        records = [{"iteration": i, "loss_main": scale * (2.0 - i / 100)} for i in range(10, 101, 10)]
        records.insert(3, {"iteration": 40, "val_miou": 0.3})  # evaluations in the same log are skipped
        (tmp_path / name / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
        logs.append(str(tmp_path / name / "log.jsonl"))
    assert main(["--compare-logs", *logs, "--block", "50"]) == {}
    out = capsys.readouterr().out
    # Blocks 1-50 (mean of 1.9 .. 1.5 = 1.7) and 51-100 (1.2); bf16 is 10 % above in both.
    assert "        50          1.7000          1.8700" in out and "       100          1.2000          1.3200" in out
    assert "bf16: largest gap 10.0 %, mean gap 10.0 %" in out
    (tmp_path / "empty.jsonl").write_text(json.dumps({"iteration": 1, "val_miou": 0.1}) + "\n")
    with pytest.raises(ValueError, match="empty.jsonl: no 'loss_main' entries"):
        main(["--compare-logs", logs[0], str(tmp_path / "empty.jsonl")])
    # a file that is not train.py's log: one line naming it (a bare JSON or codec error before)
    (tmp_path / "binary.jsonl").write_bytes(b"\x89PNG\r\n\xff\xfe")
    (tmp_path / "text.jsonl").write_text('{"iteration": 1, "loss_main": 1.0}\nnot json\n')
    for name, message in (("binary", "not text"), ("text", "line 2 is not a log record of train.py")):
        with pytest.raises(ValueError, match=f"--compare-logs .*{name}.jsonl: {message}"):
            main(["--compare-logs", logs[0], str(tmp_path / f"{name}.jsonl")])
