"""A ticket at inference: the representations one could deploy it in, and the bytes each one holds.

Owns, for a model and its `masks.Mask`:
  - `zeroed_model`    dense layers with the pruned weights set to zero (what training leaves: "dense");
  - `prune_model`     the `torch.nn.utils.prune` reparametrization, weight = weight_orig * weight_mask
                      at every call ("masked dense": what `export` writes as model.pt2);
  - `csr_model`       Linear layers on `torch.sparse` CSR weights, y = (W x^T)^T + b; conv layers stay
                      dense with their zeros (CSR only has a matrix product);
  - `semi_structured_model`  on a CUDA GPU that has them, Linear layers on 2:4 semi-structured weights.
                      2:4 is a different mask from the ticket (at most 2 survivors in every 4 consecutive
                      weights of a row): `two_four_mask` makes it, and it is measured as its own mask,
                      never in the ticket's place;
  - `parameter_bytes` what a module holds in parameters and buffers, sparse layouts counted by their parts.
The mask is the mechanism everywhere else (`masks`, `training`); here prune is only one of the formats.
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from .masks import Mask

SEMI_STRUCTURED_PAD = 64   # both of torch's 2:4 backends accept fp16 matrices whose sides are multiples of 64


def _layers(model: nn.Module, mask: Mask) -> dict[str, nn.Module]:
    """Mask name ('fc.0.weight') -> the layer it masks; refuses a mask that does not fit the model."""
    layers = {}
    for name, m in mask.items():
        path, _, attribute = name.rpartition(".")
        try:
            layer = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"the mask has {name!r}, which this {type(model).__name__} lacks; pair a mask "
                             f"with the model it was made for.") from None
        weight = getattr(layer, attribute, None)
        if attribute != "weight" or weight is None or weight.shape != m.shape:
            raise ValueError(f"the mask's {name!r} ({tuple(m.shape)}) does not fit this "
                             f"{type(model).__name__}; pair a mask with the model it was made for.")
        layers[name] = layer
    return layers


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")[0].rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def zeroed_model(model: nn.Module, mask: Mask) -> nn.Module:
    """A copy in eval mode with the pruned weights set to zero: dense compute, the ticket's function."""
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, layer in _layers(out, mask).items():
            layer.weight.mul_(mask[name].to(layer.weight.device))
    return out


def prune_model(model: nn.Module, mask: Mask) -> nn.Module:
    """A copy in eval mode reparametrized by `torch.nn.utils.prune.custom_from_mask` per masked layer:
    parameters `weight_orig`, buffers `weight_mask` (in the weight's dtype, as prune stores it)."""
    out = copy.deepcopy(model).eval()
    for name, layer in _layers(out, mask).items():
        prune.custom_from_mask(layer, "weight", mask[name].to(layer.weight.device))
    return out


class CSRLinear(nn.Module):
    """A Linear layer whose weight is a CSR tensor (a buffer: inference only).

    Computed as (W x^T)^T: torch.sparse.mm takes the sparse operand first. Not deep-copyable (a CSR
    tensor has no single storage to copy); build another with `csr_model`.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, index_dtype: torch.dtype = torch.int32):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        csr = weight.detach().to_sparse_csr()
        self.register_buffer("weight", torch.sparse_csr_tensor(
            csr.crow_indices().to(index_dtype), csr.col_indices().to(index_dtype), csr.values(), csr.shape,
            check_invariants=True))   # once, here: the kernels trust the indices at every call
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = torch.sparse.mm(self.weight, flat.mT).mT
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.weight.values().numel()}"


def csr_model(model: nn.Module, mask: Mask, index_dtype: torch.dtype = torch.int32) -> nn.Module:
    """A copy in eval mode whose masked Linear layers hold CSR weights (`CSRLinear`); masked conv layers
    stay dense with the pruned weights zeroed. int32 indices (the default) halve the index bytes of
    torch's int64 and fit every layer here; outputs match the masked dense model to float rounding
    (another summation order), not bitwise."""
    out = zeroed_model(model, mask)
    with warnings.catch_warnings():  # "CSR support is in beta": known; the outputs are checked in the tests
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        for name, layer in _layers(out, mask).items():
            if isinstance(layer, nn.Linear):
                _replace(out, name, CSRLinear(layer.weight, layer.bias, index_dtype))
    return out


# ---- 2:4 semi-structured (CUDA, compute capability >= 8.0) --------------------------------------------


def two_four_mask(weights: dict[str, torch.Tensor], mask: Mask) -> Mask:
    """The 2:4 mask nearest the ticket: in every group of 4 consecutive weights of a row (2-D weights:
    Linear layers), the ticket's survivors with the 2 largest magnitudes stay. Sparser than the ticket
    wherever a group had more than 2 survivors, so it is another mask, with its own accuracy. Ties go as
    in `masks`: the lower index is dropped first. Other tensors (conv) keep the ticket's mask."""
    out = Mask(mask)
    for name, m in mask.items():
        if m.dim() != 2:
            continue
        rows, cols = m.shape
        pad = -cols % 4
        scores = weights[name].detach().abs().to(m.device).float().masked_fill(~m, -float("inf"))
        scores = F.pad(scores, (0, pad), value=-float("inf")).view(rows, -1, 4)
        order = torch.argsort(scores, dim=-1, stable=True)        # ascending: the first two are dropped
        keep = torch.ones_like(scores, dtype=torch.bool).scatter_(-1, order[..., :2], False)
        out[name] = keep.view(rows, -1)[:, :cols] & m
    return out


