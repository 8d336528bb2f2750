"""A real SMTP server for sinks/tests/email.rs: aiosmtpd on 127.0.0.1 with STARTTLS
required before AUTH, AUTH required before mail, one login accepted.

usage: smtp_server.py PORT CERT_PEM KEY_PEM USER PASSWORD OUT_DIR

Mail to an address starting with "defer" is refused with 451 (transient). Each
accepted mail is written to OUT_DIR/NNNN.eml (the exact DATA bytes) and
OUT_DIR/NNNN.json (envelope, and whether the session had TLS and AUTH). Prints
"READY" once listening, then serves until killed.
"""

import json
import logging
import os
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, cert, key, user, password, out_dir = sys.argv[1:7]
# aiosmtpd itself warns about its own deprecated Session.login_data on every AUTH.
logging.getLogger("mail.log").setLevel(logging.ERROR)
lock = threading.Lock()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        if any(r.startswith("defer") for r in envelope.rcpt_tos):
            return "451 4.3.0 Try again later"
        with lock:
            n = len([f for f in os.listdir(out_dir) if f.endswith(".eml")])
            base = os.path.join(out_dir, f"{n:04d}")
            meta = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "tls": session.ssl is not None,
                "authenticated": bool(session.authenticated),
            }
            with open(base + ".json", "w") as f:
                json.dump(meta, f)
            with open(base + ".eml.tmp", "wb") as f:
                f.write(envelope.original_content)
            os.rename(base + ".eml.tmp", base + ".eml")
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == user.encode()
        and auth_data.password == password.encode()
    )
    return AuthResult(success=ok, handled=False)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(
    Handler(),
    hostname="127.0.0.1",
    port=int(port),
    tls_context=context,
    require_starttls=True,
    auth_required=True,
    auth_require_tls=True,
    authenticator=authenticator,
)
controller.start()
print("READY", flush=True)
threading.Event().wait()
