#!/usr/bin/env python3
"""Plays the platform's backend in the tests: issues keys into MongoDB and publish tokens, the
way docs/keys.md tells the backend's developers to (its Python snippets are run as they are),
and forges bad tokens.

Usage (with the test venv's python, which has pymongo, authx, PyJWT and cryptography):
  backend.py insert-key MONGO_URI STREAM USER_ID      prints the key
  backend.py revoke MONGO_URI STREAM
  backend.py authx SECRET USER_ID STREAM              prints a token issued by AuthX
  backend.py authx-expired SECRET USER_ID STREAM
  backend.py forge-none STREAM                        alg: none
  backend.py forge-hs256 KEY_FILE STREAM              HS256 with the file's bytes as secret
  backend.py gen-rsa DIR                              writes DIR/private.pem, DIR/public.pem
  backend.py rs256 PRIVATE_PEM STREAM
  backend.py validate-events SCHEMA_FILE < events.jsonl  exits 1 listing invalid events
  backend.py print-events BROKERS                     runs the consumer of docs/events.md
"""
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def doc_snippets():
    text = open(os.path.join(ROOT, "docs", "keys.md")).read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def revoke_line():
    text = open(os.path.join(ROOT, "docs", "keys.md")).read()
    return re.search(r"Revoking: `(.*?)`", text).group(1)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(stream, exp_in=600):
    return {"sub": "user-1", "stream": stream, "exp": int(time.time()) + exp_in}


def main(command, *args):
    if command == "insert-key":
        uri, stream, user = args
        scope = {"MONGO_URI": uri, "STREAM": stream, "USER_ID": user}
        exec(doc_snippets()[0], scope)
        print(scope["key"])
    elif command == "revoke":
        uri, stream = args
        from pymongo import MongoClient
        scope = {"keys": MongoClient(uri).streaming.stream_keys, "STREAM": stream, "datetime": datetime}
        exec(revoke_line(), scope)
    elif command in ("authx", "authx-expired"):
        secret, user, stream = args
        scope = {"SECRET": secret, "USER_ID": user, "STREAM": stream}
        if command == "authx":
            exec(doc_snippets()[1], scope)
            print(scope["token"])
        else:
            from authx import AuthX, AuthXConfig
            auth = AuthX(config=AuthXConfig(JWT_SECRET_KEY=secret, JWT_TOKEN_LOCATION=["headers"]))
            print(auth.create_access_token(uid=user, data={"stream": stream}, expiry=datetime.timedelta(seconds=-60)))
    elif command == "forge-none":
        (stream,) = args
        print(b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(claims(stream)).encode()) + ".")
    elif command == "forge-hs256":
        key_file, stream = args
        head = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims(stream)).encode())
        signature = hmac.new(open(key_file, "rb").read(), head.encode(), hashlib.sha256).digest()
        print(head + "." + b64(signature))
    elif command == "gen-rsa":
        (directory,) = args
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with open(os.path.join(directory, "private.pem"), "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        with open(os.path.join(directory, "public.pem"), "wb") as f:
            f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    elif command == "rs256":
        private, stream = args
        import jwt
        print(jwt.encode(claims(stream), open(private, "rb").read(), algorithm="RS256"))
    elif command == "validate-events":
        (schema_file,) = args
        import jsonschema
        schema = json.load(open(schema_file))
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        bad = 0
        for line in sys.stdin:
            if line.strip():
                for error in validator.iter_errors(json.loads(line)):
                    print(f"{line.strip()[:200]}: {error.message}")
                    bad += 1
        sys.exit(1 if bad else 0)
    elif command == "print-events":
        (brokers,) = args
        text = open(os.path.join(ROOT, "docs", "events.md")).read()
        snippet = re.findall(r"```python\n(.*?)```", text, re.S)[0]
        exec(snippet, {"BROKERS": brokers})
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(*sys.argv[1:])
