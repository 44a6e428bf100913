"""MQTT ingest benchmark: the hub's Mosquitto and `manage.py run_ingest`, loaded by devices
publishing single-reading messages at QoS 1 from a separate process (bench/mqttgen.py).

    ./scripts/bench mqtt                       # builds the environment first if needed
    ./scripts/bench mqtt --messages 60000 --devices 500

It creates a scratch database `iothub_bench` on the PostgreSQL server of DATABASE_URL with the
devices, writes the hub's broker configuration into var/bench-mqtt, starts `mosquitto` with it, and
measures:

  (a)  committed messages/s with one consumer: --messages sent as fast as the broker takes them,
       from the first publish to the last row visible in the table;
  (a2) the same with two consumers sharing the subscription;
  (b)  p50/p99 publish -> commit (row visible) at a fixed 1,000 messages/s, one consumer, overall
       and per 5 s window (the disk's fsync outliers come and go);
  (k)  2,000 messages/s while the consumer is SIGKILLed and started again under the same client id;
  (c)  in the same run, a raw COPY of as many rows into a scratch hypertable with the same indexes;

and checks that every publish the broker acknowledged is in the table exactly once (it fails
otherwise). CPU time of the generator and of the consumers is printed beside each figure: on two
shared cores, everything here competes with PostgreSQL.
"""

import argparse
import contextlib
import multiprocessing
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mqttgen
import psycopg
from ingest import BENCH_DB, bench_database_url, copy_limit, prepare_database

ROOT = Path(__file__).resolve().parent.parent
MQTT_DIR = ROOT / "var" / "bench-mqtt"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Consumer:
    def __init__(self, env: dict, client_id: str):
        self.ready = MQTT_DIR / f"{client_id}.ready"
        self.client_id = client_id
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> "Consumer":
        self.ready.unlink(missing_ok=True)
        log = open(MQTT_DIR / f"{self.client_id}.log", "a")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_ingest", "--client-id", self.client_id, "--ready-file", str(self.ready)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the consumer did not start; see {MQTT_DIR / (self.client_id + '.log')}")
            time.sleep(0.05)
        return self

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def generate(queue, host, port, devices, seqs, rate):
    queue.put(mqttgen.run(host, port, devices, seqs, rate=rate))


def publish(port: int, devices, seqs, rate=None) -> multiprocessing.Process:
    queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=generate, args=(queue, "127.0.0.1", port, devices, seqs, rate))
    process.start()
    process.queue = queue
    return process


def results_of(process) -> mqttgen.Results:
    results = process.queue.get()
    process.join()
    ACKNOWLEDGED.update(results.acked)
    return results


