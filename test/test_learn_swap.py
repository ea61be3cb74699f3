"""~/load_model and ~/rollback_model on a real anomaly_node process (issue 25).

One node (tiny random checkpoint A) for the module. A good load swaps to checkpoint B while
frames keep being answered; missing, corrupt and mismatched models are refused with one line and
the node keeps serving; ~/rollback_model restores A's score maps bit for bit.
"""

from __future__ import annotations

import shutil
import time
from types import SimpleNamespace

import numpy as np
import pytest
from ros_harness import (
    diagnostic_values,
    image_from_msg,
    running_node,
    textured_image,
    write_params,
)
from tiny_checkpoints import tiny_checkpoint

pytestmark = [pytest.mark.ros, pytest.mark.alone]

NS = "/learn_swap_test"
NODE = f"{NS}/anomaly_node"
TOPIC = "/learn_swap_test_in/image_raw"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    tmp = tmp_path_factory.mktemp("learn_swap")
    ckpt_a = tiny_checkpoint(tmp / "site_a")
    ckpt_b = tiny_checkpoint(tmp / "site_b", seed=7, threshold=50.0, provenance={"test": "b"})
    params = write_params(
        tmp / "params.yaml",
        {"checkpoint": str(ckpt_a), "image_topics": [TOPIC], "camera_names": ["cam"],
         "diagnostics_period_s": 0.5, "no_frame_warning_s": 60.0},
    )  # fmt: skip
    with running_node(params, NS, tmp / "node.log", "learn_swap_tester") as (proc, client):
        score_maps = client.subscribe(f"{NODE}/cam/score_map", Image)
        diagnostics = client.subscribe("/diagnostics", DiagnosticArray, depth=50)
        pub = client.publisher(TOPIC, Image)
        client.wait_matched(pub)
        client.wait_subscribed(f"{NODE}/cam/score_map")
        yield SimpleNamespace(
            client=client, proc=proc, pub=pub, score_maps=score_maps, diagnostics=diagnostics,
            a=ckpt_a, b=ckpt_b, tmp=tmp, learn_dir=tmp / "site_a.learn", n=0,
        )  # fmt: skip


RGB = textured_image(48, 64, seed=3)


def _score_map(env) -> np.ndarray:
    """Publishes the fixed frame (again every 0.5 s: best effort) and returns its score map."""
    env.n += 1
    frame_id = f"f{env.n}"
    msg = env.client.image(RGB, frame_id)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        env.pub.publish(msg)
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            found = env.score_maps.find(lambda m: m.header.frame_id == frame_id)
            if found is not None:
                return image_from_msg(found)
            env.proc.check_alive()
            time.sleep(0.01)
    pytest.fail(f"no score map for {frame_id}\n{env.proc.output()[-3000:]}")


def _load(env, path) -> object:
    from flowclas_ros.srv import LoadModel

    return env.client.call(LoadModel, f"{NODE}/load_model", LoadModel.Request(path=str(path)), timeout=120)


def _rollback(env) -> object:
    from std_srvs.srv import Trigger

    return env.client.call(Trigger, f"{NODE}/rollback_model", Trigger.Request(), timeout=120)


def _diag_identity(env, after: float) -> str:
    def find():
        for stamp, msg in reversed(env.diagnostics.timed()):
            if stamp > after:
                found = diagnostic_values(msg, "anomaly_node: node")
                if found and "model_identity" in found[2]:
                    return found[2]["model_identity"]
        return None

    return env.client.wait_for(find, 20, "a /diagnostics status with model_identity")


def test_load_refuses_bad_models_and_keeps_serving(env):
    from flowclas_ros.model.checkpoint_meta import read_checkpoint_identity

    before = _score_map(env)
    corrupt = env.tmp / "corrupt"
    shutil.copytree(env.b, corrupt)
    (corrupt / "flow.safetensors").write_bytes(b"not a safetensors file")
    mismatched = env.tmp / "mismatched"  # B's config, weights of a 4-step flow: shapes disagree
    four = tiny_checkpoint(env.tmp / "four", steps=4, threshold=1.0)
    shutil.copytree(env.b, mismatched)
    shutil.copy(four / "flow.safetensors", mismatched / "flow.safetensors")
    for path, fragment in (
        (env.tmp / "missing", "no such"),
        (corrupt, "corrupt"),
        (mismatched, "does not match"),
        ("", "empty"),
    ):
        response = _load(env, path)
        assert not response.success, path
        assert "\n" not in response.message and response.message, response.message
        assert fragment in response.message, response.message
        assert response.identity == read_checkpoint_identity(env.a).sha256
        assert np.array_equal(_score_map(env), before), "the old model must keep serving, unchanged"
    env.proc.check_alive()


def test_load_swaps_and_rollback_restores_bit_for_bit(env):
    from flowclas_ros.model.checkpoint_meta import read_checkpoint_identity

    id_a, id_b = read_checkpoint_identity(env.a).sha256, read_checkpoint_identity(env.b).sha256
    before = _score_map(env)
    response = _load(env, env.b)
    assert response.success, response.message
    assert response.identity == id_b
    assert id_a[:12] in response.message and id_b[:12] in response.message
    after = _score_map(env)
    assert not np.array_equal(after, before), "checkpoint B must score differently"
    diag = _diag_identity(env, time.time())
    assert diag == id_b
    params = env.client.get_parameters(NODE, ["threshold"])
    assert params["threshold"] == pytest.approx(50.0), "a threshold filled in from A follows B"
    assert "swapped model" in env.proc.output()
    # The original checkpoint is kept inside learn_dir, so rollback does not depend on it.
    assert any((env.learn_dir / "models").iterdir())

    response = _rollback(env)
    assert response.success, response.message
    restored = _score_map(env)
    assert restored.tobytes() == before.tobytes(), "rollback must restore A's outputs bit for bit"
    assert _diag_identity(env, time.time()) == id_a
    assert env.client.get_parameters(NODE, ["threshold"])["threshold"] == pytest.approx(100.0)

    response = _rollback(env)
    assert not response.success and "nothing to roll back" in response.message
    assert _score_map(env).tobytes() == before.tobytes()
