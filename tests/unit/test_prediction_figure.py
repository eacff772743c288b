"""The predictions figure, drawn from a predictions table as `xasflow predict` writes it."""

import csv

import matplotlib.image

from xasflow.inference.figures import number_targets, plot_predictions

COLUMNS = [
    "spectrum",
    "model",
    "predicted_coordination_number",
    "coordination_number_low_90",
    "coordination_number_high_90",
    "true_coordination_number",
    "predicted_partial_cn_Pt",
    "partial_cn_Pt_low_90",
    "partial_cn_Pt_high_90",
    "true_partial_cn_Pt",
    "out_of_distribution",
]


def _row(spectrum, model, cn, low, high, truth, outside):
    return dict(
        zip(COLUMNS, [spectrum, model, cn, low, high, truth, "4.0", "3.0", "5.0", "", outside], strict=True)
    )


def test_one_panel_per_number_target_with_unbounded_intervals_left_out(tmp_path):
    table = tmp_path / "predictions.csv"
    rows = [
        _row("foil.xdi", "cnn", "11.5", "10.0", "13.0", "", "false"),
        _row("foil.xdi", "mlp", "11.2", "-inf", "inf", "", "false"),
        _row("results/pseudo/np.dat", "cnn", "9.9", "8.0", "11.0", "9.5", "true"),
        _row("results/pseudo/np.dat", "mlp", "9.7", "-inf", "inf", "9.5", "true"),
    ]
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    assert number_targets(COLUMNS) == ["coordination_number", "partial_cn_Pt"]
    figure = tmp_path / "predictions.png"
    plot_predictions(table, figure)
    height, width, _ = matplotlib.image.imread(figure).shape
    assert width == 2 * 5.0 * 120  # two panels of 5 inches at 120 dpi
    assert 0 < height < width
