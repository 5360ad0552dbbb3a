"""LoRA through PEFT on CPU: the sampler generates with the adapters applied (HF generate on PEFT's merged model
samples the same tokens), the trainer's adapter gradients are the reference loss's with the base model (adapters
disabled, no copy) as the KL reference, only adapters train and are saved, and the frozen base stays bit-identical."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel

from r1fast import reference
from r1fast.demo import CharTokenizer, make_policy, problems
from r1fast.sampler import SamplingParams
from r1fast.trainer import CheckpointError, GRPOConfig, GRPOTrainer, InputError, lora

ROWS = problems()[:16]
TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


def short(prompts, completions, completion_ids, **_):
    return [1.0 if len(ids) <= 6 else 0.0 for ids in completion_ids]


def half_length(prompts, completions, completion_ids, **_):
    return [len(ids) / 12 for ids in completion_ids]


def lora_trainer(seed: int, model=None, **config) -> GRPOTrainer:
    tokenizer = CharTokenizer()
    defaults = dict(prompts_per_step=2, num_generations=4, micro_batch_size=4, max_completion_length=12,
                    sampler_block_size=4, learning_rate=1e-2, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                    lora_target_modules=TARGETS, seed=seed)  # fmt: skip
    model = make_policy(tokenizer, seed=0) if model is None else model
    return GRPOTrainer(model, tokenizer, [short, half_length], ROWS, GRPOConfig(**{**defaults, **config}),
                       log_stream=None)  # fmt: skip


def perturb_adapters(model: torch.nn.Module, seed: int) -> None:
    """Non-zero B (PEFT starts B at zero, where the adapters change nothing and A gets no gradient)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))


