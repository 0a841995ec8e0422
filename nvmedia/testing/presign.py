"""Presigned upload URLs in the manner of S3 query-string authentication.

The signature is an HMAC-SHA256, under a secret only the emulator knows, over the
method, the path, every query parameter but the signature, and the two signed
headers (``Content-Type`` and ``x-amz-meta-nvcf-asset-description``). Changing
any of them, or the URL, makes the signature fail, as it does on S3.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlencode

DESCRIPTION_HEADER: Final = "x-amz-meta-nvcf-asset-description"
SIGNED_HEADERS: Final = "content-type;host;" + DESCRIPTION_HEADER
_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"


def _string_to_sign(path: str, params: dict[str, str], content_type: str, description: str) -> bytes:
    canonical_query = "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(params.items()) if k != "X-Amz-Signature"
    )
    return "\n".join(("PUT", path, canonical_query, content_type, description)).encode("utf-8", "surrogateescape")


def signature(secret: bytes, path: str, params: dict[str, str], content_type: str, description: str) -> str:
    """The hex HMAC-SHA256 signature of a PUT to ``path`` with ``params`` and the two signed headers."""
    return hmac.new(secret, _string_to_sign(path, params, content_type, description), hashlib.sha256).hexdigest()


def presign(secret: bytes, path: str, content_type: str, description: str, ttl_s: float, now: float) -> str:
    """The query string (without ``?``) that authorises one PUT to ``path`` for ``ttl_s`` seconds from ``now``."""
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": time.strftime("EMULATOR/%Y%m%d/us-west-2/s3/aws4_request", time.gmtime(now)),
        "X-Amz-Date": time.strftime(_DATE_FORMAT, time.gmtime(now)),
        "X-Amz-Expires": str(max(0, int(ttl_s))),
        "X-Amz-SignedHeaders": SIGNED_HEADERS,
    }
    params["X-Amz-Signature"] = signature(secret, path, params, content_type, description)
    return urlencode(params)


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking a presigned PUT.

    Attributes:
        ok: the request may proceed.
        code: the S3 error code when refused (``SignatureDoesNotMatch``, ``AccessDenied``).
        message: the S3 error message.
    """

    ok: bool
    code: str = ""
    message: str = ""


def verify(
    secret: bytes, path: str, params: dict[str, str], content_type: str | None, description: str | None, now: float
) -> Verdict:
    """Check a presigned PUT's query parameters and signed headers at time ``now``.

    Expiry is checked first, as S3 does: an expired URL is ``AccessDenied`` /
    ``Request has expired`` even when the signature would also fail.
    """
    needed = ("X-Amz-Algorithm", "X-Amz-Date", "X-Amz-Expires", "X-Amz-Signature")
    if any(k not in params for k in needed):
        return Verdict(False, "AccessDenied", "Query-string authentication requires the X-Amz-* parameters")
    try:
        issued = calendar.timegm(time.strptime(params["X-Amz-Date"], _DATE_FORMAT))
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        return Verdict(False, "AuthorizationQueryParametersError", "X-Amz-Date or X-Amz-Expires is malformed")
    if now > issued + expires:
        return Verdict(False, "AccessDenied", "Request has expired")
    expected = signature(secret, path, params, content_type or "", description or "")
    if content_type is None or description is None or not hmac.compare_digest(expected, params["X-Amz-Signature"]):
        return Verdict(
            False,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
        )
    return Verdict(True)
