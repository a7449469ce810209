"""dtype "auto": the choice from the processor's flags, the fp16-weight linear layers against fp32, the pages of
mapped weights handed back unchanged, and the choice named in the CLI's --json."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import make_model, make_tokenizer, tiny_llama_config, tolerances
from transformers import LlamaForCausalLM

from audio_minichat.app.choices import MODEL_DTYPES
from audio_minichat.utils.cpu_features import (FP16_WEIGHTS, choose_llm_plan, cpu_flags, fp16_weight_linears, llm_plan,
                                               release_file_pages)
from audio_minichat.utils.dtypes import DTYPES

X86 = ["qnnpack", "x86", "onednn", "fbgemm"]
needs_fp16_weights = pytest.mark.skipif(choose_llm_plan("cpu", cpu_flags(), torch.backends.quantized.supported_engines)
                                        .quantization != FP16_WEIGHTS, reason="this processor / PyTorch has no fp16 weights")


@pytest.fixture(autouse=True)
def one_thread():
    """One thread, as the CLI sets on 2 cores or fewer."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("flags,engines,quantization,why", [
    ({"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f"}, X86, FP16_WEIGHTS, "fbgemm"),  # AVX512 (measured)
    ({"avx2", "avx512_bf16", "amx_bf16", "amx_tile"}, X86, FP16_WEIGHTS, "avx2"),  # AMX: same rule (not measured)
    ({"avx2"}, ["x86"], FP16_WEIGHTS, "x86"),
    ({"sse4_2", "avx"}, X86, None, "does not report avx2"),
    (set(), X86, None, "does not report avx2"),
    ({"avx2"}, ["qnnpack"], None, "no fbgemm / x86 quantized engine"),
    ({"fp", "asimd", "bf16"}, ["qnnpack"], None, "no fbgemm"),  # Arm
])
def test_cpu_choice_from_flags_and_engines(flags, engines, quantization, why):
    plan = choose_llm_plan("cpu", frozenset(flags), engines)
    assert (plan.dtype, plan.quantization) == (torch.float32, quantization)
    assert why in plan.reason


def test_the_thread_count_does_not_change_the_plan():
    """fp16 weights with several threads too (measured faster than fp32's threaded layers on 2 threads)."""
    previous = torch.get_num_threads()
    try:
        plans = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            plans.append(llm_plan("auto", "cpu"))
        assert plans[0] == plans[1] == choose_llm_plan("cpu", cpu_flags(), torch.backends.quantized.supported_engines)
    finally:
        torch.set_num_threads(previous)


def test_other_devices_and_named_dtypes_keep_their_dtype():
    for plan in (choose_llm_plan("cuda", {"avx2"}, X86), llm_plan("auto", "mps")):
        assert (plan.dtype, plan.quantization) == (torch.float32, None)
    for name in ("float32", "bf16", torch.float16):
        plan = llm_plan(name, "cpu")
        assert plan.quantization is None and plan.dtype == DTYPES.get(name, name)
    with pytest.raises(ValueError, match="Unknown dtype 'int3'"):
        llm_plan("int3", "cpu")
    assert set(MODEL_DTYPES) - {"auto"} <= set(DTYPES)  # the command line's choices are known names


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    flags = cpu_flags(str(info))
    assert {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16"} <= flags
    assert "avx512_bf16" not in cpu_flags(str(tmp_path / "missing"))  # no file: only what PyTorch reports


def _tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(make_tokenizer())).eval()


@needs_fp16_weights
def test_fp16_weight_layers_compute_fp32_on_fp16_rounded_weights():
    """Each packed layer is x @ fp16(W)^T + b in fp32 (fp32 reduction tolerance), and the whole tiny Llama's logits
    are within fp16 weight rounding of fp32's: eps(fp16) * sqrt(reduction) tolerances, the widest reduction being the
    MLP's intermediate size."""
    model = _tiny_llama()
    rounded = _tiny_llama()
    for layer in rounded.modules():  # (the tied output head gets its own rounded copy: the embedding table stays fp32)
        if isinstance(layer, torch.nn.Linear):
            layer.weight = torch.nn.Parameter(layer.weight.detach().half().float())
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids).logits
        exact = rounded(ids).logits
        linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
        assert fp16_weight_linears(model) == linears
        packed = model(ids).logits
    k = model.config.intermediate_size
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert model.lm_head.__class__.__name__ == "Linear" and model.lm_head.__class__.__module__.startswith("torch.ao")
    assert model.model.embed_tokens.weight.dtype == torch.float32  # the table stays fp32 (the front ends read it)
    torch.testing.assert_close(packed, exact, **tolerances(torch.float32, k))
    torch.testing.assert_close(packed, ref, **_fp16_weight_tolerance(ref, k))


