"""The managed node's ROS-free rules (ros/lifecycle.py): transitions per state, parameters per state, the
bond's life, a transition step that reports instead of raising. The same rules with real rclpy:
test_lifecycle_ros.py."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from bisenetv2_ros.ros import lifecycle
from bisenetv2_ros.ros.parameters import PARAMETER_SPECS, RUNTIME_PARAMETERS
from bisenetv2_ros.ros.pipeline import StartupError

ALL_IDS = range(0, 9)  # 0 (create) and 8 (destroy) are never requests; 1-7 the primary transitions


@pytest.mark.parametrize("state, transition_id", list(itertools.product(lifecycle.PRIMARY_STATES, ALL_IDS)))
def test_every_transition_id_in_every_primary_state(state, transition_id):
    chosen, reason = lifecycle.check_transition(state, transition_id)
    expected = {("unconfigured", 1), ("unconfigured", 5), ("inactive", 2), ("inactive", 3), ("inactive", 6),
                ("active", 4), ("active", 7)}
    if (state, transition_id) in expected:
        assert (chosen, reason) == (transition_id, "")
    else:
        assert chosen is None and reason.startswith("refused ") and f"'{state}'" in reason


def test_refusals_name_what_the_state_accepts():
    assert lifecycle.check_transition("unconfigured", 3) == (
        None, "refused 'activate' in state 'unconfigured': valid here: configure, shutdown")
    assert lifecycle.check_transition("active", 1) == (
        None, "refused 'configure' in state 'active': valid here: deactivate, shutdown")
    assert lifecycle.check_transition("inactive", 42) == (
        None, "refused 'transition id 42' in state 'inactive': valid here: cleanup, activate, shutdown")
    assert lifecycle.check_transition("finalized", 1)[1] == (
        "refused 'configure' in state 'finalized': a finalized node takes no transition; start it again")
    assert lifecycle.check_transition("configuring", 3)[1] == (
        "refused 'activate': the node is configuring, another transition is running")


def test_a_label_wins_over_the_id_as_in_rclpy():
    # `ros2 lifecycle set NODE shutdown` sends the label; each state has its own shutdown id
    assert lifecycle.check_transition("unconfigured", 0, "shutdown") == (5, "")
    assert lifecycle.check_transition("inactive", 0, "shutdown") == (6, "")
    assert lifecycle.check_transition("active", 0, "shutdown") == (7, "")
    assert lifecycle.check_transition("active", 4, "configure")[0] is None
    assert lifecycle.check_transition("inactive", 0, "fly")[1] == (
        "refused 'fly' in state 'inactive': valid here: cleanup, activate, shutdown")


def test_parameters_per_state():
    startup_only = [spec.name for spec in PARAMETER_SPECS if not spec.runtime]
    assert "weights" in startup_only and "publish_color" in RUNTIME_PARAMETERS
    for state in ("unconfigured", "inactive", "active"):
        assert lifecycle.check_parameter_change("publish_color", False, state) == (True, "")
        assert lifecycle.check_parameter_change("not_ours", 1, state) == (True, "")
    for name in startup_only:  # fixable before (re)configuring, refused once configured
        spec = next(spec for spec in PARAMETER_SPECS if spec.name == name)
        assert lifecycle.check_parameter_change(name, spec.default, "unconfigured") == (True, ""), name
        for state in ("inactive", "active"):
            accepted, reason = lifecycle.check_parameter_change(name, spec.default, state)
            assert not accepted and reason.startswith(f"parameter '{name}' is read at configure; the node is {state}")
    # an invalid value is refused in every state, with the value's problem
    assert lifecycle.check_parameter_change("backend", "cuda", "unconfigured") == (
        False, "parameter 'backend' must be one of auto, torch, onnxruntime, tensorrt, openvino; got 'cuda'")


class FakeBond:
    """Records what the node does with a bondpy Bond."""

    made: list["FakeBond"] = []

    def __init__(self, node, topic, bond_id):
        self.node, self.topic, self.id = node, topic, bond_id
        self.events = []
        self.sub, self.pub = object(), object()
        FakeBond.made.append(self)

    def start(self):
        self.events.append(("start", self.heartbeat_period, self.heartbeat_timeout))

    def shutdown(self):
        self.events.append(("shutdown",))


class FakeNode:
    def __init__(self):
        self.destroyed, self.parameters = [], {lifecycle.DISABLE_HEARTBEAT_TIMEOUT_PARAM: False}

    def get_name(self):
        return "segmentation_node"

    def has_parameter(self, name):
        return name in self.parameters

    def undeclare_parameter(self, name):
        del self.parameters[name]

    def destroy_subscription(self, entity):
        self.destroyed.append(("subscription", entity))

    def destroy_publisher(self, entity):
        self.destroyed.append(("publisher", entity))


def test_the_bond_is_formed_like_nav2s_and_broken_once():
    FakeBond.made.clear()
    node, lines = FakeNode(), []
    keeper = lifecycle.ManagerBond(FakeBond, node, lines.append)
    keeper.form()
    keeper.form()  # activate twice without deactivate cannot happen, but must not form a second bond
    assert len(FakeBond.made) == 1
    bond = FakeBond.made[0]
    assert (bond.node, bond.topic, bond.id) == (node, "bond", "segmentation_node")
    assert bond.events == [("start", 0.1, 4.0)]
    assert lifecycle.DISABLE_HEARTBEAT_TIMEOUT_PARAM not in node.parameters
    keeper.break_bond()
    keeper.break_bond()
    assert bond.events == [("start", 0.1, 4.0), ("shutdown",)]
    assert node.destroyed == [("subscription", bond.sub), ("publisher", bond.pub)]
    assert keeper.bond is None
    keeper.form()
    assert len(FakeBond.made) == 2 and FakeBond.made[1] is not bond, "a new bond on the next activate"
    assert lines == ["bond 'segmentation_node' on bond formed for the lifecycle manager",
                     "bond 'segmentation_node' broken",
                     "bond 'segmentation_node' on bond formed for the lifecycle manager"]


def test_without_bondpy_one_line_and_no_bond():
    lines = []
    keeper = lifecycle.ManagerBond(None, FakeNode(), lines.append)
    keeper.form()
    keeper.break_bond()
    assert lines == [lifecycle.NO_BONDPY] and keeper.bond is None
    assert "bondpy is not installed" in lines[0] and "bond_timeout: 0.0" in lines[0]


def test_run_step_reports_instead_of_raising():
    undone = []
    assert lifecycle.run_step("configure", lambda: None)[0] is True
    assert lifecycle.run_step("configure", lambda: None)[1].startswith("configure: done in ")

    def missing():
        raise StartupError("cannot start the segmentation node: no weights at /x.pt")

    assert lifecycle.run_step("configure", missing, lambda: undone.append(1)) == (
        False, "cannot start the segmentation node: no weights at /x.pt")
    assert undone == [1]

    def broken():
        raise RuntimeError("device lost\nsecond line")

    ok, text = lifecycle.run_step("deactivate", broken)
    assert not ok and text == "deactivate failed: RuntimeError: device lost second line"


def test_the_change_state_guard_answers_refusals_itself():
    refused, calls = [], []
    state = ["unconfigured"]
    guarded = lifecycle.guard_change_state(lambda request, response: calls.append(request) or response,
                                           lambda: state[0], refused.append)

    def request(transition_id, label=""):
        return SimpleNamespace(transition=SimpleNamespace(id=transition_id, label=label))

    response = guarded(request(3), SimpleNamespace(success=True))
    assert response.success is False and calls == []
    assert refused == ["refused 'activate' in state 'unconfigured': valid here: configure, shutdown"]
    guarded(request(1), SimpleNamespace(success=False))
    assert len(calls) == 1 and len(refused) == 1


def test_the_node_doc_parameter_table_says_which_parameters_change_while_active():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs/node.md").read_text()
    table = doc.split("\n## Parameters", 1)[1].split("\n#", 1)[0]
    assert "| Parameter | Default | Changes while active | Meaning |" in table
    column = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if line.startswith("| `"):
            for name in cells[1].replace("`", "").split(", "):
                column[name] = cells[3]
    assert column == {spec.name: "yes" if spec.runtime else "no" for spec in PARAMETER_SPECS}
