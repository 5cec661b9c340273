"""The node's pipeline without ROS: build the segmenter, then segment and publish camera frames.

``create_segmenter`` builds and warms the network from the settings; ``SegmentationPipeline``
segments each batch of camera frames and publishes every camera's outputs (labels, color, overlay,
camera_info, info).

``ros/node.py`` wires this to rclpy; the parameters are in ``parameters``, the frame slots and
worker thread in ``frame_worker``, the counters and diagnostics in ``stats``. Tests drive it
with rosbags message types.
"""

from __future__ import annotations

import gc
import sys
import time
from collections import Counter
from dataclasses import KW_ONLY, dataclass
from typing import Any, Callable, Iterable

import numpy as np

from ..classes import colorize
from . import camera_info, depth_cloud, messages, ood_monitor
from .frame_worker import FrameItem
from .parameters import NodeSettings
from .stats import CameraState
from .warmup import WarmupShape, planned_shapes, warm_up


class StartupError(RuntimeError):
    """The node cannot start; the message is the one line it prints."""


def one_line(error: BaseException) -> str:
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def create_segmenter(settings: NodeSettings, segmenter_factory: Callable[..., Any] | None = None,
                     remembered: Iterable[WarmupShape] = ()) -> tuple[Any, Any]:
    """Builds and warms up the Segmenter -> (segmenter, classes to publish).

    Warm-up (``warmup.planned_shapes``): the network input size, the cameras' declared sizes
    (``warmup_frame_sizes``) and ``remembered`` shapes from earlier runs. The classes are the
    checkpoint's, or ``classes_file``'s (same count required). Every failure becomes a one-line
    StartupError.
    """
    if segmenter_factory is None:
        from ..inference.segmenter import Segmenter as segmenter_factory  # noqa: N813  (heavy import, only here)
    try:
        override = None
        if settings.classes_file:
            from ..classes import ClassSet

            override = ClassSet.from_file(settings.classes_file)
        # A declared camera size is also what `auto` measures its candidates at (first one, one frame).
        measure_at = {"frame_size": settings.warmup_sizes[0]} if settings.warmup_sizes else {}
        segmenter = segmenter_factory(
            weights=settings.weights, backend=settings.backend, device=settings.device,
            precision=settings.precision, input_size=settings.input_size,
            engine_cache_dir=settings.engine_cache_dir or None,
            backend_options={"calibration_images": settings.calibration_images} if settings.calibration_images else None,
            **measure_at)
        if override is not None and len(override) != len(segmenter.classes):
            raise ValueError(f"classes_file {settings.classes_file} lists {len(override)} classes but the "
                             f"model predicts {len(segmenter.classes)}")
        warm_up(segmenter, warmup_shapes(settings, getattr(segmenter, "input_size", (64, 64)), remembered),
                confidence=settings.publish_confidence or ood_monitor.scores_frames(settings, segmenter))
    except Exception as error:  # noqa: BLE001 - start-up must end with one clear line, not a traceback
        raise StartupError(f"cannot start the segmentation node: {one_line(error)}") from error
    return segmenter, override if override is not None else segmenter.classes


def warmup_shapes(settings: NodeSettings, input_size: tuple[int, int],
                  remembered: Iterable[WarmupShape] = ()) -> list[WarmupShape]:
    """The frame shapes the node warms its network at (``warmup.planned_shapes``)."""
    return planned_shapes(input_size, settings.warmup_sizes, len(settings.camera_names),
                          settings.input_transport == "compressed", settings.max_batch, remembered)


# Outputs built only while switched on and listened to (``SegmentationPipeline.wanted``).
OPTIONAL_OUTPUTS = ("confidence", "labels/compressed", "color", "color/compressed", "overlay", "points")


@dataclass
class _Decoded:
    camera: CameraState
    item: FrameItem
    frame: np.ndarray
    channel_order: str


