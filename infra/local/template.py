"""Load ``template.yaml`` and turn it into what the offline stack and the tests need.

The SAM template is the single source of truth: the offline stack translates it with
aws-sam-translator (the library ``sam deploy`` uses) and deploys the result into moto, and the
DynamoDB Local tests create their tables from the same ``AWS::DynamoDB::Table`` definitions.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / 'template.yaml'
ARTIFACT_BUCKET = 'atelier-local-artifacts'


@cache
def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The SAM template as a dict, with short-form intrinsics (``!Ref``) in long form."""
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(path.read_text())  # type: ignore[no-any-return]


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template['Resources'].items() if res['Type'] == resource_type}


def table_definitions(template: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``CreateTable`` arguments for every DynamoDB table in the template, by logical id.

    Table names are the logical ids; callers rename them as they like.
    """
    template = template or load_template()
    out: dict[str, dict[str, Any]] = {}
    for name, res in resources_of_type(template, 'AWS::DynamoDB::Table').items():
        props = res['Properties']
        kwargs: dict[str, Any] = {
            'TableName': name,
            'AttributeDefinitions': props['AttributeDefinitions'],
            'KeySchema': props['KeySchema'],
            'BillingMode': 'PAY_PER_REQUEST',
        }
        if props.get('GlobalSecondaryIndexes'):
            kwargs['GlobalSecondaryIndexes'] = props['GlobalSecondaryIndexes']
        if props.get('LocalSecondaryIndexes'):
            kwargs['LocalSecondaryIndexes'] = props['LocalSecondaryIndexes']
        out[name] = copy.deepcopy(kwargs)
    return out


@dataclass(frozen=True)
class FunctionSpec:
    """Where a function's code lives locally and which handler the template names."""

    logical_id: str
    code_dir: Path
    handler: str
    http_routes: tuple[tuple[str, str], ...] = field(default=())  # (METHOD, path) pairs, path may be $default


def function_specs(template: dict[str, Any] | None = None) -> dict[str, FunctionSpec]:
    template = template or load_template()
    specs: dict[str, FunctionSpec] = {}
    for name, res in resources_of_type(template, 'AWS::Serverless::Function').items():
        props = res['Properties']
        routes = tuple(
            (str(ev['Properties']['Method']).upper(), ev['Properties']['Path'])
            for ev in (props.get('Events') or {}).values()
            if ev['Type'] == 'HttpApi'
        )
        specs[name] = FunctionSpec(name, ROOT / props['CodeUri'], props['Handler'], routes)
    return specs


def layer_paths(template: dict[str, Any] | None = None) -> list[str]:
    """Where the layers' code lives locally: what Lambda mounts at ``/opt/python``."""
    template = template or load_template()
    return [
        str(ROOT / res['Properties']['ContentUri'])
        for res in resources_of_type(template, 'AWS::Serverless::LayerVersion').values()
    ]


def mount_code(template: dict[str, Any] | None = None) -> None:
    """Put the layers where Lambda mounts them (``/opt/python``) on this process's import path, and the repo
    root (so ``functions.<name>.app`` imports as tests import it)."""
    for path in [*layer_paths(template), str(ROOT)]:
        if path not in sys.path:
            sys.path.insert(0, path)


class _NoManagedPolicies:
    """SAM asks IAM for managed policy ARNs by name; offline there is nothing to ask."""

    def load(self) -> dict[str, str]:
        return {}


def translate(parameters: dict[str, str], template: dict[str, Any] | None = None) -> dict[str, Any]:
    """Translate the SAM template into CloudFormation that moto can deploy.

    Local code locations become keys in :data:`ARTIFACT_BUCKET` (as ``sam package`` would
    upload them), state machine definitions are inlined with their substitutions applied through
    ``Fn::Sub`` (moto ignores ``DefinitionSubstitutions``), and the ``AWS::ApiGatewayV2``
    resources moto cannot deploy are dropped together with whatever refers to them: the local
    gateway serves the routes straight from the template instead.
    """
    from samtranslator.translator.transform import transform

    sam = copy.deepcopy(template or load_template())
    for name, res in sam['Resources'].items():
        props = res.get('Properties', {})
        if res['Type'] == 'AWS::Serverless::Function':
            props['CodeUri'] = f's3://{ARTIFACT_BUCKET}/{name}.zip'
        elif res['Type'] == 'AWS::Serverless::LayerVersion':
            props['ContentUri'] = f's3://{ARTIFACT_BUCKET}/{name}.zip'
        elif res['Type'] == 'AWS::Serverless::StateMachine' and 'DefinitionUri' in props:
            props['Definition'] = json.loads((ROOT / props.pop('DefinitionUri')).read_text())
    cfn: dict[str, Any] = transform(sam, parameters, _NoManagedPolicies())

    for res in cfn['Resources'].values():
        props = res.get('Properties', {})
        if res['Type'] == 'AWS::StepFunctions::StateMachine' and 'DefinitionSubstitutions' in props:
            text = '\n'.join(props['DefinitionString']['Fn::Join'][1])
            for key, value in props.pop('DefinitionSubstitutions').items():
                text = text.replace('${' + key + '}', _sub_reference(value))
            # One-argument Fn::Sub: moto's variable-map form runs string.Template, which turns the
            # ASL's `$$.Task.Token` into `$.Task.Token`; references written inline leave `$$` alone.
            props['DefinitionString'] = {'Fn::Sub': text}
    _drop_unsupported(cfn, prefix='AWS::ApiGatewayV2::')
    return cfn


def _sub_reference(value: Any) -> str:
    """A substitution value as an inline ``Fn::Sub`` reference (``${Logical.Attr}`` / ``${Logical}``)."""
    if isinstance(value, dict) and 'Fn::GetAtt' in value:
        attribute = value['Fn::GetAtt']
        logical, name = attribute if isinstance(attribute, list) else str(attribute).split('.', 1)
        return '${' + f'{logical}.{name}' + '}'
    if isinstance(value, dict) and 'Ref' in value:
        return '${' + str(value['Ref']) + '}'
    return str(value)


def _drop_unsupported(cfn: dict[str, Any], prefix: str) -> None:
    resources = cfn['Resources']
    removed = {name for name, res in resources.items() if res['Type'].startswith(prefix)}
    while True:
        dependent = {name for name, res in resources.items() if name not in removed and _refs(res) & removed}
        if not dependent:
            break
        removed |= dependent
    for name in removed:
        del resources[name]
    cfn['Outputs'] = {k: v for k, v in cfn.get('Outputs', {}).items() if not _refs(v) & removed}


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'Ref' and isinstance(value, str):
                found.add(value)
            elif key == 'Fn::GetAtt':
                found.add(value[0] if isinstance(value, list) else str(value).split('.')[0])
            elif key == 'Fn::Sub':
                text = value[0] if isinstance(value, list) else value
                found |= {part.split('}')[0].split('.')[0] for part in str(text).split('${')[1:]}
                if isinstance(value, list):
                    found |= _refs(value[1])
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found
