"""The artifact file (golf_lit/artifact/*): budget search, size accounting, atomic writes, loading, errors."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest
import torch
import zstandard

import golf_lit.io
from golf_lit.artifact.budget import ArtifactBudgetError, build_artifact, demotion_order
from golf_lit.artifact.code_bytes import CodeBytes, count_code_bytes
from golf_lit.artifact.container import serialize
from golf_lit.artifact.errors import ArtifactError
from golf_lit.artifact.quantize import QuantConfig, quantize_state_dict
from golf_lit.artifact.records import load_artifact_state_dict, load_record_checkpoint, read_artifact
from golf_lit.artifact.save import over_budget_path, write_artifact
from golf_lit.artifact.save import save_artifact as export_artifact
from golf_lit.model.gpt import GPT
from tests.conftest import tiny_config


def _layered_state_dict(num_layers: int = 11) -> dict[str, torch.Tensor]:
    """One int6 matrix (300x256 > 65,536 elements) and one small tensor per block."""
    g = torch.Generator().manual_seed(0)
    sd = {"tok_emb.weight": torch.randn(300, 256, generator=g)}
    for i in range(num_layers):
        sd[f"blocks.{i}.attn_scale"] = torch.ones(8)
        sd[f"blocks.{i}.mlp.fc.weight"] = torch.randn(300, 256, generator=g) * 2
    return sd


def _int5_layers_of(raw: bytes) -> tuple[int, ...]:
    m = torch.load(io.BytesIO(raw), weights_only=True)["m"]
    return tuple(sorted(int(n.split(".")[1]) for n, v in m.items() if v == {"type": "int5"}))


def _seed_style_blob(obj: object, level: int = 22) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return zstandard.ZstdCompressor(level=level).compress(buf.getvalue())


# ----------------------------------------------------------------------------------------- budget search


@pytest.mark.parametrize(
    ("n", "order"),
    [(11, [5, 6, 4, 7, 3, 8, 2, 9, 1, 10, 0]), (4, [2, 3, 1, 0]), (2, [1, 0]), (1, [0]), (0, [])],
)
def test_demotion_order(n: int, order: list[int]) -> None:
    assert demotion_order(n) == order


def test_level_and_demotion_order_with_a_fake_compressor() -> None:
    # The fake makes blobs that fit only once three layers are int5 and the level is 17.
    calls: list[tuple[int, tuple[int, ...]]] = []

    def fake(raw: bytes, level: int) -> bytes:
        int5 = _int5_layers_of(raw)
        calls.append((level, int5))
        return b"x" * (900 if len(int5) >= 3 and level == 17 else 1100)

    cfg = QuantConfig(artifact_limit_bytes=1_000 + 50)
    result = build_artifact(_layered_state_dict(), cfg, code_bytes=50, compressor=fake)
    demoted = [(), (5,), (5, 6), (5, 6, 4)]
    expected = [(level, int5) for int5 in demoted for level in (16, 1, 17, 2)][:-1]  # stops at (17, 5,6,4)
    assert calls == [(lv, tuple(sorted(d))) for lv, d in expected]
    assert [(s["level"], s["int5_layers"]) for s in result.sizes_tried] == [(lv, list(d)) for lv, d in expected]
    assert result.fits and result.level == 17 and result.int5_layers == (5, 6, 4)
    assert result.bytes_model == 900 and result.bytes_total == 950
    formats = {row["name"]: row["format"] for row in result.per_tensor}
    assert {n for n, f in formats.items() if f == "int5"} == {f"blocks.{i}.mlp.fc.weight" for i in (4, 5, 6)}
    assert formats["blocks.0.mlp.fc.weight"] == "int6" and formats["tok_emb.weight"] == "int8"
    assert formats["blocks.0.attn_scale"] == "fp16"


def test_first_level_that_fits_wins_without_demotion() -> None:
    calls: list[int] = []

    def fake(raw: bytes, level: int) -> bytes:
        calls.append(level)
        return b"x" * {3: 2000, 9: 1500, 5: 900}[level]

    cfg = QuantConfig(zstd_levels=[3, 9, 5], artifact_limit_bytes=1_000)
    result = build_artifact(_layered_state_dict(2), cfg, compressor=fake)
    assert calls == [3, 9, 5] and result.level == 5 and result.int5_layers == ()


def test_demotion_off_tries_only_the_levels() -> None:
    calls: list[tuple[int, tuple[int, ...]]] = []

    def fake(raw: bytes, level: int) -> bytes:
        calls.append((level, _int5_layers_of(raw)))
        return b"x" * 2_000

    cfg = QuantConfig(int5_demotion=False, artifact_limit_bytes=1_000)
    result = build_artifact(_layered_state_dict(3), cfg, compressor=fake)
    assert calls == [(16, ()), (1, ()), (17, ()), (2, ())] and not result.fits


def test_demoted_layers_hold_int5_codes() -> None:
    def fake(raw: bytes, level: int) -> bytes:
        return b"x" * (10 if len(_int5_layers_of(raw)) == 11 else 10**6)

    result = build_artifact(_layered_state_dict(), QuantConfig(artifact_limit_bytes=100), compressor=fake)
    assert result.fits and sorted(result.int5_layers) == list(range(11))
    w, m = quantize_state_dict(_layered_state_dict(), int5_layers=set(range(11)))
    assert w["blocks.3.mlp.fc.weight.q"].min() >= -16 and w["blocks.3.mlp.fc.weight.q"].max() == 15


# ---------------------------------------------------------------------------------------- size accounting


def test_size_accounting_adds_up(tmp_path: Path) -> None:
    code = tmp_path / "train_gpt.py"
    code.write_text("print('héllo')\n" * 100, encoding="utf-8")  # é is two UTF-8 bytes
    sd = _layered_state_dict(2)
    out = tmp_path / "final_model.int6.ptz"
    result = export_artifact(sd, out, QuantConfig(code_bytes=str(code)))
    assert result.code_bytes == 1600 == code.stat().st_size
    assert result.fits and out.stat().st_size == result.bytes_model == len(result.blob)
    assert result.bytes_total == out.stat().st_size + code.stat().st_size
    summary = result.summary()
    assert summary["bytes_total"] == summary["bytes_model"] + summary["bytes_code"]
    assert summary["sizes_tried"][-1]["bytes"] == summary["bytes_model"] and summary["zstd_level"] == 16
    assert read_artifact(out)[1]["blocks.1.mlp.fc.weight"] == {"type": "int6"}


def test_budget_boundary_is_inclusive() -> None:
    def fake(raw: bytes, level: int) -> bytes:
        return b"x" * 1_000

    assert build_artifact(_layered_state_dict(1), QuantConfig(artifact_limit_bytes=1_100), 100, fake).fits
    assert not build_artifact(_layered_state_dict(1), QuantConfig(artifact_limit_bytes=1_099), 100, fake).fits


def test_code_bytes_sources(tmp_path: Path) -> None:
    # one definition of counted code: the generated train_gpt.py, which export writes and measures
    # (tests/test_pack.py); here a number or a file is taken as given and 'auto' is refused by name
    with pytest.raises(ValueError, match="quant.code_bytes: 'auto' is the size of the train_gpt.py"):
        count_code_bytes("auto")
    script = tmp_path / "train_gpt.py"
    script.write_bytes(b"x" * 31_999)
    assert count_code_bytes(str(script)) == CodeBytes(31_999, f"file:{script}", ((str(script), 31_999),))
    assert count_code_bytes(88_901) == CodeBytes(88_901, "number")
    with pytest.raises(ValueError, match="quant.code_bytes.*nope.py"):
        count_code_bytes("nope.py")
    with pytest.raises(ValueError, match="quant.code_bytes"):
        count_code_bytes(-5)


# ----------------------------------------------------------------------------------------- atomic writes


def test_over_budget_blob_is_kept_under_its_own_name(tmp_path: Path) -> None:
    out = tmp_path / "final_model.int6.ptz"
    write_artifact(out, b"previous good artifact")
    cfg = QuantConfig(artifact_limit_bytes=1_000, zstd_levels=[1, 2])
    with pytest.raises(ArtifactBudgetError, match=r"sizes reached: zstd-1 int5=\[\]: [\d,]+; zstd-2") as err:
        export_artifact(_layered_state_dict(2), out, cfg, code_bytes=0)
    over = tmp_path / "final_model.int6.OVER_BUDGET.ptz"
    assert over_budget_path(out) == over == err.value.over_budget_path
    assert over.read_bytes() == err.value.result.blob and not err.value.result.fits
    assert len(err.value.result.sizes_tried) == 2 * 3  # two levels x (all int6, layer 1, layers 1+0)
    assert out.read_bytes() == b"previous good artifact"


def test_crash_during_write_leaves_the_previous_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "final_model.int6.ptz"
    first = export_artifact(_layered_state_dict(2), out, QuantConfig(zstd_levels=[1]), code_bytes=0)
    real_fdopen = os.fdopen

    class HalfWriter:
        """Writes half of what it is given, then fails like a full disk."""

        def __init__(self, f) -> None:
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            self.f.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(golf_lit.io.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    sd2 = {k: v * 3 for k, v in _layered_state_dict(2).items()}
    with pytest.raises(OSError, match="No space left"):
        export_artifact(sd2, out, QuantConfig(zstd_levels=[1]), code_bytes=0)
    monkeypatch.undo()
    assert out.read_bytes() == first.blob
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final_model.int6.ptz"]  # no temp file left behind
    w, _ = read_artifact(out)
    assert "blocks.0.mlp.fc.weight.q" in w


def test_container_is_byte_identical_to_the_seed_format() -> None:
    """zstd-16 of torch.save({"w": w, "m": m}) with the compressor's defaults: the seed's container, byte for byte."""
    sd = _layered_state_dict(2)
    sd["blocks.0.attn.vr_lambda"] = torch.tensor([0.5, 0.5])  # a seed-only tensor goes through the same path
    result = build_artifact(sd, QuantConfig(zstd_levels=[16]), 0)
    w, m = quantize_state_dict(sd)
    assert result.blob == _seed_style_blob({"w": w, "m": m}, level=16)
    assert m["blocks.0.attn.vr_lambda"] == "passthrough" and w["blocks.0.attn.vr_lambda"].dtype == torch.float16


def test_build_is_deterministic() -> None:
    sd = _layered_state_dict(2)
    cfg = QuantConfig(zstd_levels=[3])
    assert build_artifact(sd, cfg).blob == build_artifact(sd, cfg).blob


# ------------------------------------------------------------------------------------ loading and roundtrip

_BIG = dict(model_dim=128, mlp_mult=5.0, num_heads=4, num_kv_heads=2)  # mlp matrices 640x128 -> int6


def test_export_roundtrip_into_a_fresh_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = GPT(tiny_config(**_BIG))
    out = tmp_path / "final_model.int6.ptz"
    export_artifact(model.state_dict(), out, QuantConfig(zstd_levels=[1]), code_bytes=0)
    fresh = GPT(tiny_config(**_BIG))
    fresh.load_state_dict(load_artifact_state_dict(out, fresh.state_dict()), strict=True)
    ids = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids), model(ids), atol=0.05, rtol=0.05)
    q_scale = read_artifact(out)[0]["blocks.1.mlp.fc.weight.scale"].float()[:, None]
    err = (fresh.state_dict()["blocks.1.mlp.fc.weight"] - model.state_dict()["blocks.1.mlp.fc.weight"]).abs()
    assert torch.all(err <= q_scale / 2 + 1e-6)


def _seed_format_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A record-style artifact written by hand from the format description (docs/record-stack.md §9.3), without
    golf-lit's writer."""
    torch.manual_seed(1)
    template = GPT(tiny_config(**_BIG)).state_dict()
    w: dict[str, torch.Tensor] = {}
    m: dict[str, object] = {}
    expected: dict[str, torch.Tensor] = {}
    for name, t in template.items():
        if name == "blocks.0.mlp.fc.weight":  # one hand-made int6 matrix: codes in [-32, 31], fp16 row scales
            q = torch.randint(-32, 32, t.shape, dtype=torch.int8)
            scale = (torch.rand(t.shape[0]) * 0.1 + 0.01).half()
            w[name + ".q"], w[name + ".scale"], m[name] = q, scale, {"type": "int6"}
            expected[name] = q.float() * scale.float()[:, None]
        else:
            w[name], m[name] = t.half(), "passthrough"
            expected[name] = t.half().float()
    w["blocks.0.attn.vr_lambda"] = torch.tensor([0.5, 0.5]).half()  # the seed's unused layer-0 lambdas
    m["blocks.0.attn.vr_lambda"] = "passthrough"
    path = tmp_path / "final_model.int6.ptz"
    path.write_bytes(_seed_style_blob({"w": w, "m": m}))
    return path, template, expected


