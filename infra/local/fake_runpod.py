"""A fake RunPod serverless API on 127.0.0.1: queue-based endpoints with a worker, as RunPod documents them.

    runpod = FakeRunPod()                # host='127.0.0.1', port=0 (a free port)
    base = runpod.start()                # -> RunPodApiBase (any endpoint id is served)
    runpod.jobs[job_id]                  # what it holds; runpod.deliveries: every webhook sent
    runpod.finish(job_id)                # let a ``runpod:held`` job's worker return
    runpod.stop()

What it replays (https://docs.runpod.io/serverless/endpoints/send-requests,
https://docs.runpod.io/serverless/endpoints/job-operations, https://docs.runpod.io/serverless/endpoints/job-states):

- ``POST /v2/{endpoint_id}/run`` with ``Authorization: Bearer <key>`` and ``{"input": {...}, "webhook"?,
  "policy"?: {"executionTimeout": ms (> 5000), "ttl": ms (>= 10000)}}`` queues a job and answers
  ``{"id": "<uuid>-u1", "status": "IN_QUEUE"}``; a body without an ``input`` object, or a policy out of
  RunPod's bounds, is 400.
- ``GET /v2/{endpoint_id}/status/{id}`` answers ``{"id", "status", "delayTime", "executionTime", "workerId",
  "output"?, "error"?}`` (``delayTime``/``executionTime`` in ms, once the job has started/ended); 404 for a
  job this endpoint does not have.
- ``POST /v2/{endpoint_id}/cancel/{id}`` answers ``{"id", "status"}``: a queued or running job becomes
  ``CANCELLED`` (no webhook is sent for it); an ended job keeps its status.
- Statuses ``IN_QUEUE``, ``IN_PROGRESS``, ``COMPLETED``, ``FAILED``, ``CANCELLED``, ``TIMED_OUT`` (not picked
  up within ``ttl``, or no result within ``executionTimeout``).
- The webhook: when a job ends, an **unsigned** POST of the same object ``/status`` answers to the job's
  ``webhook`` URL; a failed call is retried twice, 10 s apart (scaled by ``time_scale``).
- The worker's ``output`` is this deployment's documented shape: ``{"images": [url, ...]}`` (``num_images``
  of them), served by ``GET /files/{id}/{n}.png`` (no key: the worker's own storage, as an S3 bucket would).

Markers in the input's prompt drive the paths a test needs:

======================  ============================================================================
``runpod:fail``         the worker raises: ``FAILED`` with an ``error`` (the worker ran: it is billed)
``runpod:slow``         runs about 4 s
``runpod:held``         runs until the test calls :meth:`FakeRunPod.finish` (deterministic "while running")
``runpod:queued``       no worker picks it up: ``IN_QUEUE`` until canceled or its ``ttl`` passes
``runpod:no-webhook``   no webhook is sent (a lost webhook)
======================  ============================================================================
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from atelier.providers.mock import media
from infra.local.http_service import LocalHTTPService

LOCAL_TOKEN = 'runpod_atelier_local'
#: The endpoint the offline stack names for ``runpod/image-worker`` (any id is served).
LOCAL_ENDPOINT = 'atelier-local-image'
_JOB = re.compile(r'^/v2/([\w-]+)/(status|cancel)/([\w-]+)$')
_RUN = re.compile(r'^/v2/([\w-]+)/run$')
_FILE = re.compile(r'^/files/([\w-]+)/(\d+)\.png$')
_FINAL = frozenset({'COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT'})
DEFAULT_EXECUTION_TIMEOUT_MS, DEFAULT_TTL_MS = 600_000, 86_400_000


@dataclass
class RunPodJob:
    """One job, as the fake keeps it."""

    id: str
    endpoint_id: str
    input: dict[str, Any]
    webhook: str
    execution_timeout_ms: int
    ttl_ms: int
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    ended_at: float | None = None
    status: str = 'IN_QUEUE'
    worker_id: str = ''
    output: Any = None
    error: str | None = None

    def marked(self, marker: str) -> bool:
        return f'runpod:{marker}' in str(self.input.get('prompt', '')).lower()

    def view(self) -> dict[str, Any]:
        """The job as ``/status`` (and the webhook) shows it."""
        body: dict[str, Any] = {'id': self.id, 'status': self.status}
        if self.started_at is not None:
            body['delayTime'] = int((self.started_at - self.submitted_at) * 1000)
            body['workerId'] = self.worker_id
        if self.ended_at is not None and self.started_at is not None:
            body['executionTime'] = int((self.ended_at - self.started_at) * 1000)
        if self.output is not None:
            body['output'] = self.output
        if self.error is not None:
            body['error'] = self.error
        return body


class FakeRunPod(LocalHTTPService):
    thread_name = 'fake-runpod'

    def __init__(
        self,
        host: str = '127.0.0.1',
        port: int = 0,
        *,
        token: str = LOCAL_TOKEN,
        time_scale: float = 1.0,
        workers: int = 2,
    ) -> None:
        super().__init__(host, port)
        self.token = token
        self.time_scale = time_scale
        self.workers = workers
        self.jobs: dict[str, RunPodJob] = {}
        #: Every run that reached the fake: (endpoint id, headers (lower-case), JSON body).
        self.runs: list[tuple[str, dict[str, str], Any]] = []
        #: Every webhook delivery attempt: (job id, status sent, HTTP status or 0).
        self.deliveries: list[tuple[str, str, int]] = []
        self._queue: list[str] = []
        self._running = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._finish: dict[str, threading.Event] = {}

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> str:
        url = super().start()
        threading.Thread(target=self._dispatch, name='fake-runpod-queue', daemon=True).start()
        return url

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    # ---------------------------------------------------------------- the test's controls
    def finish(self, job_id: str) -> None:
        """Let a ``runpod:held`` job's worker return."""
        with self._lock:
            event = self._finish.setdefault(job_id, threading.Event())
        event.set()

    def redeliver(self, job_id: str, body: dict[str, Any] | None = None) -> int:
        """Send the job's webhook again (or ``body`` instead), once; the HTTP status answered."""
        job = self.jobs[job_id]
        return self._deliver(job, body or job.view(), attempts=1)

    # ---------------------------------------------------------------- the queue
    def run(self, endpoint_id: str, body: dict[str, Any]) -> dict[str, Any]:
        policy = body.get('policy') or {}
        job = RunPodJob(
            id=f'{uuid.uuid4()}-u1',
            endpoint_id=endpoint_id,
            input=body['input'],
            webhook=str(body.get('webhook') or ''),
            execution_timeout_ms=int(policy.get('executionTimeout') or DEFAULT_EXECUTION_TIMEOUT_MS),
            ttl_ms=int(policy.get('ttl') or DEFAULT_TTL_MS),
        )
        with self._lock:
            self.jobs[job.id] = job
            self._queue.append(job.id)
        return {'id': job.id, 'status': 'IN_QUEUE'}

    def cancel(self, job: RunPodJob) -> dict[str, Any]:
        with self._lock:
            if job.status not in _FINAL:
                if job.id in self._queue:
                    self._queue.remove(job.id)
                job.status, job.ended_at = 'CANCELLED', time.monotonic()
        return {'id': job.id, 'status': job.status}

    def _dispatch(self) -> None:
        while not self._stopping.wait(0.05):
            now = time.monotonic()
            with self._lock:
                for job_id in list(self._queue):
                    job = self.jobs[job_id]
                    if (now - job.submitted_at) * 1000 > job.ttl_ms:
                        self._queue.remove(job_id)
                        self._end(job, 'TIMED_OUT')
                ready = [j for j in self._queue if not self.jobs[j].marked('queued')]
                while ready and self._running < self.workers:
                    job = self.jobs[ready.pop(0)]
                    self._queue.remove(job.id)
                    job.status, job.started_at, job.worker_id = 'IN_PROGRESS', time.monotonic(), 'fake-worker-1'
                    self._running += 1
                    threading.Thread(target=self._work, args=(job,), daemon=True).start()

    def _work(self, job: RunPodJob) -> None:
        try:
            limit = job.execution_timeout_ms / 1000
            if job.marked('held'):
                with self._lock:
                    finish = self._finish.setdefault(job.id, threading.Event())
                while not finish.wait(0.05) and not self._stopping.is_set():
                    if job.status == 'CANCELLED' or time.monotonic() - (job.started_at or 0) > limit:
                        break
            else:
                self._stopping.wait((4.0 if job.marked('slow') else 0.8) * self.time_scale)
            if self._stopping.is_set():
                return
            with self._lock:
                if job.status != 'IN_PROGRESS':
                    return  # canceled while running: the worker's result is dropped
                if time.monotonic() - (job.started_at or 0) > limit:
                    self._end(job, 'TIMED_OUT')
                elif job.marked('fail'):
                    job.error = 'RuntimeError: CUDA out of memory (the worker raised)'
                    self._end(job, 'FAILED')
                else:
                    count = int(job.input.get('num_images') or 1)
                    job.output = {'images': [f'{self.base_url}/files/{job.id}/{n}.png' for n in range(count)]}
                    self._end(job, 'COMPLETED')
        finally:
            with self._lock:
                self._running -= 1

    def _end(self, job: RunPodJob, status: str) -> None:
        """Under the lock: the job ended; its webhook goes out (on a thread of its own)."""
        job.status, job.ended_at = status, time.monotonic()
        if job.webhook and not job.marked('no-webhook'):
            threading.Thread(target=self._deliver, args=(job, job.view()), daemon=True).start()

    def _deliver(self, job: RunPodJob, body: dict[str, Any], attempts: int = 3) -> int:
        import httpx

        status = 0
        for _ in range(attempts):
            if self._stopping.is_set():
                return status
            try:
                status = httpx.post(job.webhook, json=body, timeout=10).status_code
            except httpx.HTTPError:
                status = 0
            with self._lock:
                self.deliveries.append((job.id, str(body.get('status')), status))
            if status == 200:
                return status
            self._stopping.wait(10.0 * self.time_scale)
        return status

    def file(self, job_id: str, n: int) -> bytes | None:
        job = self.jobs.get(job_id)
        if job is None or job.status != 'COMPLETED':
            return None
        return media.png(f'{job_id}:{n}:{job.input.get("prompt")}')