@dataclass(eq=False)
class SegmentationPipeline:
    """A batch of (camera index, FrameItem) in -> each camera's labels, color, overlay, confidence, their
    compressed forms, camera_info and info messages out, through ``camera.publish(name, msg)``.

    Frames of one size (and channel order) go through the network in one ``segment_batch`` call;
    frames of other sizes get their own call. Every output keeps its own frame's header. Message
    types are passed in (rclpy or rosbags). An optional output (color, overlay, confidence, the
    compressed forms, points) is computed only when its setting is on and, checked per frame,
    ``camera.listening(output)`` says someone subscribes to it; ``computed`` counts what was built.
    Nothing raises: an invalid frame is counted and reported
    through ``warn(text)``; a failed network call or publication is counted per camera and reported
    through ``on_failure(text)``; the other frames of the batch still go out.
    """

    segmenter: Any
    classes: Any  # names and palette: the checkpoint's or classes_file's
    settings: NodeSettings
    cameras: list[CameraState]
    _: KW_ONLY
    image_type: Any  # sensor_msgs/Image and bisenetv2_ros/SegmentationInfo, from rclpy or rosbags
    info_type: Any
    compressed_type: Any = None  # sensor_msgs/CompressedImage, needed with publish_compressed
    cloud_types: tuple[Any, Any] | None = None  # (sensor_msgs/PointCloud2, PointField), needed with publish_points
    warn: Callable[[str], None] = lambda text: None
    on_failure: Callable[[str], None] = lambda text: None
    model_name: str | None = None  # what `info` names as the model; None: the weights parameter
    clock: Callable[[], float] = time.monotonic
    # Frame shapes warmed at start-up; the first frame of any other shape calls on_new_shape(shape,
    # inference ms) once (the node remembers it, so the next start warms it).
    warmed: Iterable[WarmupShape] = ()
    on_new_shape: Callable[[WarmupShape, float], None] = lambda shape, inference_ms: None

    def __post_init__(self) -> None:
        if self.model_name is None:
            self.model_name = self.settings.weights
        self._lookup_table = self.classes.lookup_table()
        self._seen_shapes = set(self.warmed)
        self.computed: Counter[str] = Counter()  # optional outputs built, by output name
        self._ood = ood_monitor.attach(self.cameras, self.settings, self.segmenter, len(self.classes))

    def wanted(self, camera: CameraState, output: str) -> bool:
        """Whether ``output`` is switched on and someone listens to it on ``camera``, now."""
        settings = self.settings
        switched_on = {
            "color": settings.publish_color, "overlay": settings.publish_overlay,
            "confidence": settings.publish_confidence, "points": settings.publish_points and self.cloud_types is not None,
            "labels/compressed": settings.publish_compressed and self.compressed_type is not None,
            "color/compressed": settings.publish_color and settings.publish_compressed and self.compressed_type is not None,
        }.get(output, True)
        return switched_on and camera.listening(output)

    def _needs_confidence(self, camera: CameraState) -> bool:
        # the out-of-distribution score reads it on every frame (ros/ood_monitor.py); info carries each
        # class's mean confidence and points a confidence field: their readers need it too
        return self._ood is not None or self.settings.publish_confidence and any(
            self.wanted(camera, output) for output in ("confidence", "points", "info"))

    def decode(self, item: FrameItem) -> tuple[np.ndarray, str]:
        """The frame of a message; raises ImageConversionError (max_input_pixels checked before decoding)."""
        if item.compressed:
            return messages.compressed_to_frame(item.msg, self.settings.max_input_pixels)
        return messages.image_to_frame(item.msg, self.settings.max_input_pixels,
                                       significant_bits=self.settings.input_significant_bits)

    def process(self, item: FrameItem, camera: int = 0) -> bool:
        """One frame of one camera; False when it was invalid or failed (counted and reported)."""
        return self.process_batch([(camera, item)]) == 1

    def process_batch(self, batch: list[tuple[int, FrameItem]]) -> int:
        """Segments and publishes every frame of ``batch``; returns how many were published."""
        groups: dict[tuple, list[_Decoded]] = {}
        for index, item in batch:
            camera = self.cameras[index]
            try:
                frame, channel_order = self.decode(item)
            except messages.ImageConversionError as error:
                camera.stats.record_invalid()
                self.warn(f"{camera.label}dropped an invalid frame (frame_id '{item.msg.header.frame_id}'): {error}")
                continue
            groups.setdefault((frame.shape, channel_order), []).append(_Decoded(camera, item, frame, channel_order))
        published = 0
        for group in groups.values():
            started = self.clock()
            try:
                frames = group[0].frame[None] if len(group) == 1 else np.stack([entry.frame for entry in group])
                confidences = [None] * len(group)
                if any(self._needs_confidence(entry.camera) for entry in group):
                    labels, confidences = self.segmenter.segment_batch(
                        frames, channel_order=group[0].channel_order, confidence=True)
                else:
                    labels = self.segmenter.segment_batch(frames, channel_order=group[0].channel_order)
            except Exception as error:  # noqa: BLE001 - a failed call loses these frames, not the node
                for entry in group:
                    entry.camera.stats.record_failed()
                names = ", ".join(entry.camera.name or "image" for entry in group)
                self.on_failure(f"segmentation failed for {len(group)} frame(s) ({names}): "
                                f"{type(error).__name__}: {one_line(error)}")
                continue
            inference_ms = (self.clock() - started) * 1000.0
            shape = WarmupShape(len(group), *group[0].frame.shape[:2], group[0].channel_order)
            if shape not in self._seen_shapes:
                self._seen_shapes.add(shape)
                self.on_new_shape(shape, inference_ms)
            for entry, frame_labels, confidence in zip(group, labels, confidences):
                try:
                    self._publish_results(entry, frame_labels, confidence, inference_ms, len(group))
                    published += 1
                except Exception as error:  # noqa: BLE001
                    entry.camera.stats.record_failed()
                    self.on_failure(f"{entry.camera.label}publishing failed: {type(error).__name__}: "
                                    f"{one_line(error)}")
        return published

    def _publish_results(self, entry: _Decoded, labels: np.ndarray, confidence: np.ndarray | None,
                         inference_ms: float, batch_size: int) -> None:
        camera, header, settings = entry.camera, entry.item.msg.header, self.settings
        publish = camera.publish
        wanted = {output: self.wanted(camera, output) for output in OPTIONAL_OUTPUTS}
        self.computed.update(output for output, yes in wanted.items() if yes)
        publish("labels", messages.labels_to_image(self.image_type, labels, header))
        ood = None if self._ood is None else self._ood.judge(camera, entry.frame, labels, confidence, header.stamp,
                                                            self.clock())
        if confidence is not None and wanted["confidence"]:
            publish("confidence", messages.array_to_image(self.image_type, header, confidence, "mono8"))
        if wanted["labels/compressed"]:
            publish("labels/compressed", messages.array_to_png(self.compressed_type, header, labels, "mono8"))
        colors = None
        if wanted["color"] or wanted["color/compressed"] or wanted["overlay"]:
            colors = colorize(labels, self._lookup_table)
        if wanted["color"]:
            publish("color", messages.array_to_image(self.image_type, header, colors, "rgb8"))
        if wanted["color/compressed"]:
            publish("color/compressed", messages.array_to_png(self.compressed_type, header, colors, "rgb8"))
        if wanted["overlay"]:
            overlay = messages.blend(messages.to_rgb(entry.frame, entry.channel_order), colors, settings.overlay_alpha)
            publish("overlay", messages.array_to_image(self.image_type, header, overlay, "rgb8"))
        if wanted["points"]:
            self._publish_points(camera, header, labels, confidence if settings.publish_confidence else None)
        if camera.camera_info is not None:
            self._publish_camera_info(camera, header, *labels.shape)
        latency_ms = (self.clock() - entry.item.arrival) * 1000.0
        stats = camera.stats
        stats.record_processed(inference_ms, latency_ms)
        publish("info", messages.info_message(
            self.info_type, header, model=self.model_name, backend=getattr(self.segmenter, "backend_name", ""),
            device=str(getattr(self.segmenter, "device", "")), camera=camera.name, inference_ms=inference_ms,
            batch_size=batch_size, latency_ms=latency_ms, frames_received=stats.received,
            frames_processed=stats.processed, frames_dropped=stats.dropped, frames_failed=stats.failed,
            fractions=messages.class_fractions(labels, len(self.classes)),
            confidences=() if confidence is None or not settings.publish_confidence else messages.class_confidence(
                labels, confidence, len(self.classes)),
            ood=ood))


    def _publish_camera_info(self, camera: CameraState, header: Any, height: int, width: int) -> None:
        """The camera's camera_info with the frame's header, when it describes the frame (the outputs' size)."""
        info = camera.camera_info
        try:
            camera_info.check_pairing(info, width, height, "frame")
        except camera_info.CameraInfoMismatch as error:
            camera.stats.record_camera_info_mismatch()
            self.warn(f"{camera.label}camera_info not republished: {error}")
            return
        camera.publish("camera_info", messages.with_header(info, header))

    def _publish_points(self, camera: CameraState, header: Any, labels: np.ndarray, confidence: np.ndarray | None) -> None:
        """`points` from the camera's depth image closest in time, when close enough; else a warning."""
        depths, info = list(camera.depths), camera.depth_info
        if not depths or info is None:
            self.warn(f"{camera.label}no cloud: no {'depth image' if not depths else 'depth camera_info'} "
                      f"received yet on {camera.topic('depth' if not depths else 'depth_camera_info')}")
            return
        frame_time = _seconds(header.stamp)
        depth = min(depths, key=lambda msg: abs(_seconds(msg.header.stamp) - frame_time))
        offset = abs(_seconds(depth.header.stamp) - frame_time)
        if offset > self.settings.depth_max_offset_s:
            self.warn(f"{camera.label}no cloud: the closest depth image is {offset:.3f} s from the frame "
                      f"(depth_max_offset_s {self.settings.depth_max_offset_s:g})")
            return
        try:
            metres = depth_cloud.depth_to_metres(depth, self.settings.max_input_pixels)
            points = depth_cloud.aligned_points(metres, info, labels, confidence)
        except messages.ImageConversionError as error:
            if isinstance(error, camera_info.CameraInfoMismatch):
                camera.stats.record_camera_info_mismatch()
            self.warn(f"{camera.label}no cloud: {error}")
            return
        camera.publish("points", depth_cloud.cloud_message(*self.cloud_types, header, points))


def _seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def free_model_memory() -> None:
    """Returns a dropped model's memory: collects reference cycles and, when PyTorch has used a GPU,
    hands its cached blocks back to the driver (a lifecycle cleanup must really free the GPU)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