def test_seed_format_artifact_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, template, expected = _seed_format_file(tmp_path)
    with caplog.at_level(logging.INFO, logger="golf_lit.artifact.records"):
        sd = load_record_checkpoint(path, template)
    assert "dropped blocks.0.attn.vr_lambda" in caplog.text
    model = GPT(tiny_config(**_BIG))
    model.load_state_dict(sd, strict=True)
    for name, t in expected.items():
        torch.testing.assert_close(model.state_dict()[name], t, rtol=0, atol=0)
    with pytest.raises(ArtifactError, match="unexpected tensor 'blocks.0.attn.vr_lambda'"):
        load_artifact_state_dict(path, template)  # our own artifacts never carry it


def test_record_state_dict_checkpoint_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(2)
    model = GPT(tiny_config())
    sd = dict(model.state_dict())
    sd["blocks.0.attn.vr_lambda"] = torch.tensor([0.5, 0.5])
    path = tmp_path / "final_model.pt"
    torch.save(sd, path)
    with caplog.at_level(logging.INFO, logger="golf_lit.artifact.records"):
        loaded = load_record_checkpoint(path, model.state_dict())
    assert "dropped blocks.0.attn.vr_lambda" in caplog.text
    fresh = GPT(tiny_config())
    fresh.load_state_dict(loaded, strict=True)
    for name, t in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], t)


