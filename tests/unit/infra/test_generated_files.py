"""Generated files are committed; these tests fail when they are stale (fix: the make target named)."""

from infra import layer_requirements


def test_layer_requirements_match_pyproject():
    # Fix with: make layer-reqs
    assert layer_requirements.REQUIREMENTS_PATH.read_text() == layer_requirements.render()


def test_openapi_document_is_current_and_valid():
    # Fix with: make openapi
    import json

    from openapi_spec_validator import validate

    from infra import openapi

    committed = openapi.OPENAPI_PATH.read_text()
    assert committed == openapi.render()
    validate(json.loads(committed))
