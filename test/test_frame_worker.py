"""Frames on their way to the network (frame_worker): newest-frame slots, the intake, the worker thread."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from bisenetv2_ros.ros import frame_worker
from bisenetv2_ros.ros.frame_worker import FrameSlots, FrameWorker
from bisenetv2_ros.ros.parameters import NodeSettings
from bisenetv2_ros.ros.stats import CameraState, NodeStats


def test_slot_keeps_only_the_newest():
    slot = FrameSlots()
    assert slot.take(timeout=0) is None
    assert slot.put(0, 1) is False
    assert slot.put(0, 2) is True and slot.put(0, 3) is True
    assert slot.replaced == [2] and slot.pending == 1
    assert slot.take(timeout=0) == [(0, 3)]
    assert slot.take(timeout=0) is None and not slot.pending
    slot.close()
    started = time.monotonic()
    assert slot.take(timeout=5) is None and time.monotonic() - started < 1  # closed: returns at once


def test_slow_worker_drops_stale_frames_without_growing():
    slot, stats = FrameSlots(), NodeStats()
    processed, started = [], threading.Event()
    release = threading.Event()

    def slow_process(item):
        started.set()
        release.wait(5)  # the model is busy while the camera floods the slot
        processed.append(item)

    worker = FrameWorker(slot, slow_process).start()
    slot.put(0, -1)
    assert started.wait(5)
    for index in range(1000):
        stats.record_received()
        if slot.put(0, index):
            stats.record_stale_drop()
    release.set()
    deadline = time.monotonic() + 5
    while len(processed) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop()
    assert processed == [[(0, -1)], [(0, 999)]], "the worker must skip straight to the newest frame"
    assert stats.dropped_stale == 999 == slot.replaced[0]
    assert not slot.pending


def test_worker_survives_errors_and_respects_rate():
    slots = FrameSlots()
    errors, done = [], []
    intervals = {"value": 0.0}

    def process(batch):
        ((_, item),) = batch
        if item == "bad":
            raise RuntimeError("boom")
        done.append((item, time.monotonic()))

    slot = SimpleNamespace(put=lambda item: slots.put(0, item))

    worker = FrameWorker(slots, process, on_error=errors.append, min_interval_s=lambda: intervals["value"]).start()
    slot.put("bad")
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.005)
    slot.put("good")
    while not done and time.monotonic() < deadline:
        time.sleep(0.005)
    assert [str(e) for e in errors] == ["boom"] and done[0][0] == "good"
    intervals["value"] = 0.3
    slot.put("a")
    while len(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    slot.put("b")
    while len(done) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert worker.stop()
    assert [d[0] for d in done] == ["good", "a", "b"]
    assert done[2][1] - done[1][1] >= 0.3 - 0.01  # frame starts spaced by 1 / max_rate_hz


def test_min_interval_for_rate():
    assert frame_worker.min_interval_for_rate(0.0) == 0.0
    assert frame_worker.min_interval_for_rate(4.0) == 0.25


def test_intake_floods_slot_while_worker_is_slow_without_growth():
    slot, camera = FrameSlots(), CameraState("", publish=lambda name, msg: None)
    stats = camera.stats
    intake = frame_worker.FrameIntake(slot, [camera], NodeSettings())
    release, taken = threading.Event(), []

    def slow_process(batch):
        taken.append(batch[0][1].msg)
        release.wait(5)

    worker = FrameWorker(slot, slow_process).start()
    assert intake.offer("first") == "stored"
    deadline = time.monotonic() + 5
    while not taken and time.monotonic() < deadline:
        time.sleep(0.005)
    outcomes = [intake.offer(index) for index in range(1000)]
    assert outcomes[0] == "stored" and set(outcomes[1:]) == {"replaced"}
    assert slot.take(timeout=0)[0][1].msg == 999 and not slot.pending  # one slot, newest frame only
    release.set()
    assert worker.stop()
    assert (stats.received, stats.dropped_stale, stats.processed) == (1001, 999, 0)


def test_intake_skips_without_subscribers_when_asked():
    slot, camera = FrameSlots(), CameraState("", publish=lambda name, msg: None)
    stats = camera.stats
    listening = {"value": False}
    settings = NodeSettings(only_when_subscribed=True)
    intake = frame_worker.FrameIntake(slot, [camera], settings, lambda index: listening["value"], clock=lambda: 7.0)
    assert intake.offer("a") == "skipped" and not slot.pending
    listening["value"] = True
    assert intake.offer("b", compressed=True) == "stored"
    ((index, item),) = slot.take(timeout=0)
    assert (index, item.msg, item.arrival, item.compressed) == (0, "b", 7.0, True)
    settings.update("only_when_subscribed", False)
    listening["value"] = False
    assert intake.offer("c") == "stored"
    assert (stats.received, stats.skipped, stats.dropped) == (3, 1, 0)


def test_slots_hand_over_every_camera_in_round_robin_order():
    slots = FrameSlots(3)
    for camera in (2, 0):
        slots.put(camera, f"frame{camera}")
    assert slots.pending == 2
    assert slots.take(timeout=0) == [(0, "frame0"), (2, "frame2")]
    # next turn starts after camera 2, i.e. at camera 0 again
    for camera in range(3):
        slots.put(camera, camera)
    assert [index for index, _ in slots.take(timeout=0)] == [0, 1, 2]


@pytest.mark.parametrize("limit,expected", [
    (1, [[0], [1], [2], [0], [1], [2]]),
    (2, [[0, 1], [2, 0], [1, 2], [0, 1], [2, 0], [1, 2]]),
])
def test_capped_batches_take_turns(limit, expected):
    slots = FrameSlots(3, max_items=lambda: limit)
    turns = []
    for _ in range(6):
        for camera in range(3):  # every camera always has a new frame: the worker is behind
            slots.put(camera, camera)
        turns.append([index for index, _ in slots.take(timeout=0)])
    assert turns == expected


def test_no_camera_starves_a_slow_worker():
    cameras = [CameraState(f"cam{i}", publish=lambda name, msg: None) for i in range(4)]
    slots = FrameSlots(4, max_items=lambda: 1)  # one frame per network call: the hardest case for fairness
    intake = frame_worker.FrameIntake(slots, cameras, NodeSettings(cameras=[c.name for c in cameras]))
    served = []

    def process(batch):
        served.extend(index for index, _ in batch)
        time.sleep(0.002)

    worker = FrameWorker(slots, process).start()
    stop = threading.Event()

    def flood(index):  # camera 0 floods 10x faster than the others
        while not stop.is_set():
            intake.offer(f"{index}", camera=index)
            time.sleep(0.0002 if index == 0 else 0.002)

    feeders = [threading.Thread(target=flood, args=(i,)) for i in range(4)]
    for feeder in feeders:
        feeder.start()
    deadline = time.monotonic() + 20
    while len(served) < 80 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for feeder in feeders:
        feeder.join()
    assert worker.stop()
    counts = [served.count(i) for i in range(4)]
    assert min(counts) >= 0.6 * max(counts), f"unfair service {counts}"
    assert cameras[0].stats.received > 2 * cameras[1].stats.received  # it did flood
    assert cameras[0].stats.dropped_stale > 0