def test_record_checkpoint_errors_name_file_and_tensor(tmp_path: Path) -> None:
    template = GPT(tiny_config()).state_dict()
    bad_shape = dict(template)
    bad_shape["tok_emb.weight"] = torch.zeros(65, 32)
    torch.save(bad_shape, tmp_path / "shape.pt")
    with pytest.raises(ArtifactError, match=r"shape.pt: tensor 'tok_emb.weight' has shape \(65, 32\).*\(64, 32\)"):
        load_record_checkpoint(tmp_path / "shape.pt", template)
    missing = {k: v for k, v in template.items() if k != "smear.gate"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ArtifactError, match="missing.pt: tensor 'smear.gate' is missing"):
        load_record_checkpoint(tmp_path / "missing.pt", template)
    torch.save({**template, "mtp_heads.0.weight": torch.zeros(2)}, tmp_path / "extra.pt")
    with pytest.raises(ArtifactError, match="extra.pt: unexpected tensor 'mtp_heads.0.weight'"):
        load_record_checkpoint(tmp_path / "extra.pt", template)
    torch.save({"state_dict": template, "epoch": 3}, tmp_path / "lightning.ckpt")
    with pytest.raises(ArtifactError, match="lightning.ckpt: expected a state dict .* 'state_dict' is a OrderedDict"):
        load_record_checkpoint(tmp_path / "lightning.ckpt", template)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ArtifactError, match="text.pt: neither a zstd artifact nor a torch.save checkpoint"):
        load_record_checkpoint(tmp_path / "text.pt", template)


