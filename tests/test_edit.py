"""Zero-shot editing: the hook keeps encoded tokens outside the mask, torch and ONNX Runtime
edit token for token, the outside survives, and bad input fails in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import sasq.models as M
from sasq.engines.backends import make_backend
from sasq.engines.config import EditConfig, EditTask, TokenRule
from sasq.engines.decode import generate
from sasq.engines.edit import EditHook, edit, masked_psnr, outpaint_canvas, token_masks
from sasq.engines.torch_backend import TorchBackend
from sasq.errors import UserError
from sasq.tools.cli import main
from sasq.tools.quality.digits import load_split, to_uint8
from sasq.tools.quality.edit_quality import EditQualityConfig, edit_quality
from sasq.tools.quality.scores import default_classifier

PNS = (1, 2, 3, 4)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Ops this small run 5-10x slower with two threads on a busy 2-core machine."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def model() -> M.LoadedModel:
    return M.load_model()


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_split(16).test_x[:8]


def _right_half() -> torch.Tensor:
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8:] = 1
    return mask


def _edit(model, backend, x, mask, task=EditTask.INPAINT, **kw):
    return edit(model.cfg, model.vqvae, backend, x, mask, EditConfig(task, **kw))


def test_token_masks_any_and_most():
    quarter = torch.zeros(1, 1, 16, 16)
    quarter[..., 12:] = 1  # the rightmost four columns
    counts = {r: [int(t.sum()) for t in token_masks(quarter, PNS, r)] for r in TokenRule}
    assert counts[TokenRule.ANY] == [1, 2, 3, 4]
    assert counts[TokenRule.MOST] == [0, 2, 3, 4]  # the 1x1 token is only a quarter masked
    pixel = torch.zeros(1, 1, 16, 16)
    pixel[..., 0, 0] = 1
    assert [int(t.sum()) for t in token_masks(pixel, PNS, TokenRule.ANY)] == [1, 1, 1, 1]
    assert [int(t.sum()) for t in token_masks(pixel, PNS, TokenRule.MOST)] == [0, 0, 0, 0]


def test_reencoding_hook_with_nothing_inside_reproduces_the_encoding(model, digits):
    q = model.vqvae.quantize
    with torch.no_grad():
        f = model.vqvae.quant_conv(model.vqvae.encoder(digits))
    inside = [torch.zeros(8, pn * pn, dtype=torch.bool) for pn in PNS]
    hook = EditHook(inside, quantizer=q, f_BChw=f)
    gen = generate(TorchBackend(model), torch.zeros(8), PNS, model.cfg.sampling, 0, 10, hook=hook)
    for got, used, want in zip(gen.idx, hook.used, q.f_to_idx_Bl(f), strict=True):
        assert torch.equal(got, want) and torch.equal(used, want)


@pytest.mark.parametrize("reencode", [True, False])
def test_tokens_outside_the_mask_are_the_encoded_ones_at_every_scale(model, digits, reencode):
    res = _edit(model, TorchBackend(model), digits, _right_half(), n=2, reencode=reencode)
    assert torch.equal(res.enc_idx[0], res.ref_idx[0])  # nothing edited before scale 0
    changed = 0
    for si in range(len(PNS)):
        out = ~res.inside[si]
        assert torch.equal(res.idx[si][out], res.ref_idx[si][out])
        if not reencode:
            assert torch.equal(res.ref_idx[si], res.enc_idx[si])
        changed += int((res.idx[si] != res.enc_idx[si])[res.inside[si]].sum())
    assert changed > 0  # the inside was really sampled
    assert res.img.shape == (16, 1, 16, 16) and len(res.labels) == 16


def test_psnr_outside_the_edited_region_stays_high(model, digits):
    res = _edit(model, TorchBackend(model), digits, _right_half(), seed=1)
    keep = res.mask == 0
    outside = masked_psnr(res.img, res.recon, keep)
    inside = masked_psnr(res.img, res.recon, ~keep)
    # 21.0 dB over 100 held-out digits (edit_quality); the VQ reconstruction itself is 28.8.
    assert outside >= 18.0, outside
    assert inside < outside - 4.0  # while the right half was regenerated


@pytest.mark.parametrize("task,cls", [(EditTask.INPAINT, None), (EditTask.CLASS_EDIT, 3)])
def test_torch_and_ort_edit_token_for_token(model, digits, default_export, task, cls):
    mask = _right_half() if task == EditTask.INPAINT else None
    kw = dict(task=task, cls=cls, seed=5, n=2)
    ref = _edit(model, TorchBackend(model), digits, mask, **kw)
    got = _edit(model, make_backend("ort", model, default_export, threads=1), digits, mask, **kw)
    for a, b in zip(ref.idx, got.idx, strict=True):
        assert torch.equal(a, b)
    assert (ref.img - got.img).abs().max().item() < 1e-4


def test_outpaint_centres_a_small_input_and_shrinks_a_full_one(model, digits):
    canvas, mask = outpaint_canvas(digits[:2, :, :8, :8], 16, 0.5, -1.0)
    assert torch.equal(canvas[..., 4:12, 4:12], digits[:2, :, :8, :8])
    assert float(canvas[..., :4, :].max()) == -1.0 and int(mask.sum()) == 2 * (256 - 64)
    res = _edit(model, TorchBackend(model), digits[:2], None, task=EditTask.OUTPAINT)
    assert int(res.mask[0].sum()) == 256 - 64  # 16x16 shrunk to 8x8 in the centre
    assert [int(t[0].sum()) for t in res.inside] == [1, 4, 8, 12]


def test_edit_quality_torch_vs_ort(model, default_export):
    backends = {
        "torch": TorchBackend(model),
        "ort": make_backend("ort", model, default_export, threads=1),
    }
    q = edit_quality(model, backends, default_classifier(), EditQualityConfig(n_images=20))
    assert q["torch"]["class_edit_full_accuracy"] >= 0.8
    assert q["torch"]["inpaint_psnr_outside_db"] >= 18.0
    assert q["ort"]["token_agreement"] == [1.0] * len(PNS)
    assert q["ort"]["fid2fp"] <= 1e-3


# ----- CLI -----


def _png(path, arr):
    Image.fromarray(arr).save(path)  # uint8: L or RGB; uint16: I;16
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits):
    d = tmp_path_factory.mktemp("edit_files")
    u8 = to_uint8(digits[:1])[0]
    half = np.zeros((16, 16), np.uint8)
    half[:, 8:] = 255
    grey = half.copy()
    grey[0, 0] = 128
    (d / "junk.png").write_bytes(b"not a png")
    return {
        "img": _png(d / "img.png", u8),
        "rgb": _png(d / "rgb.png", np.stack([u8] * 3, -1)),
        "small": _png(d / "small.png", u8[:8, :8]),
        "big": _png(d / "big.png", np.zeros((20, 20), np.uint8)),
        "i16": _png(d / "i16.png", u8.astype(np.uint16) * 256),
        "mask": _png(d / "mask.png", half),
        "grey_mask": _png(d / "grey.png", grey),
        "small_mask": _png(d / "small_mask.png", half[:8, :8]),
        "small_half": _png(d / "small_half.png", half[::2, ::2]),
        "empty_mask": _png(d / "empty.png", np.zeros((16, 16), np.uint8)),
        "junk": str(d / "junk.png"),
        "missing": str(d / "missing.png"),
        "folder": str(d),
        "flat_grey_mask": _png(d / "flat_grey.png", np.full((16, 16), 128, np.uint8)),
    }


@pytest.mark.parametrize(
    "task,image,extra",
    [
        ("inpaint", "img", ["--mask", "mask"]),
        ("class-edit", "rgb", ["--class", "3"]),  # colour is converted to grey
        ("outpaint", "small", []),
    ],
)
def test_cli_edit_writes_the_sheet(files, tmp_path, capsys, task, image, extra):
    extra = [files.get(a, a) for a in extra]
    out = tmp_path / "e.png"
    argv = ["edit", "--task", task, "--image", files[image], "--n", "2", "--out", str(out)]
    assert main([*argv, *extra]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["task"] == task and info["sampled_tokens"][0] == 1
    assert Image.open(out).size[0] > 4 * 16 * 4  # input | mask | 2 results, 4x upscaled


@pytest.mark.parametrize(
    "args,needle",
    [
        (["inpaint", "img", "--mask", "small_mask"], "mask is 8x8; give it the image's size"),
        (["inpaint", "big", "--mask", "small_mask"], "or the model's (16x16)"),
        (["inpaint", "img", "--mask", "grey_mask"], "mask must be binary"),
        (["inpaint", "img", "--mask", "empty_mask"], "mask is empty"),
        (["inpaint", "img", "--mask", "missing"], "no such image file"),
        (["inpaint", "img"], "inpaint needs --mask"),
        (["inpaint", "i16", "--mask", "mask"], "image mode I;16 is not supported"),
        (["inpaint", "junk", "--mask", "mask"], "cannot be read as an image"),
        (["inpaint", "missing", "--mask", "mask"], "no such image file"),
        (["inpaint", "folder", "--mask", "mask"], ": is a folder, not an image file"),
        (["inpaint", "img", "--mask", "folder"], ": is a folder, not an image file"),
        (["inpaint", "img", "--mask", "flat_grey_mask"], "found 1 grey level (128)"),
        (["inpaint", "img", "--mask", "grey_mask"], "found 3 grey levels (0, 128, 255)"),
        (["inpaint", "img/", "--mask", "mask"], "a file is used as a folder in this path"),
        (["class-edit", "img", "--class", "10"], "unknown class 10"),
        (["class-edit", "img"], "class-edit needs --class"),
        (["outpaint", "img", "--mask", "mask"], "outpaint makes its own mask"),
        (["inpaint", "img", "--mask", "mask", "--n", "0"], "argument --n: must be at least 1"),
        (["inpaint", "img", "--mask", "mask", "--backend", "ort"], "needs --onnx DIR"),
    ],
)
def test_cli_edit_bad_input_is_one_line(files, tmp_path, capsys, args, needle):
    task, image, *rest = args
    image = files[image.rstrip("/")] + image[len(image.rstrip("/")) :]
    argv = ["edit", "--task", task, "--image", image, "--out", str(tmp_path / "o.png")]
    assert main([*argv, *[files.get(a, a) for a in rest]]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    "image,mask,said",
    [
        ("small", "small_half", ["resized 8x8 -> 16x16", "mask resized 8x8 -> 16x16 (nearest)"]),
        ("small", "mask", ["resized 8x8 -> 16x16"]),  # a mask at the model's size is kept
        ("img", "mask", []),
    ],
)
def test_cli_edit_resizes_any_image_and_says_so(files, tmp_path, capsys, image, mask, said):
    out = tmp_path / "e.png"
    argv = ["edit", "--task", "inpaint", "--image", files[image], "--mask", files[mask]]
    assert main([*argv, "--n", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["sampled_tokens"][0] == 1
    notes = [line for line in printed.err.splitlines() if "resized" in line]
    assert len(notes) == len(said) and all(s in n for s, n in zip(said, notes, strict=True))
    assert printed.err.strip().splitlines()[-1] == f"sasq edit: wrote {out}"


def test_generate_out_dir_feeds_edit(tmp_path, capsys):
    """generate --out-dir writes one PNG per image at 16x16 (and x4 copies); edit takes the
    enlarged copy, shrinks it back exactly and says so."""
    d = tmp_path / "imgs"
    argv = ["generate", "--n", "3", "--class", "7", "--out-dir", str(d), "--scale", "4"]
    assert main(argv) == 0
    capsys.readouterr()
    names = sorted(p.name for p in d.iterdir())
    assert names == [f"000{i}_class7{s}.png" for i in range(3) for s in ("", "_x4")]
    small, big = Image.open(d / "0001_class7.png"), Image.open(d / "0001_class7_x4.png")
    assert small.size == (16, 16) and small.mode == "L" and big.size == (64, 64)
    from sasq.models import load_model
    from sasq.tools.apps.edit_files import load_image, load_inputs

    cfg = load_model().cfg
    image, _, notes = load_inputs(d / "0001_class7_x4.png", None, cfg, "class-edit")
    assert notes == ["resized 64x64 -> 16x16 (the model's size)"]
    assert torch.equal(image, load_image(d / "0001_class7.png", 1))  # exactly the original
    out = tmp_path / "e.png"
    argv = [
        "edit",
        "--task",
        "class-edit",
        "--class",
        "3",
        "--image",
        str(d / "0001_class7_x4.png"),
    ]
    assert main([*argv, "--n", "1", "--out", str(out)]) == 0
    assert "sasq edit: resized 64x64 -> 16x16" in capsys.readouterr().err
    assert main(["generate", "--n", "1", "--scale", "2", "--out", str(tmp_path / "g.png")]) == 2
    assert main(["generate", "--n", "1"]) == 2
    assert "nothing to write" in capsys.readouterr().err


def _rgba(path, rgb_HW3, alpha_HW):
    Image.fromarray(np.dstack([rgb_HW3, alpha_HW]).astype(np.uint8), "RGBA").save(path)
    return str(path)


def test_mask_with_alpha_reads_transparent_as_keep(files, tmp_path, capsys):
    """A mask painted on a transparent layer (white everywhere, opaque on the right half)
    regenerates the right half, as the black-and-white mask does: its alpha was dropped and
    it regenerated everything. An opaque black-and-white RGBA mask reads as it looks; a
    half-transparent pixel is a grey level, refused."""
    from sasq.tools.apps.edit_files import load_mask

    half = load_mask(files["mask"])
    assert int(half.sum()) == 16 * 8
    white = np.full((16, 16, 3), 255)
    alpha = np.zeros((16, 16))
    alpha[:, 8:] = 255
    layer = _rgba(tmp_path / "layer.png", white, alpha)
    bw = np.zeros((16, 16, 3))
    bw[:, 8:] = 255
    opaque = _rgba(tmp_path / "opaque.png", bw, np.full((16, 16), 255))
    la = np.dstack([np.full((16, 16), 255), alpha]).astype(np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    for path in (layer, opaque, str(tmp_path / "la.png")):
        assert torch.equal(load_mask(path), half), path
    alpha[0, 0] = 128
    with pytest.raises(UserError, match=r"found 3 grey levels \(0, 128, 255\)"):
        load_mask(_rgba(tmp_path / "soft.png", white, alpha))

    out = tmp_path / "e.png"
    argv = ["edit", "--task", "inpaint", "--image", files["img"], "--n", "1", "--out", str(out)]
    assert main([*argv, "--mask", layer]) == 0
    assert json.loads(capsys.readouterr().out)["sampled_tokens"] == [1, 2, 6, 8]  # right half


@pytest.mark.parametrize(
    "side,note",
    [
        ((40, 30), "resized 40x30 -> 8x8 (outpaint scale 0.5), aspect ratio not kept; "
                   "placed at x=4, y=4 (top left), centred on the 16x16 canvas"),
        ((16, 16), "shrunk 16x16 -> 8x8 (outpaint scale 0.5); placed at x=4, y=4 (top left), "
                   "centred on the 16x16 canvas"),
        ((10, 6), "kept at 10x6; placed at x=3, y=5 (top left), centred on the 16x16 canvas"),
    ],
)  # fmt: skip
def test_outpaint_says_where_and_at_what_size_it_places_the_input(
    model, tmp_path, capsys, side, note
):
    """The note is what the edit does: the kept (unmasked) pixels are exactly the box it
    names. A 640x480 photo was reported 'resized 640x480 -> 16x16' and placed at 8x8."""
    from sasq.tools.apps.edit_files import load_inputs

    w, h = side
    path = _png(tmp_path / "in.png", np.full((h, w), 200, np.uint8))
    image, mask, notes = load_inputs(path, None, model.cfg, "outpaint")
    assert mask is None and notes == [note]
    res = _edit(model, TorchBackend(model), image, None, task=EditTask.OUTPAINT)
    pw, ph = (w, h) if side == (10, 6) else (8, 8)
    x0, y0 = (16 - pw) // 2, (16 - ph) // 2
    kept = res.mask[0, 0] == 0
    box = torch.zeros(16, 16, dtype=torch.bool)
    box[y0 : y0 + ph, x0 : x0 + pw] = True
    assert torch.equal(kept, box)
    out = tmp_path / "e.png"
    assert main(["edit", "--task", "outpaint", "--image", path, "--n", "1", "--out", str(out)]) == 0
    assert f"sasq edit: {note}" in capsys.readouterr().err


def test_edit_help_says_what_each_task_and_the_mask_do(capsys):
    from sasq.tools.cli.entry import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["edit", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "masked / unmasked" not in text  # outpaint takes no mask
    assert "inpaint: regenerate the --mask's white pixels" in text
    assert "outpaint: centre the input on the canvas (one of the canvas' size or larger " in text
    assert "shrunk to half its side) and generate around it, no --mask" in text
    assert "white = regenerate, black or transparent = keep" in text
