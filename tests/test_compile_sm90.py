"""Every Triton kernel of r1fast compiled for an H100 (sm_90) by Triton's own compiler and bundled ptxas.

No GPU is needed, so a CPU-only run still catches what the interpreter accepts and the compiler does not (tl.dot
shapes, dtypes, control flow, Philox on block tensors) and register spills, in the configurations the launchers use.
The compiles run in a subprocess: this process has TRITON_INTERPRET=1 (tests/conftest.py), read at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

COMPILE_SCRIPT = r"""
import glob, json, os, subprocess, tempfile
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from r1fast.kernels import grpo_loss as gl, kv_store, paged_attention as pa, sampling

bins = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
target = GPUTarget("cuda", 90, 32)
names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
report = {}

def compile_(label, fn, types, constexprs, num_warps=4):
    # Unnamed scalars are i32; constexprs by name. Returns ptxas -v's spill lines for the kernel.
    sig = {n: "constexpr" if n in constexprs else types.get(n, "i32") for n in fn.arg_names}
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs), target=target,
                            options={"num_warps": num_warps})
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(kernel.asm["ptx"])
    for ptxas in sorted(glob.glob(os.path.join(bins, "ptxas*")), reverse=True):  # the newest PTX version first
        run = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", f.name, "-o", os.devnull], capture_output=True,
                             text=True)
        if run.returncode == 0:
            report[label] = [line for line in run.stderr.splitlines() if "spill" in line]
            return
    raise RuntimeError(label + ": no bundled ptxas accepted the PTX: " + run.stderr[-300:])

# Paged attention: decode (with and without split-K) and prefill, head dims 64-256, GQA groups 1-8.
cases = [(torch.bfloat16, 14, 2, 64, 16, 1, 1, True), (torch.bfloat16, 14, 2, 64, 16, 1, 8, True),
         (torch.float16, 4, 2, 80, 5, 1, 2, True), (torch.float32, 2, 2, 96, 16, 1, 1, True),
         (torch.bfloat16, 8, 1, 256, 16, 1, 4, True),
         (torch.bfloat16, 14, 2, 64, 16, pa.prefill_block_q(7, 64), 1, False),
         (torch.bfloat16, 12, 2, 128, 16, pa.prefill_block_q(6, 128), 1, False),
         (torch.float32, 2, 2, 80, 4, pa.prefill_block_q(1, 80), 1, False),
         (torch.float16, 16, 2, 256, 16, pa.prefill_block_q(8, 256), 1, False)]
for dtype, h_q, h_kv, d, block_size, block_q, splits, decode in cases:
    config = pa.kernel_config(dtype, h_q, h_kv, d, block_size, block_q, splits, decode)
    warps = config.pop("num_warps")
    io = "*" + names[dtype]
    part = "*fp32" if splits > 1 else io
    label = f"paged_attention {names[dtype]} {h_q}/{h_kv}x{d} block {block_size} q {block_q} splits {splits}"
    types = dict(q_ptr=io, k_cache_ptr=io, v_cache_ptr=io, out_ptr=io, part_acc_ptr=part, part_m_ptr=part,
                 part_l_ptr=part, block_tables_ptr="*i32", context_lens_ptr="*i32", query_start_loc_ptr="*i32",
                 tile_seq_ptr="*i32", tile_first_ptr="*i32", scale_log2="fp32")
    compile_(label, pa._paged_attention_kernel, types, config, warps)
    if splits > 1:
        types = dict(part_acc_ptr="*fp32", part_m_ptr="*fp32", part_l_ptr="*fp32", out_ptr=io)
        compile_("merge_splits " + label, pa._merge_splits_kernel, types,
                 dict(NUM_SPLITS=splits, HEAD_DIM=d, BLOCK_D=config["BLOCK_D"]))
types = dict(k_ptr="*fp32", v_ptr="*fp32", k_cache_ptr="*bf16", v_cache_ptr="*bf16", slot_ptr="*i64", num_slots="i64")
compile_("store_kv", kv_store._store_kv_kernel, types,
         dict(NUM_KV_HEADS=2, BLOCK_H=2, HEAD_DIM=80, BLOCK_D=128, BLOCK_SIZE=16))

