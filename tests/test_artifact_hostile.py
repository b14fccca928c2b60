"""Hostile artifacts, configs and checkpoints (issue #22 items 4, 5, 8, 9): every decoder has a budget for the
whole file, sizes and shapes are checked against the declared model before anything of their size is allocated,
NaN/Inf and wrong dtypes are refused by tensor name, and a forged config.json cannot choose how bytes are counted.

No test allocates the sizes a bomb asks for: each asserts the refusal comes from the check that precedes the big
allocation (the allocating function is replaced by one that fails the test if reached).
"""

from __future__ import annotations

import copy
import functools
import json
import lzma
from pathlib import Path

import pytest
import torch

from golf_lit.artifact import ArtifactError, QuantConfig, packing, pergroup, quantize_state_dict
from golf_lit.artifact import lqer as lqer_module
from golf_lit.artifact.compression import compress, decode, encode, have_lrzip
from golf_lit.artifact.container import serialize
from golf_lit.artifact.records import load_record_checkpoint, parse_artifact, payload_bound
from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES
from golf_lit.eval.loading import artifact_data_defaults, find_model_config, load_model, provenance
from golf_lit.model import gpt as gpt_module
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.model.size import MAX_PARAMS, ModelSizeError, check_model_size

MODEL_Q = ModelConfig(num_layers=1, model_dim=128, num_heads=4, num_kv_heads=2, rope_dims=4, xsa_last_n=1,
                      bigram_vocab_size=0, mlp_mult=5.0)
"""Small, but with quantized tensors: tok_emb (1024 x 128, int8) and the MLP (640 x 128, int6) pass 65,536."""
QUANT = QuantConfig(lqer_rank=2, lqer_top_k=1, code_bytes=0)
LQER = "blocks.0.mlp.fc.weight"
"""The one LQER-corrected tensor (largest quantization error)."""
XZ_1536_MIB_DICT = bytes.fromhex(
    "fd377a585a000004e6d6b44602002101250000003b787b410100016869000000fea93811bccaa54800011a02dc2ea57e1fb6f37d01"
    "0000000004595a"
)
"""A 60-byte .xz stream whose LZMA2 filter declares a 1.5 GiB dictionary (the decoder would reserve it first)."""


@functools.cache
def _base() -> tuple[dict[str, torch.Tensor], dict]:
    torch.manual_seed(0)
    sd = {k: v + 0.02 * torch.randn_like(v) for k, v in GPT(MODEL_Q).state_dict().items()}  # no all-zero tensors
    return quantize_state_dict(sd, cfg=QUANT)


def base_wm() -> tuple[dict[str, torch.Tensor], dict]:
    """A fresh copy of the quantized (w, m) of MODEL_Q (with LQER factors on LQER)."""
    w, m = _base()
    return {k: v.clone() for k, v in w.items()}, copy.deepcopy(m)


def blob_of(w, m, kind: str = "zstd") -> bytes:
    """Artifact bytes: the seed's zstd frame or a golf-lit pergroup container (zstd code streams)."""
    if kind == "zstd":
        return compress(serialize(w, m), 3)
    return packing.pack(w, m, "pergroup", "zstd")


