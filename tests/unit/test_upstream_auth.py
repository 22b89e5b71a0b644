"""Upstream credentials: static token, token file re-read on change, service-account key → IAM token."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mirror.errors import ConfigError, UpstreamError
from mirror.settings import Secret, Settings
from mirror.upstream.auth import (
    AuthorizedKey,
    NoCredentials,
    ServiceAccountKey,
    StaticToken,
    TokenFile,
    credentials_from_settings,
)


async def test_static_token_and_its_repr_hides_it() -> None:
    creds = StaticToken(Secret("abc"))
    assert await creds.token() == "abc"
    assert "abc" not in repr(creds)
    assert await NoCredentials().token() is None


async def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    creds = TokenFile(path)
    assert await creds.token() == "first"
    assert await creds.token() == "first"
    # a rotation: write elsewhere and rename over (new inode), as sidecars do
    new = tmp_path / "token.new"
    new.write_text("second")
    os.replace(new, path)
    assert await creds.token() == "second"
    # an in-place rewrite with a different size is seen too
    path.write_text("third-token")
    assert await creds.token() == "third-token"


async def test_token_file_missing_keeps_the_last_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("only")
    creds = TokenFile(path)
    assert await creds.token() == "only"
    path.unlink()
    assert await creds.token() == "only"
    with pytest.raises(ConfigError):
        await TokenFile(tmp_path / "absent").token()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / "key.json"
    path.write_bytes(
        orjson.dumps(
            {
                "id": "ajekey",
                "service_account_id": "ajesa",
                "created_at": "2024-01-01T00:00:00Z",
                "key_algorithm": "RSA_2048",
                "public_key": "-----BEGIN PUBLIC KEY-----…",
                "private_key": pem,
            }
        )
    )
    return path


class FakeIam:
    """An IAM token endpoint that checks the JWT and issues numbered tokens."""

    def __init__(self, public_key: Any) -> None:
        self.public_key = public_key
        self.issued = 0
        self.fail = False
        self.claims: list[dict[str, Any]] = []
        self.headers: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail:
            return web.Response(status=503)
        token = (await request.json())["jwt"]
        self.headers.append(jwt.get_unverified_header(token))
        self.claims.append(
            jwt.decode(
                token,
                self.public_key,
                algorithms=["PS256"],
                audience=self.url + "/iam/v1/tokens",
                options={"verify_exp": False, "verify_iat": False},  # the test's clock is fake
            )
        )
        self.issued += 1
        return web.json_response(
            {"iamToken": f"t1.iam-{self.issued}", "expiresAt": "2099-01-01T00:00:00.123456789Z"}
        )


@pytest.fixture
async def iam(rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[FakeIam]:
    fake = FakeIam(rsa_key.public_key())
    app = web.Application()
    app.router.add_post("/iam/v1/tokens", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


async def test_service_account_key_exchanges_a_ps256_jwt_and_refreshes(
    key_file: Path, iam: FakeIam, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    now = [1_700_000_000.0]
    async with aiohttp.ClientSession() as session:
        creds = ServiceAccountKey(
            AuthorizedKey.load(key_file), session, iam.url, clock=lambda: now[0]
        )
        assert await creds.token() == "t1.iam-1"
        assert await creds.token() == "t1.iam-1"  # cached
        assert iam.headers[0]["kid"] == "ajekey" and iam.headers[0]["alg"] == "PS256"
        claims = iam.claims[0]
        assert claims["iss"] == "ajesa"
        assert claims["exp"] - claims["iat"] <= 3600
        now[0] += 3601  # past the refresh point (an hour)
        assert await creds.token() == "t1.iam-2"
        assert await creds.token(refresh=True) == "t1.iam-3"  # after a 401
        # a failed refresh keeps the still-valid token
        iam.fail = True
        now[0] += 3601
        assert await creds.token() == "t1.iam-3"
    pem = AuthorizedKey.load(key_file).private_key.reveal()
    for secret in ("t1.iam-1", "t1.iam-2", "t1.iam-3", pem.splitlines()[1]):
        assert secret not in caplog.text


async def test_service_account_key_without_iam_fails_as_upstream_error(key_file: Path) -> None:
    async with aiohttp.ClientSession() as session:
        creds = ServiceAccountKey(AuthorizedKey.load(key_file), session, "http://127.0.0.1:9")
        with pytest.raises(UpstreamError):
            await creds.token()


def test_bad_key_file_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text("{}")
    with pytest.raises(ConfigError, match="MIRROR_UPSTREAM_SA_KEY_FILE"):
        AuthorizedKey.load(path)


async def test_credentials_from_settings(tmp_path: Path, key_file: Path) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text("x")
    async with aiohttp.ClientSession() as session:
        assert isinstance(credentials_from_settings(Settings.load(env={}), session), NoCredentials)
        s = Settings.load(env={"MIRROR_UPSTREAM_TOKEN": "abc"})
        assert isinstance(credentials_from_settings(s, session), StaticToken)
        s = Settings.load(env={"MIRROR_UPSTREAM_TOKEN_FILE": str(token_file)})
        assert isinstance(credentials_from_settings(s, session), TokenFile)
        s = Settings.load(env={"MIRROR_UPSTREAM_SA_KEY_FILE": str(key_file)})
        assert isinstance(credentials_from_settings(s, session), ServiceAccountKey)
