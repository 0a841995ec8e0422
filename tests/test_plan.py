from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvmedia.errors import MediaError, PlanError
from nvmedia.plan import inline_budget, plan_request

LIMIT = 180_000


def test_small_item_is_inline_and_large_item_is_an_asset() -> None:
    plan = plan_request([100, 250_000], inline_limit=LIMIT, request_limit=LIMIT)
    assert plan.deliveries == ("inline", "asset")


def test_inline_limit_is_strict() -> None:
    assert plan_request([LIMIT - 1], inline_limit=LIMIT, request_limit=LIMIT).deliveries == ("inline",)
    assert plan_request([LIMIT], inline_limit=LIMIT, request_limit=LIMIT).deliveries == ("asset",)


def test_largest_inline_items_are_promoted_until_the_request_fits() -> None:
    plan = plan_request([100_000, 120_000, 10_000], inline_limit=LIMIT, request_limit=LIMIT)
    assert plan.deliveries == ("inline", "asset", "inline")
    assert plan.promoted == (1,)
    assert plan.inline_chars == 110_000


def test_asset_mode_uploads_everything() -> None:
    assert plan_request([1, 2], mode="asset", inline_limit=LIMIT, request_limit=LIMIT).deliveries == ("asset", "asset")


def test_eleven_assets_in_one_request_is_too_many_assets() -> None:
    with pytest.raises(PlanError) as err:
        plan_request([LIMIT * 2] * 11, inline_limit=LIMIT, request_limit=LIMIT)
    assert err.value.code == "too_many_assets"
    assert "11" in err.value.message and "10" in err.value.message
    assert 'group="file"' in err.value.hint  # the library's parameter (the CLI names --group file)


def test_inline_mode_refuses_an_item_over_the_limit() -> None:
    with pytest.raises(MediaError) as err:
        plan_request([LIMIT], mode="inline", inline_limit=LIMIT, request_limit=LIMIT)
    assert err.value.code == "cannot_fit_inline"


def test_inline_budget_shares_the_request_limit() -> None:
    assert inline_budget(1, inline_limit=LIMIT, request_limit=LIMIT) == LIMIT
    assert inline_budget(3, inline_limit=LIMIT, request_limit=LIMIT) == LIMIT // 3 - 1
    assert inline_budget(2, inline_limit=50_000, request_limit=LIMIT * 4) == 50_000


sizes = st.lists(st.integers(min_value=0, max_value=1_000_000), max_size=25)
limits = st.integers(min_value=1, max_value=500_000)


@given(sizes, limits, limits, st.sampled_from(["auto", "inline", "asset"]), st.integers(min_value=0, max_value=12))
def test_every_plan_satisfies_all_limits_or_raises_the_right_error(
    b64_sizes: list[int], inline_limit: int, request_limit: int, mode: str, max_assets: int
) -> None:
    try:
        plan = plan_request(
            b64_sizes,
            mode=mode,
            inline_limit=inline_limit,
            request_limit=request_limit,
            max_assets=max_assets,  # type: ignore[arg-type]
        )
    except PlanError as exc:
        assert exc.code == "too_many_assets"
        assert mode != "inline"
        return
    except MediaError as exc:
        assert exc.code == "cannot_fit_inline"
        assert mode == "inline"
        assert any(s >= inline_limit for s in b64_sizes) or sum(b64_sizes) >= request_limit
        return
    assert len(plan.deliveries) == len(b64_sizes)
    inline = [s for s, d in zip(b64_sizes, plan.deliveries, strict=True) if d == "inline"]
    assert all(s < inline_limit for s in inline)
    assert not inline or sum(inline) < request_limit
    assert plan.asset_count <= max_assets
    if mode == "asset":
        assert plan.asset_count == len(b64_sizes)
    if mode == "auto":
        # Nothing was uploaded that could have stayed inline without breaking a limit.
        for i, (size, delivery) in enumerate(zip(b64_sizes, plan.deliveries, strict=True)):
            if delivery == "asset" and i not in plan.promoted:
                assert size >= inline_limit
        for i in plan.promoted:
            assert sum(inline) + b64_sizes[i] >= request_limit


@given(sizes, limits, limits)
def test_auto_plan_is_deterministic(b64_sizes: list[int], inline_limit: int, request_limit: int) -> None:
    try:
        first = plan_request(b64_sizes, inline_limit=inline_limit, request_limit=request_limit, max_assets=100)
    except PlanError:
        return
    again = plan_request(b64_sizes, inline_limit=inline_limit, request_limit=request_limit, max_assets=100)
    assert first == again
