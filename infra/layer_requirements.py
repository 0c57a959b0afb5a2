"""Write ``layers/core/requirements.txt`` from pyproject's runtime dependencies (one source of truth).

``sam build`` installs the layer from that file; a test fails when it has drifted. Run: ``make layer-reqs``.
"""

from __future__ import annotations

import sys
import tomllib

from infra.local.template import ROOT

REQUIREMENTS_PATH = ROOT / 'layers' / 'core' / 'requirements.txt'
HEADER = '# Generated from pyproject.toml by `make layer-reqs`; do not edit.\n'


def render() -> str:
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    return HEADER + ''.join(f'{dependency}\n' for dependency in project['dependencies'])


if __name__ == '__main__':
    REQUIREMENTS_PATH.write_text(render())
    sys.stdout.write(f'wrote {REQUIREMENTS_PATH.relative_to(ROOT)}\n')