# GRPO loss rows at Qwen's vocabulary (the launchers' row_block), every logits dtype; strides as int64.
block, warps = gl.row_block(151_936)
for dtype in (torch.bfloat16, torch.float16, torch.float32):
    io = "*" + names[dtype]
    transform = dict(logit_scale="fp32", softcap="fp32", inv_temperature="fp32")
    rows = dict(logits_ptr=io, stride_b="i64", stride_t="i64", index_ptr="*i64", lse_ptr="*fp32", logp_ptr="*fp32",
                entropy_ptr="*fp32", **transform)
    for with_entropy, softcap in ((False, False), (True, False), (True, True)):
        compile_(f"row_stats {names[dtype]} entropy={with_entropy} softcap={softcap}", gl._row_stats_kernel, rows,
                 dict(WITH_ENTROPY=with_entropy, HAS_SOFTCAP=softcap, BLOCK_V=block), warps)
    grad = dict(logits_ptr=io, stride_b="i64", stride_t="i64", out_ptr=io, out_stride_b="i64", out_stride_t="i64",
                index_ptr="*i64", lse_ptr="*fp32", grad_logp_ptr="*fp32", grad_entropy_ptr="*fp32",
                entropy_ptr="*fp32", **transform)
    for softcap, entropy_grad in ((False, False), (True, False), (True, True)):
        compile_(f"row_grad {names[dtype]} softcap={softcap} entropy_grad={entropy_grad}", gl._row_grad_kernel, grad,
                 dict(HAS_SOFTCAP=softcap, HAS_ENTROPY_GRAD=entropy_grad, BLOCK_V=block), warps)
    fused = dict(logits_ptr=io, stride_row="i64", index_ptr="*i64", lse_ptr="*fp32", logp_ptr="*fp32",
                 entropy_ptr="*fp32", adv_ptr="*fp32", weight_ptr="*fp32", old_ptr="*fp32", ref_ptr="*fp32",
                 is_ratio_ptr="*fp32", entropy_weight_ptr="*fp32",
                 **transform, **{name: "fp32" for name in ("eps_low", "eps_high", "delta", "beta", "tau_pos",
                                                           "tau_neg")})
    for loss in (gl.LOSS_CLIP, gl.LOSS_CISPO, gl.LOSS_SAPO):
        # plain; off-policy with a KL; and (clip only) with everything: softcap, IS ratio, entropy bonus
        for has_old, has_kl, extras in ((False, False, False), (True, True, False), (True, True, True)):
            if extras and loss != gl.LOSS_CLIP:
                continue
            flags = dict(LOSS=loss, HAS_OLD=has_old, HAS_DELTA=has_kl, HAS_KL=has_kl, BIAS_CORRECTION=has_kl,
                         HAS_IS_RATIO=extras, HAS_ENTROPY_GRAD=extras, HAS_SOFTCAP=extras)
            compile_(f"row_loss_grad {names[dtype]} {flags}", gl._row_loss_grad_kernel, fused,
                     dict(flags, BLOCK_V=block), warps)

# Sampling: the exponential race over float32 scores, as exponential_race launches it on a GPU.
race = dict(scores_ptr="*fp32", seeds_ptr="*i64", steps_ptr="*i64", out_ptr="*i64", stride_row="i64")
compile_("exponential_race", sampling._exponential_race_kernel, race,
         dict(BLOCK_S=sampling.BLOCK_ROWS, BLOCK_V=sampling.BLOCK_VOCAB, SERIES_BELOW=sampling.SERIES_BELOW))
print(json.dumps(report))
"""


def test_every_kernel_compiles_for_sm90_without_spills():
    triton = pytest.importorskip("triton")
    bins = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not any(name.startswith("ptxas") for name in (os.listdir(bins) if os.path.isdir(bins) else [])):
        pytest.skip("this triton install bundles no ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(report) == 53, sorted(report)  # every case above compiled
    clean = " 0 bytes spill stores, 0 bytes spill loads"
    spilling = {k: v for k, v in report.items() if not v or any(clean not in line for line in v)}
    assert not spilling, spilling
