"""Group rollouts: r1fast's paged sampler vs Hugging Face `generate` on the same model and device.

    python benchmarks/bench_sampler.py            # CUDA: Qwen2.5-0.5B / 1.5B shapes (random bf16 weights)
    python benchmarks/bench_sampler.py --smoke    # any machine: a tiny model, checks the script runs end to end

Per configuration (model shape, prompt length, G = 8, new tokens, concurrent sequences): tokens/s of r1fast and of
HF generate, ms per decode step, the per-step bandwidth floor (weights + KV bytes / measured copy bandwidth), the
prefill tokens forking saves, and the sampler-vs-trainer log-prob mismatch (mean / max |delta logp| against one full
forward over the finished sequences). Also the paged-attention decode kernel against its KV-bytes floor.
Prints one table and writes the same rows to benchmarks/out/bench_sampler.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1fast.sampler import Sampler, SamplingParams

OUT = Path(__file__).resolve().parent / "out"
SHAPES = {  # Qwen2.5 configs (random weights)
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151_936, tie_word_embeddings=True),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151_936, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
}  # fmt: skip
G = 8


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a device-to-device copy (read + write), on random data."""
    src = torch.randn(1 << 26, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    sync(device)
    return 10 * 2 * src.numel() * 4 / (time.perf_counter() - start)


def build(shape: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096, eos_token_id=None, bos_token_id=None)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).to(device=device, dtype=dtype).eval()


def run(shape, prompt_len, new_tokens, num_seqs, device, dtype, bandwidth, with_hf) -> dict:
    model = build(shape, device, dtype)
    vocab = model.config.vocab_size
    prompts = torch.randint(0, vocab, (num_seqs // G, prompt_len)).tolist()
    sampler = Sampler(model, block_size=16, max_num_seqs=num_seqs)
    params = SamplingParams(n=G, temperature=1.0, max_tokens=new_tokens, ignore_eos=True, seed=0)
    sampler.generate(prompts[:1], SamplingParams(n=2, max_tokens=2, ignore_eos=True))  # warm-up
    sync(device)
    start = time.perf_counter()
    groups = sampler.generate(prompts, params)
    sync(device)
    seconds = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for g in groups for c in g.completions)

    # Sampler vs trainer: the temperature-1 log-probs of one full forward over the finished sequences.
    deltas = []
    with torch.no_grad():
        for g in groups[: max(1, len(groups) // 4)]:
            for c in g.completions:
                ids = torch.tensor([g.prompt_token_ids + c.token_ids], device=device)
                logits = model(ids).logits[0, prompt_len - 1 : -1].float()
                want = torch.log_softmax(logits, -1).gather(-1, ids[0, prompt_len:, None])[:, 0]
                deltas.append((torch.tensor(c.logprobs, device=device) - want).abs())
    delta = torch.cat(deltas)

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_bytes = sampler.runner.bytes_per_block(1) * num_seqs * (prompt_len + new_tokens / 2)  # mean context
    row = dict(
        shape=shape, prompt_len=prompt_len, G=G, new_tokens=new_tokens, seqs=num_seqs, device=str(device),
        dtype=str(dtype), r1fast_tok_s=tokens / seconds, r1fast_ms_per_step=seconds / new_tokens * 1e3,
        floor_ms_per_step=(weight_bytes + kv_bytes) / bandwidth * 1e3,
        prefill_tokens_saved=(G - 1) * prompt_len * len(prompts), mean_dlogp=delta.mean().item(),
        max_dlogp=delta.max().item(), hf_tok_s=float("nan"),
    )  # fmt: skip
    if with_hf:
        ids = torch.tensor(prompts, device=device).repeat_interleave(G, 0)
        sync(device)
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True)
        sync(device)
        row["hf_tok_s"] = ids.shape[0] * new_tokens / (time.perf_counter() - start)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model on any device")
    parser.add_argument("--no-hf", action="store_true", help="skip the HF generate baseline")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("bench_sampler needs CUDA (or pass --smoke for a tiny end-to-end run on this machine)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    bandwidth = copy_bandwidth(device)
    if args.smoke:
        configs = [("tiny", 16, 8, 16)]
    else:
        configs = [(s, p, t, n) for s in ("0.5B", "1.5B") for p in (128, 512) for t in (256, 1024) for n in (64, 256)]
    rows = [run(*c, device, dtype, bandwidth, not args.no_hf) for c in configs]
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_sampler.json").write_text(json.dumps(rows, indent=2))
    header = (
        "| shape | prompt | new | seqs | r1fast tok/s | HF tok/s | ms/step | floor ms/step | saved prefill "
        "| mean/max dlogp |"
    )
    print(header)
    print("| --- " * 10 + "|")
    for r in rows:
        print(f"| {r['shape']} | {r['prompt_len']} | {r['new_tokens']} | {r['seqs']} | {r['r1fast_tok_s']:,.0f} | "
              f"{r['hf_tok_s']:,.0f} | {r['r1fast_ms_per_step']:.2f} | {r['floor_ms_per_step']:.3f} | "
              f"{r['prefill_tokens_saved']:,} | {r['mean_dlogp']:.1e} / {r['max_dlogp']:.1e} |")  # fmt: skip
    print(f"device: {device}, {dtype}; copy bandwidth {bandwidth / 1e9:.0f} GB/s")


if __name__ == "__main__":
    main()