# --------------------------------------------------------------------------------------------- bad files


@pytest.fixture
def good_blob() -> bytes:
    return build_artifact(_layered_state_dict(2), QuantConfig(zstd_levels=[1])).blob


def test_truncated_artifact(tmp_path: Path, good_blob: bytes) -> None:
    path = tmp_path / "cut.ptz"
    path.write_bytes(good_blob[: len(good_blob) // 2])
    with pytest.raises(ArtifactError, match=rf"cut.ptz: truncated zstd frame.*byte offset {len(good_blob) // 2}"):
        read_artifact(path)


def test_corrupt_artifact(tmp_path: Path, good_blob: bytes) -> None:
    data = bytearray(good_blob)
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    path = tmp_path / "bad.ptz"
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"bad.ptz: corrupt zstd data between byte offsets \d+ and \d+"):
        read_artifact(path)


def test_trailing_bytes_after_the_frame(tmp_path: Path, good_blob: bytes) -> None:
    path = tmp_path / "tail.ptz"
    path.write_bytes(good_blob + b"junk")
    with pytest.raises(ArtifactError, match=rf"tail.ptz: 4 unexpected bytes .* byte offset {len(good_blob)}"):
        read_artifact(path)


def test_not_zstd_and_empty_and_missing(tmp_path: Path) -> None:
    (tmp_path / "a.ptz").write_bytes(b"hello world")
    with pytest.raises(ArtifactError, match="a.ptz: not a zstd artifact .*byte offset 0"):
        read_artifact(tmp_path / "a.ptz")
    (tmp_path / "empty.ptz").write_bytes(b"")
    with pytest.raises(ArtifactError, match="empty.ptz: empty file"):
        read_artifact(tmp_path / "empty.ptz")
    with pytest.raises(ArtifactError, match="nothere.ptz: artifact file not found"):
        read_artifact(tmp_path / "nothere.ptz")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2, 3], "wrong container: expected a dict with keys 'w' and 'm', found list"),
        ({"w": {}, "x": {}}, r"wrong container: expected a dict with keys 'w' and 'm', found \['w', 'x'\]"),
        ({"w": [], "m": {}}, "wrong container: 'w' and 'm' must be dicts"),
        ({"w": {"a": 3}, "m": {}}, "wrong container: entry 'a' of 'w' is a int, not a tensor"),
    ],
)
def test_wrong_container(tmp_path: Path, payload: object, message: str) -> None:
    path = tmp_path / "wrong.ptz"
    path.write_bytes(_seed_style_blob(payload))
    with pytest.raises(ArtifactError, match=f"wrong.ptz: {message}"):
        read_artifact(path)


