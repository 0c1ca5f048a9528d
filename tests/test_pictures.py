"""Pictures explain themselves: the TensorBoard triplet grid has anchor/positive/negative headers
and each row's distances, drawn into the image and written as text with the same numbers."""

from __future__ import annotations

import numpy as np
import torch

from trackemb.embedding.monitor import ListWriter
from trackemb.embedding.triplet_view import TILE_MIN_PX, log_triplet_views
from trackemb.pictures import labelled_grid, png_text, save_png, text_band


def _bright(region: np.ndarray) -> bool:
    return bool((region > 200).any())


def test_triplet_grid_has_column_headers_and_row_distances() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(12, 3, 32, 32, generator=gen) * 0.5  # dark tiles: any bright pixel is text
    emb = torch.nn.functional.normalize(torch.randn(12, 8, generator=gen), dim=1)
    a, p, n = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7]), torch.tensor([8, 9, 10, 11])
    writer = ListWriter()
    log_triplet_views(writer, images, emb, (a, p, n), margin=0.5, step=7, n_show=3)

    [(_, _, step, sheet)] = [r for r in writer.records if r[0] == "images"]
    assert step == 7 and sheet.shape[0] == 1 and sheet.shape[1] == 3
    [(_, _, _, text)] = [r for r in writer.records if r[0] == "text"]
    # Brute force: the three hardest rows by d(a,p) - d(a,n), with their distances.
    d_ap, d_an = 1 - (emb[a] * emb[p]).sum(1), 1 - (emb[a] * emb[n]).sum(1)
    order = (d_ap - d_an).argsort(descending=True)[:3]
    expected = [f"{i + 1}. d(a,p) {d_ap[r]:.3f}   d(a,n) {d_an[r]:.3f}" for i, r in enumerate(order.tolist())]
    assert text.splitlines() == expected

    img = (sheet[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    px = TILE_MIN_PX  # 32 px inputs are shown at 64 px
    header_h = text_band(px, ["anchor"], scale=0.35).shape[0]
    for col in range(3):  # a label over each column: anchor | positive | negative
        x = col * (px + 2)
        assert _bright(img[:header_h, x : x + px]), f"no header text over column {col}"
    row_h = 2 + px + header_h
    for row in range(3):  # each row's distances under it, never over the patches
        top = header_h + row * row_h + 2
        assert not _bright(img[top : top + px]), "text drawn over the patches"
        assert _bright(img[top + px : top + row_h]), f"no distance caption under row {row}"
    assert img.shape[0] == header_h + 3 * row_h


def test_png_captions_round_trip(tmp_path) -> None:
    tiles = [[np.zeros((16, 16, 3), np.uint8)] * 2]
    grid = labelled_grid(tiles, ["first", "last"], ["box.mp4 track 3"])
    path = save_png(tmp_path / "g.png", grid, {"Title": "pairs", "pair 1": "café.mp4 track 3"})
    assert png_text(path) == {"Title": "pairs", "pair 1": "café.mp4 track 3"}
    from PIL import Image

    with Image.open(path) as im:  # an independent PNG reader sees the same text chunks
        assert im.text == {"Title": "pairs", "pair 1": "café.mp4 track 3"} and im.size == grid.shape[1::-1]
