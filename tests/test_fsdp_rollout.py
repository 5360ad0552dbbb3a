"""The rollout of a sharded model (r1fast.trainer.fsdp.rollout_weights) on CPU: gloo ranks spawned by the test shard
a 4-layer model with float32 gathers. The ranks generate prompts of their own, of different counts and lengths, so
that one finishes long before the other and must follow the other's layer gathers without work: the streamed layers
("layer") and the whole gathered model ("model") both sample the unsharded model's tokens and log-probs on the same
prompts and seeds, with one decode step per host round trip and with four. A trainer step with
fsdp_rollout_gather="layer" equals the "model" one. Without a process group: the runner's weight-streamer hook, the
choice of "auto" and the config's checks."""

from __future__ import annotations

import datetime
import os

import pytest
import torch
import torch.multiprocessing as mp
from test_fsdp import make, whole_params
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1fast.demo import CharTokenizer, make_policy
from r1fast.sampler import Sampler, SamplingParams
from r1fast.trainer import GRPOConfig
from r1fast.trainer import fsdp as fsdp_module

WORLD = 2
DECODE_STEPS = (1, 4)
MODES = ("layer", "model")
# Rank 0: three prompts, two completions each, 6 to 16 tokens (stop ids end some early); rank 1: one prompt, one
# completion of 3 tokens, so it is done after 3 forwards while rank 0 runs 6 to 16.
PROMPTS = ([[1, 2, 3, 4, 5], [7, 8, 9], [10, 11, 12, 13, 14, 15, 16, 17, 18]], [[20, 21]])


def params_of(rank: int, seed: int) -> SamplingParams:
    if rank == 0:
        return SamplingParams(n=2, max_tokens=16, min_tokens=6, stop_token_ids=list(range(6)), seed=seed)
    return SamplingParams(n=1, max_tokens=3, seed=seed + 1)


def make_model() -> torch.nn.Module:
    """A 4-layer Qwen2 (hidden 32), the same weights in every process."""
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         eos_token_id=None, bos_token_id=None, pad_token_id=None)  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


def sample(model: torch.nn.Module, sampler: Sampler, prompts: list[list[int]], params: SamplingParams) -> dict:
    groups = sampler.generate(prompts, params)
    return {"tokens": [c.token_ids for g in groups for c in g.completions],
            "logprobs": [c.logprobs for g in groups for c in g.completions]}  # fmt: skip