class Visible:
    """When each seq's row became visible, polled by id (one consumer commits in id order)."""

    def __init__(self, database_url: str):
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.last_id = self.conn.execute("SELECT coalesce(max(id), 0) FROM telemetry").fetchone()[0]
        self.seen: dict[int, float] = {}

    def poll(self) -> int:
        rows = self.conn.execute(
            "SELECT id, (payload->'metrics'->>'seq')::bigint FROM telemetry WHERE id > %s ORDER BY id",
            (self.last_id,),
            prepare=True,
        ).fetchall()
        now = time.monotonic()
        for row_id, seq in rows:
            self.seen.setdefault(seq, now)
            self.last_id = row_id
        return len(rows)

    def wait_for(self, count: int, *, interval: float, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            self.poll()
            time.sleep(interval)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


ACKNOWLEDGED: set[int] = set()  # every publish the broker acknowledged, all phases


def throughput(label, port, devices, seqs, database_url, consumers) -> tuple[float, mqttgen.Results]:
    """Rows counted, not read by id: two consumers commit out of id order."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        count = "SELECT count(*) FROM telemetry WHERE id > %s"
        start_id = conn.execute("SELECT coalesce(max(id), 0) FROM telemetry").fetchone()[0]
        cpu_before = [c.cpu() for c in consumers]
        process = publish(port, devices, seqs)
        found, last = 0, time.monotonic()
        deadline = time.monotonic() + 300
        while found < len(seqs) and time.monotonic() < deadline:
            time.sleep(0.02)
            now = conn.execute(count, (start_id,), prepare=True).fetchone()[0]
            if now > found:
                found, last = now, time.monotonic()
    results = results_of(process)
    first = min(results.sent_at.values())
    rate = found / (last - first)
    cpu = ", ".join(f"{(c.cpu() - b) / (last - first) * 100:.0f}%" for c, b in zip(consumers, cpu_before, strict=True))
    print(
        f"{label:<46} {rate:8.0f} msg/s  ({found} of {len(seqs)} in {last - first:.1f} s; "
        f"consumer CPU {cpu} of a core; generator {results.cpu_seconds / results.elapsed * 100:.0f}%)",
        flush=True,
    )
    return rate, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--messages", type=int, default=60_000, help="messages for (a) and (a2)")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of (b)")
    parser.add_argument("--rate", type=float, default=1000.0, help="the fixed rate of (b)")
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if mosquitto is None:
        raise SystemExit("mosquitto is not installed (Debian: apt-get install mosquitto)")

    base_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/iothub")
    database_url = bench_database_url(base_url)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or uuid.uuid4().hex * 2,
        "DEBUG": "false",
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
        "IOTHUB_MQTT_PORT": str(port),
        "IOTHUB_MQTT_PASSWORD": uuid.uuid4().hex,
    }
    env.pop("IOTHUB_MQTT_BROKER_DIR", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    shutil.rmtree(MQTT_DIR, ignore_errors=True)
    MQTT_DIR.mkdir(parents=True)

    print(f"preparing {BENCH_DB}: {args.devices} devices ...", flush=True)
    devices = prepare_database(base_url, env, devices=args.devices)
    broker_env = {**env, "IOTHUB_MQTT_BROKER_DIR": str(MQTT_DIR), "IOTHUB_MQTT_BROKER_PID_FILE": str(MQTT_DIR / "pid")}
    subprocess.run([sys.executable, "manage.py", "mqtt_broker_config"], cwd=ROOT, env=broker_env, check=True)
    broker_log = open(MQTT_DIR / "mosquitto.log", "w")  # noqa: SIM115
    broker = subprocess.Popen([mosquitto, "-c", str(MQTT_DIR / "mosquitto.conf")], stderr=broker_log)
    time.sleep(0.5)
    print(f"broker: mosquitto on 127.0.0.1:{port}; consumers: manage.py run_ingest; {len(devices)} connections\n")

    seq = iter(range(10**9))
    consumers = []
    try:
        one = Consumer(env, "bench-1").start()
        consumers.append(one)
        throughput("warm-up", port, devices, [next(seq) for _ in range(3000)], database_url, [one])

        a, _ = throughput("(a)  as fast as possible, 1 consumer", port, devices,
                          [next(seq) for _ in range(args.messages)], database_url, [one])  # fmt: skip
        two = Consumer(env, "bench-2").start()
        consumers.append(two)
        a2, _ = throughput("(a2) as fast as possible, 2 consumers", port, devices,
                           [next(seq) for _ in range(args.messages)], database_url, [one, two])  # fmt: skip
        two.stop()
        # consumer bench-2 keeps its share of new messages while away: retired for (b) and (k).
        subprocess.run(
            [sys.executable, "manage.py", "run_ingest", "--client-id", "bench-2", "--retire"],
            cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        # (b) latency at a fixed rate
        seqs = [next(seq) for _ in range(int(args.rate * args.seconds))]
        visible = Visible(database_url)
        process = publish(port, devices, seqs, rate=args.rate)
        results = None
        while results is None:  # the generator's results come at its end: read them while polling
            visible.poll()
            with contextlib.suppress(queue.Empty):
                results = process.queue.get(timeout=0.002)
        process.join()
        ACKNOWLEDGED.update(results.acked)
        visible.wait_for(len(seqs), interval=0.002, timeout=30)
        latencies = [
            (results.sent_at[s], (visible.seen[s] - results.sent_at[s]) * 1000) for s in seqs if s in visible.seen
        ]
        start = min(t for t, _ in latencies)
        windows: dict[int, list[float]] = {}
        for sent, ms in latencies:
            windows.setdefault(int((sent - start) // 5), []).append(ms)
        values = [ms for _, ms in latencies]
        print(
            f"(b)  publish -> commit at a fixed {args.rate:.0f}/s, 1 consumer: p50 {percentile(values, 50):.1f} ms  "
            f"p99 {percentile(values, 99):.1f} ms  max {max(values):.0f} ms  ({len(values)} messages, generator "
            f"{results.late * 1000:.0f} ms behind at worst, "
            f"{results.cpu_seconds / results.elapsed * 100:.0f}% of a core)",
            flush=True,
        )
        print(f"{'':5}p99 per 5 s window: " + ", ".join(f"{percentile(w, 99):.0f}" for w in windows.values()) + " ms")
        print(
            f"{'':5}median per 5 s window: "
            + ", ".join(f"{statistics.median(w):.1f}" for w in windows.values())
            + " ms"
        )

        # (k) SIGKILL mid-run
        seqs = [next(seq) for _ in range(20_000)]
        process = publish(port, devices, seqs, rate=2000.0)
        time.sleep(3.0)
        one.kill()
        time.sleep(1.0)
        one = Consumer(env, "bench-1").start()
        consumers[0] = one
        results = results_of(process)
        print(f"(k)  2,000/s for 10 s, the consumer SIGKILLed at 3 s and started again at 4 s: "
              f"{len(results.acked)} acknowledged by the broker", flush=True)  # fmt: skip
        deadline = time.monotonic() + 60
        with psycopg.connect(database_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                found = conn.execute(
                    "SELECT count(*) FROM telemetry WHERE (payload->'metrics'->>'seq')::bigint BETWEEN %s AND %s",
                    (seqs[0], seqs[-1]),
                ).fetchone()[0]
                if found >= len(results.acked):
                    break
                time.sleep(0.2)
        time.sleep(1.0)
    finally:
        for consumer in consumers:
            consumer.stop()
        broker.send_signal(signal.SIGTERM)
        broker.wait(30)

    with psycopg.connect(database_url, autocommit=True) as conn:
        counts = dict(
            conn.execute("SELECT (payload->'metrics'->>'seq')::bigint, count(*) FROM telemetry GROUP BY 1").fetchall()
        )
        stored = sum(counts.values())
    killed_lost = [s for s in results.acked if counts.get(s, 0) == 0]
    lost = [s for s in ACKNOWLEDGED if counts.get(s, 0) == 0]
    doubled = [s for s, n in counts.items() if n > 1]
    print(
        f"     after the restart: lost {len(killed_lost)}, stored twice {sum(1 for s in doubled if s in results.acked)}"
    )

    c_one = copy_limit(database_url, [s for s, _ in devices], rows=50_000, streams=1)
    c_two = copy_limit(database_url, [s for s, _ in devices], rows=50_000, streams=2)
    c = max(c_one, c_two)
    print(f"(c)  raw COPY, same rows and indexes: {c:8.0f} rows/s  (1 stream {c_one:.0f}, 2 streams {c_two:.0f})")
    print(f"(a)/(c) = {a / c:.2f}    (a2)/(c) = {a2 / c:.2f}    (a2)/(a) = {a2 / a:.2f}")
    verdict = "OK" if not lost and not doubled else "LOST OR DOUBLED"
    print(
        f"acknowledged by the broker {len(ACKNOWLEDGED)}, found in the table {stored} "
        f"(missing {len(lost)}, stored twice {len(doubled)}): {verdict}"
    )
    if lost or doubled:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
