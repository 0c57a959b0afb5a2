"""A self-hosted Cog model (a real Cog server on 127.0.0.1) driven through the whole offline stack."""

from __future__ import annotations

import httpx

from atelier.providers.mock.media import PNG_SIGNATURE
from tests.e2e.conftest import Stack
from tests.e2e.test_tasks_lifecycle import balance, create, entries, funded, wait_final


def test_a_cog_model_runs_end_to_end_and_its_pngs_land_in_s3(stack: Stack) -> None:
    # Given a funded user and the local Cog server's model in the catalog
    user = funded(stack, 10)
    models = {m['id'] for m in user.get('/v1/models').json()['items']}
    assert 'cog/echo-image' in models
    # When the user runs it for two images
    created = create(user, 'cog/echo-image', prompt='a lighthouse', num_images=2)
    assert created.status_code == 202, created.text
    task = wait_final(user, created.json()['id'])
    # Then it succeeded, its two PNGs are served from S3, and exactly its price was charged
    assert task['status'] == 'succeeded', task
    assert len(task['outputs']) == 2
    for output in task['outputs']:
        image = httpx.get(output['url'])
        assert image.status_code == 200 and image.content.startswith(PNG_SIGNATURE)
        assert output['size'] == len(image.content)
    assert task['credits']['charged'] == 2
    assert {kind for kind, _ in entries(user, task['id'])} == {'hold', 'capture'}
    assert balance(user) == {'available': 8, 'held': 0}


def test_a_failing_cog_prediction_is_refunded(stack: Stack) -> None:
    user = funded(stack, 10)
    task = wait_final(user, create(user, 'cog/echo-image', prompt='fail please').json()['id'])
    assert task['status'] == 'failed'
    assert task['credits']['refunded'] == task['credits']['held']
    assert balance(user) == {'available': 10, 'held': 0}
