"""Group rollouts: r1fast's paged sampler vs Hugging Face `generate`; the paged-attention decode kernel vs its floor.

    python benchmarks/bench_sampler.py                 # CUDA: Qwen2.5-0.5B / 1.5B shapes, random bf16 weights
    python benchmarks/bench_sampler.py --shapes 0.5B --seqs 256 --prompt-lens 128 --new-tokens 256   # one row
    python benchmarks/bench_sampler.py ... --hf-new-tokens 64 --json out.json   # HF generate for 64 tokens only
    python benchmarks/bench_sampler.py --smoke         # any machine: a tiny model, checks the script end to end
    python benchmarks/bench_sampler.py --host-overhead --repeats 5   # any machine: the sampler's own work per step
    python benchmarks/bench_sampler.py --cpu --shapes cpu-4x256 --seqs 128 --prompt-lens 32 --new-tokens 64 \
        --repeats 3 --no-kernel                        # CPU end to end vs HF generate (fp32)

End to end, per (model shape, prompt length, G = 8, new tokens, concurrent sequences), EOS ignored:
  - tokens/s of r1fast's Sampler and of HF `generate` (sampling, same model, same device, same batch), each the
    completion tokens it generated / its wall time (--hf-new-tokens lets HF generate fewer tokens per sequence,
    on the same prompts, where the full length would take too long; its row says how many);
  - ms per decode step, (T(generate) - T(generate with max_tokens=1)) / (new_tokens - 1), next to its floor:
    (weight bytes + KV bytes at the mean context) / measured copy bandwidth;
  - host ms/step: the sampler's host-only work per step (scheduling, packing the batch), which the GPU waits for;
  - the prefill tokens forking saves ((G - 1) * prompt_len per prompt: the prompt is prefilled once per group);
  - sampler-vs-trainer log-prob mismatch: mean / max |delta logp| of the sampled tokens against one full forward
    (HF, same dtype) over a subset of the finished sequences.
Host overhead (--host-overhead, any device): the model's forward replaced by a stub returning fixed [S, V] logits
(the tiny shape's V = 512, so that the figure is the sampler's own work: scheduling, packing, sampling ops, reading
back, appending, stop checks), microseconds per decode step (generate()'s time / new tokens) at 64 and 256
sequences (G = 8, prompt 32, 128 new tokens, seeded sampling at temperature 1), the one-step loop (decode_steps=1)
vs K = 16 and 32 steps per host round trip, each with async scheduling off and on (on: chunk t + 1 is launched
before chunk t is read; on a CPU nothing overlaps, so the row measures what async mode adds to the host's work).
"Bookkeeping" is everything but the device's work: generate()'s time less the K-step device loop (what a CUDA
graph replays: the stub forward, the sampling math, the next step's inputs) and the prefill's sampling math; it
counts scheduling, block reservation, packing, prefill and forks, the stop checks' ops, reading back, appending,
the decode rows' state upkeep. On CUDA with graphs, staging a chunk into the graph's buffers (~20 copy launches per
chunk) is host work that this CPU row does not run.
Kernel: paged_attention_decode (bf16, block 16) vs KV bytes / copy bandwidth, and flash-attn's
flash_attn_with_kvcache on the same data when flash-attn is installed (its paged KV needs 256-token pages, so that
row pairs it with r1fast at block 256 too).
Prints the tables and writes the same rows to benchmarks/out/bench_sampler.json (--json), rewritten as each row
grows, so that a run cut short keeps what it measured. No number is estimated: rows that could not run say why.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch

if "--smoke" in sys.argv and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # the kernel smoke rows run the Triton kernel, interpreted

from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
SHAPES = {  # Qwen2.5 configs (random weights)
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151_936, tie_word_embeddings=True),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151_936, tie_word_embeddings=True),
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=512, tie_word_embeddings=True),
    # issue 10's CPU configuration: 4 layers, hidden 256, Qwen2's vocabulary, untied head (Qwen2Config's default)
    "cpu-4x256": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=151_936, tie_word_embeddings=False),
}  # fmt: skip
G = 8
BLOCK_SIZE = 16
LOGP_SEQS = 16  # sequences checked against the full forward, per configuration


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, cpu: dict | None = None) -> tuple[float, object]:
    """Wall seconds of fn() and its result; cpu["seconds"] gets the process's CPU seconds (all threads), the figure
    that a shared CPU machine's load does not inflate."""
    sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    sync(device)
    if cpu is not None:
        cpu["seconds"] = time.process_time() - start_cpu
    return time.perf_counter() - start, result


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s moved (read + write) by a 512 MiB device-to-device copy (64 MiB on CPU)."""
    src = torch.randn((1 << 27) if device.type == "cuda" else (1 << 24), device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds, _ = timed(lambda: [dst.copy_(src) for _ in range(10)], device)
    return 10 * 2 * src.numel() * src.element_size() / seconds


def build(shape: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096, eos_token_id=None, bos_token_id=None,
                         pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).to(device=device, dtype=dtype).eval()


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * torch.finfo(dtype).bits // 8


# -- the Sampler, through its public API ---------------------------------------------------------------------------


def make_sampler(model, num_seqs: int):
    from r1fast.sampler import Sampler

    return Sampler(model, block_size=BLOCK_SIZE, max_num_seqs=num_seqs)


def make_params(**kwargs):
    from r1fast.sampler import SamplingParams

    return SamplingParams(**kwargs)


def completions(groups, prompts):
    """(prompt ids, completion ids, logprobs) of every completion."""
    for group in groups:
        for c in group.completions:
            yield list(group.prompt_token_ids), list(c.token_ids), c.logprobs


@contextlib.contextmanager
def host_timer():
    """Seconds spent in the sampler's host-only work per step (scheduling, packing the batch), and the step count:
    yields a dict filled on exit. This work runs between the forwards, so it adds to every step's time."""
    from r1fast.sampler.sampler import Sampler
    from r1fast.sampler.scheduler import Scheduler

    spent = {"seconds": 0.0, "steps": 0}
    originals = Scheduler.schedule, Sampler._batch

    def timing(fn, count):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - start
                spent["steps"] += count

        return wrapper

    Scheduler.schedule, Sampler._batch = timing(originals[0], 1), timing(originals[1], 0)
    try:
        yield spent
    finally:
        Scheduler.schedule, Sampler._batch = originals


