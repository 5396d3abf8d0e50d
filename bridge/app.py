"""``create_app(settings)``: the bridge as a Starlette application.

Imports anything; nothing imports it. The lifespan opens the call store and, for the
``local`` provider, starts the built-in demo agent in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Callable

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bridge.adapters.agents_watch import AgentsWatcher
from bridge.adapters.background import BackgroundTasks
from bridge.adapters.loop_lag import watch_loop_lag
from bridge.adapters.realtime_target import RealtimeTarget, resolve_fallback, resolve_target
from bridge.adapters.twilio_auth import TwilioAuth
from bridge.agent_hub import AgentHub
from bridge.agents.registry import default_agents, load_agents
from bridge.codecs.clips import clip_text, load_clip
from bridge.drain import Drain
from bridge.metrics import BridgeMetrics
from bridge.openai_webhook import openai_routes, openai_webhook_key, start_openai_sip
from bridge.outbound import close_outbound_client, outbound_routes
from bridge.overload import Overload
from bridge.protocols.dialects import SessionConfig
from bridge.review.api import review_api_routes
from bridge.review.pages import review_page_routes
from bridge.session import RECORD_CLOSE_TIMEOUT_S, SessionDeps
from bridge.settings import Provider, Settings
from bridge.storage.base import StoreUnavailableError
from bridge.storage.factory import open_store
from bridge.storage.leases import LeaseKeeper, this_instance
from bridge.storage.recordings import RecordingFiles
from bridge.webhooks import twilio_routes

log = structlog.get_logger("bridge.app")


def _token_secret(settings: Settings) -> bytes:
    """The key for per-call stream tokens. Derived from the Twilio auth token when there is
    one, so every instance behind a load balancer accepts streams minted by any other."""
    if settings.stream_secret is not None:
        return settings.stream_secret.get_secret_value().encode()
    if settings.twilio_auth_token is not None:
        key = settings.twilio_auth_token.get_secret_value().encode()
        return hmac.new(key, b"bridge stream token v1", hashlib.sha256).digest()
    return os.urandom(32)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = request.app.state
    ready = not state.drain.draining and await state.store.ping()
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    body = request.app.state.metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """The database is down: say so in one log line and a 503, not a traceback and a 500."""
    log.error("store.unavailable", path=request.url.path, error=str(exc))
    return PlainTextResponse(
        "The call log is unavailable right now; try again shortly.\n",
        status_code=503,
        headers={"Retry-After": "5", "Cache-Control": "no-store"},
    )


def _lag_observer(metrics: BridgeMetrics, overload: Overload) -> Callable[[float], None]:
    def observe(lag_s: float) -> None:
        metrics.loop_lag.observe(lag_s)
        overload.observe(lag_s)

    return observe


def create_app(settings: Settings) -> Starlette:
    """The bridge for ``settings``. Nothing is opened until the app's lifespan starts.
    A bad agents file (``BRIDGE_AGENTS``) is refused here, with what is wrong and where."""
    agents = (
        load_agents(settings.agents_path, settings)
        if settings.agents_path is not None
        else default_agents(settings)
    )
    openai_key = openai_webhook_key(settings)  # None: POST /openai/webhook answers 404

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        instance = this_instance()
        store = open_store(settings.database_url, instance=instance)
        await store.open()
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(store.close)
            leases = LeaseKeeper(store, instance, settings.lease_s)
            await leases.start()
            # Runs after every call has finished (callbacks unwind last-in, first-out).
            stack.push_async_callback(leases.stop)
            keeper = asyncio.create_task(leases.keep(), name="lease-keeper")
            stack.callback(keeper.cancel)
            lag = asyncio.create_task(
                watch_loop_lag(_lag_observer(app.state.metrics, app.state.overload)),
                name="loop-lag",
            )
            stack.callback(lag.cancel)
            stack.push_async_callback(app.state.background.cancel_all)
            stack.push_async_callback(close_outbound_client, app)
            local_url = None
            greeting = settings.greeting
            if settings.effective_provider is Provider.LOCAL:
                from bridge.devtools.fake_realtime import FakeRealtimeServer
                from bridge.devtools.fake_script import demo_script

                server = FakeRealtimeServer("openai", script=demo_script())
                await server.start("127.0.0.1", 0)
                stack.push_async_callback(server.stop)
                local_url = server.url
                greeting = greeting or clip_text("demo_greeting")
                log.info("local_agent.started", url=local_url)
            target = resolve_target(settings, local_url)
            fallback = resolve_fallback(settings)
            app.state.store = store
            session_config = SessionConfig(
                instructions=settings.instructions,
                voice=settings.voice,
                audio_format=settings.audio_format.value,
                transcription=True,
                model=settings.realtime_model,
            )
            tool_client = httpx.AsyncClient(follow_redirects=False)
            stack.push_async_callback(tool_client.aclose)
            targets = {target.provider: target}

            def target_for(provider: Provider) -> RealtimeTarget:
                if provider not in targets:
                    other = settings.model_copy(update={"provider": provider})
                    targets[provider] = resolve_target(other, local_url)
                return targets[provider]

            hub = AgentHub(
                agents,
                session_config,
                targets=target_for,
                client=tool_client,
                default_greeting=greeting,
            )
            if settings.agents_path is not None:
                watcher = AgentsWatcher(settings.agents_path, settings, hub.update)
                watching = asyncio.create_task(watcher.run(), name="agents-watch")
                stack.callback(watching.cancel)
                if watcher.install_sighup(asyncio.get_running_loop()):
                    stack.callback(watcher.remove_sighup)
            app.state.session_deps = SessionDeps(
                store=store,
                target=target,
                session_config=session_config,
                agent_hub=hub,
                greeting=greeting,
                token_secret=app.state.token_secret,
                apology=load_clip("apology"),
                metrics=app.state.metrics,
                idle_timeout_s=settings.idle_timeout_s,
                fallback=fallback,
                drain=app.state.drain,
                overload=app.state.overload,
                recordings=(
                    RecordingFiles(settings.resolved_recordings_dir)
                    if settings.recordings
                    else None
                ),
            )
            if openai_key is not None:
                start_openai_sip(app, settings, openai_key, stack)
            if settings.sip_listen:
                from bridge.sip_session import SipEndpoint

                endpoint = SipEndpoint(settings, app.state.session_deps, app.state.background.spawn)
                await endpoint.start()
                app.state.drain.on_begin(endpoint.stop_accepting)
                stack.callback(endpoint.close)
                # Unwinds first: live SIP calls end (and say BYE) while the socket is open.
                stack.push_async_callback(app.state.background.cancel_all)
            if not app.state.twilio_auth.enforced:
                log.warning(
                    "security.signatures_off",
                    detail="TWILIO_AUTH_TOKEN is unset: Twilio signatures are NOT checked; "
                    "serve on loopback only",
                )
            log.info(
                "bridge.ready",
                provider=target.provider.value,
                model=target.model_name,
                audio_format=settings.audio_format.value,
                public_url=settings.public_base,
            )
            try:
                yield
            finally:
                app.state.drain.begin()

    app = Starlette(
        routes=[
            *twilio_routes(),
            *review_api_routes(),
            *outbound_routes(),
            *openai_routes(),
            *review_page_routes(),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        exception_handlers={StoreUnavailableError: store_unavailable},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.twilio_auth = TwilioAuth(settings)
    app.state.metrics = BridgeMetrics()
    app.state.token_secret = _token_secret(settings)
    # Whether new calls are taken, and the live ones a stopping bridge waits for.
    app.state.drain = Drain(app.state.metrics)
    # Whether the event loop runs too late to take another call.
    app.state.overload = Overload()
    app.state.background = BackgroundTasks()
    # How long a status callback for a call another instance serves waits before finishing
    # it anyway: enough for that session to notice the hang-up and write its own end.
    app.state.owner_grace_s = settings.idle_timeout_s + RECORD_CLOSE_TIMEOUT_S + 5.0
    return app