def _fp16_weight_tolerance(ref: torch.Tensor, reduction: int) -> dict:
    """fp16 weight rounding (relative eps(fp16) / 2 per weight) summed over ``reduction`` terms of either sign:
    about eps(fp16) * sqrt(reduction) of the outputs' scale."""
    return {"rtol": 0.0, "atol": tolerances(torch.float16, reduction, factor=1.0)["atol"] * float(ref.abs().max())}


@needs_fp16_weights
def test_layers_with_hooks_stay_fp32_and_bad_dtype_is_one_line():
    model = _tiny_llama()
    hooked = model.model.layers[0].self_attn.q_proj
    hooked.register_forward_hook(lambda module, args, out: out)
    total = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert fp16_weight_linears(model) == total - 1
    assert model.model.layers[0].self_attn.q_proj is hooked
    with pytest.raises(ValueError, match="packed from float32 CPU layers; model.layers.0.self_attn.q_proj is torch.bfloat16"):
        fp16_weight_linears(_tiny_llama().to(torch.bfloat16))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page release is Linux only")
def test_released_pages_of_a_mapped_checkpoint_read_back_unchanged(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from audio_minichat.utils.cpu_features import _file_mappings

    values = torch.randn(512, 1024, generator=torch.Generator().manual_seed(0))  # 2 MiB
    save_file({"w": values, "b": torch.arange(7.0)}, str(tmp_path / "m.safetensors"))
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as fh:
        mapped, small = fh.get_tensor("w"), fh.get_tensor("b")
    maps = _file_mappings()
    if not any(lo <= mapped.data_ptr() < hi for lo, hi in maps):
        pytest.skip("safetensors did not memory-map the file here")
    assert release_file_pages(mapped, maps) >= values.numel() * 4 - 2 * 4096  # the whole pages inside it
    assert torch.equal(mapped, values) and torch.equal(small, torch.arange(7.0))  # read back from the file
    assert release_file_pages(values, maps) == 0  # ordinary memory is never touched


@needs_fp16_weights
def test_speech_llm_auto_and_cli_json_name_the_choice(tmp_path, capsys):
    from audio_minichat.app.cli import main
    from audio_minichat.inference.speech_llm import SpeechLLM

    model, processor = make_model("whisper")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    (tmp_path / "doc.txt").write_text("hello world")
    auto, fp32 = SpeechLLM(tmp_path, dtype="auto"), SpeechLLM(tmp_path, dtype="float32")
    assert (auto.llm_quantization, fp32.llm_quantization) == (FP16_WEIGHTS, None)
    assert all(not isinstance(m, torch.nn.Linear) or m.weight.dtype == torch.float32
               for m in auto.model.audio_frontend.modules())  # only the LLM's layers are packed
    inputs = auto.processor(text=auto.processor.build_prompt(auto.processor.audio_with_text("Summarize:", "before"),
                                                             transcripts=["hello world"]))
    with torch.no_grad():
        ref = fp32.model(**inputs).logits
        torch.testing.assert_close(auto.model(**inputs).logits, ref,
                                   **_fp16_weight_tolerance(ref, model.config.text_config.intermediate_size))
    for extra, expected in ((["--threads", "1"], ("float32", FP16_WEIGHTS)),  # the default --dtype: auto
                            (["--threads", "2"], ("float32", FP16_WEIGHTS)),
                            (["--threads", "1", "--dtype", "float32"], ("float32", None))):
        assert main(["summarize", str(tmp_path / "doc.txt"), "--mode", "text", "--model", str(tmp_path), *extra,
                     "--max-new-tokens", "2", "--json", "--quiet"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (out["dtype"], out["llm_quantization"]) == expected


def test_backend_env_keeps_only_the_variables_that_choose_ctranslate2s_kernels():
    from audio_minichat.utils.cpu_flags import backend_env

    environ = {"CT2_USE_MKL": "0", "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1", "PATH": "/bin"}
    assert backend_env(environ) == {"CT2_USE_MKL": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert backend_env({}) == {}