def write_wm(folder: Path, w, m, kind: str = "zstd", cfg: ModelConfig = MODEL_Q) -> Path:
    """An artifact of (w, m) with a config.json naming ``cfg`` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "final_model.int6.ptz"
    path.write_bytes(blob_of(w, m, kind))
    (folder / "config.json").write_text(json.dumps({"model": cfg.to_dict()}))
    return path


def pergroup_with_manifest(w, m, manifest) -> bytes:
    """A pergroup container whose remainder carries ``manifest`` and one tiny code stream per group."""
    rest = {k: v for k, v in w.items() if not k.endswith(".q")}
    head = pergroup.serialize_with_manifest(rest, m, manifest)
    groups = manifest if isinstance(manifest, list) else []
    streams = [("zstd", 0, compress(head, 3)), ("zstd", 0, compress(b"", 3))]
    streams += [("zstd", 0, compress(b"\0" * 16, 3)) for _ in groups]
    return packing.write_container("pergroup", streams)


def template() -> dict[str, torch.Tensor]:
    return check_model_size(MODEL_Q, "test")


# --- item 8: NaN/Inf and dtypes ---------------------------------------------------------------------------------


def test_the_base_artifact_loads_in_both_packings(tmp_path):
    w, m = base_wm()
    assert "lqer" in m[LQER] and f"{LQER}.lqer_A" in w and m["tok_emb.weight"] == {"type": "int8"}
    for kind in ("zstd", "pergroup"):
        model = load_model(write_wm(tmp_path / kind, w, m, kind), MODEL_Q)
        assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("key", ["blocks.0.mlp.fc.weight.scale", "tok_emb.weight.scale",
                                 f"{LQER}.lqer_A_scale", "blocks.0.attn_scale"])
def test_nan_or_inf_in_a_stored_float_is_refused_by_name(key, value, tmp_path):
    w, m = base_wm()
    if key not in w:  # a passthrough tensor of the model: pick any one
        key = next(k for k, v in m.items() if v == "passthrough" and w[k].is_floating_point())
    w[key] = w[key].clone()
    w[key].view(-1)[0] = value
    path = write_wm(tmp_path, w, m)
    with pytest.raises(ArtifactError, match=rf"^{path}: .*{key.removesuffix('.scale').split('.lqer')[0]}.* NaN or "
                                            r"infinite values$"):
        load_model(path, MODEL_Q)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, torch.int16, torch.uint8])
def test_weight_codes_of_another_dtype_are_refused_not_cast(dtype, tmp_path):
    w, m = base_wm()
    key = "blocks.0.mlp.proj.weight.q"
    w[key] = w[key].to(dtype)
    path = write_wm(tmp_path, w, m)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(ArtifactError, match=rf"'blocks.0.mlp.proj.weight': stored entry '{key}' is {name}, "
                                            r"expected int8$"):
        load_model(path, MODEL_Q)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64, torch.float64])
def test_passthrough_of_another_dtype_is_refused(dtype, tmp_path):
    w, m = base_wm()
    key = next(k for k, v in m.items() if v == "passthrough")
    w[key] = w[key].to(dtype)
    with pytest.raises(ArtifactError, match=rf"'{key}' is {str(dtype).removeprefix('torch.')}, expected float16 "
                                            r"or bfloat16 or float32$"):
        load_model(write_wm(tmp_path, w, m), MODEL_Q)


# --- item 4: LQER factors are checked before they are multiplied ---------------------------------------------


def _never_multiply(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("LQER factors were multiplied before their shapes were checked")

    monkeypatch.setattr(lqer_module, "unpack", boom)


@pytest.mark.parametrize("a_shape, b_shape", [((65_536, 1), (1, 65_536)),  # A @ B would be 16 GiB of fp32
                                              ((640, 129), (129, 128)),  # rank above min(rows, cols)
                                              ((640, 2), (3, 128)),  # inner sizes differ
                                              ((640,), (2, 128))])  # not a matrix
def test_lqer_factor_shapes_are_checked_before_the_product(a_shape, b_shape, tmp_path, monkeypatch):
    w, m = base_wm()
    w[f"{LQER}.lqer_A"] = torch.zeros(a_shape, dtype=torch.int8)
    w[f"{LQER}.lqer_B"] = torch.zeros(b_shape, dtype=torch.int8)
    path = write_wm(tmp_path, w, m)
    _never_multiply(monkeypatch)
    with pytest.raises(ArtifactError, match=rf"'{LQER}': LQER factors of shapes .* do not make a rank-r"):
        load_model(path, MODEL_Q)


@pytest.mark.parametrize("edit, message", [
    (lambda w, m: m[LQER].update(lqer="bf4"), "unknown LQER packing 'bf4'"),
    (lambda w, m: w.pop(f"{LQER}.lqer_B_scale"), "'blocks.0.mlp.fc.weight.lqer_B_scale' is missing"),
    (lambda w, m: w.update({f"{LQER}.lqer_B_scale": torch.ones(3, dtype=torch.float16)}), r"B_scale has shape \(3,\)"),
    (lambda w, m: w.update({f"{LQER}.lqer_A": w[f"{LQER}.lqer_A"].float()}), "lqer_A' is float32, expected int8"),
])
def test_malformed_lqer_entries_are_refused_in_one_line(edit, message, tmp_path, monkeypatch):
    w, m = base_wm()
    edit(w, m)
    path = write_wm(tmp_path, w, m)
    _never_multiply(monkeypatch)
    with pytest.raises(ArtifactError, match=message) as info:
        load_model(path, MODEL_Q)
    assert "\n" not in str(info.value)


# --- item 4: a budget for the whole file -----------------------------------------------------------------------


def _decoded(monkeypatch) -> list[str]:
    """Labels of the streams decoded (the decoder is wrapped to record them)."""
    seen: list[str] = []
    real = packing.decode_stream

    def spy(stream, source, label, max_bytes):
        seen.append(label)
        return real(stream, source, label, max_bytes)

    monkeypatch.setattr(packing, "decode_stream", spy)
    return seen


def test_a_manifest_declaring_more_than_the_cap_is_refused_before_any_code_stream(monkeypatch):
    w, m = base_wm()
    seen = _decoded(monkeypatch)
    blob = pergroup_with_manifest(w, m, [["mlp.fc.weight", [["blocks.0.mlp.fc.weight.q", 100_000, 100_000, False]]]])
    with pytest.raises(ArtifactError, match=r"declares 10,000,000,000 bytes of codes, more than the .* left of the "
                                            r"cap of 256,000,000 bytes"):
        parse_artifact(blob, "x.ptz")
    assert seen == ["stream 0 (remainder)"]


def test_with_the_declared_model_the_manifest_shapes_are_checked_first(monkeypatch):
    w, m = base_wm()
    seen = _decoded(monkeypatch)
    blob = pergroup_with_manifest(w, m, [["mlp.fc.weight", [["blocks.0.mlp.fc.weight.q", 640, 129, False]]]])
    with pytest.raises(ArtifactError, match=r"'blocks.0.mlp.fc.weight.q' is 640x129, the model's \(640, 128\)"):
        parse_artifact(blob, "x.ptz", template=template())
    assert seen == ["stream 0 (remainder)"]
    assert payload_bound(template()) < 256_000_000  # the template also lowers the whole-file cap


def test_the_cap_covers_all_streams_together():
    """Each stream below the cap, the file above it: refused (the 123 KB -> 4.95 GB reproducer, scaled down)."""
    w, m = base_wm()
    blob = blob_of(w, m, "pergroup")
    _, streams = packing.read_container(blob, "x")
    sizes = [len(packing.decode_stream(s, "x", "s", 1 << 30)) for s in streams]
    assert max(sizes) < sum(sizes)
    assert parse_artifact(blob, "x", max_bytes=sum(sizes))[0].keys() == w.keys()
    with pytest.raises(ArtifactError, match="more than the .* left of the cap"):
        parse_artifact(blob, "x", max_bytes=sum(sizes) - 1)


@pytest.mark.parametrize("manifest, message", [
    ("not a list", "does not match the 0 code streams"),
    ([["g", "entries"]], r"entry 0: expected \[group name, entries\]"),
    ([["g", [["blocks.0.mlp.fc.weight.q", "640", 128, False]]]], r"expected \[name, rows >= 1"),
    ([["g", [["blocks.0.mlp.fc.weight.q", -640, 128, False]]]], r"expected \[name, rows >= 1"),
    ([["g", [["blocks.0.mlp.fc.weight.q", 640, 128]]]], r"expected \[name, rows >= 1"),
    ([["g", [["blocks.0.mlp.fc.weight.q", 640, 128, 1]]]], r"expected \[name, rows >= 1"),
    ([["g", [["blocks.0.mlp.fc.weight", 640, 128, False]]]], "not a '<tensor>.q' code matrix"),
    ([["g", [["x.q", 1, 16, False]]], ["g", [["x.q", 1, 16, False]]]], "is repeated"),
])
def test_malformed_pergroup_manifests_are_one_line_refusals(manifest, message):
    w, m = base_wm()
    with pytest.raises(ArtifactError, match=message) as info:
        parse_artifact(pergroup_with_manifest(w, m, manifest), "x.ptz")
    assert str(info.value).startswith("x.ptz: ") and "\n" not in str(info.value)


def test_unknown_stream_flags_are_refused():
    w, m = base_wm()
    blob = bytearray(blob_of(w, m, "pergroup"))
    blob[8 + 1] = 0x80  # stream 0's flags byte (after the 8-byte head and its codec id)
    with pytest.raises(ArtifactError, match=r"^x.ptz: stream 0: unknown flags 0x80"):
        parse_artifact(bytes(blob), "x.ptz")


def test_an_lzma_stream_declaring_a_huge_dictionary_is_refused_without_reserving_it():
    with pytest.raises(lzma.LZMAError):  # what stdlib says, with a limit
        lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=1 << 27).decompress(XZ_1536_MIB_DICT)
    with pytest.raises(ArtifactError, match=r"^x.ptz: corrupt stream 0 \(lzma\): Memory usage limit"):
        decode("lzma", XZ_1536_MIB_DICT, "x.ptz", "stream 0")
    legacy = b"\x5d" + (3 << 30).to_bytes(4, "little") + b"\xff" * 8 + bytes(64)  # .lzma header, 3 GiB dictionary
    with pytest.raises(ArtifactError, match=r"^x.ptz: corrupt stream 0 \(lzma\)"):
        decode("lzma", legacy, "x.ptz", "stream 0")


# --- item 4: model sizes from untrusted files are bounded --------------------------------------------------------


def test_the_record_and_top_models_are_within_the_bound():
    assert sum(t.numel() for t in check_model_size(ModelConfig(), "x").values()) < MAX_PARAMS
    top = ModelConfig(vocab_size=8192, num_loops=2, loop_start=3, loop_end=5, parallel_start_layer=8)
    assert sum(t.numel() for t in check_model_size(top, "x").values()) < MAX_PARAMS


@pytest.mark.parametrize("fields, message", [
    ({"num_layers": 1_000_000, "xsa_last_n": 0}, "num_layers=1000000 is more than golf-lit loads"),
    ({"num_loops": 10_000, "loop_start": 0, "loop_end": 10}, "runs 110011 blocks per forward"),
    ({"vocab_size": 10_000_000}, "has at least 5,"),
    ({"model_dim": 1 << 20, "num_heads": 1 << 14, "num_kv_heads": 1 << 14}, "has at least"),
    ({"mlp_mult": 1e300}, "has at least"),
])
def test_models_too_large_for_the_artifact_cap_are_refused_before_they_are_built(fields, message, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the model was built before its size was checked")

    monkeypatch.setattr(gpt_module, "GPT", boom)
    with pytest.raises(ModelSizeError, match=message):
        check_model_size(ModelConfig(**fields), "config.json")


def test_a_config_json_with_a_million_layers_is_refused_by_name(tmp_path):
    folder = tmp_path / "art"
    write_wm(folder, *base_wm(), cfg=ModelConfig(num_layers=1_000_000, xsa_last_n=0))
    with pytest.raises(ValueError, match=rf"^{folder / 'config.json'}: model.num_layers=1000000 is more than"):
        find_model_config(folder / "final_model.int6.ptz")
    (folder / "config.json").write_text(json.dumps({"model": {"num_layers": "two"}}))
    with pytest.raises(ValueError, match="config.json: not a valid model config"):
        find_model_config(folder / "final_model.int6.ptz")


def test_the_artifact_is_checked_against_the_model_before_the_model_is_allocated(tmp_path, monkeypatch):
    w, m = base_wm()
    path = write_wm(tmp_path, w, m)
    other = ModelConfig(**{**MODEL_Q.to_dict(), "model_dim": 256})

    def boom(*args, **kwargs):
        raise AssertionError("the real model was allocated before the file was checked")

    monkeypatch.setattr("golf_lit.eval.loading.GPT", boom)
    with pytest.raises(ArtifactError, match=r"stored shape \(\d+, 128\) does not match the model's \(\d+, 256\)"):
        load_model(path, other)
    with pytest.raises(ArtifactError, match="does not match"):
        load_record_checkpoint(path, check_model_size(other, "x"))


# --- item 5: a forged config.json does not choose how bytes are counted ------------------------------------------


def test_a_forged_golf_lit_mark_cannot_choose_data_outside_the_bundled_sample(tmp_path):
    path = write_wm(tmp_path, *base_wm())
    (tmp_path / "evil").mkdir()

    def forge(data: dict) -> None:  # anyone can write the mark and the sha256
        (tmp_path / "config.json").write_text(json.dumps({**provenance(path), "model": MODEL_Q.to_dict(),
                                                          "data": data}))

    forge({"val_files": str(tmp_path / "evil" / "val_*.bin"), "tokenizer_path": str(tmp_path / "evil" / "t.model"),
           "train_seq_len": 128})
    found, why = artifact_data_defaults(path)
    assert found == {"sliding.seq_len": 128}
    assert "val_files and tokenizer ignored: tokenizer and val_files outside the bundled sample" in why
    forge({"val_files": "sample:../../../evil/val_*.bin", "tokenizer_path": SAMPLE_TOKENIZER})  # both or neither
    assert artifact_data_defaults(path)[0] == {}
    forge({"val_files": SAMPLE_VAL_FILES, "tokenizer_path": SAMPLE_TOKENIZER})  # golf-lit's own data: used
    assert artifact_data_defaults(path)[0] == {"val_files": SAMPLE_VAL_FILES, "tokenizer": SAMPLE_TOKENIZER}
    forge({"val_files": str(tmp_path / "evil" / "val_*.bin")})  # the user's explicit opt-in still works
    assert artifact_data_defaults(path, trust=True)[0] == {"val_files": str(tmp_path / "evil" / "val_*.bin")}


@pytest.mark.skipif(not have_lrzip(), reason="lrzip is not on PATH")
def test_lrzip_may_not_write_past_the_cap(monkeypatch):
    import subprocess

    blob = encode("lrzip", bytes(300_000))
    limits = []
    real = subprocess.run

    def spy(*args, **kwargs):
        limits.append(kwargs.get("preexec_fn"))
        return real(*args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    assert len(decode("lrzip", blob, "x.ptz", "stream 2", 300_000)) == 300_000
    with pytest.raises(ArtifactError, match=r"^x.ptz: stream 2 decompresses to more than the cap of 100,000"):
        decode("lrzip", blob, "x.ptz", "stream 2", 100_000)
    assert all(limits)  # the child ran with RLIMIT_FSIZE set (cap + 1 bytes)


def test_a_code_stream_expanding_past_its_declared_size_stops_in_bounded_memory():
    """A tiny stream of 256 MiB of zeros (no content size in its header) where the manifest declares 16 bytes."""
    import tracemalloc

    import zstandard

    w, m = base_wm()
    cobj = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
    zeros = bytes(1 << 20)
    bomb = b"".join(cobj.compress(zeros) for _ in range(256)) + cobj.flush()
    assert len(bomb) < 64_000
    blob = pergroup_with_manifest(w, m, [["g", [["blocks.0.mlp.fc.weight.q", 1, 16, False]]]])
    _, streams = packing.read_container(blob, "x")
    blob = packing.write_container("pergroup", [*streams[:2], ("zstd", 0, bomb)])
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactError, match=r"stream 2 \(g codes\) decompresses to more than the cap of 16 bytes"):
            parse_artifact(blob, "x.ptz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak  # one decoding piece at most, not the 256 MiB


def test_a_deeply_nested_config_json_is_a_one_line_refusal(tmp_path):
    path = write_wm(tmp_path, *base_wm())
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert artifact_data_defaults(path) == ({}, f"no readable {tmp_path / 'config.json'}")
    with pytest.raises(ValueError, match=r"config.json: not a readable JSON/YAML model config \(maximum") as e:
        find_model_config(path)
    assert "\n" not in str(e.value)


def test_a_file_larger_than_the_cap_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.ptz"
    with open(path, "wb") as f:  # sparse: no disk or memory for the 1 GB
        f.truncate(1 << 30)
    with pytest.raises(ArtifactError, match=r"big.ptz: 1,073,741,824 bytes, more than the cap of 256,000,000"):
        load_record_checkpoint(path, template())