def is_two_four(mask: torch.Tensor) -> bool:
    """At most 2 survivors in every group of 4 consecutive weights of each row."""
    padded = F.pad(mask.to(torch.int32), (0, -mask.shape[-1] % 4))
    return bool((padded.view(mask.shape[0], -1, 4).sum(-1) <= 2).all())


def semi_structured_support(device: str | torch.device) -> str | None:
    """Why 2:4 semi-structured weights cannot run on `device`, or None where they can."""
    device = torch.device(device)
    if device.type != "cuda":
        return (f"2:4 semi-structured sparsity runs on CUDA GPUs of compute capability 8.0 or newer, not on "
                f"{device.type}; use csr_model on a CPU")
    if not torch.cuda.is_available():
        return "no CUDA device is available; use csr_model on a CPU"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return (f"{torch.cuda.get_device_name(device)} has compute capability {major}.{minor}; 2:4 sparse "
                f"tensor cores need 8.0 or newer (Ampere or later); use csr_model")
    if not torch.backends.cusparselt.is_available():
        return "this torch build has no cuSPARSELt, which torch's 2:4 kernels use; use csr_model"
    return None


class SemiStructuredLinear(nn.Module):
    """A Linear layer on a 2:4 semi-structured weight, zero-padded to sides the kernels accept."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        rows, cols = (-(-n // SEMI_STRUCTURED_PAD) * SEMI_STRUCTURED_PAD for n in weight.shape)
        self.pad_in = cols - self.in_features
        padded = F.pad(weight.detach(), (0, self.pad_in, 0, rows - self.out_features)).contiguous()
        self.weight = nn.Parameter(torch.sparse.to_sparse_semi_structured(padded), requires_grad=False)
        self.register_buffer("bias", None if bias is None else F.pad(bias.detach(), (0, rows - self.out_features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.pad(x, (0, self.pad_in)), self.weight, self.bias)[..., :self.out_features]


def semi_structured_model(model: nn.Module, mask: Mask, dtype: torch.dtype = torch.float16) -> nn.Module:
    """A copy in eval mode and `dtype` (on the model's CUDA device) whose masked Linear layers hold 2:4
    semi-structured weights. `mask` must already be 2:4 on them (`two_four_mask`): the ticket's own mask
    is not, and is never silently replaced."""
    device = next(model.parameters()).device
    reason = semi_structured_support(device)
    if reason:
        raise ValueError(reason + ".")
    out = zeroed_model(model, mask).to(dtype)
    for name, layer in _layers(out, mask).items():
        if isinstance(layer, nn.Linear):
            if not is_two_four(mask[name]):
                raise ValueError(f"the mask of {name} is not 2:4 (more than 2 survivors in some group of 4); "
                                 f"make one with two_four_mask(weights, mask) and measure it as its own mask.")
            _replace(out, name, SemiStructuredLinear(layer.weight, layer.bias))
    return out


# ---- sizes ------------------------------------------------------------------------------------------


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds: CSR as values + column indices + row pointers, 2:4 as its packed parts."""
    if t.layout == torch.sparse_csr:
        return sum(tensor_bytes(p) for p in (t.values(), t.col_indices(), t.crow_indices()))
    if isinstance(t, torch.sparse.SparseSemiStructuredTensor):
        return sum(tensor_bytes(p) for p in (t.packed, t.meta, t.packed_t, t.meta_t) if p is not None)
    return t.numel() * t.element_size()


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of `module` (each tensor once): dense weights, prune's
    weight_orig and weight_mask, CSR parts, a compact model's smaller weights; biases and batch-norm
    statistics included, since inference needs them."""
    tensors = [t for _, t in module.named_parameters()] + [t for _, t in module.named_buffers()]
    return sum(tensor_bytes(t) for t in tensors)
