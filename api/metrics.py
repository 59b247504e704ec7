"""/metrics in the Prometheus text format: the API's own request counters, plus whatever
gauges the process adds (the dev stack adds the seal worker's counters)."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request, Response
from starlette.responses import PlainTextResponse

MetricsSource = Callable[[], Mapping[str, float]]


class RequestCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._seconds: defaultdict[tuple[str, str], float] = defaultdict(float)

    def add(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            self._seconds[(method, route)] += seconds

    def render(self) -> list[str]:
        with self._lock:
            lines = [
                "# HELP blackbox_api_requests_total HTTP requests by route and status.",
                "# TYPE blackbox_api_requests_total counter",
            ]
            for (method, route, status), count in sorted(self._requests.items()):
                labels = f'method="{method}",route="{route}",status="{status}"'
                lines.append(f"blackbox_api_requests_total{{{labels}}} {count}")
            lines += [
                "# HELP blackbox_api_request_seconds_total Time spent answering, by route.",
                "# TYPE blackbox_api_request_seconds_total counter",
            ]
            for (method, route), seconds in sorted(self._seconds.items()):
                lines.append(
                    f'blackbox_api_request_seconds_total{{method="{method}",route="{route}"}} {seconds:.6f}'
                )
        return lines


def install_metrics(app: FastAPI, source: MetricsSource | None = None) -> None:
    counter = RequestCounter()

    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        # The route template, never the raw path: session ids must not become label values.
        name = getattr(route, "path", "unmatched")
        counter.add(request.method, name, response.status_code, time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        lines = counter.render()
        for name, value in sorted((source() if source else {}).items()):
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {value}")
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
