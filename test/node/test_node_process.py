"""The node process itself: services during a slow model load, illegal transitions, the
shutdown transition, and how fast SIGINT ends it after a full-size model load."""

from __future__ import annotations

import time

import pytest
from lifecycle_msgs.msg import Transition
from ros_helpers.harness import NodeProcess, RosProbe, localhost_discovery, ros_environment


@pytest.fixture(scope="module")
def full_size_checkpoint(tmp_path_factory):
    from moa_depth_ros.models import build_model
    from moa_depth_ros.models.checkpoint import save_checkpoint

    model = build_model({"type": "moa_depthclip", "clip_pretrained": "none"})  # 363 MB: seconds
    return save_checkpoint(model, tmp_path_factory.mktemp("full") / "vitb32.safetensors")


@pytest.fixture
def probe_env(tmp_path):
    import random

    domain = random.randint(1, 200)
    with localhost_discovery():
        probe = RosProbe(domain)
        try:
            yield probe, ros_environment(tmp_path / "ros_log", domain), tmp_path
        finally:
            probe.close()


def _states_until_active(probe, name: str, timeout: float = 120.0) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = probe.get_state(name, timeout=1.0)
        except TimeoutError:
            continue
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == "active":
            return seen
        time.sleep(0.05)
    raise AssertionError(f"never active; states seen: {seen}")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_services_answer_during_the_model_load_and_sigint_exits_fast(
    full_size_checkpoint, probe_env
) -> None:
    probe, env, tmp = probe_env
    node = NodeProcess("depth_slow", "/slow", {"checkpoint": str(full_size_checkpoint),
                       "device": "cpu"}, env, tmp / "slow.log")  # fmt: skip
    try:
        states = _states_until_active(probe, node.full_name)
        # get_state answered while configure (the model load) was still running.
        assert "configuring" in states, states
        assert states[-1] == "active"
        started = time.monotonic()
        code = node.stop(timeout=20)
        elapsed = time.monotonic() - started
        assert code == 0, node.log_text()
        assert elapsed < 3.0, f"SIGINT to exit took {elapsed:.1f} s"
    finally:
        node.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_illegal_transitions_are_refused_quietly_and_shutdown_ends_the_process(probe_env) -> None:
    from conftest import TINY_MOA

    from moa_depth_ros.models import build_model
    from moa_depth_ros.models.checkpoint import save_checkpoint

    probe, env, tmp = probe_env
    checkpoint = save_checkpoint(build_model(TINY_MOA), tmp / "tiny.safetensors")
    node = NodeProcess("depth_lc", "/lc", {"checkpoint": str(checkpoint), "device": "cpu"},
                       env, tmp / "lc.log")  # fmt: skip
    try:
        _states_until_active(probe, node.full_name, timeout=60)
        for _ in range(40):  # configure is not a transition of 'active'
            assert not probe.change_state(node.full_name, Transition.TRANSITION_CONFIGURE)
        diag = probe.diagnostic("depth_lc", lambda d: d.int("transitions_refused") >= 40, 10)
        assert (
            diag is not None
            and "refused lifecycle transition 'configure'" in diag.values["last_transition_refused"]
        )
        log = node.log_text()
        assert log.count("refused lifecycle transition") <= 2  # rate-limited
        assert "Unable to start transition" not in log  # rclpy's per-request ERROR is avoided
        assert probe.change_state(node.full_name, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert node.wait(15) == 0  # finalized: the process ends by itself
    finally:
        node.stop()
