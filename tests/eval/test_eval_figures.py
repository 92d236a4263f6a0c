import numpy as np
import pytest
from PIL import Image, ImageDraw

from ssrp.eval.figures import (
    BLANK,
    GRID_FRAME,
    GRID_LEGEND,
    IRRELEVANT,
    PALETTE,
    RELEVANT,
    GridCell,
    TreeRow,
    ViewPanel,
    apply_view,
    cell_origin,
    draw_arcs,
    draw_relations,
    grid_size,
    place_labels,
    relation_edges,
    relation_figure,
    retrieval_grid,
    tree_figure,
    view_canvas,
    word_positions,
    word_widths,
)
from ssrp.eval.labels import ClassNames, shorten


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


def _arc_png(path, pred, gold, parser_above=False):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6, 3), dpi=80)
    ax = fig.add_axes((0, 0, 1, 1))
    draw_arcs(ax, ["a", "b", "c", "d", "e"], pred, gold, parser_above=parser_above)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return np.asarray(Image.open(path).convert("RGB"), np.int64)


@pytest.mark.parametrize("parser_above", [False, True])
def test_predicted_and_parser_arcs_each_keep_their_side(tmp_path, parser_above):
    gold = {(0, 1), (1, 2), (2, 3), (3, 4)}
    chain = _arc_png(tmp_path / "a.png", {(0, 1), (1, 2), (2, 3), (3, 4)}, gold, parser_above)
    star = _arc_png(tmp_path / "b.png", {(0, 4), (1, 4), (2, 4), (3, 4)}, gold, parser_above)
    none = _arc_png(tmp_path / "c.png", set(), set(), parser_above)
    assert chain.shape == (240, 480, 3)
    h = chain.shape[0] // 2
    upper, lower = slice(0, h - 8), slice(h + 8, None)
    pred_side, gold_side = (lower, upper) if parser_above else (upper, lower)
    diff = np.abs(chain - star).sum(-1) > 0
    assert diff[pred_side].sum() > 100  # other predicted arcs: their half changes
    assert diff[gold_side].sum() == 0  # same parser tree: its half is identical
    red, black = chain[pred_side], chain[gold_side]
    assert ((red[..., 0] > 150) & (red[..., 1] < 100)).sum() > 50
    assert (black.sum(-1) < 150).sum() > 50
    assert (np.abs(chain - none).sum(-1) > 0)[gold_side].sum() > 50


def test_words_are_set_by_their_length_and_never_meet():
    words = ["a", "refrigerat…", "is", "b", "extraordin…", "c"]
    x = word_positions(words, 9)
    w = word_widths(words, 9)
    for k in range(len(words) - 1):
        assert x[k] + w[k] / 2 < x[k + 1] - w[k + 1] / 2  # a gap between neighbours
    assert x[2] - x[1] > x[3] - x[2]  # a long word takes more room


def test_tree_figure_shortens_long_words_and_has_a_legend(tmp_path):
    words = ("a", "supercalifragilistic", "dog", ".")
    row = TreeRow("raw", words, np.ones((4, 4)) - np.eye(4), {(0, 1), (1, 2), (2, 3)}, {(0, 2), (1, 2), (2, 3)})
    path = tree_figure([row, row], str(tmp_path / "t.png"), "title", max_chars=8)
    img = np.asarray(Image.open(path).convert("RGB"), np.int64)
    assert img.shape[0] > 500 and (np.abs(img - 255).sum(-1) > 0).sum() > 1000
    assert shorten("supercalifragilistic", 8) == "superca…" and shorten("dog", 8) == "dog"


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

    assert len(np.unique(a[-GRID_LEGEND:].reshape(-1, 3), axis=0)) > 3  # the legend under the grid
    legend = a[-GRID_LEGEND:]
    assert (legend == RELEVANT).all(-1).sum() > 20 and (legend == IRRELEVANT).all(-1).sum() > 20


# ------------------------------------------------------------------------------------------------
# Fig. 3: edges, labels, the grid of views


