// What the page tells the user: errors explained in words, the notice bar and the activity line.

import { t } from "./i18n.js";
import { $ } from "./state.js";
import { ApiError } from "./server.js";
import { MicrophoneError } from "./microphone.js";

export function explain(error) {
  if (error instanceof MicrophoneError) return error.message;
  if (!(error instanceof ApiError)) return t("Something went wrong: {error}", { error: error.message || error });
  const wait = error.retryAfter ? t(" Try again in {seconds} s.", { seconds: error.retryAfter }) : t(" Try again shortly.");
  if (error.code === "not_ready") return t("The models are still loading.{wait}", { wait });
  if (error.code === "overloaded") return t("The server is busy with other requests.{wait}", { wait });
  if (error.status === 503) return t("The server cannot answer right now: {error}.{wait}", { error: error.message, wait });
  if (error.status === 401) return t("This server needs an API key: enter it in Settings (⚙).");
  if (error.status === 504) return t("The server took too long: {error}.", { error: error.message });
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
