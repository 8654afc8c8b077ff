// What the page tells the user: errors explained in words, the notice bar and the activity line.

import { language, t } from "./i18n.js";
import { $ } from "./state.js";
import { ApiError } from "./server.js";
import { MicrophoneError } from "./microphone.js";

// The server's error codes ({"error": {"code", "message"}}, and the realtime `error` event) in the
// page's own words, translated in i18n.js. The server's message is English: the English page
// shows it as it comes (it says more), any other language shows these, with the server's message
// kept as the notice's detail (its tooltip). {wait} is when to try again.
const SERVER_ERRORS = {
  bad_request: "The server could not use that request.",
  method_not_allowed: "The server could not use that request.",
  invalid_input: "Something in the request is not valid.",
  invalid_audio: "The audio could not be read: it may be damaged, or not audio at all.",
  audio_too_long: "The recording is longer than this server accepts.",
  text_too_long: "The text is longer than this server accepts.",
  payload_too_large: "The file is larger than this server accepts.",
  unsupported_media_type: "The server cannot read this kind of file.",
  not_found: "That was not found on the server.",
  path_not_allowed: "That voice file is not in the voice library.",
  model_not_found: "The server has no such model.",
  conflict: "That name is taken already, or the library is full.",
  forbidden: "The server does not allow that.",
  context_length_exceeded: "The message is too long for the language model.",
  timeout: "The server took too long to answer.",
  upstream_error: "The language model's server is not answering right now.{wait}",
  insufficient_storage: "The server's disk is full: its operator must free some space.",
  storage_unavailable: "The server cannot keep conversations right now: its database is unreachable.{wait}",
  internal_error: "The server ran into an error of its own.",
  too_many_requests: "Too many requests: slow down.{wait}",
  idle_timeout: "The live session ended: nothing was received for a while.",
  session_limit: "The live session reached its time limit.",
  protocol_error: "The live session broke off: the page and the server did not understand each other.",
  invalid_sample_rate: "The live session broke off: the page and the server did not understand each other.",
  frame_too_large: "The live session broke off: the page and the server did not understand each other.",
};

// The page's own words for an error, in the page's language.
export function explain(error) {
  if (error instanceof MicrophoneError) return error.message;
  if (!(error instanceof ApiError)) return t("Something went wrong: {error}", { error: error.message || error });
  if (error.code === "network") return error.message; // the page's own words already
  const wait = error.retryAfter ? t(" Try again in {seconds} s.", { seconds: error.retryAfter }) : t(" Try again shortly.");
  if (error.code === "not_ready") return t("The models are still loading.{wait}", { wait });
  if (error.code === "overloaded") return t("The server is busy with other requests.{wait}", { wait });
  if (error.status === 401 || error.code === "unauthorized") return t("This server needs an API key: enter it in Settings (⚙).");
  if (language() !== "en") {
    const known = SERVER_ERRORS[error.code];
    return known ? t(known, { wait }) : t("The server could not do that ({code}).", { code: error.code });
  }
  if (error.status === 503) return t("The server cannot answer right now: {error}.{wait}", { error: error.message, wait });
  if (error.status === 504) return t("The server took too long: {error}.", { error: error.message });
  return error.message;
}

// The server's own message, where `explain` did not show it (on a page not in English).
export function detailOf(error) {
  const shown = explain(error);
  return error instanceof ApiError && error.message && !shown.includes(error.message) ? error.message : "";
}

export function showNotice(message, kind = "error", detail = "") {
  $("notice-text").textContent = message;
  $("notice-text").title = detail;
  $("notice").dataset.kind = kind;
  $("notice").hidden = false;
}

// An error in the notice bar: in the page's words, with the server's own as its detail.
export function showError(error) {
  showNotice(explain(error), "error", detailOf(error));
}

export function hideNotice() {
  $("notice").hidden = true;
}

export function setActivity(text) {
  $("activity").textContent = text;
}
