"""`make dev`'s entry point as a person uses it: start, read the banner, call the API, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import boto3
import httpx

from infra.local.cog_server import free_port
from infra.local.template import ROOT


def test_the_dev_server_starts_serves_and_stops_on_ctrl_c():
    # Given `python -m infra.local` started on a free port, as `make dev PORT=...` does
    port = free_port()
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    # this test process's own stack (endpoint, administrator) must not leak into it
    for key in ('AWS_ENDPOINT_URL', 'MOTO_PORT', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'):
        env.pop(key, None)
    process = subprocess.Popen(
        [sys.executable, '-m', 'infra.local', '--port', str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        # When it prints its banner
        banner = []
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            banner.append(line)
            if 'Ctrl-C stops it' in line or process.poll() is not None:
                break
        text = ''.join(banner)
        # Then it names the API, the docs and a first curl, and the API answers there
        assert f'http://127.0.0.1:{port}/docs' in text
        assert f'curl http://127.0.0.1:{port}/health' in text
        assert httpx.get(f'http://127.0.0.1:{port}/health').json() == {'status': 'ok'}
        signed_in = httpx.post(f'http://127.0.0.1:{port}/v1/auth/device', json={'device_id': 'dev-server-device-01'})
        token = signed_in.json()['access_token']
        me = httpx.get(f'http://127.0.0.1:{port}/v1/me', headers={'authorization': f'Bearer {token}'}).json()
        assert me['balance'] == {'available': 100, 'held': 0}  # the dev server's welcome credits
        # And the banner's OIDC issuer mints an ID token that signs in (provider local), as with curl
        issuer = next(line for line in banner if 'OIDC issuer (provider local):' in line).split(': ', 1)[1]
        issuer = issuer.split(';', 1)[0].strip()
        id_token = httpx.post(f'{issuer}/token', json={'sub': 'dev-person'}).json()['id_token']
        oidc = httpx.post(f'http://127.0.0.1:{port}/v1/auth/oidc', json={'provider': 'local', 'id_token': id_token})
        assert oidc.status_code == 200 and oidc.json()['account_id'] != signed_in.json()['account_id']
        # And the banner's export lines make an administrator of the AWS SDK/CLI on the offline endpoint
        exports = dict(
            line.strip().removeprefix('export ').split('=', 1) for line in banner if line.strip().startswith('export ')
        )
        admin = boto3.Session(
            aws_access_key_id=exports['AWS_ACCESS_KEY_ID'],
            aws_secret_access_key=exports['AWS_SECRET_ACCESS_KEY'],
            region_name=exports['AWS_DEFAULT_REGION'],
        )
        lambda_ = admin.client('lambda', endpoint_url=exports['AWS_ENDPOINT_URL'])
        names = [f['FunctionName'] for f in lambda_.list_functions()['Functions']]
        reconcile = next(name for name in names if 'ReconcileLedger' in name)
        answer = lambda_.invoke(FunctionName=reconcile, Payload=json.dumps({'account_ids': [me['account_id']]}))
        assert 'FunctionError' not in answer, answer['Payload'].read()
        assert json.loads(answer['Payload'].read()) == {'checked': 1, 'mismatched': []}
        tables = admin.client('dynamodb', endpoint_url=exports['AWS_ENDPOINT_URL']).list_tables()['TableNames']
        assert any('LedgerTable' in table for table in tables)
        # And Ctrl-C stops it cleanly
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
