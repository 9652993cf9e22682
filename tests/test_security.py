"""Security: no dashboard or Jobs API beyond 127.0.0.1 unless asked, no code run from downloaded
files, and no spec that makes the platform write outside its run directory."""
from __future__ import annotations

import ast
import pickle
from pathlib import Path

import psutil
import pytest

from robofleet.platform.errors import SpecError
from robofleet.platform.spec import spec_from_dict
from tests.conftest import small_spec

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("platform", "envs", "policies", "planners", "jobs", "benchmarks")
LOOPBACK = ("127.0.0.1", "::1")


def listening(processes: list[psutil.Process]) -> list[tuple[str, int, str]]:
    """(ip, port, command) of every listening TCP socket of `processes`."""
    pids = {}
    for proc in processes:
        try:
            pids[proc.pid] = " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
    return [(c.laddr.ip, c.laddr.port, pids[c.pid]) for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]


# -- network ------------------------------------------------------------------------------------
def test_the_embedded_cluster_runs_no_dashboard_and_listens_on_loopback_only(ray_cluster):
    """No dashboard process (so no HTTP server, no Jobs API); GCS, raylet, agents and workers on 127.0.0.1."""
    ours = psutil.Process().children(recursive=True)
    commands = [" ".join(p.cmdline()) for p in ours if p.is_running()]
    assert not [c for c in commands if "dashboard/dashboard.py" in c], "no dashboard process"
    sockets = listening([psutil.Process(), *ours])
    assert sockets and all(ip in (*LOOPBACK, "::ffff:127.0.0.1") for ip, _, _ in sockets), sockets
    assert not ray_cluster._private.worker.global_worker.node.address_info.get("webui_url")


@pytest.mark.slow
def test_a_local_head_binds_its_dashboard_and_jobs_api_to_loopback_only():
    from robofleet.jobs.local_head import LocalHead

    with LocalHead.start(num_cpus=1) as head:
        head_processes = [psutil.Process(pid) for pid in psutil.pids() if _in_session(pid, head.session)]
        sockets = [s for s in listening(head_processes) if s[1] == head.dashboard_port]
        assert sockets, "the dashboard listens"
        assert all(ip in LOOPBACK for ip, _, _ in sockets), sockets


def _in_session(pid: int, session: int) -> bool:
    try:
        return psutil.Process(pid).pid != 0 and __import__("os").getsid(pid) == session
    except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
        return False


# -- deserialisation ----------------------------------------------------------------------------
UNSAFE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
                ("dill", "load"), ("dill", "loads"), ("joblib", "load"), ("marshal", "load"), ("marshal", "loads"),
                ("yaml", "load"), ("yaml", "unsafe_load")}
# The one reviewed exception: reading a released T5 pickle, reached only through trust_pickle = true or the
# explicit `robofleet convert-embeddings` command (tests/test_cosmos_checkpoint.py checks the refusal).
ALLOWED = {("policies/cosmos/embeddings.py", "read_t5_pickle")}


def _calls(path: Path):
    """(enclosing function or "<module>", module name, attribute, node) of every `name.attr(...)` call."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            scope = parents.get(node)
            while scope is not None and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
                scope = parents.get(scope)
            yield getattr(scope, "name", "<module>"), node.func.value.id, node.func.attr, node


def test_nothing_in_the_tree_unpickles_outside_the_reviewed_trusted_path():
    found, torch_loads = set(), []
    for directory in SOURCE_DIRS:
        for path in sorted((REPO / directory).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            for function, module, attr, node in _calls(path):
                if (module, attr) in UNSAFE_CALLS:
                    found.add((rel, function))
                if (module, attr) == ("torch", "load"):
                    weights_only = {k.arg: k.value for k in node.keywords}.get("weights_only")
                    torch_loads.append((rel, function, isinstance(weights_only, ast.Constant) and weights_only.value))
                if (module, attr) == ("np", "load") or (module, attr) == ("numpy", "load"):
                    assert not any(k.arg == "allow_pickle" for k in node.keywords), (rel, function)
    assert found <= ALLOWED, found - ALLOWED
    assert torch_loads and all(ok for _, _, ok in torch_loads), torch_loads


def test_a_diffusers_vae_folder_with_a_pickled_payload_runs_no_code(tmp_path):
    """The VAE is read by diffusers' from_pretrained; a .bin there goes through torch.load(weights_only=True)."""
    import torch
    from diffusers import AutoencoderKLWan

    from robofleet.policies.cosmos.config import TINY
    from robofleet.policies.cosmos.network import CosmosNetwork

    CosmosNetwork.build(TINY, torch.device("cpu"), torch.float32, seed=0).vae.save_pretrained(tmp_path)
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for weights in tmp_path.glob("*.safetensors"):
        weights.unlink()
    torch.save({"decoder.conv_in.weight": Payload()}, tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(Exception):  # noqa: B017 - which error diffusers raises is its business; no code ran
        AutoencoderKLWan.from_pretrained(str(tmp_path))
    assert not marker.exists()


def test_the_t5_pickle_is_unpickled_only_with_trust_pickle(tmp_path):
    from robofleet.platform.errors import CheckpointError
    from robofleet.policies.cosmos.embeddings import load_embeddings

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "libero_t5_embeddings.pkl"
    path.write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_embeddings(path, trust_pickle=False)
    assert not marker.exists()


# -- the run directory ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/etc/robofleet", "~/runs", "a//b", "..\\up"])
def test_a_run_name_cannot_point_outside_runs(name):
    with pytest.raises(SpecError, match="would put the run outside runs/"):
        spec_from_dict({**small_spec(), "name": name})


def test_nested_run_names_stay_allowed():
    assert spec_from_dict({**small_spec(), "name": "sweep/point-1"}).name == "sweep/point-1"


def test_a_sweep_named_to_escape_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import tomli_w

    from robofleet.jobs.cli import main

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    spec = work / "sweep.toml"
    spec.write_text(tomli_w.dumps({**small_spec(), "sweep": {"name": "../../escaped"}}))
    assert main(["run", str(spec), "--no-progress"]) == 2
    assert "would put the run outside runs/" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and not (work / "runs").exists()


def test_every_file_a_run_writes_is_inside_its_directory(tmp_path):
    from robofleet.platform.episodes import expand_episodes
    from robofleet.platform.results import RunStore
    from robofleet.platform.scheduler import _video_path

    spec = spec_from_dict({**small_spec(), "name": "a/b", "env": {**small_spec()["env"], "tasks": "all", "trials": 3}})
    store = RunStore(tmp_path / "run", spec)
    root = store.root.resolve()
    for episode in expand_episodes(spec):
        video = Path(_video_path(store, spec, episode, videos=3))
        assert video.resolve().is_relative_to(root / "videos"), video
