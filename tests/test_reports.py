"""Summaries' provenance: versions, hardware, and the settings that change a run's numbers."""
from __future__ import annotations

import json

import pytest
import torch

from lth_tutorial.reports import provenance
from lth_tutorial.store import environment
from lth_tutorial.training import set_deterministic


@pytest.fixture
def restore_determinism():
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.use_deterministic_algorithms(saved[0])
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = saved[1:]


@pytest.mark.parametrize("enabled", [True, False])
def test_provenance_on_cpu_records_determinism_and_no_cuda(restore_determinism, enabled):
    set_deterministic(enabled)
    prov = provenance("cpu")
    assert {k: prov[k] for k in ("device", "cuda", "cudnn", "deterministic_algorithms", "cudnn_deterministic",
                                 "cudnn_benchmark", "tf32_matmul", "tf32_cudnn")} == {
        "device": "cpu", "cuda": None, "cudnn": None, "deterministic_algorithms": enabled,
        "cudnn_deterministic": enabled, "cudnn_benchmark": not enabled, "tf32_matmul": False, "tf32_cudnn": False}
    assert prov["threads"] == torch.get_num_threads() == environment("cpu")["threads"]
    assert prov["deterministic_algorithms"] == environment("cpu")["deterministic"]
    assert f"{torch.get_num_threads()} torch threads" in prov["hardware"]
    assert set(prov) >= {"lth_tutorial", "torch", "python", "platform"}
    assert json.loads(json.dumps(prov)) == prov   # it goes into summary JSON as it is


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_provenance_on_cuda_records_its_versions(restore_determinism):
    set_deterministic(True)
    prov = provenance("cuda")
    env = environment("cuda")
    assert (prov["cuda"], prov["cudnn"], prov["device"]) == (torch.version.cuda, torch.backends.cudnn.version(),
                                                             env["device"])
    assert prov["cuda"] is not None and prov["cudnn"] is not None
    assert (prov["deterministic_algorithms"], prov["cudnn_benchmark"], prov["tf32_matmul"]) == (True, False, False)
