#!/usr/bin/env python3
"""Device flow (RFC 8628) with DPoP (RFC 9449) against a running `sealkit demo`, from a
client nobody on this project wrote the HTTP side of: `requests` for HTTP, `cryptography`
for the P-256 key and the ES256 signature of each proof.

The device part asks /device_authorization for codes and polls /token with a fresh
proof each time; the person is scripted with a second `requests` session that signs in on
the verification page and approves. Then: the tokens are DPoP-bound (cnf.jkt = the
RFC 7638 thumbprint computed here), a refresh with the same key rotates, a refresh with
another key is refused.

Run by scripts/external-client.sh with demo.env in the environment.
Prints one line per check; exits non-zero on the first failure.
"""
import base64
import hashlib
import json
import os
import re
import sys
import threading
import time
import uuid

import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PASSED = 0


def ok(what):
    global PASSED
    PASSED += 1
    print(f"ok   {what}")


def check(cond, what, detail=""):
    if cond:
        ok(what)
    else:
        print(f"FAIL {what}\n  {detail}")
        print(f"python device-flow client: {PASSED} passed, 1 failed")
        sys.exit(1)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class ProofKey:
    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        numbers = self.key.public_key().public_numbers()
        self.jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64u(numbers.x.to_bytes(32, "big")),
            "y": b64u(numbers.y.to_bytes(32, "big")),
        }

    def thumbprint(self) -> str:
        canonical = json.dumps(
            {k: self.jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
        )
        return b64u(hashlib.sha256(canonical.encode()).digest())

    def proof(self, method: str, url: str, nonce=None) -> str:
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}
        claims = {"jti": str(uuid.uuid4()), "htm": method, "htu": url, "iat": int(time.time())}
        if nonce:
            claims["nonce"] = nonce
        signing_input = (
            b64u(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64u(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def jwt_payload(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def field(html: str, name: str) -> str:
    m = re.search(f'name="{name}" value="([^"]*)"', html)
    return m.group(1) if m else ""


def person_approves(verification_uri_complete, ca, user, password, done):
    """The scripted person: open the page, sign in with the code, approve."""
    s = requests.Session()  # keeps the session cookie between the pages
    # verify= on each call: a REQUESTS_CA_BUNDLE in the environment would override s.verify.
    page = s.get(verification_uri_complete, verify=ca)
    code = field(page.text, "user_code")
    signed_in = s.post(
        verification_uri_complete.split("?")[0],
        data={"csrf": field(page.text, "csrf"), "user_code": code, "username": user, "password": password},
        verify=ca,
    )
    approved = s.post(
        verification_uri_complete.split("?")[0] + "/decision",
        data={"csrf": field(signed_in.text, "csrf"), "user_code": code, "decision": "approve"},
        verify=ca,
    )
    done.append((signed_in.status_code, approved.status_code))


def main():
    env = os.environ
    ca = env["SEALKIT_CA_FILE"]
    issuer = env["SEALKIT_ISSUER"]
    client_id = env["SEALKIT_CLI_CLIENT_ID"]
    meta = requests.get(f"{issuer}/.well-known/oauth-authorization-server", verify=ca).json()
    device_url = meta.get("device_authorization_endpoint")
    token_url = meta["token_endpoint"]
    check(
        device_url and "urn:ietf:params:oauth:grant-type:device_code" in meta["grant_types_supported"],
        "discovery: device_authorization_endpoint and the device_code grant",
        json.dumps(meta),
    )

    key = ProofKey()
    r = requests.post(device_url, data={"client_id": client_id}, verify=ca)
    check(r.status_code == 200, "device authorization: codes issued", r.text)
    codes = r.json()
    for name in ("device_code", "user_code", "verification_uri", "expires_in", "interval"):
        check(name in codes, f"device authorization: {name} present", r.text)

    def poll(proof_key):
        return requests.post(
            token_url,
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": codes["device_code"],
                "client_id": client_id,
            },
            headers={"DPoP": proof_key.proof("POST", token_url)},
            verify=ca,
        )

    first = poll(key)
    check(first.json().get("error") == "authorization_pending", "before approval: authorization_pending", first.text)
    fast = poll(key)
    check(fast.json().get("error") == "slow_down", "polling faster than the interval: slow_down", fast.text)

    done = []
    t = threading.Thread(
        target=person_approves,
        args=(codes["verification_uri_complete"], ca, env["SEALKIT_USER"], env["SEALKIT_USER_PASSWORD"], done),
    )
    t.start()
    t.join()
    check(done == [(200, 200)], "the person signed in and approved on the verification page", str(done))

    interval = codes["interval"] + 5  # after slow_down
    deadline = time.time() + 60
    while True:
        time.sleep(interval)
        r = poll(key)
        body = r.json()
        if r.status_code == 200:
            break
        check(body.get("error") in ("authorization_pending", "slow_down") and time.time() < deadline,
              "polling until approved", r.text)
        if body.get("error") == "slow_down":
            interval += 5
    check(body["token_type"] == "DPoP", "token_type DPoP", r.text)
    check(jwt_payload(body["access_token"])["cnf"]["jkt"] == key.thumbprint(),
          "access token cnf.jkt = RFC 7638 thumbprint of the proof key", r.text)
    check(jwt_payload(body["access_token"])["sub"] == env["SEALKIT_USER"], "sub is the user who approved")
    check("refresh_token" in body, "a DPoP-bound refresh token", r.text)

    again = poll(key)
    check(again.json().get("error") == "invalid_grant", "the device code works once", again.text)

    def refresh(proof_key, token):
        return requests.post(
            token_url,
            data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
            headers={"DPoP": proof_key.proof("POST", token_url)},
            verify=ca,
        )

    stolen = refresh(ProofKey(), body["refresh_token"])
    check(stolen.status_code in (400, 401) and stolen.json().get("error") == "invalid_dpop_proof",
          "refresh with another DPoP key refused", stolen.text)
    rotated = refresh(key, body["refresh_token"])
    check(rotated.status_code == 200 and rotated.json()["refresh_token"] != body["refresh_token"],
          "refresh with the bound key rotates", rotated.text)
    reused = refresh(key, body["refresh_token"])
    check(reused.json().get("error") == "invalid_grant", "reuse of the old refresh token refused", reused.text)
    after = refresh(key, rotated.json()["refresh_token"])
    check(after.json().get("error") == "invalid_grant", "after reuse the rotated refresh token is dead too", after.text)
    print(f"python device-flow client: {PASSED} passed, 0 failed")


if __name__ == "__main__":
    main()
