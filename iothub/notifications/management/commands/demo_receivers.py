"""`python manage.py demo_receivers`: a local SMTP server and webhook receiver that print what the
hub sends them, verifying each webhook's Standard Webhooks signature.

For the demo (`./scripts/run --demo-alerts` starts it) and for trying a notification setup by hand.
Not a production mail server: it keeps nothing.
"""

import json
import signal
import threading
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from standardwebhooks import Webhook, WebhookVerificationError


class _PrintingSmtpHandler:
    def __init__(self, write):
        self.write = write

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content, policy=policy.default)
        body = message.get_body(preferencelist=("plain",))
        self.write(
            f"email to {', '.join(envelope.rcpt_tos)}: {message['Subject']}\n"
            + "\n".join(f"    {line}" for line in (body.get_content() if body else "").strip().splitlines())
        )
        return "250 Message accepted for delivery"


def _webhook_handler(verifier: Webhook | None, write):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            if verifier is None:
                verdict = "unverified (no IOTHUB_WEBHOOK_SECRET)"
            else:
                try:
                    verifier.verify(body, headers)
                    verdict = "signature verified"
                except WebhookVerificationError as error:
                    verdict = f"SIGNATURE REFUSED ({error})"
            try:
                summary = json.dumps(json.loads(body), indent=2, sort_keys=True)
            except ValueError:
                summary = body.decode(errors="replace")
            write(
                f"webhook {self.path} id {headers.get('webhook-id')}: {verdict}\n"
                + "\n".join(f"    {line}" for line in summary.splitlines())
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, format, *args):
            pass  # the summary above is the log

    return Handler


class Command(BaseCommand):
    help = "Run a local SMTP server and webhook receiver that print what the hub sends them."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--smtp-port", type=int, default=1025)
        parser.add_argument("--webhook-port", type=int, default=9000)

    def handle(self, *args, host: str, smtp_port: int, webhook_port: int, **options):
        lock = threading.Lock()

        def write(text: str) -> None:
            with lock:
                self.stdout.write(text)
                self.stdout.flush()

        secret = settings.IOTHUB_WEBHOOK_SECRET
        verifier = Webhook(secret) if secret.startswith("whsec_") else None
        smtp = Controller(_PrintingSmtpHandler(write), hostname=host, port=smtp_port)
        try:
            smtp.start()
            webhooks = ThreadingHTTPServer((host, webhook_port), _webhook_handler(verifier, write))
        except OSError as error:
            smtp.stop(no_assert=True)
            raise CommandError(f"cannot listen on {host}: {error}") from None
        write(f"demo receivers: SMTP on {host}:{smtp_port}, webhooks on http://{host}:{webhook_port}/")
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=webhooks.shutdown).start())
        try:
            webhooks.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            webhooks.server_close()
            smtp.stop()
