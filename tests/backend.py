#!/usr/bin/env python3
"""Plays the platform's backend in the tests: issues keys into MongoDB and publish tokens, the
way docs/keys.md tells the backend's developers to (its Python snippets are run as they are),
and forges bad tokens.

Usage (with the test venv's python, which has pymongo, authx, PyJWT and cryptography):
  backend.py insert-key MONGO_URI STREAM USER_ID      prints the key
  backend.py revoke MONGO_URI STREAM
  backend.py authx SECRET USER_ID STREAM              prints a token issued by AuthX
  backend.py authx-expired SECRET USER_ID STREAM
  backend.py authx-login SECRET USER_ID STREAM        a login token (AuthX defaults: no aud) naming a stream
  backend.py forge-none STREAM                        alg: none
  backend.py forge-hs256 KEY_FILE STREAM              HS256 with the file's bytes as secret
  backend.py gen-rsa DIR                              writes DIR/private.pem, DIR/public.pem
  backend.py rs256 PRIVATE_PEM STREAM
  backend.py validate-events SCHEMA_FILE < events.jsonl  exits 1 listing invalid events
  backend.py print-events BROKERS                     runs the consumer of docs/events.md
  backend.py authx-role SECRET USER_ID ROLE [AUD ISS] an AuthX access token with a role claim
  backend.py authx-viewer SECRET USER_ID STREAM,...   a login (access) token whose `streams` claim lists streams
  backend.py authx-refresh SECRET USER_ID STREAM,...  the refresh token of that login
  backend.py authx-private SECRET USER_ID STREAM      a publish token for a private stream
  backend.py claims TOKEN                             prints a token's claims (unverified) as JSON
  backend.py validate-api OPENAPI_FILE SCHEMA < doc.json  exits 1 if doc is not a SCHEMA
  backend.py openapi-paths OPENAPI_FILE               prints "METHOD /path" per operation
  backend.py hook-server PORT_FILE LOG_FILE           an Nginx-RTMP callback backend (see below)
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
    elif command == "last-used":
        uri, stream = args
        from pymongo import MongoClient
        document = MongoClient(uri).streaming.stream_keys.find_one({"stream": stream})
        print(document.get("last_used_at") or "never")
    elif command == "revoke":
        uri, stream = args
        from pymongo import MongoClient
        scope = {"keys": MongoClient(uri).streaming.stream_keys, "STREAM": stream, "datetime": datetime}
        exec(revoke_line(), scope)
    elif command == "authx-login":
        secret, user, stream = args
        from authx import AuthX, AuthXConfig
        auth = AuthX(config=AuthXConfig(JWT_SECRET_KEY=secret, JWT_TOKEN_LOCATION=["headers"]))
        print(auth.create_access_token(uid=user, data={"stream": stream}))
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
    elif command == "authx-role":
        secret, user, role, *scope = args
        from authx import AuthX, AuthXConfig
        audience, issuer = scope if scope else (None, None)
        auth = AuthX(config=AuthXConfig(JWT_SECRET_KEY=secret, JWT_TOKEN_LOCATION=["headers"],
                                        JWT_ENCODE_AUDIENCE=audience, JWT_ENCODE_ISSUER=issuer))
        print(auth.create_access_token(uid=user, data={"role": role}))
    elif command in ("authx-viewer", "authx-refresh"):
        # The platform's login as its FastAPI backend issues it: AuthX keeps the access token
        # in the cookie `access_token_cookie`, and adds what the user may watch.
        secret, user, streams = args
        from authx import AuthX, AuthXConfig
        auth = AuthX(config=AuthXConfig(JWT_SECRET_KEY=secret, JWT_TOKEN_LOCATION=["cookies", "headers"]))
        data = {"streams": streams.split(",")}
        if command == "authx-viewer":
            print(auth.create_access_token(uid=user, data=data))
        else:
            print(auth.create_refresh_token(uid=user, data=data))
    elif command == "authx-private":
        secret, user, stream = args
        from authx import AuthX, AuthXConfig
        auth = AuthX(config=AuthXConfig(JWT_SECRET_KEY=secret, JWT_TOKEN_LOCATION=["headers"]))
        print(auth.create_access_token(uid=user, data={"stream": stream, "private": True}))
    elif command == "claims":
        (token,) = args
        import jwt
        print(json.dumps(jwt.decode(token, options={"verify_signature": False})))
    elif command == "validate-api":
        openapi_file, schema_name = args
        import jsonschema
        import yaml
        document = yaml.safe_load(open(openapi_file))
        # OpenAPI 3.1 schemas are JSON Schema 2020-12; the whole document is the root so
        # "#/components/..." references resolve.
        schema = dict(document, **{"$ref": "#/components/schemas/" + schema_name})
        for component in document["components"]["schemas"].values():
            jsonschema.Draft202012Validator.check_schema(component)
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        errors = list(validator.iter_errors(json.load(sys.stdin)))
        for error in errors:
            print(f"{list(error.absolute_path)}: {error.message}")
        sys.exit(1 if errors else 0)
    elif command == "openapi-paths":
        (openapi_file,) = args
        import yaml
        document = yaml.safe_load(open(openapi_file))
        for path, operations in document["paths"].items():
            for method in operations:
                print(method.upper(), path)
    elif command == "hook-server":
        port_file, log_file = args
        hook_server(port_file, log_file)
    else:
        sys.exit(__doc__)


def hook_server(port_file, log_file):
    """An Nginx-RTMP on_publish/on_publish_done backend: logs every call's form fields as one
    JSON line; on_publish allows name "allowed", renames "renamed" to "renamed-target" with a
    302 Location (as Nginx-RTMP users do), redirects "relayed" to an rtmp:// URL (a relay push
    in Nginx-RTMP), answers "slow" after 5 s, refuses the rest (403).
    The port it listens on is written to PORT_FILE."""
    import http.server
    import urllib.parse

    class Hooks(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path, _, query = self.path.partition("?")
            self.answer(query, path, "GET")

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            self.answer(self.rfile.read(length).decode(), self.path, "POST")

        def answer(self, encoded, path, method):
            form = dict(urllib.parse.parse_qsl(encoded))
            form["_content_type"] = self.headers.get("Content-Type")
            form["_path"] = path
            form["_method"] = method
            with open(log_file, "a") as log:
                log.write(json.dumps(form) + "\n")
            name = form.get("name")
            if form.get("call") == "publish_done" or name == "allowed":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")
            elif name == "renamed":
                self.send_response(302)
                self.send_header("Location", "renamed-target")
                self.end_headers()
            elif name == "relayed":
                self.send_response(302)
                self.send_header("Location", "rtmp://relay.example/live/elsewhere")
                self.end_headers()
            elif name == "slow":
                time.sleep(5)
                self.send_response(200)
                self.end_headers()
            else:
                self.send_response(403)
                self.end_headers()

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:])
