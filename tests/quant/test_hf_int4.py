"""GPTQ and AWQ (GEMM) 4-bit checkpoints load onto qwick's int4 modules, checked against the dequantized
reference w = (q - z) * s. The checkpoints are written here from the tiny trained model by round-to-nearest
group quantization, packed per the published layouts (AutoGPTQ's QuantLinear.pack, AutoAWQ's
WQLinear_GEMM.from_linear), independently of qwick's unpacking code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from trained import load_float32

from qwick.model.loader import CheckpointError
from qwick.passes.load import load_model
from qwick.quant.accuracy import logits
from qwick.quant.int4 import Int4Linear
from qwick.quant.options import PROJECTIONS

GROUP = 32
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def _rtn(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w [N, K] -> q [K, N] 0..15, z [K/g, N] 0..15, s float16 [K/g, N] (asymmetric min/max per group)."""
    n, k = w.shape
    groups = w.view(n, k // GROUP, GROUP)
    lo, hi = groups.amin(-1).clamp(max=0), groups.amax(-1).clamp(min=0)
    s = ((hi - lo) / 15).clamp(min=1e-5).half()
    z = torch.round(-lo / s.float()).clamp(0, 15)
    q = torch.clamp(torch.round(groups / s.float()[..., None]) + z[..., None], 0, 15).view(n, k)
    return q.t().int(), z.t().int(), s.t().contiguous()


def _pack_rows(q: torch.Tensor) -> torch.Tensor:  # GPTQ qweight: [K, N] -> int32 [K/8, N]
    packed = torch.zeros(q.shape[0] // 8, q.shape[1], dtype=torch.int64)
    for j in range(8):
        packed |= q[j::8].long() << (4 * j)
    return _int32(packed)


def _pack_cols(z: torch.Tensor, order: list[int]) -> torch.Tensor:  # [R, N] -> int32 [R, N/8]
    packed = torch.zeros(z.shape[0], z.shape[1] // 8, dtype=torch.int64)
    for i in range(8):
        packed |= z[:, [c * 8 + order[i] for c in range(z.shape[1] // 8)]].long() << (4 * i)
    return _int32(packed)


def _int32(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


def _write(source: Path, dest: Path, method: str, **quant_config) -> dict[str, torch.Tensor]:
    """Write `method`'s checkpoint of `source`; returns name -> the reference float weight of each projection."""
    shutil.copytree(source, dest)
    state = load_file(str(source / "model.safetensors"))
    out, reference = {}, {}
    for name, w in state.items():
        stem = name.removesuffix(".weight")
        if stem.rsplit(".", 1)[-1] not in PROJECTIONS:
            out[name] = w
            continue
        q, z, s = _rtn(w)
        reference[stem] = ((q.float() - z.float().repeat_interleave(GROUP, 0)) * s.float().repeat_interleave(GROUP, 0)).t()
        if method == "gptq":
            out |= {f"{stem}.qweight": _pack_rows(q), f"{stem}.qzeros": _pack_cols(z - 1, list(range(8))),
                    f"{stem}.scales": s, f"{stem}.g_idx": torch.arange(q.shape[0], dtype=torch.int32) // GROUP}
        else:
            out |= {f"{stem}.qweight": _pack_cols(q, AWQ_ORDER), f"{stem}.qzeros": _pack_cols(z, AWQ_ORDER),
                    f"{stem}.scales": s}
    (dest / "model.safetensors").unlink()
    save_file(out, str(dest / "model.safetensors"))
    config = json.loads((dest / "config.json").read_text())
    defaults = {"gptq": {"bits": 4, "group_size": GROUP, "desc_act": False, "sym": False},
                "awq": {"bits": 4, "group_size": GROUP, "zero_point": True, "version": "gemm"}}[method]
    config["quantization_config"] = {"quant_method": method, **defaults, **quant_config}
    (dest / "config.json").write_text(json.dumps(config))
    return reference


def _load(folder: Path):
    from qwick.model.loader import load_config

    return load_model(folder, load_config(folder), torch.float32, torch.device("cpu"), kernel="torch")


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_loads_onto_int4_like_the_dequantized_reference(trained_lm, tmp_path, method):
    folder, language = trained_lm
    reference = _write(folder, tmp_path / method, method)
    model = _load(tmp_path / method)
    modules = {name: m for name, m in model.named_modules() if isinstance(m, Int4Linear)}
    assert set(modules) == set(reference) and len(modules) == 14
    for name, module in modules.items():
        step = reference[name].abs().max() / 7  # ~ one quantization step
        # min = -z * s rounded to float16: within half an ulp of z * s, ~1e-3 of a step
        torch.testing.assert_close(module.dequantize(), reference[name], rtol=0, atol=float(step) * 2e-3)
    float_model = load_float32(folder)
    with torch.no_grad():
        for name, weight in reference.items():
            float_model.get_submodule(name).weight.copy_(weight)
    prompts = language.sample(4, 16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(logits(model, prompts), logits(float_model, prompts), rtol=0, atol=2e-3)


def test_act_order_and_other_layouts_are_refused_by_name(trained_lm, tmp_path):
    folder, _ = trained_lm
    cases = [("gptq", {"desc_act": True}, "desc_act=true"), ("gptq", {"bits": 8}, "bits=8"),
             ("awq", {"version": "gemv"}, "AWQ version 'gemv'"), ("gptq", {"group_size": -1}, "group_size=-1")]
    for i, (method, override, message) in enumerate(cases):
        _write(folder, tmp_path / str(i), method, **override)
        with pytest.raises(CheckpointError, match=message):
            _load(tmp_path / str(i))


def test_permuted_g_idx_is_refused(trained_lm, tmp_path):
    folder, _ = trained_lm
    _write(folder, tmp_path / "g", "gptq")
    state = load_file(str(tmp_path / "g" / "model.safetensors"))
    key = "model.layers.0.mlp.down_proj.g_idx"
    state[key] = state[key].flip(0).contiguous()
    save_file(state, str(tmp_path / "g" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"down_proj\.g_idx is not sequential"):
        _load(tmp_path / "g")


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_export_turns_them_into_gguf(trained_lm, tmp_path, method):
    from qwick.export import export_gguf
    from qwick.gguf import open_gguf
    from qwick.gguf.load import load_gguf

    folder, _ = trained_lm
    reference = _write(folder, tmp_path / method, method)
    path = export_gguf(tmp_path / method, tmp_path / "x.gguf", "f32", with_tokenizer=False).path
    state = load_gguf(open_gguf(path), torch.float32, torch.device("cpu")).state_dict()
    name = "model.layers.1.self_attn.o_proj"
    torch.testing.assert_close(state[f"{name}.weight"], reference[name], rtol=0, atol=1e-6)
