"""Tokens for signed tags made and checked by PyJWT, an implementation independent of tagcast's
(tests/tokens.rs runs it from a venv with PyJWT and cryptography).

  pyjwt_tool.py mint SPEC     prints a token; SPEC is JSON:
      {"alg": "HS256" | "HS384" | "ES256" | "EdDSA" | "none" | "HS256-raw",
       "key": secret or PEM private key text (unused for none),
       "kid": application key or null (no kid header), "claims": {...}}
      "HS256-raw" signs HS256 with the key's bytes by hand (hmac module): PyJWT rightly refuses
      to use a PEM as an HMAC secret, which is the forgery the server must refuse.
  pyjwt_tool.py verify TOKEN ALG KEY
      verifies TOKEN (signature, exp) with KEY (secret or PEM public key) for ALG only; prints
      {"header": ..., "claims": ...} as JSON; exits 1 when PyJWT refuses it.
"""
import base64
import hashlib
import hmac
import json
import sys

import jwt


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(spec: dict) -> str:
    alg, key, kid, claims = spec["alg"], spec.get("key"), spec.get("kid"), spec["claims"]
    headers = {} if kid is None else {"kid": kid}
    if alg == "HS256-raw":
        header = {"alg": "HS256", "typ": "JWT", **headers}
        signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + b64url(signature)
    if alg == "none":
        return jwt.encode(claims, None, algorithm="none", headers=headers)
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def verify(token: str, alg: str, key: str) -> dict:
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, key, algorithms=[alg], options={"require": ["exp"]})
    return {"header": header, "claims": claims}


def main() -> int:
    command = sys.argv[1]
    if command == "mint":
        print(mint(json.loads(sys.argv[2])))
        return 0
    if command == "verify":
        try:
            print(json.dumps(verify(sys.argv[2], sys.argv[3], sys.argv[4])))
        except jwt.PyJWTError as error:
            print(f"refused: {error}", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
