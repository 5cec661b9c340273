"""The ROS 2 segmentation node (`ros2 run bisenetv2_ros segmentation_node [--lifecycle]`), the only module
that imports rclpy and ROS messages: it wires the ROS-free modules beside it (docs/architecture.md).
``SegmentationNode`` configures and activates itself at construction; ``LifecycleSegmentationNode``
(``--lifecycle``) starts unconfigured and runs the same steps (``SegmentationSteps``) on the lifecycle
transitions. Topics and parameters: docs/node.md."""

from __future__ import annotations

import sys

from bisenetv2_ros.ros.node_program import ros_imports

with ros_imports(sys.argv if __name__ == "__main__" else None):  # a program: --help, a missing ROS in one line
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
    from std_msgs.msg import Header
    from vision_msgs.msg import LabelInfo, VisionClass
    from bisenetv2_ros.msg import SegmentationInfo

from bisenetv2_ros.inference.engine_cache import default_engine_cache_dir
from bisenetv2_ros.ros import frame_worker, lifecycle, messages, warmup
from bisenetv2_ros.ros.parameters import (LIFECYCLE_FLAG, NODE_NAME, PARAMETER_SPECS, RUNTIME_PARAMETERS, NodeSettings,
                                          ParameterSpec, SettingsError, check_runtime_update, node_arguments)
from bisenetv2_ros.ros.pipeline import (CameraState, SegmentationPipeline, StartupError, create_segmenter,
                                        free_model_memory, one_line, warmup_shapes)
from bisenetv2_ros.ros.stats import DEPTH_HISTORY, NodeStats, camera_diagnostics, camera_topic
from bisenetv2_ros.ros.stop_signals import StopSignals, exit_without_finalizing

try:  # bond_core's bondpy (4.1 on, Humble and Jazzy): the bond nav2's lifecycle manager waits for
    from bondpy.bondpy import Bond
except ImportError:  # no bond packages (the PyPI wheels): the managed node says so and runs without
    Bond = None

WARN_THROTTLE_S = 5.0
STOP_POLL_S = 0.1  # how often the spin loop looks at the stop flag set by SIGINT/SIGTERM
OUTPUT_TYPES = {"labels": Image, "color": Image, "overlay": Image, "confidence": Image,
                "labels/compressed": CompressedImage, "color/compressed": CompressedImage, "points": PointCloud2,
                "camera_info": CameraInfo, "info": SegmentationInfo}


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


def _descriptor(spec: ParameterSpec, managed: bool) -> ParameterDescriptor:
    constraints = spec.constraints_text()
    description = spec.description + (f" ({constraints})" if spec.choices else "")
    # managed: start-up parameters may change while unconfigured (lifecycle.check_parameter_change)
    descriptor = ParameterDescriptor(description=description, read_only=not (spec.runtime or managed),
                                     additional_constraints=constraints)
    if spec.range is not None and spec.type is float:
        low, high = (float(value) for value in spec.range)
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    elif spec.range is not None and spec.type is int:
        low, high = (int(value) for value in spec.range)
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    return descriptor


def _declared_default(spec: ParameterSpec):
    # An empty list cannot tell rclpy its element type (it would become a byte array), so list
    # parameters are declared by type: unset unless given, which reads as None.
    return Parameter.Type.STRING_ARRAY if spec.type is list else spec.default


