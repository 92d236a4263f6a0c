import numpy as np
from PIL import Image

from ssrp.eval.figures import (
    BLANK,
    GRID_FRAME,
    IRRELEVANT,
    RELEVANT,
    GridCell,
    apply_view,
    cell_origin,
    draw_arcs,
    draw_relations,
    grid_size,
    retrieval_grid,
    view_canvas,
)


def _pixel(img: Image.Image, xy) -> np.ndarray:
    return np.asarray(img, np.int64)[int(round(xy[1])), int(round(xy[0]))]


def _triangle():
    # three 10x10 boxes; centres (25,25), (175,25), (100,125); objects 0 and 1 are the closest pair
    boxes = np.array([[20, 20, 30, 30], [170, 20, 180, 30], [95, 120, 105, 130]], np.float32)
    dist = np.array([[0, 1, 5], [1, 0, 9], [5, 9, 0]], np.float32)
    return boxes, dist


def test_relation_lines_are_drawn_between_centres_and_shaded_by_distance():
    boxes, dist = _triangle()
    canvas = Image.new("RGB", (200, 150), BLANK)
    img = draw_relations(canvas, boxes, dist)
    assert img.size == (200, 150)
    close = _pixel(img, (100, 25))  # midpoint of the 0-1 line (distance 1)
    middle = _pixel(img, (62.5, 75))  # midpoint of the 0-2 line (distance 5)
    far = _pixel(img, (137.5, 75))  # midpoint of the 1-2 line (distance 9)
    background = _pixel(img, (10, 140))
    assert tuple(background) == BLANK
    for p in (close, middle, far):
        assert p[0] > p[1] + 20  # reddish, not background
    # the closer the pair, the darker its line
    assert close.sum() < middle.sum() < far.sum()
    # the boxes are drawn too: the left edge of box 2
    assert tuple(_pixel(img, (95, 125))) != BLANK


def test_boxes_only_without_distances():
    boxes, _ = _triangle()
    img = draw_relations(Image.new("RGB", (200, 150), BLANK), boxes, None)
    assert tuple(_pixel(img, (100, 25))) == BLANK
    assert tuple(_pixel(img, (20, 25))) != BLANK


def _gradient(w=64, h=48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1))


def test_apply_view_redoes_only_the_image_level_flip():
    img = _gradient()
    a = np.asarray(img)
    np.testing.assert_array_equal(np.asarray(apply_view(img, "hflip")), a[:, ::-1])
    np.testing.assert_array_equal(np.asarray(apply_view(img, "hflip_rot180")), a[:, ::-1])  # RoI-level rotation
    for view in ("raw", "rot90", "roi_hflip", "jitter0"):  # RoI-level views: the boxes lie on the image as it is
        np.testing.assert_array_equal(np.asarray(apply_view(img, view)), a)
    assert apply_view(img, "roi_hflip") is img


def test_view_canvas_reads_the_coco_image_or_falls_back_to_blank(tmp_path):
    (tmp_path / "val2017").mkdir()
    _gradient().save(tmp_path / "val2017" / "000000000007.jpg", quality=95)
    flipped = view_canvas(64, 48, "hflip_rot90", "000000000007.jpg", str(tmp_path))
    assert flipped.size == (64, 48)
    ref = np.asarray(_gradient())[:, ::-1].astype(int)
    assert np.abs(np.asarray(flipped, int) - ref).mean() < 8  # JPEG noise only
    wrong_size = view_canvas(48, 64, "raw", "000000000007.jpg", str(tmp_path))
    assert wrong_size.getcolors() == [(48 * 64, BLANK)]  # the file is not this view's image
    blank = view_canvas(64, 48, "raw", "missing.jpg", str(tmp_path))
    assert blank.size == (64, 48) and blank.getcolors() == [(64 * 48, BLANK)]
    assert view_canvas(64, 48, "raw").getcolors() == [(64 * 48, BLANK)]


def _arc_png(path, pred, gold):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6, 3), dpi=80)
    ax = fig.add_axes((0, 0, 1, 1))
    draw_arcs(ax, ["a", "b", "c", "d", "e"], pred, gold)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return np.asarray(Image.open(path).convert("RGB"), np.int64)


def test_predicted_arcs_above_and_gold_arcs_below(tmp_path):
    gold = {(0, 1), (1, 2), (2, 3), (3, 4)}
    chain = _arc_png(tmp_path / "a.png", {(0, 1), (1, 2), (2, 3), (3, 4)}, gold)
    star = _arc_png(tmp_path / "b.png", {(0, 4), (1, 4), (2, 4), (3, 4)}, gold)
    none = _arc_png(tmp_path / "c.png", set(), set())
    assert chain.shape == (240, 480, 3)
    h = chain.shape[0] // 2
    diff = np.abs(chain - star).sum(-1) > 0
    assert diff[: h - 8].sum() > 100  # other predicted arcs: the upper half changes
    assert diff[h + 8 :].sum() == 0  # same gold tree: the lower half is identical
    # red arcs above, black arcs below
    upper, lower = chain[: h - 8], chain[h + 8 :]
    assert ((upper[..., 0] > 150) & (upper[..., 1] < 100)).sum() > 50
    assert (lower.sum(-1) < 150).sum() > 50
    assert (np.abs(chain - none).sum(-1) > 0)[h + 8 :].sum() > 50


def test_retrieval_grid_layout(tmp_path):
    thumb = (40, 30)
    red = Image.new("RGB", (80, 60), (255, 0, 0))
    blue = Image.new("RGB", (60, 80), (0, 0, 255))
    queries = [GridCell(red, "q1"), GridCell(blue, "q2")]
    results = {
        "Obj.": [[GridCell(blue, "x", True), GridCell(red, "y", False)]] * 2,
        "Obj.+Rel.": [[GridCell(red, "y", False), GridCell(blue, "x", True)]] * 2,
    }
    path = retrieval_grid(queries, results, str(tmp_path / "g.png"), thumb)
    img = Image.open(path).convert("RGB")
    assert img.size == grid_size(2, 2, 2, thumb)
    a = np.asarray(img, np.int64)

    def centre(row, col, method):
        x, y = cell_origin(row, col, method, thumb)
        return tuple(a[y + thumb[1] // 2, x + thumb[0] // 2])

    def frame(row, col, method):
        x, y = cell_origin(row, col, method, thumb)
        return tuple(a[y + thumb[1] // 2, x + GRID_FRAME // 2])

    assert centre(0, 0, 0) == (255, 0, 0) and centre(1, 0, 0) == (0, 0, 255)
    assert centre(0, 1, 1) == (0, 0, 255) and frame(0, 1, 1) == RELEVANT
    assert centre(1, 2, 1) == (255, 0, 0) and frame(1, 2, 1) == IRRELEVANT
    assert centre(0, 3, 2) == (255, 0, 0) and frame(0, 4, 2) == RELEVANT
