"""create_app(settings) and the lifespan: recovery at start, drain at stop; app_factory for workers.

The store (app.storage) holds every call's state and files behind its seams, so any number of
app instances on one folder agree: `callscribe serve --workers N` runs N processes, each building
its own app with `app_factory`, and any of them may take a call's webhook, stream, set-format or
download.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app.call.registry import CallRegistry
from app.config import Settings
from app.recording.finalize import ExportOptions
from app.recording.segments import segment_uploads
from app.serving import tune_collector
from app.storage.catalog_sync import catalog_sync
from app.storage.s3_bucket import S3Config
from app.storage.store import CallStore
from app.web import audio_api, call_admin, call_page, call_view, calls_api, dashboard, errors, health, media_stream
from app.web import twilio_routes, web_call
from app.web.browser_calls import BrowserCalls
from app.web.deps import Services
from app.web.limits import BodySizeLimit

__all__ = ["create_app", "app_factory", "configure_logging", "export_options", "s3_config"]

log = logging.getLogger("callscribe")


def _log_recovery_failure(recovery: asyncio.Future) -> None:
    """Recovery at start runs in the background while the server serves: if the pass itself
    fails (each call's own failure is logged by the registry), say so rather than lose it."""
    if recovery.cancelled():
        return
    exc = recovery.exception()
    if exc is not None:
        log.error("recovery at start-up failed (%s); unfinished calls keep their masters and journal until "
                  "the next start or `callscribe recover`", type(exc).__name__, exc_info=exc)


def _log_catalog_failure(refresh: asyncio.Future) -> None:
    """The catalog check at start runs in the background: a failure leaves the listing as it was."""
    if not refresh.cancelled() and refresh.exception() is not None:
        log.error("the call catalog could not be checked or rebuilt at start-up (%s); listings may miss calls "
                  "until the next start", type(refresh.exception()).__name__, exc_info=refresh.exception())


def export_options(s: Settings) -> ExportOptions:
    return ExportOptions(default_format=s.default_audio_format, mp3_kbps=s.mp3_kbps, channels=s.recording_channels,
                         sample_rate=s.output_sample_rate, per_track_files=s.per_track_files,
                         keep_masters=s.keep_masters, record_audio=s.record_conversations,
                         per_turn_clips=s.per_turn_clips, timeline_svg=s.timeline_svg)


def s3_config(s: Settings) -> S3Config | None:
    """The bucket when S3_BUCKET is set (else every file stays in the local folder)."""
    if not s.s3_bucket:
        return None
    return S3Config(bucket=s.s3_bucket, endpoint_url=s.s3_endpoint_url, access_key_id=s.s3_access_key_id,
                    secret_access_key=s.s3_secret_access_key, region=s.s3_region, prefix=s.s3_prefix)


def store_for(settings: Settings, create: bool = True) -> CallStore:
    """The store the settings describe: the recordings folder, with Redis and S3 when configured.
    The one place the app and the command line build it."""
    return CallStore(Path(settings.recordings_directory), create, redis_url=settings.redis_url,
                     host_id=settings.host_id, s3=s3_config(settings))


def create_app(settings: Settings | None = None, agent_factory=None, events=None, chunk_bytes: int = 32000) -> FastAPI:
    """The app. `events` (see app.recording.events.RecordingEvents) receives per-turn audio, audio chunks
    every `chunk_bytes` of each track, and the call's result at hang-up."""
    settings = settings or Settings.load()
    store = store_for(settings)
    opts = export_options(settings)
    registry = CallRegistry(store, opts, max_concurrent=settings.max_concurrent_calls, workers=settings.finalize_workers,
                             events=events, encoder_processes=settings.encoder_processes,
                             encoder_nice=settings.encoder_nice, encoder_idle=settings.encoder_idle,
                             uploads=segment_uploads(store.artefacts, settings.segment_seconds))  # None unless S3
    if agent_factory is None and (settings.greeting == "assistant" or settings.transcribe):
        agent_factory = _default_agent_factory(settings)
    store.coordinator.stream_secret()  # made (or read) now: a storage fault stops the start, not the first call
    services = Services(settings=settings, store=store, registry=registry, opts=registry.opts,  # with its encoder pool
                        agent_factory=agent_factory, events=events,
                        chunk_bytes=chunk_bytes, web_calls=BrowserCalls())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not settings.twilio_auth_token:
            log.warning("TWILIO_AUTH_TOKEN is not set: Twilio signatures are NOT checked, so anyone who can reach "
                        "this server can post calls and open media streams to it. Set it in production.")
        if not settings.api_key:
            log.warning("API_KEY is not set: /calls, downloads and set-format are open to anyone who can reach "
                        "this server.")
            web_call.warn_if_open(services)
        tune_collector()  # a few hundred calls' objects: no full collection pass every few seconds
        loop = asyncio.get_running_loop()
        await store.coordinator.start(on_orphan=registry.recover_orphan)  # Redis: heartbeat, sweep for orphans
        recovery = loop.run_in_executor(registry.executor, registry.recover_sync)
        recovery.add_done_callback(_log_recovery_failure)
        app.state.recovery = recovery
        # The catalog is rebuilt from the results when missing or stale: on its own thread, so neither
        # the event loop nor the finalisation workers wait for it (a listing does, for a while).
        sync = catalog_sync(store, settings.catalog_sync_seconds)  # S3: other hosts' calls too, at start and after
        services.catalog_ready = loop.run_in_executor(None, sync.start) if sync else loop.run_in_executor(
            None, store.catalog.refresh, store)
        services.catalog_ready.add_done_callback(_log_catalog_failure)
        syncing = asyncio.create_task(sync.run(after=services.catalog_ready)) if sync else None
        warmup = getattr(services.agent_factory, "warmup", None)
        if warmup is not None:  # load the speech models without holding up start-up
            app.state.warmup = loop.run_in_executor(None, warmup)
        try:
            yield
        finally:
            if syncing is not None:
                syncing.cancel()
            await registry.drain()
            await store.coordinator.aclose()
            aclose = getattr(services.agent_factory, "aclose", None)
            if aclose is not None:
                await aclose()

    # /docs and /redoc with their assets served from the app (fastapi-offline ships them): no CDN,
    # and no call to Swagger's online validator.
    app = FastAPIOffline(title="Callscribe", version="0.1.0", lifespan=lifespan,
                         swagger_ui_parameters={"validatorUrl": None})
    app.state.services = services
    errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    for r in (twilio_routes.router, media_stream.router, web_call.router, audio_api.router, calls_api.router,
              health.router, call_page.router, call_view.router, dashboard.router, call_admin.router):
        app.include_router(r)
    return app


def configure_logging(settings: Settings, *, process: bool = False) -> None:
    """The app's log lines (``process``: each with the worker's pid, when several serve)."""
    pid = "[%(process)d] " if process else ""
    logging.basicConfig(level=settings.log_level.upper(), format=f"%(asctime)s {pid}%(levelname)s %(name)s: %(message)s")


def app_factory() -> FastAPI:
    """One worker's app, from the settings (`callscribe serve --workers N` runs this in each worker
    process: every worker builds its own app, registry and store on the shared folder)."""
    settings = Settings.load()
    configure_logging(settings, process=True)
    return create_app(settings)


def _default_agent_factory(settings: Settings):
    """The assistant from settings, or None when speech-to-text is off (the chime greeting then)."""
    if settings.stt_provider == "none":
        return None
    from app.agent.wiring import AgentFactory

    return AgentFactory(settings)
