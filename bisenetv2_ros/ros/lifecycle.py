"""The managed node's rules, ROS-free: which lifecycle transitions each state accepts (and the reason a
request is refused), which parameters may change in which state, the bond that nav2's lifecycle
manager waits for, and how a transition's work reports failure instead of raising.

``ros/node.py`` wires these into ``rclpy.lifecycle``; everything here is tested without ROS.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .parameters import RUNTIME_PARAMETERS, SPECS_BY_NAME, validate_value
from .pipeline import StartupError, one_line

# The standard state machine (design.ros2.org "Managed nodes"; the ids of lifecycle_msgs/Transition).
UNCONFIGURED, INACTIVE, ACTIVE, FINALIZED = "unconfigured", "inactive", "active", "finalized"
PRIMARY_STATES = (UNCONFIGURED, INACTIVE, ACTIVE, FINALIZED)
CONFIGURE, CLEANUP, ACTIVATE, DEACTIVATE = 1, 2, 3, 4
UNCONFIGURED_SHUTDOWN, INACTIVE_SHUTDOWN, ACTIVE_SHUTDOWN = 5, 6, 7
TRANSITION_LABELS = {CONFIGURE: "configure", CLEANUP: "cleanup", ACTIVATE: "activate", DEACTIVATE: "deactivate",
                     UNCONFIGURED_SHUTDOWN: "shutdown", INACTIVE_SHUTDOWN: "shutdown", ACTIVE_SHUTDOWN: "shutdown"}
# primary state -> {transition id the state accepts: the state it leads to on success}
TRANSITIONS: dict[str, dict[int, str]] = {
    UNCONFIGURED: {CONFIGURE: INACTIVE, UNCONFIGURED_SHUTDOWN: FINALIZED},
    INACTIVE: {CLEANUP: UNCONFIGURED, ACTIVATE: ACTIVE, INACTIVE_SHUTDOWN: FINALIZED},
    ACTIVE: {DEACTIVATE: INACTIVE, ACTIVE_SHUTDOWN: FINALIZED},
    FINALIZED: {},
}


def transition_name(transition_id: int, label: str = "") -> str:
    return label or TRANSITION_LABELS.get(transition_id, f"transition id {transition_id}")


def check_transition(state: str, transition_id: int, label: str = "") -> tuple[int | None, str]:
    """Decides a ``~/change_state`` request: (the transition id to run, "") or (None, the reason it is
    refused). A non-empty label wins over the id, as in rclpy's own service."""
    accepted = TRANSITIONS.get(state)
    name = transition_name(transition_id, label)
    if accepted is None:  # a transition state: the single-threaded executor runs one at a time
        return None, f"refused '{name}': the node is {state}, another transition is running"
    if label:
        chosen = [t for t in accepted if TRANSITION_LABELS[t] == label]
    else:
        chosen = [transition_id] if transition_id in accepted else []
    if chosen:
        return chosen[0], ""
    if not accepted:
        return None, f"refused '{name}' in state '{state}': a finalized node takes no transition; start it again"
    valid = ", ".join(dict.fromkeys(TRANSITION_LABELS[t] for t in accepted))
    return None, f"refused '{name}' in state '{state}': valid here: {valid}"


# -- parameters in the lifecycle ----------------------------------------------------------------

def check_parameter_change(name: str, value: Any, state: str) -> tuple[bool, str]:
    """Decides a `ros2 param set` on the managed node in ``state``: (accepted, reason).

    Runtime parameters change in every state. The others are read by configure: they may change
    while the node is unconfigured (a failed configure is fixed this way) and are refused otherwise.
    Parameters the node does not own are accepted."""
    spec = SPECS_BY_NAME.get(name)
    if spec is None:
        return True, ""
    problem = validate_value(spec, value)
    if problem:
        return False, problem
    if spec.runtime or state == UNCONFIGURED:
        return True, ""
    return False, (f"parameter '{name}' is read at configure; the node is {state}: deactivate and clean it up, "
                   f"set it, configure again (changeable in every state: {', '.join(RUNTIME_PARAMETERS)})")