def _policy_errors(body: dict[str, Any]) -> str:
    policy = body.get('policy')
    if policy is None:
        return ''
    if not isinstance(policy, dict):
        return 'policy must be an object'
    timeout, ttl = policy.get('executionTimeout'), policy.get('ttl')
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 5000):
        return 'policy.executionTimeout must be more than 5000 ms'
    if ttl is not None and (not isinstance(ttl, int) or not 10_000 <= ttl <= 7 * 86_400_000):
        return 'policy.ttl must be between 10000 ms and one week'
    return ''


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeRunPod
    protocol_version = 'HTTP/1.1'

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, body: bytes, content_type: str = 'application/json') -> None:
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode())

    def _authorized(self) -> bool:
        scheme, _, key = (self.headers.get('Authorization') or '').partition(' ')
        if scheme.lower() != 'bearer' or key != self.server_fake.token:
            self._json(401, {'error': 'Unauthorized'})
            return False
        return True

    def _job(self, path: str, operation: str) -> RunPodJob | None:
        match = _JOB.match(path)
        if not match or match.group(2) != operation:
            return None
        job = self.server_fake.jobs.get(match.group(3))
        return job if job is not None and job.endpoint_id == match.group(1) else None

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        file = _FILE.match(path)
        if file:
            data = self.server_fake.file(file.group(1), int(file.group(2)))
            return self._send(200, data, 'image/png') if data else self._json(404, {'error': 'not found'})
        if not self._authorized():
            return None
        job = self._job(path, 'status')
        if job is None:
            return self._json(404, {'error': 'request does not exist'})
        with self.server_fake._lock:
            return self._json(200, job.view())

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        path = urlsplit(self.path).path
        if not self._authorized():
            return None
        if _JOB.match(path):
            job = self._job(path, 'cancel')
            if job is None:
                return self._json(404, {'error': 'request does not exist'})
            return self._json(200, self.server_fake.cancel(job))
        run = _RUN.match(path)
        if not run:
            return self._json(404, {'error': 'not found'})
        try:
            body = json.loads(raw or b'{}')
        except ValueError:
            return self._json(400, {'error': 'the body is not JSON'})
        if not isinstance(body, dict) or not isinstance(body.get('input'), dict):
            return self._json(400, {'error': 'the body must carry an input object'})
        problem = _policy_errors(body)
        if problem:
            return self._json(400, {'error': problem})
        with self.server_fake._lock:
            self.server_fake.runs.append((run.group(1), {k.lower(): v for k, v in self.headers.items()}, body))
        return self._json(200, self.server_fake.run(run.group(1), body))


FakeRunPod.handler = _Handler
