"""`manage.py simulate`: simulated machines sending realistic readings to a running hub.

    python manage.py simulate --devices 50 --rate 20 --duration 60 --anomalies 0.01 --create
    python manage.py simulate --transport mqtt ...    # through the MQTT broker instead of HTTP

The devices are `<prefix>-VIB-0001`, `<prefix>-TMP-0002`, `<prefix>-PRS-0003`, ... (vibration,
temperature and pressure in turn). A device created here gets one rule: its primary metric above
the type's range raises a critical event (cooldown 5 minutes) with a stop_machine action.

Device tokens are stored only hashed, so the simulator gives each of its devices a new token at
the start (the previous one stops working): it touches only devices with its prefix, never
others. It needs the hub's database (same DATABASE_URL) for that, and the hub's URL to post to.
"""

import logging
import random
import sys
import time
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

from iothub.devices.models import Device, DeviceType
from iothub.devices.services import device_create, device_rotate_token, device_type_create
from iothub.events.models import Event
from iothub.rules.models import Severity
from iothub.rules.services import rule_create
from iothub.simulator.profiles import TYPES, Machine, TypeSpec
from iothub.simulator.runner import MqttPublisher, SimulatedDevice, Simulation, Summary

LOCATIONS = ("Workshop A", "Workshop B", "Assembly hall", "Boiler room")


def _serial(prefix: str, spec: TypeSpec, number: int) -> str:
    return f"{prefix}-{spec.serial_prefix}-{number:04d}"


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise ValueError(text)
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(text)
    return value


