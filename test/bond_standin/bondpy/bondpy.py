"""Test stand-in for ``bondpy.bondpy.Bond`` where bond_core is not installed (the PyPI-wheel test venv).

Only what the segmentation node uses, written for the tests from the protocol (not from bondpy):
``Bond(node, topic, bond_id)``, ``heartbeat_period`` / ``heartbeat_timeout`` set before ``start()``,
which publishes ``bond/msg/Status`` (``active: true``, this instance's id, the two timings) every
period from a thread; ``shutdown()`` publishes ``active: false`` and destroys its endpoints the way
bondpy does (``.destroy()`` on each, leaving the node's lists to the caller). The lifecycle tests put
this folder on the node's PYTHONPATH only when ``import bondpy`` fails; with bond_core installed they
run the real bondpy.
"""

from __future__ import annotations

import threading
import uuid

from bond.msg import Status
from std_msgs.msg import Header


class Bond:
    def __init__(self, node, topic: str, bond_id: str, on_broken=None, on_formed=None) -> None:
        self.node, self.topic, self.id = node, topic, bond_id
        self.instance_id = str(uuid.uuid4())
        self.heartbeat_period, self.heartbeat_timeout = 1.0, 4.0
        self.sister_heartbeats = 0
        self._stop = threading.Event()
        self._thread = None
        self.pub = node.create_publisher(Status, topic, 1)

    def start(self) -> None:
        self.sub = self.node.create_subscription(Status, self.topic, self._on_status, 1)
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)
        self._thread.start()

    def _on_status(self, msg) -> None:
        if msg.id == self.id and msg.instance_id != self.instance_id and msg.active:
            self.sister_heartbeats += 1

    def _publish(self, active: bool) -> None:
        header = Header(stamp=self.node.get_clock().now().to_msg())
        self.pub.publish(Status(header=header, id=self.id, instance_id=self.instance_id, active=active,
                                heartbeat_timeout=float(self.heartbeat_timeout),
                                heartbeat_period=float(self.heartbeat_period)))

    def _heartbeat(self) -> None:
        while not self._stop.is_set():
            self._publish(True)
            self._stop.wait(self.heartbeat_period)

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._publish(False)
        self.sub.destroy()
        self.pub.destroy()
