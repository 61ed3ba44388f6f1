"""Keys and tokens for the load harness.

One P-256 key pair per run: Fenfa's jwt-auth gets the public half as a JWK, HAProxy's jwt_verify
gets the same key as a PEM file, and PyJWT signs ES256 tokens with the private half. Tokens carry
the claims the unified identity service issues (iss, aud, sub, chn, app, exp, nbf, iat, jti).

Needs PyJWT with its crypto extra: `pip install 'pyjwt[crypto]'`.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import jwt  # PyJWT
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError as e:  # pragma: no cover - reported to the user by bench.py
    raise SystemExit(
        f"benches/harness needs PyJWT with crypto support ({e}); install it with\n"
        "    pip install 'pyjwt[crypto]'"
    ) from e

ISSUER = "fenfa-bench-idp"
AUDIENCE = "fenfa-bench"
KID = "bench-es256"
#: A token is valid this long; a full run takes minutes.
LIFETIME_S = 6 * 3600
#: Apps the tokens are spread over (the rate limit is keyed by app).
APPS = [f"wxbench{i:02d}" for i in range(16)]


@dataclass
class Keys:
    private: ec.EllipticCurvePrivateKey
    public_pem: Path
    jwk: dict

    def mint(self, *, sub: str, chn: str = "wechat", app: str = APPS[0], jti: str,
             exp: int | None = None) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "chn": chn,
            "app": app,
            "iat": now,
            "nbf": now - 60,
            "exp": now + LIFETIME_S if exp is None else exp,
            "jti": jti,
        }
        return jwt.encode(claims, self.private, algorithm="ES256", headers={"kid": KID})


def _b64url(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def make_keys(run_dir: Path) -> Keys:
    """A fresh P-256 key; writes the public key as PEM (for HAProxy) and JWK (for Fenfa)."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key()
    pem = run_dir / "jwt-public.pem"
    pem.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    nums = public.public_numbers()
    jwk = {"kid": KID, "alg": "ES256", "kty": "EC", "crv": "P-256",
           "x": _b64url(nums.x), "y": _b64url(nums.y)}
    (run_dir / "jwks.json").write_text(json.dumps({"keys": [jwk]}, indent=2))
    return Keys(private=private, public_pem=pem, jwk=jwk)


def mint_many(keys: Keys, n: int, path: Path) -> float:
    """Writes `n` distinct valid tokens (distinct sub and jti, apps in turn), one a line.
    Returns the seconds it took."""
    t0 = time.monotonic()
    with path.open("w") as f:
        for i in range(n):
            f.write(keys.mint(sub=f"u{i:08d}", app=APPS[i % len(APPS)], jti=f"fresh-{i}"))
            f.write("\n")
    return time.monotonic() - t0
