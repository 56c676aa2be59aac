"""``iterseg flops --size HxW``: the cost table without an image."""
import pytest

from iterseg.cli import main


def test_flops_prints_the_cost_table(capsys):
    assert main(["flops", "--size", "2048x2048", "--patches", "16", "--model", "untrained"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2048 x 2048 image (H x W), model untrained, 16 patches (fvcore: 1 multiply-accumulate = "
                          "1 flop)")
    assert "ratio             7.81 %" in out  # 1/64 + 1/16
    assert "not counted by fvcore: aten::max_pool2d" in out
    # the default model's S2 also takes the stage-1 probability, and its baseline is stage 1 plus that
    # S2 over the whole image: (S1 + 16 windows) / (S1 + the whole image), all at 4 input channels;
    # with the paper's side (2048 / 16 = 128 px) 7.69 %, with the model's own 48 px windows 2.40 %
    # (context 0 told: the model's own is 16 px, measured on its validation images)
    plain = ["flops", "--size", "2048x2048", "--patches", "16", "--context", "0"]
    assert main(plain + ["--patch-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "model ph2, 16 patches" in out and "ratio             7.69 %" in out
    assert main(plain) == 0
    assert "ratio             2.40 %" in capsys.readouterr().out
    assert main(plain + ["--patch-size", "tied"]) == 0  # the paper's rule, by name
    assert "ratio             7.69 %" in capsys.readouterr().out
    assert main(["flops", "--size", "2048x2048"]) == 0  # the model's defaults: stage 1 alone
    assert "model ph2, 0 patches" in capsys.readouterr().out
    assert main(["flops", "--size", "2048x2048", "--patch-size", "loose"]) == 2


def test_context_and_window_side_are_paid_for(capsys):
    assert main(["flops", "--size", "1024x1024", "--model", "untrained", "--patches", "4", "--patch-size", "64"]) == 0
    plain = capsys.readouterr().out
    assert main(["flops", "--size", "1024x1024", "--model", "untrained", "--patches", "4", "--patch-size", "64",
                 "--context", "32"]) == 0
    wide = capsys.readouterr().out

    def stage2(out):
        return float(next(line for line in out.splitlines() if "stage2" in line).split()[1])

    assert stage2(wide) > stage2(plain) > 0


@pytest.mark.parametrize("size", ["big", "0x10", "10x", "2048"])
def test_a_bad_size_is_refused(capsys, size):
    assert main(["flops", "--size", size]) == 2
    assert "--size" in capsys.readouterr().err


def test_the_size_is_printed_in_the_order_it_is_read(capsys):
    """--size HxW is height first: a 1000 x 3000 image is wide, and is printed as it was given."""
    assert main(["flops", "--size", "1000x3000", "--model", "untrained", "--patches", "0"]) == 0
    assert capsys.readouterr().out.startswith("1000 x 3000 image (H x W), model untrained, 0 patches")
