"""DELETE /calls/{sid}: a recorded call goes — its outputs, its folder (masters, journal) and its catalog row.

Behind the API key (or the dashboard's session cookie, from the server's own pages: app.web.deps).
A live call is refused (409): it is being recorded, or finalised, by some worker. Otherwise the
call's lock (`services.coordinator.acquire`) is held while its files go, so no worker can start
recording, finalising or recovering it meanwhile (they find it owned).

The order is chosen for a crash half-way: the folder first (the masters and the journal: the
call's raw audio), then the outputs, then the catalog row. A call left half-deleted is still
listed (its result or its row is there) and a second DELETE finishes the job.

One log line, without PII: the sid and counts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter

from app.storage.paths import validate_sid
from app.web.deps import ApiKeyDep, Services, ServicesDep
from app.web.errors import ApiError, error_responses, not_recorded

__all__ = ["router", "delete_recorded_call"]

log = logging.getLogger("callscribe.calls")

router = APIRouter(prefix="/calls", tags=["calls"], dependencies=[ApiKeyDep])

_LIVE = ("call {sid} is live: it is being recorded (or finalised) now. Delete it once it has ended "
         "and its recording is written.")


def _remove_folder(folder: Path, failed: list[str]) -> list[str]:
    """Every file of the call's folder, then the folder (deepest first); what was removed, by its
    name under the recordings folder (`.calls/<sid>/inbound.wav`). What could not go is added to
    ``failed``."""
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.rglob("*"), key=lambda p: (-len(p.parts), p.name)):
        rel = path.relative_to(folder.parent.parent).as_posix()
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
                if path.name != "lock":  # the deleter's own lock file, not the call's data
                    removed.append(rel)
        except FileNotFoundError:
            pass
        except OSError:
            failed.append(rel)
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        failed.append(f".calls/{folder.name}/")
    return sorted(removed)


def delete_recorded_call(services: Services, sid: str) -> list[str]:
    """Delete a call that is not live; the names removed. Raises CallNotFound (404), ApiError 409
    (live) or ApiError 500 (some files could not be removed: the call stays listed, to retry)."""
    validate_sid(sid)
    store = services.store
    folder = store.files(sid).folder
    if not folder.exists() and not services.artefacts.list(sid) and store.catalog.get(sid) is None:
        raise not_recorded(sid)
    if sid in services.registry.live or services.coordinator.is_live(sid):
        raise ApiError(409, _LIVE.format(sid=sid))
    lock = services.coordinator.acquire(sid)  # makes the folder if it was gone: removed below
    if lock is None:
        raise ApiError(409, _LIVE.format(sid=sid))
    failed: list[str] = []
    try:
        removed = _remove_folder(folder, failed)
        outputs = services.artefacts.list(sid)
        for name in outputs:
            try:
                services.artefacts.delete(name)
                removed.append(name)
            except OSError:
                failed.append(name)
        if not failed:
            store.catalog.delete(sid)
    finally:
        lock.release()
    if failed:
        log.error("call %s: deletion incomplete: %d file(s) removed, %d could not be", sid, len(removed), len(failed))
        raise ApiError(500, f"call {sid} was only partly deleted: {len(failed)} file(s) could not be removed "
                            f"({', '.join(failed[:5])}); it stays listed, and deleting it again retries",
                       deleted=removed)
    masters = sum(1 for n in removed if n.startswith(".calls/"))
    log.info("call %s deleted: %d output file(s), %d file(s) of its folder (masters, journal), its catalog row",
             sid, len(removed) - masters, masters)
    return removed


@router.delete("/{call_sid}", responses=error_responses(400, 401, 403, 404, 409),
               summary="Delete a call: its outputs, masters, journal and catalog row (not while it is live)")
def delete_call(call_sid: str, services: ServicesDep) -> dict:
    """A sync route: the file system and the catalog are touched on the threadpool."""
    removed = delete_recorded_call(services, call_sid)
    outputs = [n for n in removed if not n.startswith(".calls/")]
    return {"call_sid": call_sid, "deleted": removed,
            "message": f"call {call_sid} deleted: {len(outputs)} output file(s) and "
                       f"{len(removed) - len(outputs)} file(s) of its folder (masters, journal)"}
