"""`vqkit export --format onnx`: the graphs run in onnxruntime give PyTorch's tokens exactly and its
decoded outputs within 1e-4, at two lengths (mels) or sizes (images); export.json states what the
graphs are; bad checkpoints and output folders are refused with one clear line."""
from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest
import torch

from cli_helpers import cli
from conftest import save_tiny_tokenizer
from vqkit.config import load_config
from vqkit.models.tokenizer import Tokenizer
from vqkit.quantizers import REGISTRY, Quantizer, build_quantizer

MISSING = [m for m in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(m) is None]
needs_onnx = pytest.mark.skipif(bool(MISSING), reason=f"ONNX export tests need {', '.join(MISSING)} "
                                                      "(pip install -e '.[export]'; make test installs it)")
pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py

RFSQ = ["model.quantizer={kind: rfsq, levels: [5, 5, 3], stages: 3}", "model.backbone.downsample=2"]
# SeQ-GAN's decoder (window attention, windows of 4 here: the token grids of the test sizes lie
# below, above and at multiples of it), multichannel VQ, and a distance chunk far below the
# positions, so PyTorch searches chunk by chunk while the graph searches every row at once
IMAGE = ["model.backbone.channels=[16, 32, 32]", "model.backbone.attention_window=4",
         "model.quantizer={kind: vq, codebook_size: 64, dim: 16, channels: 2, distance_chunk: 5}"]
KINDS = {"mel": (), "rfsq": RFSQ, "image": IMAGE}
IMAGE_SIZES = [(13, 9), (24, 20), (64, 48)]   # token grids (downsample 4): 4 x 3, 6 x 5, 16 x 12


def save_tiny(path, kind):
    if kind != "image":
        return save_tiny_tokenizer(path, *KINDS[kind])
    torch.manual_seed(0)
    Tokenizer(load_config("seqgan-phase2", overrides=IMAGE)).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, single_thread):
    """{kind: (tokenizer, export folder)}, each exported through the command line."""
    out = {}
    for kind in KINDS:
        root = tmp_path_factory.mktemp(f"export-{kind}")
        ckpt = save_tiny(root / "ckpt", kind)
        code = _main("export", ckpt, "--format", "onnx", "-o", root / "onnx")
        assert code == 0
        out[kind] = Tokenizer.from_pretrained(ckpt), root / "onnx"
    return out


def _main(*argv) -> int:
    from vqkit.cli import main

    return main([str(a) for a in argv])


def session(folder, graph):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(folder / f"{graph}.onnx"), opts, providers=["CPUExecutionProvider"])


@needs_onnx
@pytest.mark.parametrize("kind", ["mel", "rfsq", "image"])
def test_onnx_tokens_equal_pytorch_and_decoded_outputs_agree(exported, kind):
    tok, folder = exported[kind]
    enc, dec = session(folder, "encoder"), session(folder, "decoder")
    g = torch.Generator().manual_seed(1)
    sizes = IMAGE_SIZES if kind == "image" else [(37,), (203,)]   # no multiples of 4 / 2: padded in the graph
    for size in sizes:
        x = (torch.rand(2, 3, *size, generator=g) * 2 - 1 if kind == "image"
             else torch.randn(2, 80, *size, generator=g) * 2 - 5)
        ref = tok.encode(x)
        got = enc.run(None, {enc.get_inputs()[0].name: x.numpy()})[0]
        assert got.dtype == np.int64 and got.shape == tuple(ref.shape), (size, got.shape, tuple(ref.shape))
        np.testing.assert_array_equal(got, ref.numpy())
        outputs = dict(zip([o.name for o in dec.get_outputs()], dec.run(None, {"tokens": got})))
        signal = "image" if kind == "image" else "mel"
        np.testing.assert_allclose(outputs[signal], tok.decode(ref).numpy(), atol=1e-4, rtol=0)
        if tok.refiner is not None:
            np.testing.assert_allclose(outputs["draft"], tok.decode(ref, refined=False).numpy(), atol=1e-4, rtol=0)
            assert np.abs(outputs["draft"] - outputs[signal]).max() > 1e-3   # two different outputs
    if tok.stages:
        assert got.shape[-1] == tok.stages == 3
    if kind == "image":
        assert got.shape[-1] == tok.tokens_per_position == 2


