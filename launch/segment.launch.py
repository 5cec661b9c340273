"""Starts the BiSeNetV2 segmentation node on a camera topic (and optionally rviz2).

    ros2 launch bisenetv2_ros segment.launch.py image:=/camera/image_raw
    ros2 launch bisenetv2_ros segment.launch.py image:=/camera/image_raw weights:=/path/model.pt rviz:=true
    ros2 launch bisenetv2_ros segment.launch.py cameras:=front,left \
        camera_topics:=/sensing/front/image_raw,/sensing/left/image_raw       # several cameras, one network
    ros2 launch bisenetv2_ros segment.launch.py lifecycle:=true             # managed node, starts unconfigured
    ros2 launch bisenetv2_ros segment.launch.py nav2:=true  # topics for nav2's semantic_segmentation_layer
    ros2 launch bisenetv2_ros segment.launch.py depth_image:=/camera/aligned_depth_to_color/image_raw  # + points

The node reads its parameters from `params_file` (default: the installed config/segmentation.yaml).
The weights, backend, device and precision arguments override the file only when given: their
default '' means "use the file". Outputs appear under `namespace` (default /segmentation).
"""

PACKAGE = 'bisenetv2_ros'

# name, default, description; params_file's default (None) is the installed config/segmentation.yaml.
ARGUMENTS = (
    ('image', '/camera/image_raw', 'Input sensor_msgs/Image topic (with input_transport: compressed, '
                                   'its /compressed sibling is used)'),
    ('camera_info', '/camera/camera_info', 'Input sensor_msgs/CameraInfo topic, republished with every result'),
    ('namespace', 'segmentation', 'Namespace of the node and its output topics'),
    ('params_file', None, 'Parameter file of the node'),
    ('weights', '', 'Checkpoint path or known weights name; empty: use params_file'),
    ('backend', '', 'auto, tensorrt, torch or onnxruntime; empty: use params_file'),
    ('device', '', 'auto, cpu, cuda or cuda:N; empty: use params_file'),
    ('precision', '', 'auto, fp32, fp16, bf16 or int8; empty: use params_file'),
    ('use_sim_time', 'false', 'Use /clock (bag playback)'),
    ('log_level', 'info', 'Node log level: debug, info, warn, error or fatal'),
    ('rviz', 'false', 'Start rviz2 showing the colour mask and the overlay (turns publish_overlay on); '
             'rviz2 is not a dependency of this package: install it separately (apt install ros-$ROS_DISTRO-rviz2)'),
    ('cameras', '', 'Comma-separated camera names (e.g. front,left,right): one node, one network, per camera '
                    '<name>/image in and <name>/labels, ... out; empty: one camera on `image`'),
    ('camera_topics', '', 'With cameras: comma-separated image topics of the cameras\' drivers, in the same order '
                          '(each camera_info is the image topic\'s sibling camera_info); empty: '
                          '<namespace>/<name>/image'),
    ('lifecycle', 'false', 'Start the managed (lifecycle) node: unconfigured until `ros2 lifecycle set`'),
    ('depth_image', '', 'Registered depth image topic (16UC1 mm or 32FC1 m; its camera_info is the sibling '
                        'camera_info): publish `points`, a cloud aligned with `labels`; empty: no cloud'),
    ('nav2', 'false', 'Feed nav2\'s semantic_segmentation_layer (config/nav2_semantic_layer.yaml): `labels` '
                      'remapped to `mask` (per camera: <name>/mask) and publish_confidence on'),
)
OVERRIDES = ('weights', 'backend', 'device', 'precision')
TRUE_WORDS = ('true', '1', 'yes', 'on')
RVIZ_TOPICS = ('color', 'overlay', 'labels')


def parameter_overrides(values):
    """Launch argument values (strings) -> node parameters set on top of params_file.

    Only the override arguments that were given (non-empty) are passed, so the file decides the rest.
    """
    overrides = {name: values[name].strip() for name in OVERRIDES if values.get(name, '').strip()}
    overrides['use_sim_time'] = _is_true(values.get('use_sim_time', 'false'))
    if _is_true(values.get('rviz', 'false')):
        overrides['publish_overlay'] = True  # rviz shows the overlay
    cameras = split_list(values.get('cameras', ''))
    if cameras:
        overrides['cameras'] = cameras
    if _is_true(values.get('nav2', 'false')):
        overrides['publish_confidence'] = True  # the layer weighs each observation by it
    if values.get('depth_image', '').strip():
        overrides['publish_points'] = True
    return overrides


