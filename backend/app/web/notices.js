// What the page tells the user: errors explained in words, the notice bar and the activity line.

import { $ } from "./state.js";
import { ApiError } from "./server.js";
import { MicrophoneError } from "./microphone.js";

export function explain(error) {
  if (error instanceof MicrophoneError) return error.message;
  if (!(error instanceof ApiError)) return `Something went wrong: ${error.message || error}`;
  const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : " Try again shortly.";
  if (error.code === "not_ready") return `The models are still loading.${wait}`;
  if (error.code === "overloaded") return `The server is busy with other requests.${wait}`;
  if (error.status === 503) return `The server cannot answer right now: ${error.message}.${wait}`;
  if (error.status === 401) return "This server needs an API key: enter it in Settings (⚙).";
  if (error.status === 504) return `The server took too long: ${error.message}.`;
  return error.message;
}

export function showNotice(message, kind = "error") {
  $("notice-text").textContent = message;
  $("notice").dataset.kind = kind;
  $("notice").hidden = false;
}

export function hideNotice() {
  $("notice").hidden = true;
}

export function setActivity(text) {
  $("activity").textContent = text;
}
