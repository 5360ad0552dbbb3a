"""The paged sampler on CPU against Hugging Face's own forward and generate (tiny random models, fp32)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from r1fast.sampler import Sampler, SamplingParams

VOCAB = 97
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, eos_token_id=None, bos_token_id=None,
              pad_token_id=None)  # fmt: skip
MODELS = {
    "llama-rope-llama3": lambda: LlamaForCausalLM(
        LlamaConfig(
            **COMMON,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        )
    ),  # fmt: skip
    "qwen2-tied": lambda: Qwen2ForCausalLM(Qwen2Config(**COMMON, tie_word_embeddings=True)),
    "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(**COMMON, head_dim=16, tie_word_embeddings=False)),
}
PROMPTS = [[1, 2, 3, 4, 5], [7, 8, 9], [10, 11, 12, 13, 14, 15, 16, 17], [20]]


def make(name: str) -> torch.nn.Module:
    torch.manual_seed(0)  # weights only; sampling draws use the test's fresh seeds
    return MODELS[name]().eval()


def hf_greedy(model, prompt: list[int], new_tokens: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False)  # fmt: skip
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_matches_hf_generate_with_groups_and_preemption(name):
    model = make(name)
    # block_size 4: prompts and completions cross block boundaries; a 12-block pool cannot hold the 4 x 3
    # sequences of 13-20 tokens at once, so the scheduler must preempt and recompute.
    small = Sampler(model, block_size=4, kv_cache_memory=12 * Sampler(model, block_size=4).runner.bytes_per_block(4))
    groups = small.generate(PROMPTS, SamplingParams(n=3, temperature=0, max_tokens=12, ignore_eos=True))
    assert small.last_scheduler.num_preemptions > 0
    for prompt, group in zip(PROMPTS, groups, strict=True):
        expected = hf_greedy(model, prompt, 12)
        assert [c.token_ids for c in group.completions] == [expected] * 3
        assert [c.finish_reason for c in group.completions] == ["length"] * 3
        assert [c.index for c in group.completions] == [0, 1, 2]


def test_forked_children_share_full_prompt_blocks(seed):
    model = make("qwen2-tied")
    sampler = Sampler(model, block_size=4)
    used = []
    forward = sampler.runner.forward

    def recording_forward(batch, seq_lens):
        used.append(sampler.block_manager.num_blocks - sampler.block_manager.num_free)
        return forward(batch, seq_lens)

    sampler.runner.forward = recording_forward
    prompts, g = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12, 13, 14]], 5  # a partial and an exactly full last block
    sampler.generate(prompts, SamplingParams(n=g, temperature=1.0, seed=seed, max_tokens=3, ignore_eos=True))
    # Prefill: each prompt's blocks once. First decode: full prompt blocks still shared; every child owns one tail
    # block (a copy of the partial block, or a fresh one after a full block).
    assert used[0] == 2 + 2
    assert used[1] == (1 + g) + (2 + g)


def test_logprobs_equal_the_models_own_forward_and_siblings_stay_intact(seed):
    model = make("llama-rope-llama3")
    sampler = Sampler(model, block_size=4)
    temperature = 0.8
    params = SamplingParams(n=4, temperature=temperature, top_k=20, seed=seed, max_tokens=9, ignore_eos=True)
    groups = sampler.generate(PROMPTS[:3], params)
    for prompt, group in zip(PROMPTS[:3], groups, strict=True):
        completions = [c.token_ids for c in group.completions]
        assert len({tuple(c) for c in completions}) > 1  # the siblings really diverged
        for completion in group.completions:
            ids = torch.tensor([prompt + completion.token_ids])
            with torch.no_grad():
                logits = model(ids).logits[0, len(prompt) - 1 : -1]
            want = torch.log_softmax(logits / temperature, -1).gather(-1, ids[0, len(prompt) :, None])[:, 0]
            torch.testing.assert_close(torch.tensor(completion.logprobs), want, rtol=1e-5, atol=1e-5)


def test_seeds_reproduce_and_differ(seed):
    sampler = Sampler(make("qwen3"), block_size=4)
    params = dict(n=3, temperature=1.0, max_tokens=8, ignore_eos=True)
    ids = lambda s: [
        [c.token_ids for c in g.completions] for g in sampler.generate(PROMPTS, SamplingParams(**params, seed=s))
    ]  # noqa: E501
    first = ids(seed)
    assert first == ids(seed)
    assert first != ids(seed + 1)


def test_generate_reads_the_weights_in_place_and_survives_free():
    model = make("qwen3")
    sampler = Sampler(model, block_size=4)
    params = SamplingParams(n=2, temperature=0, max_tokens=4, ignore_eos=True)
    before = sampler.generate(PROMPTS[:2], params)
    with torch.no_grad():  # an in-place change of the LM head, as an optimizer step makes
        model.lm_head.weight.mul_(1e-3)
        model.lm_head.weight[42] = model.lm_head.weight[42].sign() * 10
    sampler.free()
    assert sampler.block_manager is None
    after = sampler.generate(PROMPTS[:2], params)
    expected = [hf_greedy(model, p, 4) for p in PROMPTS[:2] for _ in range(2)]
    assert [c.token_ids for g in after for c in g.completions] == expected
    assert before != after


def test_stop_tokens_and_strings_and_min_tokens():
    model = make("qwen3")
    greedy = hf_greedy(model, PROMPTS[0], 10)
    stop_token = greedy[3]
    first = greedy.index(stop_token)

    class Words:
        def decode(self, ids):
            return " ".join(f"w{i}" for i in ids)

    sampler = Sampler(model, tokenizer=Words(), block_size=4)
    out = sampler.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=10, stop_token_ids=[stop_token]))
    assert out[0].completions[0].token_ids == greedy[: first + 1]
    assert out[0].completions[0].finish_reason == "stop"
    out = sampler.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=10, stop=[f"w{greedy[2]}"]))
    assert out[0].completions[0].token_ids == greedy[: greedy.index(greedy[2]) + 1]
    out = sampler.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=10, min_tokens=10,
                                                        stop_token_ids=[stop_token]))  # fmt: skip
    assert out[0].completions[0].token_ids == greedy  # the stop token is ignored until 10 tokens exist


def test_bad_input_raises_clear_errors():
    model = make("qwen2-tied")
    sampler = Sampler(model, block_size=4, max_model_len=16)
    params = SamplingParams(max_tokens=2)
    with pytest.raises(ValueError, match="empty"):
        sampler.generate([[1, 2], []], params)
    with pytest.raises(ValueError, match="max_model_len"):
        sampler.generate([list(range(16))], params)
    with pytest.raises(ValueError, match="outside"):
        sampler.generate([[VOCAB]], params)
    with pytest.raises(ValueError, match="n must be"):
        SamplingParams(n=0)
    with pytest.raises(ValueError, match="stop strings need"):
        sampler.generate([[1]], SamplingParams(stop=["x"]))
    with pytest.raises(ValueError, match="unsupported model type"):
        Sampler(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)))
    tiny_pool = Sampler(model, block_size=4, kv_cache_memory=sampler.runner.bytes_per_block(4) * 2)
    with pytest.raises(ValueError, match="KV blocks"):
        tiny_pool.generate([list(range(12))], params)


@pytest.mark.gpu
def test_greedy_on_cuda_matches_hf_generate():
    model = make("qwen2-tied").cuda()
    sampler = Sampler(model, block_size=16)
    groups = sampler.generate(PROMPTS, SamplingParams(n=2, temperature=0, max_tokens=12, ignore_eos=True))
    for prompt, group in zip(PROMPTS, groups, strict=True):
        out = model.generate(torch.tensor([prompt], device="cuda"), max_new_tokens=12, min_new_tokens=12,
                             do_sample=False)  # fmt: skip
        assert group.completions[0].token_ids == out[0, len(prompt) :].tolist()


def test_triton_attention_path_matches_hf_generate():
    # The kernels the sampler runs on CUDA, here through the Triton interpreter: prefill, decode and forks.
    torch.manual_seed(0)  # head_dim 64, a size the kernel supports
    model = Qwen2ForCausalLM(Qwen2Config(**{**COMMON, "hidden_size": 128, "num_attention_heads": 2}))
    model.eval()
    sampler = Sampler(model, block_size=4, attention_backend="triton")
    groups = sampler.generate(PROMPTS[:2], SamplingParams(n=2, temperature=0, max_tokens=6, ignore_eos=True))
    for prompt, group in zip(PROMPTS[:2], groups, strict=True):
        assert [c.token_ids for c in group.completions] == [hf_greedy(model, prompt, 6)] * 2