def test_zstd_of_something_else(tmp_path: Path) -> None:
    path = tmp_path / "junk.ptz"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"definitely not a zip archive"))
    with pytest.raises(ArtifactError, match="junk.ptz: decompressed payload is not a readable torch.save archive"):
        read_artifact(path)


def test_missing_scale_and_wrong_shape_name_file_and_tensor(tmp_path: Path) -> None:
    torch.manual_seed(3)
    sd = GPT(tiny_config(**_BIG)).state_dict()
    w, m = quantize_state_dict(sd)
    del w["blocks.1.mlp.proj.weight.scale"]
    path = tmp_path / "noscale.ptz"
    path.write_bytes(zstandard.ZstdCompressor().compress(serialize(w, m)))
    with pytest.raises(ArtifactError, match="noscale.ptz: tensor 'blocks.1.mlp.proj.weight'.*scale' is missing"):
        load_artifact_state_dict(path, sd)
    good = tmp_path / "good.ptz"
    export_artifact(sd, good, QuantConfig(zstd_levels=[1]), code_bytes=0)
    other = GPT(tiny_config(**{**_BIG, "mlp_mult": 4.0})).state_dict()  # the config says a narrower MLP
    with pytest.raises(ArtifactError, match=r"good.ptz: tensor 'blocks.0.mlp.fc.weight': stored shape \(640, 128\)"):
        load_artifact_state_dict(good, other)


def test_frame_without_content_size_loads(tmp_path: Path) -> None:
    sd = _layered_state_dict(1)
    w, m = quantize_state_dict(sd)
    cobj = zstandard.ZstdCompressor(level=3).compressobj()  # streaming: no content size in the frame header
    path = tmp_path / "stream.ptz"
    path.write_bytes(cobj.compress(serialize(w, m)) + cobj.flush())
    w2, m2 = read_artifact(path)
    assert m2 == m and all(torch.equal(w2[k], w[k]) for k in w)
