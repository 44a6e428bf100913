"""Chaos benchmark: ingest under load while PostgreSQL crashes and a worker is killed mid-delivery.

    ./scripts/bench chaos [--clients 4] [--senders 4] [--rate 120] [--down 8] [--plan db,worker,db]

Everything it needs is started here and stopped at its end, from a clean clone:

- a private PostgreSQL cluster (tests/pgcluster.py: initdb in a temporary folder, a free port,
  TimescaleDB preloaded, fsync on as in production), never the server of DATABASE_URL, which
  other people use; the hub's database on it, migrated and set up as a deployment does;
- the hub as production starts it: gunicorn with gunicorn.conf.py (its default sizing), and two
  `manage.py run_worker` processes;
- a webhook receiver on loopback (bench/deliveries.py's, answering after 20 ms as a remote one
  would); each device has a rule `vibration > 15` without cooldown whose template posts to three
  of its addresses; a tenth of the readings cross it.

Client processes post single messages at a fixed total rate, each sender as one device. Every
request carries an `Idempotency-Key`; after a connection error, or a 503 (after its Retry-After),
the message is sent again with the same key, until it is acknowledged. Meanwhile, in the order of
--plan: `db` stops PostgreSQL with `-m immediate` for --down seconds and starts it again;
`worker` waits until a worker holds claimed deliveries (a transaction open on its connection,
named by `application_name`), SIGKILLs it, and starts it again a second later, as a supervisor
would. Then the clients stop, finish what is not yet acknowledged, the workers drain the queue,
and the tables are checked. It prints:

- acknowledged-but-lost: readings whose id a 201 listed and that are not in the table (must be 0);
- 5xx answers other than 503 (must be 0); 503s and connection errors, counted apart;
- duplicates: messages (one Idempotency-Key) stored more than once, while the hub ignores the key;
- deliveries lost: deliveries of the raised events not `sent` at the end, readings over the
  threshold that raised no event, webhooks recorded as sent that never arrived (all must be 0);
  and webhooks that arrived twice (at-least-once repeats, told apart by their `webhook-id`);
- per restart: seconds from the database's return to the first 201 and to every sender's, and
  the acknowledged rate after it against the baseline rate before the first disruption;
- per worker kill: deliveries it held, and seconds until every delivery pending at the kill was sent.

It exits 1 when a must-be-0 figure is not. The logs of gunicorn and the workers, and every
request's timing (attempts.json), stay in var/chaos/ for a closer look.
"""

import argparse
import asyncio
import json
import multiprocessing
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.deliveries import Receiver  # noqa: E402 - after the path is set
from tests.hubprocess import (  # noqa: E402
    Device,
    Gunicorn,
    HubApi,
    admin_api_token,
    hub_env,
    prepare_database,
    terminate,
)
from tests.pgcluster import PrivateCluster, free_port  # noqa: E402

THRESHOLD = 15.0
RECIPIENTS = 3  # webhooks per event
LOG_DIR = ROOT / "var" / "chaos"


# --- The clients -----------------------------------------------------------------------------------


@dataclass
class ClientReport:
    # (sender, sent at, answered at, outcome): outcome "201", "503", another status, or "connection"
    attempts: list[tuple[int, float, float, str]] = field(default_factory=list)
    # (seq, reading ids) of every acknowledged message
    acknowledged: list[tuple[int, list[int]]] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)  # 4xx: (seq, answer)
    abandoned: list[int] = field(default_factory=list)  # never acknowledged within the grace time


async def _post(session, url, device: Device, body: bytes, key: str) -> tuple[str, float, dict | None]:
    """One attempt: (outcome, seconds to wait before the next, the 201's reply)."""
    headers = {"Authorization": f"Bearer {device.token}", "Content-Type": "application/json", "Idempotency-Key": key}
    try:
        async with session.post(f"{url}/api/v1/telemetry/", data=body, headers=headers) as response:
            payload = await response.read()
            if response.status == 201:
                return "201", 0.0, json.loads(payload)
            retry_after = response.headers.get("Retry-After", "")
            wait = min(float(retry_after), 10.0) if retry_after.isdigit() else 1.0
            return str(response.status), wait, None
    except (aiohttp.ClientError, TimeoutError):
        return "connection", 1.0, None


