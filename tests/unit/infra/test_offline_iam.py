"""The offline endpoint works out what a request needs the way IAM does (here: S3's multi-object delete)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infra.local.iam import requested_actions

BUCKET = 'arn:aws:s3:::atelier-local-media'


@dataclass
class Request:
    """The parts of a moto response object that the authorization reads."""

    querystring: dict[str, list[str]] = field(default_factory=dict)
    body: Any = b''
    raw_body: Any = b''
    uri: str = '/'


def test_a_multi_object_delete_needs_delete_object_on_every_key():
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b'<Object><Key>outputs/acct_1/t/0.png</Key></Object><Object><Key>uploads/acct_1/a.png</Key></Object>'
        b'<Quiet>true</Quiet></Delete>'
    )
    needed = list(requested_actions('s3', 's3:DeleteObject', 'us-east-1', Request({'delete': ['']}, body), BUCKET))
    assert needed == [
        ('s3:DeleteObject', f'{BUCKET}/outputs/acct_1/t/0.png'),
        ('s3:DeleteObject', f'{BUCKET}/uploads/acct_1/a.png'),
    ]


def test_a_single_delete_and_a_listing_keep_their_own_resource():
    single = requested_actions('s3', 's3:DeleteObject', 'us-east-1', Request(), f'{BUCKET}/outputs/x.png')
    assert list(single) == [('s3:DeleteObject', f'{BUCKET}/outputs/x.png')]
    listing = requested_actions('s3', 's3:ListBucket', 'us-east-1', Request({'prefix': ['outputs/']}), BUCKET)
    assert list(listing) == [('s3:ListBucket', BUCKET)]