def base_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's parameters by their plain names (PEFT's wrapping prefixes and base_layer stripped)."""
    out = {}
    for name, p in lora.base_model(model).named_parameters():
        if "lora_" not in name:
            out[name.replace(".base_layer", "")] = p.detach().clone()
    return out


def test_sampler_with_adapters_samples_hf_generate_of_the_merged_model(seed):
    tr = lora_trainer(seed)
    perturb_adapters(tr.model, seed)
    tokenizer = CharTokenizer()
    prompts = [tokenizer.encode(row["prompt"]) for row in ROWS[:3]]
    groups = tr.sampler.generate(prompts, SamplingParams(n=2, temperature=0, max_tokens=10, ignore_eos=True))
    merged = copy.deepcopy(tr.model).merge_and_unload().eval()
    plain = make_policy(tokenizer, seed=0)
    for model in (merged, plain):  # as ignore_eos: EOS is a token like any other (min_new_tokens would forbid it)
        model.generation_config.eos_token_id = None
    differs = False
    for prompt, group in zip(prompts, groups, strict=True):
        out = merged.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False)
        want = out[0, len(prompt) :].tolist()
        assert [c.token_ids for c in group.completions] == [want, want]
        base = plain.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False)
        differs |= base[0, len(prompt) :].tolist() != want
    assert differs  # the adapters change what is sampled: the sampler did not run the base weights alone


def test_adapter_gradients_are_the_reference_loss_gradient_with_the_base_as_kl_reference(seed):
    tr = lora_trainer(seed, beta=0.1, temperature=0.9)
    perturb_adapters(tr.model, seed)
    assert tr.ref_model is None  # no second copy: the reference is the base, adapters disabled
    rollout = tr.generate(tr.rows_for_batch(0), seed=seed)
    rollout.advantages = torch.randn(rollout.advantages.shape, generator=torch.Generator().manual_seed(seed))
    batches = tr.micro_batches(rollout)
    with lora.adapters_disabled(tr.model):
        ref = [tr._logps(tr.model, b) for b in batches]
    plain = make_policy(CharTokenizer(), seed=0)
    for got, b in zip(ref, batches, strict=True):
        torch.testing.assert_close(got, tr._logps(plain, b))  # the reference is the untouched base model
    tr.model.train()
    tr.model.zero_grad()
    metrics = tr.loss_and_backward(batches, None, ref)
    trained = {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    assert all(p.grad is None for p in tr.model.parameters() if not p.requires_grad)
    assert metrics["kl"] > 0

    # The reference: float64 logits of the PEFT model's own forward and of the base, TRL's loss on the whole batch.
    tr.model.zero_grad()
    model64, plain64 = tr.model.double(), plain.double()
    t = max(len(c) for c in rollout.completion_ids)
    logps, ref_logps, masks = [], [], []
    for prompt, completion in zip(rollout.prompt_ids, rollout.completion_ids, strict=True):
        ids, target = torch.tensor([prompt + completion]), torch.tensor(completion)[:, None]
        for model, out in ((model64, logps), (plain64, ref_logps)):
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1] / tr.config.temperature
            lp = torch.log_softmax(logits, -1).gather(-1, target)[:, 0]
            out.append(torch.nn.functional.pad(lp, (0, t - len(completion))))
        masks.append(torch.tensor([1.0] * len(completion) + [0.0] * (t - len(completion)), dtype=torch.float64))
    loss, _ = reference.policy_loss(torch.stack(logps), torch.stack(masks), rollout.advantages.double(), None,
                                    torch.stack(ref_logps).detach(), **tr.config.loss_options())  # fmt: skip
    loss.backward()
    for name, p in model64.named_parameters():
        if name in trained:
            want = p.grad
            assert want.abs().max() > 0, name
            torch.testing.assert_close(trained[name].double(), want, rtol=1e-4,
                                       atol=1e-4 * want.abs().max().item() + 1e-7, msg=name)  # fmt: skip


def test_only_adapters_train_and_are_saved_and_the_frozen_base_is_untouched(tmp_path, seed):
    initial = base_params(make_policy(CharTokenizer(), seed=0))
    run = tmp_path / "run"
    tr = lora_trainer(seed, beta=0.04, max_steps=2, save_steps=1, output_dir=str(run))
    start = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    tr.train()
    after = base_params(tr.model)
    assert after.keys() == initial.keys()
    for name, p in initial.items():
        assert torch.equal(after[name], p), name  # bit-identical
    adapters = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    assert any(not torch.equal(adapters[n], start[n]) for n in start)
    for folder in (run / "checkpoint-2", run / "final"):
        names = {f.name for f in folder.iterdir()}
        assert {"adapter_model.safetensors", "adapter_config.json"} <= names and "model.safetensors" not in names
    # PEFT loads the export onto a fresh base; a run resumed from checkpoint-1 ends on the same adapters.
    loaded = PeftModel.from_pretrained(make_policy(CharTokenizer(), seed=0), run / "final")
    got = dict(loaded.named_parameters())
    for name, p in adapters.items():
        assert torch.equal(got[name], p), name
    resumed = lora_trainer(seed, beta=0.04, max_steps=2, save_steps=1, output_dir=str(run))
    resumed.train(resume_from=str(run / "checkpoint-1"))
    for name, p in resumed.model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, adapters[name]), name
    with pytest.raises(CheckpointError, match="LoRA adapters"):  # not into a model without adapters
        lora_trainer(seed, lora_r=0).load(run / "checkpoint-2")


def test_a_peft_model_is_trained_as_given_and_lora_settings_are_checked(seed):
    peft_model = lora.apply_lora(make_policy(CharTokenizer(), seed=0), 2, 4.0, ["q_proj"])
    tr = lora_trainer(seed, model=peft_model, lora_r=0)
    assert tr.model is peft_model
    trainable = {id(p) for p in peft_model.parameters() if p.requires_grad}
    assert {id(p) for group in tr.optimizer.param_groups for p in group["params"]} == trainable
    with pytest.raises(InputError, match="PeftModel already"):
        lora_trainer(seed, model=peft_model)
    with pytest.raises(InputError, match="nope_proj"):
        lora_trainer(seed, lora_target_modules=["nope_proj"])
    for bad in (dict(lora_r=-1), dict(lora_alpha=0), dict(lora_dropout=1.0), dict(lora_target_modules=[])):
        with pytest.raises(ValueError):
            GRPOConfig(**bad)


def test_cli_scaling_options_are_config_keys():
    import argparse

    from r1fast.cli import _scaling_overrides, build_config

    args = argparse.Namespace(fsdp=False, lora_r=8, lora_alpha=16.0, lora_target_modules=["q_proj", "v_proj"])
    config = build_config(None, _scaling_overrides(args) + ["lora_alpha=4"])  # --set wins over the shorthand
    assert (config.lora_r, config.lora_alpha, config.lora_target_modules) == (8, 4, ["q_proj", "v_proj"])
    args = argparse.Namespace(fsdp=True, lora_r=None, lora_alpha=None, lora_target_modules=["all-linear"])
    config = build_config(None, _scaling_overrides(args))
    assert config.fsdp and config.lora_r == 0 and config.lora_target_modules == "all-linear"


@pytest.mark.gpu
def test_lora_step_on_cuda_in_bf16_trains_the_adapters_alone(seed):
    # The bf16 base with PEFT's float32 adapters through the sampler's CUDA path (graphs) and the Triton loss.
    model = make_policy(CharTokenizer(), seed=0).to("cuda", torch.bfloat16)
    initial = base_params(model)
    tr = lora_trainer(seed, model=model, max_steps=1, beta=0.04)
    start = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    (metrics,) = tr.train()
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    after = base_params(tr.model)
    for name, p in initial.items():
        assert torch.equal(after[name], p), name
    assert any(not torch.equal(p, start[n]) for n, p in tr.model.named_parameters() if p.requires_grad)
