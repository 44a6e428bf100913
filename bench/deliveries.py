"""Benchmark of notification delivery on the worker's engine.

1. Throughput: webhook deliveries per second to a local receiver that answers at once, with 1 and
   with 4 worker processes. The deliveries are enqueued in one transaction while the workers sit
   idle; the clock runs from that commit (whose NOTIFY wakes them) to the receiver's last arrival.
   Baseline, in the same run: the same receiver fed signed POSTs by one bare aiohttp process at
   the same concurrency, without any database (what this machine can send at all).
2. The same with receivers that take 200 ms to answer: throughput against the configured limit
   (workers x IOTHUB_NOTIFICATION_CONCURRENCY / 0.2 s), and the workers' CPU.
3. Latency from an event's commit to its webhook's arrival, one event at a time on an idle hub.
4. The full pipeline's latency, from the telemetry POST to the webhook's arrival, through the HTTP
   ingest endpoint (gunicorn), the rules and a worker.

Workers are `manage.py run_worker` processes. Runs in a scratch database `iothub_bench_deliveries`
(dropped and migrated afresh) on the PostgreSQL server of DATABASE_URL; the hub's database is left
alone. Ports: receiver 8350, gunicorn 8351.

    ./scripts/bench deliveries [--deliveries 4000] [--slow-deliveries 2000] [--samples 200]
"""

import argparse
import asyncio
import base64
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "iothub_bench_deliveries"

WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
BENCH_ENV = {
    "DJANGO_SETTINGS_MODULE": "iothub.settings",
    "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-key-not-a-secret"),
    "IOTHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "IOTHUB_WEBHOOK_ALLOW_PRIVATE": "true",
    "LOG_LEVEL": "WARNING",
}


# ------------------------------------------------------------------------------------------------
# The receiver: its own process, answering 204 at once and noting when each webhook-id arrived.
# ------------------------------------------------------------------------------------------------


