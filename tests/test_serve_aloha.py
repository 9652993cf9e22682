"""ALOHA served with planning: `robofleet serve` on a spec with `[env] family = "aloha"` (no simulator), the
tiny Cosmos policy in the ALOHA layout (11 latent frames, chunk 50, three cameras) on CPU, best_of_n,
and clients that send ALOHA-shaped observations the way the reference's ALOHA client and openpi's do."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robofleet.platform.errors import SpecError
from robofleet.platform.serve_spec import load_serve_spec, serve_spec_from_dict
from robofleet.policies.cosmos.layout import LAYOUTS
from tests.conftest import served

N = 2
SPEC = """
seed = 195                     # aloha/deploy.py's --seed
[env]
family = "aloha"
[policy]
name = "cosmos"
config = "tiny"
device = "cpu"
image_size = 64                # room for the 50 x 14 chunk in a tiny latent frame
action_steps = 2
return_latents = true          # protocol "reference": the world model conditions on each proposal's sample
[planner]
name = "best_of_n"
n = 2
scorer = "model"
aggregation = "majority_mean"  # the ALOHA planning recipe's
future_steps = [1]
value_steps = [1, 2]
[serving]
max_wait_ms = 0.0
"""

# The reference's client, as run_aloha_eval.py builds and sends it: prepare_observation's keys (images
# resized to --input_image_size 224, proprio = qpos), then task_description, then
# get_action_from_server: json_numpy.patch(), return_all_query_results, requests.post(json=...).json(),
# reading actions / future_image_predictions / value_predictions / all_* from the reply.
REFERENCE_CLIENT = """
import json, sys, json_numpy, numpy as np, requests
json_numpy.patch()
rng = np.random.default_rng(0)
observation = {"primary_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
               "left_wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
               "right_wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
               "proprio": rng.normal(scale=0.3, size=14)}
observation["task_description"] = "fold the shirt"
observation["return_all_query_results"] = True
response = requests.post(sys.argv[1], json=observation).json()
again = requests.post(sys.argv[1], json={"encoded": json.dumps(observation)}).json()
again = json.loads(again)
actions = response["actions"]
print(json.dumps({"actions": np.asarray(actions).shape, "value": response["value_predictions"],
                  "value_prediction": response["value_prediction"],
                  "future": response["future_image_predictions"],
                  "all_actions": [np.asarray(a).shape for a in response["all_actions"]],
                  "all_values": response["all_value_predictions"],
                  "chosen": response["plan"]["chosen"], "scores": response["plan"]["scores"],
                  "seeds": response["plan"]["seeds"],
                  "chosen_is_all": bool(np.array_equal(actions, response["all_actions"][response["plan"]["chosen"]])),
                  "repeat": bool(np.array_equal(actions, again["actions"]))}))
"""


@pytest.fixture(scope="module")
def aloha_spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("aloha") / "aloha.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def aloha_server(aloha_spec):
    yield from served(None, load_serve_spec(aloha_spec))


def test_an_aloha_spec_has_no_simulator_and_the_aloha_layout(aloha_spec):
    spec = load_serve_spec(aloha_spec)
    assert spec.env.family == "aloha" and spec.env.tasks == () and spec.protocol == "reference"
    layout = LAYOUTS["aloha"]
    assert (layout.num_frames, layout.chunk_size, len(layout.cameras)) == (11, 50, 3)
    with pytest.raises(SpecError, match=r"env\.suite"):
        serve_spec_from_dict({"seed": 1, "env": {"family": "aloha", "suite": "x"}, "policy": {"name": "zero"}})
    with pytest.raises(SpecError, match=r"^run"):
        serve_spec_from_dict({"seed": 1, "env": {"family": "aloha"}, "policy": {"name": "zero"}, "run": {}})


def test_the_reference_aloha_client_gets_a_planned_50_step_chunk(aloha_server):
    pytest.importorskip("json_numpy")
    done = subprocess.run([sys.executable, "-c", REFERENCE_CLIENT, aloha_server.act_url], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["actions"] == [50, 14] and out["all_actions"] == [[50, 14]] * N
    assert out["all_values"] == out["scores"] and out["chosen_is_all"]
    assert out["value"] == out["value_prediction"] == max(out["scores"]) == out["scores"][out["chosen"]]
    assert out["seeds"] == [195, 196], "proposal i seeded seed + i, as deploy.py's best-of-N"
    assert out["future"] is None  # the policy was not asked to decode future images
    assert out["repeat"], "the double-encoded form gets the same (deterministic) chunk"


def test_openpis_aloha_client_gets_the_chunk_from_channels_first_images(aloha_server):
    openpi = pytest.importorskip("openpi_client.websocket_client_policy")
    rng = np.random.default_rng(1)
    # openpi's examples/aloha_real: images (3, 224, 224) uint8 per camera (cam_low too), state = qpos (14)
    observation = {"state": rng.normal(size=14), "prompt": "fold the shirt",
                   "images": {c: rng.integers(0, 256, (3, 224, 224), dtype=np.uint8)
                              for c in ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")}}
    client = openpi.WebsocketClientPolicy(aloha_server.ws_url)
    assert client.get_server_metadata()["env_family"] == "aloha"
    reply = client.infer(observation)
    assert reply["actions"].shape == (50, 14) and reply["plan"]["n"] == N
    assert reply["plan"]["value"] == max(reply["plan"]["scores"])


def test_robofleet_serve_on_the_command_line_serves_an_aloha_spec(aloha_spec):
    """The CLI end to end: `robofleet serve aloha.toml --port 0` prints where it listens and answers /act."""
    import requests

    from robofleet.policies.remote.adapters import AlohaHttpAct
    from robofleet.policies.remote.wire import dumps_json, loads_json

    process = subprocess.Popen([sys.executable, "-m", "robofleet.jobs.cli", "serve", str(aloha_spec), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving 'cosmos' with planner 'best_of_n' (aloha)"), process.stderr.read()[-3000:]
        url = line.split(" and ")[1].split()[0]
        rng = np.random.default_rng(2)
        message = {key: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for key in AlohaHttpAct.images}
        message.update(proprio=np.zeros(14, np.float32), task_description="fold the shirt")
        reply = requests.post(url, data=dumps_json(message), timeout=300)
        assert reply.status_code == 200, reply.text
        assert np.shape(loads_json(reply.content, 1 << 30)["actions"]) == (50, 14)
        bad = requests.post(url, data=dumps_json({**message, "proprio": np.zeros(9)}), timeout=60)
        assert bad.status_code == 400 and "proprio" in bad.json()["error"]
    finally:
        process.terminate()
        process.wait(timeout=60)
