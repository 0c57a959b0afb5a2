"""``make dev``: serve Atelier offline on 127.0.0.1 with the full async lifecycle.

python -m infra.local [--port 3000]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from infra.local.server import LocalServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m infra.local', description=__doc__)
    parser.add_argument('--port', type=int, default=3000, help='API port on 127.0.0.1 (default 3000)')
    parser.add_argument(
        '--welcome-credits', type=int, default=100, help='promo credits for each new account (default 100)'
    )
    parser.add_argument(
        '--parameter-overrides',
        nargs='*',
        default=[],
        metavar='Key=Value',
        help="template parameters, as with 'sam deploy' (make dev PARAMS='LogLevel=DEBUG ...')",
    )
    args = parser.parse_args(argv)
    overrides = dict(item.split('=', 1) for item in args.parameter_overrides if '=' in item)

    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or a process manager
        signal.signal(signum, lambda *_: stopped.set())
    with LocalServer(port=args.port, welcome_credits=args.welcome_credits, parameters=overrides) as server:
        admin = server.stack.admin
        issuer = server.services['oidc'].base_url
        sys.stdout.write(
            f'\nAtelier is running offline (template.yaml on moto; AWS endpoint {server.stack.endpoint})\n'
            f'  API         {server.url}\n'
            f'  Swagger UI  {server.url}/docs\n'
            f'  OpenAPI     {server.url}/openapi.json\n'
            f'  New accounts get {args.welcome_credits} welcome credits (--welcome-credits N).\n\n'
            'The AWS endpoint enforces IAM; as an administrator (aws CLI, boto3) paste:\n'
            f'  export AWS_ENDPOINT_URL={server.stack.endpoint}\n'
            f'  export AWS_ACCESS_KEY_ID={admin["AWS_ACCESS_KEY_ID"]}\n'
            f'  export AWS_SECRET_ACCESS_KEY={admin["AWS_SECRET_ACCESS_KEY"]}\n'
            '  export AWS_DEFAULT_REGION=us-east-1\n'
            '  aws lambda list-functions --query "Functions[].FunctionName"\n\n'
            'Try:\n'
            f'  curl {server.url}/health\n'
            f"  curl -s -X POST {server.url}/v1/auth/device -H 'content-type: application/json' "
            '-d \'{"device_id": "my-test-device-0001"}\'\n'
            f'  OIDC issuer (provider local): {issuer}; an ID token:\n'
            f'  curl -s -X POST {issuer}/token -d \'{{"sub": "me"}}\'\n\n'
            'Ctrl-C stops it.\n'
        )
        sys.stdout.flush()
        stopped.wait()
    sys.stdout.write('stopped\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