def serve_receiver(port: int, delay: float = 0.0) -> None:
    """aiohttp's server (its HTTP parser is C), so the receiver costs the shared CPUs little.
    `delay`: seconds each answer takes, as a remote receiver's would."""
    from aiohttp import web

    arrivals: dict[str, float] = {}
    count = [0]
    pause = [delay]  # changed by the bench through /delay

    async def receive(request: web.Request) -> web.Response:
        try:
            await request.read()
        except ConnectionResetError:  # the sender died mid-request (the chaos benchmark kills one)
            return web.Response(status=499)
        if pause[0]:
            await asyncio.sleep(pause[0])
        count[0] += 1
        arrivals.setdefault(request.headers.get("webhook-id", ""), time.time())
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        if "count" in request.query:  # polled while a run goes on: keep it small
            return web.json_response({"count": count[0]})
        return web.json_response({"count": count[0], "arrivals": arrivals})

    async def reset(request: web.Request) -> web.Response:
        count[0] = 0
        arrivals.clear()
        pause[0] = float(request.query.get("delay", 0))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    app.router.add_get("/", stats)
    app.router.add_delete("/", reset)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class Receiver:
    def __init__(self, port: int, delay: float = 0.0):
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--receiver", str(port), "--receiver-delay", str(delay)]
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        for _ in range(100):
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the receiver did not start")

    def _call(self, method: str, query: str = "") -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/{query}", method=method)
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback URL
            return response.read()

    def stats(self) -> dict:
        return json.loads(self._call("GET"))

    def count(self) -> int:
        return json.loads(self._call("GET", "?count"))["count"]

    def reset(self, *, delay: float = 0.0) -> None:
        """Forget what arrived; from now on answer after `delay` seconds."""
        self._call("DELETE", f"?delay={delay}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


# ------------------------------------------------------------------------------------------------
# Workers
# ------------------------------------------------------------------------------------------------


WORKER_COMMAND = [sys.executable, str(ROOT / "manage.py"), "run_worker"]


def start_workers(count: int) -> list[subprocess.Popen]:
    """`count` run_worker processes, returned once each is listening."""
    env = {**os.environ, **BENCH_ENV, "LOG_LEVEL": "INFO"}
    workers = [
        subprocess.Popen(WORKER_COMMAND, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(count)
    ]
    for worker in workers:
        for line in worker.stderr:
            if "worker started" in line:
                break
        else:
            raise RuntimeError("a worker exited before it started")
        # Keep reading its log so a full pipe never blocks it.
        threading.Thread(target=lambda stream=worker.stderr: stream.read(), daemon=True).start()
    return workers


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=30)


# ------------------------------------------------------------------------------------------------
# Fixtures in the database
# ------------------------------------------------------------------------------------------------


class Scene:
    """The bench's device, rule and templates; removed again by `clean`."""

    def __init__(self, receiver: Receiver):
        from decimal import Decimal

        from iothub.devices.models import DeviceType
        from iothub.devices.services import device_create
        from iothub.notifications.services import notification_template_create
        from iothub.rules.models import Rule

        tag = secrets.token_hex(4)
        self.device_type, _ = DeviceType.objects.get_or_create(
            name="bench_vibration", defaults={"metric_name": "vibration", "metric_unit": "mm_s"}
        )
        created = device_create(device_type=self.device_type, name="Bench press", serial_number=f"BENCH-{tag}")
        self.device, self.token = created.device, created.token
        self.fanout = notification_template_create(
            name=f"bench fan-out {tag}",
            message_template="{severity}: {device_name} {metric} {value}",
            recipients=[{"type": "webhook", "url": receiver.url(f"/r{n}")} for n in range(50)],
            retry_delay_minutes=0,
        )
        self.single = notification_template_create(
            name=f"bench single {tag}",
            message_template="{severity}: {device_name} {metric} {value}",
            recipients=[{"type": "webhook", "url": receiver.url("/one")}],
        )
        self.rule = Rule.objects.create(
            device=self.device,
            name="bench threshold",
            operator="gt",
            threshold=Decimal("25"),
            cooldown_minutes=0,
            action_config=[{"type": "notification", "template_id": self.single.id}],
        )

    def enqueue(self, template, events: int) -> list[int]:
        """`events` events with one notification action each, enqueued in one transaction."""
        from django.db import transaction

        from iothub.events.models import Event
        from iothub.notifications.services import notification_deliveries_enqueue

        action = {"type": "notification", "template_id": template.id}
        ids = []
        with transaction.atomic():
            for _ in range(events):
                event = Event.objects.create(
                    rule=self.rule,
                    severity="warning",
                    message="bench",
                    execution_results=[{**action, "status": "pending"}],
                    metadata={"metric": "vibration", "value": 30.0},
                )
                notification_deliveries_enqueue(event=event, action_index=0, action=action)
                ids.append(event.id)
        return ids

    def clean(self) -> None:
        from iothub.events.models import Event

        Event.objects.filter(rule__device=self.device).delete()
        self.device.delete()
        self.fanout.delete()
        self.single.delete()


# ------------------------------------------------------------------------------------------------
# Measurements
# ------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_throughput(scene: Scene, receiver: Receiver, workers: int, total: int, *, delay: float = 0.0) -> dict:
    from iothub.events.models import Event
    from iothub.notifications.models import NotificationDelivery

    processes = start_workers(workers)
    try:
        receiver.reset(delay=delay)
        events = total // 50
        cpu_before = sum(cpu_seconds(p.pid) for p in processes)
        scene.enqueue(scene.fanout, events)
        started = time.time()
        deadline = started + 300
        while receiver.count() < events * 50 and time.time() < deadline:
            time.sleep(0.05)
        cpu = sum(cpu_seconds(p.pid) for p in processes) - cpu_before
        stats = receiver.stats()
        last = max(stats["arrivals"].values())
    finally:
        stop_workers(processes)
    sent = NotificationDelivery.objects.filter(event__rule=scene.rule, status="sent").count()
    seconds = last - started
    result = {
        "workers": workers,
        "deliveries": events * 50,
        "received": stats["count"],
        "distinct": len(stats["arrivals"]),
        "sent": sent,
        "seconds": seconds,
        "per_second": stats["count"] / seconds,
        "worker_cpu_ms": cpu / stats["count"] * 1000,  # per delivery, all workers together
        "worker_cores": cpu / seconds,  # cores the workers kept busy
    }
    Event.objects.filter(rule=scene.rule).delete()
    if not result["received"] == result["distinct"] == result["sent"] == result["deliveries"]:
        raise SystemExit(f"deliveries went missing or were sent twice: {result}")
    return result


def measure_baseline(receiver: Receiver, total: int, concurrency: int) -> dict:
    """Signed webhook POSTs from one bare aiohttp process at `concurrency`, no database: what this
    machine can send to the receiver at all. Run in its own process, like a worker."""
    receiver.reset()
    script = f"""
import asyncio, json, sys, time
sys.path.insert(0, {str(ROOT)!r})
import aiohttp
from standardwebhooks import Webhook
from datetime import datetime, UTC

signer = Webhook({WEBHOOK_SECRET!r})
body = json.dumps({{"type": "event.raised", "data": {{"event": {{"id": 1, "message": "x" * 200}}}}}})

async def main():
    limit = asyncio.Semaphore({concurrency})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit={concurrency})) as session:
        async def one(n):
            async with limit:
                at = datetime.now(UTC)
                headers = {{"content-type": "application/json", "webhook-id": f"base_{{n}}",
                            "webhook-timestamp": str(int(at.timestamp())),
                            "webhook-signature": signer.sign(msg_id=f"base_{{n}}", timestamp=at, data=body)}}
                async with session.post("{receiver.url("/base")}", data=body.encode(), headers=headers) as r:
                    await r.read()
        started = time.time()
        await asyncio.gather(*(one(n) for n in range({total})))
        print(time.time() - started)

asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    seconds = float(done.stdout.strip())
    return {"per_second": total / seconds, "seconds": seconds}


def measure_event_latency(scene: Scene, receiver: Receiver, samples: int) -> dict:
    from iothub.notifications.delivery import idempotency_key
    from iothub.notifications.models import NotificationDelivery

    processes = start_workers(1)
    try:
        receiver.reset()
        committed: dict[int, float] = {}
        for _ in range(samples):
            (event_id,) = scene.enqueue(scene.single, 1)
            committed[event_id] = time.time()
            time.sleep(0.03)
        time.sleep(1)
        arrivals = receiver.stats()["arrivals"]
    finally:
        stop_workers(processes)
    latencies = []
    for delivery in NotificationDelivery.objects.filter(event_id__in=committed):
        arrived = arrivals.get(idempotency_key(delivery))
        if arrived is not None:
            latencies.append(arrived - committed[delivery.event_id])
    from iothub.events.models import Event

    Event.objects.filter(rule=scene.rule).delete()
    return _latency_summary(latencies, samples)


def _latency_summary(latencies: list[float], samples: int) -> dict:
    return {
        "samples": samples,
        "arrived": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
    }


def measure_pipeline_latency(scene: Scene, receiver: Receiver, samples: int) -> dict | str:
    """Telemetry POST (over HTTP, to gunicorn) to webhook arrival; a reason string when ingest
    does not raise events yet."""
    env = {**os.environ, **BENCH_ENV}
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "iothub.wsgi", "-b", "127.0.0.1:8351", "-w", "2", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,  # gunicorn.conf.py logs every request there
    )
    processes = start_workers(1)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen("http://127.0.0.1:8351/api/v1/health/", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        receiver.reset()
        sent_at: list[float] = []
        for _ in range(samples):
            body = json.dumps(
                {"version": "0.0.1", "serial_number": scene.device.serial_number, "metrics": {"vibration": 30.0}}
            )
            request = urllib.request.Request(
                "http://127.0.0.1:8351/api/v1/telemetry/",
                data=body.encode(),
                method="POST",
                headers={"Authorization": f"Bearer {scene.token}", "Content-Type": "application/json"},
            )
            started = time.time()
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback URL
                reply = json.loads(response.read())
            if not reply.get("events"):
                return "ingest raised no event for a reading over the rule's threshold (rules evaluation not in place)"
            sent_at.append(started)
            # Wait for this one to arrive before the next, so each sample sees an idle hub.
            deadline = time.time() + 5
            while receiver.count() < len(sent_at) and time.time() < deadline:
                time.sleep(0.002)
        arrivals = sorted(receiver.stats()["arrivals"].values())
    finally:
        stop_workers(processes)
        web.terminate()
        web.wait()
    latencies = [arrived - started for started, arrived in zip(sent_at, arrivals, strict=False)]
    from iothub.events.models import Event

    Event.objects.filter(rule=scene.rule).delete()
    return _latency_summary(latencies, samples)


def prepare_database(base_url: str) -> str:
    """A fresh, migrated scratch database on the same server; returns its URL."""
    import psycopg

    parts = urlsplit(base_url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    url = urlunsplit(parts._replace(path="/" + BENCH_DB))
    env = {**os.environ, **BENCH_ENV, "DATABASE_URL": url}
    for command in (["migrate"], ["setup_timescaledb"]):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
        )
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=4000, help="per throughput run, receivers answering at once")
    parser.add_argument("--slow-deliveries", type=int, default=2000, help="per run with receivers taking 200 ms")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--receiver-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        return serve_receiver(args.receiver, args.receiver_delay)
    os.environ.update(BENCH_ENV)
    os.environ["DATABASE_URL"] = prepare_database(
        os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/iothub")
    )
    BENCH_ENV["DATABASE_URL"] = os.environ["DATABASE_URL"]

    import django

    django.setup()
    from django.conf import settings

    concurrency = settings.IOTHUB_NOTIFICATION_CONCURRENCY
    print(
        f"workers: manage.py run_worker, IOTHUB_NOTIFICATION_CONCURRENCY={concurrency}, "
        f"IOTHUB_WORKER_BATCH_SIZE={settings.IOTHUB_WORKER_BATCH_SIZE}; {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.2f} at the start"
    )
    receiver = Receiver(8350)
    scene = Scene(receiver)
    try:
        # A fresh database has no planner statistics yet; a live hub's has. Warm up, then ANALYZE.
        measure_throughput(scene, receiver, 1, 500)
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        baseline = measure_baseline(receiver, args.deliveries, concurrency)
        print(f"baseline, bare aiohttp POSTs (no database), one process: {baseline['per_second']:.0f}/s")
        for workers in (1, 4):
            result = measure_throughput(scene, receiver, workers, args.deliveries)
            print(
                f"throughput, {workers} worker(s), receiver answering at once: {result['per_second']:.0f} deliveries/s "
                f"({result['per_second'] / baseline['per_second']:.2f} of the baseline; {result['received']} received, "
                f"{result['distinct']} distinct, {result['sent']} marked sent, {result['seconds']:.2f} s; workers' CPU "
                f"{result['worker_cpu_ms']:.2f} ms per delivery, {result['worker_cores']:.2f} cores)"
            )
        for workers in (1, 4):
            result = measure_throughput(scene, receiver, workers, args.slow_deliveries, delay=0.2)
            limit = workers * concurrency / 0.2
            print(
                f"throughput, {workers} worker(s), receiver taking 200 ms: {result['per_second']:.0f} deliveries/s, "
                f"{result['per_second'] / limit:.2f} of the concurrency limit {limit:.0f}/s "
                f"({workers} x {concurrency} in flight / 0.2 s); workers' CPU {result['worker_cores']:.2f} cores "
                f"({result['worker_cpu_ms']:.2f} ms per delivery)"
            )
        latency = measure_event_latency(scene, receiver, args.samples)
        print(
            f"event commit -> webhook, idle hub: p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms, "
            f"max {latency['max_ms']:.1f} ms ({latency['arrived']}/{latency['samples']} arrived)"
        )
        pipeline = measure_pipeline_latency(scene, receiver, args.samples)
        if isinstance(pipeline, str):
            print(f"telemetry POST -> webhook: not measured: {pipeline}")
        else:
            print(
                f"telemetry POST -> webhook, idle hub: p50 {pipeline['p50_ms']:.1f} ms, "
                f"p99 {pipeline['p99_ms']:.1f} ms, max {pipeline['max_ms']:.1f} ms "
                f"({pipeline['arrived']}/{pipeline['samples']} arrived)"
            )
    finally:
        scene.clean()
        receiver.stop()


if __name__ == "__main__":
    main()
