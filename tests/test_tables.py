"""Printed tables by display width: Chinese characters take two terminal columns; cuts never split a bracket."""
from geoaccess.tables import clip, display_width, format_table, pad


def test_display_width_counts_wide_characters_twice():
    assert display_width("卫生室+") == 7 and display_width("abc") == 3 and display_width("（一期）") == 8


def test_pad_fills_to_display_columns():
    assert display_width(pad("江达县", 10)) == 10 and pad("7", 3, ">") == "  7"


def test_a_cut_never_leaves_a_bracket_open():
    name = "森布日极高海拔生态搬迁安置区（二期，计划）"
    assert clip(name, 60) == name
    cut = clip(name, 34)
    assert cut == "森布日极高海拔生态搬迁安置区…" and display_width(cut) <= 34
    assert clip("Lhasa (Chengguan district)", 12) == "Lhasa…"


def test_columns_line_up_whatever_the_script():
    text = format_table(["name", "minutes"], [["拉萨市城关区", "12"], ["Nyingchi", "7"], ["日喀则市桑珠孜区", "130"]])
    lines = text.splitlines()
    assert len({display_width(line) for line in lines}) == 1  # the right-aligned last column ends together