@torch.no_grad()
def logprob_mismatch(model, groups, prompts, device) -> tuple[float, float]:
    """Mean and max |sampler logp - full-forward logp| over the sampled tokens of the first LOGP_SEQS sequences."""
    deltas = []
    for n, (prompt, ids, logps) in enumerate(completions(groups, prompts)):
        if n >= LOGP_SEQS or not logps:
            break
        full = torch.tensor([prompt + ids], device=device)
        hidden = model.model(full).last_hidden_state[0, len(prompt) - 1 : -1]
        logits = model.get_output_embeddings()(hidden).float()
        want = torch.log_softmax(logits, -1).gather(-1, full[0, len(prompt) :, None])[:, 0]
        deltas.append((torch.tensor(logps, device=device, dtype=torch.float32) - want).abs())
    if not deltas:
        return float("nan"), float("nan")
    delta = torch.cat(deltas)
    return delta.mean().item(), delta.max().item()


def run_sampler(shape, prompt_len, new_tokens, num_seqs, device, dtype, bandwidth, with_hf, hf_new_tokens=None,
                checkpoint=lambda row: None) -> dict:  # fmt: skip
    """One end-to-end row. hf_new_tokens: HF generate's tokens per sequence (default new_tokens); checkpoint(row)
    is called with r1fast's figures before the HF baseline starts."""
    model = build(shape, device, dtype)
    config = model.config
    prompts = torch.randint(0, config.vocab_size, (max(1, num_seqs // G), prompt_len)).tolist()
    row = dict(kind="sampler", shape=shape, prompt_len=prompt_len, G=G, new_tokens=new_tokens, seqs=num_seqs,
               device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", dtype=str(dtype),
               block_size=BLOCK_SIZE)  # fmt: skip
    sampler = make_sampler(model, num_seqs)
    params = make_params(n=G, temperature=1.0, max_tokens=new_tokens, ignore_eos=True, seed=0, logprobs=True)
    first = make_params(n=G, temperature=1.0, max_tokens=1, ignore_eos=True, seed=0, logprobs=True)
    sampler.generate(prompts[:2], make_params(n=2, max_tokens=4, ignore_eos=True))  # warm-up: compile, capture
    t_first, _ = timed(lambda: sampler.generate(prompts, first), device)
    r1fast_cpu, hf_cpu = {}, {}
    with host_timer() as host:
        seconds, groups = timed(lambda: sampler.generate(prompts, params), device, r1fast_cpu)
    tokens = sum(len(ids) for _, ids, _ in completions(groups, prompts))
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_bytes = kv_bytes_per_token(config, dtype) * num_seqs * (prompt_len + new_tokens / 2)  # mean context
    mean_dlogp, max_dlogp = logprob_mismatch(model, groups, prompts, device)
    row.update(
        r1fast_tok_s=tokens / seconds, r1fast_seconds=seconds, prefill_plus_one_seconds=t_first,
        ms_per_step=(seconds - t_first) / max(1, new_tokens - 1) * 1e3,
        floor_ms_per_step=(weight_bytes + kv_bytes) / bandwidth * 1e3,
        prefill_tokens=len(prompts) * prompt_len, prefill_tokens_saved=(G - 1) * prompt_len * len(prompts),
        mean_dlogp=mean_dlogp, max_dlogp=max_dlogp, hf_tok_s=float("nan"),
        host_ms_per_step=host["seconds"] / max(1, host["steps"]) * 1e3, r1fast_cpu_seconds=r1fast_cpu["seconds"],
    )  # fmt: skip
    row["step_over_floor"] = row["ms_per_step"] / row["floor_ms_per_step"]
    sampler.free()
    checkpoint(row)
    if with_hf:
        hf_new_tokens = min(hf_new_tokens or new_tokens, new_tokens)
        row["hf_new_tokens"] = hf_new_tokens
        ids = torch.tensor(prompts, device=device).repeat_interleave(G, 0)
        gen = dict(max_new_tokens=hf_new_tokens, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0)
        model.generate(ids[:2], attention_mask=torch.ones_like(ids[:2]), **{**gen, "max_new_tokens": 4})  # warm-up
        seconds, out = timed(lambda: model.generate(ids, attention_mask=torch.ones_like(ids), **gen), device, hf_cpu)
        row["hf_tok_s"] = (out.shape[1] - prompt_len) * ids.shape[0] / seconds
        row["speedup_vs_hf"] = row["r1fast_tok_s"] / row["hf_tok_s"]
        hf_tokens = (out.shape[1] - prompt_len) * ids.shape[0]
        row["hf_cpu_seconds"] = hf_cpu["seconds"]
        row["speedup_vs_hf_cpu_time"] = (tokens / r1fast_cpu["seconds"]) / (hf_tokens / hf_cpu["seconds"])
    return row  # the model goes with this frame; main() empties the CUDA cache between rows


# -- host overhead: the sampler around a stub forward --------------------------------------------------------


def run_host_overhead(num_seqs: int, decode_steps: int, device: torch.device, async_scheduling: bool = False,
                      new_tokens: int = 128) -> dict:  # fmt: skip
    """Microseconds per decode step of generate() with the forward replaced by fixed logits of the tiny shape."""
    from r1fast.sampler import Sampler
    from r1fast.sampler import sampler as sampler_module

    model = build("tiny", device, torch.float32)
    vocab = model.config.vocab_size
    sampler = Sampler(model, block_size=BLOCK_SIZE, max_num_seqs=num_seqs, decode_steps=decode_steps,
                      async_scheduling=async_scheduling)  # fmt: skip
    runner = sampler.runner
    logits = torch.randn(num_seqs, vocab, device=device)
    runner._run = lambda batch, seq_lens: logits[: batch.query_start_loc.shape[0] - 1]
    on_device = {"seconds": 0.0}

    def timed_on_device(fn):  # CPU seconds on a CPU device (the load of a shared machine does not count)
        def call(*args, **kwargs):
            clock = time.perf_counter if device.type == "cuda" else time.process_time
            sync(device)
            start = clock()
            out = fn(*args, **kwargs)
            sync(device)
            on_device["seconds"] += clock() - start
            return out

        return call

    runner._decode_steps = timed_on_device(runner._decode_steps)  # the K-step loop
    prefill_sample = sampler_module.sample
    sampler_module.sample = timed_on_device(prefill_sample)  # the prefill's sampling math
    try:
        prompts = torch.randint(0, vocab, (num_seqs // G, 32)).tolist()
        params = make_params(n=G, temperature=1.0, max_tokens=new_tokens, ignore_eos=True, seed=0)
        sampler.generate(prompts, make_params(n=G, temperature=1.0, max_tokens=4, ignore_eos=True, seed=0))  # warm-up
        on_device["seconds"], cpu = 0.0, {}
        seconds, _ = timed(lambda: sampler.generate(prompts, params), device, cpu)
    finally:
        sampler_module.sample = prefill_sample
    return dict(kind="host", seqs=num_seqs, decode_steps=decode_steps, async_scheduling=async_scheduling,
                new_tokens=new_tokens, vocab=vocab,
                device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                threads=torch.get_num_threads(), us_per_step=seconds / new_tokens * 1e6,
                cpu_us_per_step=cpu["seconds"] / new_tokens * 1e6,
                bookkeeping_us_per_step=((seconds if device.type == "cuda" else cpu["seconds"]) - on_device["seconds"])
                / new_tokens * 1e6)  # fmt: skip


def median_row(rows: list[dict], key: str) -> dict:
    """The row whose `key` is the median of the repeats (the lower middle one), with every repeat's value."""
    ordered = sorted(rows, key=lambda r: r[key])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["repeats"] = [r[key] for r in rows]
    return row


# -- the decode kernel -----------------------------------------------------------------------------------------


def paged_inputs(num_seqs, context, h_q, h_kv, d, block_size, dtype, device):
    pages = -(-context // block_size)
    ids = torch.randperm(num_seqs * pages, device=device, dtype=torch.int32)
    tables = ids.view(num_seqs, pages)
    k = torch.randn(num_seqs * pages, block_size, h_kv, d, device=device, dtype=dtype)
    v = torch.randn_like(k)
    q = torch.randn(num_seqs, h_q, d, device=device, dtype=dtype)
    lens = torch.full((num_seqs,), context, dtype=torch.int32, device=device)
    return q, k, v, tables, lens


def bench_ms(fn, device) -> float:
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100)
    fn()
    seconds, _ = timed(fn, device)
    return seconds * 1e3


def run_kernel(shape, num_seqs, context, device, dtype, bandwidth, block_size=BLOCK_SIZE, peer=False) -> dict:
    from r1fast.kernels.paged_attention import paged_attention_decode

    cfg = SHAPES[shape]
    h_q, h_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg["hidden_size"] // h_q
    q, k, v, tables, lens = paged_inputs(num_seqs, context, h_q, h_kv, d, block_size, dtype, device)
    kv_bytes = 2 * num_seqs * context * h_kv * d * k.element_size()
    out = torch.empty_like(q)
    row = dict(kind="kernel", shape=shape, heads=f"{h_q}/{h_kv}x{d}", seqs=num_seqs, context=context,
               block_size=block_size, dtype=str(dtype),
               device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               kv_mib=kv_bytes / 2**20, floor_us=kv_bytes / bandwidth * 1e6)  # fmt: skip
    row["r1fast_us"] = 1e3 * bench_ms(lambda: paged_attention_decode(q, k, v, tables, lens, d**-0.5, out=out), device)
    row["r1fast_no_split_us"] = 1e3 * bench_ms(
        lambda: paged_attention_decode(q, k, v, tables, lens, d**-0.5, out=out, num_splits=1), device
    )
    row["over_floor"] = row["r1fast_us"] / row["floor_us"]
    row["flash_attn_us"] = float("nan")
    if peer:
        try:
            from flash_attn import flash_attn_with_kvcache

            call = lambda: flash_attn_with_kvcache(q[:, None], k, v, cache_seqlens=lens, block_table=tables,
                                                   softmax_scale=d**-0.5, causal=True)  # fmt: skip
            row["flash_attn_us"] = 1e3 * bench_ms(call, device)
            got = call()[:, 0].float()
            want = paged_attention_decode(q, k, v, tables, lens, d**-0.5).float()
            row["flash_attn_rel_diff"] = ((got - want).norm() / want.norm()).item()
        except Exception as e:  # not installed, or this build refuses the shape: say so in the row
            row["flash_attn_note"] = f"{type(e).__name__}: {e}"[:120]
    return row


# -- main ------------------------------------------------------------------------------------------------------


def fmt(x, spec: str) -> str:
    return "n/a" if x is None or x != x else format(x, spec)


def print_tables(rows: list[dict], bandwidth: float, device: str) -> None:
    sampler = [r for r in rows if r["kind"] == "sampler"]
    kernel = [r for r in rows if r["kind"] == "kernel"]
    if sampler:
        print("| shape | prompt | new | seqs | r1fast tok/s | HF tok/s | x HF | ms/step | floor ms/step | x floor "
              "| host ms/step | prefill saved (tokens) | mean / max abs dlogp |")  # fmt: skip
        print("| --- " * 13 + "|")
        for r in sampler:
            hf_new = r.get("hf_new_tokens", r["new_tokens"])
            hf = fmt(r["hf_tok_s"], ",.0f") + (f" ({hf_new} new)" if hf_new != r["new_tokens"] else "")
            print(f"| {r['shape']} | {r['prompt_len']} | {r['new_tokens']} | {r['seqs']} | "
                  f"{fmt(r['r1fast_tok_s'], ',.0f')} | {hf} | "
                  f"{fmt(r.get('speedup_vs_hf'), '.1f')} | {fmt(r['ms_per_step'], '.2f')} | "
                  f"{fmt(r['floor_ms_per_step'], '.3f')} | {fmt(r['step_over_floor'], '.1f')} | "
                  f"{fmt(r['host_ms_per_step'], '.2f')} | "
                  f"{r['prefill_tokens_saved']:,} of {r['prefill_tokens'] * G:,} | "
                  f"{fmt(r['mean_dlogp'], '.1e')} / {fmt(r['max_dlogp'], '.1e')} |")  # fmt: skip
        print()
    host = [r for r in rows if r["kind"] == "host"]
    if host:
        print("| seqs | decode steps per round trip | async | threads | CPU us/step (median) "
              "| bookkeeping CPU us/step | wall us/step | repeats, CPU us/step | repeats, bookkeeping |")  # fmt: skip
        print("| --- " * 9 + "|")
        for r in host:
            repeats = ", ".join(f"{x:.0f}" for x in r.get("repeats", [r["cpu_us_per_step"]]))
            books = ", ".join(f"{x:.0f}" for x in r.get("repeats_bookkeeping", [r["bookkeeping_us_per_step"]]))
            print(f"| {r['seqs']} | {r['decode_steps']} | {'on' if r['async_scheduling'] else 'off'} | "
                  f"{r['threads']} | {r['cpu_us_per_step']:.0f} | {r['bookkeeping_us_per_step']:.0f} | "
                  f"{r['us_per_step']:.0f} | {repeats} | {books} |")  # fmt: skip
        print()
    if kernel:
        print("| heads | seqs | context | block | KV MiB | floor us | r1fast us | x floor | no-split us "
              "| flash-attn us |")  # fmt: skip
        print("| --- " * 10 + "|")
        for r in kernel:
            peer = fmt(r["flash_attn_us"], ".1f") if "flash_attn_note" not in r else r["flash_attn_note"][:40]
            print(f"| {r['heads']} | {r['seqs']} | {r['context']} | {r['block_size']} | {r['kv_mib']:.1f} | "
                  f"{r['floor_us']:.1f} | {r['r1fast_us']:.1f} | {r['over_floor']:.2f} | "
                  f"{r['r1fast_no_split_us']:.1f} | {peer} |")  # fmt: skip
        print()
    print(f"device: {device}; copy bandwidth {bandwidth / 1e9:,.0f} GB/s (read + write)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model and shapes on any device")
    parser.add_argument("--no-hf", action="store_true", help="skip the HF generate baseline")
    parser.add_argument("--no-kernel", action="store_true", help="skip the decode-kernel rows")
    parser.add_argument("--no-sampler", action="store_true", help="skip the end-to-end rows")
    parser.add_argument("--shapes", nargs="+", default=["0.5B", "1.5B"], choices=sorted(SHAPES))
    parser.add_argument("--prompt-lens", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--new-tokens", nargs="+", type=int, default=[256, 1024])
    parser.add_argument("--seqs", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--hf-new-tokens", type=int, default=None,
                        help="new tokens per sequence for HF generate (default: --new-tokens; fewer saves "
                             "time)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=OUT / "bench_sampler.json", help="where the rows go")
    parser.add_argument("--host-overhead", action="store_true",
                        help="only the host-overhead rows (stub forward; --seqs, default 64 and 256)")  # fmt: skip
    parser.add_argument("--cpu", action="store_true", help="run the end-to-end rows on the CPU in float32")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row; the median row is kept")
    args = parser.parse_args()
    if not (args.smoke or args.host_overhead or args.cpu) and not torch.cuda.is_available():
        raise SystemExit("bench_sampler needs CUDA (or --smoke, --host-overhead, --cpu on this machine)")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.host_overhead:
        if device.type == "cpu":
            torch.set_num_threads(1)  # small ops: a second thread only waits; CPU time then counts one thread
        rows = []
        for n in args.seqs:
            for k in (1, 16, 32):
                for async_scheduling in (False, True):
                    repeats = [run_host_overhead(n, k, device, async_scheduling) for _ in range(args.repeats)]
                    rows.append(median_row(repeats, "cpu_us_per_step"))
                    rows[-1]["repeats_bookkeeping"] = [r["bookkeeping_us_per_step"] for r in repeats]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
        print_tables(rows, float("nan"), str(device))
        return
    bandwidth = copy_bandwidth(device)
    if args.smoke:
        sampler_configs = [("tiny", 16, 8, 16)]
        kernel_configs = [("tiny", 2, 40, BLOCK_SIZE, False)]
    else:
        sampler_configs = [(s, p, t, n) for s in args.shapes for p in args.prompt_lens for t in args.new_tokens
                           for n in args.seqs]  # fmt: skip
        kernel_configs = [(s, n, c, BLOCK_SIZE, False) for s in args.shapes for n in args.seqs for c in (640, 1536)]
        kernel_configs += [(s, 8, 8192, BLOCK_SIZE, False) for s in args.shapes]  # few sequences: split-K
        kernel_configs += [(s, 256, 1536, 256, True) for s in args.shapes]  # flash-attn's page size
    args.json.parent.mkdir(parents=True, exist_ok=True)
    save = lambda rows: args.json.write_text(json.dumps(rows, indent=2))
    rows = []
    if not args.no_kernel:
        kdtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        rows += [run_kernel(s, n, c, device, kdtype, bandwidth, b, peer) for s, n, c, b, peer in kernel_configs]
        save(rows)
    if not args.no_sampler:
        for config in sampler_configs:
            repeats = [run_sampler(*config, device, dtype, bandwidth, not args.no_hf, args.hf_new_tokens,
                                   checkpoint=lambda row: save([*rows, row])) for _ in range(args.repeats)]  # fmt: skip
            rows.append(repeats[0] if len(repeats) == 1 else median_row(repeats, "r1fast_tok_s"))
            if len(repeats) > 1 and not args.no_hf:
                for key in ("speedup_vs_hf", "speedup_vs_hf_cpu_time"):
                    rows[-1][f"repeats_{key}"] = [r[key] for r in repeats]
            save(rows)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress: long runs
    save(rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print_tables(rows, bandwidth, f"{name}, {dtype}" + (" (smoke: times mean nothing)" if args.smoke else ""))


if __name__ == "__main__":
    main()