class SegmentationSteps:
    """The node's work in four steps, shared by both node classes (mixed into an rclpy Node):

    configure: declare and check parameters, load the weights, build and warm the backend, create
               the publishers; activate: subscriptions, worker and diagnostics live;
    deactivate: subscriptions, worker and timer gone (the model stays); cleanup: publishers gone,
               model freed (and GPU memory returned).
    Errors raise ``StartupError`` with one line.
    """

    settings: NodeSettings | None = None
    segmenter = None
    pipeline: SegmentationPipeline | None = None
    worker: frame_worker.FrameWorker | None = None
    bond: lifecycle.ManagerBond | None = None

    def _create_output_publisher(self, msg_type, topic: str, qos: QoSProfile):
        return self.create_publisher(msg_type, topic, qos)

    def _destroy_output_publisher(self, publisher) -> None:
        self.destroy_publisher(publisher)

    # -- configure / cleanup ---------------------------------------------------------------------
    managed = False
    _check_parameter = staticmethod(check_runtime_update)  # (name, value) -> (accepted, reason)

    def _declare_parameters(self) -> None:
        try:
            for spec in PARAMETER_SPECS:
                if not self.has_parameter(spec.name):  # a lifecycle node may configure again after cleanup
                    self.declare_parameter(spec.name, _declared_default(spec), _descriptor(spec, self.managed))
        except Exception as error:  # rclpy's range/type errors on overrides
            raise StartupError(f"invalid parameter: {one_line(error)}") from error
        if not getattr(self, "_parameter_callback_added", False):
            # after declaring: the declarations themselves must not meet the read-only check
            self.add_on_set_parameters_callback(self._on_set_parameters)
            self._parameter_callback_added = True

    def _read_parameters(self) -> NodeSettings:
        self._declare_parameters()
        values = {spec.name: self.get_parameter_or(spec.name).value for spec in PARAMETER_SPECS}
        for name in (spec.name for spec in PARAMETER_SPECS if spec.type is list):
            values[name] = values[name] or []  # an unset STRING_ARRAY reads as None
        try:
            return NodeSettings.from_values(values)
        except SettingsError as error:
            raise StartupError(f"invalid parameters: {error}") from error

    def _configure(self) -> None:
        settings = self._read_parameters()
        logger = self.get_logger()
        # The frame shapes this node received before: warmed now, so its first camera frame is too.
        node_name = f"{self.get_namespace().rstrip('/')}/{self.get_name()}"
        remembered = warmup.RememberedShapes(warmup.remembered_shapes_file(
            settings.engine_cache_dir or default_engine_cache_dir(), node_name))
        self.segmenter, self.classes = create_segmenter(settings, remembered=remembered.shapes)
        warmed = warmup_shapes(settings, self.segmenter.input_size, remembered.shapes)
        self.settings = settings
        self._publishers_by_camera = []
        self.cameras = []
        for name in settings.camera_names:
            publishers = {output: self._create_output_publisher(msg_type, camera_topic(name, output), OUTPUT_QOS)
                          for output, msg_type in OUTPUT_TYPES.items()}
            self._publishers_by_camera.append(publishers)
            self.cameras.append(CameraState(  # listening: per frame, so outputs no one reads are not computed
                name, publish=lambda output, msg, publishers=publishers: publishers[output].publish(msg),
                listening=lambda output, publishers=publishers: publishers[output].get_subscription_count() > 0))
        self._label_info_publisher = self._create_output_publisher(LabelInfo, "label_info", LATCHED_QOS)
        self._diagnostics_publisher = self._create_output_publisher(DiagnosticArray, "/diagnostics", 10)
        self.pipeline = SegmentationPipeline(
            self.segmenter, self.classes, settings, self.cameras, image_type=Image, info_type=SegmentationInfo,
            compressed_type=CompressedImage, cloud_types=(PointCloud2, PointField),
            warn=lambda text: logger.warning(text, throttle_duration_sec=WARN_THROTTLE_S),
            on_failure=self._on_failure, warmed=warmed,
            on_new_shape=lambda shape, inference_ms: self._remember_shape(remembered, shape, inference_ms))

    def _remember_shape(self, remembered: warmup.RememberedShapes, shape: warmup.WarmupShape,
                        inference_ms: float) -> None:
        if remembered.record(shape):
            self.get_logger().info(f"the first frame of {shape.text()} was not warmed at start-up ({inference_ms:.0f} ms); "
                                   f"remembered in {remembered.path}, so the next start warms it (or set "
                                   f"warmup_frame_sizes)")

    def _cleanup(self) -> None:
        for publisher in [p for publishers in getattr(self, "_publishers_by_camera", []) for p in publishers.values()]:
            self._destroy_output_publisher(publisher)
        for name in ("_label_info_publisher", "_diagnostics_publisher"):
            if getattr(self, name, None) is not None:
                self._destroy_output_publisher(getattr(self, name))
                setattr(self, name, None)
        self._publishers_by_camera, self.cameras = [], []
        self.pipeline = self.segmenter = self.settings = None
        free_model_memory()

    # -- activate / deactivate -------------------------------------------------------------------
    def _activate(self) -> None:
        settings = self.settings
        self.slots = frame_worker.FrameSlots(len(self.cameras), max_items=lambda: settings.max_batch)
        self.intake = frame_worker.FrameIntake(self.slots, self.cameras, settings, self._anyone_listening)
        self.worker = frame_worker.FrameWorker(
            self.slots, self.pipeline.process_batch, on_error=self._on_worker_error,
            min_interval_s=lambda: frame_worker.min_interval_for_rate(settings.max_rate_hz))
        qos = image_qos(settings.image_qos)
        compressed = settings.input_transport == "compressed"
        self._subscriptions_made, self._input_topics = [], []
        for index, camera in enumerate(self.cameras):
            if compressed:
                image = self.create_subscription(
                    CompressedImage, camera.topic("image/compressed"),
                    lambda msg, index=index: self.intake.offer(msg, compressed=True, camera=index), qos)
            else:
                image = self.create_subscription(
                    Image, camera.topic("image"), lambda msg, index=index: self.intake.offer(msg, camera=index), qos)
            info = self.create_subscription(CameraInfo, camera.topic("input_camera_info"),
                                            lambda msg, camera=camera: setattr(camera, "camera_info", msg), qos)
            self._subscriptions_made += [image, info]
            if settings.publish_points:
                # Every depth image is kept (a few): the frame it belongs to may still wait in its slot.
                depth_qos = image_qos(settings.image_qos)
                depth_qos.depth = DEPTH_HISTORY
                self._subscriptions_made += [
                    self.create_subscription(Image, camera.topic("depth"),
                                             lambda msg, camera=camera: camera.depths.append(msg), depth_qos),
                    self.create_subscription(CameraInfo, camera.topic("depth_camera_info"),
                                             lambda msg, camera=camera: setattr(camera, "depth_info", msg), qos)]
            self._input_topics.append(image.topic_name)
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics)
        self._label_info_publisher.publish(messages.label_info_message(
            LabelInfo, VisionClass, self.classes, Header(stamp=self.get_clock().now().to_msg(), frame_id="")))
        self.worker.start()
        segmenter = self.segmenter
        self.get_logger().info(
            f"segmenting {', '.join(self._input_topics)} with {settings.weights} ({len(self.classes)} classes) on "
            f"{segmenter.backend_name}/{segmenter.device} {segmenter.precision}, input "
            f"{segmenter.input_size[0]}x{segmenter.input_size[1]}"
            + (f", {len(self.cameras)} cameras in one batch" if len(self.cameras) > 1 else ""))
        decision = getattr(segmenter, "auto_decision", None)
        if decision is not None:  # what auto measured on this machine (or read from its cache), once per start
            self.get_logger().info("\n".join(decision.table_lines()))
        if self.bond is not None:  # the managed node's, as nav2's servers: once everything else is live
            self.bond.form()

    def _deactivate(self) -> None:
        if self.bond is not None:
            self.bond.break_bond()
        for subscription in getattr(self, "_subscriptions_made", []):
            self.destroy_subscription(subscription)
        self._subscriptions_made = []
        worker, self.worker = self.worker, None  # gone even if stopping it raises: error recovery goes on
        if worker is not None:
            worker.stop()  # after the frames in flight: nothing is published once this returns
        if getattr(self, "_diagnostics_timer", None) is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None

    def close(self) -> None:
        """Stops the worker after the frames in flight (the node is about to be destroyed)."""
        if self.worker is not None:
            self.worker.stop()

    @property
    def stats(self) -> NodeStats:
        """The counters of the first (in single-camera mode: the only) camera."""
        return self.cameras[0].stats

    # -- callbacks -------------------------------------------------------------------------------
    def _anyone_listening(self, index: int) -> bool:
        return any(publisher.get_subscription_count() > 0 for publisher in self._publishers_by_camera[index].values())

    def _on_failure(self, text: str) -> None:
        if rclpy.ok():  # while shutting down, publishers are already invalid: not worth a line
            self.get_logger().error(text, throttle_duration_sec=WARN_THROTTLE_S)

    def _on_worker_error(self, error: BaseException) -> None:
        self._on_failure(f"batch failed: {type(error).__name__}: {one_line(error)}")

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            accepted, reason = self._check_parameter(parameter.name, parameter.value)
            if not accepted:
                return SetParametersResult(successful=False, reason=reason)
        for parameter in parameters:
            if parameter.name in RUNTIME_PARAMETERS and self.settings is not None:
                self.settings.update(parameter.name, parameter.value)
                self.get_logger().info(f"{parameter.name} = {parameter.value!r}")
        return SetParametersResult(successful=True, reason="")

    def _publish_diagnostics(self) -> None:
        segmenter = self.segmenter
        if segmenter is None:
            return
        topics = dict(zip((camera.name for camera in self.cameras), self._input_topics))
        node_name = f"{self.get_namespace().rstrip('/')}/{self.get_name()}"
        statuses = [
            DiagnosticStatus(level=bytes([report.level]), name=name, message=report.message,
                             hardware_id=str(segmenter.device),
                             values=[KeyValue(key=key, value=value) for key, value in report.values])
            for name, report in camera_diagnostics(
                self.cameras, node_name=node_name, backend=segmenter.backend_name, device=str(segmenter.device),
                model=self.settings.weights, input_topic=lambda camera: topics[camera.name])]
        self._diagnostics_publisher.publish(
            DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=statuses))


