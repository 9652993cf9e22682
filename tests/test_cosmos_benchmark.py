"""The Cosmos benchmarks (cosmos_inference, vae_encode, vae_dit_overlap, planning_cost) run end to end on CPU with the tiny network."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/<name>.py as a module; its folder on sys.path, since the scripts import their siblings."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_benchmark_writes_every_measurement(tmp_path: Path, monkeypatch):
    module = load_benchmark("cosmos_inference", monkeypatch)
    out = tmp_path / "results.json"
    module.main(["--config", "tiny", "--device", "cpu", "--batch-sizes", "1,2", "--warmup", "1", "--repeats", "1",
                 "--out", str(out)])
    results = json.loads(out.read_text())
    assert results["matmul_tflops"] > 0
    assert set(results["latency_batch1"]) == {"action_only", "action_and_future_images"}
    assert results["latency_batch1"]["action_and_future_images"]["breakdown"]["vae_decode"] > 0
    assert [row["batch_size"] for row in results["throughput"]] == [1, 2]
    assert all(row["samples_per_s"] > 0 for row in results["throughput"])
    assert results["reference_style_sequential"]["queries_per_s"] > 0


def test_vae_encode_benchmark_compares_variants_with_eager(tmp_path: Path, monkeypatch):
    module = load_benchmark("vae_encode", monkeypatch)
    out = tmp_path / "vae.json"
    module.main(["--config", "tiny", "--device", "cpu", "--batches", "1,2", "--repeats", "1", "--profile-batch", "2",
                 "--variants", "eager,channels_last,compile+channels_last", "--out", str(out)])
    results = json.loads(out.read_text())
    assert list(results["variants"]) == ["eager", "channels_last", "compile+channels_last"]
    assert results["latent_frames_encoded"] == 2  # the two camera frames after the blank + proprio prefix
    for name, row in results["variants"].items():
        assert [b["batch"] for b in row["batches"]] == [1, 2]
        assert all(b["ms"] > 0 and b["vs_eager"]["rel_l2"] < 1e-5 for b in row["batches"]), name  # float32 on the CPU
        assert set(row["profile"]["categories"]) == set(module.VAE_CATEGORIES)
    assert results["variants"]["compile+channels_last"]["profile"]["categories"]["triton_fused"]["ms"] > 0


def test_vae_dit_overlap_probe_times_every_schedule(tmp_path: Path, monkeypatch):
    module = load_benchmark("vae_dit_overlap", monkeypatch)
    out = tmp_path / "overlap.json"
    module.main(["--config", "tiny", "--device", "cpu", "--variant", "eager", "--batches", "1,2", "--repeats", "1",
                 "--steps", "2", "--out", str(out)])
    results = json.loads(out.read_text())
    assert [row["batch"] for row in results["batches"]] == [1, 2]
    for row in results["batches"]:
        for key in ("dit_ms", "vae_ms", "sequential_ms", "overlapped_ms", "overlapped_high_priority_ms", "chunks_per_s"):
            assert row[key] > 0, key
        # the two schedules do the same work: neither can beat the slower of its two parts by much
        assert row["overlapped_ms"] > 0.5 * max(row["dit_ms"], row["vae_ms"])


def test_planning_cost_compares_the_batched_per_member_and_batch1_paths(tmp_path: Path, monkeypatch):
    module = load_benchmark("planning_cost", monkeypatch)
    out = tmp_path / "planning.json"
    module.main(["--config", "tiny", "--device", "cpu", "--ns", "2", "--ensembles", "light", "--repeats", "1",
                 "--warmup", "1", "--out", str(out)])
    [row] = json.loads(out.read_text())["rows"]
    assert (row["ensemble"], row["n"]) == ("light", 2)
    for path in module.PATHS:
        assert row[path]["seconds_per_step"] > 0 and row[path]["evaluations_per_s"] > 0, path
    # light ensemble, N = 2: 5 action + 1 world-model + 1 value evaluations per proposal, on every path
    assert row["batched"]["network_evaluations"] == row["batch1"]["network_evaluations"] == 2 * 7
    assert row["batched"]["dit_calls"] < row["batch1"]["dit_calls"]
    assert row["dit_alone"]["batched_share_of_dit_rate"] > 0