async def _client(index, url, devices, args, stop, report: ClientReport) -> None:
    interval = args.clients * len(devices) / args.rate  # seconds between one sender's messages
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=len(devices))) as session:

        async def sender(number: int, device: Device) -> None:
            sender_id = index * 1000 + number
            await asyncio.sleep(random.uniform(0, interval))
            for n in range(10**9):
                if stop.is_set():
                    return
                due = time.time() + interval
                seq = sender_id * 10**6 + n
                over = random.random() < args.events
                vibration = 18.0 if over else round(random.uniform(2, 12), 2)
                metrics = {"vibration": vibration, "seq": seq}  # seq: which message a stored row is
                message = {"version": "0.0.1", "serial_number": device.serial_number, "metrics": metrics}
                body = json.dumps(message).encode()
                key = uuid.uuid4().hex  # one key per message, the same on every retry of it
                give_up_at = None
                while True:
                    sent = time.time()
                    outcome, wait, reply = await _post(session, url, device, body, key)
                    report.attempts.append((sender_id, sent, time.time(), outcome))
                    if outcome == "201":
                        report.acknowledged.append((seq, [r["id"] for r in reply["readings"]]))
                        break
                    if outcome.startswith("4"):
                        report.refused.append((seq, outcome))
                        break
                    if stop.is_set():
                        give_up_at = give_up_at or time.time() + args.grace
                        if time.time() > give_up_at:
                            report.abandoned.append(seq)
                            return
                    await asyncio.sleep(wait)
                # Paced, without catching up: a sender held up by an outage does not then burst.
                await asyncio.sleep(max(0.0, due - time.time()))

        await asyncio.gather(*(sender(n, device) for n, device in enumerate(devices)))


def client_process(index, url, devices, args, stop, results) -> None:
    report = ClientReport()
    asyncio.run(_client(index, url, devices, args, stop, report))
    results.put(report)


# --- The workers -----------------------------------------------------------------------------------


class Worker:
    """`manage.py run_worker`, its database connections named so that the benchmark can see what
    it holds."""

    def __init__(self, env: dict[str, str], name: str):
        self.name = name
        self.env = {**env, "DATABASE_URL": f"{env['DATABASE_URL']}?application_name={name}", "LOG_LEVEL": "INFO"}
        self.log_path = LOG_DIR / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            command = [sys.executable, "manage.py", "run_worker"]
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while b"worker started" not in self.log_path.read_bytes()[offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not start; see {self.log_path}")
            time.sleep(0.1)

    def holding(self, conn: psycopg.Connection) -> int:
        """Transactions with a transaction id open on its connections: claimed deliveries being sent."""
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND backend_xid IS NOT NULL",
            [self.name],
        ).fetchone()[0]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        terminate(self.process)


# --- The run ---------------------------------------------------------------------------------------


@dataclass
class Disruption:
    kind: str  # "db" or "worker"
    started: float  # the stop or the kill
    back: float  # the database accepting connections again, or the worker restarted
    held: int = 0  # worker: deliveries it held when killed
    redone_seconds: float | None = None  # worker: until every delivery pending at the kill was sent


def disrupt_database(cluster: PrivateCluster, down: float) -> Disruption:
    started = time.time()
    cluster.stop("immediate")
    time.sleep(down)
    cluster.start()
    return Disruption("db", started, time.time())


def disrupt_worker(victim: Worker, url: str) -> Disruption:
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while (held := victim.holding(conn)) == 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"{victim.name} never held a delivery within 30 s: is the load on?")
            time.sleep(0.005)
        started = time.time()
        victim.kill()
        pending = [r[0] for r in conn.execute("SELECT id FROM notification_deliveries WHERE status = 'pending'")]
        disruption = Disruption("worker", started, started, held=held)

        def restart() -> None:
            time.sleep(1)  # a supervisor's restart delay
            victim.start()
            disruption.back = time.time()

        supervisor = threading.Thread(target=restart)
        supervisor.start()
        deadline = time.monotonic() + 60
        while conn.execute(
            "SELECT count(*) FROM notification_deliveries WHERE id = ANY(%s) AND status = 'pending'", [pending]
        ).fetchone()[0]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            disruption.redone_seconds = time.time() - started
        supervisor.join()
    return disruption