class SegmentationNode(SegmentationSteps, Node):
    """The plain node: configured and active from construction; raises StartupError (one line)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._configure()
        self._activate()


class LifecycleSegmentationNode(SegmentationSteps, LifecycleNode):
    """The managed node, unconfigured at start; refusals, failures, recovery and the bond nav2's lifecycle
    manager waits for: docs/node.md#managed-lifecycle-node."""

    managed = True
    lifecycle_state = property(lambda self: self._state_machine.current_state[1])  # its label, e.g. "active"

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._lifecycle_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.bond = lifecycle.ManagerBond(Bond, self, self.get_logger().info)
        # rclpy's ~/change_state (lifecycle/node.py, Humble 3.3 and Jazzy 7.1 alike) lets the RCLError of a
        # transition id the state does not accept escape its callback, ending the spin loop and the process.
        self._service_change_state.callback = lifecycle.guard_change_state(
            self._service_change_state.callback, lambda: self.lifecycle_state, lambda text: self._report("WARN", text))
        try:  # declared now, so they can be set before the first configure
            self._declare_parameters()
        except StartupError as error:
            self._report("ERROR", str(error))  # and configure fails with it until it is fixed

    def _check_parameter(self, name: str, value) -> tuple[bool, str]:
        return lifecycle.check_parameter_change(name, value, self.lifecycle_state)

    def _report(self, level: str, text: str) -> None:
        logger = self.get_logger()  # one call per severity: rclpy refuses two severities from one call site
        logger.info(text) if level == "OK" else logger.warning(text) if level == "WARN" else logger.error(text)
        status = DiagnosticStatus(level=getattr(DiagnosticStatus, level), name=f"{self.get_fully_qualified_name()}: "
                                  "lifecycle", message=text, values=[KeyValue(key="state", value=self.lifecycle_state)])
        self._lifecycle_diagnostics.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                            status=[status]))

    def _create_output_publisher(self, msg_type, topic: str, qos: QoSProfile):
        return self.create_lifecycle_publisher(msg_type, topic, qos)  # drops what is published while inactive

    def _destroy_output_publisher(self, publisher) -> None:
        self.destroy_lifecycle_publisher(publisher)

    def _transition(self, name: str, step, on_failure=None, failed=TransitionCallbackReturn.FAILURE):
        succeeded, text = lifecycle.run_step(name, step, on_failure)
        self._report("OK" if succeeded else "ERROR", text)
        return TransitionCallbackReturn.SUCCESS if succeeded else failed

    def on_configure(self, state) -> TransitionCallbackReturn:
        return self._transition("configure", self._configure, on_failure=self._cleanup)

    def on_activate(self, state) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers first: label_info goes out
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        return self._transition("activate", self._activate, on_failure=self._deactivate)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        result = self._transition("deactivate", self._deactivate, failed=TransitionCallbackReturn.ERROR)
        return super().on_deactivate(state) if result == TransitionCallbackReturn.SUCCESS else result

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        return self._transition("cleanup", self._cleanup, failed=TransitionCallbackReturn.ERROR)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        return self._transition("shutdown", self._release_all, failed=TransitionCallbackReturn.ERROR)

    def on_error(self, state) -> TransitionCallbackReturn:  # after ERROR: a step left the node half-way
        return self._transition("error recovery", self._release_all)

    def _release_all(self) -> None:
        self._deactivate()
        self._cleanup()


def main(args=None) -> int:
    argv = list(sys.argv if args is None else args)
    managed, exit_code = node_arguments(argv)  # --help / bad arguments: printed, never starts the node
    if exit_code is not None:
        return exit_code
    if managed:
        argv.remove(LIFECYCLE_FLAG)
    # SIGINT/SIGTERM only set a flag (StopSignals) instead of rclpy's handlers, whose chained
    # KeyboardInterrupt could land inside the cleanup below when Ctrl-C arrives twice.
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopSignals().install()
    node = None
    try:
        node = LifecycleSegmentationNode() if managed else SegmentationNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.requested and rclpy.ok():
            executor.spin_once(timeout_sec=STOP_POLL_S)
    except StartupError as error:
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


if __name__ == "__main__":  # then a prompt exit (see exit_without_finalizing); entry point: node_program.run
    exit_without_finalizing(main())