# -- the bond with nav2's lifecycle manager ------------------------------------------------------
# nav2_util::LifecycleNode (nav2_util/src/lifecycle_node.cpp) creates a bond::Bond on the topic "bond"
# (relative: the node's namespace) with the node's name as its id, heartbeat period 0.1 s
# (bond_heartbeat_period) and timeout 4 s, in on_activate; it drops it in on_deactivate and cleanup.
# nav2_lifecycle_manager waits bond_timeout / 2 for it after each activate and brings the stack down
# when it breaks.
BOND_TOPIC = "bond"
BOND_HEARTBEAT_PERIOD_S = 0.1
BOND_HEARTBEAT_TIMEOUT_S = 4.0
DISABLE_HEARTBEAT_TIMEOUT_PARAM = "/bond_disable_heartbeat_timeout"  # bond/msg/Constants
NO_BONDPY = ("bondpy is not installed: no bond, so nav2's lifecycle_manager cannot supervise this node "
             "(install ros-$ROS_DISTRO-bondpy, or set the manager's bond_timeout: 0.0)")


class ManagerBond:
    """Forms the bond on activate and breaks it on deactivate (and so on shutdown and error).

    ``bond_class`` is ``bondpy.bondpy.Bond`` (constructed as ``Bond(node, topic, bond_id)``; ``heartbeat_period``,
    ``heartbeat_timeout``, ``start()``, ``shutdown()``), or None where bondpy is missing: then ``info`` gets
    one line at construction and the node runs without a bond.
    """

    def __init__(self, bond_class: Callable[..., Any] | None, node: Any, info: Callable[[str], None]) -> None:
        self._bond_class, self._node, self._info = bond_class, node, info
        self.bond = None
        if bond_class is None:
            info(NO_BONDPY)

    def form(self) -> None:
        if self._bond_class is None or self.bond is not None:
            return
        name = self._node.get_name()
        # bondpy declares this parameter when the manager's heartbeats stop, and raises declaring it again
        # for a later bond (bondpy 4.1): each bond starts without it.
        if self._node.has_parameter(DISABLE_HEARTBEAT_TIMEOUT_PARAM):
            self._node.undeclare_parameter(DISABLE_HEARTBEAT_TIMEOUT_PARAM)
        bond = self._bond_class(self._node, BOND_TOPIC, name)
        bond.heartbeat_period = BOND_HEARTBEAT_PERIOD_S
        bond.heartbeat_timeout = BOND_HEARTBEAT_TIMEOUT_S
        bond.start()
        self.bond = bond
        self._info(f"bond '{name}' on {BOND_TOPIC} formed for the lifecycle manager")

    def break_bond(self) -> None:
        bond, self.bond = self.bond, None
        if bond is None:
            return
        bond.shutdown()  # publishes "not active" to the manager, stops the heartbeat
        # bondpy destroys its publisher and subscription itself but leaves them in the node's lists;
        # the node's own destroy_* drop them there (a no-op when already gone), so cycles add nothing.
        for entity, destroy in ((getattr(bond, "sub", None), "destroy_subscription"),
                                (getattr(bond, "pub", None), "destroy_publisher")):
            if entity is not None:
                getattr(self._node, destroy)(entity)
        self._info(f"bond '{self._node.get_name()}' broken")


# -- running transitions and refusing requests ---------------------------------------------------

def run_step(name: str, step: Callable[[], None], on_failure: Callable[[], None] | None = None) -> tuple[bool, str]:
    """Runs one transition's work: (True, "NAME: done in S s") or (False, the one-line reason) after
    ``on_failure`` undid what the step had done. A transition callback must report, never raise."""
    started = time.monotonic()
    try:
        step()
    except Exception as error:  # noqa: BLE001
        text = str(error) if isinstance(error, StartupError) else (
            f"{name} failed: {type(error).__name__}: {one_line(error)}")
        if on_failure is not None:
            on_failure()
        return False, text
    return True, f"{name}: done in {time.monotonic() - started:.3f} s"


def guard_change_state(change_state: Callable, current_state: Callable[[], str], refuse: Callable[[str], None]):
    """Wraps the ``~/change_state`` service callback: a request the current state does not accept is
    answered ``success: false`` and its reason goes to ``refuse``; the others run as before."""

    def guarded(request, response):
        transition, reason = check_transition(current_state(), request.transition.id, request.transition.label)
        if transition is None:
            refuse(reason)
            response.success = False
            return response
        return change_state(request, response)

    return guarded