class Command(BaseCommand):
    help = "Send realistic simulated readings through the hub's HTTP or MQTT ingest, with the devices' own tokens."

    def add_arguments(self, parser):
        parser.add_argument("--devices", type=_positive(int), default=10, help="How many devices (default 10).")
        parser.add_argument(
            "--rate", type=_positive(float), default=5.0, help="Messages per second, all devices together (default 5)."
        )
        parser.add_argument("--duration", type=_positive(float), default=60.0, help="Seconds to run (default 60).")
        parser.add_argument(
            "--anomalies", type=_fraction, default=0.01, help="Chance that a reading is an anomaly (default 0.01)."
        )
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000", help="The hub to post to (default http://127.0.0.1:8000)."
        )
        parser.add_argument(
            "--transport",
            choices=["http", "mqtt"],
            default="http",
            help="POST to the hub's HTTP ingest (default), or publish to its MQTT broker (docs/mqtt.md).",
        )
        parser.add_argument(
            "--mqtt",
            default="",
            help="The broker, mqtt://host:port (default: IOTHUB_MQTT_HOST and IOTHUB_MQTT_PORT).",
        )
        parser.add_argument("--create", action="store_true", help="Create missing devices (and their device types).")
        parser.add_argument("--prefix", default="SIM", help="Serial number prefix of the simulated devices (SIM).")
        parser.add_argument("--concurrency", type=_positive(int), default=4, help="Parallel senders (default 4).")
        parser.add_argument("--seed", type=int, default=None, help="Random seed, to replay the same readings.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (logs, CI).")

    def handle(self, *args, **options):
        # httpx logs every request at INFO: thousands of lines that would bury the progress bar.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        rng = random.Random(options["seed"])
        devices = self._devices(options, rng)
        publisher, target = None, options["url"]
        if options["transport"] == "mqtt":
            broker = urlsplit(options["mqtt"] or f"mqtt://{settings.IOTHUB_MQTT_HOST}:{settings.IOTHUB_MQTT_PORT}")
            publisher = MqttPublisher(host=broker.hostname, port=broker.port or 1883)
            target = f"mqtt://{broker.hostname}:{broker.port or 1883}"
        self.stdout.write(
            f"Simulating {len(devices)} devices at {options['rate']:g} messages/s for {options['duration']:g} s "
            f"against {target} (tokens of the {options['prefix']}- devices were renewed)."
        )
        simulation = Simulation(
            url=options["url"],
            devices=devices,
            rate=options["rate"],
            duration=options["duration"],
            concurrency=options["concurrency"],
            mqtt=publisher,
        )
        started = timezone.now()
        bar = tqdm(
            total=simulation.summary.planned,
            unit="msg",
            disable=options["no_progress"],
            file=sys.stderr,
            dynamic_ncols=True,
        )

        def progress(summary: Summary) -> None:
            bar.update(1)
            if summary.attempted % 20 == 0 or summary.attempted == summary.planned:
                bar.set_postfix(sent=summary.sent, rejected=summary.rejected, events=summary.events, refresh=False)

        simulation.on_result = progress
        try:
            summary = simulation.run()
        except ConnectionError as error:
            raise CommandError(f"{target}: {error}") from None
        finally:
            bar.close()
        if publisher is not None:
            # No reply lists the events over MQTT: those of these devices since the start, once the
            # hub has stored what the broker acknowledged.
            time.sleep(1.0)
            summary.events = Event.objects.filter(
                rule__device__serial_number__in=[d.serial_number for d in devices], timestamp__gte=started
            ).count()
        self._report(summary)
        if summary.failed and not summary.sent:
            raise CommandError(f"the hub at {target} stored nothing: {summary.errors[:1]}")

    def _devices(self, options, rng: random.Random) -> list[SimulatedDevice]:
        prefix = options["prefix"]
        wanted = [(n, TYPES[(n - 1) % len(TYPES)]) for n in range(1, options["devices"] + 1)]
        serials = {_serial(prefix, spec, n): (n, spec) for n, spec in wanted}
        with transaction.atomic():
            existing = {d.serial_number: d for d in Device.objects.filter(serial_number__in=serials)}
            missing = [serial for serial in serials if serial not in existing]
            if missing and not options["create"]:
                raise CommandError(
                    f"{len(missing)} of the {len(serials)} simulated devices do not exist "
                    f"(first: {missing[0]}); run with --create to create them."
                )
            types: dict[str, DeviceType] = {}
            tokens: dict[str, str] = {}
            for serial in serials:
                number, spec = serials[serial]
                if serial in existing:
                    tokens[serial] = device_rotate_token(device=existing[serial]).token
                    continue
                if spec.name not in types:
                    types[spec.name] = self._device_type(spec)
                created = device_create(
                    device_type=types[spec.name],
                    name=f"{spec.device_name} {number}",
                    serial_number=serial,
                    location=LOCATIONS[(number - 1) % len(LOCATIONS)],
                )
                tokens[serial] = created.token
                self._rule(created.device, types[spec.name])
            if missing:
                self.stdout.write(f"Created {len(missing)} devices ({missing[0]} ...).")
        result = []
        for serial, (_, spec) in serials.items():
            device = existing.get(serial)
            metric = device.device_type.metric_name if device else spec.metric_name
            machine = Machine(metric=metric, rng=random.Random(rng.random()), anomaly_rate=options["anomalies"])
            result.append(SimulatedDevice(serial_number=serial, token=tokens[serial], machine=machine))
        return result

    def _rule(self, device: Device, device_type: DeviceType) -> None:
        """A new simulated device watches its own range, so anomalies raise events (once per
        cooldown) and their stop_machine action shows on the dashboard."""
        if device_type.metric_max is None:
            return
        rule_create(
            device=device,
            name=f"{device_type.metric_name.capitalize()} above range",
            operator="gt",
            threshold=device_type.metric_max,
            action_config=[{"type": "stop_machine", "machine_id": f"M-{device.serial_number}"}],
            severity=Severity.CRITICAL,
            cooldown_minutes=5,
        )

    def _device_type(self, spec: TypeSpec) -> DeviceType:
        """The type by name if it exists (its range as the operator set it), else a new one."""
        found = DeviceType.objects.filter(name=spec.name).first()
        if found is not None:
            return found
        self.stdout.write(f"Created device type {spec.name} ({spec.metric_name} in {spec.metric_unit}).")
        return device_type_create(
            name=spec.name,
            metric_name=spec.metric_name,
            metric_unit=spec.metric_unit,
            metric_min=spec.metric_min,
            metric_max=spec.metric_max,
            description="Created by the simulator.",
        )

    def _report(self, summary: Summary) -> None:
        rate = summary.attempted / summary.elapsed if summary.elapsed else 0.0
        self.stdout.write(
            f"Summary: {summary.attempted} of {summary.planned} messages in {summary.elapsed:.1f} s ({rate:.1f}/s)\n"
            f"  sent      {summary.sent}\n"
            f"  rejected  {summary.rejected}\n"
            f"  failed    {summary.failed}\n"
            f"  anomalies {summary.anomalies}\n"
            f"  events raised {summary.events}"
        )
        if summary.errors:
            self.stdout.write("First errors:\n" + "\n".join(f"  {line}" for line in summary.errors))
