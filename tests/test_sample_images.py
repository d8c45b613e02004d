"""The pictures a user opens: verify.png (gantool.sample.comparison_image) says what each panel shows."""
from __future__ import annotations


def test_comparison_image_reference_row_says_what_it_is_and_panels_name_their_subset(tmp_path, checkpoint_path):
    """Issue 26.5: verify.png's reference row was an empty box, and each |diff| panel's max read like
    verify's max |err| although it covers 16 z only."""
    import matplotlib.pyplot as plt

    from gantool.runners import load_runner
    from gantool.sample import comparison_image

    titles, texts = [], []
    real_savefig = plt.Figure.savefig

    def spy(fig, *a, **k):
        for ax in fig.axes:
            titles.append(ax.get_title())
            texts.extend(t.get_text() for t in ax.texts)
        return real_savefig(fig, *a, **k)

    plt.Figure.savefig = spy
    try:
        ref = load_runner(checkpoint_path, "eager")
        comparison_image(ref, [("same", load_runner(checkpoint_path, "eager"))], tmp_path / "v.png", n=16)
    finally:
        plt.Figure.savefig = real_savefig
    assert (tmp_path / "v.png").stat().st_size > 0
    assert any(t.startswith("reference: each row below") for t in texts), texts
    assert "|diff| max on these 16 z: 0.0e+00" in titles, titles
