"""The catalog as data: every model loads, its schema validates input, its formula prices it exactly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atelier.catalog import UnknownModel, load_catalog, load_plans, plan_limits
from atelier.catalog.models import ModelView
from atelier.catalog.pricing import Pricing, Usage, price
from atelier.errors import InvalidInput

MOCK_MODELS = ['mock/image', 'mock/video', 'mock/fail', 'mock/slow', 'mock/no-webhook']


def test_every_mock_model_takes_just_a_prompt() -> None:
    catalog = load_catalog()
    for model_id in MOCK_MODELS:
        # Given a mock model, When the input is only a prompt, Then it validates and has a price
        model = catalog.get(model_id)
        assert model.provider == 'mock'
        assert model.estimate(model.validate_input({'prompt': 'a red fox'})) >= 1


def test_the_slow_mock_model_has_a_short_local_deadline() -> None:
    assert load_catalog().get('mock/slow').limits.deadline_seconds <= 10


def test_fal_models_declare_how_long_they_run_and_it_fits_their_deadline() -> None:
    # fal's start timeout is the time left minus the run: every fal model says how long it runs
    for model in (m for m in load_catalog() if m.provider == 'fal'):
        assert 0 < model.limits.expected_run_seconds < model.limits.deadline_seconds, model.id


def test_a_run_as_long_as_the_deadline_is_refused() -> None:
    from pydantic import ValidationError

    from atelier.catalog.models import Limits

    with pytest.raises(ValidationError, match='expected_run_seconds'):
        Limits(deadline_seconds=60, webhook_wait_seconds=10, poll_interval_seconds=5, expected_run_seconds=60)


@pytest.mark.parametrize('extra', [{'duration_seconds': 7}, {'resolution': '1080p'}, {'duration_seconds': '5'}])
def test_kling_takes_only_what_fal_takes(extra: dict[str, object]) -> None:
    kling = load_catalog().get('fal/kling-video')
    base = {'prompt': 'waves', 'image': 'uploads/acct_1/in.png'}
    assert kling.estimate(kling.validate_input({**base, 'duration_seconds': 10})) == 280
    with pytest.raises(InvalidInput):
        kling.validate_input({**base, **extra})


def test_unknown_model_is_a_404_error() -> None:
    with pytest.raises(UnknownModel) as caught:
        load_catalog().get('nope/nothing')
    assert (caught.value.code, caught.value.kind.value) == ('unknown_model', 'not_found')


@pytest.mark.parametrize(
    'data',
    [
        {},
        {'prompt': ''},
        {'prompt': '   '},
        {'prompt': 'x', 'num_images': 0},
        {'prompt': 'x', 'num_images': 9},
        {'prompt': 'x', 'colour': 'red'},
        {'prompt': 'x', 'image': 'https://example.com/cat.png'},
        {'prompt': 'x' * 2001},
    ],
)
def test_invalid_input_is_rejected_with_details(data: dict[str, object]) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_catalog().get('mock/image').validate_input(data)
    assert caught.value.code == 'invalid_input'
    assert caught.value.details['errors'][0]['loc'][0] == 'input'


def test_video_is_priced_per_second_with_a_resolution_factor() -> None:
    model = load_catalog().get('mock/video')
    # Given base 2 + 3 credits a second, 720p costing 1.5x
    assert model.estimate(model.validate_input({'prompt': 'x', 'duration_seconds': 4})) == 2 + 3 * 4
    assert model.estimate(model.validate_input({'prompt': 'x', 'duration_seconds': 4, 'resolution': '720p'})) == 21


def test_actual_cost_uses_what_the_provider_produced() -> None:
    model = load_catalog().get('mock/video')
    data = model.validate_input({'prompt': 'x', 'duration_seconds': 4}).model_dump()
    assert model.actual_cost(data, seconds=2) == 2 + 3 * 2
    assert model.actual_cost(data) == model.estimate(model.validate_input(data))


def test_image_quality_and_resolution_factors_multiply_and_round_up() -> None:
    model = load_catalog().get('fal/flux-dev')
    data = model.validate_input({'prompt': 'x', 'num_images': 3, 'resolution': '1024x1024', 'quality': 'hd'})
    assert model.estimate(data) == 3 * 3 * 2 * 3 // 2  # 27 exactly, no float drift


@given(
    base=st.integers(0, 100),
    per_image=st.integers(0, 50),
    per_second=st.integers(0, 50),
    images=st.integers(0, 8),
    seconds=st.integers(0, 60),
    factor=st.sampled_from([0.5, 1, 1.25, 1.5, 2, 3.3]),
)
def test_price_is_a_whole_credit_never_below_one_and_never_below_the_exact_amount(
    base: int, per_image: int, per_second: int, images: int, seconds: int, factor: float
) -> None:
    pricing = Pricing(base=base, per_image=per_image, per_second=per_second, factors={'q': {'hd': factor}})
    credits = price(pricing, Usage(images=images, seconds=seconds), {'q': 'hd'})
    exact = (base + per_image * images + per_second * seconds) * factor
    assert isinstance(credits, int)
    assert credits >= 1
    assert exact - 1e-9 <= credits < exact + 1 or (exact < 1 and credits == 1)


def test_more_usage_never_costs_less() -> None:
    model = load_catalog().get('mock/video')
    data = model.validate_input({'prompt': 'x', 'duration_seconds': 10}).model_dump()
    costs = [model.actual_cost(data, seconds=s) for s in range(1, 11)]
    assert costs == sorted(costs)


def test_available_models_are_those_of_configured_providers() -> None:
    catalog = load_catalog()
    assert {m.id for m in catalog.available({'mock'})} == set(MOCK_MODELS)
    assert list(catalog.available(set())) == []


def test_model_view_has_a_json_schema_and_pricing() -> None:
    view = ModelView.of(load_catalog().get('mock/image'))
    body = json.loads(view.model_dump_json())
    assert 'prompt' in body['input_schema']['required']
    assert body['pricing']['per_image'] == 4


def test_plans_limit_concurrency_and_unknown_plans_get_the_default() -> None:
    assert plan_limits('free').max_concurrent_tasks == 2
    assert plan_limits('pro').max_concurrent_tasks == 5
    assert plan_limits('enterprise-typo') == load_plans().limits('free')
    assert plan_limits(None).max_concurrent_tasks == 2
