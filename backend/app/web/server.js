// Server access: fetch() with the API key, our JSON error shape as ApiError, Server-Sent Events.

import { t } from "./i18n.js";
import { KEY_STORAGE } from "./state.js";
import { askForKey, checkHealth } from "./settings.js";

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export async function errorFrom(response) {
  let code = "error";
  let message = `${response.status} ${response.statusText}`;
  try {
    const payload = await response.json();
    code = payload.error?.code ?? code;
    message = payload.error?.message ?? message;
  } catch {
    // not our JSON error (a proxy's page): keep the status line
  }
  const retryAfter = Number(response.headers.get("Retry-After")) || null;
  if (response.status === 401) askForKey(t(apiKey() ? "The API key was refused." : "This server needs an API key."));
  return new ApiError(response.status, code, message, retryAfter);
}

// fetch() with the key, JSON or form bodies, and our error shape turned into ApiError.
export async function api(path, { method = "GET", json, form, signal, raw = false } = {}) {
  const headers = authHeaders();
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    checkHealth(); // shows "Offline" and keeps asking until it is back
    throw new ApiError(0, "network", t("The server cannot be reached. Is it running?"));
  }
  if (!response.ok) throw await errorFrom(response);
  return raw ? response : response.json();
}

// Server-Sent Events from a fetch() response: yields {event, data} with data parsed as JSON.
export async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

export function base64ToBuffer(text) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return bytes.buffer;
}

export function base64Url(text) {
  const bytes = new TextEncoder().encode(text);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
