"""Fault injection for the integration tests (see FlakyApi's docstring for why it is no mock)."""

from __future__ import annotations

import contextlib

import httpx
import kr8s


class FlakyApi:
    """FAULT INJECTION, not a mock of the apiserver: answers the next calls with the given HTTP
    statuses (a real apiserver cannot be asked for a 503 or 429 on demand), then passes every
    call through to the real kr8s Api and the real apiserver."""

    def __init__(self, api, statuses: list[int], url_part: str = "", watch_only: bool = False):
        self.api, self.statuses, self.url_part, self.injected = api, list(statuses), url_part, 0
        self.watch_only = watch_only

    def _hit(self, kwargs: dict) -> bool:
        watch = (kwargs.get("params") or {}).get("watch") == "true"
        return (
            bool(self.statuses)
            and self.url_part in kwargs.get("url", "")
            and (watch or not self.watch_only)
        )

    @contextlib.asynccontextmanager
    async def call_api(self, method: str = "GET", **kwargs):
        if self._hit(kwargs):
            status = self.statuses.pop(0)
            self.injected += 1
            request = httpx.Request(method, "https://127.0.0.1/injected")
            response = httpx.Response(
                status,
                request=request,
                json={
                    "kind": "Status",
                    "code": status,
                    "reason": "Injected",
                    "message": "injected",
                },
            )
            raise kr8s.ServerError("injected", status=str(status), response=response)
        async with self.api.call_api(method, **kwargs) as response:
            yield response