def output_remappings(values):
    """With nav2: the class-id mask under the name the layer's example configuration reads (`mask`)."""
    if not _is_true(values.get('nav2', 'false')):
        return []
    cameras = split_list(values.get('cameras', ''))
    return [(f'{camera}/labels', f'{camera}/mask') for camera in cameras] if cameras else [('labels', 'mask')]


def split_list(text):
    """'front, left,,right' -> ['front', 'left', 'right']."""
    return [item.strip() for item in text.split(',') if item.strip()]


def sibling_camera_info(image_topic):
    """The camera_info topic beside an image topic (the image_transport convention):
    /sensing/front/image_raw -> /sensing/front/camera_info."""
    parent = image_topic.rstrip('/').rpartition('/')[0]
    return f'{parent}/camera_info'


def input_remappings(values):
    """The node's input remappings: one camera from `image` / `camera_info`, or several cameras from
    `camera_topics` (none given: the inputs stay <namespace>/<name>/image)."""
    cameras = split_list(values.get('cameras', ''))
    if not cameras:
        image = values['image']
        depth = values.get('depth_image', '').strip()
        return [('image', image), ('image/compressed', image + '/compressed'),
                ('input_camera_info', values['camera_info'])] + (
            [('depth', depth), ('depth_camera_info', sibling_camera_info(depth))] if depth else [])
    topics = split_list(values.get('camera_topics', ''))
    if not topics:
        return []
    if len(topics) != len(cameras):
        raise ValueError(f'camera_topics names {len(topics)} topic(s) for {len(cameras)} camera(s) '
                         f'({", ".join(cameras)}); give one image topic per camera, in the same order')
    remappings = []
    for camera, topic in zip(cameras, topics):
        remappings += [(f'{camera}/image', topic), (f'{camera}/image/compressed', topic + '/compressed'),
                       (f'{camera}/input_camera_info', sibling_camera_info(topic))]
    return remappings


def _is_true(text):
    return text.strip().lower() in TRUE_WORDS


def _nodes(context):
    """The node (and rviz2), built once the launch arguments are known."""
    from launch.substitutions import LaunchConfiguration
    from typing import List

    from launch_ros.actions import LifecycleNode, Node
    from launch_ros.parameter_descriptions import ParameterValue
    from launch_ros.substitutions import FindPackageShare

    def value(name):
        return LaunchConfiguration(name).perform(context)

    values = {name: value(name) for name, _, _ in ARGUMENTS}
    overrides = parameter_overrides(values)
    # Typed values: a weights name like "2024" must stay a string, not be read as an int.
    typed = {name: ParameterValue(v, value_type=List[str] if isinstance(v, list) else type(v))
             for name, v in overrides.items()}
    namespace = '/' + values['namespace'].strip('/')
    lifecycle = _is_true(values.get('lifecycle', 'false'))
    node_class = LifecycleNode if lifecycle else Node
    nodes = [node_class(
        package=PACKAGE,
        executable='segmentation_node',
        name='segmentation_node',
        namespace=namespace,
        parameters=[values['params_file'], typed],
        remappings=input_remappings(values) + output_remappings(values),
        arguments=(['--lifecycle'] if lifecycle else []) + ['--ros-args', '--log-level', values['log_level']],
        output='screen',
        emulate_tty=True,
    )]
    if _is_true(values['rviz']):
        share = FindPackageShare(PACKAGE).perform(context)
        nodes.append(Node(
            package='rviz2',
            executable='rviz2',
            name='rviz2',
            arguments=['-d', f'{share}/config/segmentation.rviz'],
            parameters=[{'use_sim_time': overrides['use_sim_time']}],
            # The rviz config names /segmentation/...; follow a different namespace.
            remappings=[(f'/segmentation/{topic}', f'{namespace.rstrip("/")}/{topic}')
                        for topic in RVIZ_TOPICS] if namespace != '/segmentation' else [],
            output='screen',
        ))
    return nodes


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare

    defaults = {'params_file': PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'segmentation.yaml'])}
    arguments = [
        DeclareLaunchArgument(name, default_value=defaults.get(name, default), description=description)
        for name, default, description in ARGUMENTS
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_nodes)])
