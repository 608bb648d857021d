// What every dashboard page shares: the API call (a 401 goes to the login form), how figures are
// written, and the delete-a-call confirmation. An ES module with no dependencies:
//   import { api, confirmDelete, fmtDuration } from '/dashboard/assets/shared.js';
//
// api(path, {method})  → {ok, status, data}; throws AuthError (after sending the page to
//                        /login?next=<this page>) on 401 and NetworkError when the server is unreachable.
// confirmDelete({sid, description, opener, fallback}) → Promise: the DELETE /calls/{sid} answer
//                        ({call_sid, deleted, message}) once confirmed and done, or null if cancelled.
//                        A modal <dialog> (focus kept inside, Escape cancels, focus returned to
//                        `opener`, or to `fallback` when the opener is gone).
// fmtWhen, fmtDuration, fmtSize, fmtLatency, fmtCount, masked, sourceLabel, statusLabel: text for figures.

export class AuthError extends Error {
  constructor() { super('not logged in'); this.name = 'AuthError'; }
}

export class NetworkError extends Error {
  constructor(cause) { super('the server cannot be reached'); this.name = 'NetworkError'; this.cause = cause; }
}

export function toLogin() {
  const here = location.pathname + location.search;
  location.assign('/login?next=' + encodeURIComponent(here));
}

export async function api(path, { method = 'GET', signal } = {}) {
  let r;
  try {
    r = await fetch(path, { method, signal, credentials: 'same-origin', cache: 'no-store',
                            headers: { Accept: 'application/json' } });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new NetworkError(e);
  }
  if (r.status === 401) {
    toLogin();
    throw new AuthError();
  }
  let data = null;
  try { data = await r.json(); } catch { data = null; }
  return { ok: r.ok, status: r.status, data };
}

/** The `error` message of an API answer, or a sentence about its status. */
export function errorText(res) {
  return (res.data && res.data.error) || `the server answered ${res.status}`;
}

// ------------------------------------------------------------------ figures
const when = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const count = new Intl.NumberFormat();

export const fmtCount = (n) => count.format(n);

/** A time in the browser's zone: "13 Jul 2025, 10:30". */
export function fmtWhen(date) {
  return date ? when.format(date) : '—';
}

/** 13.1 → "0:13", 3725 → "1:02:05". */
export function fmtDuration(seconds) {
  if (seconds == null || !isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const pad = (n) => String(n).padStart(2, '0');
  return h ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
}

export function fmtSize(bytes) {
  if (bytes == null) return '—';
  const units = ['B', 'KB', 'MB', 'GB'];
  let n = bytes, i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return i === 0 ? `${n} B` : `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

export function fmtLatency(ms) {
  if (ms == null) return '—';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** The caller's number as the dashboard shows it: its last four digits only. */
export function masked(last4) {
  return last4 ? `•••• ${last4}` : '—';
}

export function sourceLabel(call) {
  if (call.source === 'browser') return 'Browser';
  return call.mode === 'listen' ? 'Listen-only' : 'Phone';
}

const STATUS = { live: 'live', finalized: 'finalised', recovered: 'recovered', failed: 'failed',
                 unfinished: 'unfinished' };
export function statusLabel(status) {
  return STATUS[status] || status;
}

// ------------------------------------------------------------------ delete a call
function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function deleteDialog() {
  let dlg = document.getElementById('delete-dialog');
  if (dlg) return dlg;
  dlg = el('dialog', { id: 'delete-dialog', class: 'dialog', 'aria-labelledby': 'delete-title',
                       'aria-describedby': 'delete-body' });
  const form = el('form', { method: 'dialog' });
  form.append(
    el('h2', { id: 'delete-title' }, 'Delete this call?'),
    el('p', { id: 'delete-body' }),
    el('p', { class: 'hint' }, 'Its recording, transcript, summary and raw audio are removed from the server. '
                                + 'This cannot be undone.'),
    el('p', { id: 'delete-error', class: 'error', role: 'alert' }),
  );
  const actions = el('div', { class: 'dialog-actions' });
  actions.append(el('button', { type: 'button', id: 'delete-cancel' }, 'Cancel'),
                 el('button', { type: 'button', id: 'delete-confirm', class: 'btn-danger' }, 'Delete call'));
  form.append(actions);
  dlg.append(form);
  document.body.append(dlg);
  // Keep Tab inside the dialog (the page behind is inert while it is open; this also keeps focus
  // from leaving for the browser's own controls).
  dlg.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Tab') return;
    const items = [...dlg.querySelectorAll('button:not([disabled]), a[href], input, select, textarea')];
    if (!items.length) return;
    const first = items[0], last = items[items.length - 1];
    if (ev.shiftKey && document.activeElement === first) { last.focus(); ev.preventDefault(); }
    else if (!ev.shiftKey && document.activeElement === last) { first.focus(); ev.preventDefault(); }
  });
  return dlg;
}

export function confirmDelete({ sid, description, opener = document.activeElement, fallback = null }) {
  const dlg = deleteDialog();
  const body = dlg.querySelector('#delete-body');
  const error = dlg.querySelector('#delete-error');
  const cancel = dlg.querySelector('#delete-cancel');
  const confirm = dlg.querySelector('#delete-confirm');
  body.textContent = description;
  error.textContent = '';
  return new Promise((resolve) => {
    let busy = false, answer = null;
    const setBusy = (b) => {
      busy = b;
      cancel.disabled = confirm.disabled = b;
      confirm.textContent = b ? 'Deleting…' : 'Delete call';
    };
    const onCancel = (ev) => { if (busy) ev.preventDefault(); };  // Escape: cancels, unless the delete is under way
    const onClose = () => {
      dlg.removeEventListener('cancel', onCancel);
      dlg.removeEventListener('close', onClose);
      cancel.onclick = confirm.onclick = null;
      const back = opener && opener.isConnected ? opener : fallback;
      if (back) back.focus();
      resolve(answer);
    };
    cancel.onclick = () => dlg.close();
    confirm.onclick = async () => {
      setBusy(true);
      error.textContent = '';
      try {
        const res = await api(`/calls/${encodeURIComponent(sid)}`, { method: 'DELETE' });
        if (res.ok) { answer = res.data; dlg.close(); return; }
        error.textContent = `Not deleted: ${errorText(res)}`;
      } catch (e) {
        if (e.name === 'AuthError') return;
        error.textContent = 'Not deleted: the server cannot be reached. Try again.';
      } finally {
        setBusy(false);
      }
      confirm.focus();
    };
    dlg.addEventListener('cancel', onCancel);
    dlg.addEventListener('close', onClose);
    setBusy(false);
    dlg.showModal();
    cancel.focus();  // the safe choice first
  });
}