def _worker(rank: int, init_file: str, work_dir: str, seed: int) -> None:
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    torch.set_num_threads(1)
    # A short timeout: ranks whose gathers do not match fail here instead of hanging the suite.
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=30))  # fmt: skip
    out = {}
    try:
        model = fsdp_module.shard_model(make_model(), "float32")
        for steps in DECODE_STEPS:  # the sampler alone
            for mode in MODES:
                sampler = Sampler(model, block_size=4, decode_steps=steps)
                with fsdp_module.rollout_weights(model, sampler.runner, mode, "float32") as streamer:
                    result = sample(model, sampler, PROMPTS[rank], params_of(rank, seed))
                result["idle_forwards"] = None if streamer is None else streamer.num_idle_forwards
                result["resharded"] = all(isinstance(p, DTensor) for p in model.parameters())
                result["streamer_left"] = sampler.runner.weight_streamer is None
                out[mode, steps] = result
        for mode in ("auto", *MODES):  # one trainer step in each mode, from the same weights and seed
            trainer = make(2, fsdp=True, max_steps=1, fsdp_rollout_gather=mode, seed=seed)
            out[mode] = trainer.rollout_gather
            if mode != "auto":
                trainer.train()
                out[mode, "params"] = whole_params(trainer.model)
        torch.save(out, f"{work_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory) -> tuple[int, list[dict]]:
    """One spawn of the ranks for the module's tests (process start-up is most of their time): a fresh seed (in
    the failure messages) and each rank's results."""
    seed = int.from_bytes(os.urandom(4), "little") >> 1
    work = tmp_path_factory.mktemp("fsdp-rollout")
    mp.spawn(_worker, args=(str(work / "init"), str(work), seed), nprocs=WORLD, join=True)
    return seed, [torch.load(work / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture
def one_thread():
    """One intra-op thread, as in the ranks: the matmuls then sum in the same order (with two threads their last bits
    differ, which now and then flips a sampled token)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_streamed_and_gathered_rollouts_sample_the_unsharded_models_tokens(spawned, one_thread):
    seed, ranks = spawned
    model = make_model()
    for steps in DECODE_STEPS:
        sampler = Sampler(model, block_size=4, decode_steps=steps)
        for rank, result in enumerate(ranks):
            want = sample(model, sampler, PROMPTS[rank], params_of(rank, seed))
            for mode in MODES:
                got = result[mode, steps]
                where = f"mode={mode} decode_steps={steps} rank={rank} seed={seed}"
                assert got["tokens"] == want["tokens"], where
                for a, b in zip(got["logprobs"], want["logprobs"], strict=True):
                    torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-5, msg=where)
                assert got["resharded"] and got["streamer_left"], where
        # Rank 1 finished first and followed rank 0's remaining forwards; rank 0 never waited.
        assert ranks[1]["layer", steps]["idle_forwards"] > 0 and ranks[0]["layer", steps]["idle_forwards"] == 0
        assert len(ranks[0]["layer", steps]["tokens"]) == 6 and len(ranks[1]["layer", steps]["tokens"]) == 1


def test_trainer_step_with_streamed_layers_equals_the_gathered_models_step(spawned):
    seed, ranks = spawned
    initial = dict(make_policy(CharTokenizer(), seed=0).named_parameters())
    for rank in ranks:
        assert (rank["auto"], rank["layer"], rank["model"]) == ("model", "layer", "model")  # CPU: auto = model
        for name, value in rank["model", "params"].items():
            assert not torch.equal(value, initial[name]), name  # the step moved it (by about lr = 1e-2)
            torch.testing.assert_close(rank["layer", "params"][name], value, rtol=0, atol=1e-6,
                                       msg=f"{name} seed={seed}")  # fmt: skip
    for name, value in ranks[0]["layer", "params"].items():
        assert torch.equal(ranks[1]["layer", "params"][name], value), name


class CountingStreamer:
    """A WeightStreamer over an unsharded model's own layers, counting the forwards that asked for them."""

    reserved_bytes = 123

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.forwards = model, 0

    def layers_gathered(self):
        self.forwards += 1
        yield from self.model.model.layers


@pytest.mark.parametrize("decode_steps", DECODE_STEPS)
def test_runner_takes_every_forwards_layers_from_its_weight_streamer(decode_steps, seed):
    model = make_model()
    params = SamplingParams(n=2, max_tokens=9, ignore_eos=True, seed=seed)
    plain = Sampler(model, block_size=4, decode_steps=decode_steps)
    assert plain.runner.weight_streamer is None and plain.runner.reserved_bytes == 0
    want = sample(model, plain, PROMPTS[0], params)
    streamed = Sampler(model, block_size=4, decode_steps=decode_steps)
    streamed.runner.weight_streamer = streamer = CountingStreamer(model)
    assert streamed.runner.reserved_bytes == 123
    assert sample(model, streamed, PROMPTS[0], params) == want
    assert streamer.forwards == 9  # one prefill, then 8 decode steps (in chunks of decode_steps)


def test_auto_chooses_the_whole_model_where_it_fits_and_the_config_checks_the_mode():
    gib = 1 << 30
    assert fsdp_module.choose_rollout_gather(gathered=15 * gib, other=20 * gib, free=40 * gib) == "model"
    assert fsdp_module.choose_rollout_gather(gathered=30 * gib, other=20 * gib, free=40 * gib) == "layer"
    sampler = Sampler(make_model(), block_size=4, max_num_seqs=8)
    # 8 of the 12 sequences at once, 5 blocks of 4 tokens each, 4 layers x K, V x 4 tokens x 2 heads x 8 x 4 bytes
    # a block, in a pool of half the free memory.
    assert fsdp_module.kv_room(sampler, sequences=12, tokens=18) == 2 * 8 * 5 * (4 * 2 * 4 * 2 * 8 * 4)
    assert fsdp_module.kv_room(Sampler(make_model(), kv_cache_memory=1 << 20), sequences=12, tokens=18) == 1 << 20
    for mode in fsdp_module.ROLLOUT_GATHERS:  # an unsharded model needs no gather
        chosen = fsdp_module.rollout_gather_mode(mode, sampler.model, sampler, "float32", sequences=4, tokens=8)
        assert chosen == "model"
    with pytest.raises(ValueError, match="fsdp_rollout_gather"):
        fsdp_module.rollout_gather_mode("layers", sampler.model, sampler, "float32", sequences=4, tokens=8)
    assert GRPOConfig().fsdp_rollout_gather == "auto" and GRPOConfig(fsdp=True, fsdp_rollout_gather="layer")
    with pytest.raises(ValueError, match="fsdp_rollout_gather must be one of"):
        GRPOConfig(fsdp=True, fsdp_rollout_gather="layers")
    with pytest.raises(ValueError, match="fsdp_rollout_gather='layer' .* needs fsdp"):
        GRPOConfig(fsdp_rollout_gather="layer")
    with pytest.raises(ValueError, match="LoRA"):
        GRPOConfig(fsdp=True, fsdp_rollout_gather="layer", lora_r=8)