@needs_onnx
def test_onnx_frontend_matches_the_mel_frontend_and_feeds_the_encoder(exported):
    """Noise (every bin well above float32 round-off): log-mel within 1e-4 and the same tokens."""
    tok, folder = exported["mel"]
    fe, enc = session(folder, "frontend"), session(folder, "encoder")
    g = torch.Generator().manual_seed(2)
    for samples in (4000, tok.config.model.mel.sample_rate + 77):
        audio = 0.1 * torch.randn(2, samples, generator=g)
        mel = fe.run(None, {"audio": audio.numpy()})[0]
        ref = tok.frontend(audio)
        assert mel.shape == tuple(ref.shape) == (2, 80, tok.frontend.num_frames(samples))
        np.testing.assert_allclose(mel, ref.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_array_equal(enc.run(None, {"mel": mel})[0], tok.encode(ref).numpy())


@needs_onnx
def test_onnx_frontend_on_a_pure_tone_agrees_to_float32_round_off(exported):
    """A 440 Hz tone: bins far below the peak hold little more than the FFT's float32 round-off
    (about 2e-7 of the peak, in PyTorch as in onnxruntime), which the log magnifies: there the two
    log-mels differ by up to a few 1e-2. Within 40 dB of each frame's peak they agree within 1e-4."""
    tok, folder = exported["mel"]
    sr = tok.config.model.mel.sample_rate
    t = torch.arange(sr // 2) / sr
    audio = (0.5 * torch.sin(2 * torch.pi * 440 * t))[None]
    mel = session(folder, "frontend").run(None, {"audio": audio.numpy()})[0]
    ref = tok.frontend(audio).numpy()
    peak = np.exp(ref).max()
    assert np.abs(np.exp(mel) - np.exp(ref)).max() < 1e-6 * peak
    loud = ref > ref.max(axis=1, keepdims=True) - np.log(100.0)   # within 40 dB of the frame's peak
    assert loud.sum() >= 5 * ref.shape[-1]   # several bins of every frame
    np.testing.assert_allclose(mel[loud], ref[loud], atol=1e-4, rtol=0)


@needs_onnx
@pytest.mark.parametrize("kind", ["mel", "rfsq", "image"])
def test_export_json_states_the_tokenizer_and_the_graphs_as_they_are(exported, kind):
    tok, folder = exported[kind]
    meta = json.loads((folder / "export.json").read_text())
    assert meta["format"] == "vqkit-onnx-v1" and meta["opset"] == 18
    assert meta["tokenizer_id"] == tok.tokenizer_id and meta["codebook_size"] == tok.codebook_size
    assert meta["downsample"] == tok.downsample and meta["tokens_per_position"] == tok.tokens_per_position
    assert meta.get("stages") == tok.stages
    assert load_config(path=folder / "config.yaml", saved=True).to_dict() == tok.config.to_dict()
    graphs = {"encoder", "decoder"} | ({"frontend"} if kind != "image" else set())
    assert set(meta["graphs"]) == graphs
    assert {p.name for p in folder.iterdir()} == {f"{g}.onnx" for g in graphs} | {"config.yaml", "export.json"}
    for name in graphs:
        spec, s = meta["graphs"][name], session(folder, name)
        for declared, actual in ((spec["inputs"], s.get_inputs()), (spec["outputs"], s.get_outputs())):
            assert [d["name"] for d in declared] == [a.name for a in actual], name
            for d, a in zip(declared, actual):   # same rank; the fixed sizes agree, the named ones are dynamic
                assert len(d["shape"]) == len(a.shape), (name, d, a.shape)
                assert [n for n in d["shape"] if isinstance(n, int)] == [n for n in a.shape if isinstance(n, int)]
    if kind == "image":
        assert meta["image"]["channels"] == 3 and "frontend" in meta and "mel" not in meta
    else:
        assert meta["mel"]["hop_length"] == tok.config.model.mel.hop_length
        assert meta["positions_per_second"] == pytest.approx(tok.tokens_per_second / tok.tokens_per_position)


# at least one case per registered kind (checked below): multichannel codebooks, several stages
TRACED = ["{kind: fsq, levels: [8, 5, 5, 5]}", "{kind: rfsq, levels: [4, 4, 3], stages: 3}",
          "{kind: rfsq, levels: [5, 3], stages: 1}",
          "{kind: vq, codebook_size: 50, dim: 8, channels: 3, distance_chunk: 7}",
          "{kind: vq, codebook_size: 50, dim: 8, codebook_dim: 4, l2_norm: true, distance_chunk: 7}",
          "{kind: simvq, codebook_size: 50, dim: 8, channels: 2, distance_chunk: 7}",
          "{kind: lfq, dim: 6}", "{kind: bsq, dim: 6}"]


def _quantizer_config(overrides: str):
    return load_config("mqgan-refiner", overrides=[f"model.quantizer={overrides}"]).model.quantizer


def test_every_registered_quantiser_kind_has_a_traced_case():
    assert {_quantizer_config(o).kind for o in TRACED} == set(REGISTRY)


@pytest.mark.parametrize("spatial", [(41,), (9, 11)])   # mels, images; many distance chunks of 7
@pytest.mark.parametrize("overrides", TRACED)
def test_traced_quantiser_methods_equal_indices_and_indices_to_codes(overrides, spatial):
    """What the graphs run (traced_indices / traced_codes) against indices / indices_to_codes, in PyTorch."""
    torch.manual_seed(0)
    q = build_quantizer(_quantizer_config(overrides)).eval()
    z = torch.randn(3, q.dim, *spatial) * 2
    ids = q.indices(z)
    torch.testing.assert_close(q.traced_indices(z), ids, rtol=0, atol=0)
    assert len(ids.unique()) > 5   # the ids vary: the comparison is not between constants
    random_ids = torch.randint(0, q.codebook_size, ids.shape)   # also id tuples no encoder makes
    for some in (ids, random_ids):
        torch.testing.assert_close(q.traced_codes(some), q.indices_to_codes(some), rtol=0, atol=0)


@pytest.mark.parametrize("overrides", TRACED)
def test_every_quantiser_refuses_ids_out_of_range_and_decodes_no_ids(overrides):
    """One range check (Quantizer.check_ids) for every kind: it names the range, and empty ids pass."""
    q = build_quantizer(_quantizer_config(overrides)).eval()
    ids = q.indices(torch.randn(1, q.dim, 6))
    for bad, shown in ((q.codebook_size, f"[0, {q.codebook_size}]"), (-1, "[-1, 0]")):
        wrong = ids.clone().zero_()
        wrong.view(-1)[-1] = bad
        with pytest.raises(ValueError, match=rf"token ids must be in \[0, {q.codebook_size}\), "
                                             rf"got range {re.escape(shown)}"):
            q.indices_to_codes(wrong)
    assert q.indices_to_codes(ids[:, :0]).shape == (1, q.dim, 0)


class _Call(torch.nn.Module):
    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, x):
        return self.method(x)


@pytest.mark.parametrize("overrides", TRACED)
def test_traced_quantiser_methods_trace_with_torch_export_at_any_length(overrides):
    """Also the kinds the ONNX tests above do not export: traced at 37 positions, run at 101."""
    torch.manual_seed(0)
    q = build_quantizer(_quantizer_config(overrides)).eval()
    length = torch.export.Dim("length", min=2, max=4096)
    z, z2 = torch.randn(2, q.dim, 37), torch.randn(2, q.dim, 101)
    encode = torch.export.export(_Call(q.traced_indices), (z,), dynamic_shapes=({2: length},), strict=False)
    decode = torch.export.export(_Call(q.traced_codes), (q.indices(z),), dynamic_shapes=({1: length},),
                                 strict=False)
    ids = q.indices(z2)
    assert torch.equal(encode.module()(z2), ids)
    assert torch.equal(decode.module()(ids), q.indices_to_codes(ids))


def test_a_quantiser_without_traced_methods_says_which_two_to_add():
    class Untraced(Quantizer):
        dim, codebook_size = 2, 4

    q = Untraced()
    expected = ("Untraced cannot be exported: it has no traceable id computation; "
                "add traced_indices(z) and traced_codes(indices) to it (see Quantizer)")
    with pytest.raises(NotImplementedError) as err:
        q.traced_indices(torch.zeros(1, 2, 3))
    assert str(err.value) == expected
    with pytest.raises(NotImplementedError) as err:
        q.traced_codes(torch.zeros(1, 3, dtype=torch.long))
    assert str(err.value) == expected


# ---- refused ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    return save_tiny_tokenizer(tmp_path_factory.mktemp("ckpt") / "mel")


def test_export_refuses_a_folder_that_is_no_checkpoint(tmp_path, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.txt").write_text("hello")
    code, _, err = cli(capsys, "export", foreign, "--format", "onnx", "-o", tmp_path / "out")
    assert code == 2
    assert f"{foreign}: not a vqkit checkpoint, no config.yaml or model.safetensors" in err
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_non_empty_output_folder_and_touches_nothing(small_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "encoder.onnx").write_bytes(b"old graph")
    code, _, err = cli(capsys, "export", small_ckpt, "-o", out)
    assert code == 2
    assert f"-o {out}: not empty (holds encoder.onnx); vqkit export writes into a new or empty folder" in err
    assert [p.name for p in out.iterdir()] == ["encoder.onnx"] and (out / "encoder.onnx").read_bytes() == b"old graph"


def test_export_refuses_an_output_inside_the_checkpoint_or_a_file(small_ckpt, tmp_path, capsys):
    code, _, err = cli(capsys, "export", small_ckpt, "-o", small_ckpt / "onnx")
    assert code == 2 and f"-o {small_ckpt / 'onnx'} is inside the checkpoint {small_ckpt}" in err
    assert not (small_ckpt / "onnx").exists()
    afile = tmp_path / "file"
    afile.write_text("x")
    code, _, err = cli(capsys, "export", small_ckpt, "-o", afile)
    assert code == 2 and f"-o {afile}: is a file, not a folder" in err


def test_a_failed_export_leaves_no_folder(small_ckpt, tmp_path, capsys, monkeypatch):
    """The encoder written, then the exporter fails: the folder it created goes again."""
    import vqkit.export.onnx as onnx_export

    def fake(module, example, path, inputs, outputs, dynamic):
        if path.name != "encoder.onnx":
            raise RuntimeError(f"{path.name}: the exporter failed")
        path.write_bytes(b"graph")

    monkeypatch.setattr(onnx_export, "_export", fake)
    code, _, err = cli(capsys, "export", small_ckpt, "-o", tmp_path / "new" / "out")
    assert code == 2 and "decoder.onnx: the exporter failed" in err
    assert not (tmp_path / "new" / "out").exists()


def test_export_without_the_onnx_packages_says_what_to_install(small_ckpt, tmp_path, capsys, monkeypatch):
    import vqkit.cli.export as verb

    real = importlib.util.find_spec
    monkeypatch.setattr(verb.importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    code, _, err = cli(capsys, "export", small_ckpt, "-o", tmp_path / "out")
    assert code == 2
    assert "--format onnx needs the Python package(s) onnxscript, which are not installed: " \
           "pip install 'vqkit[export]'" in err
    assert not (tmp_path / "out").exists()