def test_relation_edges_mst_topk_all():
    d = np.array([[0, 1, 4, 5], [1, 0, 2, 6], [4, 2, 0, 3], [5, 6, 3, 0]], np.float64)
    assert relation_edges(d, "mst") == [(0, 1), (1, 2), (2, 3)]
    assert relation_edges(d, "topk", 2) == [(0, 1), (1, 2)]
    assert len(relation_edges(d, "all")) == 6


def test_mst_mode_draws_only_the_tree_edges():
    boxes, dist = _triangle()  # MST: 0-1 (1) and 0-2 (5); 1-2 (9) is left out
    img = draw_relations(Image.new("RGB", (200, 150), BLANK), boxes, dist, edges="mst", labels=["a", "b", "c"])
    assert _pixel(img, (100, 25))[0] > _pixel(img, (100, 25))[1] + 20  # the 0-1 line
    assert _pixel(img, (62.5, 75))[0] > _pixel(img, (62.5, 75))[1] + 20  # the 0-2 line
    assert tuple(_pixel(img, (137.5, 75))) == BLANK  # no 1-2 line


def test_labels_never_overlap_and_stay_inside_the_image():
    rng = np.random.default_rng(0)
    xy = rng.uniform(40, 120, (10, 2))  # ten boxes crowded into the middle of a 200x150 image
    boxes = np.concatenate([xy, xy + rng.uniform(10, 40, (10, 2))], 1)
    sizes = [(46, 14)] * 10
    spots = place_labels(boxes, sizes, (200, 150))
    rects = [(x, y, x + w, y + h) for (x, y), (w, h) in zip([s for s in spots if s], sizes, strict=False)]
    assert len(rects) >= 8  # almost all find room
    for i, a in enumerate(rects):
        assert 0 <= a[0] and a[2] <= 200 and 0 <= a[1] and a[3] <= 150
        for b in rects[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_drawn_labels_do_not_overlap_on_a_crowded_image():
    rng = np.random.default_rng(1)
    xy = rng.uniform(100, 300, (10, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 80, (10, 2))], 1)
    from ssrp.eval.figures import draw_labels, font

    draw = ImageDraw.Draw(Image.new("RGBA", (400, 400)))
    rects = [r for r in draw_labels(draw, boxes, [f"{k} refrigerator" for k in range(10)], (400, 400), font(16))
             if r is not None]
    assert len(rects) == 10  # crowded, yet every box keeps a label (its name or at least its number)
    for i, a in enumerate(rects):
        for b in rects[i + 1 :]:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)


def test_class_names_come_from_the_manifest_and_unknown_ids_stay_readable():
    names = ClassNames.from_manifest({"models": {"features": {"objects_vocab": ["dog", "cat"]}}})
    assert names.labels([1, 0, 7], limit=12) == ["cat", "dog", "#7"]
    assert ClassNames.from_manifest({}).object(3) == "#3"


def test_relation_figure_is_a_grid_of_views_in_reading_order(tmp_path):
    """14 views at 7 per row: two rows, each view's image above its heat-map, row-major order."""
    colours = [tuple(int(c) for c in np.random.default_rng(k).integers(30, 225, 3)) for k in range(14)]
    panels = [ViewPanel(f"v{k}", Image.new("RGB", (160, 120), colours[k]), np.eye(3)) for k in range(14)]
    a = np.asarray(Image.open(relation_figure(panels, str(tmp_path / "g.png"), "t", columns=7, dpi=60)).convert("RGB"),
                   np.int64)
    centres = []
    for colour in colours:
        ys, xs = np.nonzero(np.abs(a - np.array(colour)).sum(-1) == 0)
        assert len(ys) > 1000, colour  # each view's image is there
        centres.append((ys.mean(), xs.mean()))
    rows = [c[0] for c in centres]
    assert max(rows[:7]) - min(rows[:7]) < 5 and max(rows[7:]) - min(rows[7:]) < 5  # two rows
    assert rows[7] > rows[0] + 60
    assert all(centres[k][1] < centres[k + 1][1] for k in (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12))
    assert PALETTE[0] != PALETTE[1]
