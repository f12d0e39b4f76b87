#!/usr/bin/env python3
"""OSCORE interop probe: protects telemetry requests with aiocoap's OSCORE
implementation (not inkan's) and sends them to an inkan service.

Usage: oscore_interop.py CONTEXT_DIR HOST PORT PAYLOAD_HEX

CONTEXT_DIR holds an aiocoap FilesystemSecurityContext (settings.json) made
from an inkan EDHOC session. Two requests go out: one as aiocoap protected
it, one with a bit of its ciphertext flipped. Prints one JSON object with,
for each, the outer response code and, when the response is protected, the
code and payload aiocoap decrypted from it.
"""

import json
import socket
import sys

from aiocoap import CON, POST, Message
from aiocoap.oscore import FilesystemSecurityContext


def main() -> int:
    ctxdir, host, port, payload_hex = sys.argv[1:5]
    ctx = FilesystemSecurityContext(ctxdir)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    result = {}
    for n, name in enumerate(("valid", "tampered")):
        request = Message(
            code=POST,
            uri_path=("telemetry",),
            payload=bytes.fromhex(payload_hex),
        )
        protected, request_id = ctx.protect(request)
        protected.mtype = CON
        protected.mid = 0x4A00 + n
        protected.token = bytes([0x42, n])
        wire = bytearray(protected.encode())
        if name == "tampered":
            wire[-1] ^= 0x01
        sock.send(bytes(wire))
        response = Message.decode(sock.recv(65535))
        entry = {"code": response.code.dotted}
        if response.opt.oscore is not None:
            inner, _ = ctx.unprotect(response, request_id)
            entry["inner_code"] = inner.code.dotted
            entry["inner_payload_hex"] = inner.payload.hex()
        else:
            entry["diagnostic"] = response.payload.decode("utf-8", "replace")
        result[name] = entry
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
