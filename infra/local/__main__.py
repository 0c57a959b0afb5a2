"""``make dev``: serve Atelier offline on 127.0.0.1 with the full async lifecycle; and local payment triggers.

python -m infra.local [serve] [--port 3000] [--welcome-credits 100] [--parameter-overrides K=V ...]
python -m infra.local trigger {stripe,revenuecat} EVENT [--account ID | --token TOKEN] [options]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from infra.local import triggers
from infra.local.server import LocalServer


def build_parser() -> argparse.ArgumentParser:
    """Serving is the default command: ``python -m infra.local --port 3000`` serves, as it always has."""
    parser = argparse.ArgumentParser(
        prog='python -m infra.local',
        description=__doc__,
        epilog=triggers.events_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _serve_options(parser, defaults=True)
    commands = parser.add_subparsers(dest='command', metavar='{serve,trigger}')
    # Options given after `serve` override the top level's; not given, they leave them alone.
    _serve_options(commands.add_parser('serve', help='serve the API offline (the default)'), defaults=False)
    triggers.add_parser(commands)
    return parser


def _serve_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument('--port', type=int, default=default(3000), help='API port on 127.0.0.1 (default 3000)')
    parser.add_argument(
        '--welcome-credits',
        type=int,
        default=default(100),
        help='promo credits for each new account (default 100)',
    )
    parser.add_argument(
        '--parameter-overrides',
        nargs='*',
        default=default([]),
        metavar='Key=Value',
        help="template parameters, as with 'sam deploy' (make dev PARAMS='LogLevel=DEBUG ...')",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == 'trigger':
        return triggers.run(args)
    return serve(args)


def serve(args: argparse.Namespace) -> int:
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
            f'  curl -s -X POST {issuer}/token -d \'{{"sub": "me"}}\'\n'
            '  Buy credits: POST /v1/checkout, open its url, press Pay. Any payment event (trigger --help):\n'
            '  python -m infra.local trigger stripe checkout.session.completed '
            f'--url {server.url} --token <access_token>\n\n'
            'Ctrl-C stops it.\n'
        )
        sys.stdout.flush()
        stopped.wait()
    sys.stdout.write('stopped\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
