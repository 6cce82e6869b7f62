"""Verifies a Standard Webhooks ed25519 signature (v1a) independently of hookd, with the
`cryptography` package: the signed content is "{webhook-id}.{webhook-timestamp}.{body}".

usage: verify_ed25519.py PUBLIC_KEY WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE BODY_FILE
Prints "verified" and exits 0 when one v1a signature in the header verifies, else exits 1.
"""
import base64
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

public, msg_id, timestamp, header, body_file = sys.argv[1:]
with open(body_file, "rb") as f:
    body = f.read()
if not public.startswith("whpk_"):
    sys.exit("public key must start with whpk_")
key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public[len("whpk_"):]))
content = f"{msg_id}.{timestamp}.".encode() + body
for part in header.split(" "):
    version, _, signature = part.partition(",")
    if version != "v1a":
        continue
    try:
        key.verify(base64.b64decode(signature), content)
    except InvalidSignature:
        continue
    print("verified")
    sys.exit(0)
print("no v1a signature verifies")
sys.exit(1)