def wait_for_drained_queue(url: str, timeout: float) -> int:
    """Pending deliveries left once the queue is empty or `timeout` has passed."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            pending = conn.execute("SELECT count(*) FROM notification_deliveries WHERE status = 'pending'").fetchone()
            if pending[0] == 0 or time.monotonic() > deadline:
                return pending[0]
            time.sleep(0.2)


def check_tables(url: str, acknowledged_ids: list[int]) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM telemetry WHERE id = ANY(%s)", [acknowledged_ids]).fetchone()[0]
        duplicates = conn.execute(
            """
            SELECT count(*), COALESCE(sum(n - 1), 0) FROM (
                SELECT count(*) AS n FROM telemetry GROUP BY payload -> 'metrics' ->> 'seq' HAVING count(*) > 1
            ) AS repeated
            """
        ).fetchone()
        stored = conn.execute("SELECT count(*) FROM telemetry").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        without_event = conn.execute(
            """
            SELECT count(*) FROM telemetry t
            WHERE (t.payload -> 'metrics' ->> 'vibration')::numeric > %s
              AND NOT EXISTS (SELECT 1 FROM events e WHERE e.telemetry_id = t.id)
            """,
            [THRESHOLD],
        ).fetchone()[0]
        deliveries = dict(conn.execute("SELECT status, count(*) FROM notification_deliveries GROUP BY status"))
        short = conn.execute(
            """
            SELECT count(*) FROM events e
            WHERE (SELECT count(*) FROM notification_deliveries d WHERE d.event_id = e.id) < %s
            """,
            [RECIPIENTS],
        ).fetchone()[0]
        sent_ids = [r[0] for r in conn.execute("SELECT id FROM notification_deliveries WHERE status = 'sent'")]
    return {
        "acknowledged_lost": len(acknowledged_ids) - found,
        "duplicate_keys": duplicates[0],
        "duplicate_rows": duplicates[1],
        "stored": stored,
        "events": events,
        "without_event": without_event,
        "deliveries": deliveries,
        "events_short_of_deliveries": short,
        "sent_ids": sent_ids,
    }


def recovery(disruption: Disruption, attempts: list[tuple[int, float, float, str]], senders: set[int]) -> dict:
    """Seconds from the database's return to the first 201, and to every sender's first 201."""
    firsts: dict[int, float] = {}
    for sender, _sent, answered, outcome in attempts:
        if outcome == "201" and answered > disruption.back:
            firsts[sender] = min(firsts.get(sender, answered), answered)
    first = min(firsts.values(), default=None)
    every = max(firsts.values()) if set(firsts) == senders else None
    return {
        "first": None if first is None else first - disruption.back,
        "every": None if every is None else every - disruption.back,
    }


def rate(attempts, start: float, end: float) -> float:
    """201s per second answered between `start` and `end`."""
    return sum(1 for _s, _t, answered, outcome in attempts if outcome == "201" and start <= answered < end) / (
        end - start
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--senders", type=int, default=4, help="senders (devices) per client process")
    parser.add_argument("--rate", type=float, default=120.0, help="messages per second, all clients together")
    parser.add_argument("--events", type=float, default=0.1, help="share of readings over the rule's threshold")
    parser.add_argument("--plan", default="db,worker,db", help="disruptions in order: db, worker")
    parser.add_argument("--down", type=float, default=15.0, help="seconds PostgreSQL stays down")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before the first disruption")
    parser.add_argument("--between", type=float, default=10.0, help="seconds of load after each disruption")
    parser.add_argument("--grace", type=float, default=60.0, help="seconds a client keeps retrying after the end")
    args = parser.parse_args()
    plan = [step.strip() for step in args.plan.split(",") if step.strip()]
    if not set(plan) <= {"db", "worker"}:
        parser.error("--plan lists db and worker steps only")
    if args.between < 6:
        parser.error("--between must be at least 6 s: the rate after a restart is read over its last 5 s")

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    cluster = PrivateCluster()
    started_processes: list = []
    try:
        print("private PostgreSQL: initdb, migrate, setup_timescaledb ...", flush=True)
        cluster.start()
        url = prepare_database(cluster, "iothub")
        env = hub_env(url, LOG_LEVEL="INFO")
        token = admin_api_token(env)
        hub = Gunicorn(env, LOG_DIR / "gunicorn.log").start()
        started_processes.append(hub)
        receiver = Receiver(free_port(), delay=0.02)
        started_processes.append(receiver)
        api = HubApi(hub.url, token)
        kind = api.device_type_create("chaos")
        devices = [api.device_create(kind, f"CHAOS-{n:03d}") for n in range(args.clients * args.senders)]
        for device in devices:
            api.webhook_rule_create(device, *(receiver.url(f"/r{n}") for n in range(RECIPIENTS)), threshold=THRESHOLD)
        api.close()
        workers = [Worker(env, f"chaos-worker-{n}") for n in (1, 2)]
        for worker in workers:
            worker.start()
            started_processes.append(worker)
        print(
            f"hub: gunicorn -c gunicorn.conf.py on {hub.url}, 2 workers; {len(devices)} devices; "
            f"{args.clients} client processes at {args.rate:.0f} msg/s in all; plan {','.join(plan)}",
            flush=True,
        )

        context = multiprocessing.get_context("fork")
        stop, results = context.Event(), context.Queue()
        clients = [
            context.Process(
                target=client_process,
                args=(i, hub.url, devices[i * args.senders : (i + 1) * args.senders], args, stop, results),
            )
            for i in range(args.clients)
        ]
        load_started = time.time()
        for client in clients:
            client.start()
        started_processes.extend(clients)
        time.sleep(args.warmup)
        baseline_window = (load_started + 2, time.time())
        disruptions = []
        for step in plan:
            print(f"  {time.time() - load_started:5.1f} s: {step} ...", flush=True)
            if step == "db":
                disruptions.append(disrupt_database(cluster, args.down))
            else:
                disruptions.append(disrupt_worker(workers[0], url))
            time.sleep(args.between)
        stop.set()
        load_ended = time.time()
        reports = [results.get() for _ in clients]
        for client in clients:
            client.join()
        left = wait_for_drained_queue(url, timeout=120)
        arrived = receiver.stats()
        tables = check_tables(url, [i for report in reports for _, ids in report.acknowledged for i in ids])
    finally:
        for process in reversed(started_processes):
            if isinstance(process, multiprocessing.process.BaseProcess):
                if process.is_alive():
                    process.terminate()
                    process.join()
            else:
                process.stop()
        cluster.destroy()

    attempts = [a for report in reports for a in report.attempts]
    timeline = {"load_started": load_started, "disruptions": [vars(d) for d in disruptions], "attempts": attempts}
    (LOG_DIR / "attempts.json").write_text(json.dumps(timeline))
    senders = {sender for sender, *_ in attempts}
    outcomes: dict[str, int] = {}
    for *_, outcome in attempts:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    server_errors = sum(n for outcome, n in outcomes.items() if outcome.startswith("5") and outcome != "503")
    acknowledged = sum(len(report.acknowledged) for report in reports)
    refused = [r for report in reports for r in report.refused]
    abandoned = sum(len(report.abandoned) for report in reports)
    sent_ids = set(tables["sent_ids"])
    arrived_ids = {int(key.split("_")[1]) for key in arrived["arrivals"] if key.startswith("ntf_")}
    never_arrived = len(sent_ids - arrived_ids)
    repeats = arrived["count"] - len(arrived["arrivals"])
    not_sent = sum(n for status, n in tables["deliveries"].items() if status != "sent")
    deliveries_lost = not_sent + tables["without_event"] + tables["events_short_of_deliveries"] + never_arrived
    baseline = rate(attempts, *baseline_window)

    print()
    print("Figures taken on a machine shared with other work: expect them to move between runs.")
    print(
        f"load: {load_ended - load_started:.0f} s, {acknowledged} messages acknowledged, "
        f"{len(attempts)} requests; baseline before the first disruption {baseline:.0f} msg/s"
    )
    print(f"acknowledged-but-lost:       {tables['acknowledged_lost']}  (must be 0)")
    print(f"5xx answers other than 503:  {server_errors}  (must be 0)")
    print(f"503 answers:                 {outcomes.get('503', 0)}  (retried after Retry-After)")
    print(f"connection errors:           {outcomes.get('connection', 0)}  (retried)")
    print(f"refused (4xx):               {len(refused)}  {refused[:3]}")
    print(f"never acknowledged:          {abandoned}  (still failing {args.grace:.0f} s after the end)")
    print(
        f"duplicates:                  {tables['duplicate_keys']} keys stored more than once "
        f"({tables['duplicate_rows']} extra rows of {tables['stored']}; must be 0: retries keep their Idempotency-Key)"
    )
    print(
        f"deliveries lost:             {deliveries_lost}  (must be 0: {not_sent} not sent "
        f"{tables['deliveries']}, {tables['without_event']} readings over the threshold without an event, "
        f"{tables['events_short_of_deliveries']} events short of deliveries, "
        f"{never_arrived} marked sent and never arrived)"
    )
    print(
        f"events {tables['events']}, webhooks received {arrived['count']}, "
        f"repeated {repeats} (at-least-once, same webhook-id); {left} still pending after the drain"
    )
    for number, disruption in enumerate(disruptions, 1):
        if disruption.kind == "db":
            found = recovery(disruption, attempts, senders)
            # The last 5 s before the next step: back to the baseline rate, or not.
            window_end = disruption.back + args.between
            after = rate(attempts, window_end - 5, window_end) / baseline if baseline else float("nan")
            first = "never" if found["first"] is None else f"{found['first']:.2f} s"
            every = "never" if found["every"] is None else f"{found['every']:.2f} s"
            print(
                f"disruption {number}, PostgreSQL -m immediate, down {disruption.back - disruption.started:.1f} s: "
                f"first 201 {first} after it was back, every sender's {every}; "
                f"rate {args.between - 5:.0f}-{args.between:.0f} s after its return / baseline {after:.2f}"
            )
        else:
            redone = "not within 60 s" if disruption.redone_seconds is None else f"{disruption.redone_seconds:.2f} s"
            print(
                f"disruption {number}, worker SIGKILLed holding {disruption.held} deliveries: every delivery "
                f"pending at the kill sent {redone} after it (the other worker carrying on; the killed one "
                f"restarted after 1 s, serving again {disruption.back - disruption.started:.1f} s after the kill)"
            )
    if tables["acknowledged_lost"] or server_errors or deliveries_lost:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
