"""The ofa-mbv3 backbone at widths 1.0 and 1.2 has exactly OFA's published channel counts (OFAMobileNetV3:
make_divisible(base_width * width_mult, 8) of base widths 16, 16, 24, 40, 80, 112, 160, 960, 1280)."""

from __future__ import annotations

import pytest

from supernet.layers import Backbone, layer_specs, make_divisible
from supernet.space import get_space

OFA = {  # width_mult -> (stem, first block, stages 1-5, final expand, feature mix)
    1.0: (16, 16, (24, 40, 80, 112, 160), 960, 1280),
    1.2: (24, 24, (32, 48, 96, 136, 192), 1152, 1536),
}


@pytest.mark.parametrize("width_mult", sorted(OFA))
def test_channel_counts_are_ofas(width_mult: float) -> None:
    stem, first, stages, final, mix = OFA[width_mult]
    specs = layer_specs(Backbone(width_mult=width_mult), get_space("ofa-mbv3").largest(224))
    assert specs[0].op == "stem" and specs[0].out_ch == stem
    assert specs[1].out_ch == first and specs[1].expand == 1
    # the first block of each stage (4 blocks per stage in the largest subnet) has the stage's width
    assert tuple(specs[2 + 4 * s].out_ch for s in range(5)) == stages
    assert specs[-2].op == "final_expand" and specs[-2].out_ch == final
    assert specs[-1].op == "head" and specs[-1].in_ch == final and specs[-1].mid_ch == mix


def test_make_divisible_is_ofas_rounding() -> None:
    # OFA: new_v = max(8, int(v + 4) // 8 * 8), plus 8 when that drops more than 10 %
    assert make_divisible(19.2) == 24  # 16 would drop 17 %
    assert make_divisible(134.4) == 136
    assert make_divisible(28.8) == 32
