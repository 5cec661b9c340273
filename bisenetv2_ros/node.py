"""The ROS 2 segmentation node: `ros2 run bisenetv2_ros segmentation_node`.

The only module that imports rclpy and ROS message packages. It stays thin: parameters, the frame
pipeline, the newest-frame slot and the diagnostics values live in ``node_core`` (ROS-free, tested
without ROS). The subscription callback only stores the newest frame; one worker thread segments it.

Topics (relative to the node's namespace, `segmentation` in the launch file):
  in:  image (sensor_msgs/Image) or image/compressed (sensor_msgs/CompressedImage),
       input_camera_info (sensor_msgs/CameraInfo, optional)
  out: labels, color, overlay (sensor_msgs/Image), camera_info, label_info (vision_msgs/LabelInfo,
       transient local), info (bisenetv2_ros/SegmentationInfo), /diagnostics
"""

from __future__ import annotations

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo, VisionClass

from bisenetv2_ros import messages, node_core
from bisenetv2_ros.msg import SegmentationInfo
from bisenetv2_ros.stop_signals import StopSignals, exit_without_finalizing

NODE_NAME = "segmentation_node"
WARN_THROTTLE_S = 5.0
STOP_POLL_S = 0.1  # how often the spin loop looks at the stop flag set by SIGINT/SIGTERM


def image_qos(name: str) -> QoSProfile:
    """Input QoS, depth 1: the node only ever wants the newest frame."""
    reliability = ReliabilityPolicy.BEST_EFFORT if name == "sensor_data" else ReliabilityPolicy.RELIABLE
    return QoSProfile(reliability=reliability, history=HistoryPolicy.KEEP_LAST, depth=1,
                      durability=DurabilityPolicy.VOLATILE)


# Outputs are reliable (REP 2003); reliable publishers also serve best-effort subscribers.
OUTPUT_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                        durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _descriptor(spec: node_core.ParameterSpec) -> ParameterDescriptor:
    description = spec.description
    if spec.choices:
        description += f" ({spec.constraints_text()})"
    descriptor = ParameterDescriptor(description=description, read_only=not spec.runtime,
                                     additional_constraints=spec.constraints_text())
    if spec.range is not None and spec.type is float:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                              to_value=float(spec.range[1]), step=0.0)]
    elif spec.range is not None and spec.type is int:
        descriptor.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]),
                                                 step=1)]
    return descriptor


class SegmentationNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        try:
            values = {spec.name: self.declare_parameter(spec.name, spec.default, _descriptor(spec)).value
                      for spec in node_core.PARAMETER_SPECS}
        except Exception as error:  # rclpy's range/type errors on overrides
            raise node_core.StartupError(f"invalid parameter: {node_core.one_line(error)}") from error
        try:
            self.settings = node_core.NodeSettings.from_values(values)
        except node_core.SettingsError as error:
            raise node_core.StartupError(f"invalid parameters: {error}") from error
        self.segmenter, self.classes = node_core.create_segmenter(self.settings)
        self.stats = node_core.NodeStats()
        logger = self.get_logger()

        self._outputs = {
            "labels": self.create_publisher(Image, "labels", OUTPUT_QOS),
            "color": self.create_publisher(Image, "color", OUTPUT_QOS),
            "overlay": self.create_publisher(Image, "overlay", OUTPUT_QOS),
            "camera_info": self.create_publisher(CameraInfo, "camera_info", OUTPUT_QOS),
            "info": self.create_publisher(SegmentationInfo, "info", OUTPUT_QOS),
        }
        self._label_info_publisher = self.create_publisher(LabelInfo, "label_info", LATCHED_QOS)
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.pipeline = node_core.SegmentationPipeline(
            self.segmenter, self.classes, self.settings, self.stats, image_type=Image, info_type=SegmentationInfo,
            publish=self._publish, warn=lambda text: logger.warning(text, throttle_duration_sec=WARN_THROTTLE_S))
        self.slot = node_core.NewestFrameSlot()
        self.intake = node_core.FrameIntake(self.slot, self.stats, self.settings, self._anyone_listening)
        self.worker = node_core.FrameWorker(
            self.slot, self.pipeline.process, on_error=self._on_worker_error,
            min_interval_s=lambda: node_core.min_interval_for_rate(self.settings.max_rate_hz))

        header = Header(stamp=self.get_clock().now().to_msg(), frame_id="")
        self._label_info_publisher.publish(
            messages.label_info_message(LabelInfo, VisionClass, self.classes, header))

        qos = image_qos(self.settings.image_qos)
        if self.settings.input_transport == "compressed":
            subscription = self.create_subscription(CompressedImage, "image/compressed", self._on_compressed, qos)
        else:
            subscription = self.create_subscription(Image, "image", self._on_image, qos)
        self.input_topic = subscription.topic_name  # resolved: namespace and remapping applied
        self.create_subscription(CameraInfo, "input_camera_info", self._on_camera_info, qos)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(1.0, self._publish_diagnostics)
        self.worker.start()
        logger.info(
            f"segmenting {self.input_topic} with {self.settings.weights} "
            f"({len(self.classes)} classes) on {self.segmenter.backend_name}/{self.segmenter.device}, "
            f"input {self.segmenter.input_size[0]}x{self.segmenter.input_size[1]}")

    # -- callbacks: store and return ------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        self.intake.offer(msg, compressed=False)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self.intake.offer(msg, compressed=True)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.pipeline.camera_info = msg

    def _anyone_listening(self) -> bool:
        return any(self.count_subscribers(name) > 0 for name in self._outputs)

    # -- worker side ----------------------------------------------------------------------------
    def _publish(self, name: str, msg) -> None:
        self._outputs[name].publish(msg)

    def _on_worker_error(self, error: BaseException) -> None:
        if not rclpy.ok():
            return  # shutting down: publishers are already invalid
        self.stats.record_failed()
        self.get_logger().error(f"frame failed: {type(error).__name__}: {node_core.one_line(error)}",
                                throttle_duration_sec=WARN_THROTTLE_S)

    # -- parameters and diagnostics -------------------------------------------------------------
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            accepted, reason = node_core.check_runtime_update(parameter.name, parameter.value)
            if not accepted:
                return SetParametersResult(successful=False, reason=reason)
        for parameter in parameters:
            if parameter.name in node_core.RUNTIME_PARAMETERS:
                self.settings.update(parameter.name, parameter.value)
                self.get_logger().info(f"{parameter.name} = {parameter.value!r}")
        return SetParametersResult(successful=True, reason="")

    def _publish_diagnostics(self) -> None:
        report = node_core.diagnostics_report(
            self.stats.snapshot(), backend=self.segmenter.backend_name, device=str(self.segmenter.device),
            model=self.settings.weights, input_topic=self.input_topic)
        status = DiagnosticStatus(
            level=bytes([report.level]), name=f"{self.get_namespace().rstrip('/')}/{self.get_name()}: segmentation",
            message=report.message, hardware_id=str(self.segmenter.device),
            values=[KeyValue(key=key, value=value) for key, value in report.values])
        self._diagnostics_publisher.publish(
            DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def close(self) -> None:
        self.worker.stop()


def main(args=None) -> int:
    # SIGINT/SIGTERM only set a flag (StopSignals) instead of rclpy's handlers, whose chained
    # KeyboardInterrupt could land inside the cleanup below when Ctrl-C arrives twice.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopSignals().install()
    node = None
    try:
        node = SegmentationNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.requested and rclpy.ok():
            executor.spin_once(timeout_sec=STOP_POLL_S)
    except node_core.StartupError as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(error))
        return 1
    except ExternalShutdownException:
        pass  # the context was shut down from elsewhere
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def run() -> None:
    """The process entry point: ``main()``, then a prompt exit (see ``exit_without_finalizing``)."""
    exit_without_finalizing(main())


if __name__ == "__main__":
    run()
